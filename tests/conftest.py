"""Shared fixtures: one tiny but real run (train → export) reused by the end-to-end, gate and bad-input tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hetero.cli import main
from hetero.config import OBJECTIVES, load_config
from hetero.data import load_split
from hetero.devices.pipeline import create_fixture
from hetero.export.artifact import ExportData, export_matrix
from hetero.train import train

# 16 px digits: every stage of the real pipeline, a few seconds of training on 2 cores.
TINY_TOML = """
[data]
image_size = 16

[cloud]
epochs = 10

[edge]
epochs = 20
resolution = 12  # the graph resizes inside, in every test that exports or gates the edge

[export]
calibration_images = 64

[check]
min_recall_at_1 = 0.4
min_relative_recall_at_1 = 0.4
min_map = 0.35
"""


@dataclass(frozen=True)
class TinyRun:
    root: Path
    config: Path

    @property
    def cloud(self) -> Path:
        return self.root / "cloud"

    @property
    def edge(self) -> Path:
        return self.root / "edge_bct"

    @property
    def independent(self) -> Path:
        return self.root / "edge_independent"

    @property
    def onnx(self) -> Path:
        return self.root / "export" / "onnx-fp32"


ONNX_FP32 = ("--formats", "onnx", "--precisions", "fp32")


def run_cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Derived-data caches (cloud embeddings, built datasets) go to a per-session directory, never ~/.cache."""
    import os

    os.environ["HETERO_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY_TOML)
    run = TinyRun(root, config)
    # Built through the stage API (the CLI tests call `main`; this is what a user's script does).
    cfg = load_config(config)
    split = load_split(cfg.data)
    train("cloud", cfg, run.cloud, split=split, progress=False)
    train("edge", cfg, run.edge, cloud=run.cloud, split=split, progress=False)
    train("edge", cfg, run.independent, loss_weights=OBJECTIVES["independent"], split=split, progress=False)
    export_to(run, run.edge, run.root / "export", "onnx", "fp32")
    return run


def export_to(run: TinyRun, checkpoint: Path, out: Path, formats: str, precisions: str) -> None:
    """Export `checkpoint` with the tiny config through the API; any failed rule fails the test."""
    cfg = load_config(run.config)
    data = ExportData.from_split(load_split(cfg.data), cfg.export.calibration_images)
    export_matrix(checkpoint, out, formats.split(","), precisions.split(","), data, cfg.export).raise_for_failures()


def make_fixture(run: TinyRun, out: Path) -> Path:
    """The tiny cloud's fixture, created through the API."""
    create_fixture(load_config(run.config), run.cloud, out)
    return out


@pytest.fixture
def tiny_config(tiny: TinyRun) -> Path:
    return tiny.config
