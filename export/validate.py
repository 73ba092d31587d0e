"""Shared export validation: an artifact must compute what the torch model computes, or it is not written.

Two views, both against the torch model the artifact came from, on held-out images:
- embedding parity: per-image cosine (min and mean), output shape, unit norm;
- retrieval parity: the artifact's queries searched in the torch model's own gallery — R@1 change and how many of
  each query's 10 nearest items torch also returns. Small cosine losses that reorder neighbours show up here.
Unlike exporters that only warn, every failed rule is collected and raised together as a `ParityError` (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from export.formats import Tolerance
from hetero.errors import ParityError
from hetero.metrics import cosine_parity, retrieval_metrics


@dataclass(frozen=True)
class Embeddings:
    query: np.ndarray
    gallery: np.ndarray


def top_k_overlap(query_a: np.ndarray, query_b: np.ndarray, gallery: np.ndarray, k: int = 10) -> float:
    """Mean share of each query's k nearest gallery items that both query sets agree on."""
    k = min(k, len(gallery))
    a = np.argsort(-(query_a @ gallery.T), axis=1)[:, :k]
    b = np.argsort(-(query_b @ gallery.T), axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))


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
    failures: list[str] = []
    cand = np.concatenate([candidate.query, candidate.gallery])
    ref = np.concatenate([reference.query, reference.gallery])
    if not np.isfinite(cand).all():
        failures.append("output contains NaN or Inf")
    norm_err = float(np.abs(np.linalg.norm(cand, axis=1) - 1.0).max())
    if not norm_err <= norm_tol:
        failures.append(f"embeddings are not unit length (max |norm - 1| = {norm_err:.2e} > {norm_tol:g})")
    emb = {**cosine_parity(ref, cand), "max_norm_error": norm_err}
    if not emb["min_cosine"] >= tolerance.min_cosine:
        failures.append(f"min cosine to torch {emb['min_cosine']:.7f} < {tolerance.min_cosine}")
    if not emb["mean_cosine"] >= tolerance.min_mean_cosine:
        failures.append(f"mean cosine to torch {emb['mean_cosine']:.7f} < {tolerance.min_mean_cosine}")

    torch_r = retrieval_metrics(reference.query, query_labels, reference.gallery, gallery_labels)
    art_r = retrieval_metrics(candidate.query, query_labels, reference.gallery, gallery_labels)
    drop = torch_r["recall_at_1"] - art_r["recall_at_1"]
    overlap = top_k_overlap(candidate.query, reference.query, reference.gallery, k=10)
    ret = {
        "r1_torch": torch_r["recall_at_1"],
        "r1_artifact": art_r["recall_at_1"],
        "r1_drop": drop,
        "top10_overlap": overlap,
        "n_query": torch_r["n_query"],
        "n_gallery": torch_r["n_gallery"],
    }
    if not drop <= tolerance.max_r1_drop + 1e-12:
        failures.append(f"R@1 drops {drop * 100:.2f} points vs torch (> {tolerance.max_r1_drop * 100:.2f})")
    if not overlap >= tolerance.min_top10_overlap:
        failures.append(f"top-10 overlap with torch {overlap:.3f} < {tolerance.min_top10_overlap}")
    if failures:
        raise ParityError(failures)
    return {"embedding": emb, "retrieval": ret}
