"""The runtime protocol, the shared artifact runtime, and the one function that opens any unit on its runtime."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from hetero.batching import embed_batches
from hetero.errors import InputError
from hetero.manifest import Manifest, load_manifest
from hetero.timing import per_item_ms


class Runtime(Protocol):
    """Executes one unit. `embed` takes uint8 NHWC pixels (the on-device input) and returns [N, dim] float32."""

    name: str
    manifest: Manifest

    def embed(self, images: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...


def check_pixels(manifest: Manifest, images: np.ndarray, want: tuple[int, ...] | None = None) -> np.ndarray:
    """The on-device input contract, for every runtime: uint8 NHWC at the unit's input size. A runtime that would
    accept another size (torch, a dynamic-shape graph) must not silently compute on it."""
    want = want or tuple(manifest.input.shape(1)[1:])
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != want:
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InputError(f"{manifest.model.get('name')} takes uint8 pixels [N, {', '.join(map(str, want))}], got {got}")
    return images


class ArtifactRuntime:
    """An exported artifact executed through its format's runner (the same code path export validation uses)."""

    name = ""
    format_module: ModuleType

    def __init__(self, path: Path, threads: int | None = None):
        self.manifest, model_file = load_manifest(path)
        self.path = Path(path)
        self._run: Callable[[np.ndarray], np.ndarray] = self.format_module.runner(model_file, threads)
        self._want = tuple(self.manifest.input.shape(1)[1:])

    def embed(self, images: np.ndarray) -> np.ndarray:
        return embed_batches(self._run, check_pixels(self.manifest, images, self._want))

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "version": self.format_module.runtime_version(),
            "format": self.manifest.format,
            "precision": self.manifest.precision,
        }


def timed_embed(rt: Runtime, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Embed one image per call, as a device does; returns embeddings and the median latency in ms."""
    if hasattr(rt, "embed_timed"):
        return rt.embed_timed(images)
    rows, times = per_item_ms(lambda img: rt.embed(img[None])[0], images)
    return np.stack(rows), statistics.median(times)
