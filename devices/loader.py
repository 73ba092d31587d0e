"""Open any unit on its runtime. Separate from `hetero.devices.base` so the runtimes can build on the base without a
circle: base <- ort/litert/coreml/reference <- loader."""

from __future__ import annotations

from pathlib import Path

from hetero.devices.base import Runtime
from hetero.errors import InputError
from hetero.kinds import Format
from hetero.manifest import load_manifest


def load(path: Path, threads: int | None = None) -> Runtime:
    """Pick the runtime from the manifest's format; the manifest's sha256 is verified before anything runs."""
    manifest, _ = load_manifest(path)
    if manifest.format == "safetensors":
        from hetero.devices.reference import TorchRuntime

        return TorchRuntime(path)
    if manifest.format == Format.ONNX:
        from hetero.devices.ort import OnnxRuntime

        return OnnxRuntime(path, threads)
    if manifest.format == Format.TFLITE:
        from hetero.devices.litert import LiteRTRuntime

        return LiteRTRuntime(path, threads)
    if manifest.format == Format.COREML:
        from hetero.devices.coreml import CoreMLRuntime

        return CoreMLRuntime(path, threads)
    if manifest.format == "embeddings":
        raise InputError(f"{path}: an embedding-file cloud has no model to run; it is a cloud, not a producer")
    raise InputError(f"{path}: no runtime for format {manifest.format!r}")
