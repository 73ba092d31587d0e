"""Training: one loop for every role and objective.

The cloud model is trained with its own classification loss and defines the space. An edge model is trained with a
`CompatibilityObjective`; when the objective uses the frozen cloud model (e.g. BCT), the edge model is saved as a
member of the cloud's space, otherwise (independent baseline) as a space of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from hetero.config import DataConfig, RunConfig, TrainConfig, to_dict
from hetero.data.datasets import ImageSet, OpenSetSplit, load_split, load_transfer, with_unlabeled
from hetero.errors import ConfigError, DivergenceError, InputError, SpaceMismatchError
from hetero.io import atomic_write, atomic_write_text, ensure_writable_dir, parse_json
from hetero.manifest import Manifest
from hetero.models.checkpoint import load_checkpoint, save_checkpoint
from hetero.models.registry import MODELS, Preprocess, create_model, features_and_embedding
from hetero.spaces import InputSpec
from hetero.training import distributed
from hetero.training.cloud import load_teacher
from hetero.training.losses import LOSS_TERMS, Batch, CompatibilityObjective, build_objective, check_weights
from hetero.training.qat import FakeQuant, freeze_batchnorm
from hetero.training.table import EmbeddingTable
from hetero.training.targets import CloudTargets, OnlineTargets, cloud_targets, render, sample_views
from hetero.training.teacher import CheckpointTeacher, ClassPrototypes, Teacher

METRICS_NAME = "metrics.jsonl"


def input_spec_for(cfg: RunConfig, cloud_input: InputSpec | None = None) -> InputSpec:
    """The space's input contract. An edge takes exactly the cloud's pixels; the cloud's normalisation is the one its
    pretrained weights expect (EfficientNet-Lite: [-1, 1]; MobileNetV2: ImageNet mean/std)."""
    if cloud_input is not None:
        return cloud_input
    entry = MODELS.get(cfg.cloud.model)
    norm = {"mean": entry.mean, "std": entry.std} if entry else {}
    return InputSpec(height=cfg.data.image_size, width=cfg.data.image_size, **norm)


class TrainStep(nn.Module):
    """What DDP wraps: one forward that yields everything loss terms read (the own classifier included)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats, emb = features_and_embedding(self.model, x)
        return feats, emb, self.model.classifier(emb)


def fit(
    model: nn.Module,
    objective: CompatibilityObjective,
    train: ImageSet,
    cfg: TrainConfig,
    spec: InputSpec,
    *,
    targets: CloudTargets | OnlineTargets | None = None,
    previous: nn.Module | None = None,
    state_dir: Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, Any]]:
    """Minimise `objective` over `train`; returns one metrics dict per epoch.

    With `state_dir`, rank 0 saves the full training state (weights, optimiser, schedule, RNG) after every epoch and
    rewrites `metrics.jsonl`; `resume=True` continues from there, bit-for-bit on the same machine. Under torchrun
    every rank draws the same permutation and views (one generator, same seed) and takes its slice of each global
    batch, so the effective batch and schedule do not depend on the number of processes.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    pre = Preprocess(spec, getattr(model, "resolution", None))
    prev_pre = Preprocess(spec, getattr(previous, "resolution", None)) if previous is not None else None
    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    params = list({id(p): p for p in params}.values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch), pct_start=0.15
    )
    history: list[dict[str, Any]] = []
    state_path = state_dir / "state.pt" if state_dir is not None else None
    if resume and state_path is not None and state_path.is_file():
        history = _load_state(state_path, fingerprint, model, opt, sched, gen)
    n_rank, n_world = distributed.rank(), distributed.world()
    step = TrainStep(model)
    if n_world > 1:
        step = DDP(step, find_unused_parameters=not objective.uses_own_classifier)
    model.train()
    if cfg.qat:
        freeze_batchnorm(model)  # normalise as deployed: the rounded weights are learned against running statistics
    bar = tqdm(
        range(len(history), cfg.epochs),
        desc=desc,
        disable=not (progress and distributed.is_main()),
        leave=False,
        unit="epoch",
        initial=len(history),
        total=cfg.epochs,
    )
    for epoch in bar:
        t0, sums = time.perf_counter(), torch.zeros(len(objective.terms) + 2, dtype=torch.float64)
        for gidx in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
            if len(gidx) < 2 * n_world:
                continue  # a ragged last batch too small to give every rank two images (BatchNorm needs them)
            cloud_emb = cloud_feats = None
            if targets is not None:
                views, cloud_emb, cloud_feats = targets.for_batch(gidx, gen)
            else:
                views = sample_views(gidx, len(train), gen, augment=cfg.augment, mix=cfg.mix)
            mine = slice(n_rank, None, n_world)
            idx = gidx[mine]
            mine_views = views[mine]
            feats, emb, logits = step(render(pre, x_all, idx, mine_views))
            prev_emb = None
            if previous is not None:  # the released model on the same views, at its own compute size
                with torch.no_grad():
                    prev_emb = features_and_embedding(previous, render(prev_pre, x_all, idx, mine_views))[1]
            mixed = mine_views.blended
            batch = Batch(
                emb,
                logits,
                y_all[idx],
                None if cloud_emb is None else cloud_emb[mine],
                partner_labels=y_all[mine_views.partner] if mixed else None,
                lam=mine_views.lam if mixed else None,
                features=feats,
                cloud_features=None if cloud_feats is None else cloud_feats[mine],
                previous_embedding=prev_emb,
            )
            loss, parts = objective(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums += torch.tensor([float(loss.detach()), *parts.values(), 1.0], dtype=torch.float64) * len(idx)
        if n_world > 1:
            torch.distributed.all_reduce(sums)
        n_seen = float(sums[-1])
        if n_seen == 0:
            raise InputError(f"epoch {epoch + 1} trained on no batch: batch_size {cfg.batch_size} is too small")
        if not torch.isfinite(sums).all():  # all ranks see the same reduced sums, so all stop together
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1}: the loss is not finite (lr {cfg.lr:g}); "
                "nothing was written for this epoch"
            )
        means = dict(zip(["loss", *objective.terms.keys()], (sums[:-1] / max(n_seen, 1.0)).tolist(), strict=True))
        row = {"epoch": epoch + 1, **means, "images": int(n_seen), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if state_path is not None and distributed.is_main():
            _save_state(state_path, fingerprint, model, opt, sched, gen, history)
        distributed.barrier()
    model.eval()
    return history


def _save_state(path: Path, fingerprint: str, model, opt, sched, gen, history: list[dict]) -> None:
    """Weights, optimiser, schedule and RNG after an epoch; the metrics log is rewritten from the same history."""
    state = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "history": json.dumps(history),
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    atomic_write_text(path.parent / METRICS_NAME, _jsonl(history))


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _load_state(path: Path, fingerprint: str, model, opt, sched, gen) -> list[dict]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged state file is a one-line error, whatever torch raises
        raise InputError(f"{path}: cannot read resume state ({type(e).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        raise InputError(f"{path} was written by a different run (config, data or cloud); delete it to start over")
    try:  # the right fingerprint over the wrong contents (edited, or another version's layout): refused whole
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        history = parse_json(state["history"], f"{path} history")
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise TypeError("history is not a list of epoch records")
    except InputError:
        raise
    except Exception as e:  # torch raises RuntimeError/KeyError/TypeError/ValueError for state that does not fit
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}" if str(e) else type(e).__name__
        raise InputError(f"{path}: resume state does not fit this run ({why}); delete it to start over") from None
    return history


def resume_dir(out: Path) -> Path:
    """Where an unfinished run keeps its state: beside the checkpoint, hidden, removed once the checkpoint exists."""
    out = Path(out)
    return out.parent / f".{out.name}.resume"


def train(
    role: str,
    cfg: RunConfig,
    out: Path,
    *,
    cloud: Path | None = None,
    loss_weights: dict[str, float] | None = None,
    split: OpenSetSplit | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Manifest | None:
    """Train the `role` ("cloud" or "edge") model of `cfg` and save a checkpoint unit at `out`.

    Returns the manifest on rank 0 (None on other ranks of a distributed run, which write nothing).
    """
    if role not in ("cloud", "edge"):
        raise InputError(f"role must be 'cloud' or 'edge', got {role!r}")
    out = Path(out)
    ensure_writable_dir(out)
    tcfg = cfg.cloud if role == "cloud" else cfg.edge
    weights = dict(loss_weights if loss_weights is not None else tcfg.loss_weights)
    active = check_weights(weights)  # bad names or values fail before the cloud or any data loads
    teacher = load_teacher(cloud) if cloud is not None else None
    cloud_manifest = teacher.manifest if teacher is not None else None
    cloud_model = teacher.model if isinstance(teacher, CheckpointTeacher) else None
    needs_prototypes = teacher is not None and any(LOSS_TERMS[k].needs_prototypes for k in active)
    from_embeddings = needs_prototypes and (teacher.prototypes() is None or tcfg.prototypes == "embeddings")
    if not from_embeddings:
        objective = build_objective(weights, teacher)  # a missing --cloud fails before any data loads
    if any(LOSS_TERMS[k].needs_cloud_features for k in active) and not tcfg.share_cloud_head:
        raise ConfigError(
            "regression_features trains the backbone only: set share_cloud_head = true so the embedding is the "
            "cloud's head applied to those features"
        )
    if tcfg.share_cloud_head and role != "edge":
        raise ConfigError("share_cloud_head is for an edge model (the cloud defines the head)")
    if (tcfg.share_cloud_head or tcfg.inherit_cloud) and cloud_model is None:
        what = "share_cloud_head" if tcfg.share_cloud_head else "inherit_cloud"
        raise InputError(f"{what} = true needs the cloud checkpoint: pass --cloud (hetero's, of the same family)")
    if isinstance(teacher, CheckpointTeacher):  # an edge or a foreign checkpoint is no cloud: its "v2" would claim
        from hetero.training.lineage import require_cloud  # the space without being trained against what defines it

        require_cloud(cloud_manifest, cloud)
    split = split or load_split(cfg.data)
    if isinstance(teacher, CheckpointTeacher):
        _require_cloud_matches(cloud_manifest, cfg, split)
    elif teacher is not None:
        _require_imported_cloud_fits(teacher, cfg, tcfg, active)
    spec = input_spec_for(cfg, cloud_manifest.input if cloud_manifest else None)
    previous_model, previous_record = _load_previous(tcfg, weights, cloud_manifest) if tcfg.previous else (None, {})
    prototypes_record: dict[str, Any] = {}
    if from_embeddings:
        teacher = teacher.with_prototypes(_prototypes_from_teacher(teacher, split.train, spec, tcfg.scale, progress))
        objective = build_objective(weights, teacher)
        prototypes_record = {"from_classifier": 0, "from_embeddings": split.num_train_classes}
    elif needs_prototypes and isinstance(teacher, CheckpointTeacher):
        protos, prototypes_record = _aligned_prototypes(teacher, split, spec, tcfg.scale, progress)
        teacher = teacher.with_prototypes(protos)
        objective = build_objective(weights, teacher)

    torch.manual_seed(tcfg.seed)  # weight init is part of the run: same seed, same checkpoint
    model = create_model(
        tcfg.model,
        embed_dim=cfg.space.dim,
        num_classes=split.num_train_classes,
        scale=tcfg.scale,
        resolution=tcfg.resolution or None,
        pretrained=tcfg.pretrained,
        arch=tcfg.arch or None,
    )
    init_record = _load_init(model, tcfg, cloud_manifest) if tcfg.init else {}
    if tcfg.inherit_cloud:
        _inherit_from_cloud(model, tcfg.model, cloud_model, cloud_manifest)
    if tcfg.share_cloud_head:
        _share_cloud_head(model, tcfg.model, cloud_model)
    train_set = split.train
    if tcfg.transfer:
        train_set = with_unlabeled(train_set, _transfer_images(role, tcfg, cfg, split, objective))
    targets, targets_record = None, {}
    if objective.needs_cloud_embedding:
        features = objective.needs_cloud_features
        targets, targets_record = _cloud_targets(teacher, train_set, spec, tcfg, features, progress)

    fingerprint = _fingerprint(role, cfg, tcfg, weights, cloud_manifest)
    state_dir = resume_dir(out)
    if distributed.is_main() and not resume:
        shutil.rmtree(state_dir, ignore_errors=True)  # a fresh run never inherits a stale state
    t0 = time.perf_counter()
    with FakeQuant(model) if tcfg.qat else contextlib.nullcontext():
        history = fit(
            model,
            objective,
            train_set,
            tcfg,
            spec,
            targets=targets,
            previous=previous_model,
            state_dir=state_dir,
            resume=resume,
            fingerprint=fingerprint,
            progress=progress,
            desc=f"{role} {tcfg.model}" + (" (QAT)" if tcfg.qat else ""),
        )
    seconds = time.perf_counter() - t0
    if not distributed.is_main():
        distributed.barrier()
        return None

    in_cloud_space = objective.aligns_space
    manifest = save_checkpoint(
        out,
        model,
        model_name=tcfg.model,
        input_spec=spec,
        space=cloud_manifest.space if in_cloud_space else None,
        space_name=cfg.space.name,
        seed=tcfg.seed,
        source={"cloud_checkpoint": str(cloud), "cloud_sha256": cloud_manifest.sha256} if cloud_manifest else {},
        extra={
            "role": role,
            "loss_weights": weights,
            "train": to_dict(tcfg),
            "data": to_dict(cfg.data),
            "split": split.describe(),
            "unlabeled_images": len(train_set) - len(split.train),
            "final": history[-1] if history else {},
            "train_seconds": round(seconds, 2),
            "processes": distributed.world(),
            "pretrained": getattr(model, "pretrained_info", None),
            "cloud_targets": targets_record,
            "init": init_record,
            "prototypes": prototypes_record,
            "previous": previous_record,
            "lineage": _lineage(role, cloud_manifest) if in_cloud_space else {},
        },
        files={METRICS_NAME: _jsonl(history)},
    )
    shutil.rmtree(state_dir, ignore_errors=True)
    distributed.barrier()
    return manifest


def _load_init(model: nn.Module, tcfg: TrainConfig, cloud: Manifest | None) -> dict[str, str]:
    """Start from a trained checkpoint of the same model (and, against a cloud, of the same space)."""
    init, m = load_checkpoint(Path(tcfg.init))
    if m.model.get("name") != tcfg.model:
        raise InputError(f"init {tcfg.init} is a {m.model.get('name')}, this run trains a {tcfg.model}")
    if cloud is not None and m.space.id != cloud.space.id:
        raise InputError(f"init {tcfg.init} is in space {m.space.id}, not the cloud's {cloud.space.id}")
    try:
        model.load_state_dict(init.state_dict())
    except RuntimeError as e:
        raise InputError(f"init {tcfg.init} does not fit this model ({str(e).splitlines()[0]})") from None
    return {"checkpoint": str(tcfg.init), "sha256": m.sha256}


def _transfer_images(
    role: str, tcfg: TrainConfig, cfg: RunConfig, split: OpenSetSplit, objective: CompatibilityObjective
) -> np.ndarray:
    """Unlabeled images only feed terms that compare with the cloud's embedding; anything else is a config error."""
    if role != "edge" or not objective.needs_cloud_embedding:
        raise InputError(
            f"transfer = {tcfg.transfer!r}: unlabeled images only feed an edge's cloud-embedding terms "
            "(regression_l2, regression_cosine, regression_features, contrastive, distillation)"
        )
    return load_transfer(tcfg.transfer, cfg.data, split.heldout_classes)


def _inherit_from_cloud(model: nn.Module, name: str, cloud: nn.Module | None, manifest: Manifest | None) -> None:
    """Start an edge member from the fine-tuned cloud (first blocks, leading channels, its embedding head): it begins
    near the function it has to match instead of at ImageNet features plus a random head."""
    from hetero.models.mbnet import inherit_weights

    if cloud is None or manifest is None:
        raise InputError("inherit_cloud = true needs the cloud checkpoint: pass --cloud")
    cloud_family = MODELS[manifest.model["name"]].family if manifest.model.get("name") in MODELS else None
    if MODELS[name].family != cloud_family:
        raise InputError(f"inherit_cloud: {name} ({MODELS[name].family}) is not of the cloud's family ({cloud_family})")
    info = inherit_weights(model, cloud.state_dict(), skip=())
    model.pretrained_info = {"source": f"cloud {manifest.sha256[:12]}", **info}


def _share_cloud_head(model: nn.Module, name: str, cloud: nn.Module) -> None:
    """Give the edge the cloud's embedding head, frozen: only the backbone learns, and whatever features it
    produces are projected exactly as the cloud projects its own."""
    if model.num_features != cloud.num_features:
        raise InputError(
            f"share_cloud_head: {name} has {model.num_features} features, the cloud's head takes {cloud.num_features}"
        )
    model.head.load_state_dict(cloud.head.state_dict())
    model.head.requires_grad_(False)


def _cloud_targets(teacher: Teacher, train_set, spec, tcfg, features, progress):
    """Rank 0 builds (or finds) the cache; the other ranks then read the same file. An embedding-file cloud gives
    each image's stored row instead (one clean view; `_require_imported_cloud_fits` refused more)."""
    if isinstance(teacher, EmbeddingTable):
        emb = torch.from_numpy(teacher.lookup(train_set.ids, "training images"))
        return CloudTargets.clean(emb), {"cached": False, "source": "embedding file", "views": 1}
    if not tcfg.cache_cloud:
        pixels = torch.from_numpy(train_set.images)
        return OnlineTargets(teacher, spec, pixels, tcfg.augment, tcfg.mix, features), {"cached": False}
    kw = {"views": tcfg.cloud_views, "seed": tcfg.seed, "augment": tcfg.augment, "mix": tcfg.mix, "features": features}
    if distributed.is_main():
        result = cloud_targets(teacher, teacher.sha256, train_set, spec, progress=progress, **kw)
    distributed.barrier()
    if not distributed.is_main():
        result = cloud_targets(teacher, teacher.sha256, train_set, spec, progress=False, **kw)
    targets, record = result
    return targets, {"cached": True, "views": targets.views, **record}


def _fingerprint(role: str, cfg: RunConfig, tcfg: TrainConfig, weights: dict, cloud: Manifest | None) -> str:
    """Everything that makes a resumed run the same run."""
    meta = {
        "role": role,
        "train": to_dict(tcfg),
        "data": to_dict(cfg.data),
        "space": to_dict(cfg.space),
        "weights": weights,
        "cloud": cloud.sha256 if cloud else None,
        "world": distributed.world(),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _require_imported_cloud_fits(teacher: Teacher, cfg: RunConfig, tcfg: TrainConfig, active: set[str]) -> None:
    """An imported cloud has no training config to compare; its dim and input size must be the run's. An embedding
    file has one stored row per image: no augmented or blended views, no unlabeled transfer images to embed."""
    if teacher.space.dim != cfg.space.dim:
        raise SpaceMismatchError(f"the cloud embeds in {teacher.space.dim} dims, config space.dim is {cfg.space.dim}")
    size = (teacher.input.height, teacher.input.width)
    if size != (cfg.data.image_size, cfg.data.image_size):
        raise InputError(f"the cloud takes {size[0]}x{size[1]} pixels; set data.image_size = {size[0]}")
    uses_rows = any(LOSS_TERMS[k].needs_cloud_embedding for k in active)
    if isinstance(teacher, EmbeddingTable) and uses_rows and (tcfg.cloud_views > 1 or tcfg.mix > 0 or tcfg.transfer):
        raise ConfigError(
            "an embedding-file cloud has one stored embedding per image: set cloud_views = 1, mix = 0 and no "
            f"transfer set (got cloud_views {tcfg.cloud_views}, mix {tcfg.mix:g}, transfer {tcfg.transfer!r})"
        )


def _prototypes_from_teacher(
    teacher: Teacher, train_set: ImageSet, spec: InputSpec, scale: float, progress: bool
) -> ClassPrototypes:
    """BCT's class prototypes from the cloud's embeddings of the clean labelled training images (no classifier)."""
    from hetero.training.cloud import prototypes_from_embeddings

    labels = torch.from_numpy(train_set.labels)
    if isinstance(teacher, EmbeddingTable):
        rows = torch.from_numpy(teacher.lookup(train_set.ids, "training images"))
        return prototypes_from_embeddings(rows, labels, scale)
    pre, x_all, out = Preprocess(spec, teacher.resolution), torch.from_numpy(np.asarray(train_set.images)), []
    with torch.no_grad():
        for s in tqdm(range(0, len(train_set), 64), desc="cloud prototypes", disable=not progress, leave=False):
            out.append(teacher.features_and_embedding(pre(x_all[s : s + 64]))[1])
    return prototypes_from_embeddings(torch.cat(out), labels, scale)


def _load_previous(tcfg: TrainConfig, weights: dict, cloud: Manifest | None) -> tuple[nn.Module, dict[str, str]]:
    """The released model a flip-aware term distils from: a checkpoint in the cloud's space (its embeddings are
    scored against the cloud's prototypes, so both must live there)."""
    if not any(LOSS_TERMS[k].reads_previous for k in check_weights(weights)):
        raise ConfigError("previous is read only by focal_distillation or plain_distillation; add one of them")
    model, m = load_checkpoint(Path(tcfg.previous))
    if cloud is None or m.space.id != cloud.space.id:
        raise SpaceMismatchError(
            f"previous {tcfg.previous} is in space {m.space.id}, not the cloud's "
            f"{cloud.space.id if cloud is not None else '(no --cloud)'}"
        )
    return model.eval().requires_grad_(False), {"checkpoint": str(tcfg.previous), "sha256": m.sha256}


def _lineage(role: str, cloud: Manifest | None) -> dict[str, str]:
    """What a model trained into another model's space records: a cloud v2 trained into v1's space is an upgrade
    (its queries search v1's gallery without re-indexing); an edge is a member. The weights file carries the same
    claim (hetero.models.checkpoint's stamp), so it cannot be edited into the manifest afterwards."""
    if cloud is None:
        return {}
    return {
        "kind": "upgrade" if role == "cloud" else "member",
        "compatible_with": cloud.space.id,
        "cloud_sha256": cloud.sha256,
        "cloud_model": str(cloud.model.get("name", "")),
    }


def _aligned_prototypes(
    teacher: CheckpointTeacher, split: OpenSetSplit, spec: InputSpec, scale: float, progress: bool
) -> tuple[ClassPrototypes, dict[str, int]]:
    """BCT's frozen classifier for *this* run's classes, matched by identity: the cloud classifier's row for each
    identity it was trained on, and for an identity it never saw (a v2 trained on more data) the normalised mean of
    the cloud's embeddings of its images — BCT's rule for new classes (Shen et al., CVPR 2020, sec. 3.2)."""
    cloud_classes = [int(c) for c in teacher.manifest.extra.get("split", {}).get("train_classes", [])]
    mine = [int(c) for c in split.train_classes]
    base = teacher.prototypes()
    if cloud_classes == mine or (not cloud_classes and base.weight.shape[0] == len(mine)):
        return base, {"from_classifier": len(mine), "from_embeddings": 0}
    row = {c: i for i, c in enumerate(cloud_classes)}
    known = [i for i, c in enumerate(mine) if c in row]
    weight = torch.zeros(len(mine), base.weight.shape[1])
    if len(known) < len(mine):
        weight = _prototypes_from_teacher(teacher, split.train, spec, base.scale, progress).weight.clone()
    weight[known] = base.weight[[row[mine[i]] for i in known]]
    return ClassPrototypes(weight, base.scale), {
        "from_classifier": len(known),
        "from_embeddings": len(mine) - len(known),
    }


def _require_cloud_matches(manifest: Manifest, cfg: RunConfig, split: OpenSetSplit) -> None:
    """The cloud's classifier and gallery mean something only for the same dataset, held-out identities and dim.
    The share of training identities may differ (a v2 trained on more of them): BCT then matches identities."""
    if manifest.space.dim != cfg.space.dim:
        raise SpaceMismatchError(
            f"cloud checkpoint has embedding dim {manifest.space.dim}, config space.dim is {cfg.space.dim}"
        )
    recorded = manifest.extra.get("data")
    # keys added since the cloud was trained took their defaults then: fill them in before comparing
    ignore = {"train_class_share": None}
    if not isinstance(recorded, dict) or {**to_dict(DataConfig()), **recorded, **ignore} != {
        **to_dict(cfg.data),
        **ignore,
    }:
        raise InputError(
            "cloud checkpoint was trained on a different data config (dataset/split); retrain or align [data]"
        )
    recorded_classes = manifest.extra.get("split", {}).get("train_classes")
    if recorded_classes is None and manifest.model.get("num_classes") != split.num_train_classes:
        raise InputError(
            f"cloud classifier has {manifest.model.get('num_classes')} classes, "
            f"training split has {split.num_train_classes}"
        )
