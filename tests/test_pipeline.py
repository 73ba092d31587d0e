"""End to end on a tiny real run: train → ONNX → onnxruntime → report → gate, and the gate's mutation tests."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import ONNX_FP32, run_cli

from hetero.config import load_config
from hetero.cpu import cpu_tag
from hetero.data.datasets import load_split
from hetero.devices.loader import load
from hetero.errors import ParityError
from hetero.export.artifact import ExportData, export_artifact
from hetero.models.checkpoint import load_checkpoint, save_checkpoint
from hetero.pipeline import check, verify
from hetero.release.report import Report


def test_end_to_end_bct_is_compatible_and_independent_is_not(tiny, tmp_path):
    """Through the stage API, as a user's script does: verify, then gate the saved report."""
    out = tmp_path / "verify"
    cfg = load_config(tiny.config)
    result = verify(
        cfg,
        tiny.cloud,
        [f"edge={tiny.edge}", f"edge.onnx={tiny.onnx}"],
        [f"independent={tiny.independent}"],
        out=out,
    )
    report = Report.load(out / "report.json")
    assert report.to_dict() == result.report.to_dict()  # what was saved is what was returned
    assert report.rows[0].name == "cloud → cloud"
    chance = report.chance["recall_at_1"]
    cloud = report.row("cloud → cloud").recall_at_1
    bct = report.row("edge → cloud").recall_at_1
    onnx_ = report.row("edge.onnx → cloud")
    ind = report.row("independent → cloud")
    assert cloud > chance + 0.4
    # BCT puts the edge model in the cloud space; the independent model is good in its own space only.
    assert bct > ind.recall_at_1 + 0.2
    assert ind.recall_at_1 < chance + 0.15 and not ind.same_space
    assert report.row("independent → independent").recall_at_1 > chance + 0.4
    # The exported graph computes what torch computes.
    assert onnx_.runtime == "onnxruntime" and onnx_.parity_min_cosine > 0.99999
    assert onnx_.recall_at_1 == pytest.approx(bct, abs=1 / onnx_.n_query + 1e-9)
    assert f"| edge.onnx → cloud | onnxruntime | {cpu_tag()} | candidate |" in (out / "report.md").read_text()

    assert check(thresholds=cfg.check, report=report).passed
    # The same report fails when the bar is raised above what was measured: the threshold can fail.
    raised = dataclasses.replace(cfg.check, min_recall_at_1=min(bct, onnx_.recall_at_1) + 0.01)
    gated = check(thresholds=raised, report=report)
    assert not gated.passed and any(not r.passed and r.rule == "R@1" for r in gated.gate.rules)


def test_manifests_carry_space_hash_and_provenance(tiny):
    edge = json.loads((tiny.edge / "manifest.json").read_text())
    cloud = json.loads((tiny.cloud / "manifest.json").read_text())
    art = json.loads((tiny.onnx / "manifest.json").read_text())
    ind = json.loads((tiny.independent / "manifest.json").read_text())
    assert edge["space"] == cloud["space"] == art["space"]
    assert cloud["space"]["id"].endswith("@" + cloud["sha256"][:12])
    assert ind["space"]["id"] != cloud["space"]["id"]
    assert art["source"]["checkpoint_sha256"] == edge["sha256"]
    assert art["validation"]["status"] == "passed" and art["validation"]["embedding"]["min_cosine"] > 0.99999
    assert art["input"]["dtype"] == "uint8"
    assert art["format"] == "onnx" and art["precision"] == "fp32" and art["seed"] == edge["seed"]
    graph = onnx.load(tiny.onnx / "model.onnx")
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def _reinitialised_edge(tiny, dest):
    """A checkpoint that claims the cloud space but whose weights were never trained into it."""
    model, m = load_checkpoint(tiny.edge)
    torch.manual_seed(123)
    for mod in model.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    save_checkpoint(
        dest,
        model,
        model_name=m.model["name"],
        input_spec=m.input,
        space=m.space,
        space_name="x",
        seed=0,
        extra=m.extra,
    )
    return dest


def test_mutation_reinitialised_edge_fails_the_gate(tiny, tmp_path, capsys):
    bad = _reinitialised_edge(tiny, tmp_path / "reinit")
    assert (
        run_cli("export", "--config", tiny.config, "--quiet", "--checkpoint", bad, "--out", tmp_path / "x", *ONNX_FP32)
        == 0
    )
    bad_onnx = tmp_path / "x" / "onnx-fp32"
    capsys.readouterr()
    rc = run_cli("check", "--config", tiny.config, "--quiet", "--json", "--cloud", tiny.cloud, "--artifact", bad_onnx)
    assert rc == 1
    gate = json.loads(capsys.readouterr().out)["gate"]
    assert not gate["passed"] and any("R@1 / cloud R@1" in f for f in gate["failures"])
    # and the healthy artifact passes the very same command
    assert run_cli("check", "--config", tiny.config, "--quiet", "--cloud", tiny.cloud, "--artifact", tiny.onnx) == 0


def test_mutation_export_that_diverges_from_torch_fails_and_writes_nothing(tiny, tmp_path, monkeypatch):
    """Perturb the weights only in the traced graph: parity must catch it and the artifact must not appear."""
    real_export = torch.onnx.export

    def perturbed_export(graph, *a, **kw):
        with torch.no_grad():
            saved = graph.model.head.weight.clone()
            graph.model.head.weight.add_(0.05 * torch.randn_like(saved))
            try:
                return real_export(graph, *a, **kw)
            finally:
                graph.model.head.weight.copy_(saved)

    monkeypatch.setattr(torch.onnx, "export", perturbed_export)
    out = tmp_path / "diverged"
    cfg = load_config(tiny.config)
    data = ExportData.from_split(load_split(cfg.data), 16)
    with pytest.raises(ParityError, match="min cosine"):
        export_artifact(tiny.edge, out, "onnx", "fp32", data, cfg.export)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_runtimes_agree_on_the_same_pixels(tiny):
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)  # the artifact's input
    a, b = load(tiny.edge).embed(images), load(tiny.onnx).embed(images)  # the checkpoint takes its compute size too
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def test_zero_threshold_turns_a_rule_off_and_all_off_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "v"
    assert (
        run_cli(
            "verify", "--config", tiny.config, "--quiet", "--cloud", tiny.cloud, "--candidate", tiny.edge, "--out", out
        )
        == 0
    )
    capsys.readouterr()
    # The kept rules use the tiny config's thresholds, the ones `verify` just passed, not the release defaults.
    report = ("--config", tiny.config, "--report", out / "report.json")
    assert run_cli("check", "--quiet", "--json", *report, "--min-map", "0") == 0
    rules = {r["rule"] for r in json.loads(capsys.readouterr().out)["gate"]["rules"]}
    assert rules == {"R@1", "R@1 / cloud R@1"}
    zeros = ("--min-r1", "0", "--min-relative-r1", "0", "--min-map", "0")
    assert run_cli("check", "--quiet", "--report", out / "report.json", *zeros) == 2
    assert "nothing would be checked" in capsys.readouterr().err
