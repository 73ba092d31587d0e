"""Retrieval metrics with the query set and the reference (gallery) set passed explicitly.

Cross-model retrieval needs queries and gallery from *different* producers, so nothing here assumes they are the
same set. Similarity is the inner product of unit vectors (cosine). Dense mAP is exact over the full ranking;
`tests/test_metrics.py` checks it against scikit-learn's `average_precision_score`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hetero.errors import SpaceMismatchError


def _check(query: np.ndarray, gallery: np.ndarray, ql: np.ndarray, gl: np.ndarray) -> None:
    if query.ndim != 2 or gallery.ndim != 2:
        raise SpaceMismatchError(f"embeddings must be 2-D, got {query.shape} and {gallery.shape}")
    if query.shape[1] != gallery.shape[1]:
        raise SpaceMismatchError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    if len(query) != len(ql) or len(gallery) != len(gl):
        raise ValueError("labels and embeddings differ in length")


Ranker = Callable[[np.ndarray], np.ndarray]  # queries [c, D] -> ranked gallery ids [c, K] (-1: no result)


def retrieval_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: tuple[int, ...] = (1, 5),
    chunk: int = 1024,
    per_query: bool = False,
    search: Ranker | None = None,
) -> dict[str, Any]:
    """Recall@k (a correct item within the top k) and mAP, averaged over queries.

    Without `search` every gallery item is ranked (dense, exact). With `search` (an index: `hetero.release.index.
    GallerySearch`) only its top K come back: recall@k for k <= K is what the index retrieves, and AP counts the
    relevant items within the top K over *all* relevant gallery items — the full-ranking AP when the index returns
    them all, a lower bound otherwise (a threshold on it stays conservative).
    Queries with no relevant gallery item are excluded (they have no defined AP) and counted in `n_without_match`.
    Ties are broken by gallery index (stable sort) so dense results are identical across runs and runtimes.
    `per_query=True` adds `top1_correct` (bool per query) and `ap` (per query with a match): the paired counts and
    intervals of the gate are computed from them.
    """
    _check(query, gallery, query_labels, gallery_labels)
    classes, counts = np.unique(gallery_labels, return_counts=True)
    per_class = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    g = gallery.astype(np.float32)
    hits: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    top1, aps, valids = [], [], []
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk].astype(np.float32)
        ql = query_labels[start : start + chunk]
        order = np.argsort(-(q @ g.T), axis=1, kind="stable") if search is None else search(q)
        rel = (order >= 0) & (gallery_labels[np.maximum(order, 0)] == ql[:, None])
        n_rel = np.array([per_class.get(y, 0) for y in ql.tolist()], dtype=np.int64)
        valid = n_rel > 0
        for k in ks:
            hits[k].append(rel[valid, :k].any(axis=1))
        precision_at_hit = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
        aps.append((precision_at_hit * rel).sum(axis=1)[valid] / n_rel[valid])
        top1.append(rel[:, 0])
        valids.append(valid)
    n_valid = int(sum(int(v.sum()) for v in valids))
    out: dict[str, Any] = {f"recall_at_{k}": int(sum(int(h.sum()) for h in hits[k])) / max(n_valid, 1) for k in ks}
    ap = np.concatenate(aps) if aps else np.zeros(0)
    out["map"] = float(ap.sum()) / max(n_valid, 1)
    out["n_query"] = len(query)
    out["n_gallery"] = len(gallery)
    out["n_without_match"] = int(len(query) - n_valid)
    if per_query:
        out["top1_correct"] = np.concatenate(top1) if top1 else np.zeros(0, bool)
        out["ap"] = ap
    return out


def chance_levels(query_labels: np.ndarray, gallery_labels: np.ndarray) -> dict[str, float]:
    """Expected R@1 and mAP of a random ranking, averaged over queries: R@1 is the share of same-label gallery items;
    a query with R relevant among N has expected AP (H_N + (R - 1)/(N - 1) · (N - H_N)) / N (H_N the harmonic
    number) — what the gate's minimums must exceed to mean anything."""
    classes, counts = np.unique(gallery_labels, return_counts=True)
    n = len(gallery_labels)
    h = float(np.sum(1.0 / np.arange(1, n + 1))) if n else 0.0
    ap = (h + (counts - 1) / max(n - 1, 1) * (n - h)) / max(n, 1)
    share = dict(zip(classes.tolist(), (counts / max(n, 1)).tolist(), strict=True))
    expected_ap = dict(zip(classes.tolist(), ap.tolist(), strict=True))
    r1 = float(np.mean([share.get(int(y), 0.0) for y in query_labels]))
    return {"recall_at_1": r1, "map": float(np.mean([expected_ap.get(int(y), 0.0) for y in query_labels]))}


def cosine_parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Row-wise cosine between two producers' embeddings of the same inputs."""
    if reference.shape != candidate.shape:
        raise SpaceMismatchError(f"parity needs equal shapes, got {reference.shape} and {candidate.shape}")
    r = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    c = candidate / np.linalg.norm(candidate, axis=1, keepdims=True).clip(1e-12)
    cos = (r * c).sum(axis=1)
    return {
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "n": len(cos),
    }
