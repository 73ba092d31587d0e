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


def _lite_space(budget_share: float = 0.1, resolutions=(48, 64)):
    from hetero.models.mbnet import VARIANTS
    from hetero.training import evolve

    scfg = override(load_config(), search={"widths": [0.5, 0.75, 1.0], "kernels": [3, 5], "expands": [3, 4, 6],
                                           "resolutions": list(resolutions)}).search  # fmt: skip
    cloud_macs = VARIANTS["efficientnet_lite2"].macs(96, 128)
    budget = int(budget_share * cloud_macs)
    return evolve.make_space(scfg, "efficientnet_lite2", int(0.6 * budget), budget, 128, 96)


def test_evolution_is_seeded_with_every_member_and_the_hand_set_shape_inside_the_budget():
    from hetero.models.mbnet import VARIANTS
    from hetero.training import evolve
    from hetero.training.candidates import Candidate

    space = _lite_space()
    assert space.resolutions == (48, 52, 56, 60, 64)  # every 4 px between the listed extremes
    assert set(space.members) == {n for n, v in VARIANTS.items() if v.base == "lite"}
    hand = Candidate(VARIANTS["efficientnet_lite0_075"].arch(), 52, "efficientnet_lite0_075")
    seeds = evolve.seed_shapes(space, [hand])
    assert seeds[0] == hand  # a person's pick is always in the first population
    assert all(space.low <= space.macs(c) <= space.high for c in seeds)
    members = {c.model for c in seeds}
    assert {"efficientnet_lite0_050", "efficientnet_lite0_075"} <= members  # slim members fit 1/10 of Lite2
    for c in seeds[1:]:  # each member at its largest resolution inside the window
        bigger = [r for r in space.resolutions if r > c.resolution]
        assert not bigger or space.macs(Candidate(c.arch, bigger[0], c.model)) > space.high
    too_big = Candidate(VARIANTS["efficientnet_lite2"].arch(), 64, "efficientnet_lite2")
    assert too_big not in evolve.seed_shapes(space, [too_big])


def test_evolution_climbs_from_a_persons_pick_where_random_draws_do_not():
    """The search's point: a shape a few genes from the hand-set one scores best (a stand-in score, the number of
    genes away from it). Evolution seeded with the hand-set shape gets closer than it started and closer than as many
    random draws; every child is new and inside the budget; the same seed proposes the same children. (On a score
    spread evenly over all ~30 genes, 40 random draws do better than 40 evolved ones: evolution refines a good start,
    it does not replace breadth — benchmarks/results/arch_search_evolution.md.)"""
    from hetero.models.mbnet import VARIANTS
    from hetero.training import evolve
    from hetero.training.candidates import Candidate, sample_candidates

    space = _lite_space()
    hand = Candidate(VARIANTS["efficientnet_lite0_075"].arch(), 52, "efficientnet_lite0_075")
    goal = {k: list(v) for k, v in hand.arch.items()}
    goal["width"][5], goal["kernel"][4], goal["depth"][3] = 1.0, 3, 1
    target = Candidate(goal, 48, hand.model)
    assert space.admits(target)

    def score(c, macs=0):  # genes away from the target (smaller is better)
        d = sum(a != b for k in c.arch for a, b in zip(c.arch[k], target.arch[k], strict=True))
        return (d + abs(c.resolution - target.resolution) / 4 + (c.model != target.model),)

    seeds = evolve.seed_shapes(space, [hand])
    first = evolve.evolve(space, seeds, 40, score, population=8, sample=3, seed=0)
    again = evolve.evolve(space, seeds, 40, score, population=8, sample=3, seed=0)
    assert [c.key for c in first] == [c.key for c in again] and len({c.key for c in first}) == 40
    assert all(space.low <= space.macs(c) <= space.high for c in first)
    cfg = override(load_config(), search={"widths": [0.5, 0.75, 1.0], "kernels": [3, 5], "expands": [3, 4, 6],
                                          "resolutions": [48, 52, 56, 60, 64], "candidates": 40,
                                          "min_budget_share": 0.6}).search  # fmt: skip
    drawn = [c for c, _ in sample_candidates(cfg, "efficientnet_lite2", space.high, 128, 96)]
    best = min(score(c) for c in first)
    assert best < score(hand) and best < min(score(c) for c in drawn)


def test_mutation_changes_a_few_genes_and_crossover_mixes_stages():
    import numpy as np

    from hetero.models.mbnet import VARIANTS
    from hetero.training import evolve
    from hetero.training.candidates import Candidate

    space = _lite_space()
    rng = np.random.default_rng(3)
    parent = Candidate(VARIANTS["efficientnet_lite0_075"].arch(), 52, "efficientnet_lite0_075")
    for _ in range(200):
        child = evolve.mutate(parent, space, rng)
        diffs = sum(a != b for k in parent.arch for a, b in zip(parent.arch[k], child.arch[k], strict=True))
        diffs += (child.resolution != parent.resolution) + (child.model != parent.model)
        assert diffs <= 4  # 1 + a geometric count, at most 3 more
        assert (child.resolution - parent.resolution) % 4 == 0 and child.resolution in space.resolutions
        assert all(w in space.widths for w in child.arch["width"]) and child.model in space.members
    other = Candidate(VARIANTS["efficientnet_lite0_050"].arch(), 64, "efficientnet_lite0_050")
    mixed = evolve.crossover(parent, other, np.random.default_rng(0))
    for k in parent.arch:
        assert all(m in (a, b) for m, a, b in zip(mixed.arch[k], parent.arch[k], other.arch[k], strict=True))
