"""One export step for every format: build in an atomic directory, validate on the real runtime, write the manifest.

An artifact appears only with a manifest recording the parity it passed. Where the runtime cannot execute here (Core
ML off macOS) the static contract is checked and the manifest says "not executed"; it never says "passed".
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from hetero.batching import embed_batches
from hetero.config import ExportConfig
from hetero.data.datasets import ImageSet, OpenSetSplit
from hetero.errors import GateFailure, InputError, NotExecutedError, ParityError
from hetero.export import coreml, onnx, tflite
from hetero.export.formats import BuildRequest, plan, tolerance
from hetero.export.metadata import camera_rule
from hetero.export.prepare import prepare
from hetero.export.sensitivity import sweep
from hetero.export.validate import Embeddings, require_resolvable, validate_parity
from hetero.io import atomic_dir, path_size
from hetero.manifest import Manifest, load_manifest, write_manifest
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph

FORMAT_MODULES: dict[str, ModuleType] = {"onnx": onnx, "coreml": coreml, "tflite": tflite}


@dataclass(frozen=True)
class ExportResult:
    """Every requested (format, precision): its status, path, size and validation; and every failed rule."""

    artifacts: list[dict[str, Any]]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        if self.failures:
            raise ParityError(self.failures)


@dataclass(frozen=True)
class ExportData:
    calibration: np.ndarray  # training images (never the held-out ones used for validation)
    query: ImageSet  # held-out
    gallery: ImageSet

    @property
    def n_heldout(self) -> int:
        """Validation queries: every held-out image, each against all the others (leave-one-out)."""
        return len(self.query) + len(self.gallery)

    @classmethod
    def from_split(cls, split: OpenSetSplit, calibration_images: int) -> ExportData:
        rng = np.random.default_rng(0)
        idx = rng.permutation(len(split.train))[:calibration_images]
        return cls(split.train.images[np.sort(idx)], split.query, split.gallery)


def _reference(graph: EmbeddingGraph, data: ExportData) -> Embeddings:
    with torch.inference_mode():
        fn = lambda b: graph(torch.from_numpy(b)).numpy()  # noqa: E731
        return Embeddings(embed_batches(fn, data.query.images), embed_batches(fn, data.gallery.images))


def _validate(
    fmt: str,
    precision: str,
    model_file: Path,
    m: Manifest,
    built: EmbeddingGraph,
    ref: Embeddings,
    data: ExportData,
    cfg: ExportConfig,
) -> dict[str, Any]:
    mod = FORMAT_MODULES[fmt]
    tol = tolerance(precision, cfg)
    static = mod.inspect(model_file, built, m.space.id, m.space.dim, precision) if hasattr(mod, "inspect") else {}
    try:
        run: Callable[[np.ndarray], np.ndarray] = mod.runner(model_file)
    except NotExecutedError as e:
        return {"status": "not executed", "reason": str(e), "static": static, "tolerance": tol.to_dict()}
    cand = Embeddings(embed_batches(run, data.query.images), embed_batches(run, data.gallery.images))
    measured = validate_parity(ref, cand, data.query.labels, data.gallery.labels, dim=m.space.dim, tolerance=tol)
    return {
        "status": "passed",
        "runtime": mod.runtime_version(),
        "tolerance": tol.to_dict(),
        "static": static,
        **measured,
    }


def weight_bits(fmt: str, cfg: ExportConfig) -> int:
    return 7 if fmt == "onnx" and cfg.onnx_reduce_range else 8


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
    if precision not in ("int8", "int8w"):
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
    _loaded: tuple | None = None,
) -> Manifest:
    """Build, validate and write one artifact unit at `out_dir`; raise ParityError (nothing written) on failure.

    int8 with `cfg.auto_keep_float`: a failed validation is retried with the next most sensitive layer kept float,
    up to that many; the manifest's `quantisation.keep_float` says which were.
    """
    plan([fmt], [precision])  # unknown or unsupported: InputError listing the matrix
    require_resolvable(tolerance(precision, cfg), data.n_heldout)
    model, ckpt = _loaded[:2] if _loaded else load_checkpoint(checkpoint)
    graph = EmbeddingGraph(model, ckpt.input).eval()
    ref = _loaded[2] if _loaded else _reference(graph, data)
    memo = _loaded[3] if _loaded else {}
    mixed = FORMAT_MODULES[fmt].MIXED_PRECISION  # whether the format can keep layers float inside an int8 graph
    keep = tuple(cfg.keep_float) if mixed else ()
    build = lambda kept: _build_unit(checkpoint, out_dir, fmt, precision, data, cfg, ckpt, graph, ref, kept, memo)  # noqa: E731
    try:
        return build(keep)
    except ParityError as e:
        if precision != "int8" or not cfg.auto_keep_float or not mixed:
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
    fmt: str,
    precision: str,
    data: ExportData,
    cfg: ExportConfig,
    ckpt: Manifest,
    graph: EmbeddingGraph,
    ref: Embeddings,
    keep: tuple[str, ...],
    memo: dict,
) -> Manifest:
    mod = FORMAT_MODULES[fmt]
    t0 = time.perf_counter()
    bits = weight_bits(fmt, cfg)
    built, prepared = deployable(graph, precision, cfg, data.calibration, bits, keep, memo)
    with atomic_dir(out_dir) as tmp:
        request = BuildRequest(
            built,
            ckpt.space.id,
            precision,
            tmp,
            data.calibration,
            cfg.opset,
            calibration_method=cfg.calibration_method,
            keep_float=keep,
            weight_bits=bits,
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
            format=fmt,
            precision=precision,
            space=ckpt.space,
            input=ckpt.input,
            model=ckpt.model,
            seed=ckpt.seed,
            source={"checkpoint": str(checkpoint), "checkpoint_sha256": ckpt.sha256},
            extra={
                **facts,
                "camera_to_input": camera_rule(ckpt.input),
                "build_seconds": round(build_seconds, 2),
                "size_bytes": path_size(tmp / mod.FILE),
            },
        )
        manifest.validation = _validate(fmt, precision, tmp / mod.FILE, manifest, built, ref, data, cfg)
        write_manifest(tmp, manifest)
    return manifest


def validate_artifact(artifact: Path, checkpoint: Path, data: ExportData, cfg: ExportConfig) -> dict[str, Any]:
    """Re-run validation of an existing artifact against the checkpoint it claims to come from."""
    m, model_file = load_manifest(artifact)
    if m.kind != "artifact" or m.format not in FORMAT_MODULES:
        raise InputError(f"{artifact} is not an exported artifact (format {m.format!r})")
    model, ckpt = load_checkpoint(checkpoint)
    if m.source.get("checkpoint_sha256") != ckpt.sha256:
        raise InputError(f"{artifact} was not exported from {checkpoint} (source checkpoint sha256 differs)")
    graph = EmbeddingGraph(model, ckpt.input).eval()
    built = graph
    if "prepared" in m.extra:  # rebuild the prepared graph as it was built, not as cfg says now (structure check)
        p, q = m.extra["prepared"], m.extra.get("quantisation", {})
        as_built = dataclasses.replace(cfg, equalise=p["equalise"], bias_correction=p["bias_correction"])
        keep = tuple(q.get("keep_float", ()))
        built, _ = deployable(graph, m.precision, as_built, data.calibration, p["weight_bits"], keep)
    return _validate(m.format, m.precision, model_file, m, built, _reference(graph, data), data, cfg)


def export_matrix(
    checkpoint: Path,
    out_root: Path,
    formats: list[str],
    precisions: list[str],
    data: ExportData,
    cfg: ExportConfig,
    *,
    log: Callable[[str], None] = lambda s: None,
) -> ExportResult:
    """Export every supported (format, precision) into `out_root/<format>-<precision>/`.

    All combinations are attempted; the result lists, per combination, passed / FAILED / not executed / unsupported,
    and every failed rule (a failed artifact is not written). `ExportResult.raise_for_failures()` turns failures into
    one `ParityError` for callers that stop there.
    """
    todo, unsupported = plan(formats, precisions)
    for _, prec in todo:  # a tolerance the held-out set cannot resolve is refused before any work
        require_resolvable(tolerance(prec, cfg), data.n_heldout)
    model, ckpt = load_checkpoint(checkpoint)
    loaded = (model, ckpt, _reference(EmbeddingGraph(model, ckpt.input).eval(), data), {})  # last: deployable memo
    results: list[dict[str, Any]] = [
        {"format": f, "precision": p, "status": "unsupported", "path": None} for f, p in unsupported
    ]
    failures: list[str] = []
    for i, (fmt, prec) in enumerate(todo, 1):
        out = Path(out_root) / f"{fmt}-{prec}"
        log(f"[{i}/{len(todo)}] {fmt} {prec} …")
        t0 = time.perf_counter()
        try:
            m = export_artifact(checkpoint, out, fmt, prec, data, cfg, log=log, _loaded=loaded)
        except GateFailure as e:
            failures += [f"{fmt}-{prec}: {f}" for f in e.failures]
            results.append({"format": fmt, "precision": prec, "status": "FAILED", "path": None, "failures": e.failures})
            continue
        results.append(
            {
                "format": fmt,
                "precision": prec,
                "status": m.validation["status"],
                "path": str(out),
                "size_bytes": m.extra["size_bytes"],
                "seconds": round(time.perf_counter() - t0, 2),
                "validation": m.validation,
            }
        )
    order = {(f, p): i for i, (f, p) in enumerate((f, p) for f in formats for p in precisions)}
    results.sort(key=lambda r: order[(r["format"], r["precision"])])
    return ExportResult(results, failures)
