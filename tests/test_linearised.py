"""LQF's linearised members (issue 31, part 1): the output is the first-order expansion around the pretrained
weights, a zero change is the pretrained model exactly, only the weight change trains, and the leaky activation
keeps the pretrained function at leak 0."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call, jvp

from hetero.errors import InputError
from hetero.models.linearised import LeakyReLU6, Linearised, make_leaky
from hetero.models.registry import create_model

TRAILING = ["stages.6", "head_conv", "head"]


@pytest.fixture(scope="module")
def member() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_050", embed_dim=16, num_classes=4, resolution=None, pretrained=True)
    return model.eval()


def _pixels(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_zero_change_is_the_pretrained_model_exactly(member):
    lin = Linearised(copy.deepcopy(member), TRAILING)
    x = _pixels()
    with torch.no_grad():
        assert torch.equal(lin.forward_features(x), member.head(member.forward_features(x)))
        assert torch.equal(lin.forward_embedding(x), member.forward_embedding(x))


def _directions(lin: Linearised) -> dict[str, torch.Tensor]:
    """Δw as a direction in the member's own parameters: a conv's ΔW on its weight, its Δb (before the batch norm's
    scale) on the batch norm's shift, a linear layer's ΔW and Δb on its weight and bias."""
    out, modules = {}, dict(lin.model.named_modules())
    for name in lin.linear_units:
        unit, k = modules[name], name.replace(".", "__")
        dw, db = lin.delta[k + "__w"], lin.delta[k + "__b"]
        if isinstance(unit, torch.nn.Linear):
            out[f"{name}.weight"], out[f"{name}.bias"] = dw, db
        else:
            scale = unit.bn.weight / torch.sqrt(unit.bn.running_var + unit.bn.eps)
            out[f"{name}.conv.weight"], out[f"{name}.bn.bias"] = dw, db * scale
    return out


@pytest.mark.parametrize("leak", [0.0, 0.1])
def test_output_is_the_first_order_expansion(member, leak):
    """The dual pass equals torch.func.jvp of the member and central differences of the real network along Δw (float64),
    and the whole output is f(w0) + J·Δw — not f(w0 + Δw), which differs at second order."""
    lin = Linearised(copy.deepcopy(member).double(), TRAILING, leak=leak)
    x = _pixels().double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in lin.delta.values():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
        out = lin.forward_features(x)
        net = copy.deepcopy(lin.model)  # the member with the leaky activations it is linearised with
        params, dirs = dict(net.named_parameters()), _directions(lin)

        def pre_norm(module: torch.nn.Module) -> torch.Tensor:
            return module.head(module.forward_features(x))

        base, tangent = jvp(lambda w: _pre_norm_with(net, w, x), ({k: params[k] for k in dirs},), (dirs,))
        torch.testing.assert_close(out, base + tangent, rtol=1e-9, atol=1e-12)
        eps, shifted = 1e-6, {}  # small: a step must not cross an activation kink
        for sign in (1, -1):
            probe = copy.deepcopy(net)
            probe_params = dict(probe.named_parameters())
            for k, d in dirs.items():
                probe_params[k].add_(sign * eps * d)
            shifted[sign] = pre_norm(probe)
        torch.testing.assert_close(out - pre_norm(net), (shifted[1] - shifted[-1]) / (2 * eps), rtol=1e-5, atol=1e-7)
        full_step = copy.deepcopy(net)
        for k, d in dirs.items():
            dict(full_step.named_parameters())[k].add_(d)
        assert (pre_norm(full_step) - out).abs().max() > 1e-6  # linear, not the net


class _PreNorm(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.net.forward_features(x))


def _pre_norm_with(net: torch.nn.Module, w: dict, x: torch.Tensor) -> torch.Tensor:
    """The member's pre-normalisation output with parameters `w` substituted (autodiff's reference)."""
    return functional_call(_PreNorm(net), {f"net.{k}": v for k, v in w.items()}, (x,), strict=False)


def test_only_the_weight_change_trains_and_a_step_lowers_the_quadratic(member):
    lin = Linearised(copy.deepcopy(member), TRAILING)
    assert all(not p.requires_grad for p in lin.model.parameters())
    trainable = [p for p in lin.parameters() if p.requires_grad]
    assert trainable == list(lin.delta.values()) and len(trainable) == 2 * len(lin.linear_units) > 0
    x, target = _pixels(8), torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator()), dim=1)
    opt = torch.optim.SGD(trainable, lr=1e-4)  # the quadratic is steep: LQF preconditions it (K-FAC)
    losses = []
    lin.train()  # batch norm stays in inference mode all the same
    assert not lin.model.training
    for _ in range(3):
        loss = (lin.forward_features(x) - target).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[2] < losses[0]
    after, before = lin.model.state_dict(), member.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # w0 untouched


def test_leaky_relu6_keeps_the_pretrained_function_at_leak_zero(member):
    x = torch.linspace(-3, 9, 121)
    assert torch.equal(LeakyReLU6(0.0)(x), torch.nn.functional.relu6(x))
    leaky = LeakyReLU6(0.1)(x)
    assert torch.allclose(leaky[x < 0], 0.1 * x[x < 0]) and torch.allclose(leaky[x > 6], 6 + 0.1 * (x[x > 6] - 6))
    model = copy.deepcopy(member)
    swapped = make_leaky(model, TRAILING, 0.0)
    assert swapped > 0 and sum(isinstance(m, LeakyReLU6) for m in model.modules()) == swapped
    with torch.no_grad():
        torch.testing.assert_close(model.forward_embedding(_pixels()), member.forward_embedding(_pixels()))
    lin = Linearised(copy.deepcopy(member), TRAILING, leak=0.1)
    assert all(m.leak == 0.1 for m in lin.model.modules() if isinstance(m, LeakyReLU6))


def test_unknown_modules_are_refused(member):
    with pytest.raises(InputError, match="top-level modules: stem, stages"):
        Linearised(copy.deepcopy(member), ["stages.99"])
    with pytest.raises(InputError, match="none given"):
        Linearised(copy.deepcopy(member), [])
