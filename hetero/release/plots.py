"""Plots of saved results (matplotlib, PNG), each written with the data it shows beside it (CSV).

- accuracy vs latency: every executed producer → cloud row of a compatibility report, R@1 against batch-1 latency,
  with the Pareto front (no other row is both faster and more accurate) marked;
- compatibility heatmap: R@1 of query producer × gallery producer (`Report.matrix`);
- latency distributions: the per-call samples of every `hetero bench` row.
`hetero report` renders them again from saved JSON; `check --markdown` embeds the heatmap.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hetero.io import atomic_write, atomic_write_text


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) no other point beats on both (lower latency and higher accuracy,
    one strictly), ordered by latency."""
    keep = []
    for i, (t, a) in enumerate(points):
        beaten = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for j, (t2, a2) in enumerate(points) if j != i)
        if not beaten:
            keep.append(i)
    return sorted(keep, key=lambda i: (points[i][0], -points[i][1]))


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, png: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """PNG and CSV, each atomically; the figure is closed."""
    png = Path(png)
    with atomic_write(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _figure().close(fig)
    data = png.with_suffix(".csv")
    if rows:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(data, buf.getvalue())
    return {"png": png, "data": data}


def accuracy_latency(report: Any, png: Path) -> tuple[Any, dict[str, Path]]:
    """R@1 vs batch-1 latency of every executed row whose gallery is the cloud (reference excluded: no latency)."""
    plt = _figure()
    rows = [r for r in report.rows if r.gallery == "cloud" and r.latency_ms is not None and r.recall_at_1 is not None]
    pts = [(float(r.latency_ms), float(r.recall_at_1)) for r in rows]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label="producer → cloud", zorder=3)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="C3", label="Pareto front")
        for r, (t, a) in zip(rows, pts, strict=True):
            ax.annotate(r.query, (t, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ref = report.reference
    if ref is not None and ref.recall_at_1 is not None:
        ax.axhline(ref.recall_at_1, color="grey", lw=1, label="cloud → cloud")
    if pts and max(p[0] for p in pts) > 10 * min(p[0] for p in pts) > 0:
        ax.set_xscale("log")  # eager torch next to compiled runtimes: an order of magnitude apart
    ax.set_xlabel("batch-1 latency (ms, median)")
    ax.set_ylabel("R@1 against the cloud gallery")
    ax.set_title(f"Accuracy vs latency — space {report.space.get('id')}")
    ax.legend(loc="lower right", fontsize=8)
    data = [
        {"producer": r.query, "runtime": r.runtime, "latency_ms": t, "recall_at_1": a, "pareto": i in front}
        for i, (r, (t, a)) in enumerate(zip(rows, pts, strict=True))
    ]
    return fig, _save(fig, png, data)


def search_trials(doc: dict[str, Any], png: Path) -> tuple[Any, dict[str, Path]]:
    """Validation edge → cloud R@1 against MACs (share of the cloud's) of every trial of `hetero search`: proxy
    trials, fully trained ones with their Pareto front, the budget and the chosen candidate."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    rows = []
    for stage, style in (("proxy", {"color": "0.6", "marker": "o"}), ("full", {"color": "C0", "marker": "s"})):
        ts = [t for t in doc["trials"] if t["stage"] == stage]
        ax.scatter([t["macs_ratio"] for t in ts], [t["val_recall_at_1"] for t in ts], label=f"{stage} trials", **style)
        rows += [{k: t[k] for k in ("stage", "key", "macs_ratio", "val_recall_at_1", "val_cosine")} for t in ts]
    front = [t for t in doc["trials"] if t["stage"] == "full" and t["key"] in doc["pareto"]]
    front.sort(key=lambda t: t["macs_ratio"])
    ax.plot([t["macs_ratio"] for t in front], [t["val_recall_at_1"] for t in front], "--", color="C3", label="Pareto")
    best = doc["best"]
    ax.scatter([best["macs_ratio"]], [best["val_recall_at_1"]], s=160, facecolors="none", edgecolors="C3", lw=2,
               label="chosen")  # fmt: skip
    ax.axvline(doc["budget_macs"] / doc["cloud_macs"], color="grey", lw=1, label="budget")
    ax.set_xlabel("MACs / cloud MACs")
    ax.set_ylabel("validation edge → cloud R@1")
    ax.set_title("Architecture search (validation identities)")
    ax.legend(loc="best", fontsize=8)
    return fig, _save(fig, png, rows)


def heatmap(matrix: dict[str, Any], png: Path) -> tuple[Any, dict[str, Path]]:
    """R@1 of each query producer (rows) against each gallery producer (columns)."""
    plt = _figure()
    queries, galleries, values = matrix["queries"], matrix["galleries"], matrix["recall_at_1"]
    fig, ax = plt.subplots(figsize=(1.2 * len(galleries) + 2.5, 0.6 * len(queries) + 1.8))
    im = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(galleries)), labels=galleries, rotation=30, ha="right")
    ax.set_yticks(range(len(queries)), labels=queries)
    ax.set_xlabel("gallery embedded by")
    ax.set_ylabel("queries embedded by")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="R@1")
    ax.set_title("Compatibility: R@1 of query producer × gallery producer")
    data = [{"query": q, **{g: values[i][j] for j, g in enumerate(galleries)}} for i, q in enumerate(queries)]
    return fig, _save(fig, png, data)


def latency_distributions(bench: dict[str, Any], png: Path) -> tuple[Any, dict[str, Path]]:
    """Box plots of every executed bench row's per-call latencies (a saved `hetero bench --json` document)."""
    plt = _figure()
    rows = [r for r in bench["rows"] if r.get("samples_ms")]
    labels = [f"{r['name']}@{r['host']}\n{r['runtime']} ×{r['threads']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.5))
    if rows:
        ax.boxplot([r["samples_ms"] for r in rows], tick_labels=labels, whis=(1, 99), showfliers=False)
    ax.set_ylabel("latency per call (ms); whiskers p1–p99")
    ax.set_title(f"Latency distributions (batch {bench.get('settings', {}).get('batch', 1)})")
    ax.tick_params(axis="x", labelsize=7)
    data = [{"row": lab.replace("\n", " "), "sample_ms": v} for lab, r in zip(labels, rows, strict=True)
            for v in r["samples_ms"]]  # fmt: skip
    return fig, _save(fig, png, data)


def render(doc: dict[str, Any], out: Path, stem: str) -> dict[str, dict[str, Path]]:
    """Every plot a saved result supports, into `out` as `<stem>_<plot>.png` (+ .csv)."""
    from hetero.errors import InputError
    from hetero.release.report import REPORT_SCHEMA, Report

    if not isinstance(doc, dict):
        raise InputError(f"{stem}: not a hetero report or bench result (a JSON {type(doc).__name__})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if doc.get("schema") == REPORT_SCHEMA:
        report = Report.from_dict(doc)
        made = {"accuracy_latency": accuracy_latency(report, out / f"{stem}_accuracy_latency.png")[1]}
        if report.matrix:
            made["heatmap"] = heatmap(report.matrix, out / f"{stem}_heatmap.png")[1]
        return made
    if doc.get("schema") == "hetero.bench/1":
        check_bench_doc(doc, stem)
        return {"latency": latency_distributions(doc, out / f"{stem}_latency.png")[1]}
    raise InputError(f"{stem}: not a hetero report or bench result (schema {doc.get('schema')!r})")


def check_bench_doc(doc: dict[str, Any], where: str) -> None:
    """A saved bench result is an input like any other: rows of the right types, latencies and samples finite and
    non-negative — a p50 of "fast" or NaN samples would otherwise be drawn (or skipped) without a word."""
    import math

    from hetero.errors import InputError

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    rows = doc.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{where}: bench rows must be a list of objects")
    if not isinstance(doc.get("settings", {}), dict):
        raise InputError(f"{where}: bench settings must be an object")
    for i, r in enumerate(rows):
        problems = [k for k in ("name", "host", "runtime") if not isinstance(r.get(k), str)]
        if not (isinstance(r.get("threads"), int) and not isinstance(r.get("threads"), bool) and r["threads"] >= 1):
            problems.append("threads")
        samples = r.get("samples_ms")
        if samples is not None and not (isinstance(samples, list) and all(number(v) for v in samples)):
            problems.append("samples_ms")
        for key in ("latency", "bare_latency"):
            lat = r.get(key)
            if lat is not None and not (isinstance(lat, dict) and lat and all(number(v) for v in lat.values())):
                problems.append(key)
        if problems:
            raise InputError(f"{where}: bench row {i} has invalid {', '.join(problems)}")
