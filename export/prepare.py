"""Torch-side preparation for post-training quantisation, shared by every format (one graph, every format).

Depthwise networks quantise badly per tensor because a depthwise kernel's channels differ in range by orders of
magnitude (Nagel et al., ICCV 2019, "Data-free quantization"). Cross-layer equalisation rescales each channel
between two consecutive layers so their per-channel weight ranges match, moving the spread into the next layer where
it costs nothing: for a positive scale s, f(W1 x / s) · s = f(W1 x) for ReLU. ReLU6 is not scale-equivariant, so
the rescaled channel clips at 6 / s instead (`ClampChannels`): the prepared model computes exactly the same
function in fp32 (tested), and the converters see a Relu followed by a per-channel Minimum.

Per-channel int8 weights already absorb most of what equalisation fixes, and on the emoji edge equalisation made
int8 worse (its rescaled channels widen the per-tensor activation ranges): it is off by default, measured in
benchmarks/results/quantisation.md. What the real edge family needs is **bias correction** (Nagel et al. 2019,
section 4.2; Finkelstein et al. 2019): rounding a depthwise kernel of 9 weights to int8 shifts each output channel's
mean, and the shifts compound through the network (per-channel int8 weights alone: mean cosine 0.985 on the emoji
edge). `bias_correct` quantises the weights the way the exporters will (symmetric, per output channel, max-abs
scale), runs the calibration images through the network with those weights layer by layer, and adds each
channel's mean error back into its bias. The weights stay float in the prepared graph — each toolchain quantises
them itself, to the values simulated here — so this changes the fp32 function slightly, on purpose.

Batch norm is folded into the convolutions first (the exporters fold it anyway; both steps need the folded
weights). Everything here returns a new model; the checkpoint's own is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hetero.errors import InputError


class ClampChannels(nn.Module):
    """min(relu(x), upper[c]) per channel: ReLU6 after its channels were rescaled by equalisation."""

    def __init__(self, upper: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("upper", upper.detach().clone().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.upper)


@dataclass(frozen=True)
class Prepared:
    model: nn.Module
    folded: int  # batch norms folded into their convolution
    equalised: int  # layer pairs rescaled
    range_ratio_before: float  # median over pairs of (largest / smallest per-channel weight range) of the first layer
    range_ratio_after: float
    bias_corrected: int = 0  # convolutions whose bias absorbed their weight-rounding error
    weight_bits: int = 8

    def to_dict(self) -> dict[str, float | int]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def _convbns(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "conv") and hasattr(m, "bn") and isinstance(m.conv, nn.Conv2d)]


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm of a ConvBN into its convolution (in place); returns how many."""
    n = 0
    for m in _convbns(model):
        if not isinstance(m.bn, nn.BatchNorm2d):
            continue
        conv, bn = m.conv, m.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        folded = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
        )
        with torch.no_grad():
            folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            folded.bias.copy_(bias)
        m.conv, m.bn = folded, nn.Identity()
        n += 1
    return n


def _out_range(conv: nn.Conv2d) -> torch.Tensor:
    """Per output channel: max |w|."""
    return conv.weight.detach().abs().flatten(1).amax(1)


def _in_range(conv: nn.Conv2d) -> torch.Tensor:
    """Per input channel: max |w| (a depthwise conv's input channel c is its output channel c)."""
    w = conv.weight.detach().abs()
    return w.flatten(1).amax(1) if conv.groups == conv.in_channels == conv.out_channels else w.amax(dim=(0, 2, 3))


def _upper(act: nn.Module, channels: int) -> torch.Tensor | None:
    """The per-channel clip of an activation (ReLU6: 6), or None if it is not a scale-equivariant-with-clip one."""
    if isinstance(act, nn.ReLU6):
        return torch.full((channels,), 6.0)
    if isinstance(act, ClampChannels):
        return act.upper.flatten().clone()
    if isinstance(act, nn.ReLU):
        return torch.full((channels,), float("inf"))
    return None


def _pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(first, second) ConvBNs where first's activation output feeds only second: inside each MBConv block."""
    out = []
    for block in model.modules():
        if not all(hasattr(block, k) for k in ("dw", "project", "expand")):
            continue
        if hasattr(block.expand, "conv"):
            out.append((block.expand, block.dw))
        out.append((block.dw, block.project))
    return out


def _equalise_pair(first: nn.Module, second: nn.Module) -> bool:
    c = first.conv.out_channels
    upper = _upper(first.act, c)
    if upper is None:
        return False
    r1, r2 = _out_range(first.conv), _in_range(second.conv)
    ok = (r1 > 0) & (r2 > 0)
    s = torch.where(ok, torch.sqrt(r1 * r2) / r2.clamp_min(1e-30), torch.ones_like(r1))
    with torch.no_grad():
        first.conv.weight.div_(s.reshape(-1, 1, 1, 1))
        first.conv.bias.div_(s)
        if second.conv.groups == second.conv.in_channels == second.conv.out_channels:
            second.conv.weight.mul_(s.reshape(-1, 1, 1, 1))
        else:
            second.conv.weight.mul_(s.reshape(1, -1, 1, 1))
    first.act = ClampChannels(upper / s)
    return True


def _ratio(convs: list[nn.Conv2d]) -> float:
    if not convs:
        return float("nan")
    ratios = [(r.max() / r[r > 0].min()).item() for r in map(_out_range, convs) if (r > 0).any()]
    return float(torch.tensor(ratios).median()) if ratios else float("nan")


def quantise_weight(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric per-output-channel rounding with a max-abs scale: what ONNX Runtime's and ai-edge-quantizer's
    int8 weights are (dequantised back to float)."""
    q = 2 ** (bits - 1) - 1
    scale = (w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / q).reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / scale), -q, q) * scale


def _in_any(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


class _MeanError:
    """Forward hook: per output channel, the mean of (float weights − rounded weights) applied to the layer input."""

    def __init__(self, float_weight: torch.Tensor) -> None:
        self.weight, self.total, self.n = float_weight, None, 0

    def __call__(self, conv: nn.Conv2d, args: tuple, _out: torch.Tensor) -> None:
        x = args[0]
        err = F.conv2d(x, self.weight - conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        part = err.mean(dim=(2, 3)).sum(0)
        self.total = part if self.total is None else self.total + part
        self.n += x.shape[0]

    def mean(self) -> torch.Tensor:
        return self.total / self.n


def bias_correct(
    model: nn.Module, run: Callable[[nn.Module], None], *, bits: int = 8, keep_float: tuple[str, ...] = ()
) -> int:
    """Empirical bias correction, in place, layer by layer from the input: each convolution's bias absorbs the
    mean error its rounded weights make on the inputs it sees when every earlier layer is rounded too.
    `run(model)` pushes the calibration images through `model`. Returns the number of convolutions corrected."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not _in_any(n, keep_float)]
    originals = {n: m.weight.detach().clone() for n, m in convs}
    for _, m in convs:  # the network as the runtime will compute it
        with torch.no_grad():
            m.weight.copy_(quantise_weight(m.weight, bits))
    for name, conv in convs:
        error = _MeanError(originals[name])
        handle = conv.register_forward_hook(error)
        try:
            with torch.inference_mode():
                run(model)
        finally:
            handle.remove()
        with torch.no_grad():
            if conv.bias is None:  # a conv whose batch norm was not folded here (not a ConvBN): it gains a bias
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
            conv.bias.add_(error.mean())
    for name, conv in convs:  # back to float weights: each toolchain rounds them itself, to the same values
        with torch.no_grad():
            conv.weight.copy_(originals[name])
    return len(convs)


def prepare(
    model: nn.Module,
    *,
    equalise: bool = False,
    iterations: int = 4,
    calibrate: Callable[[nn.Module], None] | None = None,
    weight_bits: int = 8,
    keep_float: tuple[str, ...] = (),
) -> Prepared:
    """A copy of `model` with batch norm folded, optionally cross-layer equalised (same fp32 function) and, given
    `calibrate` (runs calibration images through a model), bias-corrected for `weight_bits` weights.

    Iterating equalisation matters where a depthwise layer sits between two pairs: balancing it with the layer
    after changes its balance with the layer before.
    """
    model = copy.deepcopy(model).eval()
    if hasattr(model, "fold_deltas"):  # a linearised member (LQF): its weight change folds with the batch norm
        if equalise:
            raise InputError("equalise rescales the member's channels, not its weight change: off for an LQF model")
        model.fold_deltas()
    folded = fold_batchnorm(model)
    pairs = _pairs(model)
    before = _ratio([a.conv for a, _ in pairs])
    done = 0
    if equalise:
        for _ in range(iterations):
            done = sum(_equalise_pair(a, b) for a, b in pairs)
    corrected = bias_correct(model, calibrate, bits=weight_bits, keep_float=keep_float) if calibrate else 0
    return Prepared(model, folded, done, before, _ratio([a.conv for a, _ in pairs]), corrected, weight_bits)


def network_input_range(graph: nn.Module, calibration: np.ndarray) -> tuple[float, float]:
    """The activation range int8 quantisers give the network's input (the scaled, resized calibration pixels),
    widened below by half an 8-bit step.

    Why: uint8 pixels under an affine scaling sit on a lattice. With the default mean = std = 0.5 the calibrated
    range is exactly [-1, 1], the integer zero point puts the 8-bit grid half a step off the pixel lattice, and
    every pixel of a flat region lands exactly on a rounding tie — decided by the last bit of the float scaling,
    i.e. by a CPU kernel: a 1-ulp change of the scaling moved the emoji QAT edge's worst TFLite int8 image from
    cosine 0.954 to 0.936. Half a step wider, every pixel value is at least 1/1000 of a step from a tie and the
    artifact is the same whichever way the scaling rounds (measured: 0.962 / mean 0.9958 for three float scalings
    that gave 0.936 to 0.962 without it). Which images end up worst is still a matter of rounding (the
    post-training emoji edge's floor moved 0.939 -> 0.926, the QAT edge's 0.951 -> 0.964); what this buys is that
    it no longer depends on the machine."""
    with torch.no_grad():
        x = torch.cat(
            [graph.preprocess(torch.from_numpy(calibration[i : i + 64])) for i in range(0, len(calibration), 64)]
        )
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    return lo - (hi - lo) / 255 / 2, hi
