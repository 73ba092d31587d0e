"""LQF's linearised members (issue 31, part 1): the output is the first-order expansion around the pretrained
weights, a zero change is the pretrained model exactly, only the weight change trains, and the leaky activation
keeps the pretrained function at leak 0."""

from __future__ import annotations

import copy

import pytest
import torch

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
        assert torch.equal(lin.forward_linear(x), member.head(member.forward_features(x)))
        assert torch.equal(lin.forward_embedding(x), member.forward_embedding(x))


def test_output_is_the_first_order_expansion(member):
    """The tangent equals the directional derivative of the real network along Δw (central differences in float64),
    and the whole output is f(w0) + J·Δw — not f(w0 + Δw), which differs at second order."""
    model = copy.deepcopy(member).double()
    lin = Linearised(model, TRAILING)
    x = _pixels().double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in lin.delta.values():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
        out = lin.forward_linear(x)
        ref = copy.deepcopy(member).double()
        base = ref.head(ref.forward_features(x))
        eps, probe = 1e-4, copy.deepcopy(model)
        params = dict(probe.named_parameters())
        shifted = {}
        for sign in (1, -1):
            for name in lin.names:
                w0 = dict(lin.body.named_parameters())[name]
                params[name.removeprefix("model.")].copy_(w0 + sign * eps * lin.delta[name.replace(".", "__")])
            shifted[sign] = probe.head(probe.forward_features(x))
        derivative = (shifted[1] - shifted[-1]) / (2 * eps)
        torch.testing.assert_close(out - base, derivative, rtol=1e-5, atol=1e-7)
        full_step = copy.deepcopy(model)
        for name in lin.names:
            dict(full_step.named_parameters())[name.removeprefix("model.")].add_(lin.delta[name.replace(".", "__")])
        assert (full_step.head(full_step.forward_features(x)) - out).abs().max() > 1e-6  # linear, not the net


def test_only_the_weight_change_trains_and_a_step_lowers_the_quadratic(member):
    lin = Linearised(copy.deepcopy(member), TRAILING)
    assert all(not p.requires_grad for p in lin.model.parameters())
    trainable = [p for p in lin.parameters() if p.requires_grad]
    assert trainable == list(lin.delta.values()) and len(trainable) == len(lin.names) > 0
    x, target = _pixels(8), torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator()), dim=1)
    opt = torch.optim.SGD(trainable, lr=1e-4)  # the quadratic is steep: LQF preconditions it (K-FAC)
    losses = []
    lin.train()  # batch norm stays in inference mode all the same
    assert not lin.model.training
    for _ in range(3):
        loss = (lin.forward_linear(x) - target).pow(2).sum(1).mean()
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
