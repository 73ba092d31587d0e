"""Unlabeled transfer images from anywhere, and the hygiene that keeps held-out images out of them.

An edge that reproduces its cloud on the images it trained on but not on unseen identities needs more images of the
cloud's function, and the cloud can be asked about any image: so unlabeled images from any source feed the terms that
compare with the cloud's embedding (`[edge] transfer`, a list of `TransferSource`). A source is a registry set
(`TRANSFER_SETS`, e.g. "emoji_unlabeled"), a folder (every image at any depth) or a .csv / .jsonl manifest (a `path`
column; `label` optional and unused). Folder and manifest images are decoded once, by the camera rule, into the
memory-mapped image cache (hetero.data.folder); a `cap` keeps an even sample chosen by a hash of each image's id.

Hygiene, because a benchmark number must never be leakage. A transfer image is dropped when
- its decoded pixels (camera rule, the space's size) equal a held-out image's: an exact duplicate, whatever file
  format or name it came under (sha256 of the pixels), or
- the cloud's embedding of it has cosine above `max_cosine` with the cloud's embedding of a held-out image: a near
  duplicate (the same drawing resized, recoloured or re-rendered).
The counts, per source, go into the checkpoint manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hetero.config import DataConfig, TransferSource
from hetero.errors import InputError


@dataclass(frozen=True)
class TransferImages:
    """Unlabeled images with where each came from."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    ids: np.ndarray  # str [N]: "<source>:<image id>"
    source_of: np.ndarray  # int64 [N]: index into `sources`
    sources: tuple[dict[str, Any], ...]  # per source: source, kind, found, taken (after the cap), undecodable

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, mask: np.ndarray) -> TransferImages:
        from hetero.io import take_rows

        idx = np.flatnonzero(mask)
        return TransferImages(take_rows(self.images, idx), self.ids[idx], self.source_of[idx], self.sources)


def hash_order(ids: Sequence[str]) -> np.ndarray:
    """A fixed order that does not depend on how the ids are listed: by sha256 of each id. Its first k are an even
    sample of every subfolder, unlike the first k of a sorted listing."""
    keys = [hashlib.sha256(str(i).encode()).digest() for i in ids]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), np.int64)


def capped(ids: Sequence[str], cap: int) -> np.ndarray:
    """Indices of the images a cap keeps (all when cap is 0), in their original order."""
    if not cap or cap >= len(ids):
        return np.arange(len(ids))
    return np.sort(hash_order(ids)[:cap])


def load_source(
    src: TransferSource, cfg: DataConfig, heldout: tuple[int, ...], progress: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One source's images (uint8, the space's size), their ids and a record of what was found and taken."""
    from hetero.data.datasets import TRANSFER_SETS

    if src.source in TRANSFER_SETS:
        dataset, loader = TRANSFER_SETS[src.source]
        if dataset != cfg.dataset:
            raise InputError(f"transfer set {src.source!r} belongs with dataset {dataset!r}, not {cfg.dataset!r}")
        images = loader(cfg.image_size, heldout)
        ids = np.char.add(f"{src.source}:", np.arange(len(images)).astype(str))
        take = capped(list(ids), src.cap)
        record = {"kind": "registry", "found": len(images), "taken": len(take), "undecodable": 0}
        return images[take], ids[take], {"source": src.source, **record}
    path = Path(src.source).expanduser()
    if not path.exists():
        raise InputError(
            f"transfer source {src.source!r} is neither a registry set ({', '.join(sorted(TRANSFER_SETS))}) "
            "nor an existing folder or .csv / .jsonl manifest"
        )
    from hetero.data.folder import decode_records, require_few_bad, scan

    records = scan(path, labelled=False)
    take = capped([r.id for r in records], src.cap)
    chosen = [records[i] for i in take]
    images, kept, skipped = decode_records(chosen, cfg.image_size, path.name, progress=progress)
    require_few_bad(path, list(skipped), len(chosen), cfg.max_bad_fraction)  # the rule a training folder follows
    record = {
        "source": str(path),
        "kind": "folder" if path.is_dir() else "manifest",
        "found": len(records),
        "taken": len(chosen),
        "undecodable": len(skipped),
    }
    return images, np.array([f"{path.name}:{r.id}" for r in kept]), record


def load_transfer(
    sources: Sequence[TransferSource], cfg: DataConfig, heldout: tuple[int, ...], progress: bool = True
) -> TransferImages:
    """Every source's images, one after another (each decoded into the image cache once)."""
    parts = [load_source(s, cfg, heldout, progress) for s in sources]
    size = cfg.image_size
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, size, size, 3), np.uint8)
    ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, str)
    source_of = np.concatenate([np.full(len(p[1]), i, np.int64) for i, p in enumerate(parts)]) if parts else ids
    return TransferImages(images, ids, np.asarray(source_of, np.int64), tuple(p[2] for p in parts))


def pixel_hashes(images: np.ndarray, chunk: int = 1024) -> list[bytes]:
    out = []
    for s in range(0, len(images), chunk):
        block = np.ascontiguousarray(images[s : s + chunk])
        out.extend(hashlib.sha256(row.tobytes()).digest() for row in block)
    return out


def drop_heldout_duplicates(
    transfer: TransferImages,
    heldout_images: np.ndarray,
    embed: Callable[[np.ndarray], np.ndarray],
    max_cosine: float,
) -> tuple[TransferImages, dict[str, Any]]:
    """Drop exact (equal pixels) and near (cloud cosine > max_cosine) duplicates of held-out images.

    `embed` maps uint8 images to the cloud's unit embeddings of them (clean views). Returns the kept images and the
    record the checkpoint manifest stores: the threshold, the counts per source, and how close the kept images come
    (the largest cosine to any held-out image), so a reader can judge the threshold."""
    import faiss

    if len(transfer) == 0:
        return transfer, {"max_cosine": max_cosine, "heldout_images": len(heldout_images), "sources": []}
    heldout_hashes = set(pixel_hashes(heldout_images))
    exact = np.array([h in heldout_hashes for h in pixel_hashes(transfer.images)], bool)
    t = np.ascontiguousarray(embed(transfer.images), np.float32)
    h = np.ascontiguousarray(embed(heldout_images), np.float32)
    nearest = faiss.knn(t, h, 1, faiss.METRIC_INNER_PRODUCT)[0][:, 0]
    near = (nearest > max_cosine) & ~exact
    keep = ~(exact | near)
    sources = []
    for i, rec in enumerate(transfer.sources):
        mine = transfer.source_of == i
        sources.append(
            {
                **rec,
                "exact_duplicates": int((exact & mine).sum()),
                "near_duplicates": int((near & mine).sum()),
                "kept": int((keep & mine).sum()),
            }
        )
    kept_nearest = nearest[keep]
    record = {
        "max_cosine": max_cosine,
        "heldout_images": len(heldout_images),
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": int(near.sum()),
        "kept": int(keep.sum()),
        "kept_nearest_cosine": {
            "median": round(float(np.median(kept_nearest)), 4) if keep.any() else None,
            "p99": round(float(np.quantile(kept_nearest, 0.99)), 4) if keep.any() else None,
            "max": round(float(kept_nearest.max()), 4) if keep.any() else None,
        },
        "sources": sources,
    }
    return transfer.keep(keep), record


def transfer_line(record: dict[str, Any]) -> str:
    """One line for the training log: what each source gave and what hygiene dropped."""
    parts = [f"{Path(s['source']).name} {s['kept']:,}/{s['found']:,}" for s in record.get("sources", [])]
    return (
        f"transfer: {record.get('kept', 0):,} unlabeled images ({', '.join(parts) or 'no source'}); dropped as "
        f"held-out duplicates: {record.get('exact_duplicates', 0)} exact, {record.get('near_duplicates', 0)} near "
        f"(cloud cosine > {record.get('max_cosine')})"
    )
