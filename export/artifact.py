"""One export step for every format: build in an atomic directory, validate on the real runtime, write the manifest.

An artifact appears only with a manifest recording the parity it passed. Where the runtime cannot execute here (Core
ML off macOS) the static contract is checked and the manifest says "not executed"; it never says "passed".
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from hetero.batching import embed_batches
from hetero.config import ExportConfig
from hetero.cpu import cpu_tag
from hetero.errors import GateFailure, InputError, NotExecutedError, ParityError
from hetero.export import coreml, onnx, tflite
from hetero.export.data import ExportData
from hetero.export.formats import BuildRequest, FormatModule, Target, plan, target
from hetero.export.metadata import camera_rule
from hetero.export.prepare import prepare
from hetero.export.requires import requirements
from hetero.export.sensitivity import sweep
from hetero.export.validate import (
    ElsewhereRunner,
    Embeddings,
    require_resolvable,
    validate_elsewhere,
    validate_parity,
)
from hetero.frames import FrameRule, artifact_input
from hetero.io import atomic_dir, path_size
from hetero.kinds import Format, Precision
from hetero.manifest import Manifest, load_manifest, write_manifest
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph

FORMAT_MODULES: dict[Format, FormatModule] = {
    Format.ONNX: cast(FormatModule, onnx),
    Format.COREML: cast(FormatModule, coreml),
    Format.TFLITE: cast(FormatModule, tflite),
}


@dataclass
class Artifact:
    """One requested (format, precision) of an export: what happened to it and where it is."""

    format: str
    precision: str
    status: str  # passed | not executed | FAILED | unsupported
    path: str | None = None
    size_bytes: int | None = None
    seconds: float | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": self.format, "precision": self.precision, "status": self.status}
        d["path"] = self.path
        for key in ("size_bytes", "seconds"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.validation:
            d["validation"] = self.validation
        if self.failures:
            d["failures"] = self.failures
        return d

    def row(self) -> list[str]:
        e, q = self.validation.get("embedding", {}), self.validation.get("retrieval", {})
        return [
            self.format,
            self.precision,
            self.status,
            f"{e['min_cosine']:.6f}" if e else "",
            f"{e['mean_cosine']:.6f}" if e else "",
            _drop_text(q) if q else "",
            f"{q['top10_overlap']:.3f}" if q else "",
            f"{self.size_bytes / 1024:.0f} KiB" if self.size_bytes else "",
            self.path or "",
        ]


def _drop_text(q: dict) -> str:
    """R@1 lost vs torch with its 95% interval, in points."""
    lo, hi = q.get("r1_drop_interval", (q["r1_drop"], q["r1_drop"]))
    return f"{q['r1_drop'] * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}] pt"


def artifacts_table(artifacts: list[Artifact]) -> str:
    """The terminal table of an export: one row per (format, precision), then every failed rule and skip reason."""
    head = ["format", "precision", "status", "min cos", "mean cos", "R@1 drop [95% CI]", "top-10", "size", "path"]
    rows = [a.row() for a in artifacts]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*row) for row in rows)]
    for a in artifacts:
        lines += [f"FAILED {a.format}-{a.precision}: {f}" for f in a.failures]
        if a.status == "not executed":
            lines.append(
                f"not executed {a.format}-{a.precision}: {a.validation['reason']} "
                "(program checked against the torch graph: op sequence, output shapes, weights, MACs)"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class ExportResult:
    """Every requested (format, precision): its status, path, size and validation; and every failed rule."""

    artifacts: list[Artifact]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        if self.failures:
            raise ParityError(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "artifacts": [a.to_dict() for a in self.artifacts], "failures": self.failures}

    def to_text(self) -> str:
        return artifacts_table(self.artifacts)


def _graph(model: torch.nn.Module, ckpt: Manifest, cfg: ExportConfig) -> EmbeddingGraph:
    """The deployable graph at the artifact's input ([export] input_size; hetero.frames.artifact_input)."""
    return EmbeddingGraph(model, artifact_input(ckpt.input, getattr(model, "resolution", None), cfg.input_size)).eval()


def _reference(graph: EmbeddingGraph, data: ExportData) -> Embeddings:
    with torch.inference_mode():
        fn = lambda b: graph(torch.from_numpy(b)).numpy()  # noqa: E731
        return Embeddings(embed_batches(fn, data.query.images), embed_batches(fn, data.gallery.images))


def _validate(
    t: Target, model_file: Path, m: Manifest, built: EmbeddingGraph, ref: Embeddings, data: ExportData
) -> dict[str, Any]:
    mod, tol = FORMAT_MODULES[t.format], t.tolerance
    static = mod.inspect(model_file, built, m.space.id, m.space.dim, t.precision)
    try:
        run: Callable[[np.ndarray], np.ndarray] = mod.runner(model_file)
    except NotExecutedError as e:
        return {"status": "not executed", "reason": str(e), "static": static, "tolerance": tol.to_dict()}
    cand = Embeddings(embed_batches(run, data.query.images), embed_batches(run, data.gallery.images))
    measured = validate_parity(ref, cand, data.query.labels, data.gallery.labels, dim=m.space.dim, tolerance=tol)
    return {
        "status": "passed",
        "runtime": mod.runtime_version(),
        "cpu": cpu_tag(),
        "tolerance": tol.to_dict(),
        "static": static,
        **measured,
    }


def deployable(
    graph: EmbeddingGraph,
    precision: str,
    cfg: ExportConfig,
    calibration: np.ndarray,
    bits: int = 8,
    keep_float: tuple[str, ...] = (),
    memo: dict | None = None,
) -> tuple[EmbeddingGraph, dict | None]:
    """The graph a format serialises at `precision`, and what was done to it: the checkpoint's own graph, or for int8
    precisions the same network with batch norm folded, optionally equalised, and bias-corrected for `bits`-bit
    weights on the calibration images (hetero.export.prepare).

    `memo`: one dict shared by the artifacts of one checkpoint, data and config (an export matrix), so ONNX int8,
    TFLite int8/int8w and Core ML int8w reuse one preparation (~9 s for the emoji edge) when bits and kept layers match.
    """
    if not Precision(precision).quantised:
        return graph, None
    if memo is not None and (bits, keep_float) in memo:
        return memo[(bits, keep_float)]
    pixels = torch.from_numpy(calibration)
    calibrate = (lambda m: EmbeddingGraph(m, graph.input_spec).eval()(pixels)) if cfg.bias_correction else None
    p = prepare(graph.model, equalise=cfg.equalise, calibrate=calibrate, weight_bits=bits, keep_float=keep_float)
    facts = {"equalise": cfg.equalise, "bias_correction": cfg.bias_correction, **p.to_dict()}
    built = (EmbeddingGraph(p.model, graph.input_spec).eval(), facts)
    if memo is not None:
        memo[(bits, keep_float)] = built
    return built


def export_artifact(
    checkpoint: Path,
    out_dir: Path,
    fmt: str,
    precision: str,
    data: ExportData,
    cfg: ExportConfig,
    *,
    log: Callable[[str], None] = lambda s: None,
    elsewhere: tuple[ElsewhereRunner, ...] = (),
    _loaded: tuple | None = None,
) -> Manifest:
    """Build, validate and write one artifact unit at `out_dir`; raise ParityError (nothing written) on failure.

    int8 with `cfg.auto_keep_float`: a failed validation is retried with the next most sensitive layer kept float,
    up to that many; the manifest's `quantisation.keep_float` says which were. `elsewhere`: also validate the unit
    on these runtime targets (hetero.devices.targets.export_runners for `cfg.validate_on`).
    """
    _require_elsewhere(cfg, elsewhere)
    t = target(fmt, precision, cfg)  # unknown or unsupported: InputError listing the matrix
    require_resolvable(t.tolerance, data.n_heldout)
    model, ckpt = _loaded[:2] if _loaded else load_checkpoint(checkpoint)
    graph = _graph(model, ckpt, cfg)
    data = data.at(graph.input_spec)
    ref = _loaded[2] if _loaded else _reference(graph, data)
    memo = _loaded[3] if _loaded else {}
    mixed = FORMAT_MODULES[t.format].MIXED_PRECISION  # can the format keep layers float inside an int8 graph
    keep = tuple(cfg.keep_float) if mixed else ()
    build = lambda kept: _build_unit(checkpoint, out_dir, t, data, cfg, ckpt, graph, ref, kept, memo, elsewhere)  # noqa: E731
    try:
        return build(keep)
    except ParityError as e:
        if t.precision != Precision.INT8 or not cfg.auto_keep_float or not mixed:
            raise
        failed = e
    ranked = [s.layer for s in sweep(graph, data.calibration, data.query.images) if s.layer not in keep]
    for layer in ranked[: cfg.auto_keep_float]:
        log(f"  {fmt}-{precision}, {len(keep)} layer(s) kept float: {failed.failures[0]}; keeping {layer} float too")
        keep += (layer,)
        try:
            return build(keep)
        except ParityError as e:
            failed = e
    raise failed


def _build_unit(
    checkpoint: Path,
    out_dir: Path,
    t: Target,
    data: ExportData,
    cfg: ExportConfig,
    ckpt: Manifest,
    graph: EmbeddingGraph,
    ref: Embeddings,
    keep: tuple[str, ...],
    memo: dict,
    elsewhere: tuple[ElsewhereRunner, ...] = (),
) -> Manifest:
    mod = FORMAT_MODULES[t.format]
    t0 = time.perf_counter()
    bits = t.weight_bits
    built, prepared = deployable(graph, t.precision, cfg, data.calibration, bits, keep, memo)
    with atomic_dir(out_dir) as tmp:
        request = BuildRequest(
            built,
            ckpt.space.id,
            t.precision,
            tmp,
            data.calibration,
            cfg.opset,
            calibration_method=cfg.calibration_method,
            keep_float=keep,
            weight_bits=bits,
            int8_scheme=t.int8_scheme,
            frame_filter=cfg.frame_filter,
        )
        facts = mod.build(request)
        if prepared is not None:
            facts["prepared"] = prepared
            facts["calibration_images"] = len(data.calibration)
        build_seconds = time.perf_counter() - t0
        manifest = Manifest(
            kind="artifact",
            file=mod.FILE,
            sha256="",
            format=str(t.format),
            precision=str(t.precision),
            space=ckpt.space,
            input=built.input_spec,
            model=ckpt.model,
            seed=ckpt.seed,
            source={"checkpoint": str(checkpoint), "checkpoint_sha256": ckpt.sha256},
            extra={
                **facts,
                "camera_to_input": camera_rule(built.input_spec, frame_filter=cfg.frame_filter),
                "frame": FrameRule(built.input_spec.height, built.input_spec.width, cfg.frame_filter).to_dict(),
                "runtime_requirements": requirements(tmp / mod.FILE, str(t.format)),
                "build_seconds": round(build_seconds, 2),
                "size_bytes": path_size(tmp / mod.FILE),
            },
        )
        manifest.validation = _validate(t, tmp / mod.FILE, manifest, built, ref, data)
        mine = [r for r in elsewhere if r.format == t.format]
        if mine:  # the worker opens the unit as any runtime does: from its manifest
            write_manifest(tmp, manifest)
            manifest.validation["targets"] = validate_elsewhere(
                mine, tmp, ref, data.query, data.gallery, dim=manifest.space.dim, tolerance=t.tolerance
            )
        write_manifest(tmp, manifest)
    return manifest


def _require_elsewhere(cfg: ExportConfig, elsewhere: tuple[ElsewhereRunner, ...]) -> None:
    """`[export] validate_on` names targets the caller must provide runners for: a requested target never vanishes."""
    missing = [spec for spec in cfg.validate_on if spec not in {r.spec for r in elsewhere}]
    if missing:
        raise InputError(
            f"[export] validate_on names {', '.join(missing)}: pass elsewhere=hetero.devices.targets.export_runners("
            "cfg.export.validate_on) (the CLI does)"
        )


def validate_artifact(artifact: Path, checkpoint: Path, data: ExportData, cfg: ExportConfig) -> dict[str, Any]:
    """Re-run validation of an existing artifact against the checkpoint it claims to come from."""
    m, model_file = load_manifest(artifact)
    if m.kind != "artifact" or m.format not in FORMAT_MODULES:
        raise InputError(f"{artifact} is not an exported artifact (format {m.format!r})")
    model, ckpt = load_checkpoint(checkpoint)
    if m.source.get("checkpoint_sha256") != ckpt.sha256:
        raise InputError(f"{artifact} was not exported from {checkpoint} (source checkpoint sha256 differs)")
    graph = _graph(model, ckpt, dataclasses.replace(cfg, input_size="compute" if m.input != ckpt.input else "space"))
    data, built = data.at(graph.input_spec), graph
    if "prepared" in m.extra:  # rebuild the prepared graph as it was built, not as cfg says now (structure check)
        p, q = m.extra["prepared"], m.extra.get("quantisation", {})
        as_built = dataclasses.replace(cfg, equalise=p["equalise"], bias_correction=p["bias_correction"])
        keep = tuple(q.get("keep_float", ()))
        built, _ = deployable(graph, m.precision, as_built, data.calibration, p["weight_bits"], keep)
    return _validate(target(m.format, m.precision, cfg), model_file, m, built, _reference(graph, data), data)


def export_matrix(
    checkpoint: Path,
    out_root: Path,
    formats: list[str],
    precisions: list[str],
    data: ExportData,
    cfg: ExportConfig,
    *,
    log: Callable[[str], None] = lambda s: None,
    elsewhere: tuple[ElsewhereRunner, ...] = (),
) -> ExportResult:
    """Export every supported (format, precision) into `out_root/<format>-<precision>/`.

    All combinations are attempted; the result lists, per combination, passed / FAILED / not executed / unsupported,
    and every failed rule (a failed artifact is not written). `ExportResult.raise_for_failures()` turns failures into
    one `ParityError` for callers that stop there.
    """
    _require_elsewhere(cfg, elsewhere)
    todo, unsupported = plan(formats, precisions)
    targets = [target(f, p, cfg) for f, p in todo]
    for t in targets:  # a tolerance the held-out set cannot resolve is refused before any work
        require_resolvable(t.tolerance, data.n_heldout)
    model, ckpt = load_checkpoint(checkpoint)
    graph = _graph(model, ckpt, cfg)
    loaded = (model, ckpt, _reference(graph, data.at(graph.input_spec)), {})  # last: deployable memo
    results = [Artifact(str(f), str(p), "unsupported") for f, p in unsupported]
    failures: list[str] = []
    for i, t in enumerate(targets, 1):
        out = Path(out_root) / t.name
        log(f"[{i}/{len(targets)}] {t.format} {t.precision} …")
        t0 = time.perf_counter()
        try:
            m = export_artifact(
                checkpoint, out, t.format, t.precision, data, cfg, log=log, elsewhere=elsewhere, _loaded=loaded
            )
        except GateFailure as e:
            failures += [f"{t.name}: {f}" for f in e.failures]
            results.append(Artifact(str(t.format), str(t.precision), "FAILED", failures=list(e.failures)))
            continue
        seconds = round(time.perf_counter() - t0, 2)
        results.append(
            Artifact(
                str(t.format), str(t.precision), m.validation["status"], str(out), m.extra["size_bytes"], seconds,
                m.validation,
            )
        )  # fmt: skip
    order = {(f, p): i for i, (f, p) in enumerate((f, p) for f in formats for p in precisions)}
    results.sort(key=lambda a: order[(a.format, a.precision)])
    return ExportResult(results, failures)
