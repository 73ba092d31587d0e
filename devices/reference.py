"""Torch reference runtime: the trained checkpoint itself, through the same `EmbeddingGraph` that export traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetero.batching import embed_batches
from hetero.devices.base import check_pixels
from hetero.frames import artifact_input
from hetero.kinds import Runtime
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph


class TorchRuntime:
    """Takes pixels at the checkpoint's input size, or at its compute size where that is smaller — what its
    artifacts take by default (hetero.frames.artifact_input) — so it is compared with them on the same pixels."""

    name = Runtime.TORCH

    def __init__(self, path: Path):
        model, self.manifest = load_checkpoint(path)
        self.path = Path(path)
        self.graph = EmbeddingGraph(model, self.manifest.input).eval()
        compute = artifact_input(self.manifest.input, getattr(model, "resolution", None))
        self._graphs = {(compute.height, compute.width): EmbeddingGraph(model, compute).eval()}
        self._graphs[(self.manifest.input.height, self.manifest.input.width)] = self.graph

    def embed(self, images: np.ndarray) -> np.ndarray:
        size = tuple(images.shape[1:3]) if isinstance(images, np.ndarray) and images.ndim == 4 else None
        graph = self._graphs.get(size, self.graph)
        images = check_pixels(self.manifest, images, (*size, 3) if size in self._graphs else None)
        with torch.inference_mode():
            return embed_batches(lambda b: graph(torch.from_numpy(b)).numpy(), images)

    def info(self) -> dict[str, Any]:
        return {"runtime": self.name, "version": torch.__version__, "format": "safetensors", "precision": "fp32"}
