"""A 1,000,000 x 128 gallery: exact search against faiss IVF-PQ (plain and re-ranked) and HNSW, through
hetero.release.index.

    .venv/bin/python benchmarks/gallery_index.py            # about 10 minutes on 2 cores, ~3 GB of memory
Writes benchmarks/results/gallery_index.{json,md}.

The gallery is synthetic but shaped like an embedding gallery, not uniform noise: 20,000 identities (50 items
each) in families of 20 look-alike identities, items scattered around their identity's direction, and 1,000
queries drawn fresh from the same identities (never in the gallery), so exact search is not perfect either.
Per index: retrieval R@10 by identity (the target compares it with exact search's), the ANN recalls against the
exact top 10 (1-recall@10: the exact nearest item is returned; 10-recall@10: the share of the exact top 10
returned), batch-1 query latency (median of 300 single queries, all indexes in this one process and thread
setting, so read the ratios), index size and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from hetero.release.index import IndexSpec, build, configure, exact_search, factory_string, measure_recall
from hetero.timing import median_ms


def gallery(n: int, dim: int, per_id: int, queries: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def noise(k: int, scale: float) -> np.ndarray:
        return rng.standard_normal((k, dim), dtype=np.float32) * np.float32(scale / np.sqrt(dim))

    n_ids = n // per_id
    families = unit(rng.standard_normal((max(1, n_ids // 20), dim), dtype=np.float32))  # look-alike identities
    centres = unit(families[np.arange(n_ids) % len(families)] + noise(n_ids, 0.45))

    def draw(labels: np.ndarray) -> np.ndarray:
        return unit(centres[labels] + noise(len(labels), 0.9))

    g_lab = np.repeat(np.arange(len(centres)), per_id)
    q_lab = rng.integers(0, len(centres), queries)
    return draw(g_lab), g_lab, draw(q_lab), q_lab


def recall_at(ids: np.ndarray, g_lab: np.ndarray, q_lab: np.ndarray, k: int) -> float:
    return float((g_lab[ids[:, :k]] == q_lab[:, None]).any(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    import faiss

    x, g_lab, q, q_lab = gallery(args.n, args.dim, 50, 1000, args.seed)
    cos = float((x[:1000] * x[1:1001]).sum(1)[g_lab[:1000] == g_lab[1:1001]].mean())
    truth = exact_search(x, q, 10)
    specs = {
        "exact (Flat)": IndexSpec(kind="exact"),
        "IVF-PQ, nprobe 16": IndexSpec(kind="ivfpq", nprobe=16),
        "IVF-PQ, nprobe 64": IndexSpec(kind="ivfpq", nprobe=64),
        "IVF-PQ + fp16 re-rank x4, nprobe 32": IndexSpec(kind="ivfpq", nprobe=32, rerank=4),
        "HNSW32": IndexSpec(kind="hnsw"),
    }
    rows = []
    exact_r10 = exact_ms = None
    built: dict[str, object] = {}
    for name, spec in specs.items():
        factory = factory_string(len(x), x.shape[1], spec)[1]
        if factory in built:  # same index, other search settings: no rebuild
            r = built[factory]
            configure(r.index, r.kind, spec)
            r.recall = measure_recall(r.index, x, np.random.default_rng(args.seed + 1).choice(len(x), 1000, False))
        else:
            r = built[factory] = build(x, spec, measure_queries=0 if spec.kind == "exact" else 1000)
        _, ids = r.index.search(q, 10)
        ms = median_ms(lambda v, index=r.index: index.search(v[None], 10), q[:300], warmup=5)
        r10 = recall_at(ids, g_lab, q_lab, 10)
        if spec.kind == "exact":
            exact_r10, exact_ms = r10, ms
        rows.append(
            {
                "index": name,
                "factory": r.factory,
                "R@1": recall_at(ids, g_lab, q_lab, 1),
                "R@10": r10,
                "R@10 / exact": r10 / exact_r10,
                "1-recall@10": float(np.mean([truth[i, 0] in ids[i] for i in range(len(q))])),
                "10-recall@10": float(np.mean([len(set(truth[i]) & set(ids[i])) / 10 for i in range(len(q))])),
                "ms/query": ms,
                "speed-up": exact_ms / ms,
                "MB": r.bytes / 1e6,
                "build s": r.build_seconds,
                "gallery 10-recall@10": r.recall.get("recall_10_at_10"),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    doc = {
        "n": args.n, "dim": args.dim, "seed": args.seed, "queries": len(q), "same_id_cosine": round(cos, 3),
        "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gallery_index.json").write_text(json.dumps(doc, indent=2) + "\n")
    cols = list(rows[0])
    fmt = {c: "{:.3f}" for c in ("R@1", "R@10", "R@10 / exact", "1-recall@10", "10-recall@10", "ms/query")}
    fmt |= {"speed-up": "{:.0f}x", "MB": "{:.0f}", "build s": "{:.0f}", "gallery 10-recall@10": "{}"}
    lines = [
        f"# Gallery index: {args.n:,} x {args.dim}, faiss {faiss.__version__}, {doc['threads']} threads",
        "",
        f"Synthetic identities (50 items each, same-identity cosine {cos:.2f}); 1,000 fresh queries; "
        f"peak RSS {doc['peak_rss_mb']:.0f} MB (the float32 gallery alone is {x.nbytes / 1e6:.0f} MB). "
        "Produced by `benchmarks/gallery_index.py` on " + doc["date"] + ".",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(row[c]) for c in cols) + " |")
    (args.out / "gallery_index.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
