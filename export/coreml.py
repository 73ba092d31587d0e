"""Core ML: mlprogram fp32, fp16, and int8 weight compression (int8w), via coremltools from a TorchScript trace.

The on-device input is Core ML's native image contract (`ImageType`, RGB, the app passes a CVPixelBuffer/CGImage);
Core ML applies the space's scale and bias, so the graph starts at normalised pixels and ends with L2 normalisation.
Core ML executes only on macOS: elsewhere we validate the spec (input, output, shapes, metadata) and report the
artifact as *not executed* — never as passed.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.formats import BuildRequest
from export.quiet import native_quiet
from hetero.errors import ArtifactError, InputError, NotExecutedError
from hetero.spaces import InputSpec

FILE = "model.mlpackage"
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
SPACE_KEY = "hetero.space_id"


def can_execute() -> bool:
    return platform.system() == "Darwin"


def _ct():
    with native_quiet():  # on Linux the import reports the missing native runtime; that is expected here
        import coremltools as ct
    return ct


class _Embed(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_embedding(x)


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
    traced = torch.jit.trace(_Embed(req.graph.model).eval(), torch.zeros(1, 3, spec.height, spec.width))
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
    ml.user_defined_metadata[SPACE_KEY] = req.space_id
    ml.short_description = f"hetero edge embedding in space {req.space_id}"
    ml.save(str(req.dest / FILE))
    return {"input": "ImageType RGB", "deployment_target": "iOS16", "batch": 1}


def inspect(path: Path, space_id: str, dim: int, spec: InputSpec) -> dict[str, Any]:
    """Static checks that need no runtime: the contract an app relies on. Raises ArtifactError on a mismatch."""
    ct = _ct()
    try:
        with native_quiet():
            model_spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
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
    if problems:
        raise ArtifactError(f"{path}: " + "; ".join(problems))
    return {"input": "imageType RGB", "output_shape": shape, "spec_version": int(model_spec.specificationVersion)}


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    if not can_execute():
        raise NotExecutedError(f"Core ML executes only on macOS (this is {platform.system()})")
    from PIL import Image

    ml = _ct().models.MLModel(str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(ml.predict({INPUT_NAME: Image.fromarray(img)})[OUTPUT_NAME])[0] for img in batch])

    return run


def runtime_version() -> str:
    import importlib.metadata

    return f"Core ML via coremltools {importlib.metadata.version('coremltools')}"
