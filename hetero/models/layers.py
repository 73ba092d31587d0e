"""Layers every model family shares (the embedding's L2 normalisation, the cosine classifier). A module of their own
so family files (mbnet) and the registry (models) both import them without importing each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalPool(nn.Module):
    """Spatial mean, NCHW -> NC. A module of its own so exporters can name it: it feeds the embedding head, and like
    the head it stays float in int8 artifacts (the pooled features quantised per tensor cost the emoji edge's TFLite
    int8 most of what activation quantisation costs; see benchmarks/results/quantisation.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class L2Normalize(nn.Module):
    """x / ||x||, written as x * rsqrt(sum(x^2) + eps): `F.normalize` exports to ops that break ONNX quantisation."""

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + self.eps)


class CosineClassifier(nn.Module):
    """Scaled cosine logits. BCT applies the *cloud's* frozen instance to edge embeddings."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * embedding @ F.normalize(self.weight, dim=1).t()
