"""`hetero embed`: a folder or manifest through any producer (cloud, checkpoint, artifact) into sharded embeddings.

The records of the source (sorted, so every machine sees the same list) are cut into shards of `shard_size`; shard
k always holds records [k * shard_size, (k + 1) * shard_size), so its content does not depend on who computes it or
when. Each shard is written atomically (`shard-00007.npz`: embeddings, ids, the images it could not decode), so a
killed run resumes by skipping the shards that exist and ends with files identical to an uninterrupted run. A plan
file pins what the shards were computed from (the producer's sha256, every record's path/size/mtime, the input
size, the shard size): a different plan in the same directory is refused instead of mixed. Beside each shard its
record (`shard-00007.json`, written after it) holds the plan's hash and the sha256 of the shard's arrays; a shard
is counted only when its record matches and its ids are exactly its records' (less the ones it could not
decode): on resume an edited, truncated, emptied or foreign shard is recomputed, and before the set is completed
or indexed one is refused — never counted.

Scale-out: `workers` processes on this machine take shards from one queue (each with its own runtime); `part=(k, m)`
makes this invocation compute only shards with index % m == k, so m machines sharing the output directory (or
copying their shards together) split the work; any run that finds every shard present writes `embeddings.json`,
the manifest that marks the set complete. With `index`, the complete set is indexed with faiss (hetero.release.index).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetero.data.folder import Record, records_key, scan, try_decode
from hetero.errors import InputError
from hetero.io import atomic_write, atomic_write_json, open_npz, read_json, sha256_path
from hetero.manifest import load_manifest

SCHEMA = "hetero.embeddings/1"
PLAN_NAME, MANIFEST_NAME = "plan.json", "embeddings.json"


@dataclass
class EmbedResult:
    out: Path
    complete: bool
    rows: int  # embedded images in the shards present
    dim: int
    shards_total: int
    shards_computed: int  # by this run
    shards_reused: int  # found from an earlier (killed or other-machine) run
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0  # of the shards this run computed
    space: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] | None = None


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def record_name(k: int) -> str:
    return f"shard-{k:05d}.json"


def plan_key(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def arrays_sha256(emb: np.ndarray, ids: Any, skipped: list[tuple[str, str]]) -> str:
    """sha256 of what a shard holds (embeddings with their shape, ids, the undecodable images), not of its zip bytes."""
    h = hashlib.sha256()
    emb = np.ascontiguousarray(emb, np.float32)
    h.update(f"embeddings:{list(emb.shape)};".encode() + emb.tobytes())
    h.update(b"ids:" + "\0".join(str(i) for i in ids).encode() + b";")
    h.update(b"skipped:" + json.dumps([list(x) for x in skipped]).encode())
    return h.hexdigest()


class ShardEmbedder:
    """Decode (threads) and embed (one runtime) the records of a shard, batch by batch."""

    def __init__(self, producer: Path, threads: int | None, batch_size: int, decode_threads: int):
        from hetero.devices.loader import load

        self.runtime = load(producer, threads)
        spec = self.runtime.manifest.input
        if spec.height != spec.width:
            raise InputError(f"{producer}: input {spec.height}x{spec.width}; the camera rule crops square inputs")
        self.size, self.batch_size = spec.height, batch_size
        self.pool = ThreadPoolExecutor(decode_threads)

    def __call__(self, records: list[Record]) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        rows, ids, skipped = [], [], []
        pending = self.pool.map(lambda r: try_decode(r, self.size), records)
        batch: list[np.ndarray] = []
        for rec, img in zip(records, pending, strict=True):
            if isinstance(img, str):
                skipped.append((str(rec.path), img))
                continue
            batch.append(img)
            ids.append(rec.id)
            if len(batch) == self.batch_size:
                rows.append(self.runtime.embed(np.stack(batch)))
                batch = []
        if batch:
            rows.append(self.runtime.embed(np.stack(batch)))
        dim = self.runtime.manifest.space.dim
        emb = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
        return emb, ids, skipped


def _write_shard(path: Path, emb: np.ndarray, ids: list[str], skipped: list[tuple[str, str]], key: str) -> None:
    """The shard, then its record (plan hash + arrays' sha256): a shard without a matching record never counts."""
    arrays = {
        "embeddings": np.ascontiguousarray(emb, np.float32),
        "ids": np.array(ids, dtype=str),
        "skipped": np.array([json.dumps(s) for s in skipped], dtype=str),
    }
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():  # np.savez stamps the wall clock into the zip: same arrays, other bytes
            with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    record = {"schema": SCHEMA, "plan": key, "rows": len(ids), "sha256": arrays_sha256(emb, ids, skipped)}
    atomic_write_json(path.with_suffix(".json"), record)


def read_shard(path: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    try:
        with open_npz(path, "shard") as d:
            skipped = [tuple(json.loads(s)) for s in d["skipped"]]
            if not all(len(x) == 2 and all(isinstance(v, str) for v in x) for x in skipped):
                raise ValueError("skipped entries are not (path, reason)")
            return d["embeddings"], d["ids"], skipped
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        raise InputError(f"{path}: unreadable shard ({type(e).__name__}); delete it and run again") from None


def verify_shard(
    path: Path, records: list[Record], key: str, dim: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """A shard's arrays, once they are shown to be what this plan computed for `records`: its record names this
    plan and the arrays' sha256, the ids are exactly the records' less the undecodable ones, rows finite, dim
    right. Anything else is an InputError saying what (the caller recomputes or refuses)."""
    emb, ids, bad = read_shard(path)
    rec_path = path.with_suffix(".json")
    record = read_json(rec_path, "shard record") if rec_path.is_file() else None
    if not isinstance(record, dict) or record.get("plan") != key:
        raise InputError(f"{path}: no record of this plan beside it ({rec_path.name}): not a shard this run planned")
    if emb.ndim != 2 or emb.shape[1] != dim or len(ids) != len(emb):
        raise InputError(f"{path}: shard shape {list(emb.shape)} with {len(ids)} ids does not match dim {dim}")
    if record.get("sha256") != arrays_sha256(emb, ids, bad):
        raise InputError(f"{path}: its arrays differ from the sha256 recorded when it was written (edited?)")
    skipped_paths = {p for p, _ in bad}
    want = [r.id for r in records if str(r.path) not in skipped_paths]
    if len(want) + len(bad) != len(records) or ids.tolist() != want:
        raise InputError(f"{path}: its ids are not those of its {len(records)} records (less {len(bad)} undecodable)")
    if not np.isfinite(emb).all():
        raise InputError(f"{path}: {int((~np.isfinite(emb).all(1)).sum())} embeddings are not finite")
    return emb, ids, bad


_WORKER: ShardEmbedder | None = None


def _worker_init(producer: str, threads: int | None, batch_size: int, decode_threads: int) -> None:
    global _WORKER
    _WORKER = ShardEmbedder(Path(producer), threads, batch_size, decode_threads)


def _worker_shard(path: str, records: list[Record], key: str) -> int:
    assert _WORKER is not None
    emb, ids, skipped = _WORKER(records)
    _write_shard(Path(path), emb, ids, skipped, key)
    return len(records)


def embed_source(
    source: Path,
    producer: Path,
    out: Path,
    *,
    batch_size: int = 64,
    shard_size: int = 10_000,
    workers: int = 1,
    part: tuple[int, int] = (0, 1),
    threads: int | None = None,
    max_bad_fraction: float = 0.01,
    index: str = "",
    progress: bool = True,
) -> EmbedResult:
    """Embed `source` with `producer` into shards under `out`; resumable, splittable, optionally indexed."""
    from tqdm.auto import tqdm

    if batch_size < 1 or shard_size < 1 or workers < 1:
        raise InputError(f"batch_size, shard_size and workers must be >= 1; got {batch_size}, {shard_size}, {workers}")
    if not 0.0 <= max_bad_fraction <= 1.0:  # NaN fails this too: a NaN limit would silently drop the rule
        raise InputError(f"max_bad_fraction must be a share between 0 and 1; got {max_bad_fraction}")
    k, m = part
    if not (m >= 1 and 0 <= k < m):
        raise InputError(f"part must be K/M with 0 <= K < M; got {k}/{m}")
    manifest, _ = load_manifest(producer)
    records = scan(source)
    out = Path(out)
    plan = _claim(out, producer, manifest, source, records, shard_size)
    n_shards = (len(records) + shard_size - 1) // shard_size
    key, dim = plan_key(plan), manifest.space.dim

    def chunk(s: int) -> list[Record]:
        return records[s * shard_size : (s + 1) * shard_size]

    def intact(s: int) -> bool:
        """A shard present from an earlier run counts only once verified; anything else is recomputed."""
        if not (out / shard_name(s)).is_file():
            return False
        try:
            verify_shard(out / shard_name(s), chunk(s), key, dim)
        except InputError:
            return False
        return True

    mine = [s for s in range(n_shards) if s % m == k]
    todo = [s for s in mine if not intact(s)]
    reused = len(mine) - len(todo)
    t0 = time.perf_counter()

    bar = tqdm(total=sum(len(chunk(s)) for s in todo), desc="embed", unit="img", disable=not progress)
    _compute(todo, chunk, out, key, producer, workers, threads, batch_size, bar.update)
    bar.close()
    seconds = time.perf_counter() - t0
    computed = sum(len(chunk(s)) for s in todo)
    result = EmbedResult(
        out, False, 0, manifest.space.dim, n_shards, len(todo), reused,
        seconds=round(seconds, 2), images_per_second=round(computed / seconds, 1) if todo and seconds > 0 else 0.0,
        space=manifest.space.to_dict(),
    )  # fmt: skip
    present = [s for s in range(n_shards) if (out / shard_name(s)).is_file()]
    if len(present) < n_shards:
        return result  # other parts still to come: a later run finalises
    return _finalise(result, plan, max_bad_fraction, index, chunk)


def _claim(out: Path, producer: Path, manifest: Any, source: Path, records: list, shard_size: int) -> dict[str, Any]:
    """The run's plan (producer, source, records, shard size) written into `out`, or the one already there checked:
    shards of another run are never mixed into this one."""
    size = manifest.input.height
    plan = {
        "schema": SCHEMA,
        "producer": {"path": str(producer), "sha256": manifest.sha256, "space": manifest.space.id},
        "source": str(source),
        "records": len(records),
        "records_key": records_key(records, size),
        "input_size": size,
        "shard_size": shard_size,
    }
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN_NAME
    if plan_path.is_file():
        old = read_json(plan_path, "embedding plan")
        if old != plan:
            changed = sorted(key for key in plan if old.get(key) != plan[key])
            raise InputError(
                f"{out} holds shards of another run (differs in {', '.join(changed)}); use a new --out or delete it"
            )
    else:
        atomic_write_json(plan_path, plan)
    return plan


def _compute(todo, chunk, out: Path, key: str, producer: Path, workers: int, threads, batch_size: int, done) -> None:
    """Embed and write the shards in `todo`: in this process, or in `workers` spawned ones (each its own runtime)."""
    decode_threads = max(1, min(8, (os.cpu_count() or 1) // workers))
    if todo and workers == 1:
        embedder = ShardEmbedder(Path(producer), threads, batch_size, decode_threads)
        for s in todo:
            emb, ids, skipped = embedder(chunk(s))
            _write_shard(out / shard_name(s), emb, ids, skipped, key)
            done(len(chunk(s)))
    elif todo:
        import multiprocessing as mp

        per = threads or max(1, (os.cpu_count() or 1) // workers)
        init = (str(producer), per, batch_size, decode_threads)
        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=init
        ) as ex:
            futures = [ex.submit(_worker_shard, str(out / shard_name(s)), chunk(s), key) for s in todo]
            for f in futures:
                done(f.result())


def load_embeddings(out: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """All rows of a complete embedding set, in record order, with their ids and the set's manifest."""
    out = Path(out)
    if not (out / MANIFEST_NAME).is_file():
        raise InputError(f"{out}: no {MANIFEST_NAME}; the embedding set is incomplete (run hetero embed again)")
    doc = read_json(out / MANIFEST_NAME, "embedding manifest")
    for s in doc["shards"]:
        if sha256_path(out / s["file"]) != s["sha256"]:
            raise InputError(f"{out / s['file']}: sha256 differs from {MANIFEST_NAME}; the shard was changed")
    return *_rows(out, doc["shards"]), doc


def _finalise(
    result: EmbedResult, plan: dict[str, Any], max_bad_fraction: float, index: str, chunk: Any
) -> EmbedResult:
    out = result.out
    shards, skipped, rows, kept = [], [], 0, []
    h = hashlib.sha256()
    key = plan_key(plan)
    for s in range(result.shards_total):
        path = out / shard_name(s)
        try:
            emb, ids, bad = verify_shard(path, chunk(s), key, result.dim)
        except InputError as e:  # another part's shard (this run did not compute it): refused, never counted
            raise InputError(f"{e}; delete {path.name} and run that part again") from None
        digest = sha256_path(path)
        h.update(arrays_sha256(emb, ids, bad).encode())  # the set's hash is of its content, not its zip bytes
        shards.append({"file": path.name, "rows": len(emb), "sha256": digest})
        skipped += bad
        rows += len(emb)
        if index:
            kept.append(emb)  # read once: the index is built from the same arrays
    result.rows, result.skipped = rows, skipped
    if skipped and len(skipped) > max_bad_fraction * plan["records"]:
        first = "; ".join(f"{Path(p).name} ({why})" for p, why in skipped[:3])
        raise InputError(
            f"{plan['source']}: {len(skipped)} of {plan['records']} images cannot be decoded "
            f"(max_bad_fraction {max_bad_fraction:g}): {first}"
        )
    doc = {**plan, "rows": rows, "dim": result.dim, "space": result.space, "shards": shards,
           "skipped": [list(s) for s in skipped], "sha256": h.hexdigest()}  # fmt: skip
    if index:
        from hetero.release import index as gallery_index

        built = gallery_index.build(np.concatenate(kept), gallery_index.IndexSpec(kind=index))
        gallery_index.save(
            built, out / "index.faiss", {"space": result.space["id"], "embeddings_sha256": doc["sha256"]}
        )
        result.index = built.describe()
        doc["index"] = {"file": "index.faiss", **built.describe()}
    atomic_write_json(out / MANIFEST_NAME, doc)
    result.complete = True
    return result


def _rows(out: Path, shards: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_shard(out / s["file"]) for s in shards]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
