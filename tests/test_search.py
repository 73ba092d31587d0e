"""Architecture search: reshaped members rebuild from their manifest, candidates respect the budget, and the search
runs end to end on digits (tiny space, two candidates), ranks on identities it never trains on and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from hetero.config import load_config, override
from hetero.data.datasets import load_split
from hetero.errors import InputError
from hetero.models.checkpoint import load_checkpoint, save_checkpoint
from hetero.models.registry import create_model, model_cost
from hetero.models.weights import inherit_weights
from hetero.spaces import InputSpec
from hetero.training.search import sample_candidates, validation_split

ARCH = {
    "width": [0.5, 1.0, 0.75, 0.5, 0.5, 0.75, 0.5],
    "depth": [1, 2, 1, 3, 1, 2, 1],
    "kernel": [3, 3, 3, 3, 5, 3, 3],
    "expand": [1, 6, 4, 6, 3, 6, 6],
}
SEARCH_TOML = """
[search]
base = "mobilenetv2_100"
widths = [0.25, 0.5]
kernels = [3]
resolutions = [12, 16]
budget_macs = 1.0
min_budget_share = 0.0
candidates = 2
top = 2
proxy_epochs = 1
validation_classes = 2
"""


def test_reshaped_member_rebuilds_from_its_manifest(tmp_path):
    """The manifest's arch is all load_checkpoint needs: same shapes, same function (a per-stage arch lost on the
    way would load into the base shape and fail strict loading)."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", embed_dim=8, num_classes=3, resolution=40, arch=ARCH).eval()
    assert [len(s) for s in model.stages] == ARCH["depth"]
    assert model.stages[4][0].dw.conv.kernel_size == (5, 5) and model.stages[2][0].dw.conv.kernel_size == (3, 3)
    assert model.stages[4][0].dw.conv.out_channels == 3 * model.stages[3][-1].project.conv.out_channels  # expand 3
    spec = InputSpec(48, 48)
    m = save_checkpoint(
        tmp_path / "c", model, model_name="efficientnet_lite0", input_spec=spec, space=None, space_name="t", seed=0,
        extra={},
    )  # fmt: skip
    assert m.model["arch"] == {**ARCH, "width": [float(w) for w in ARCH["width"]]}
    again, _ = load_checkpoint(tmp_path / "c")
    x = torch.rand(3, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert model_cost(again, spec)["macs"] < model_cost(create_model("efficientnet_lite0", embed_dim=8, num_classes=3,
                                                                     resolution=40), spec)["macs"]  # fmt: skip


def test_smaller_kernel_inherits_the_centre():
    """A 3x3 depthwise kernel cut from the base's 5x5 takes its middle, not its top-left corner."""
    src = create_model("efficientnet_lite0", embed_dim=8, num_classes=2)
    sub = create_model("efficientnet_lite0", embed_dim=8, num_classes=2, arch={"kernel": [3] * 7})
    info = inherit_weights(sub, src.state_dict())
    assert info["inherited_tensors"] == info["tensors"]
    big = src.state_dict()["stages.2.0.dw.conv.weight"]
    assert big.shape[-1] == 5
    assert torch.equal(sub.state_dict()["stages.2.0.dw.conv.weight"], big[: sub.stages[2][0].dw.conv.out_channels,
                                                                              :, 1:4, 1:4])  # fmt: skip


@pytest.mark.parametrize(
    ("name", "arch", "says"),
    [
        ("hnet_edge", {"depth": [1] * 7}, "takes no arch"),
        ("efficientnet_lite0", {"depth": [1, 1]}, "one value per stage"),
        ("efficientnet_lite0", {"kernel": [4] * 7}, "kernel sizes"),
        ("efficientnet_lite0", {"depth": [0] * 7}, "whole repeats"),
        ("efficientnet_lite0", {"widht": [1.0] * 7}, "not one of"),
        ("efficientnet_lite0", {"expand": [1, 6, 6, 6, 6, 6, 0]}, "expansion ratios"),
    ],
)
def test_bad_arch_is_one_clear_error(name, arch, says):
    with pytest.raises(InputError, match=says):
        create_model(name, embed_dim=8, num_classes=2, arch=arch)


def test_candidates_are_distinct_and_inside_the_budget():
    cfg = override(load_config(), search={"base": "efficientnet_lite0", "resolutions": [32, 40], "candidates": 5,
                                          "min_budget_share": 0.5})  # fmt: skip
    spec = InputSpec(40, 40)
    budget = 3_000_000  # the full Lite0 takes 7.8 M at 32 px
    cands = sample_candidates(cfg.search, "efficientnet_lite0", budget, 8, 40)
    assert len({c.key for c, _ in cands}) == len(cands) == 5
    assert {c.resolution for c, _ in cands} == {32, 40}  # resolutions take turns
    for c, macs in cands:
        model = create_model("efficientnet_lite0", embed_dim=8, num_classes=2, resolution=c.resolution, arch=c.arch)
        assert macs == model_cost(model, spec)["macs"] and 0.5 * budget <= macs <= budget
        assert all(w in (0.5, 0.75, 1.0) for w in c.arch["width"])
    again = sample_candidates(cfg.search, "efficientnet_lite0", budget, 8, 32)
    assert [c.key for c, _ in again] == [c.key for c, _ in cands]  # seeded


def test_search_end_to_end_on_digits(tiny, tmp_path, capsys):
    config = tmp_path / "search.toml"
    config.write_text(Path(tiny.config).read_text() + SEARCH_TOML)
    cfg = load_config(config)
    out = tmp_path / "search"
    argv = ("search", "--config", config, "--cloud", tiny.cloud, "--out", out, "--quiet", "--json")
    assert run_cli(*argv) == 0
    doc = json.loads(capsys.readouterr().out)
    trials = doc["trials"]
    assert [t["stage"] for t in trials] == ["proxy", "proxy", "full", "full"]
    full = [t for t in trials if t["stage"] == "full"]
    assert doc["best"]["val_recall_at_1"] == max(t["val_recall_at_1"] for t in full)
    for t in trials:
        assert t["macs"] <= doc["budget_macs"] and 0.0 <= t["val_recall_at_1"] <= 1.0

    # Validation identities: training identities, never the held-out ones the gate measures, never trained on.
    split = load_split(cfg.data)
    val = validation_split(cfg, split)
    assert set(val.heldout_classes) <= set(split.train_classes)
    assert not set(val.heldout_classes) & set(split.heldout_classes)
    proxy_manifest = json.loads((out / "proxy" / trials[0]["key"] / "manifest.json").read_text())
    assert not set(proxy_manifest["extra"]["split"]["train_classes"]) & set(val.heldout_classes)

    # The best is a normal checkpoint in the cloud's space, trained on every training identity, rebuilt from its
    # manifest with the chosen shape.
    m = load_checkpoint(out / "best")[1]
    cloud_m = load_checkpoint(tiny.cloud)[1]
    assert m.space.id == cloud_m.space.id
    assert m.model["arch"] == doc["best"]["candidate"]["arch"]
    assert m.model["resolution"] == doc["best"]["candidate"]["resolution"]
    assert m.extra["split"]["train_classes"] == list(split.train_classes)
    assert (out / "search.png").stat().st_size > 0 and (out / "search.csv").is_file()

    # Resume: nothing retrains (the log and the best checkpoint stay byte for byte).
    log, weights = (out / "trials.jsonl").read_bytes(), (out / "best" / "model.safetensors").read_bytes()
    assert run_cli(*argv) == 0
    assert json.loads(capsys.readouterr().out)["best"] == doc["best"]
    assert (out / "trials.jsonl").read_bytes() == log
    assert (out / "best" / "model.safetensors").read_bytes() == weights

    # Another search config in the same directory is refused, not mixed in.
    assert run_cli(*argv, "--top", "1") == 2
    assert "another config" in capsys.readouterr().err


def test_search_refuses_a_base_that_cannot_be_reshaped(tiny, tmp_path, capsys):
    """The digits cloud (hnet) is not reshapable: without [search] base the search says so and what is."""
    assert run_cli("search", "--config", tiny.config, "--cloud", tiny.cloud, "--out", tmp_path / "s", "--quiet") == 2
    err = capsys.readouterr().err
    assert "not a reshapable member" in err and "efficientnet_lite0" in err
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_latency_budget_filters_candidates_by_the_measure_given(tiny, tmp_path):
    """With budget_ms, only candidates the latency measure admits are trained, and each trial records its time;
    the measure is the real one (an ONNX graph on onnxruntime) or any callable the caller passes."""
    from hetero.devices.bench import graph_latency_ms
    from hetero.training.search import search

    cfg = override(load_config(tiny.config), **{"search": {**_search_table(), "budget_ms": 10.0, "top": 1}})
    split = load_split(cfg.data)
    with pytest.raises(InputError, match="budget_ms needs a latency measure"):
        search(cfg, tiny.cloud, tmp_path / "none", split=split)

    def fake(graph, threads: int, fmt: str) -> float:
        return 1.0 if graph.model.resolution == 12 else 100.0

    r = search(cfg, tiny.cloud, tmp_path / "s", split=split, latency=fake)
    assert {t.candidate.resolution for t in r.trials} == {12}
    assert all(t.latency_ms == 1.0 for t in r.trials)
    model = create_model("mobilenetv2_100", embed_dim=8, num_classes=2, resolution=12, arch=r.best.candidate.arch)
    from hetero.models.registry import EmbeddingGraph

    graph = EmbeddingGraph(model.eval(), InputSpec(16, 16)).eval()
    for fmt in ("onnx", "tflite"):
        assert 0.0 < graph_latency_ms(graph, 1, fmt) < 1000.0


def _search_table() -> dict:
    import tomllib

    return tomllib.loads(SEARCH_TOML)["search"]
