"""`hetero demo` end to end on the tiny setting: the pass path, and an export failure that still reports everything."""

import json

from conftest import TINY_TOML, run_cli


def _demo(tmp_path, capsys, extra_export: str = ""):
    cfg = tmp_path / "demo.toml"
    cfg.write_text(
        TINY_TOML.replace("[export]", '[export]\nformats = ["onnx", "tflite"]\nprecisions = ["fp32"]\n' + extra_export)
    )
    rc = run_cli("demo", "--config", cfg, "--out", tmp_path / "out", "--quiet", "--json")
    return rc, json.loads(capsys.readouterr().out)


def test_demo_runs_the_whole_chain(tmp_path, capsys):
    rc, out = _demo(tmp_path, capsys)
    assert rc == 0 and out["passed"] and out["export_failures"] == []
    names = {r["name"] for r in out["report"]["rows"]}
    assert {
        "cloud → cloud",
        "edge_bct → cloud",
        "edge_bct.onnx-fp32 → cloud",
        "edge_bct.tflite-fp32 → cloud",
        "edge_independent → cloud",
    } <= names
    assert (tmp_path / "out" / "fixture.safetensors").is_file()
    assert (
        run_cli(
            "check",
            "--quiet",
            "--fixture",
            tmp_path / "out" / "fixture.safetensors",
            "--artifact",
            tmp_path / "out" / "export" / "tflite-fp32",
        )
        == 0
    )


def test_demo_reports_a_failed_export_and_still_verifies_the_rest(tmp_path, capsys):
    rc, out = _demo(tmp_path, capsys, "min_cosine_fp32 = 1.0\n")  # bit-identical: no runtime is
    assert rc == 1 and not out["passed"]
    assert {f.split(":")[0] for f in out["export_failures"]} == {"onnx-fp32", "tflite-fp32"}
    assert any("min cosine to torch" in f for f in out["export_failures"])
    assert {r["status"] for r in out["export"]} == {"FAILED"}
    assert out["gate"]["passed"]  # the torch edge model itself is still compatible: both facts are reported
    assert not (tmp_path / "out" / "export" / "onnx-fp32").exists()
