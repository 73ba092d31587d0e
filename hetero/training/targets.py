"""What the frozen cloud model says about each training view: computed once and cached, or (for comparison) online.

The cloud model never changes while an edge model trains, so its embeddings of the training set are a pure function
of (cloud weights, images, augmentation). We draw `views` augmentations per image up front (view 0 is the clean
image), embed every view with the cloud model once, and store the result on disk keyed by all of those inputs. Edge
training then samples one of the cached views per image per step and applies *the same* geometric transform to the
edge input, so feature regression and contrastive terms compare the two models on identical views.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hetero.data.datasets import ImageSet
from hetero.errors import InputError
from hetero.io import atomic_write, cache_root
from hetero.models.registry import Preprocess
from hetero.spaces import InputSpec
from hetero.training.teacher import Teacher


def sample_affine(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 3] uniform in [-1, 1]: (scale, shift x, shift y) of a small label-preserving affine transform."""
    return torch.rand(n, 3, generator=generator) * 2 - 1


def apply_affine(
    x: torch.Tensor,
    u: torch.Tensor,
    max_shift: float = 0.1,
    max_scale: float = 0.1,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resolution-independent (normalised coordinates), so the cloud and a low-res edge model see the same view.

    `size`: sample the view straight at this output size — the resize to a model's compute resolution and the
    transform in one bilinear pass (with u = 0 it is exactly `F.interpolate(..., "bilinear", align_corners=False)`:
    both sample source pixel (i + 0.5) * in / out - 0.5)."""
    s = 1 + max_scale * u[:, 0]
    theta = torch.zeros(len(u), 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = max_shift * u[:, 1:]
    out = [x.shape[0], x.shape[1], *(size or x.shape[2:])]
    grid = F.affine_grid(theta, out, align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class Views:
    """Augmented views of some training images: an affine transform each, optionally blended with a partner image.

    A blend (mixup, lambda ~ U(0, 1)) is a new point on which the edge can be taught to match the cloud: with a few
    thousand training images, matching the cloud only on them (and their small shifts) leaves it unmatched on
    held-out identities; blends fill the space between (function matching, Beyer et al., CVPR 2022).
    """

    affine: torch.Tensor  # [n, 3]
    partner: torch.Tensor  # [n] int64 index of the blended image; lam == 1 means no blend
    lam: torch.Tensor  # [n] weight of the image itself

    @property
    def blended(self) -> bool:
        return bool((self.lam < 1).any())

    def __getitem__(self, sel: slice | torch.Tensor) -> Views:
        return Views(self.affine[sel], self.partner[sel], self.lam[sel])


def sample_views(idx: torch.Tensor, pool: int, gen: torch.Generator, *, augment: bool, mix: float) -> Views:
    """Fresh views of images `idx`; a `mix` share of them blends with a uniformly drawn training image."""
    n = len(idx)
    affine = sample_affine(n, gen) if augment else torch.zeros(n, 3)
    partner, lam = idx.clone(), torch.ones(n)
    if augment and mix > 0:
        blend = torch.rand(n, generator=gen) < mix
        partner = torch.where(blend, torch.randint(pool, (n,), generator=gen), idx)
        lam = torch.where(blend, torch.rand(n, generator=gen), lam)
    return Views(affine, partner, lam)


def render(pre: Preprocess, pixels: torch.Tensor, idx: torch.Tensor, views: Views) -> torch.Tensor:
    """The model input for `views` of images `idx` of `pixels` (uint8 NHWC): blend, then the affine transform.

    The one place views become tensors, for the cloud cache, the online cloud and the model being trained alike.
    Blends happen at the input size (bilinear resizing is linear: the same as blending resized images, one resize
    fewer), and an augmented view is sampled straight at the compute resolution; a clean view takes the deployed
    graph's resize exactly.
    """
    x = pre.normalise(pixels[idx])
    if views.blended:
        lam = views.lam.view(-1, 1, 1, 1)
        x = lam * x + (1 - lam) * pre.normalise(pixels[views.partner])
    if bool(views.affine.any()):  # channels-last like the clean path (NHWC pixels, permuted): the convolutions
        # take their fast path only in that layout — measured 2x slower steps on a contiguous NCHW batch
        return apply_affine(x, views.affine, size=pre.resize_to).contiguous(memory_format=torch.channels_last)
    return pre.resize(x)


class CloudTargets:
    """Cached cloud embeddings (and optionally pooled features) for `views` augmented views of every training image."""

    def __init__(
        self,
        affine: torch.Tensor,
        partner: torch.Tensor,
        lam: torch.Tensor,
        embeddings: torch.Tensor,
        features: torch.Tensor | None = None,
    ):
        self.affine, self.partner, self.lam = affine, partner, lam  # [V, N, 3], [V, N], [V, N]
        self.embeddings = embeddings  # [V, N, D]
        self.features = features  # [V, N, F] or None

    @classmethod
    def clean(cls, embeddings: torch.Tensor) -> CloudTargets:
        """One view per image, the image itself: targets from stored embeddings (a cloud known only by its file)."""
        n = len(embeddings)
        return cls(torch.zeros(1, n, 3), torch.arange(n)[None], torch.ones(1, n), embeddings[None])

    @property
    def views(self) -> int:
        return self.affine.shape[0]

    def for_batch(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[Views, torch.Tensor, torch.Tensor | None]:
        """Pick one cached view per image: the view (to render for the edge), the cloud's embedding of it and
        its features (None unless cached)."""
        v = torch.randint(self.views, (len(idx),), generator=gen)
        feats = None if self.features is None else self.features[v, idx]
        return Views(self.affine[v, idx], self.partner[v, idx], self.lam[v, idx]), self.embeddings[v, idx], feats


class OnlineTargets:
    """The uncached alternative: a fresh view and a cloud forward pass every step (what caching avoids)."""

    def __init__(
        self,
        teacher: Teacher,
        spec: InputSpec,
        pixels: torch.Tensor,
        augment: bool,
        mix: float,
        features: bool = False,
    ):
        self.teacher = teacher
        self.pre = Preprocess(spec, teacher.resolution)
        self.pixels, self.augment, self.mix, self.features = pixels, augment, mix, features

    def for_batch(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[Views, torch.Tensor, torch.Tensor | None]:
        views = sample_views(idx, len(self.pixels), gen, augment=self.augment, mix=self.mix)
        with torch.no_grad():
            feats, emb = self.teacher.features_and_embedding(render(self.pre, self.pixels, idx, views))
        return views, emb, feats if self.features else None


def _fingerprint(cloud_sha256: str, train: ImageSet, spec: InputSpec, settings: dict) -> str:
    """Everything the cached numbers depend on: cloud weights, images, labels, input spec and view settings."""
    h = hashlib.sha256()
    for s in range(0, len(train.images), 1024):  # in chunks: the images may be a memory-mapped folder
        h.update(np.ascontiguousarray(train.images[s : s + 1024]).tobytes())
    h.update(np.ascontiguousarray(train.labels).tobytes())
    meta = {"cloud": cloud_sha256, "spec": spec.to_dict(), **settings, "v": 2}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:24]


def cloud_targets(
    teacher: Teacher,
    cloud_sha256: str,
    train: ImageSet,
    spec: InputSpec,
    *,
    views: int,
    seed: int,
    augment: bool,
    mix: float = 0.0,
    features: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    batch_size: int = 32,  # measured: 96-px Lite2 embeds 2,115 images in 16 s at 32, 25 s at 64, 28 s at 128
) -> tuple[CloudTargets, dict]:
    """Load or build the cache; returns the targets and a small record (path, hit, seconds) for the manifest.

    `features`: also keep the cloud's pooled features per view (for `regression_features`; F floats per view,
    10x the embeddings for the Lite family, so only when a term reads them).
    """
    import time

    views = views if augment else 1
    n = len(train)
    settings = {"views": views, "seed": seed, "augment": augment, "mix": mix, "features": features}
    key = _fingerprint(cloud_sha256, train, spec, settings)
    path = (cache_dir or cache_root()) / "cloud-targets" / f"{key}.safetensors"
    t0 = time.perf_counter()
    if path.is_file():
        try:
            d = load_file(str(path))
            if d["embeddings"].shape[:2] == (views, n):
                feats = d["features"] if features else None  # missing from a damaged entry: KeyError, rebuilt
                targets = CloudTargets(d["affine"], d["partner"], d["lam"], d["embeddings"], feats)
                return targets, {"path": str(path), "hit": True, "seconds": 0.0}
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache entry is rebuilt, never trusted
    gen = torch.Generator().manual_seed(seed)
    everyone = torch.arange(n)
    drawn = [Views(torch.zeros(n, 3), everyone.clone(), torch.ones(n))]  # view 0: the clean image
    drawn += [sample_views(everyone, n, gen, augment=True, mix=mix) for _ in range(views - 1)]
    if features and teacher.feature_dim is None:
        raise InputError("regression_features needs the cloud's pooled features; this teacher has none")
    pre = Preprocess(spec, teacher.resolution)
    x_all = torch.from_numpy(train.images)
    out = torch.empty(views, n, teacher.embed_dim)
    feats = torch.empty(views, n, teacher.feature_dim) if features else None
    with (
        torch.no_grad(),
        tqdm(total=views * n, desc="cache cloud embeddings", disable=not progress, leave=False, unit="img") as bar,
    ):
        for v, view in enumerate(drawn):
            for s in range(0, n, batch_size):
                sl = slice(s, s + batch_size)
                f, out[v, sl] = teacher.features_and_embedding(render(pre, x_all, everyone[sl], view[sl]))
                if feats is not None:
                    feats[v, sl] = f
                bar.update(len(everyone[sl]))
    tensors = {
        "affine": torch.stack([d.affine for d in drawn]),
        "partner": torch.stack([d.partner for d in drawn]),
        "lam": torch.stack([d.lam for d in drawn]),
        "embeddings": out,
        **({"features": feats} if feats is not None else {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    targets = CloudTargets(tensors["affine"], tensors["partner"], tensors["lam"], out, feats)
    return targets, {"path": str(path), "hit": False, "seconds": round(time.perf_counter() - t0, 2)}
