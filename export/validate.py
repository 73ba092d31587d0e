"""Shared export validation: an artifact must compute what the torch model computes, or it is not written.

Both views compare the artifact with the torch model it came from, on every held-out image:
- embedding parity: per-image cosine (min and mean), output shape, unit norm, finite values;
- retrieval parity, leave-one-out: each held-out image queries all the *other* held-out images as embedded by torch,
  once with the torch query and once with the artifact's. That is paired: the R@1 the artifact loses is
  (worse − better) / n over the queries that changed side, with an exact 95% interval (`hetero.release.stats`). The rule
  passes only when the interval's upper end is within `max_r1_drop` (fail-closed), and a tolerance below what n
  queries can resolve is refused up front: a verdict must not flip on the few queries that CPU kernels of another
  machine move.
Unlike exporters that only warn, every failed rule is collected and raised together as a `ParityError` (exit 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hetero.errors import InputError, ParityError
from hetero.export.formats import Tolerance
from hetero.release.metrics import cosine_parity
from hetero.release.stats import PairedChange, paired_queries_needed, paired_resolution


@dataclass(frozen=True)
class Embeddings:
    query: np.ndarray
    gallery: np.ndarray

    def all(self) -> np.ndarray:
        return np.concatenate([self.query, self.gallery])


def _leave_one_out_ranking(query: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Indices of each query's k nearest gallery items, the query's own index excluded (query i is gallery item i)."""
    sims = query.astype(np.float32) @ gallery.astype(np.float32).T
    np.fill_diagonal(sims, -np.inf)
    k = min(k, len(gallery) - 1)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def require_resolvable(tol: Tolerance, n: int, what: str = "export validation") -> None:
    """Refuse a R@1 tolerance that `n` paired queries cannot resolve (InputError, exit 2)."""
    res = paired_resolution(n)
    if not tol.max_r1_drop >= res:
        need = paired_queries_needed(tol.max_r1_drop) if tol.max_r1_drop > 0 else "infinitely many"
        raise InputError(
            f"{what}: max_r1_drop {tol.max_r1_drop:g} is below what {n} held-out images can resolve "
            f"({res:.4f}); raise it to at least {res:.4f} or use a split with {need} held-out images"
        )


def validate_parity(
    reference: Embeddings,
    candidate: Embeddings,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    dim: int,
    tolerance: Tolerance,
    norm_tol: float = 1e-2,
) -> dict[str, Any]:
    """Measure the candidate against the reference; raise `ParityError` listing every failed rule."""
    for name, arr in (("query", candidate.query), ("gallery", candidate.gallery)):
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise ParityError([f"{name} output shape {arr.shape}, expected [N, {dim}]"])
    cand, ref = candidate.all(), reference.all()
    labels = np.concatenate([query_labels, gallery_labels])
    require_resolvable(tolerance, len(labels))
    if not np.isfinite(cand).all():
        raise ParityError(["output contains NaN or Inf"])
    failures: list[str] = []
    norm_err = float(np.abs(np.linalg.norm(cand, axis=1) - 1.0).max())
    if not norm_err <= norm_tol:
        failures.append(f"embeddings are not unit length (max |norm - 1| = {norm_err:.2e} > {norm_tol:g})")
    emb = {**cosine_parity(ref, cand), "max_norm_error": norm_err}
    if not emb["min_cosine"] >= tolerance.min_cosine:
        failures.append(f"min cosine to torch {emb['min_cosine']:.7f} < {tolerance.min_cosine}")
    if not emb["mean_cosine"] >= tolerance.min_mean_cosine:
        failures.append(f"mean cosine to torch {emb['mean_cosine']:.7f} < {tolerance.min_mean_cosine}")

    top_ref = _leave_one_out_ranking(ref, ref, 10)
    top_cand = _leave_one_out_ranking(cand, ref, 10)
    ref_ok, cand_ok = labels[top_ref[:, 0]] == labels, labels[top_cand[:, 0]] == labels
    paired = PairedChange.from_outcomes(ref_ok, cand_ok)
    loss = paired.loss()
    overlap = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(top_ref, top_cand, strict=True)]))
    ret = {
        "r1_torch": float(ref_ok.mean()),
        "r1_artifact": float(cand_ok.mean()),
        "r1_drop": loss.value,
        "r1_drop_interval": [loss.low, loss.high],
        "resolution": loss.resolution,
        "paired": paired.to_dict(),
        "top10_overlap": overlap,
        "n_query": len(labels),
        "protocol": "leave-one-out over all held-out images, gallery = torch embeddings",
    }
    if not loss.high <= tolerance.max_r1_drop:
        failures.append(
            f"R@1 may drop up to {loss.high * 100:.2f} points vs torch (> {tolerance.max_r1_drop * 100:.2f}; "
            f"measured {loss.value * 100:+.2f}: {paired.worse} queries lost, {paired.better} gained of {paired.n})"
        )
    if not overlap >= tolerance.min_top10_overlap:
        failures.append(f"top-10 overlap with torch {overlap:.3f} < {tolerance.min_top10_overlap}")
    if failures:
        raise ParityError(failures)
    return {"embedding": emb, "retrieval": ret}


@dataclass(frozen=True)
class ElsewhereRunner:
    """Runs a written unit somewhere other than this process — another runtime version or CPU target, provided by
    hetero.devices.targets.export_runners — so export can validate the file where the app runs it."""

    spec: str  # as requested, e.g. onnxruntime==1.32.0@arm64
    label: str  # canonical, e.g. onnxruntime==1.32.0@arm64:cortex-a76
    format: str
    run: Callable[[Path, np.ndarray], tuple[np.ndarray, str]]  # (unit, uint8 images) -> (embeddings, its CPU)


def validate_elsewhere(
    runners: list[ElsewhereRunner],
    unit: Path,
    reference: Embeddings,
    query: Any,
    gallery: Any,
    *,
    dim: int,
    tolerance: Tolerance,
) -> dict[str, Any]:
    """The same parity rules on every other target, per target; any failure fails the artifact (ParityError naming
    the target and its CPU): one file must compute the same function wherever it is declared to run."""
    results: dict[str, Any] = {}
    failures: list[str] = []
    images = np.concatenate([query.images, gallery.images])
    for r in runners:
        emb, cpu = r.run(unit, images)
        cand = Embeddings(emb[: len(query.images)], emb[len(query.images) :])
        try:
            measured = validate_parity(reference, cand, query.labels, gallery.labels, dim=dim, tolerance=tolerance)
        except ParityError as e:
            failures += [f"on {r.label} ({cpu}): {f}" for f in e.failures]
            continue
        results[r.label] = {"status": "passed", "cpu": cpu, **measured}
    if failures:
        raise ParityError(failures)
    return results
