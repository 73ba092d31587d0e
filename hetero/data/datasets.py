"""Datasets as registry entries, and the open-set split used for retrieval evaluation.

Images are kept as what a device sees: uint8 RGB, NHWC. Models normalise inside the graph, so training, export and
on-device inference share one preprocessing path. Retrieval is evaluated open-set, as in the metric-learning
literature: held-out classes, never seen in training, are split into queries and a gallery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hetero.config import DataConfig
from hetero.errors import InputError
from hetero.io import take_rows


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # int64 [N]
    styles: np.ndarray | None = None  # int64 [N] index into style_names (cross-style sets such as emoji)
    style_names: tuple[str, ...] = ()
    ids: np.ndarray | None = None  # str [N] the image ids of a folder or manifest (key embedding files)
    roles: np.ndarray | None = None  # str [N] "", "query" or "gallery" as a manifest declared them
    class_names: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of source images that could not be decoded

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ImageSet:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return ImageSet(
            take_rows(self.images, idx),
            self.labels[idx],
            pick(self.styles),
            self.style_names,
            pick(self.ids),
            pick(self.roles),
            self.class_names,
        )


@dataclass(frozen=True)
class OpenSetSplit:
    train: ImageSet  # labels remapped to 0..num_train_classes-1
    query: ImageSet  # original class ids
    gallery: ImageSet
    train_classes: tuple[int, ...]
    heldout_classes: tuple[int, ...]

    @property
    def num_train_classes(self) -> int:
        return len(self.train_classes)

    skipped: tuple[tuple[str, str], ...] = ()  # source images that could not be decoded

    def heldout_names(self) -> list[str]:
        """The held-out identities by name where the data has names (a folder's class directories), else by id."""
        names = self.query.class_names or self.gallery.class_names
        return [str(names[c]) if 0 <= c < len(names) else str(c) for c in self.heldout_classes]

    def to_text(self) -> str:
        """One line a user reads before training: which identities the gate measures and no model may train on."""
        held = self.heldout_names()
        shown = ", ".join(held[:12]) + (f", … ({len(held) - 12} more)" if len(held) > 12 else "")
        return (
            f"split: {len(self.train_classes)} training identities ({len(self.train)} images); {len(held)} held out "
            f"for retrieval, never trained on: {shown} ({len(self.query)} query / {len(self.gallery)} gallery images)"
        )

    def describe(self) -> dict:
        skipped = {"skipped_images": len(self.skipped), "skipped": [list(s) for s in self.skipped[:20]]}
        return {
            **(skipped if self.skipped else {}),
            "train_images": len(self.train),
            "train_classes": list(self.train_classes),
            "heldout_classes": list(self.heldout_classes),
            "query_images": len(self.query),
            "gallery_images": len(self.gallery),
        }


DATASETS: dict[str, Callable[[int], ImageSet]] = {}


def register_dataset(name: str):
    def deco(fn: Callable[[int], ImageSet]) -> Callable[[int], ImageSet]:
        DATASETS[name] = fn
        return fn

    return deco


def _to_rgb_uint8(gray: np.ndarray, size: int) -> np.ndarray:
    """[N, h, w] floats in [0, 1] -> uint8 [N, size, size, 3], bilinear upscaling (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(gray.astype(np.float32))[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    u8 = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[:, 0].numpy()
    return np.repeat(u8[..., None], 3, axis=-1)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


@register_dataset("fashion_mnist")
def load_fashion_mnist(image_size: int) -> ImageSet:
    """Fashion-MNIST (70,000 28x28 clothing images, 10 classes) from the Debian package, train + test files."""
    import gzip

    root = FASHION_MNIST_DIR
    files = [root / f"{p}-images-idx3-ubyte.gz" for p in ("train", "t10k")]
    label_files = [root / f"{p}-labels-idx1-ubyte.gz" for p in ("train", "t10k")]
    missing = [f for f in files + label_files if not f.is_file()]
    if missing:
        raise InputError(
            f"Fashion-MNIST not found ({missing[0]}): install it with `sudo apt-get install dataset-fashion-mnist`"
        )

    def read(path: Path, offset: int) -> np.ndarray:
        with gzip.open(path) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    try:
        images = np.concatenate([read(f, 16).reshape(-1, 28, 28) for f in files])
        labels = np.concatenate([read(f, 8) for f in label_files])
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"Fashion-MNIST under {root} is damaged ({e}); reinstall dataset-fashion-mnist") from None
    if len(images) != len(labels):
        raise InputError(f"Fashion-MNIST under {root}: {len(images)} images but {len(labels)} labels")
    return ImageSet(_to_rgb_uint8(images / 255.0, image_size), labels.astype(np.int64))


@register_dataset("emoji")
def load_emoji(image_size: int) -> ImageSet:
    """1,410 emoji identities x 3 designer styles (Twemoji, OpenMoji, Noto), built from wheels into the cache."""
    from hetero.data import emoji
    from hetero.io import cache_root

    d = emoji.load(image_size, cache_root())
    return ImageSet(d["images"], d["labels"], d["styles"], emoji.STYLES)


@register_dataset("digits")
def load_digits(image_size: int) -> ImageSet:
    """sklearn's 1,797 8x8 digits (values 0..16), shipped inside scikit-learn."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    return ImageSet(_to_rgb_uint8(d.images / 16.0, image_size), d.target.astype(np.int64))


# Unlabeled images that may join an edge's training set (regression/contrastive/distillation terms read them):
# name -> (the dataset they belong with, loader(image_size, held-out class ids) -> uint8 images).
TRANSFER_SETS: dict[str, tuple[str, Callable[[int, tuple[int, ...]], np.ndarray]]] = {}


def emoji_unlabeled(image_size: int, heldout: tuple[int, ...]) -> np.ndarray:
    """Twemoji/OpenMoji drawings outside the 1,410 identities that share no codepoint with a held-out identity."""
    from hetero.data import emoji
    from hetero.io import cache_root

    names = emoji.load(image_size, cache_root())["names"]
    return emoji.load_unlabeled(image_size, cache_root(), exclude={str(names[c]) for c in heldout})


TRANSFER_SETS["emoji_unlabeled"] = ("emoji", emoji_unlabeled)


def with_unlabeled(train: ImageSet, images: np.ndarray, ids: np.ndarray | None = None) -> ImageSet:
    """Append unlabeled images (label -1: no class term reads them)."""
    labels = np.concatenate([train.labels, np.full(len(images), -1, np.int64)])
    both = None if train.ids is None or ids is None else np.concatenate([train.ids.astype(str), ids.astype(str)])
    return ImageSet(np.concatenate([train.images, images]), labels, ids=both)


def load_dataset(name: str, image_size: int, cfg: DataConfig | None = None) -> ImageSet:
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r} (available: {', '.join(sorted(DATASETS))})")
    if image_size < 8:
        raise InputError(f"image_size must be >= 8, got {image_size}")
    if name == "folder":
        return load_folder(cfg or DataConfig(dataset="folder", image_size=image_size))
    data = DATASETS[name](image_size)
    if data.ids is None:  # stable ids for the built-in sets, so an embedding file can key their images too
        data = replace(data, ids=np.char.add(f"{name}:", np.arange(len(data)).astype(str)))
    return data


@register_dataset("folder")
def load_folder(cfg: DataConfig) -> ImageSet:
    """Your images: data.path is a folder root/<class>/... or a .csv/.jsonl manifest (path, label, role, domain, id)."""
    from hetero.data.folder import load_images

    if not cfg.path:
        raise InputError('dataset "folder" needs data.path: a folder root/<class>/... or a .csv/.jsonl manifest')
    d = load_images(Path(cfg.path), cfg.image_size, max_bad_fraction=cfg.max_bad_fraction)
    return ImageSet(d.images, d.labels, d.domains, d.domain_names, d.ids, d.roles, d.class_names, skipped=d.skipped)


def open_set_split(data: ImageSet, cfg: DataConfig) -> OpenSetSplit:
    """Hold out `cfg.heldout_classes` whole classes (seeded), then split each into query and gallery."""
    classes = np.unique(data.labels)
    if not 1 <= cfg.heldout_classes < len(classes):
        raise InputError(
            f"heldout_classes must be in 1..{len(classes) - 1} for {cfg.dataset}, got {cfg.heldout_classes}"
        )
    if not 0.0 < cfg.query_fraction < 1.0:
        raise InputError(f"query_fraction must be in (0, 1), got {cfg.query_fraction}")
    # Only a class that can give a query and a gallery image may be held out; the others always train.
    pairable = _pairable(data, classes, cfg)
    if len(pairable) < cfg.heldout_classes:
        raise InputError(
            f"{cfg.dataset}: only {len(pairable)} of {len(classes)} classes can give both a query and a gallery "
            f"image ({_pair_rule(cfg)}); heldout_classes is {cfg.heldout_classes}"
        )
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(pairable)
    heldout = np.sort(perm[: cfg.heldout_classes])
    train_classes = np.sort(np.setdiff1d(classes, heldout))
    if cfg.train_class_share < 1.0:  # its own generator: held-out classes, queries and gallery stay the same
        keep = max(2, round(len(train_classes) * cfg.train_class_share))
        train_classes = np.sort(np.random.default_rng([cfg.seed, 1]).permutation(train_classes)[:keep])

    train_idx = np.flatnonzero(np.isin(data.labels, train_classes))
    remap = {int(c): i for i, c in enumerate(train_classes)}
    train = ImageSet(
        take_rows(data.images, train_idx),
        np.array([remap[int(y)] for y in data.labels[train_idx]], np.int64),
        ids=None if data.ids is None else data.ids[train_idx],
    )

    kept = (tuple(int(c) for c in train_classes), tuple(int(c) for c in heldout))
    if cfg.query_style or cfg.gallery_style:
        query, gallery = _style_split(data, heldout, cfg)
        return OpenSetSplit(train, query, gallery, *kept, skipped=data.skipped)
    q_idx, g_idx = [], []
    for c in heldout:
        idx = rng.permutation(np.flatnonzero(data.labels == c))
        if data.roles is not None and (data.roles[idx] != "").any():  # the manifest's roles first, then by fraction
            r = data.roles[idx]
            free, n_declared_q = idx[r == ""], int((r == "query").sum())
            n_q = max(0 if n_declared_q else 1, round(len(idx) * cfg.query_fraction) - n_declared_q)
            n_q = min(n_q, len(free) - (0 if (r == "gallery").any() else 1))  # leave the gallery an image
            q = np.concatenate([idx[r == "query"], free[:n_q]])
            g = np.concatenate([idx[r == "gallery"], free[n_q:]])
        else:
            n_q = max(1, round(len(idx) * cfg.query_fraction))
            q, g = idx[:n_q], idx[n_q:]
        q_idx.append(q)
        g_idx.append(g)
    return OpenSetSplit(
        train=train,
        query=data.subset(np.sort(np.concatenate(q_idx))),
        gallery=data.subset(np.sort(np.concatenate(g_idx))),
        train_classes=kept[0],
        heldout_classes=kept[1],
        skipped=data.skipped,
    )


def _pair_rule(cfg: DataConfig) -> str:
    if cfg.query_style or cfg.gallery_style:
        return f"an image in {cfg.query_style!r} and one in {cfg.gallery_style!r}"
    return "at least two images; a manifest's roles count"


def _pairable(data: ImageSet, classes: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Classes that can be held out: two images at least (or, for a style split, one in each of the two styles;
    for manifest roles, a query and a gallery image once the free ones are shared out)."""
    if (cfg.query_style or cfg.gallery_style) and data.styles is not None:
        names = data.style_names
        if cfg.query_style in names and cfg.gallery_style in names:
            qs, gs = names.index(cfg.query_style), names.index(cfg.gallery_style)
            has_q = set(data.labels[data.styles == qs].tolist())
            has_g = set(data.labels[data.styles == gs].tolist())
            return np.array([c for c in classes if c in has_q and c in has_g], dtype=classes.dtype)
        return classes  # a bad style name is reported by _style_split
    counts = np.bincount(data.labels, minlength=int(classes.max()) + 1)
    ok = counts[classes] >= 2
    if data.roles is not None:
        for i, c in enumerate(classes):
            r = data.roles[data.labels == c]
            free = int((r == "").sum())
            ok[i] &= bool((r == "query").any() or free) and bool((r == "gallery").any() or free)
    return classes[ok]


def _style_split(data: ImageSet, heldout: np.ndarray, cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """Cross-style retrieval: held-out identities drawn in one style query the same identities in another."""
    if data.styles is None:
        raise InputError(f"dataset {cfg.dataset!r} has no styles; leave query_style/gallery_style empty")
    pos = {}
    for key in ("query_style", "gallery_style"):
        name = getattr(cfg, key)
        if name not in data.style_names:
            raise InputError(f"{key} {name!r} is not a style of {cfg.dataset} (styles: {', '.join(data.style_names)})")
        pos[key] = data.style_names.index(name)
    if pos["query_style"] == pos["gallery_style"]:
        raise InputError("query_style and gallery_style must differ (the same drawing would trivially match)")
    held = np.isin(data.labels, heldout)
    query = data.subset(np.flatnonzero(held & (data.styles == pos["query_style"])))
    gallery = data.subset(np.flatnonzero(held & (data.styles == pos["gallery_style"])))
    return query, gallery


def load_split(cfg: DataConfig) -> OpenSetSplit:
    return open_set_split(load_dataset(cfg.dataset, cfg.image_size, cfg), cfg)
