"""Training: one loop for every role and objective.

The cloud model is trained with its own classification loss and defines the space. An edge model is trained with a
`CompatibilityObjective`; when the objective uses the frozen cloud model (e.g. BCT), the edge model is saved as a
member of the cloud's space, otherwise (independent baseline) as a space of its own.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hetero.checkpoint import load_checkpoint, save_checkpoint
from hetero.config import RunConfig, TrainConfig, to_dict
from hetero.data import ImageSet, OpenSetSplit, load_split
from hetero.errors import InputError, SpaceMismatchError
from hetero.io import ensure_writable_dir
from hetero.losses import CompatibilityObjective, build_objective
from hetero.manifest import Manifest
from hetero.models import Preprocess, create_model
from hetero.spaces import InputSpec


def input_spec_for(cfg: RunConfig) -> InputSpec:
    return InputSpec(height=cfg.data.image_size, width=cfg.data.image_size)


def augment(
    x: torch.Tensor, generator: torch.Generator, max_shift: float = 0.1, max_scale: float = 0.1
) -> torch.Tensor:
    """Random small translation and scale (normalised images, border padding): cheap, label-preserving."""
    n = x.shape[0]
    u = torch.rand(n, 3, generator=generator) * 2 - 1
    s = 1 + max_scale * u[:, 0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = max_shift * u[:, 1:]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def fit(
    model: torch.nn.Module,
    objective: CompatibilityObjective,
    train: ImageSet,
    cfg: TrainConfig,
    spec: InputSpec,
    *,
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, Any]]:
    """Minimise `objective` over `train`; returns one metrics dict per epoch."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    pre = Preprocess(spec)
    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    params = list({id(p): p for p in params}.values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch), pct_start=0.15
    )
    history: list[dict[str, Any]] = []
    model.train()
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress, leave=False, unit="epoch")
    for epoch in bar:
        t0, sums, n_seen = time.perf_counter(), {}, 0
        for idx in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
            x = pre(x_all[idx])
            if cfg.augment:
                x = augment(x, gen)
            loss, parts = objective(model.forward_embedding(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            n_seen += len(idx)
        row = {"epoch": epoch + 1, **{k: v / n_seen for k, v in sums.items()}, "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
    model.eval()
    return history


def train(
    role: str,
    cfg: RunConfig,
    out: Path,
    *,
    cloud: Path | None = None,
    loss_weights: dict[str, float] | None = None,
    split: OpenSetSplit | None = None,
    progress: bool = True,
) -> Manifest:
    """Train the `role` ("cloud" or "edge") model of `cfg` and save a checkpoint unit at `out`."""
    if role not in ("cloud", "edge"):
        raise InputError(f"role must be 'cloud' or 'edge', got {role!r}")
    ensure_writable_dir(Path(out))
    tcfg = cfg.cloud if role == "cloud" else cfg.edge
    weights = dict(loss_weights if loss_weights is not None else tcfg.loss_weights)
    spec = input_spec_for(cfg)
    split = split or load_split(cfg.data)

    cloud_model, cloud_manifest = None, None
    if cloud is not None:
        cloud_model, cloud_manifest = load_checkpoint(cloud)
        _require_cloud_matches(cloud_manifest, cfg, split)

    torch.manual_seed(tcfg.seed)  # weight init is part of the run: same seed, same checkpoint
    model = create_model(tcfg.model, embed_dim=cfg.space.dim, num_classes=split.num_train_classes, scale=tcfg.scale)
    objective = build_objective(weights, model, cloud_model)
    t0 = time.perf_counter()
    history = fit(model, objective, split.train, tcfg, spec, progress=progress, desc=f"{role} {tcfg.model}")
    seconds = time.perf_counter() - t0

    in_cloud_space = objective.needs_cloud
    return save_checkpoint(
        out,
        model,
        model_name=tcfg.model,
        input_spec=spec,
        space=cloud_manifest.space if in_cloud_space else None,
        space_name=cfg.space.name,
        seed=tcfg.seed,
        source={"cloud_checkpoint": str(cloud), "cloud_sha256": cloud_manifest.sha256} if in_cloud_space else {},
        extra={
            "role": role,
            "loss_weights": weights,
            "train": to_dict(tcfg),
            "data": to_dict(cfg.data),
            "split": split.describe(),
            "final": history[-1] if history else {},
            "train_seconds": round(seconds, 2),
        },
    )


def _require_cloud_matches(manifest: Manifest, cfg: RunConfig, split: OpenSetSplit) -> None:
    """The frozen cloud classifier only means something for the same training classes and embedding dim."""
    if manifest.space.dim != cfg.space.dim:
        raise SpaceMismatchError(
            f"cloud checkpoint has embedding dim {manifest.space.dim}, config space.dim is {cfg.space.dim}"
        )
    if manifest.extra.get("data") != to_dict(cfg.data):
        raise InputError(
            "cloud checkpoint was trained on a different data config (dataset/split); retrain or align [data]"
        )
    if manifest.model.get("num_classes") != split.num_train_classes:
        raise InputError(
            f"cloud classifier has {manifest.model.get('num_classes')} classes, "
            f"training split has {split.num_train_classes}"
        )
