"""The user's own images: an image folder or a CSV/JSONL manifest, decoded by the camera rule every artifact records.

Sources:
- a folder `root/<class>/...` (files at any depth under a class folder; `.jpg .jpeg .png .webp .bmp .gif .tif`);
- a manifest `images.csv` / `images.jsonl` with `path` and `label`, optional `role` (query | gallery), `domain`
  (e.g. phone | catalogue) and `id` (default: the path). Relative paths are relative to the manifest's folder.

Every image is turned into model pixels exactly as an app turns a camera frame into them (`camera_rule` in the
manifests): EXIF orientation applied, transparency composited on white, any mode (grayscale, CMYK, palette, 16-bit)
to 8-bit RGB, the shorter side scaled to the input size (bilinear, antialiased) and the centre cropped. Decoding runs
in threads, batch by batch, straight into a memory-mapped cache file keyed by every file's size and mtime and the
input size: the images are never all held in memory, and a second run reads the cache.

An image that cannot be decoded is counted and listed (in the split record every checkpoint keeps), never silently
dropped: past `max_bad_fraction` of the source the run stops with one line naming the first bad files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetero.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ROLES = ("", "query", "gallery")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Record:
    """One image of the source: where it is, its class name, and the optional role, domain and id."""

    path: Path
    label: str
    role: str = ""
    domain: str = ""
    id: str = ""


@dataclass(frozen=True)
class DiskImages:
    """Decoded pixels (a read-only memory map) and, per kept image, its class, role, domain and id."""

    images: np.ndarray  # uint8 [N, S, S, 3], np.memmap
    labels: np.ndarray  # int64 [N] index into class_names
    class_names: tuple[str, ...]
    roles: np.ndarray  # str [N]: "", "query" or "gallery"
    domains: np.ndarray | None  # int64 [N] index into domain_names; None when no record names a domain
    domain_names: tuple[str, ...]
    ids: np.ndarray  # str [N]
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of every image that could not be decoded
    source_images: int  # records found before decoding


def scan(source: Path, *, labelled: bool = True) -> list[Record]:
    """The records of a folder or a manifest file, in a stable order (sorted by path for folders).

    `labelled=False` reads unlabeled images (transfer sets): every image at any depth of a folder, or a manifest
    whose `label` column is optional."""
    source = Path(source)
    if source.is_dir():
        return _scan_folder(source) if labelled else _scan_tree(source, source)
    if not source.exists():
        raise InputError(f"image source not found: {source}")
    if source.suffix.lower() == ".csv":
        return _read_manifest(source, _csv_rows(source), labelled)
    if source.suffix.lower() == ".jsonl":
        return _read_manifest(source, _jsonl_rows(source), labelled)
    kind = "root/<class>/..." if labelled else "of images at any depth"
    raise InputError(f"{source}: an image source is a folder ({kind}) or a .csv / .jsonl manifest")


def _scan_folder(root: Path) -> list[Record]:
    """`root/<class>/**`: each class folder's images at any depth."""
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    records = [r for d in classes for r in _scan_tree(d, root, label=d.name, required=False)]
    if not records:
        raise InputError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return records


def _scan_tree(top: Path, root: Path, label: str = "", required: bool = True) -> list[Record]:
    """The images under `top`, ids relative to `root`: directory symlinks are not followed (a link loop cannot
    recurse), file links are read; hidden files and folders are skipped."""
    records = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                p = Path(dirpath) / name
                records.append(Record(p, label, id=p.relative_to(root).as_posix()))
    if required and not records:
        raise InputError(f"{top}: no images at any depth ({', '.join(IMAGE_SUFFIXES)})")
    return records


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f), start=2)
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: not a readable CSV manifest ({e})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 ({e})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        from hetero.io import parse_json

        row = parse_json(line, f"{path}:{n}")
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: each line is one JSON object with path and label")
        yield n, row


def _read_manifest(path: Path, rows: Iterator[tuple[int, dict]], labelled: bool = True) -> list[Record]:
    records, seen = [], {}
    for n, row in rows:
        get = {k: ("" if v is None else str(v).strip()) for k, v in row.items() if k is not None}
        unknown = sorted(set(get) - {"path", "label", "role", "domain", "id"})
        if unknown:
            raise InputError(f"{path}:{n}: unknown column {unknown[0]!r} (columns: path, label, role, domain, id)")
        if not get.get("path") or (labelled and not get.get("label")):
            raise InputError(f"{path}:{n}: every row needs a path" + (" and a label" if labelled else ""))
        if "\0" in get["path"]:
            raise InputError(f"{path}:{n}: the path holds a NUL byte, which no file name can")
        role = get.get("role", "")
        if role not in ROLES:
            raise InputError(f"{path}:{n}: role must be query, gallery or empty; got {role!r}")
        p = Path(get["path"])
        p = p if p.is_absolute() else path.parent / p
        rid = get.get("id") or get["path"]
        if rid in seen:
            raise InputError(f"{path}:{n}: id {rid!r} repeats line {seen[rid]} (ids must be unique)")
        seen[rid] = n
        records.append(Record(p, get.get("label", ""), role, get.get("domain", ""), rid))
    if not records:
        raise InputError(f"{path}: the manifest lists no images")
    return records


def decode(path: Path, size: int) -> np.ndarray:
    """The camera rule: uint8 RGB [size, size, 3] (module docstring). Raises OSError/ValueError if unreadable."""
    import stat

    from PIL import Image, ImageOps

    if not stat.S_ISREG(os.stat(path).st_mode):  # a named pipe would block the reader forever; a device never ends
        raise ValueError("not a regular file (a named pipe, socket or device)")
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit gray: scale, never clip, to 8 bits
            a = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
            im = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
        if (im.mode == "P" and "transparency" in im.info) or im.mode in ("LA", "PA", "La"):
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "RGBa"):
            canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))  # transparent -> white, as for the emoji set
            im = Image.alpha_composite(canvas, im.convert("RGBA"))
        im = im.convert("RGB")
        w, h = im.size
        if min(w, h) < 1:
            raise ValueError("empty image")
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)  # PIL's bilinear is antialiased
        left, top_ = (nw - size) // 2, (nh - size) // 2
        return np.asarray(im.crop((left, top_, left + size, top_ + size)), dtype=np.uint8)


def try_decode(rec: Record, size: int) -> np.ndarray | str:
    """The decoded pixels, or why they could not be decoded (one line)."""
    try:
        return decode(rec.path, size)
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def records_key(records: list[Record], size: int) -> str:
    """What decoded pixels depend on: every record (path, label, role, domain, id, size, mtime) and the input size."""
    h = hashlib.sha256(f"v{_CACHE_VERSION} size={size}\n".encode())
    for r in records:
        try:
            st = r.path.stat()
            stamp = f"{st.st_size} {st.st_mtime_ns}"
        except OSError as e:
            stamp = f"unreadable {e.errno}"
        h.update(f"{r.path}\t{r.label}\t{r.role}\t{r.domain}\t{r.id}\t{stamp}\n".encode())
    return h.hexdigest()[:24]


def load_images(
    source: Path,
    size: int,
    *,
    max_bad_fraction: float = 0.01,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    batch: int = 256,
) -> DiskImages:
    """Decode `source` (folder or manifest) into a memory-mapped cache and return it with its labels and records."""
    records = scan(source)
    images, kept, skipped = decode_records(
        records, size, Path(source).name, cache_dir=cache_dir, workers=workers, progress=progress, batch=batch
    )
    require_few_bad(source, skipped, len(records), max_bad_fraction)
    if not kept:
        raise InputError(f"{source}: none of the {len(records)} images could be decoded")
    class_names = tuple(sorted({r.label for r in kept}))
    cls = {c: i for i, c in enumerate(class_names)}
    domain_names = tuple(sorted({r.domain for r in kept})) if any(r.domain for r in kept) else ()
    dom = {d: i for i, d in enumerate(domain_names)}
    return DiskImages(
        images=images,
        labels=np.array([cls[r.label] for r in kept], np.int64),
        class_names=class_names,
        roles=np.array([r.role for r in kept]),
        domains=np.array([dom[r.domain] for r in kept], np.int64) if domain_names else None,
        domain_names=domain_names,
        ids=np.array([r.id for r in kept]),
        skipped=skipped,
        source_images=len(records),
    )


def decode_records(
    records: list[Record],
    size: int,
    name: str,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    batch: int = 256,
) -> tuple[np.ndarray, list[Record], tuple[tuple[str, str], ...]]:
    """Decode `records` once into a memory-mapped cache keyed by every record; a second call reads the cache.

    Returns the pixels of the records that decoded (a read-only memory map), those records, and (path, reason) of
    the ones that did not. Threads decode batch by batch straight into the file: the images are never all in memory.
    """
    from tqdm.auto import tqdm

    from hetero.io import atomic_write, atomic_write_text, cache_root, read_json

    base = (cache_dir or cache_root()) / "images" / records_key(records, size)
    pixels_path, meta_path = base.with_suffix(".u8"), base.with_suffix(".json")
    if not (pixels_path.is_file() and meta_path.is_file()):
        pixels_path.parent.mkdir(parents=True, exist_ok=True)
        kept, skipped = [], []
        with atomic_write(pixels_path) as tmp:
            out = np.memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(1, len(records)), size, size, 3))
            with (
                ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool,
                tqdm(total=len(records), desc=f"decode {name}", disable=not progress, unit="img") as bar,
            ):
                for s in range(0, len(records), batch):
                    chunk = records[s : s + batch]
                    for i, res in enumerate(pool.map(lambda r: try_decode(r, size), chunk), start=s):
                        if isinstance(res, str):
                            skipped.append((str(records[i].path), res))
                        else:
                            out[len(kept)] = res
                            kept.append(i)
                    bar.update(len(chunk))
            out.flush()
            del out
            os.truncate(tmp, len(kept) * size * size * 3)  # skipped images leave the tail unused
        atomic_write_text(meta_path, json.dumps({"kept": kept, "skipped": skipped, "records": len(records)}))
    meta = read_json(meta_path, "image cache record")
    kept = [records[i] for i in meta["kept"]]
    if kept:
        images = np.memmap(pixels_path, dtype=np.uint8, mode="r", shape=(len(kept), size, size, 3))
    else:
        images = np.zeros((0, size, size, 3), np.uint8)
    return images, kept, tuple((p, why) for p, why in meta["skipped"])


def require_few_bad(source: Path, skipped: list, total: int, limit: float) -> None:
    if skipped and len(skipped) > limit * total:
        first = "; ".join(f"{Path(p).name} ({why})" for p, why in skipped[:3])
        raise InputError(
            f"{source}: {len(skipped)} of {total} images cannot be decoded ({len(skipped) / total:.1%}, "
            f"max_bad_fraction {limit:g}): {first}"
        )
