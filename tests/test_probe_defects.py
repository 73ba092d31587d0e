"""The hostile-input probe's defects (issue 27), one regression test each: exit 2 with one line (or a failed rule),
no traceback, nothing lost. Every test here failed on the main it was written against."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import export_to, run_cli

from hetero.devices.remote import SSHHost
from hetero.errors import InputError
from hetero.io import parse_json, sha256_path
from hetero.spaces import InputSpec


def _one_line(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hetero: error: ") and needle in err, err
    return err


def _report(tiny, tmp_path, capsys, control: bool = True) -> Path:
    out = tmp_path / "v"
    argv = ["verify", "--config", tiny.config, "--cloud", tiny.cloud, "--candidate", f"edge={tiny.onnx}",
            "--out", out, "--quiet"]  # fmt: skip
    if control:
        argv += ["--control", f"edge_independent={tiny.independent}"]
    assert run_cli(*argv) == 0
    capsys.readouterr()
    return out / "report.json"


def test_a_report_with_a_relative_flip_rate_above_one_is_checked(tiny, tmp_path, capsys):
    """The demo printed `hetero check --report runs/demo/report.json` next, and it exited 2 on its own report:
    a control's flips over independent errors may exceed 1."""
    report = _report(tiny, tmp_path, capsys)
    doc = json.loads(report.read_text())
    ctrl = next(r for r in doc["rows"] if r["kind"] == "control")
    ctrl["relative_flip_rate"] = 1.013  # what the demo's control measured
    from hetero.release.report import content_sha256

    doc["content_sha256"] = content_sha256({k: v for k, v in doc.items() if k != "content_sha256"})
    report.write_text(json.dumps(doc))
    assert run_cli("check", "--config", tiny.config, "--report", report, "--quiet") == 0
    assert run_cli("report", report, "--out", tmp_path / "plots", "--quiet") == 0


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r.update(r1_hits=10**9), "r1_hits=1000000000 > n_query"),
        (lambda r: r.update(n_query=0, r1_hits=0), "n_query=0"),
        (lambda r: r["vs_reference"].update(worse=10**6), "worse + better <= n"),
    ],
)
def test_report_counts_are_range_checked(tiny, tmp_path, capsys, edit, needle):
    report = _report(tiny, tmp_path, capsys, control=False)
    doc = json.loads(report.read_text())
    edit(next(r for r in doc["rows"] if r["kind"] == "candidate"))
    from hetero.release.report import content_sha256

    doc["content_sha256"] = content_sha256({k: v for k, v in doc.items() if k != "content_sha256"})
    report.write_text(json.dumps(doc))
    assert run_cli("check", "--config", tiny.config, "--report", report) == 2
    _one_line(capsys, needle)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"schema": ' + "7" * 5000 + "}"])
def test_deep_or_huge_json_is_one_line_everywhere_it_is_read(tiny, tmp_path, capsys, text):
    with pytest.raises(InputError):
        parse_json(text, "x")
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert run_cli("check", "--config", tiny.config, "--report", bad) == 2
    _one_line(capsys, "JSON")
    unit = shutil.copytree(tiny.onnx, tmp_path / "unit")
    (unit / "manifest.json").write_text(text)
    assert run_cli("check", "--config", tiny.config, "--cloud", tiny.cloud, "--artifact", unit) == 2
    _one_line(capsys, "JSON")
    assert run_cli("report", bad, "--out", tmp_path / "p") == 2
    _one_line(capsys, "JSON")


def test_an_unwritable_junit_path_is_exit_2_not_a_traceback(tiny, tmp_path, capsys):
    """The error path wrote the JUnit file too, and re-raised on the same unwritable path (exit 1, traceback)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fx = tmp_path / "missing.safetensors"
    assert run_cli("check", "--fixture", fx, "--artifact", tiny.onnx, "--junit", blocker / "junit.xml") == 2
    _one_line(capsys, "under a file")
    (tmp_path / "dir").mkdir()
    assert run_cli("check", "--fixture", fx, "--artifact", tiny.onnx, "--junit", tmp_path / "dir") == 2
    _one_line(capsys, "is a directory")


def test_ivfpq_on_a_small_gallery_falls_back_to_exact_and_says_so(tiny, tmp_path, capsys):
    """faiss aborted training IVF-PQ on fewer than 256 vectors (the digits gallery has 360, with --max-probes
    the fixture's gallery stays; here a 100-row gallery)."""
    from hetero.release.index import GallerySearch, IndexSpec

    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = GallerySearch(x, IndexSpec(kind="ivfpq")).describe()
    assert d["kind"] == "exact" and "needs at least 256 vectors" in d["fallback"]
    from hetero.release.report import search_line

    assert "needs at least 256" in search_line(d)


def test_hetero_report_refuses_garbage_bench_rows(tmp_path, capsys):
    row = {"name": "u", "host": "local", "runtime": "onnxruntime", "threads": 1, "samples_ms": [0.1, 0.2],
           "latency": {"p50": 0.1}}  # fmt: skip
    for bad, needle in (
        ({**row, "latency": {"p50": "fast"}}, "latency"),
        ({**row, "samples_ms": [float("nan")]}, "samples_ms"),
        ({**row, "threads": "two"}, "threads"),
    ):
        path = tmp_path / "bench.json"
        path.write_text(json.dumps({"schema": "hetero.bench/1", "rows": [bad]}))
        assert run_cli("report", path, "--out", tmp_path / "p") == 2
        _one_line(capsys, needle)
    path.write_text(json.dumps({"schema": "hetero.bench/1", "rows": "garbage"}))
    assert run_cli("report", path, "--out", tmp_path / "p") == 2
    path.write_text(json.dumps({"schema": "hetero.bench/1", "rows": [row]}))
    assert run_cli("report", path, "--out", tmp_path / "p", "--quiet") == 0


@pytest.mark.parametrize(
    "flags", [("--threads", "100000"), ("--seconds", "inf"), ("--seconds", "nan"), ("--runs", "0")]
)
def test_bench_limits_are_refused_before_anything_runs(tiny, capsys, flags):
    assert run_cli("bench", tiny.onnx, *flags) == 2
    _one_line(capsys, "")


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("model.macs", "many", "model.macs"),
        ("file", "model\x00.onnx", "plain file name"),
        ("input.layout", "NCHW", "uint8 NHWC"),
        ("input.mean", [0.5, 0.5], "mean must be three"),
        ("input.std", [0.5, 0.0, 0.5], "std must be three finite numbers above 0"),
        ("space.dim", 16.5, "dim must be a positive integer"),
    ],
)
def test_a_units_contract_is_validated(tiny, tmp_path, capsys, key, value, needle):
    unit = shutil.copytree(tiny.onnx, tmp_path / "unit")
    doc = json.loads((unit / "manifest.json").read_text())
    *path, last = key.split(".")
    node = doc
    for k in path:
        node = node[k]
    node[last] = value
    (unit / "manifest.json").write_text(json.dumps(doc))
    assert run_cli("bench", unit) == 2
    _one_line(capsys, needle)


def test_input_spec_refuses_what_no_graph_can_honour():
    for bad in ({"height": 0}, {"std": (1.0, 0.0, 1.0)}, {"mean": (0.5,) * 4}, {"channel_order": "RGBA"}):
        with pytest.raises(InputError):
            InputSpec(**{"height": 8, "width": 8, **bad})


def test_validate_never_rewrites_a_core_ml_package(tiny, tmp_path, capsys):
    """coremltools rewrote a package's Manifest.json in canonical form when it opened it: the unit's sha256 then
    no longer matched what had been validated."""
    export_to(tiny, tiny.edge, tmp_path / "x", "coreml", "fp32")
    unit = tmp_path / "x" / "coreml-fp32"
    inner = unit / "model.mlpackage" / "Manifest.json"
    inner.write_text(json.dumps(json.loads(inner.read_text())))  # valid JSON, not coremltools' own layout
    doc = json.loads((unit / "manifest.json").read_text())
    doc["sha256"] = sha256_path(unit / "model.mlpackage")
    (unit / "manifest.json").write_text(json.dumps(doc))
    before = sha256_path(unit / "model.mlpackage")
    run_cli("export", "--config", tiny.config, "--checkpoint", tiny.edge, "--validate", unit, "--quiet")
    assert sha256_path(unit / "model.mlpackage") == before


def test_empty_format_lists_are_refused_not_read_as_the_defaults(tiny, tmp_path, capsys):
    for flag in ("--formats", "--precisions"):
        assert run_cli("export", "--config", tiny.config, "--checkpoint", tiny.edge, "--out", tmp_path / "x",
                       flag, ",") == 2  # fmt: skip
        _one_line(capsys, "names nothing")
    assert not list((tmp_path / "x").glob("*-*"))


@pytest.mark.parametrize("target", ["host\n", "user@host\n", "-oProxyCommand=x", "a b"])
def test_remote_targets_are_matched_whole(target):
    with pytest.raises(InputError, match="not a valid SSH target"):
        SSHHost(target)


def test_a_search_log_keeps_every_intact_trial_around_a_cut_line(tmp_path):
    from hetero.training.search import Candidate, Trial, _read_trials

    def trial(k: str) -> str:
        t = Trial("proxy", k, Candidate({"width": [1.0]}, 32), 10, 0.1, None, 0.5, 0.5, 0.9, 1.0)
        return json.dumps(t.to_json())

    log = tmp_path / "trials.jsonl"
    log.write_text(trial("a") + "\n" + trial("b")[:40] + "\n" + trial("c") + "\n" + '{"stage": [[[[' + "\n")
    assert [t.key for t in _read_trials(log)] == ["a", "c"]
    log.write_text(trial("a").replace("0.5", '"high"', 1) + "\n")
    assert _read_trials(log) == []


@pytest.mark.parametrize("damage", ["weights", "history", "optimizer"])
def test_resume_state_with_the_right_fingerprint_and_wrong_contents_is_refused(tmp_path, damage):
    """Before: a traceback from load_state_dict or json.loads; the fingerprint alone was checked."""
    import torch

    from hetero.training.loop import _load_state, _save_state

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, 1), torch.Generator().manual_seed(0)

    path = tmp_path / "state.pt"
    _save_state(path, "fp", *fresh(), [{"epoch": 1, "loss": 0.5}])
    assert _load_state(path, "fp", *fresh()) == [{"epoch": 1, "loss": 0.5}]
    state = torch.load(path, weights_only=True)
    if damage == "weights":
        state["model"] = {"weight": torch.zeros(7, 7)}
    elif damage == "history":
        state["history"] = "[" * 50_000
    else:
        state["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(state, path)
    with pytest.raises(InputError, match=r"resume state|JSON"):
        _load_state(path, "fp", *fresh())
