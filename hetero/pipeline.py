"""Stage functions over the runtimes: verify, fixture creation, the gate, and the demo chain that composes them.

Each returns a result object and prints nothing; the CLI parses, calls one of these, renders and maps errors to exit
codes; benchmarks and tests call them directly. They live at the top layer because they compose all three
(hetero → export → devices).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hetero.export.artifact import Artifact

from hetero.config import CheckConfig, DataConfig, RunConfig, from_dict, to_dict
from hetero.data.datasets import ImageSet, OpenSetSplit, load_split
from hetero.devices.harness import (
    Producer,
    compatibility_report,
    fixture_from_cloud,
    open_cloud,
    open_producer,
    open_upgrade,
    resize_variants,
)
from hetero.errors import InputError, NotExecutedError
from hetero.frames import FILTERS, require_filter
from hetero.io import ensure_writable_dir
from hetero.manifest import Manifest
from hetero.policy import verified_under
from hetero.release.fixture import Fixture
from hetero.release.gate import GateResult, evaluate
from hetero.release.index import IndexSpec
from hetero.release.report import Report


@dataclass
class DemoResult:
    out: Path
    cloud: Manifest
    edge: Manifest
    export: list[Artifact]
    export_failures: list[str]
    report: Report
    gate: GateResult
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.gate.passed and not self.export_failures


def cloud_fixture(
    cfg: RunConfig,
    cloud: Path,
    split: OpenSetSplit | None = None,
    *,
    keep_gallery: bool = False,
    upgrade: Path | None = None,
):
    """The config's held-out split embedded by the cloud (or looked up in its embedding file), with the config's
    thresholds frozen in; with `upgrade`, also by that cloud v2 once its lineage to `cloud` is checked."""
    split = split or load_split(cfg.data)
    source = {
        "dataset": cfg.data.dataset,
        "image_size": cfg.data.image_size,
        "frame_size": cfg.data.frames,
        "heldout_classes": list(split.heldout_classes),
    }
    v1 = open_cloud(cloud)
    source["cloud_runtime"] = getattr(v1, "name", "") or "embedding file"  # what computed the cloud's rows
    return fixture_from_cloud(
        v1,
        probe_frames(cfg.data, split),
        split.gallery,
        to_dict(cfg.check),
        source,
        keep_gallery_images=keep_gallery,
        upgrade=open_upgrade(upgrade, v1) if upgrade is not None else None,
    )


def probe_frames(data: DataConfig, split: OpenSetSplit) -> ImageSet:
    """The split's queries loaded again at the frame size (hetero.frames): the same images, larger than any input."""
    query = load_split(replace(data, image_size=data.frames)).query
    if not (np.array_equal(query.labels, split.query.labels) and np.array_equal(query.ids, split.query.ids)):
        raise InputError(f"{data.dataset} at {data.frames} px does not split like at {data.image_size} px")
    return query


def open_producers(
    candidates: list[str],
    controls: list[str] = (),
    previous: str | None = None,
    *,
    remote: Any = None,
    threads: int | None = None,
    runtimes: list[str] = (),
    resizers: list[str] = (),
    log: Callable[[str], None] = lambda s: None,
) -> list[Producer]:
    """`[NAME=]PATH` specs -> producers on their runtimes; with `remote`, each candidate also runs over SSH; with
    `runtimes` (`onnxruntime==1.17.3`, `ai-edge-litert==1.4.0@arm64`, hetero.devices.targets), each candidate also
    runs on every named runtime of its format; with `resizers` (hetero.frames filters), each local candidate also
    embeds the probes resized by each of them. A PATH that is a directory of units (an export directory) stands
    for each unit in it."""
    candidates, controls = expand_units(candidates), expand_units(controls)
    producers = [open_producer(s, "candidate", threads=threads) for s in candidates]
    producers += resize_variants(producers, [require_filter(f) for f in resizers])
    if remote is not None:
        producers += [open_producer(s, "candidate", remote=remote) for s in candidates]
    if runtimes:
        from hetero.devices.targets import RuntimeTarget, target_producers

        targets = list(dict.fromkeys(RuntimeTarget.parse(r) for r in runtimes))
        producers += target_producers(candidates, targets, log)
    producers += [open_producer(s, "control", threads=threads) for s in controls]
    if previous:
        spec = previous if "=" in previous else f"previous={previous}"
        producers.append(open_producer(spec, "previous", threads=threads))
    return producers


def expand_units(specs: list[str]) -> list[str]:
    """`[NAME=]DIR` where DIR holds units (each a folder with manifest.json, as `hetero export --out DIR` writes)
    -> one spec per unit, named NAME.<unit> (or <unit>); anything else is kept as given."""
    out = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        folder = Path(path)
        units = (
            sorted(d for d in folder.iterdir() if (d / "manifest.json").is_file())
            if folder.is_dir() and not (folder / "manifest.json").exists()
            else []
        )
        if not units:
            out.append(spec)
            continue
        out += [f"{name}.{u.name}={u}" if name else f"{u.name}={u}" for u in units]
    return out


@dataclass
class VerifyResult:
    report: Report
    paths: dict[str, Path] = field(default_factory=dict)  # report.json / report.md when saved


@dataclass
class FixtureResult:
    fixture: Fixture
    path: Path
    size_bytes: int


def verify(
    cfg: RunConfig,
    cloud: Path,
    candidates: list[str],
    controls: list[str] = (),
    out: Path | None = None,
    index: IndexSpec | None = None,
    upgrade: Path | None = None,
    sign: Any = None,
) -> VerifyResult:
    """Every producer's queries against the cloud gallery (densely, or through a faiss `index` built over it), plus
    X → X rows; with `upgrade` (a cloud v2 trained into this cloud's space) its rows too: v2 in v1's gallery, v2 in
    its own, each candidate in v2's. Saved to `out` when given, signed with the Ed25519 key `sign` when given."""
    if not candidates and not controls and upgrade is None:
        raise InputError("give at least one candidate, control or upgrade to verify against the cloud gallery")
    if out is not None:
        ensure_writable_dir(out)
    fx = cloud_fixture(cfg, cloud, keep_gallery=True, upgrade=upgrade)
    report = compatibility_report(fx, open_producers(candidates, controls), index=index)
    report.verified_under = verified_under(cfg)
    if sign is not None:
        report.sign(sign)
    return VerifyResult(report, report.save(out) if out is not None else {})


def create_fixture(
    cfg: RunConfig, cloud: Path, out: Path, max_probes: int = 0, upgrade: Path | None = None, sign: Any = None
) -> FixtureResult:
    """Freeze what mobile CI needs into one checksummed file; with `upgrade`, the v2 cloud's gallery and probe
    embeddings too, so `check` gates the upgrade without backfill from the file alone; with `sign` (an Ed25519
    private key, hetero.release.signing), the cloud team's signature over all of it."""
    ensure_writable_dir(Path(out).parent)
    fx = cloud_fixture(cfg, cloud, upgrade=upgrade)
    if max_probes < 0:
        raise InputError(f"max_probes must be >= 0, got {max_probes}")
    if max_probes and len(fx.probe_labels) > max_probes:
        keep = np.sort(np.random.default_rng(0).permutation(len(fx.probe_labels))[:max_probes])
        fx.probe_frames, fx.probe_labels = fx.probe_frames[keep], fx.probe_labels[keep]
        fx.reference_queries = fx.reference_queries[keep]
        if fx.has_upgrade:
            fx.upgrade_queries = fx.upgrade_queries[keep]
    return FixtureResult(fx, Path(out), fx.save(out, sign=sign))


@dataclass
class SignResult:
    path: Path
    kind: str  # "fixture" | "report"
    key_id: str
    content_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "key_id": self.key_id, "content_sha256": self.content_sha256}


def sign_file(path: Path, key: Any) -> SignResult:
    """Sign a fixture or a report in place (atomically), after verifying its checksum: the signature covers exactly
    the content that was checked. A file that is neither is refused."""
    from hetero.io import atomic_write_json

    path = Path(path)
    if path.suffix == ".json":
        report = Report.load(path)
        report.sign(key)
        atomic_write_json(path, report.to_dict())
        return SignResult(path, "report", report.signature["key_id"], report.to_dict()["content_sha256"])
    if path.suffix == ".safetensors":
        fx = Fixture.load(path)
        fx.save(path, sign=key)
        return SignResult(path, "fixture", fx.signature["key_id"], fx.content_sha256())
    raise InputError(f"{path}: sign takes a fixture (.safetensors) or a report (.json)")


@dataclass
class CheckResult:
    report: Report
    gate: GateResult
    thresholds: CheckConfig
    not_executed: str = ""  # set when no rule could be evaluated here (each listed as skipped): that is no pass
    resize_gate: GateResult | None = None  # the resize rows' verdicts, reported but not gated (require_resizers off)

    @property
    def passed(self) -> bool:
        return self.gate.passed and not self.not_executed


def check(
    *,
    thresholds: CheckConfig | None = None,
    report: Report | None = None,
    fixture: Fixture | None = None,
    artifacts: list[str] = (),
    previous: str | None = None,
    rows: list[str] | None = None,
    remote: Any = None,
    index: IndexSpec | None = None,
    runtimes: list[str] = (),
    resizers: list[str] = (),
    log: Callable[[str], None] = lambda s: None,
) -> CheckResult:
    """The release gate on a saved report, or on artifacts run against a fixture (its gallery searched densely, or
    through a faiss `index` built over it). `thresholds=None`: the fixture's. `runtimes`: also run each artifact on
    these runtime targets (open_producers); `resizers`: also embed the probes resized by these filters
    (hetero.frames; "all" for every one, which `require_resizers` implies), reported, and gated under
    `require_resizers`; `log` hears about environments being created on first use."""
    upgrade_only = fixture is not None and fixture.has_upgrade
    if (
        (report is None) == (fixture is None)
        or (report is not None and artifacts)
        or (fixture and not artifacts and not upgrade_only)
    ):
        raise InputError("check needs a report, or a fixture with artifacts (or a fixture carrying a cloud upgrade)")
    if fixture is not None:
        if thresholds is None:
            thresholds = from_dict(CheckConfig, fixture.thresholds, prefix="fixture thresholds.")
        resizers = list(FILTERS) if "all" in resizers or thresholds.require_resizers else list(resizers)
        producers = open_producers(
            list(artifacts), previous=previous, remote=remote, runtimes=runtimes, resizers=resizers, log=log
        )
        try:
            report = compatibility_report(fixture, producers, index=index)
            report.verified_under = {"thresholds": to_dict(thresholds)}
        finally:  # remote runtimes keep their uploaded unit for the whole report; remove it now
            for p in producers:
                getattr(p.runtime, "close", lambda: None)()
    elif index is not None or runtimes or resizers:
        what = "--index" if index is not None else "--runtime" if runtimes else "--resize"
        raise InputError(f"a saved report was measured when it was made; {what} applies to a fixture or a cloud")
    if thresholds is None:
        raise InputError("check of a saved report needs thresholds")
    try:
        gate = evaluate(report, thresholds, rows or None, require_executed=thresholds.require_executed)
    except NotExecutedError as e:
        return CheckResult(report, getattr(e, "gate", GateResult([])), thresholds, str(e))
    return CheckResult(report, gate, thresholds, resize_gate=_resize_verdicts(report, thresholds, rows))


def _resize_verdicts(report: Report, thresholds: CheckConfig, rows: list[str] | None) -> GateResult | None:
    """The resize rows judged by the same rules when they are not gated: what a stricter policy would decide."""
    names = [r.name for r in report.rows if r.kind == "resize"]
    if thresholds.require_resizers or rows or not names:
        return None
    try:
        return evaluate(report, thresholds, names)
    except NotExecutedError:
        return None


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
    from hetero.devices.targets import export_runners
    from hetero.export.artifact import ExportData, export_matrix
    from hetero.training.train import train

    out = Path(out)
    ensure_writable_dir(out)
    split = load_split(cfg.data)
    log(f"hetero demo: dataset {cfg.data.dataset} at {cfg.data.image_size} px — {split.to_text()}")
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
        lambda: train("cloud", cfg, out / "cloud", split=split, progress=progress).manifest,
    )
    edge = step(
        2,
        f"train edge model {cfg.edge.model} with BCT into the cloud space ({cfg.edge.epochs} epochs)",
        lambda: train("edge", cfg, out / "edge_bct", cloud=out / "cloud", split=split, progress=progress).manifest,
    )
    step(
        3,
        f"train edge model {cfg.edge.model} independently (negative control)",
        lambda: train(
            "edge", cfg, out / "edge_independent", split=split, progress=progress, loss_weights={"classification": 1.0}
        ),
    )
    export_failures: list[str] = []

    def export() -> list[Artifact]:
        nonlocal export_failures
        result = export_matrix(
            out / "edge_bct",
            out / "export",
            list(cfg.export.formats),
            list(cfg.export.precisions),
            ExportData.from_split(split, cfg.export.calibration_images),
            cfg.export,
            elsewhere=export_runners(list(cfg.export.validate_on), log),
        )
        export_failures = result.failures  # keep going with the artifacts that passed
        if result.failures:
            log(f"      {len(result.failures)} parity rule(s) failed; those artifacts were not written")
        return result.artifacts

    results = step(
        4,
        f"export edge_bct to {'/'.join(cfg.export.formats)} × {'/'.join(cfg.export.precisions)}, "
        "parity on each runtime",
        export,
    )
    log("[5/6] verify: edge queries (torch and each executed artifact) and the control vs the cloud gallery …")
    report, paths = _demo_report(cfg, out, split, results, threads)
    log("[6/6] gate: hetero check on the candidate rows")
    gate = evaluate(report, cfg.check, require_executed=cfg.check.require_executed)
    return DemoResult(out, cloud, edge, results, export_failures, report, gate, paths, seconds)


def _demo_report(
    cfg: RunConfig, out: Path, split: OpenSetSplit, artifacts: list[Artifact], threads: int | None
) -> tuple[Report, dict[str, Path]]:
    """The demo's report (the BCT edge on torch and on each written artifact, the independent control) and its
    fixture for mobile CI, both saved into `out`."""
    fx = cloud_fixture(cfg, out / "cloud", split, keep_gallery=True)
    candidates = [f"edge_bct={out / 'edge_bct'}"]
    candidates += [f"edge_bct.{a.format}-{a.precision}={a.path}" for a in artifacts if a.path]
    controls = [f"edge_independent={out / 'edge_independent'}"]
    report = compatibility_report(fx, open_producers(candidates, controls, threads=threads))
    report.verified_under = verified_under(cfg)
    fx.gallery_images = None
    fx.save(out / "fixture.safetensors")
    return report, report.save(out)
