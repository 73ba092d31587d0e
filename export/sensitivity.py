"""Which layers int8 hurts: quantise one layer at a time, in torch, and measure how far the embedding moves.

A layer's quantisation is simulated the way both toolchains do it: its weights rounded symmetric per output channel
(max-abs scale) and its input rounded to uint8 over the range the calibration images reach (per tensor, min-max).
Everything else stays float. The result ranks layers for mixed precision (`[export] keep_float`, or
`auto_keep_float`, which keeps the most sensitive ones float until an artifact passes validation). It is a proxy —
fast (one forward pass per layer) and format-independent; the verdict is always the real toolchain's validation.
On the emoji edge the first depthwise layer dominates (alone: mean cosine 0.954 in ONNX Runtime), see
benchmarks/results/quantisation.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from hetero.batching import embed_batches
from hetero.export.prepare import quantise_weight
from hetero.models.registry import EmbeddingGraph


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # module path, as `keep_float` takes it
    mean_cosine: float  # to the float graph, over the images, with only this layer quantised
    min_cosine: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def quantisable_layers(model: nn.Module) -> list[str]:
    """Module paths of the network's convolution layers (a ConvBN, or a bare Conv2d outside one), input first."""
    names = [n for n, m in model.named_modules() if hasattr(m, "conv") and isinstance(m.conv, nn.Conv2d)]
    inside = {f"{n}.conv" for n in names}
    bare = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in inside]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(names + bare, key=order.__getitem__)


def _input_ranges(graph: EmbeddingGraph, convs: dict[str, nn.Conv2d], calibration: np.ndarray) -> dict[str, tuple]:
    seen: dict[str, list[float]] = {n: [np.inf, -np.inf] for n in convs}

    def record(name: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            x = args[0]
            seen[name][0] = min(seen[name][0], float(x.min()))
            seen[name][1] = max(seen[name][1], float(x.max()))

        return hook

    handles = [c.register_forward_pre_hook(record(n)) for n, c in convs.items()]
    try:
        with torch.inference_mode():
            graph(torch.from_numpy(calibration))
    finally:
        for h in handles:
            h.remove()
    return {n: (min(lo, 0.0), max(hi, 0.0)) for n, (lo, hi) in seen.items()}  # uint8 ranges always hold 0


def _fake_uint8(lo: float, hi: float):
    scale = (hi - lo) / 255 or 1.0
    zero = round(-lo / scale)

    def pre(_m: nn.Module, args: tuple) -> tuple:
        return ((torch.clamp(torch.round(args[0] / scale) + zero, 0, 255) - zero) * scale,)

    return pre


def sweep(graph: EmbeddingGraph, calibration: np.ndarray, images: np.ndarray, bits: int = 8) -> list[LayerSensitivity]:
    """Every layer quantised alone; most sensitive (lowest mean cosine) first."""
    model = graph.model
    layers = quantisable_layers(model)
    modules = dict(model.named_modules())
    conv_of = {n: modules[n].conv if hasattr(modules[n], "conv") else modules[n] for n in layers}
    ranges = _input_ranges(graph, conv_of, calibration)

    def embed() -> np.ndarray:
        with torch.inference_mode():
            return embed_batches(lambda b: graph(torch.from_numpy(b)).numpy(), images)

    reference = embed()
    out = []
    for name in layers:
        conv = conv_of[name]
        original = conv.weight.detach().clone()
        with torch.no_grad():
            conv.weight.copy_(quantise_weight(original, bits))
        handle = conv.register_forward_pre_hook(_fake_uint8(*ranges[name]))
        try:
            cos = np.sum(embed() * reference, axis=1)
        finally:
            handle.remove()
            with torch.no_grad():
                conv.weight.copy_(original)
        out.append(LayerSensitivity(name, float(cos.mean()), float(cos.min())))
    return sorted(out, key=lambda s: s.mean_cosine)
