"""Linearised members for LQF (Achille et al., "LQF: Linear Quadratic Fine-Tuning", CVPR 2021).

A pretrained member made linear in its weight change over chosen trailing modules:

    out(x) = f(x; w0) + J(x; w0) · Δw

where f is the member's pre-normalisation embedding (head output), w0 its starting weights (ImageNet, or the
previous release for an upgrade) and Δw the only trainable tensors. Regressing `out` onto the cloud's embeddings is
then a convex quadratic in Δw — the premise of LQF. The unit-length embedding is the normalised `out`.

The tangent J·Δw is computed by an explicit dual pass, not by autodiff: every module from the first linearised one
on carries a pair (primal, tangent), and a linearised convolution adds `conv(primal_in, ΔW) + Δb` to the tangent of
its input pushed through the same convolution with W0. So the training model *is* the deployable graph — ordinary
convolutions, the trailing stages run with W0 on both streams and once with ΔW — and every exporter serialises it
like any member (one graph, every format); its extra MACs are counted (`tangent_macs`). The test holds the dual pass
to `torch.func.jvp` of the member and to finite differences.

Batch norm runs in inference mode (the statistics of w0): the linear model is defined around one fixed function. A
conv's Δb sits before its batch norm's per-channel scale, so ΔW and Δb span everything the batch norm's own Δγ and
Δβ could add (Δγ's direction is ΔW ∝ W0): the parametrisation has no redundant tensors.

ReLU6 has zero derivative wherever it saturates, which switches those units off in the linear model; LQF swaps in a
leaky form. `LeakyReLU6(leak)` leaks with slope `leak` below 0 and above 6 and is ReLU6 exactly at leak 0 (so a zero
change reproduces the member bit for bit); at leak > 0 the primal changes where units saturate, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hetero.errors import InputError


class LeakyReLU6(nn.Module):
    """clamp(x, 0, 6) + leak · (x − clamp(x, 0, 6)): ReLU6 with slope `leak` outside [0, 6]."""

    def __init__(self, leak: float):
        super().__init__()
        self.leak = float(leak)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clipped = x.clamp(0.0, 6.0)
        return clipped + self.leak * (x - clipped) if self.leak else clipped


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def make_leaky(model: nn.Module, prefixes: Sequence[str], leak: float) -> int:
    """Replace the ReLU / ReLU6 modules under `prefixes` by LeakyReLU6(leak); the number replaced."""
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.ReLU | nn.ReLU6) and _under(full, prefixes):
                setattr(module, child_name, LeakyReLU6(leak))
                swapped += 1
    return swapped


Pair = tuple[torch.Tensor, torch.Tensor | None]  # (primal, tangent); no tangent before the first linearised module


class Linearised(nn.Module):
    """`model` (an MBNet member) linear in the change of every convolution and linear layer under `stages` (module
    paths, e.g. ["stages.6", "head_conv", "head"]); the member's parameters are frozen, `delta` holds ΔW and Δb
    (zero: the member exactly). `forward_features` is the linear output itself and `head` the identity, so training
    and export treat it like any member: norm(head(features)) is its embedding."""

    def __init__(self, model: nn.Module, stages: Sequence[str], leak: float = 0.0):
        from hetero.models.mbnet import MBNet

        super().__init__()
        if not isinstance(model, MBNet):
            raise InputError(
                f"LQF linearises the MBNet families (efficientnet_*, mobilenetv2_*), not {type(model).__name__}"
            )
        modules = dict(model.named_modules())
        unknown = [s for s in stages if s not in modules or not s]
        if unknown or not stages:
            top = ", ".join(n for n, _ in model.named_children())
            raise InputError(f"linearise which modules? {unknown or 'none given'} (top-level modules: {top})")
        if leak and not make_leaky(model, stages, leak):
            raise InputError(f"no ReLU / ReLU6 modules under {list(stages)} to make leaky (leak {leak})")
        self.stages, self.leak = tuple(stages), float(leak)
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        units = [(n, m) for n, m in model.named_modules() if _layer(m) is not None and n != "classifier"]
        self.linear_units = [n for n, _ in units if _under(n, stages)]
        if not self.linear_units:
            raise InputError(f"no convolution or linear layer under {list(stages)} to linearise")
        self.delta = nn.ParameterDict()
        for n, m in units:
            if n in self.linear_units:
                layer = _layer(m)
                self.delta[_key(n) + "__w"] = nn.Parameter(torch.zeros_like(layer.weight))
                self.delta[_key(n) + "__b"] = nn.Parameter(layer.weight.new_zeros(layer.weight.shape[0]))
        self.names = {m: n for n, m in units}
        self.head = nn.Identity()  # norm and classifier: the member's own (properties, so saved once)
        self.resolution = model.resolution
        self.arch = getattr(model, "arch", None)
        self.pretrained_info = getattr(model, "pretrained_info", None)
        self.taps: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # K-FAC reads layer inputs/outputs
        self.tangent_macs = 0
        names = {id(mod): n for n, mod in model.named_modules()}
        owners = [names[id(b)] for b in self._blocks()]
        self.first = next(
            (i for i, b in enumerate(owners) if any(_under(u, [b]) for u in self.linear_units)), len(owners)
        )
        self.keep_trunk, self.trunk_out = False, None
        self.train(False)

    @property
    def norm(self) -> nn.Module:
        return self.model.norm

    @property
    def classifier(self) -> nn.Module:
        return self.model.classifier

    def lqf_record(self) -> dict:
        """What a manifest records to rebuild this model around its member."""
        return {"stages": list(self.stages), "leak": self.leak}

    def deltas(self, name: str) -> tuple[nn.Parameter, nn.Parameter]:
        """ΔW and Δb of the linearised unit `name` (a module path of the member)."""
        k = _key(name)
        return self.delta[k + "__w"], self.delta[k + "__b"]

    @torch.no_grad()
    def fold_deltas(self) -> None:
        """Scale each linearised conv's ΔW and Δb by its batch norm's scale: what folding the batch norm into the
        conv (export's prepare step, which then replaces it by the identity) needs, so the function is unchanged."""
        modules = dict(self.model.named_modules())
        for name in self.linear_units:
            unit = modules[name]
            if isinstance(getattr(unit, "bn", None), nn.BatchNorm2d):
                scale, (dw, db) = _bn_scale(unit.bn), self.deltas(name)
                dw.mul_(scale.reshape(-1, 1, 1, 1))
                db.mul_(scale)

    def train(self, mode: bool = True) -> Linearised:
        """Batch norm stays in inference mode: the linearisation point is one fixed function."""
        super().train(mode)
        self.model.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x; w0) + J(x; w0)·Δw, before normalisation: linear in Δw."""
        primal, tangent = self.forward_pair(x)
        return primal if tangent is None else primal + tangent

    def forward_pair(self, x: torch.Tensor) -> Pair:
        """f(x; w0) and J(x; w0)·Δw apart, before normalisation."""
        return self.tail(self.trunk(x))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The member's own blocks before the first linearised one: no tangent, nothing trainable (kept in
        `trunk_out` while `keep_trunk` is set, for K-FAC's extra pass)."""
        for block in self._blocks()[: self.first]:
            x = block(x)
        if self.keep_trunk:
            self.trunk_out = x.detach()
        return x

    def tail(self, h: torch.Tensor) -> Pair:
        """The dual pass from the first linearised block on, the pooled pair through the head."""
        self.tangent_macs = 0
        m, pair = self.model, (h, None)
        for block in self._blocks()[self.first :]:
            pair = self._convbn(block, pair) if block in (m.stem, m.head_conv) else self._mbconv(block, pair)
        p, t = m.pool(pair[0]), None if pair[1] is None else m.pool(pair[1])
        return self._unit(m.head, p, t, m.head(p), F.linear)

    def _blocks(self) -> list[nn.Module]:
        m = self.model
        return [m.stem, *(block for stage in m.stages for block in stage), m.head_conv]

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedding(x)

    def _mbconv(self, block: nn.Module, pair: Pair) -> Pair:
        out = pair if isinstance(block.expand, nn.Identity) else self._convbn(block.expand, pair)
        out = self._convbn(block.project, self._convbn(block.dw, out))
        if not block.residual:
            return out
        tangents = [t for t in (pair[1], out[1]) if t is not None]
        return pair[0] + out[0], sum(tangents[1:], tangents[0]) if tangents else None

    def _convbn(self, unit: nn.Module, pair: Pair) -> Pair:
        x, t = unit.pad(pair[0]), pair[1]
        pre, tangent = self._unit(unit, x, None if t is None else unit.pad(t), unit.conv(x), self._conv(unit.conv))
        pre_bn = unit.bn(pre)
        if tangent is None:
            return unit.act(pre_bn), None
        if isinstance(unit.bn, nn.BatchNorm2d):  # folded (`fold_deltas`): the scale is in W0, ΔW and Δb already
            tangent = tangent * _bn_scale(unit.bn).reshape(1, -1, 1, 1)
        return unit.act(pre_bn), _through_activation(unit.act, pre_bn, tangent)

    def _unit(self, unit: nn.Module, x: torch.Tensor, t: torch.Tensor | None, primal: torch.Tensor, op) -> Pair:
        """A conv or linear layer on the pair: the tangent of the input through W0, plus the layer's ΔW on the
        primal input when it is linearised (its input and output recorded for K-FAC when `taps` is set)."""
        layer = _layer(unit)
        tangent = None if t is None else op(t, layer.weight, None)
        name = self.names[unit]
        if name in self.linear_units:
            own = op(x, *self.deltas(name))
            if self.taps is not None:
                self.taps[name] = (x.detach(), own)
            tangent = own if tangent is None else tangent + own
        if t is not None or name in self.linear_units:
            self.tangent_macs += _macs(layer, primal) * ((t is not None) + (name in self.linear_units))
        return primal, tangent

    @staticmethod
    def _conv(conv: nn.Conv2d):
        def op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)

        return op


def _layer(unit: nn.Module) -> nn.Conv2d | nn.Linear | None:
    """The weight layer of a linearisable unit: a ConvBN's convolution or a linear layer."""
    from hetero.models.mbnet import ConvBN

    if isinstance(unit, ConvBN):
        return unit.conv
    return unit if isinstance(unit, nn.Linear) else None


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _through_activation(act: nn.Module, pre: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """The tangent times the activation's derivative at `pre`: 1 inside (0, 6), `leak` outside (ReLU6: 0)."""
    if isinstance(act, nn.Identity):
        return tangent
    leak = act.leak if isinstance(act, LeakyReLU6) else 0.0
    if not isinstance(act, LeakyReLU6 | nn.ReLU6):
        raise InputError(f"no derivative rule for {type(act).__name__} in a linearised member")
    inside = ((pre > 0.0) & (pre < 6.0)).to(tangent.dtype)
    return tangent * (inside + leak * (1.0 - inside)) if leak else tangent * inside


def _macs(layer: nn.Module, out: torch.Tensor) -> int:
    if isinstance(layer, nn.Conv2d):
        return (
            out.numel()
            // out.shape[0]
            * (layer.in_channels // layer.groups)
            * layer.kernel_size[0]
            * layer.kernel_size[1]
        )
    return out.numel() // out.shape[0] * layer.in_features


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots
