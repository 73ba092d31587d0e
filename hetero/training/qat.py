"""Quantisation-aware fine-tuning: train the edge through the rounding its int8 artifact will apply.

Post-training quantisation of the emoji edge keeps the R@1 point estimate but moves 20-30 of 705 queries' top-1
answers (benchmarks/results/quantisation_findings.md). Here the network is fine-tuned, under the same compatibility
objective and cached cloud views, while every convolution sees its weights rounded to int8 per output channel
(symmetric, max-abs scale: what ONNX Runtime and ai-edge-quantizer do) and its input rounded to uint8 per tensor over
a running min-max range, as is each inverted-residual block's output. Gradients pass the rounding straight through
(torch's fake-quantise ops).

Batch norm is frozen (running statistics, as deployed) so the rounded weights the network learns to live with are
the ones it ships with. At the end the weights are left *on the int8 grid*: each toolchain's per-channel max-abs
rounding of them — after folding batch norm, a positive per-channel scale — is then exact, and only the activation
ranges are the toolchain's own calibration.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class RoundedWeight(nn.Module):
    """Parametrisation: the weight as int8 per output channel would store it (straight-through gradient)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = (w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127).float()
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


class RoundedTensor:
    """A tensor rounded to uint8 over a running (EMA) min-max range: a layer's input, or a block's output (the
    residual sum, which TFLite quantises on its own)."""

    def __init__(self, momentum: float = 0.1) -> None:
        self.momentum, self.lo, self.hi = momentum, None, None

    def round(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = float(x.detach().min().clamp(max=0)), float(x.detach().max().clamp(min=0))
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo += self.momentum * (lo - self.lo)
            self.hi += self.momentum * (hi - self.hi)
        scale = max(self.hi - self.lo, 1e-8) / 255
        zero = int(min(max(round(-self.lo / scale), 0), 255))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def _round_input(hook: RoundedTensor):
    return lambda m, args: (hook.round(args[0]),)


def _round_output(hook: RoundedTensor):
    return lambda m, args, out: hook.round(out)


class FakeQuant:
    """Context: `model` computes as int8 will (`fit` freezes its batch norms); on exit the weights stay rounded."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        self.handles: list = []

    def __enter__(self) -> FakeQuant:
        for conv in self.convs:
            parametrize.register_parametrization(conv, "weight", RoundedWeight())
            self.handles.append(conv.register_forward_pre_hook(_round_input(RoundedTensor())))
        for block in self.model.modules():  # MBConv blocks: their output (residual sum or projection) is int8 too
            if hasattr(block, "residual") and hasattr(block, "project"):
                self.handles.append(block.register_forward_hook(_round_output(RoundedTensor())))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        for conv in self.convs:
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)


def freeze_batchnorm(model: nn.Module) -> None:
    """Batch norms normalise with their running statistics and stop updating them (call after `model.train()`)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
