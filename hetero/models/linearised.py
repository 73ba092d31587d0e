"""Linearised members for LQF (Achille et al., "LQF: Linear Quadratic Fine-Tuning", CVPR 2021).

A pretrained member made linear in its weight change over chosen trailing modules:

    out(x) = f(x; w0) + J(x; w0) · Δw

where f is the member's pre-normalisation embedding (head output), w0 its starting weights (ImageNet, or the
previous release for an upgrade) and Δw the only trainable tensors. Everything before the linearised modules is
frozen and runs once; the Jacobian-vector product comes from forward-mode differentiation (`torch.func.jvp`), so
no Jacobian is ever formed. Regressing `out` onto the cloud's embeddings is then a convex quadratic in Δw — the
premise of LQF. The unit-length embedding is the normalised `out`, as for every member.

ReLU6 has zero derivative wherever it saturates, which switches those units off in the linear model; LQF swaps in a
leaky form. `LeakyReLU6(leak)` leaks with slope `leak` below 0 and above 6 and is ReLU6 exactly at leak 0, so the
pretrained function is kept and only the linearisation gains directions. Batch norm runs in inference mode (the
statistics of w0): the linear model is defined around one fixed function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, jvp

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


class _PreNorm(nn.Module):
    """The member's head output before L2 normalisation: what LQF makes linear."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.forward_features(x))


class Linearised(nn.Module):
    """`model` linear in the change of every parameter under `stages` (module names, e.g. ["stages.6", "head_conv",
    "head"]); the model's own parameters are frozen, `delta` holds Δw (zero: the pretrained model exactly)."""

    def __init__(self, model: nn.Module, stages: Sequence[str], leak: float = 0.0):
        super().__init__()
        modules = dict(model.named_modules())
        unknown = [s for s in stages if s not in modules or not s]
        if unknown or not stages:
            top = ", ".join(n for n, _ in model.named_children())
            raise InputError(f"linearise which modules? {unknown or 'none given'} (top-level modules: {top})")
        if leak and not make_leaky(model, stages, leak):
            raise InputError(f"no ReLU / ReLU6 modules under {list(stages)} to make leaky (leak {leak})")
        self.stages, self.leak = tuple(stages), float(leak)
        self.body = _PreNorm(model)
        self.names = [n for n, _ in self.body.named_parameters() if _under(n.removeprefix("model."), stages)]
        for p in model.parameters():
            p.requires_grad_(False)
        params = dict(self.body.named_parameters())
        self.delta = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros_like(params[n])) for n in self.names})
        self.resolution = getattr(model, "resolution", None)  # the deployable graph resizes to it, as for the member
        self.norm, self.classifier = model.norm, model.classifier
        self.train(False)

    @property
    def model(self) -> nn.Module:
        return self.body.model

    def train(self, mode: bool = True) -> Linearised:
        """Batch norm stays in inference mode: the linearisation point is one fixed function."""
        super().train(mode)
        self.body.eval()
        return self

    def forward_linear(self, x: torch.Tensor) -> torch.Tensor:
        """f(x; w0) + J(x; w0)·Δw, before normalisation: linear in Δw."""
        params = dict(self.body.named_parameters())
        w0 = {n: params[n] for n in self.names}
        dw = {n: self.delta[_key(n)] for n in self.names}
        out, tangent = jvp(lambda w: functional_call(self.body, w, (x,), strict=False), (w0,), (dw,))
        return out + tangent

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.forward_linear(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedding(x)


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots
