"""A cloud known only by its embeddings: the file of (image id, embedding) rows a cloud team hands over.

Often a team adopting hetero cannot run its production cloud model — only its output exists, one embedding per
catalogue image. `import_embeddings` turns such a file (.npz with `ids` and `embeddings`; .safetensors with an
`embeddings` tensor and the ids in its metadata or an integer `ids` tensor; .parquet with `id` and `embedding`
columns) into a cloud unit: `embeddings.npz` + manifest, space id `<name>@<sha256 of the rows>[:12]` — the ids and
embeddings as stored, recomputed at every load like a checkpoint's weights, so rows replaced after the import (and
the manifest's sha256 fixed) no longer claim the space — and the input contract declared by the user (the pixels an
edge of this space takes). Every row is checked when imported: unique ids, finite, unit length (or `normalize`),
one dimension.

It is a cloud in every place a cloud gives *embeddings of known images*: BCT prototypes (class means of the training
images' rows), regression/contrastive targets (the clean image's row: with no model there are no augmented views),
the gallery and the cloud → cloud reference row of `verify` and `fixture create`. Images are matched by id (a folder's
relative path or a manifest's id column; `<dataset>:<index>` for the built-in datasets), and an image without a row
is an error naming it — never a silently smaller set.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hetero.errors import InputError
from hetero.io import atomic_dir, ensure_writable_dir, open_npz, sha256_path
from hetero.manifest import Manifest, load_manifest, write_manifest
from hetero.spaces import EmbeddingSpace, InputSpec

FILE_NAME = "embeddings.npz"
FORMAT = "embeddings"
ROLE = "cloud"
SUFFIXES = (".npz", ".safetensors", ".parquet")
UNIT_TOLERANCE = 1e-3  # |norm - 1| a stored unit vector may show (fp16 storage rounds to ~5e-4)


def is_embedding_file(path: Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def read_embedding_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids as str [N], embeddings float32 [N, D]) from any supported file; unreadable or misshapen -> InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"embedding file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            ids, emb = _read_npz(path)
        elif suffix == ".safetensors":
            ids, emb = _read_safetensors(path)
        elif suffix == ".parquet":
            ids, emb = _read_parquet(path)
        else:
            raise InputError(f"{path}: an embedding file is .npz, .safetensors or .parquet")
    except InputError:
        raise
    except Exception as e:  # zip, safetensors and arrow readers raise their own types for damaged files
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read embeddings ({why})") from None
    ids = np.asarray(ids)
    if ids.dtype.kind not in "UiuO":
        raise InputError(f"{path}: ids must be strings or integers, got {ids.dtype}")
    ids = ids.astype(str)
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise InputError(f"{path}: embeddings must be a float [N, D] array, got {emb.dtype} {list(emb.shape)}")
    if ids.ndim != 1 or len(ids) != len(emb):
        raise InputError(f"{path}: {ids.size} ids for {len(emb)} embedding rows")
    return ids, emb.astype(np.float32)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_npz(path, "embedding file") as z:
        missing = {"ids", "embeddings"} - set(z.files)
        if missing:
            has = ", ".join(z.files) or "none"
            raise InputError(f"{path}: an .npz needs arrays 'ids' and 'embeddings' (has {has})")
        return z["ids"], z["embeddings"]


def _read_safetensors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        keys, meta = set(f.keys()), f.metadata() or {}
        if "embeddings" not in keys:
            raise InputError(f"{path}: a .safetensors file needs an 'embeddings' tensor (has {', '.join(keys)})")
        emb = f.get_tensor("embeddings")
        if "ids" in keys:
            return f.get_tensor("ids"), emb
    if "ids" not in meta:
        raise InputError(f"{path}: ids go in an integer 'ids' tensor or in the metadata as a JSON list under 'ids'")
    ids = json.loads(meta["ids"])
    if not isinstance(ids, list):
        raise InputError(f"{path}: metadata 'ids' must be a JSON list")
    return np.array([str(i) for i in ids]), emb


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if not {"id", "embedding"} <= set(table.column_names):
        raise InputError(f"{path}: a .parquet file needs columns 'id' and 'embedding' (has {table.column_names})")
    col = table.column("embedding").combine_chunks()
    if col.null_count:
        raise InputError(f"{path}: {col.null_count} rows have no embedding")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and lengths.min() != lengths.max():
        raise InputError(f"{path}: embeddings of different lengths ({lengths.min()}..{lengths.max()})")
    flat = col.flatten().to_numpy(zero_copy_only=False)
    dim = int(lengths[0]) if len(lengths) else 0
    return table.column("id").to_numpy(zero_copy_only=False), flat.reshape(len(lengths), dim)


def check_rows(ids: np.ndarray, emb: np.ndarray, where: object, *, normalize: bool) -> np.ndarray:
    """The rows a space can be built on: some, unique ids, finite, unit length (or normalised when declared)."""
    if len(emb) == 0 or emb.shape[1] < 2:
        raise InputError(f"{where}: no embeddings (shape {list(emb.shape)})")
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dup = uniq[counts > 1]
        raise InputError(f"{where}: {len(dup)} ids repeat (first: {str(dup[0])!r}); each image has one embedding")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise InputError(f"{where}: {int(bad.sum())} rows are not finite (first: id {str(ids[np.argmax(bad)])!r})")
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)  # float32 overflows to inf past ~1.8e19 per component
    zero = norms == 0
    if zero.any():
        raise InputError(f"{where}: {int(zero.sum())} rows are zero (first: id {str(ids[np.argmax(zero)])!r})")
    if normalize:
        unit = (emb / norms[:, None]).astype(np.float32)
        lost = np.abs(np.linalg.norm(unit, axis=1) - 1) > UNIT_TOLERANCE  # e.g. rows that underflow in float32
        if lost.any():
            raise InputError(f"{where}: {int(lost.sum())} rows cannot be normalised in float32 (first: id "
                             f"{str(ids[np.argmax(lost)])!r})")  # fmt: skip
        return unit
    off = np.abs(norms - 1) > UNIT_TOLERANCE
    if off.any():
        raise InputError(
            f"{where}: {int(off.sum())} rows are not unit length (norms {norms.min():.3g}..{norms.max():.3g}); "
            "cosine retrieval needs unit vectors: declare normalize (--normalize) to L2-normalise them"
        )
    return emb


def import_embeddings(file: Path, out: Path, spec: InputSpec, *, name: str = "", normalize: bool = False) -> Manifest:
    """Check the user's embedding file and write it as a cloud unit at `out` (atomically); return its manifest."""
    file = Path(file)
    ensure_writable_dir(Path(out).parent)
    ids, emb = read_embedding_file(file)
    emb = check_rows(ids, emb, file, normalize=normalize)
    digest = sha256_path(file)
    name = name or file.stem
    space = EmbeddingSpace(id=f"{name}@{rows_sha256(ids, emb)[:12]}", dim=int(emb.shape[1]), input=spec)
    with atomic_dir(Path(out)) as tmp:
        np.savez(tmp / FILE_NAME, ids=ids, embeddings=emb)
        write_manifest(
            tmp,
            Manifest(
                kind="artifact",
                file=FILE_NAME,
                sha256="",
                format=FORMAT,
                precision="fp32",
                space=space,
                input=spec,
                model={"name": f"embeddings:{name}", "embed_dim": space.dim, "rows": len(ids), "imported": True},
                source={"embedding_file": file.name, "file_sha256": digest},
                extra={"role": ROLE, "normalized_on_import": normalize},
            ),
        )
    return load_manifest(out)[0]


def rows_sha256(ids: np.ndarray, emb: np.ndarray) -> str:
    """sha256 of a table's content — ids and float32 rows, in order — what its space id names."""
    import hashlib

    emb = np.ascontiguousarray(emb, np.float32)
    h = hashlib.sha256(f"hetero.embeddings/1:{list(emb.shape)};".encode())
    h.update("\0".join(np.asarray(ids).astype(str).tolist()).encode() + b";")
    h.update(emb.tobytes())
    return h.hexdigest()


def is_embedding_cloud(m: Manifest) -> bool:
    return m.format == FORMAT and m.extra.get("role") == ROLE


class EmbeddingTable:
    """An imported embedding file, looked up by image id. Also the teacher protocol's third implementation: it has
    embeddings of known images only (`lookup`), no features, no model to embed new views."""

    kind = "embeddings"
    model = None

    def __init__(self, path: Path, loaded: tuple[Manifest, Path] | None = None):
        self.path = Path(path)
        self.manifest, data_file = loaded if loaded is not None else load_manifest(path)  # sha256 verified
        m = self.manifest
        if not is_embedding_cloud(m):
            raise InputError(f"{path}: not an embedding-file cloud unit (hetero cloud import FILE.npz|.parquet)")
        try:
            with open_npz(data_file, "embedding table") as z:
                self.ids, self.embeddings = z["ids"].astype(str), z["embeddings"].astype(np.float32)
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
            raise InputError(f"{data_file}: unreadable embedding table ({type(e).__name__})") from None
        if self.embeddings.ndim != 2 or self.embeddings.shape != (len(self.ids), m.space.dim):
            shape = list(self.embeddings.shape)
            raise InputError(f"{path}: stored rows {shape} do not match the manifest's dim {m.space.dim}")
        if not m.space.id.endswith(f"@{rows_sha256(self.ids, self.embeddings)[:12]}"):
            raise InputError(
                f"{path}: its rows are not the ones space {m.space.id} was imported with (changed after the "
                "import); import the embedding file again — into a new space"
            )
        self._row = {k: i for i, k in enumerate(self.ids.tolist())}
        self.space, self.input, self.sha256 = m.space, m.input, m.sha256
        self.resolution, self.feature_dim, self.embed_dim = None, None, m.space.dim
        self._prototypes = None

    def stored_rows(self, ids: Sequence[str] | np.ndarray | None, what: str = "images") -> np.ndarray:
        return self.lookup(ids, what)

    def require_defines_space(self) -> None:
        """Checked at load: the space id names the rows' hash."""

    def lookup(self, ids: Sequence[str] | np.ndarray | None, what: str = "images") -> np.ndarray:
        """float32 [len(ids), D] rows of these image ids; every one must be in the file."""
        if ids is None:
            raise InputError(
                f"{self.path}: an embedding-file cloud finds {what} by id, and these have none "
                "(data from a folder or manifest, or a built-in dataset)"
            )
        pos = np.fromiter((self._row.get(str(i), -1) for i in ids), dtype=np.int64, count=len(ids))
        missing = pos < 0
        if missing.any():
            first = str(np.asarray(ids)[np.argmax(missing)])
            raise InputError(
                f"{self.path}: {int(missing.sum())} of {len(pos)} {what} have no embedding in the file "
                f"(first: id {first!r}); the file's ids must cover the images"
            )
        return self.embeddings[pos]

    # teacher protocol ---------------------------------------------------------------------------------------------
    def features_and_embedding(self, x):
        raise InputError(
            f"{self.path}: an embedding-file cloud cannot embed new views (no model); it gives each training image's "
            "stored row: use terms on clean images (cloud_views, mix and transfer sets need a cloud model)"
        )

    def prototypes(self):
        return self._prototypes

    def with_prototypes(self, prototypes) -> EmbeddingTable:
        self._prototypes = prototypes
        return self
