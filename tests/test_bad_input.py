"""Every bad input: one clear line on stderr, exit 2, no traceback, nothing half-written."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ONNX_FP32, run_cli

from hetero.io import sha256_file


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("hetero: error: ") and needle in err, err
    return err


def _copy_unit(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_file(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("export", "--config", tiny.config, "--checkpoint", tmp_path / "nope", "--out", out) == 2
    _one_line_error(capsys, "not found")
    assert not out.exists()


def test_truncated_onnx_is_refused_by_sha256(tiny, tmp_path, capsys):
    unit = _copy_unit(tiny.onnx, tmp_path / "trunc")
    data = (unit / "model.onnx").read_bytes()
    (unit / "model.onnx").write_bytes(data[: len(data) // 2])
    assert run_cli("check", "--config", tiny.config, "--cloud", tiny.cloud, "--artifact", unit) == 2
    _one_line_error(capsys, "sha256 mismatch")


def test_corrupt_onnx_with_matching_manifest_is_refused_by_the_runtime(tiny, tmp_path, capsys):
    unit = _copy_unit(tiny.onnx, tmp_path / "corrupt")
    (unit / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    manifest = json.loads((unit / "manifest.json").read_text())
    manifest["sha256"] = sha256_file(unit / "model.onnx")
    (unit / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli("check", "--config", tiny.config, "--cloud", tiny.cloud, "--artifact", unit) == 2
    _one_line_error(capsys, "onnxruntime cannot load it")


def test_checkpoint_sha256_mismatch(tiny, tmp_path, capsys):
    unit = _copy_unit(tiny.edge, tmp_path / "edge")
    weights = bytearray((unit / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (unit / "model.safetensors").write_bytes(bytes(weights))
    out = tmp_path / "onnx"
    assert run_cli("export", "--config", tiny.config, "--checkpoint", unit, "--out", out) == 2
    _one_line_error(capsys, "sha256 mismatch")
    assert not out.exists()


def test_missing_manifest(tiny, tmp_path, capsys):
    unit = _copy_unit(tiny.onnx, tmp_path / "bare")
    (unit / "manifest.json").unlink()
    assert run_cli("check", "--config", tiny.config, "--cloud", tiny.cloud, "--artifact", unit / "model.onnx") == 2
    _one_line_error(capsys, "no manifest.json")


def test_foreign_embedding_space(tiny, capsys):
    """The independent model has the right dim but its own space: it must not be gated against this gallery."""
    assert run_cli("check", "--config", tiny.config, "--cloud", tiny.cloud, "--artifact", tiny.independent) == 2
    _one_line_error(capsys, "foreign embedding space")


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "typo.toml"
    cfg.write_text("[cloud]\nepoch = 3\n")
    out = tmp_path / "cloud"
    assert run_cli("train", "cloud", "--config", cfg, "--out", out) == 2
    _one_line_error(capsys, "unknown config key 'cloud.epoch'")
    assert not out.exists()


def test_unwritable_output_dir(tiny, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert run_cli("export", "--config", tiny.config, "--checkpoint", tiny.edge, "--out", blocker / "sub") == 2
    _one_line_error(capsys, "not a directory")
    assert blocker.read_text() == "x"


def test_corrupt_report(tmp_path, capsys):
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    assert run_cli("check", "--report", bad) == 2
    _one_line_error(capsys, "not valid JSON")


def test_failed_export_keeps_the_previous_artifact(tiny, tmp_path, capsys):
    root = tmp_path / "exports"
    unit = _copy_unit(tiny.onnx, root / "onnx-fp32")
    before = sha256_file(unit / "model.onnx")
    cfg = tmp_path / "strict.toml"  # bit-identical to torch on every image: no other runtime is; export must fail
    cfg.write_text(tiny.config.read_text().replace("[export]", "[export]\nmin_cosine_fp32 = 1.0"))
    assert run_cli("export", "--config", cfg, "--checkpoint", tiny.edge, "--out", root, "--quiet", *ONNX_FP32) == 1
    assert "hetero: FAIL: parity failed" in capsys.readouterr().err
    assert sha256_file(unit / "model.onnx") == before
    assert sorted(p.name for p in root.iterdir()) == ["onnx-fp32"]


def test_console_script_help_and_exit_code_without_traceback(tmp_path):
    exe = [sys.executable, "-m", "hetero.cli"]
    helped = subprocess.run([*exe, "check", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "exit codes: 0 pass, 1" in helped.stdout and "--min-relative-r1" in helped.stdout
    bad = subprocess.run(
        [*exe, "check", "--report", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.strip() == f"hetero: error: report not found: {tmp_path / 'x.json'}"


@pytest.mark.parametrize("argv", [["train"], ["check", "--bogus"], ["nope"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        run_cli(*argv)
    assert e.value.code == 2
