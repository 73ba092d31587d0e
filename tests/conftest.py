"""Shared fixtures: one tiny but real run (train → export) reused by the end-to-end, gate and bad-input tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hetero.cli import main

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
    q = ("--config", config, "--quiet")
    assert run_cli("train", "cloud", "--out", run.cloud, *q) == 0
    assert run_cli("train", "edge", "--cloud", run.cloud, "--out", run.edge, *q) == 0
    assert run_cli("train", "edge", "--objective", "independent", "--out", run.independent, *q) == 0
    assert run_cli("export", "--checkpoint", run.edge, "--out", run.root / "export", *ONNX_FP32, *q) == 0
    return run


@pytest.fixture
def tiny_config(tiny: TinyRun) -> Path:
    return tiny.config
