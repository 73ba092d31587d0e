"""Compatibility harness: query producers × the cloud gallery, on real runtimes.

Everything runs against a `Fixture`: the cloud gallery's embeddings, the cloud's own query embeddings (the reference
row) and probe images. `verify` builds one in memory from the cloud model; mobile CI loads a frozen one. Each producer
— a torch checkpoint, or an exported artifact on its runtime, local or remote — embeds the probes one at a time (the
on-device shape, timed). Per row: R@1, R@5, mAP, batch-1 latency, parity to the same model on another runtime, and
negative flips (probes the reference retrieves correctly and this producer does not). A producer whose runtime
cannot execute here (Core ML off macOS) is a row with status "not executed": skipped, never passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import hetero.devices.base as base
from hetero import __version__
from hetero.cpu import cpu_tag
from hetero.data.datasets import ImageSet
from hetero.devices.base import timed_embed
from hetero.devices.producers import (  # noqa: F401  (re-exported: the harness is where callers find them)
    Producer,
    cloud_embeddings,
    open_cloud,
    open_producer,
    open_upgrade,
    resize_variants,
)
from hetero.errors import InputError, NotExecutedError, RuntimeFailure, SpaceMismatchError
from hetero.release.fixture import Fixture
from hetero.release.index import DENSE, GallerySearch, IndexSpec
from hetero.release.metrics import chance_levels, cosine_parity, retrieval_metrics
from hetero.release.report import Report, Row
from hetero.release.stats import PairedChange, mean_interval
from hetero.training.table import EmbeddingTable


def fixture_from_cloud(
    cloud: base.Runtime | EmbeddingTable,
    query: ImageSet,
    gallery: ImageSet,
    thresholds: dict[str, float],
    source: dict[str, Any],
    keep_gallery_images: bool = False,
    upgrade: base.Runtime | None = None,
) -> Fixture:
    """`cloud` from `open_cloud`, which refused anything that does not define its space; `upgrade` from
    `open_upgrade`: the v2 cloud's gallery of the same images and its probe embeddings travel with the fixture.
    `query` holds the probes as frames (above every input size); `gallery`, the catalogue at the space's size."""
    extra: dict[str, Any] = {}
    if upgrade is not None:
        m = upgrade.manifest
        extra = {
            "upgrade_gallery_embeddings": upgrade.embed(gallery.images),
            "upgrade_queries": cloud_embeddings(upgrade, query, "query images", frames=True),
            "upgrade": {"cloud_sha256": m.sha256, "cloud_model": m.model.get("name"), **m.extra["lineage"]},
        }
    return Fixture(
        space=cloud.manifest.space,
        probe_frames=query.images,
        probe_labels=query.labels,
        gallery_embeddings=cloud_embeddings(cloud, gallery, "gallery images"),
        gallery_labels=gallery.labels,
        reference_queries=cloud_embeddings(cloud, query, "query images", frames=True),
        thresholds=thresholds,
        source={"cloud_sha256": cloud.manifest.sha256, "cloud_model": cloud.manifest.model.get("name"), **source},
        gallery_images=gallery.images if keep_gallery_images else None,
        **extra,
    )


def _check_producers(fx: Fixture, producers: list[Producer]) -> None:
    names = [p.name for p in producers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"two producers are named {dup[0]!r}; name them with NAME=PATH")
    for p in producers:
        other = p.manifest.space
        if p.kind in ("candidate", "previous"):
            fx.space.require_same(other, f"{p.kind} {p.name!r}")
        elif other.dim != fx.space.dim:
            raise SpaceMismatchError(
                f"control {p.name!r}: dim {other.dim} cannot be compared with space dim {fx.space.dim}"
            )
        want, have = p.manifest.input.shape(1)[1:3], fx.probe_frames.shape[1:3]
        if have[0] < want[0] or have[1] < want[1]:
            raise InputError(f"{p.name} takes {list(want)} px, larger than the fixture's probe frames {list(have)}")


class _Scorer:
    """Row fields and each probe's top-1 outcome (what the paired counts compare), from one ranking of the cloud
    gallery (densely, or through `search`) or of another gallery (X → X rows, always dense)."""

    def __init__(self, fx: Fixture, search: GallerySearch | None):
        self.fx, self.search = fx, search

    def __call__(
        self, q: np.ndarray, g: np.ndarray | None = None, g_labels: np.ndarray | None = None
    ) -> tuple[dict[str, Any], np.ndarray]:
        fx = self.fx
        finite = bool(np.isfinite(q).all() and (g is None or np.isfinite(g).all()))
        q = np.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0)  # ranked, but the row is marked and fails every rule
        m = retrieval_metrics(
            q,
            fx.probe_labels,
            fx.gallery_embeddings if g is None else np.nan_to_num(g),
            fx.gallery_labels if g_labels is None else g_labels,
            per_query=True,
            search=self.search if g is None else None,
        )
        iv = mean_interval(m["ap"])
        fields = {
            "recall_at_1": m["recall_at_1"],
            "recall_at_5": m["recall_at_5"],
            "map": m["map"],
            "n_query": m["n_query"],
            "n_gallery": m["n_gallery"],
            "r1_hits": int(m["top1_correct"].sum()),
            "map_interval": [iv.low, iv.high],
            "finite": finite,
        }
        return fields, m["top1_correct"]


def compatibility_report(
    fx: Fixture,
    producers: list[Producer],
    dataset: dict[str, Any] | None = None,
    index: IndexSpec | None = None,
) -> Report:
    """Every producer's probes against the cloud gallery. `index`: search that gallery through a faiss index built
    over it (as a deployed search would, and what a million-item gallery needs) instead of ranking it densely; the
    report records which (dataset.gallery_search). X → X rows always rank densely: they are diagnostics."""
    _check_producers(fx, producers)
    labels = (fx.probe_labels, fx.gallery_labels)
    if not np.isfinite(fx.reference_queries).all() or not np.isfinite(fx.gallery_embeddings).all():
        raise InputError("the fixture's cloud embeddings are not finite")
    search = GallerySearch(fx.gallery_embeddings, index) if index is not None else None
    metrics = _Scorer(fx, search)
    ref_fields, ref_ok = metrics(fx.reference_queries)
    rows = [
        Row(
            name="cloud → cloud",
            query="cloud",
            gallery="cloud",
            runtime=_cloud_runtime(fx),
            kind="reference",
            **ref_fields,
            negative_flip_rate=0.0,
            vs_reference=PairedChange.from_outcomes(ref_ok, ref_ok).to_dict(),
        )
    ]
    queries: dict[str, np.ndarray] = {}
    latency: dict[str, float] = {}
    for p in producers:
        if p.runtime is not None and not p.failure:
            try:
                queries[p.name], latency[p.name] = timed_embed(p.runtime, p.probes(fx))
            except RuntimeFailure as e:  # the runtime version or CPU an app ships refused it: a failed row
                p.failure = f"{p.runtime.name}: {e}"
            except NotExecutedError as e:  # a resize filter whose library is not installed here
                p.runtime, p.skip_reason = None, str(e)
    rows += _producer_rows(fx, producers, queries, latency, metrics, ref_ok)
    own: dict[str, np.ndarray] = {}  # producers' own embeddings of the gallery (when the gallery images are here)
    if fx.has_upgrade:
        candidates = {
            p.name: (queries[p.name], p.runtime.name) for p in producers if p.name in queries and p.kind == "candidate"
        }
        rows += _upgrade_rows(fx, ref_ok, candidates, metrics)
        queries["cloud v2"] = fx.upgrade_queries
        own["cloud v2"] = fx.upgrade_gallery_embeddings
    if fx.gallery_images is not None:  # X → X: a model can be excellent in its own space and still incompatible
        rows += _self_rows(fx, producers, queries, own, metrics)
    return Report(
        space=fx.space.to_dict(),
        dataset={
            **(dataset or fx.source),
            "query_images": len(labels[0]),
            "gallery_images": len(labels[1]),
            "gallery_search": search.describe() if search is not None else DENSE,
        },
        chance=chance_levels(*labels),
        rows=rows,
        producers={p.name: _describe(p) for p in producers},
        matrix=_matrix(
            rows, {"cloud": fx.reference_queries, **_unresized(queries, producers)}, own, labels[1], metrics
        ),
        hetero_version=__version__,
    )


def _producer_rows(
    fx: Fixture,
    producers: list[Producer],
    queries: dict[str, np.ndarray],
    latency: dict[str, float],
    metrics: _Scorer,
    ref_ok: np.ndarray,
) -> list[Row]:
    """Each producer's queries in the cloud gallery: metrics, flips against the cloud (and the previous release),
    parity with its siblings, latency; a producer that could not run here is a not-executed row."""
    labels = fx.probe_labels
    scored = {name: metrics(q) for name, q in queries.items()}
    previous = next((p for p in producers if p.kind == "previous" and p.name in queries), None)
    rows: list[Row] = []
    memo: dict[tuple, np.ndarray] = {}
    for p in producers:
        head = {"name": f"{p.name} → cloud", "query": p.name, "gallery": "cloud", "kind": p.kind}
        if p.runtime is None or p.failure:
            rows.append(
                Row(**head, runtime=p.runtime.name if p.runtime is not None else p.manifest.format,
                    status="failed" if p.failure else "not executed", note=p.failure or p.skip_reason,
                    n_query=len(labels), n_gallery=len(fx.gallery_labels))
            )  # fmt: skip
            continue
        fields, ok = scored[p.name]
        extra: dict[str, Any] = {}
        if previous is not None and p.kind == "candidate":
            vs_prev = _flips(scored[previous.name][1], ok, labels)
            extra = {
                "previous_flip_rate": vs_prev["negative_flip_rate"],
                "vs_previous": vs_prev["vs_reference"],
                "previous_flips_by_class": vs_prev["flips_by_class"],
            }
        rows.append(
            Row(
                **head,
                runtime=p.runtime.name,
                cpu=p.runtime.info().get("cpu") or cpu_tag(),
                **fields,
                same_space=p.manifest.space.id == fx.space.id,
                parity_min_cosine=_parity(p, producers, queries, fx, memo),
                latency_ms=None if getattr(p.runtime, "emulated", "") else latency[p.name],
                **_flips(ref_ok, ok, labels),
                **extra,
            )
        )
    return rows


def _self_rows(
    fx: Fixture,
    producers: list[Producer],
    queries: dict[str, np.ndarray],
    own: dict[str, np.ndarray],
    metrics: _Scorer,
) -> list[Row]:
    """X → X: each producer's queries in a gallery it embedded itself (filling `own` for the matrix)."""
    rows = []
    for p in producers:
        if p.name in queries and p.kind not in ("previous", "resize"):
            own[p.name] = p.runtime.embed(p.rule.apply(fx.gallery_images))
            fields = metrics(queries[p.name], own[p.name], fx.gallery_labels)[0]
            rows.append(
                Row(name=f"{p.name} → {p.name}", query=p.name, gallery=p.name, runtime=p.runtime.name, kind="self",
                    **fields)
            )  # fmt: skip
    return rows


def _unresized(queries: dict[str, np.ndarray], producers: list[Producer]) -> dict[str, np.ndarray]:
    """The heatmap's query producers: resize variants are rows of the report, not models of their own."""
    resized = {p.name for p in producers if p.kind == "resize"}
    return {k: v for k, v in queries.items() if k not in resized}


def _cloud_runtime(fx: Fixture) -> str:
    """Where the cloud's rows came from: a fixture file's stored embeddings, or the runtime that computed them here."""
    return "fixture" if fx.stored else str(fx.source.get("cloud_runtime") or "fixture")


def _upgrade_rows(fx: Fixture, ref_ok: np.ndarray, candidates: dict[str, tuple[np.ndarray, str]], metrics: Any):
    """A cloud upgrade's rows: v2's queries in v1's gallery (no backfill: the gated one), v2's in its own gallery
    (after a backfill), and each candidate edge of v1's space in v2's gallery (edges in the field after a backfill);
    each with its negative flips against cloud → cloud (v1/v1)."""
    labels = fx.probe_labels
    v2 = "cloud v2"
    runs = [(v2, _cloud_runtime(fx), fx.upgrade_queries, None), (v2, _cloud_runtime(fx), fx.upgrade_queries, v2)]
    runs += [(name, runtime, q, v2) for name, (q, runtime) in candidates.items()]
    rows = []
    for query, runtime, q, gallery in runs:
        g = None if gallery is None else fx.upgrade_gallery_embeddings
        fields, ok = metrics(q, g, None if g is None else fx.gallery_labels)
        rows.append(
            Row(
                name=f"{query} → {gallery or 'cloud'}",
                query=query,
                gallery=gallery or "cloud",
                runtime=runtime,
                kind="upgrade" if gallery is None else "backfill",
                **fields,
                **_flips(ref_ok, ok, labels),
            )
        )
    return rows


def _flips(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Negative flips of `after` against `before` (top-1 outcomes on the same probes): rate, relative rate (over
    what independent errors would give), the paired counts the gate decides on, and which classes regressed."""
    change = PairedChange.from_outcomes(before, after)
    rate = change.worse / max(change.n, 1)
    independent = float(np.mean(before)) * (1.0 - float(np.mean(after)))
    return {
        "negative_flip_rate": rate,
        "relative_flip_rate": rate / independent if independent > 0 else None,
        "vs_reference": change.to_dict(),
        "flips_by_class": _flips_by_class(before, after, labels),
    }


def _flips_by_class(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Class label -> probes right at top-1 before and wrong after (the negative flips, by class)."""
    classes, counts = np.unique(labels[np.asarray(before, bool) & ~np.asarray(after, bool)], return_counts=True)
    return {str(c): int(n) for c, n in zip(classes.tolist(), counts.tolist(), strict=True)}


def _matrix(rows: list[Row], queries: dict, own: dict, gallery_labels: np.ndarray, metrics: Any) -> dict[str, Any]:
    """R@1 of every query producer against every gallery producer: the cloud column and the diagonal are the rows'
    (cloud column searched as they were); the cross pairs (edge A's queries in edge B's gallery) are ranked here."""
    r1 = {(r.query, r.gallery): r.recall_at_1 for r in rows if r.recall_at_1 is not None}
    galleries = ["cloud", *own]
    for g in own:
        for q, emb in queries.items():
            if (q, g) not in r1:
                r1[q, g] = metrics(emb, own[g], gallery_labels)[0]["recall_at_1"]
    names = [q for q in queries if (q, "cloud") in r1]
    return {"queries": names, "galleries": galleries, "recall_at_1": [[r1[q, g] for g in galleries] for q in names]}


def _parity(
    p: Producer, producers: list[Producer], queries: dict[str, np.ndarray], fx: Fixture, memo: dict[tuple, np.ndarray]
) -> float | None:
    """Min cosine to the same artifact on another runtime, else to the torch checkpoint it was exported from — on
    the same pixels: an artifact taking its compute size is compared with the checkpoint run at that size."""
    src = p.manifest.source.get("checkpoint_sha256")
    for other in producers:
        if (
            other is not p
            and other.kind != "resize"
            and other.name in queries
            and other.manifest.sha256 == p.manifest.sha256
        ):
            return cosine_parity(queries[other.name], queries[p.name])["min_cosine"]
    for other in producers:
        if other.name in queries and other.manifest.kind == "checkpoint" and src and other.manifest.sha256 == src:
            return cosine_parity(_on_pixels_of(other, p, fx, queries, memo), queries[p.name])["min_cosine"]
    return None


def _on_pixels_of(
    other: Producer, p: Producer, fx: Fixture, queries: dict[str, np.ndarray], memo: dict[tuple, np.ndarray]
) -> np.ndarray:
    """`other`'s embeddings of the pixels `p` was fed: its own queries when those are the same pixels."""
    if p.rule == other.rule:
        return queries[other.name]
    if (other.name, p.rule) not in memo:
        memo[other.name, p.rule] = other.runtime.embed(p.probes(fx))
    return memo[other.name, p.rule]


def _describe(p: Producer) -> dict[str, Any]:
    m = p.manifest
    info = p.runtime.info() if p.runtime is not None else {"runtime": m.format, "status": "not executed"}
    if p.failure:
        info = {**info, "status": "failed", "failure": p.failure}
    return {
        **info,
        "kind": p.kind,
        "path": str(getattr(p.runtime, "path", "")),
        "sha256": m.sha256,
        "space_id": m.space.id,
        "model": m.model.get("name"),
        "precision": m.precision,
        "params": m.model.get("params"),
        "macs": m.model.get("macs"),
        "frame": p.rule.to_dict(),
    }
