"""The demo chain as one function: train cloud, BCT edge, independent control; export; verify; gate.

`run_demo` returns a `DemoResult` and prints nothing; the CLI renders it, the robustness benchmark runs it under many
seeds and thread counts. It lives at the top layer because it composes all three (hetero → export → devices).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.harness import compatibility_report, fixture_from_cloud, open_producer
from hetero.config import RunConfig, to_dict
from hetero.data import OpenSetSplit, load_split
from hetero.errors import ParityError
from hetero.gate import GateResult, evaluate
from hetero.io import ensure_writable_dir
from hetero.manifest import Manifest
from hetero.report import Report


@dataclass
class DemoResult:
    out: Path
    cloud: Manifest
    edge: Manifest
    export: list[dict[str, Any]]
    export_failures: list[str]
    report: Report
    gate: GateResult
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.gate.passed and not self.export_failures


def cloud_fixture(cfg: RunConfig, cloud: Path, split: OpenSetSplit | None = None, *, keep_gallery: bool = False):
    """The config's held-out split embedded by the cloud checkpoint, with the config's thresholds frozen in."""
    from devices import base

    split = split or load_split(cfg.data)
    source = {
        "dataset": cfg.data.dataset,
        "image_size": cfg.data.image_size,
        "heldout_classes": list(split.heldout_classes),
    }
    return fixture_from_cloud(
        base.load(cloud), split.query, split.gallery, to_dict(cfg.check), source, keep_gallery_images=keep_gallery
    )


def run_demo(
    cfg: RunConfig,
    out: Path,
    *,
    log: Callable[[str], None] = lambda s: None,
    progress: bool = False,
    threads: int | None = None,
) -> DemoResult:
    """Run the whole chain into `out`; export failures are collected (those artifacts are not written), the rest
    is still verified and gated, so the result shows the full picture."""
    from export.artifact import ExportData, export_matrix
    from hetero.train import train

    out = Path(out)
    ensure_writable_dir(out)
    split = load_split(cfg.data)
    d = split.describe()
    log(
        f"hetero demo: dataset {cfg.data.dataset} at {cfg.data.image_size} px — {d['train_images']} training "
        f"images of classes {d['train_classes']}; held-out classes {d['heldout_classes']}: "
        f"{d['query_images']} queries, {d['gallery_images']} gallery images"
    )
    seconds: dict[str, float] = {}

    def step(i: int, what: str, fn: Callable[[], Any]) -> Any:
        log(f"[{i}/6] {what} …")
        t0 = time.perf_counter()
        value = fn()
        seconds[what.split(" ")[0] + str(i)] = round(time.perf_counter() - t0, 2)
        log(f"      done in {time.perf_counter() - t0:.1f} s")
        return value

    cloud = step(
        1,
        f"train cloud model {cfg.cloud.model} ({cfg.cloud.epochs} epochs)",
        lambda: train("cloud", cfg, out / "cloud", split=split, progress=progress),
    )
    edge = step(
        2,
        f"train edge model {cfg.edge.model} with BCT into the cloud space ({cfg.edge.epochs} epochs)",
        lambda: train("edge", cfg, out / "edge_bct", cloud=out / "cloud", split=split, progress=progress),
    )
    step(
        3,
        f"train edge model {cfg.edge.model} independently (negative control)",
        lambda: train(
            "edge", cfg, out / "edge_independent", split=split, progress=progress, loss_weights={"classification": 1.0}
        ),
    )
    export_failures: list[str] = []

    def export() -> list[dict[str, Any]]:
        nonlocal export_failures
        try:
            return export_matrix(
                out / "edge_bct",
                out / "export",
                list(cfg.export.formats),
                list(cfg.export.precisions),
                ExportData.from_split(split, cfg.export.calibration_images),
                cfg.export,
            )
        except ParityError as e:  # keep going with the artifacts that passed
            export_failures = e.failures
            log(f"      {len(e.failures)} parity rule(s) failed; those artifacts were not written")
            return e.results

    results = step(
        4,
        f"export edge_bct to {'/'.join(cfg.export.formats)} × {'/'.join(cfg.export.precisions)}, "
        "parity on each runtime",
        export,
    )
    log("[5/6] verify: edge queries (torch and each executed artifact) and the control vs the cloud gallery …")
    fx = cloud_fixture(cfg, out / "cloud", split, keep_gallery=True)
    producers = [open_producer(f"edge_bct={out / 'edge_bct'}", "candidate", threads=threads)]
    producers += [
        open_producer(f"edge_bct.{r['format']}-{r['precision']}={r['path']}", "candidate", threads=threads)
        for r in results
        if r.get("path")
    ]
    producers.append(open_producer(f"edge_independent={out / 'edge_independent'}", "control", threads=threads))
    report = compatibility_report(fx, producers)
    fx.gallery_images = None
    fx.save(out / "fixture.safetensors")
    paths = report.save(out)
    log("[6/6] gate: hetero check on the candidate rows")
    gate = evaluate(report, cfg.check, require_executed=cfg.check.require_executed)
    return DemoResult(out, cloud, edge, results, export_failures, report, gate, paths, seconds)
