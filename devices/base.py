"""The runtime protocol and the one function that opens any checkpoint or artifact on the right runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hetero.errors import InputError
from hetero.manifest import Manifest, load_manifest


class Runtime(Protocol):
    """Executes one unit. `embed` takes uint8 NHWC pixels (the on-device input) and returns [N, dim] float32."""

    name: str
    manifest: Manifest

    def embed(self, images: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...


def load(path: Path) -> Runtime:
    """Pick the runtime from the manifest's format; the manifest's sha256 is verified before anything runs."""
    manifest, _ = load_manifest(path)
    if manifest.format == "safetensors":
        from devices.reference import TorchRuntime

        return TorchRuntime(path)
    if manifest.format == "onnx":
        from devices.ort import OnnxRuntime

        return OnnxRuntime(path)
    raise InputError(f"{path}: no runtime for format {manifest.format!r} (supported: safetensors, onnx)")
