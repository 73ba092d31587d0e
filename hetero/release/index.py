"""Gallery indexes with faiss: exact for small galleries, IVF-PQ (optionally re-ranked) or HNSW for large ones.

Every vector in a space is unit length, so inner product is cosine. An approximate index is only worth what its
recall is, so `build` measures it against exact search on held-back queries (vectors of the gallery itself, so no
extra data is needed) and `save` stores the numbers beside the index: an index file never travels without its
measured recall, the space it indexes and the sha256 of the embeddings it was built from.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetero.errors import InputError

KINDS = ("auto", "exact", "ivfpq", "hnsw")
EXACT_UP_TO = 200_000  # auto: exact search below this many vectors (a brute-force scan is a few ms there)


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "auto"
    nlist: int = 0  # IVF cells; 0 = 4 * sqrt(n), the faiss guideline
    pq_bytes: int = 0  # PQ sub-quantisers per vector (one byte each at 8 bits); 0 = dim / 4
    pq_bits: int = 8  # bits per sub-quantiser (4 trains much faster on small galleries, at lower recall)
    nprobe: int = 32  # IVF cells visited per query
    rerank: int = 0  # > 0: keep fp16 copies and re-rank this many x k PQ candidates exactly (memory for recall)
    hnsw_m: int = 32
    ef_search: int = 128
    train_size: int = 100_000  # vectors used to train IVF/PQ (a seeded sample; at least 64 per IVF cell)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if not 1 <= self.pq_bits <= 16:
            raise InputError(f"pq_bits must be in 1..16; got {self.pq_bits}")
        for name in ("nlist", "pq_bytes", "nprobe", "rerank", "hnsw_m", "ef_search", "train_size"):
            if getattr(self, name) < 0:
                raise InputError(f"index {name} must be >= 0; got {getattr(self, name)}")


@dataclass
class IndexResult:
    index: Any  # faiss.Index
    kind: str
    factory: str
    ntotal: int
    dim: int
    build_seconds: float
    bytes: int
    recall: dict[str, float] = field(default_factory=dict)  # measured against exact search
    params: dict[str, Any] = field(default_factory=dict)
    fallback: str = ""  # why another kind was built than the one asked for (e.g. too few vectors to train IVF-PQ)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        del d["index"]
        return d


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is pinned in the full install
        raise InputError("gallery indexes need faiss: pip install faiss-cpu (hetero[all] pins it)") from None
    return faiss


def _check_vectors(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"{what}: expected a non-empty [N, D] matrix, got shape {list(x.shape)}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(f"{what}: {int(bad.sum())} rows are not finite (first: row {int(np.flatnonzero(bad)[0])})")
    norms = np.linalg.norm(x, axis=1)
    if np.abs(norms - 1).max() > 1e-3:
        raise InputError(f"{what}: rows are not unit length (norms {norms.min():.3g}..{norms.max():.3g})")
    return x


def ivfpq_fallback(n: int, spec: IndexSpec) -> str:
    """Why IVF-PQ cannot be trained on `n` vectors ("" when it can): each sub-quantiser's k-means needs at least
    2^pq_bits points (faiss aborts the training otherwise), and exact search over so few is fast anyway."""
    need = 2**spec.pq_bits
    if n < need:
        return f"IVF-PQ with {spec.pq_bits}-bit codes needs at least {need} vectors to train, there are {n}: exact"
    return ""


def factory_string(n: int, dim: int, spec: IndexSpec) -> tuple[str, str]:
    """(resolved kind, faiss index-factory string) for `n` vectors of `dim`; IVF-PQ on too few vectors is exact."""
    kind = spec.kind if spec.kind != "auto" else ("exact" if n <= EXACT_UP_TO else "ivfpq")
    if kind == "ivfpq" and ivfpq_fallback(n, spec):
        kind = "exact"
    if kind == "exact":
        return kind, "Flat"
    if kind == "hnsw":
        return kind, f"HNSW{spec.hnsw_m},Flat"
    nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per cell
    m = spec.pq_bytes or max(1, dim // 4)
    if dim % m:
        raise InputError(f"pq_bytes {m} must divide the dimension {dim}")
    bits = "" if spec.pq_bits == 8 else f"x{spec.pq_bits}"
    return kind, f"IVF{nlist},PQ{m}{bits}" + (",Refine(SQfp16)" if spec.rerank else "")


def build(x: np.ndarray, spec: IndexSpec = IndexSpec(), *, measure_queries: int = 1000) -> IndexResult:
    """Build an inner-product index over unit rows `x`; approximate kinds are scored against exact search."""
    faiss = _faiss()
    x = _check_vectors(x, "gallery")
    n, dim = x.shape
    kind, factory = factory_string(n, dim, spec)
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(spec.seed)
        want = max(spec.train_size, 64 * getattr(faiss.try_extract_index_ivf(index), "nlist", 0))
        sample = x[np.sort(rng.choice(n, min(n, want), replace=False))]
        index.train(sample)
    index.add(x)
    configure(index, kind, spec)
    seconds = time.perf_counter() - t0
    result = IndexResult(
        index, kind, factory, n, dim, round(seconds, 2), int(faiss.serialize_index(index).nbytes),
        params={"nprobe": spec.nprobe, "rerank": spec.rerank, "ef_search": spec.ef_search},
        fallback=ivfpq_fallback(n, spec) if spec.kind == "ivfpq" else "",
    )  # fmt: skip
    if kind != "exact":
        rng = np.random.default_rng(spec.seed + 1)
        result.recall = measure_recall(index, x, rng.choice(n, min(n, measure_queries), replace=False))
    else:
        result.recall = {"recall_1_at_10": 1.0, "recall_10_at_10": 1.0, "queries": 0}
    return result


SEARCH_DEPTH = 100  # results a verdict's index search returns per query (mAP counts relevant items within them)


class GallerySearch:
    """A verdict's gallery searched through an index, as a deployed search would: `metrics.retrieval_metrics(...,
    search=GallerySearch(gallery, spec))`. `describe()` says which index, its measured recall and the depth, so a
    report always states how its gallery was searched."""

    def __init__(self, gallery: np.ndarray, spec: IndexSpec, depth: int = SEARCH_DEPTH):
        self.built = build(gallery, spec)
        self.depth = min(depth, self.built.ntotal)

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        return self.built.index.search(np.ascontiguousarray(queries, np.float32), self.depth)[1]

    def describe(self) -> dict[str, Any]:
        b = self.built
        return {
            "search": "faiss",
            "kind": b.kind,
            "factory": b.factory,
            "depth": self.depth,
            "recall_vs_exact": b.recall,
            "params": b.params,
            "bytes": b.bytes,
            **({"fallback": b.fallback} if b.fallback else {}),
        }


DENSE = {"search": "dense", "kind": "exact", "depth": None}  # every gallery item ranked (numpy), no index


def configure(index: Any, kind: str, spec: IndexSpec) -> None:
    """Search-time settings (IVF cells probed, re-rank factor, HNSW breadth): change recall and speed, not the data."""
    faiss = _faiss()
    if kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
        if spec.rerank:
            faiss.downcast_index(index).k_factor = float(spec.rerank)
    elif kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = spec.ef_search


def exact_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product (faiss brute force): the reference approximate indexes are scored against."""
    faiss = _faiss()
    _, ids = faiss.knn(
        np.ascontiguousarray(q, np.float32), np.ascontiguousarray(x, np.float32), k, faiss.METRIC_INNER_PRODUCT
    )
    return ids


def measure_recall(index: Any, x: np.ndarray, rows: np.ndarray, k: int = 10) -> dict[str, float]:
    """Gallery rows `rows` as queries, each leaving itself out: 1-recall@k (the exact nearest other item is in the
    index's top k) and k-recall@k (the share of the exact top k the index returns; the stricter one)."""
    q = np.ascontiguousarray(x[rows], np.float32)
    truth = _without_self(exact_search(x, q, k + 1), rows, k)
    got = _without_self(index.search(q, k + 1)[1], rows, k)
    first = float(np.mean([truth[i, 0] in got[i] for i in range(len(q))]))
    overlap = float(np.mean([len(set(truth[i]) & set(got[i])) / k for i in range(len(q))]))
    return {f"recall_1_at_{k}": round(first, 4), f"recall_{k}_at_{k}": round(overlap, 4), "queries": len(q)}


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    return np.stack([[j for j in r if j != own][:k] for r, own in zip(ids, rows, strict=True)])


def save(result: IndexResult, out: Path, meta: dict[str, Any]) -> Path:
    """Write `out` (the faiss file) and `out.json` (kind, parameters, measured recall, `meta`), each atomically."""
    from hetero.io import atomic_write, atomic_write_text

    faiss = _faiss()
    out = Path(out)
    with atomic_write(out) as tmp:
        faiss.write_index(result.index, str(tmp))
    sidecar = out.with_name(out.name + ".json")
    atomic_write_text(sidecar, json.dumps({**result.describe(), **meta}, indent=2) + "\n")
    return sidecar


def load(path: Path, spec: IndexSpec | None = None) -> tuple[Any, dict[str, Any]]:
    """The index and its sidecar record; a missing or unreadable sidecar is refused (recall unknown)."""
    faiss = _faiss()
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file() or not sidecar.is_file():
        raise InputError(f"index {path} or its record {sidecar.name} is missing")
    from hetero.io import read_json

    meta = read_json(sidecar, "index record")
    if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict) or not isinstance(meta.get("kind"), str):
        raise InputError(f"{sidecar}: not an index record (kind and params)")
    try:
        index = faiss.read_index(str(path))
        configure(index, meta["kind"], spec or IndexSpec(**meta["params"]))
    except (RuntimeError, TypeError, ValueError) as e:  # faiss raises RuntimeError for a damaged file
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InputError(f"{path}: unreadable index ({why})") from None
    return index, meta
