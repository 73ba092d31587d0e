"""Open any unit on its runtime. Separate from `devices.base` so the runtimes can build on the base without a
circle: base <- ort/litert/coreml/reference <- loader."""

from __future__ import annotations

from pathlib import Path

from devices.base import Runtime
from hetero.errors import InputError
from hetero.manifest import load_manifest


def load(path: Path, threads: int | None = None) -> Runtime:
    """Pick the runtime from the manifest's format; the manifest's sha256 is verified before anything runs."""
    manifest, _ = load_manifest(path)
    if manifest.format == "safetensors":
        from devices.reference import TorchRuntime

        return TorchRuntime(path)
    if manifest.format == "onnx":
        from devices.ort import OnnxRuntime

        return OnnxRuntime(path, threads)
    if manifest.format == "tflite":
        from devices.litert import LiteRTRuntime

        return LiteRTRuntime(path, threads)
    if manifest.format == "coreml":
        from devices.coreml import CoreMLRuntime

        return CoreMLRuntime(path, threads)
    raise InputError(f"{path}: no runtime for format {manifest.format!r}")
