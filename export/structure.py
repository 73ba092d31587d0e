"""Structural identity of an exported program with the deployable graph, for runtimes that cannot execute here.

Core ML runs only on macOS, so on Linux its numbers cannot be compared with torch. What can be compared is the
program itself: the sequence of compute ops (resize, convolution, linear) with every output shape, the MAC count
those shapes imply, and every weight tensor (shape, and per output channel its direction: a converter may fold
BatchNorm into a convolution, which rescales each output channel, so the cosine is taken per channel and its sign
ignored). A program that skips the in-graph resize, runs its convolutions at another size, or carries other weights
differs here, and the export fails with `ArtifactError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hetero.models.registry import EmbeddingGraph, Resize


@dataclass(frozen=True)
class Op:
    kind: str  # "resize" | "conv" | "linear"
    shape: tuple[int, ...]  # output shape at batch 1
    weight: np.ndarray | None = None  # conv: (out, in/groups, kh, kw); linear: (out, in)

    @property
    def macs(self) -> int:
        """Multiply-accumulates: every output element takes one product per weight of its output channel."""
        if self.weight is None:
            return 0
        return int(np.prod(self.shape)) * int(np.prod(self.weight.shape[1:]))


def graph_ops(graph: EmbeddingGraph) -> list[Op]:
    """The compute ops of one forward pass of the deployable graph at batch 1, in execution order."""
    ops: list[Op] = []

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, Resize):
            if mod.size is not None:
                ops.append(Op("resize", tuple(out.shape)))
        else:
            kind = "conv" if isinstance(mod, nn.Conv2d) else "linear"
            ops.append(Op(kind, tuple(out.shape), mod.weight.detach().cpu().numpy().astype(np.float32)))

    mods = [m for m in graph.modules() if isinstance(m, nn.Conv2d | nn.Linear | Resize)]
    handles = [m.register_forward_hook(hook) for m in mods]
    spec = graph.input_spec
    try:
        with torch.no_grad():
            graph(torch.zeros(1, spec.height, spec.width, 3, dtype=torch.uint8))
    finally:
        for h in handles:
            h.remove()
    return ops


def compare(expected: list[Op], actual: list[Op], min_channel_cosine: float) -> list[str]:
    """Every difference between two op lists, as readable lines (empty: structurally identical)."""
    problems: list[str] = []
    kinds_e, kinds_a = [o.kind for o in expected], [o.kind for o in actual]
    if kinds_e != kinds_a:
        first = next((i for i, (a, b) in enumerate(zip(kinds_e, kinds_a, strict=False)) if a != b), None)
        first = min(len(kinds_e), len(kinds_a)) if first is None else first
        problems.append(
            f"op sequence differs at op {first}: expected {kinds_e[first : first + 3]}, program has "
            f"{kinds_a[first : first + 3]} ({kinds_e.count('resize')} resize/{kinds_e.count('conv')} conv expected, "
            f"{kinds_a.count('resize')}/{kinds_a.count('conv')} found)"
        )
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if e.kind != a.kind:
            break
        if tuple(e.shape) != tuple(a.shape):
            problems.append(f"op {i} ({e.kind}) output shape {list(a.shape)}, torch computes {list(e.shape)}")
            break
        if e.weight is None:
            continue
        if a.weight is None or a.weight.shape != e.weight.shape:
            got = None if a.weight is None else list(a.weight.shape)
            problems.append(f"op {i} ({e.kind}) weight shape {got}, torch has {list(e.weight.shape)}")
            break
        cos = channel_cosine(e.weight, a.weight)
        if not cos >= min_channel_cosine:
            problems.append(f"op {i} ({e.kind}) weights differ from torch (min channel |cos| {cos:.5f})")
            break
    macs_e, macs_a = sum(o.macs for o in expected), sum(o.macs for o in actual)
    if macs_e != macs_a:
        problems.append(f"MACs {macs_a:,} in the program, {macs_e:,} in the torch graph")
    return problems


def channel_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest |cosine| between matching output channels (rows) of two weight tensors.

    A channel negligible on both sides (norm below 1e-4 of the tensor's largest) counts as matching: a dead channel
    of the real family (weights ~1e-8) underflows to zero in fp16, and carries no signal either way."""
    x = a.reshape(len(a), -1).astype(np.float64)
    y = b.reshape(len(b), -1).astype(np.float64)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    both_zero = (nx <= 1e-4 * nx.max(initial=0.0)) & (ny <= 1e-4 * ny.max(initial=0.0))
    cos = np.abs((x * y).sum(axis=1)) / np.maximum(nx * ny, 1e-30)
    cos[both_zero] = 1.0
    return float(cos.min()) if len(cos) else 1.0
