"""Training: one loop for every role and objective.

The cloud model is trained with its own classification loss and defines the space. An edge model is trained with a
`CompatibilityObjective`; when the objective uses the frozen cloud model (e.g. BCT), the edge model is saved as a
member of the cloud's space, otherwise (independent baseline) as a space of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hetero.config import RunConfig, TrainConfig, override, space_name, to_dict
from hetero.data.datasets import OpenSetSplit, load_split, with_unlabeled
from hetero.data.transfer import transfer_line
from hetero.errors import ConfigError, InputError
from hetero.io import ensure_writable_dir
from hetero.manifest import Manifest
from hetero.models.checkpoint import save_checkpoint
from hetero.models.registry import MODELS, create_model
from hetero.spaces import InputSpec
from hetero.training import distributed
from hetero.training.cloud import load_teacher
from hetero.training.loop import METRICS_NAME, fit, jsonl, resume_dir
from hetero.training.losses import LOSS_TERMS, CompatibilityObjective, build_objective, check_weights
from hetero.training.lqf import LEAST_SQUARES, linearise
from hetero.training.qat import FakeQuant
from hetero.training.start import (
    aligned_prototypes,
    inherit_from_cloud,
    lineage_record,
    load_init,
    load_previous,
    prototypes_from_teacher,
    require_cloud_matches,
    require_imported_cloud_fits,
    share_cloud_head,
    targets_for,
    transfer_images,
)
from hetero.training.teacher import Teacher


def input_spec_for(cfg: RunConfig, cloud_input: InputSpec | None = None) -> InputSpec:
    """The space's input contract. An edge takes exactly the cloud's pixels; the cloud's normalisation is the one its
    pretrained weights expect (EfficientNet-Lite: [-1, 1]; MobileNetV2: ImageNet mean/std)."""
    if cloud_input is not None:
        return cloud_input
    entry = MODELS.get(cfg.cloud.model)
    norm = {"mean": entry.mean, "std": entry.std} if entry else {}
    return InputSpec(height=cfg.data.image_size, width=cfg.data.image_size, **norm)


@dataclass
class TrainResult:
    """What `train` made: the checkpoint unit, its manifest, the per-epoch metrics and the wall time."""

    checkpoint: Path
    manifest: Manifest
    history: list[dict[str, Any]]
    seconds: float
    processes: int = 1
    notes: list[str] = field(default_factory=list)  # what was decided for the user (e.g. the space's dim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "seconds": round(self.seconds, 2),
            "processes": self.processes,
            "notes": self.notes,
            "manifest": self.manifest.to_dict(),
        }

    def to_text(self) -> str:
        m, final = self.manifest, self.history[-1] if self.history else {}
        return (
            f"{m.extra.get('role', 'model')} {m.model['name']} -> {self.checkpoint}  space {m.space.id}  "
            f"loss {final.get('loss', float('nan')):.3f}  ({self.seconds:.0f} s, {self.processes} process(es))"
        )


@dataclass
class _Cloud:
    """The cloud side of a run, prepared once: the teacher (with BCT's prototypes when a term needs them), the
    objective built on it, and what the manifest records about both."""

    teacher: Teacher | None
    objective: CompatibilityObjective
    prototypes: dict[str, Any] = field(default_factory=dict)


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
) -> TrainResult | None:
    """Train the `role` ("cloud" or "edge") model of `cfg` and save a checkpoint unit at `out`.

    Returns the result on rank 0 (None on other ranks of a distributed run, which write nothing). An edge trained
    against a cloud takes the cloud's embedding dim (the config's [space] dim is for a cloud of its own).
    """
    if role not in ("cloud", "edge"):
        raise InputError(f"role must be 'cloud' or 'edge', got {role!r}")
    out = Path(out)
    ensure_writable_dir(out)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress and distributed.is_main() else (lambda m: None)
    tcfg = cfg.cloud if role == "cloud" else cfg.edge
    weights = dict(loss_weights if loss_weights is not None else tcfg.loss_weights)
    active = check_weights(weights)  # bad names or values fail before the cloud or any data loads
    teacher = load_teacher(cloud) if cloud is not None else None
    notes = []
    if teacher is not None and teacher.space.dim != cfg.space.dim:
        notes.append(f"space.dim {cfg.space.dim} -> {teacher.space.dim}, the cloud's")
        cfg = override(cfg, space={"dim": teacher.space.dim})
    _require_cloud_settings(role, tcfg, teacher, weights, active)
    if split is None:  # loaded here (the CLI path): show which identities are held out before any training
        split = load_split(cfg.data)
        say(split.to_text())
    for note in notes:
        say(f"note: {note}")
    prepared = _prepare_cloud(cfg, tcfg, weights, active, teacher, split, progress)
    cloud_manifest = teacher.manifest if teacher is not None else None
    spec = input_spec_for(cfg, cloud_manifest.input if cloud_manifest else None)
    previous_model, previous_record = load_previous(tcfg, weights, cloud_manifest) if tcfg.previous else (None, {})
    model, init_record = _build_model(cfg, tcfg, split, teacher)
    train_set, transfer_record = split.train, {}
    if tcfg.transfer:
        found, transfer_record = transfer_images(role, tcfg, cfg, split, prepared.objective, prepared.teacher, spec,
                                                 progress)  # fmt: skip
        say(transfer_line(transfer_record))
        train_set = with_unlabeled(train_set, found.images, found.ids)
    targets, targets_record = None, {}
    if prepared.objective.needs_cloud_embedding:
        features = prepared.objective.needs_cloud_features
        targets, targets_record = targets_for(prepared.teacher, train_set, spec, tcfg, features, progress)

    state_dir = resume_dir(out)
    if distributed.is_main() and not resume:
        shutil.rmtree(state_dir, ignore_errors=True)  # a fresh run never inherits a stale state
    t0 = time.perf_counter()
    with FakeQuant(model) if tcfg.qat else contextlib.nullcontext():
        history = fit(
            model, prepared.objective, train_set, tcfg, spec, targets=targets, previous=previous_model,
            state_dir=state_dir, resume=resume, fingerprint=_fingerprint(role, cfg, tcfg, weights, cloud_manifest),
            progress=progress, desc=f"{role} {tcfg.model}" + (" (QAT)" if tcfg.qat else " (LQF)" if tcfg.lqf else ""),
            lqf=cfg.lqf if tcfg.lqf else None,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    if not distributed.is_main():
        distributed.barrier()
        return None
    records = {
        "unlabeled_images": len(train_set) - len(split.train),
        "transfer": transfer_record,
        "cloud_targets": targets_record,
        "init": init_record,
        "prototypes": prepared.prototypes,
        "previous": previous_record,
    }
    manifest = _save(out, role, cfg, tcfg, weights, split, model, spec, cloud, cloud_manifest, prepared, history,
                     seconds, records)  # fmt: skip
    shutil.rmtree(state_dir, ignore_errors=True)
    distributed.barrier()
    return TrainResult(out, manifest, history, seconds, distributed.world(), notes)


def _prototype_source(tcfg: TrainConfig, teacher: Teacher | None, active: set[str]) -> tuple[bool, bool]:
    """Whether a term needs BCT's prototypes, and whether they come from the cloud's embeddings (no classifier)."""
    needs = teacher is not None and any(LOSS_TERMS[k].needs_prototypes for k in active)
    return needs, needs and (teacher.prototypes() is None or tcfg.prototypes == "embeddings")


def _require_cloud_settings(
    role: str, tcfg: TrainConfig, teacher: Teacher | None, weights: dict[str, float], active: set[str]
) -> None:
    """Settings that need a particular cloud, refused before any data loads."""
    if not _prototype_source(tcfg, teacher, active)[1]:
        build_objective(weights, teacher)  # a term that needs the cloud without --cloud fails here
    if any(LOSS_TERMS[k].needs_cloud_features for k in active) and not tcfg.share_cloud_head:
        raise ConfigError(
            "regression_features trains the backbone only: set share_cloud_head = true so the embedding is the "
            "cloud's head applied to those features"
        )
    if tcfg.lqf and set(active) - set(LEAST_SQUARES):
        raise ConfigError(
            f"lqf minimises least squares on the linearised output ({', '.join(LEAST_SQUARES)}); not "
            f"{', '.join(sorted(set(active) - set(LEAST_SQUARES)))} (one-hot least squares for a classifier: not built)"
        )
    if tcfg.lqf and (tcfg.share_cloud_head or tcfg.qat):
        raise ConfigError("lqf trains the linearised head's output: not with share_cloud_head or qat")
    if tcfg.share_cloud_head and role != "edge":
        raise ConfigError("share_cloud_head is for an edge model (the cloud defines the head)")
    if (tcfg.share_cloud_head or tcfg.inherit_cloud) and (teacher is None or teacher.model is None):
        what = "share_cloud_head" if tcfg.share_cloud_head else "inherit_cloud"
        raise InputError(f"{what} = true needs the cloud checkpoint: pass --cloud (hetero's, of the same family)")
    if teacher is not None:
        teacher.require_defines_space()  # an edge or a foreign checkpoint is no cloud


def _prepare_cloud(
    cfg: RunConfig,
    tcfg: TrainConfig,
    weights: dict[str, float],
    active: set[str],
    teacher: Teacher | None,
    split: OpenSetSplit,
    progress: bool,
) -> _Cloud:
    """The teacher checked against this run, with BCT's prototypes where a term needs them, and the objective."""
    needs_prototypes, from_embeddings = _prototype_source(tcfg, teacher, active)
    if teacher is not None and teacher.kind == "checkpoint":
        require_cloud_matches(teacher.manifest, cfg, split)
    elif teacher is not None:
        require_imported_cloud_fits(teacher, cfg, tcfg, active)
    spec = input_spec_for(cfg, teacher.manifest.input if teacher is not None else None)
    record: dict[str, Any] = {}
    if from_embeddings:
        teacher = teacher.with_prototypes(prototypes_from_teacher(teacher, split.train, spec, tcfg.scale, progress))
        record = {"from_classifier": 0, "from_embeddings": split.num_train_classes}
    elif needs_prototypes:
        protos, record = aligned_prototypes(teacher, split, spec, tcfg.scale, progress)
        teacher = teacher.with_prototypes(protos)
    return _Cloud(teacher, build_objective(weights, teacher), record)


def _build_model(cfg: RunConfig, tcfg: TrainConfig, split: OpenSetSplit, teacher: Teacher | None):
    """The model to train, seeded (weight init is part of the run), from its init checkpoint or the cloud's weights
    and head where the config asks."""
    torch.manual_seed(tcfg.seed)
    model = create_model(
        tcfg.model,
        embed_dim=cfg.space.dim,
        num_classes=split.num_train_classes,
        scale=tcfg.scale,
        resolution=tcfg.resolution or None,
        pretrained=tcfg.pretrained,
        arch=tcfg.arch or None,
    )
    cloud_manifest = teacher.manifest if teacher is not None else None
    init_record = load_init(model, tcfg, cloud_manifest) if tcfg.init else {}
    if tcfg.inherit_cloud:
        inherit_from_cloud(model, tcfg.model, teacher.model, cloud_manifest)
    if tcfg.share_cloud_head:
        share_cloud_head(model, tcfg.model, teacher.model)
    if tcfg.lqf:  # linear in its weight change around the weights it starts from (ImageNet, init or the cloud's)
        model = linearise(model, cfg.lqf)
    return model, init_record


def _save(out, role, cfg, tcfg, weights, split, model, spec, cloud, cloud_manifest, prepared, history, seconds,
          records) -> Manifest:  # fmt: skip
    """The checkpoint unit: weights stamped with their lineage, and a manifest recording how they were made."""
    in_cloud_space = prepared.objective.aligns_space
    return save_checkpoint(
        out,
        model,
        model_name=tcfg.model,
        input_spec=spec,
        space=cloud_manifest.space if in_cloud_space else None,
        space_name=space_name(cfg),
        seed=tcfg.seed,
        source={"cloud_checkpoint": str(cloud), "cloud_sha256": cloud_manifest.sha256} if cloud_manifest else {},
        extra={
            "role": role,
            "loss_weights": weights,
            "train": to_dict(tcfg),
            **({"lqf": to_dict(cfg.lqf)} if tcfg.lqf else {}),
            "data": to_dict(cfg.data),
            "split": split.describe(),
            "final": history[-1] if history else {},
            "train_seconds": round(seconds, 2),
            "processes": distributed.world(),
            "pretrained": getattr(model, "pretrained_info", None),
            **records,
            "lineage": lineage_record(role, cloud_manifest) if in_cloud_space else {},
        },
        files={METRICS_NAME: jsonl(history)},
    )


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
        **({"lqf": to_dict(cfg.lqf)} if tcfg.lqf else {}),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
