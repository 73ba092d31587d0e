"""Shared fixtures: one tiny but real run (train → export) reused by the end-to-end, gate and bad-input tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hetero.cli import main
from hetero.config import OBJECTIVES, DataConfig, RunConfig, from_dict, load_config
from hetero.data.datasets import load_split
from hetero.export.artifact import ExportData, export_matrix
from hetero.models.checkpoint import save_checkpoint
from hetero.models.registry import EmbeddingGraph, create_model
from hetero.pipeline import create_fixture
from hetero.spaces import InputSpec
from hetero.training.train import train

# Another seed is the cheapest stand-in for another machine: HETERO_TEST_SEED=k trains every shared model of the
# suite (the tiny run, the real-family member) from other seeds; the suite must pass under any of them.
SEED = int(os.environ.get("HETERO_TEST_SEED", "0"))

# 16 px digits: every stage of the real pipeline, a few seconds of training on 2 cores.
TINY_TOML = f"""
[data]
image_size = 16

[cloud]
epochs = 10
seed = {SEED}

[edge]
epochs = 20
seed = {SEED + 1}
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

    from hetero.io import cache_root

    # Runtime target environments (pinned, immutable installs of a runtime version) are kept across sessions.
    os.environ.setdefault("HETERO_RUNTIMES", str(cache_root() / "runtimes"))
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


LITE_SIZE, LITE_RES = 64, 48  # input pixels, backbone compute size: the graph must resize inside


@pytest.fixture(scope="session")
def lite_edge(tmp_path_factory):
    """A real-family member (EfficientNet-Lite0 at half width) computing at 48 px inside a 64 px space."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_050", embed_dim=16, num_classes=4, resolution=LITE_RES, pretrained=True)
    model.eval()
    split = load_split(DataConfig(image_size=LITE_SIZE))
    _pca_head(model, EmbeddingGraph(model, InputSpec(LITE_SIZE, LITE_SIZE)).preprocess, split.train.images[::4])
    root = tmp_path_factory.mktemp("lite")
    spec = InputSpec(LITE_SIZE, LITE_SIZE)
    save_checkpoint(
        root / "edge",
        model,
        model_name="efficientnet_lite0_050",
        input_spec=spec,
        space=None,
        space_name="t",
        seed=0,
        extra={},
    )
    return root, ExportData.from_split(split, 32)  # real held-out digits


def _pca_head(model, preprocess, images) -> None:
    """Untrained, every embedding points the same way and float noise reorders neighbours; a centred PCA head
    spreads them like a trained one, in milliseconds."""
    with torch.no_grad():
        f = model.forward_features(preprocess(torch.from_numpy(images)))
        mean = f.mean(0)
        _, _, v = torch.linalg.svd(f - mean, full_matrices=False)
        model.head.weight.copy_(v[: model.head.out_features])
        model.head.bias.copy_(-v[: model.head.out_features] @ mean)


@pytest.fixture(scope="session")
def lite_trained(tmp_path_factory):
    """The same member trained a few epochs on digits (own classification, ImageNet start): embeddings as well
    conditioned as a real edge's, which quantisation verdicts need — the untrained PCA head above is not."""
    root = tmp_path_factory.mktemp("lite_trained")
    cfg = from_dict(
        RunConfig,
        {
            "data": {"image_size": LITE_SIZE},
            "edge": {
                "model": "efficientnet_lite0_050",
                "resolution": LITE_RES,
                "pretrained": True,
                "epochs": 4,
                "seed": SEED + 1,
                "lr": 2e-3,
                "loss_weights": {"classification": 1.0},
            },
            "export": {"calibration_images": 128},
        },
    )
    split = load_split(cfg.data)
    train("edge", cfg, root / "edge", split=split, progress=False)
    return root, ExportData.from_split(split, cfg.export.calibration_images)
