"""Datasets as registry entries, and the open-set split used for retrieval evaluation.

Images are kept as what a device sees: uint8 RGB, NHWC. Models normalise inside the graph, so training, export and
on-device inference share one preprocessing path. Retrieval is evaluated open-set, as in the metric-learning
literature: held-out classes, never seen in training, are split into queries and a gallery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hetero.config import DataConfig
from hetero.errors import InputError


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx])


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

    def describe(self) -> dict:
        return {
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


@register_dataset("digits")
def load_digits(image_size: int) -> ImageSet:
    """sklearn's 1,797 8x8 digits (values 0..16), shipped inside scikit-learn."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    return ImageSet(_to_rgb_uint8(d.images / 16.0, image_size), d.target.astype(np.int64))


def load_dataset(name: str, image_size: int) -> ImageSet:
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r} (available: {', '.join(sorted(DATASETS))})")
    if image_size < 8:
        raise InputError(f"image_size must be >= 8, got {image_size}")
    return DATASETS[name](image_size)


def open_set_split(data: ImageSet, cfg: DataConfig) -> OpenSetSplit:
    """Hold out `cfg.heldout_classes` whole classes (seeded), then split each into query and gallery."""
    classes = np.unique(data.labels)
    if not 1 <= cfg.heldout_classes < len(classes):
        raise InputError(
            f"heldout_classes must be in 1..{len(classes) - 1} for {cfg.dataset}, got {cfg.heldout_classes}"
        )
    if not 0.0 < cfg.query_fraction < 1.0:
        raise InputError(f"query_fraction must be in (0, 1), got {cfg.query_fraction}")
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(classes)
    heldout = np.sort(perm[: cfg.heldout_classes])
    train_classes = np.sort(perm[cfg.heldout_classes :])

    train_idx = np.flatnonzero(np.isin(data.labels, train_classes))
    remap = {int(c): i for i, c in enumerate(train_classes)}
    train = ImageSet(data.images[train_idx], np.array([remap[int(y)] for y in data.labels[train_idx]], np.int64))

    q_idx, g_idx = [], []
    for c in heldout:
        idx = rng.permutation(np.flatnonzero(data.labels == c))
        n_q = max(1, round(len(idx) * cfg.query_fraction))
        q_idx.append(idx[:n_q])
        g_idx.append(idx[n_q:])
    return OpenSetSplit(
        train=train,
        query=data.subset(np.sort(np.concatenate(q_idx))),
        gallery=data.subset(np.sort(np.concatenate(g_idx))),
        train_classes=tuple(int(c) for c in train_classes),
        heldout_classes=tuple(int(c) for c in heldout),
    )


def load_split(cfg: DataConfig) -> OpenSetSplit:
    return open_set_split(load_dataset(cfg.dataset, cfg.image_size), cfg)
