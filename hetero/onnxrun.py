"""One onnxruntime session as a batch function: shared by exported artifacts and by a user's imported cloud."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hetero.errors import ArtifactError


def session_runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Run the graph's first output on its first input (CPU provider); a file it cannot load is an input error."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several private exception types for a bad file
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({first})") from None
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    return lambda batch: session.run([out], {inp: batch})[0]
