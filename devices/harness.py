"""Compatibility harness: query producers × the cloud gallery, on real runtimes.

The cloud unit embeds the gallery (what production already indexed). Each producer — a torch checkpoint or an
exported artifact on its runtime — embeds the queries; we measure retrieval against that gallery, the producer's own
retrieval (X → X, to show a model can be good and still incompatible), and parity to the torch model it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import devices.base as base
from hetero.data import ImageSet
from hetero.errors import InputError, SpaceMismatchError
from hetero.metrics import chance_levels, cosine_parity, retrieval_metrics
from hetero.report import Report, Row


@dataclass
class Producer:
    name: str
    runtime: base.Runtime
    kind: str  # "candidate" (gated, must share the cloud's space) | "control" (ungated baseline)


def open_producer(spec: str, kind: str) -> Producer:
    """`NAME=PATH` or `PATH` (the name is then the unit's directory name)."""
    name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    p = Path(path)
    rt = base.load(p)
    unit = p if p.is_dir() else p.parent
    return Producer(name or unit.name, rt, kind)


def _require_input(rt: base.Runtime, images: np.ndarray, who: str) -> None:
    want = rt.manifest.input.shape(len(images))
    if images.shape[1:] != want[1:]:
        raise InputError(
            f"{who} expects input {list(want[1:])} ({rt.manifest.input.layout}), data is {list(images.shape[1:])}"
        )


def compatibility_report(
    cloud: base.Runtime, producers: list[Producer], query: ImageSet, gallery: ImageSet, dataset: dict
) -> Report:
    space = cloud.manifest.space
    for p in producers:
        other = p.runtime.manifest.space
        if p.kind == "candidate":
            space.require_same(other, f"candidate {p.name!r}")
        elif other.dim != space.dim:
            raise SpaceMismatchError(
                f"control {p.name!r}: dim {other.dim} cannot be compared with space dim {space.dim}"
            )
    for rt, who in [(cloud, "cloud"), *((p.runtime, p.name) for p in producers)]:
        _require_input(rt, query.images, who)

    g_cloud = cloud.embed(gallery.images)
    q_cloud = cloud.embed(query.images)

    def row(name: str, q: np.ndarray, g: np.ndarray, runtime: str, kind: str, **kw) -> Row:
        m = retrieval_metrics(q, query.labels, g, gallery.labels)
        return Row(
            name=name,
            runtime=runtime,
            kind=kind,
            recall_at_1=m["recall_at_1"],
            recall_at_5=m["recall_at_5"],
            map=m["map"],
            n_query=m["n_query"],
            n_gallery=m["n_gallery"],
            **kw,
        )

    rows = [row("cloud → cloud", q_cloud, g_cloud, cloud.name, "reference", query="cloud", gallery="cloud")]
    queries = {p.name: p.runtime.embed(query.images) for p in producers}
    for p in producers:
        q = queries[p.name]
        parity = _parity_reference(p, producers, queries)
        same = p.runtime.manifest.space.id == space.id
        rows.append(
            row(
                f"{p.name} → cloud",
                q,
                g_cloud,
                p.runtime.name,
                p.kind,
                query=p.name,
                gallery="cloud",
                same_space=same,
                parity_min_cosine=parity,
            )
        )
    for p in producers:
        g_self = p.runtime.embed(gallery.images)
        rows.append(
            row(
                f"{p.name} → {p.name}",
                queries[p.name],
                g_self,
                p.runtime.name,
                "self",
                query=p.name,
                gallery=p.name,
                same_space=True,
            )
        )

    return Report(
        space=space.to_dict(),
        dataset={**dataset, "query_images": len(query), "gallery_images": len(gallery)},
        chance=chance_levels(query.labels, gallery.labels),
        rows=rows,
        producers={
            "cloud": _describe(cloud),
            **{p.name: {**_describe(p.runtime), "kind": p.kind} for p in producers},
        },
    )


def _parity_reference(p: Producer, producers: list[Producer], queries: dict[str, np.ndarray]) -> float | None:
    """Min cosine to the torch producer of the checkpoint this artifact was exported from, if it is in the run."""
    src = p.runtime.manifest.source.get("checkpoint_sha256")
    if not src:
        return None
    for ref in producers:
        if ref.runtime.manifest.kind == "checkpoint" and ref.runtime.manifest.sha256 == src:
            return cosine_parity(queries[ref.name], queries[p.name])["min_cosine"]
    return None


def _describe(rt: base.Runtime) -> dict:
    m = rt.manifest
    return {
        **rt.info(),
        "path": str(getattr(rt, "path", "")),
        "sha256": m.sha256,
        "space_id": m.space.id,
        "model": m.model.get("name"),
        "params": m.model.get("params"),
        "macs": m.model.get("macs"),
    }
