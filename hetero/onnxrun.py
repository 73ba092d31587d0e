"""One onnxruntime session as a batch function: shared by exported artifacts and by a user's imported cloud."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hetero.errors import ArtifactError


def session_runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Run the graph's first output on its first input (CPU provider); a file it cannot load is an input error.

    The session is built from the file's bytes with external data looked up in an empty folder: a unit's manifest
    hashes its one model file, so a graph that keeps tensors in other files (`model.onnx.data`, or a path outside
    the unit) would run on bytes nobody hashed. Such a graph is refused here; `hetero cloud import` inlines them."""
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        with tempfile.TemporaryDirectory() as nothing:
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", nothing)
            session = ort.InferenceSession(Path(path).read_bytes(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several private exception types for a bad file
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if "external data" in first.lower():
            raise ArtifactError(
                f"{path}: the graph keeps tensors in external files, which its unit's sha256 does not cover: refused "
                "(a unit holds its whole model in one file; import a cloud with `hetero cloud import`)"
            ) from None
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({first})") from None
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda batch: session.run([out], {inp: batch})[0]


def external_data(path: Path) -> list[Path]:
    """The files an ONNX graph keeps its tensors in (external data), each checked to lie beside it: a location that
    is absolute, climbs out with '..', or is missing is refused — a unit's hash must cover every byte of its
    function, and a graph reaching outside its folder could be changed without changing anything hashed."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    path = Path(path)
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ArtifactError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    root = path.parent.resolve()
    files: dict[str, Path] = {}
    for tensor in _get_all_tensors(graph):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or root not in target.parents or "\0" in location:
            raise ArtifactError(
                f"{path}: tensor {tensor.name!r} keeps its data at {location!r}, outside the model's folder: refused"
            )
        if not target.is_file():
            raise ArtifactError(f"{path}: tensor {tensor.name!r} keeps its data in {location!r}, which is missing")
        files[location] = target
    return [files[k] for k in sorted(files)]
