"""Core ML: mlprogram fp32, fp16, and int8 weight compression (int8w), via coremltools from a TorchScript trace.

The on-device input is Core ML's native image contract (`ImageType`, RGB, the app passes a CVPixelBuffer/CGImage);
Core ML applies the space's scale and bias, so the graph starts at normalised pixels and ends with L2 normalisation.
Core ML executes only on macOS: elsewhere we validate the spec (input, output, shapes, metadata) and report the
artifact as *not executed* — never as passed.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hetero.errors import ArtifactError, InputError, NotExecutedError
from hetero.export.formats import BuildRequest
from hetero.export.metadata import INPUT_NAME, OUTPUT_NAME, describe
from hetero.export.quiet import native_quiet
from hetero.spaces import InputSpec

if TYPE_CHECKING:
    from hetero.export.structure import Op
    from hetero.models.registry import EmbeddingGraph

FILE = "model.mlpackage"
MIXED_PRECISION = False  # int8w compresses every weight
SPACE_KEY = "hetero.space_id"


def can_execute() -> bool:
    return platform.system() == "Darwin"


def _ct():
    with native_quiet():  # on Linux the import reports the missing native runtime; that is expected here
        import coremltools as ct
    return ct


def _from_image(graph: EmbeddingGraph) -> Any:
    """The deployable graph after pixel scaling, which Core ML's `ImageType` applies: resize, network, L2."""
    import torch

    class FromImage(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.deployable = graph  # not `graph`: a ScriptModule has a `.graph` of its own

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return trace_body(self.deployable, x)

    return FromImage()


def trace_body(graph: EmbeddingGraph, x: Any) -> Any:
    """What Core ML's program computes from the scaled image. (Tests replace it to reproduce the pre-fix path.)"""
    return graph.from_normalised(x)


def _image_type(ct, spec: InputSpec):
    if len(set(spec.std)) != 1:
        raise InputError(f"Core ML ImageType takes one scale for all channels; input std is {spec.std}")
    std = spec.std[0]
    return ct.ImageType(
        name=INPUT_NAME,
        shape=(1, 3, spec.height, spec.width),
        scale=1.0 / (255.0 * std),
        bias=[-m / std for m in spec.mean],
        color_layout=ct.colorlayout.RGB,
    )


def build(req: BuildRequest) -> dict[str, Any]:
    ct = _ct()
    spec: InputSpec = req.graph.input_spec
    precision = req.precision
    import torch

    traced = torch.jit.trace(_from_image(req.graph).eval(), torch.zeros(1, 3, spec.height, spec.width))
    with native_quiet():
        ml = ct.convert(
            traced,
            inputs=[_image_type(ct, spec)],
            outputs=[ct.TensorType(name=OUTPUT_NAME)],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        )
        if precision == "int8w":
            op = ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)
            ml = ct.optimize.coreml.linear_quantize_weights(ml, ct.optimize.coreml.OptimizationConfig(global_config=op))
    meta = describe(
        req.space_id,
        req.embed_dim,
        spec,
        precision,
        image_input=True,
        frame_filter=req.frame_filter,
    )
    for k, v in meta.items():
        ml.user_defined_metadata[k] = v
    ml.short_description = f"hetero edge embedding in space {req.space_id}"
    ml.author = "hetero"
    ml.version = meta["hetero.version"]
    ml.license = "as the trained weights' source"
    ml.input_description[INPUT_NAME] = f"RGB image {spec.height}x{spec.width}: {meta['hetero.camera_to_input']}"
    ml.output_description[OUTPUT_NAME] = f"unit-length embedding [1, {meta['hetero.dim']}] in space {req.space_id}"
    ml.save(str(req.dest / FILE))
    return {"input": "ImageType RGB", "deployment_target": "iOS16", "batch": 1}


# MIL op types -> the structural kinds of `export.structure` (others are elementwise or shape ops).
_KINDS = {
    "conv": "conv",
    "linear": "linear",
    "upsample_bilinear": "resize",
    "resize_bilinear": "resize",
    "resize": "resize",
}
# Smallest per-channel |cosine| between a program's weights and torch's, per precision.
_WEIGHT_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8w": 0.99}


@contextlib.contextmanager
def private_copy(package: Path) -> Iterator[Path]:
    """A throwaway copy of an .mlpackage for coremltools to open: opening a package rewrites its Manifest.json in
    canonical form, and the unit's sha256 covers that file — reading must never change what was hashed."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / Path(package).name
        shutil.copytree(package, copy)
        yield copy


def program_ops(path: Path) -> list[Op]:
    """The compute ops of a saved mlprogram (main function), with weights materialised (int8w dequantised)."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_program

    from hetero.export import structure

    ct = _ct()
    with native_quiet(), private_copy(path) as copy:
        model_spec = ct.models.MLModel(str(copy), skip_model_load=True).get_spec()
        program = load_program(model_spec, model_spec.specificationVersion, str(copy / "Data/com.apple.CoreML/weights"))
    ops = []
    for op in program.functions["main"].operations:
        kind = _KINDS.get(op.op_type)
        if kind is None:
            continue
        weight = None
        if kind in ("conv", "linear"):
            w = op.weight
            weight = w.val if w.val is not None else _dequantize(w.op)
            weight = np.asarray(weight, dtype=np.float32)
        ops.append(structure.Op(kind, tuple(int(d) for d in op.outputs[0].shape), weight))
    return ops


def _dequantize(op: Any) -> np.ndarray:
    """The float weights a compressed (int8w) constant stands for."""
    if op.op_type == "constexpr_affine_dequantize":
        q = op.quantized_data.val.astype(np.float32)
        shape = [1] * q.ndim
        axis = int(op.axis.val)
        scale, zero = np.asarray(op.scale.val, np.float32), np.asarray(op.zero_point.val, np.float32)
        shape[axis] = -1
        return (q - (zero.reshape(shape) if zero.ndim else zero)) * (scale.reshape(shape) if scale.ndim else scale)
    if op.op_type == "constexpr_blockwise_shift_scale":
        data = op.data.val.astype(np.float32)
        scale = np.asarray(op.scale.val, np.float32)
        offset = np.asarray(op.offset.val, np.float32) if op.offset is not None else 0.0
        reps = [d // s for d, s in zip(data.shape, scale.shape, strict=True)]
        expand = lambda a: np.asarray(a) if np.ndim(a) == 0 else np.kron(a, np.ones(reps, np.float32))  # noqa: E731
        return (data - expand(offset)) * expand(scale)
    raise ArtifactError(f"weights stored by {op.op_type!r}, which hetero cannot read back")


def inspect(path: Path, graph: EmbeddingGraph, space_id: str, dim: int, precision: str) -> dict[str, Any]:
    """Static checks that need no runtime: the contract an app relies on and the program's identity with the
    deployable graph (`hetero.export.structure`). Raises ArtifactError listing every mismatch."""
    from hetero.export import structure

    ct = _ct()
    spec: InputSpec = graph.input_spec
    try:
        with native_quiet(), private_copy(path) as copy:
            model_spec = ct.models.MLModel(str(copy), skip_model_load=True).get_spec()
        ops = program_ops(path)
    except Exception as e:  # coremltools raises assorted types for an unreadable package
        raise ArtifactError(f"{path}: coremltools cannot read it ({str(e).strip()[:200]})") from None
    desc = model_spec.description
    problems = []
    inp = desc.input[0] if desc.input else None
    if inp is None or inp.name != INPUT_NAME or inp.type.WhichOneof("Type") != "imageType":
        problems.append(f"input is not an image named {INPUT_NAME!r}")
    elif (inp.type.imageType.height, inp.type.imageType.width) != (spec.height, spec.width):
        problems.append(
            f"input size {inp.type.imageType.height}x{inp.type.imageType.width} != {spec.height}x{spec.width}"
        )
    out = desc.output[0] if desc.output else None
    shape = list(out.type.multiArrayType.shape) if out is not None else []
    if out is None or out.name != OUTPUT_NAME or shape[-1:] != [dim]:
        problems.append(f"output is not {OUTPUT_NAME!r} [1, {dim}] (got {shape})")
    meta = dict(desc.metadata.userDefined)
    if meta.get(SPACE_KEY) != space_id:
        problems.append(f"metadata {SPACE_KEY} is {meta.get(SPACE_KEY)!r}, expected {space_id!r}")
    expected = structure.graph_ops(graph)
    problems += structure.compare(expected, ops, _WEIGHT_COSINE[precision])
    if problems:
        raise ArtifactError(f"{path}: " + "; ".join(problems))
    return {
        "input": "imageType RGB",
        "output_shape": shape,
        "spec_version": int(model_spec.specificationVersion),
        "structure": "identical to the torch graph (op sequence, output shapes, weights, MACs)",
        "ops": {k: sum(o.kind == k for o in ops) for k in ("resize", "conv", "linear")},
        "macs": sum(o.macs for o in ops),
    }


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    if not can_execute():
        raise NotExecutedError(f"Core ML executes only on macOS (this is {platform.system()})")
    from PIL import Image

    keep = tempfile.TemporaryDirectory()  # lives as long as the runner: the package is opened from a copy
    copy = Path(keep.name) / Path(path).name
    shutil.copytree(path, copy)
    ml = _ct().models.MLModel(str(copy))

    def run(batch: np.ndarray, _keep: Any = keep) -> np.ndarray:
        return np.stack([np.asarray(ml.predict({INPUT_NAME: Image.fromarray(img)})[OUTPUT_NAME])[0] for img in batch])

    return run


def runtime_version() -> str:
    import importlib.metadata

    return f"Core ML via coremltools {importlib.metadata.version('coremltools')}"
