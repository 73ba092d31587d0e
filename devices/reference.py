"""Torch reference runtime: the trained checkpoint itself, through the same `EmbeddingGraph` that export traces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetero.batching import embed_batches
from hetero.devices.base import check_pixels
from hetero.kinds import Runtime
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph


class TorchRuntime:
    name = Runtime.TORCH

    def __init__(self, path: Path):
        model, self.manifest = load_checkpoint(path)
        self.path = Path(path)
        self.graph = EmbeddingGraph(model, self.manifest.input).eval()

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = check_pixels(self.manifest, images)
        with torch.inference_mode():
            return embed_batches(lambda b: self.graph(torch.from_numpy(b)).numpy(), images)

    def info(self) -> dict[str, Any]:
        return {"runtime": self.name, "version": torch.__version__, "format": "safetensors", "precision": "fp32"}
