"""Each defect found by feeding ~150 bad inputs to the CLI and the API: every one is now exit 2 (or 1 for a
diverged training), one line, and never a pass. Each test fails on the code before the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import make_fixture, run_cli

import hetero
from hetero.errors import InputError
from hetero.io import atomic_dir, recover, sha256_path
from hetero.release.fixture import Fixture
from hetero.release.report import content_sha256


def _err(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hetero: error: ") and needle in err, err
    return err


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(unit, **changes):
    m = json.loads((unit / "manifest.json").read_text())
    m.update(changes)
    (unit / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def fixture_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("fx") / "fixture.safetensors"
    make_fixture(tiny, path)
    return path


@pytest.mark.parametrize("which", ["edge", "onnx"])
def test_cloud_must_be_the_model_that_defines_the_space(tiny, tmp_path, capsys, which):
    """An edge trained into the cloud's space, or an artifact, would embed the gallery with the wrong model."""
    fake = {"edge": tiny.edge, "onnx": tiny.onnx}[which]
    out = tmp_path / "fx.safetensors"
    assert run_cli("fixture", "create", "--config", tiny.config, "--quiet", "--cloud", fake, "--out", out) == 2
    _err(capsys, "not a cloud model" if which == "onnx" else "does not define space")
    assert not out.exists()
    assert run_cli("check", "--config", tiny.config, "--quiet", "--cloud", fake, "--artifact", tiny.onnx) == 2


def test_fixture_header_is_covered_by_its_hash(fixture_file, tmp_path, capsys):
    """Loosening a threshold in the header (same length, so the file stays well-formed) must be refused."""
    raw = fixture_file.read_bytes()
    assert b'\\"min_map\\": 0.35' in raw  # the header is JSON inside the safetensors metadata string
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(raw.replace(b'\\"min_map\\": 0.35', b'\\"min_map\\": 0.01'))
    assert run_cli("fixture", "info", forged) == 2
    _err(capsys, "checksum mismatch")


def test_fixture_probe_frames_must_cover_the_space_size(fixture_file, tmp_path):
    fx = Fixture.load(fixture_file)
    with pytest.raises(InputError, match=r"frames are \[8, 8\], smaller than space .*'s input \[16, 16\]"):
        Fixture(
            fx.space,
            np.zeros((len(fx.probe_labels), 8, 8, 3), np.uint8),
            fx.probe_labels,
            fx.gallery_embeddings,
            fx.gallery_labels,
            fx.reference_queries,
            fx.thresholds,
        )


@pytest.mark.parametrize("file", ["/etc/hostname", "../edge_bct/model.safetensors", "", 7, ["model.onnx"]])
def test_manifest_file_stays_inside_its_unit(tiny, tmp_path, capsys, fixture_file, file):
    unit = _copy(tiny.onnx, tmp_path / "unit")
    _edit_manifest(unit, file=file)
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", unit) == 2
    _err(capsys, "file must be a plain file name")


@pytest.mark.parametrize("field,value", [("sha256", 12), ("sha256", None), ("model", "hnet_edge"), ("kind", 3)])
def test_wrong_typed_manifest_fields(tiny, tmp_path, capsys, fixture_file, field, value):
    unit = _copy(tiny.onnx, tmp_path / "unit")
    _edit_manifest(unit, **{field: value})
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", unit) == 2
    _err(capsys, field)


@pytest.mark.parametrize(
    "flag", [["--min-r1", "nan"], ["--min-map", "-0.1"], ["--min-relative-r1", "1.5"], ["--max-previous-flips", "inf"]]
)
def test_non_finite_or_out_of_range_thresholds(fixture_file, tiny, capsys, flag):
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", tiny.onnx, *flag) == 2
    _err(capsys, "between 0 and 1")


@pytest.mark.parametrize(
    "policy", ["[check]\nmin_map = nan\n", "[check]\nmin_recall_at_1 = -1\n", "[check]\nmax_previous_flip_rate = 2\n"]
)
def test_bad_policy_values(fixture_file, tiny, tmp_path, capsys, policy):
    p = tmp_path / "policy.toml"
    p.write_text(policy)
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", tiny.onnx, "--policy", p) == 2
    _err(capsys, "between 0 and 1")


@pytest.mark.parametrize(
    "edge,needle",
    [
        ("lr = inf", "lr must be"),
        ("epochs = 0", "at least 1"),
        ("batch_size = 0", "at least 1"),
        ("loss_weights = { bct = nan }", "finite"),
    ],
)
def test_training_config_that_would_write_nan_or_untrained_checkpoints(tiny, tmp_path, capsys, edge, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[data]\nimage_size = 16\n[edge]\n{edge}\n")
    out = tmp_path / "edge"
    assert run_cli("train", "edge", "--config", cfg, "--cloud", tiny.cloud, "--out", out, "--quiet") == 2
    _err(capsys, needle)
    assert not out.exists()


def test_diverging_training_stops_with_exit_1_and_names_the_epoch(tiny, tmp_path, capsys):
    cfg = tmp_path / "diverge.toml"
    cfg.write_text("[data]\nimage_size = 16\n[edge]\nepochs = 3\nlr = 1e30\n")
    out = tmp_path / "edge"
    assert run_cli("train", "edge", "--config", cfg, "--cloud", tiny.cloud, "--out", out, "--quiet") == 1
    err = capsys.readouterr().err
    assert "diverged in epoch 1" in err and not out.exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"recall_at_1": "0.9"},
        {"recall_at_1": None, "status": "ok", "r1_hits": None},
        {"map": float("nan")},
        {"vs_reference": {"n": "358"}},
    ],
)
def test_report_with_wrong_values_is_exit_2(tiny, fixture_file, tmp_path, capsys, bad):
    rep = tmp_path / "r"
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", tiny.onnx, "--json") == 0
    doc = json.loads(capsys.readouterr().out)["report"]
    doc["rows"][1].update(bad)
    rep.mkdir()
    (rep / "report.json").write_text(json.dumps(doc))
    assert run_cli("check", "--report", rep / "report.json") == 2
    _err(capsys, "checksum mismatch")  # an edit is caught by the hash...
    doc.pop("content_sha256")
    doc["content_sha256"] = content_sha256(doc)
    (rep / "report.json").write_text(json.dumps(doc))
    assert run_cli("check", "--report", rep / "report.json") == 2  # ...and a re-sealed one by the type checks
    _err(capsys, "checksum mismatch" if "map" in bad else "row ")  # NaN cannot be sealed: JSON has no NaN


def test_debug_keeps_exit_2_and_json_junit_say_why(tiny, tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    rc = run_cli(
        "check", "--debug", "--json", "--junit", junit, "--fixture", tmp_path / "nope", "--artifact", tiny.onnx
    )
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" in out.err
    doc = json.loads(out.out)
    assert doc == {
        "schema": "hetero.check/1",
        "hetero_version": hetero.__version__,
        "passed": False,
        "exit_code": 2,
        "error": f"fixture not found: {tmp_path / 'nope'}",
    }
    assert '<error message="fixture not found' in junit.read_text()


def test_fixture_info_without_a_path(capsys):
    assert run_cli("fixture", "info") == 2
    _err(capsys, "needs the fixture file")


def test_validate_on_an_artifact_that_cannot_execute_is_not_exit_0(tiny, tmp_path, capsys):
    if sys.platform == "darwin":
        pytest.skip("Core ML executes on macOS")
    out = tmp_path / "x"
    q = ("--config", tiny.config, "--quiet")
    assert (
        run_cli("export", *q, "--checkpoint", tiny.edge, "--out", out, "--formats", "coreml", "--precisions", "fp32")
        == 0
    )
    assert run_cli("export", *q, "--checkpoint", tiny.edge, "--validate", out / "coreml-fp32") == 2
    _err(capsys, "not executed")


def test_os_litter_in_an_mlpackage_does_not_change_its_hash(tmp_path):
    pkg = tmp_path / "model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "w.bin").write_bytes(b"weights")
    before = sha256_path(pkg)
    (pkg / ".DS_Store").write_bytes(b"finder")
    (pkg / "Data" / "._w.bin").write_bytes(b"appledouble")
    assert sha256_path(pkg) == before
    (pkg / "Data" / "w.bin").write_bytes(b"other")
    assert sha256_path(pkg) != before


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "unit") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert oct((tmp_path / "unit").stat().st_mode & 0o777) == "0o755"
    assert oct((tmp_path / "unit" / "f").stat().st_mode & 0o777) == "0o644"


def test_a_writer_killed_between_renames_or_mid_build_leaves_a_recoverable_state(tmp_path):
    """Simulate a dead writer's leftovers (pid that no longer runs): the next writer restores and cleans up."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    unit = tmp_path / "onnx-fp32"
    old = tmp_path / f".onnx-fp32.{pid}.old"  # moved aside, then killed before the second rename
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    stale = tmp_path / f".onnx-fp32.{pid}.abc.tmp"  # killed mid-build
    stale.mkdir()
    recover(unit)
    assert (unit / "manifest.json").is_file() and not old.exists() and not stale.exists()
    live = tmp_path / f".onnx-fp32.{os.getpid()}.xyz.tmp"  # a running writer's temp dir is left alone
    live.mkdir()
    recover(unit)
    assert live.exists()


def test_onnx_int8_imports_only_the_opsets_it_uses(tiny, tmp_path):
    out = tmp_path / "x"
    assert (
        run_cli(
            "export",
            "--config",
            tiny.config,
            "--quiet",
            "--checkpoint",
            tiny.edge,
            "--out",
            out,
            "--formats",
            "onnx",
            "--precisions",
            "int8",
        )
        == 0
    )
    model = onnx.load(out / "onnx-int8" / "model.onnx")
    used = {n.domain for n in model.graph.node} | {""}
    assert {o.domain for o in model.opset_import} <= used | {"ai.onnx"}


@pytest.mark.parametrize("which", ["edge", "onnx"])
def test_runtimes_refuse_pixels_of_another_size_or_type(tiny, which):
    from hetero.devices.loader import load

    rt = load({"edge": tiny.edge, "onnx": tiny.onnx}[which])
    n = {"edge": 16, "onnx": 12}[which]  # the checkpoint takes the space's size, its artifact its compute size
    with pytest.raises(InputError, match=rf"takes uint8 pixels \[N, {n}, {n}, 3\]"):
        rt.embed(np.zeros((2, 24, 24, 3), np.uint8))
    with pytest.raises(InputError, match="takes uint8 pixels"):
        rt.embed(np.zeros((2, n, n, 3), np.float32))
    assert rt.embed(np.zeros((2, n, n, 3), np.uint8)).shape == (2, 16)


def test_an_npz_claiming_a_newer_zip_version_is_one_clear_error(tmp_path):
    """A flipped byte in a shard's central directory made zipfile raise NotImplementedError ("zip file version
    8.4"), which escaped as a traceback (found by the embed fuzz test): it is an unreadable file like any other."""
    from hetero.io import open_npz

    path = tmp_path / "x.npz"
    np.savez(path, a=np.arange(4))
    raw = bytearray(path.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")  # central directory entry: "version needed to extract" at offset 6
    raw[cd + 6] = 84
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"not a readable \.npz"), open_npz(path, "shard"):
        pass
