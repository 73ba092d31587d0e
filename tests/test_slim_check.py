"""`hetero check` in the light environment mobile CI installs (requirements-check.lock + hetero, no torch)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_fixture, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_check_runs_without_torch(tiny, tmp_path, capsys):
    fx = tmp_path / "fixture.safetensors"
    make_fixture(tiny, fx)
    q = ("--config", tiny.config, "--quiet")
    assert (
        run_cli(
            "export",
            *q,
            "--checkpoint",
            tiny.edge,
            "--out",
            tmp_path / "x",
            "--formats",
            "tflite",
            "--precisions",
            "int8",
        )
        == 0
    )
    capsys.readouterr()
    venv = tmp_path / "slim"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REPO / "requirements-check.lock")], check=True, capture_output=True)
    src = tmp_path / "src"  # a clean copy: pip builds in-tree, and a stale build/ would leak into the wheel
    shutil.copytree(
        REPO, src, ignore=shutil.ignore_patterns(".*", "build", "runs", "*.egg-info", "tests", "benchmarks")
    )
    subprocess.run([*pip, "--no-deps", str(src)], check=True, capture_output=True)
    py = str(venv / "bin" / "python")
    assert subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0  # really without torch
    proc = subprocess.run(
        [
            str(venv / "bin" / "hetero"),
            "check",
            "--json",
            "--fixture",
            str(fx),
            "--artifact",
            str(tiny.onnx),
            "--artifact",
            str(tmp_path / "x" / "tflite-int8"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["passed"] and {r["runtime"] for r in out["report"]["rows"][1:]} == {"onnxruntime", "litert"}
    # What only the full install can do says so in one line, exit 2 — never a ModuleNotFoundError traceback.
    hetero = str(venv / "bin" / "hetero")
    for argv in (["models"], ["check", "--fixture", str(fx), "--artifact", str(tiny.edge)]):
        proc = subprocess.run([hetero, *argv], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and "needs the full install" in proc.stderr, proc.stderr[-1500:]
        assert "Traceback" not in proc.stderr
    env = subprocess.run([hetero, "env", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert env.returncode == 0 and json.loads(env.stdout)["packages"]["torch"] is None
