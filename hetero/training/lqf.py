"""LQF training: a linearised member and the K-FAC step that minimises its quadratic (Achille et al., CVPR 2021).

For a linearised member (hetero.models.linearised) regressed onto the cloud's embeddings (`regression_linear`), the
loss is a convex quadratic in the weight change Δw with curvature 2·E[JᵀJ] (Gauss-Newton, exact for a linear model).
Plain gradient descent crawls along its flat directions and diverges along its steep ones; LQF preconditions with a
Kronecker-factored approximation of that curvature (K-FAC, Martens & Grosse 2015; convolutions as in Grosse & Martens
2016): per layer, A = E[a aᵀ] over the layer's (homogeneous) inputs and G = E[g gᵀ] over the gradients at its
output, and the step is G⁻¹ ∇W A⁻¹. Gradients for G are *sampled* from the model's Gaussian output (a backward
pass of z·ε, ε ~ N(0, 2I)), so the factors estimate the true curvature, not the shrinking residual's (the empirical
Fisher); then lr = 1 is a Gauss-Newton step. Grouped (depthwise) convolutions get one factor pair per group.

Each factor pair gets factored Tikhonov damping (`damping` relative to its mean eigenvalues, plus the weight decay)
before inversion. Factors are running averages
refreshed, and re-inverted, every `inverse_every` steps; everything lives in the optimiser state, so a resumed run
continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hetero.config import LqfConfig
from hetero.models.linearised import Linearised
from hetero.training import distributed

# The loss terms LQF's step is exact for: least squares on the head's raw output (their Gauss-Newton is 2·weight·I).
LEAST_SQUARES = ("regression_linear", "previous_linear")


def linearise(model: nn.Module, lqf: LqfConfig) -> Linearised:
    """The member made linear in its weight change under `lqf.stages`, around its weights as they are now."""
    return Linearised(model, lqf.stages, lqf.leak)


@torch.no_grad()
def fit_head(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], ridge: float) -> float:
    """Set a member's embedding head to the ridge regression of the cloud's embeddings on its pooled features (one
    pass over `batches` of (pixels, cloud embeddings)); returns the fit's mean squared residual. For a linearised
    model pass its member: the head is then W0, the point LQF linearises around.

    The point LQF linearises around should already be a good answer: around a randomly initialised head the
    primal output is noise and the tangent must cancel it, so the deployed sum p + t is a difference of two large
    numbers — which int8 cannot represent (measured: mean cosine 0.63 on digits, TFLite) — and the Jacobian through a
    random head points nowhere in particular. For non-linear training with `regression_linear` from a head trained
    under another loss it removes a scale mismatch that otherwise drives Adam through every weight at once.
    `ridge` is relative to the features' mean energy: with more features than images a weak ridge interpolates,
    and the head then amplifies what rounding does to the features (digits: ridge 1e-3 gave |W| 11 and fp16
    weights cost min cosine 0.97; 0.03 gave |W| 0.8).
    """
    gram, cross, n, squares = None, None, 0, 0.0
    was_training = net.training
    net.eval()  # the features the deployed model computes (batch norm at its running statistics)
    for pixels, target in batches:
        squares += float(target.double().pow(2).sum())
        phi = torch.cat([net.forward_features(pixels), pixels.new_ones(len(pixels), 1)], dim=1).double()
        gram = phi.T @ phi if gram is None else gram + phi.T @ phi
        cross = phi.T @ target.double() if cross is None else cross + phi.T @ target.double()
        n += len(pixels)
    net.train(was_training)
    if gram is None:
        return float("nan")
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    solution = torch.linalg.solve(gram + ridge * torch.diagonal(gram).mean() * eye, cross)  # [features + 1, dim]
    net.head.weight.copy_(solution[:-1].T)
    net.head.bias.copy_(solution[-1])
    return (float(torch.trace(solution.T @ gram @ solution - 2 * solution.T @ cross)) + squares) / n


class KFAC(torch.optim.Optimizer):
    """K-FAC-preconditioned SGD with momentum over a linearised member's Δw (`model.delta`).

    Call `observe(raw)` with the batch's pre-normalisation output after the forward pass and before `backward`:
    on refresh steps it samples the output gradients for the factors (the model records each linearised layer's
    input and output while `taps` is set).
    """

    def __init__(
        self,
        model: Linearised,
        lqf: LqfConfig,
        lr: float,
        weight_decay: float = 0.0,
        seed: int = 0,
        curvature: float = 1.0,
    ):
        """`curvature`: the loss's Gauss-Newton in units of ‖z − t‖²'s (the summed weights of the least-squares
        terms: regression_linear + previous_linear), which the exact step length divides by."""
        params = list(model.delta.values())
        super().__init__(params, {"lr": lr, "momentum": lqf.momentum, "weight_decay": weight_decay})
        self.model, self.lqf, self.seed, self.curvature = model, lqf, seed, curvature
        self.layers = {name: _unit(model, name) for name in model.linear_units}
        self.state["kfac"] = {"step": 0}

    def observe(self, raw: torch.Tensor) -> None:
        """On a refresh step: fold the sampled-curvature factors of this batch into the running averages."""
        step = self.state["kfac"]["step"]
        taps, self.model.taps = self.model.taps, None
        if step % self.lqf.inverse_every or not taps:
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        eps = torch.randn(raw.shape, generator=gen, dtype=raw.dtype) * 2.0**0.5
        outs = [taps[n][1] for n in self.layers]
        grads = torch.autograd.grad((raw * eps).sum(), outs, retain_graph=True)
        decay = self.lqf.factor_decay if "A" in self.state[self._w(next(iter(self.layers)))] else 0.0
        for (name, layer), g in zip(self.layers.items(), grads, strict=True):
            a, gg = _factors(layer, taps[name][0], g)
            if distributed.world() > 1:  # every rank must precondition with the same factors
                for t in (a, gg):
                    torch.distributed.all_reduce(t)
                    t /= distributed.world()
            st = self.state[self._w(name)]
            st["A"] = a if not decay else decay * st["A"] + (1 - decay) * a
            st["G"] = gg if not decay else decay * st["G"] + (1 - decay) * gg
            wd = self.param_groups[0]["weight_decay"]
            st["A_inv"], st["G_inv"] = _damped_inverses(st["A"], st["G"], self.lqf.damping, wd)

    def arm(self) -> None:
        """Before the forward pass on this rank's batch: record the linearised layers' inputs and outputs if
        this is a refresh step, and keep the trunk's output for the step size's extra pass (the tail only)."""
        self.model.taps = {} if self.state["kfac"]["step"] % self.lqf.inverse_every == 0 else None
        self.model.keep_trunk = True

    def _w(self, name: str) -> torch.Tensor:
        return self.model.deltas(name)[0]

    @torch.no_grad()
    def step(self, closure=None):
        """Δw ← Δw − lr · (μ·v + α·d): d the preconditioned gradient, α = gᵀd / dᵀHd its exact minimiser on this
        batch's quadratic (H from one extra pass: J·d is the tangent with Δw set to d)."""
        self.state["kfac"]["step"] += 1
        group = self.param_groups[0]
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads, dirs = {}, {}
        for name, layer in self.layers.items():
            w, b = self.model.deltas(name)
            if w.grad is None:
                continue
            gw, gb = w.grad + wd * w, b.grad + wd * b
            st = self.state[w]
            grads[w], grads[b] = gw, gb
            dirs[w], dirs[b] = _precondition(layer, gw, gb, st["A_inv"], st["G_inv"]) if "A_inv" in st else (gw, gb)
        if not dirs:
            return None
        alpha = self._alpha(grads, dirs, wd)
        self.state["kfac"]["alpha"] = alpha
        for p, d in dirs.items():
            buf = self.state[p].get("buf")
            buf = d.mul(alpha) if buf is None else buf.mul_(mom).add_(d, alpha=alpha)
            self.state[p]["buf"] = buf
            p.add_(buf, alpha=-lr)
        return None

    def _alpha(self, grads: dict, dirs: dict, wd: float) -> float:
        """The minimiser along d of the batch's quadratic: gᵀd / (2·c·mean‖J·d‖² + wd·‖d‖²), c = `curvature`."""
        saved = {p: p.detach().clone() for p in dirs}
        for p, d in dirs.items():
            p.copy_(d)
        try:
            _, jd = self.model.tail(self.model.trunk_out)
        finally:
            self.model.keep_trunk, self.model.trunk_out = False, None
            for p, v in saved.items():
                p.copy_(v)
        curv = 2.0 * self.curvature * jd.double().pow(2).sum(dim=1).mean() + wd * sum(
            d.double().pow(2).sum() for d in dirs.values()
        )
        gd = sum((grads[p].double() * d.double()).sum() for p, d in dirs.items())
        if distributed.world() > 1:  # each rank saw its slice: the global batch's curvature is their mean
            torch.distributed.all_reduce(curv)
            curv /= distributed.world()
        return float(gd / curv) if curv > 0 else 0.0


def _unit(model: Linearised, name: str) -> nn.Conv2d | nn.Linear:
    unit = dict(model.model.named_modules())[name]
    return unit if isinstance(unit, nn.Linear) else unit.conv


def _groups(layer: nn.Module) -> int:
    return layer.groups if isinstance(layer, nn.Conv2d) else 1


def _rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's homogeneous inputs as [groups, rows, d]: one row per image (linear) or per image and output
    position (conv, im2col), the group's input patch and a 1 for the bias."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [B, C·k·k, L]
        b, _, positions = cols.shape
        cols = cols.reshape(b, layer.groups, -1, positions).permute(1, 0, 3, 2).reshape(layer.groups, b * positions, -1)
    else:
        cols = x.unsqueeze(0)
    return torch.cat([cols, cols.new_ones((*cols.shape[:2], 1))], dim=2)


def _out_rows(layer: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Output gradients as [groups, rows, channels of the group], rows as in `_rows`."""
    if isinstance(layer, nn.Conv2d):
        b, c = g.shape[:2]
        return (
            g.reshape(b, layer.groups, c // layer.groups, -1)
            .permute(1, 0, 3, 2)
            .reshape(layer.groups, -1, c // layer.groups)
        )
    return g.unsqueeze(0)


def _factors(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A = E[a aᵀ] and G = positions · E[g gᵀ] per group (a conv's weight gradient sums over its output positions)."""
    a, gr = _rows(layer, x).double(), _out_rows(layer, g).double()
    positions = a.shape[1] // x.shape[0]
    return a.transpose(1, 2) @ a / a.shape[1], positions * (gr.transpose(1, 2) @ gr) / gr.shape[1]


def _damped_inverses(a: torch.Tensor, g: torch.Tensor, damping: float, weight_decay: float):
    """(A + π√λ I)⁻¹ and (G + √λ/π I)⁻¹ per group (factored Tikhonov damping, Martens & Grosse 2015 §6.3), with
    λ = damping · mean eig(A) · mean eig(G) + weight_decay and π = √(mean eig(A) / mean eig(G)), in float64. The
    weight decay is the quadratic's own ridge term, so a direction the data does not constrain stays bounded."""
    mean_a = torch.diagonal(a, dim1=1, dim2=2).mean(dim=1).clamp(min=1e-12).reshape(-1, 1, 1)
    mean_g = torch.diagonal(g, dim1=1, dim2=2).mean(dim=1).clamp(min=1e-12).reshape(-1, 1, 1)
    lam, pi = damping * mean_a * mean_g + weight_decay, torch.sqrt(mean_a / mean_g)
    eye_a, eye_g = torch.eye(a.shape[-1], dtype=a.dtype), torch.eye(g.shape[-1], dtype=g.dtype)
    return torch.linalg.inv(a + pi * lam.sqrt() * eye_a), torch.linalg.inv(g + lam.sqrt() / pi * eye_g)


def _precondition(layer: nn.Module, gw: torch.Tensor, gb: torch.Tensor, a_inv: torch.Tensor, g_inv: torch.Tensor):
    """G⁻¹ [∇W | ∇b] A⁻¹ per group, back in the parameters' shapes."""
    groups = _groups(layer)
    m = torch.cat([gw.reshape(groups, gw.shape[0] // groups, -1), gb.reshape(groups, -1, 1)], dim=2).double()
    p = (g_inv @ m @ a_inv).to(gw.dtype)
    return p[:, :, :-1].reshape(gw.shape), p[:, :, -1].reshape(gb.shape)
