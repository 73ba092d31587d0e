"""What a training run starts from besides its data: the cloud's side (targets, prototypes, inherited weights or
head, the checks that it fits this run), a checkpoint to initialise from, the previous release to distil from,
and the lineage the result records. Each is asked of the teacher's capabilities, never of its type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hetero.config import DataConfig, RunConfig, TrainConfig, to_dict
from hetero.data.datasets import ImageSet, OpenSetSplit
from hetero.data.transfer import TransferImages
from hetero.errors import ConfigError, InputError, SpaceMismatchError
from hetero.manifest import Manifest
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import MODELS, Preprocess
from hetero.spaces import InputSpec
from hetero.training import distributed
from hetero.training.losses import LOSS_TERMS, CompatibilityObjective, check_weights
from hetero.training.targets import CloudTargets, OnlineTargets, cloud_targets
from hetero.training.teacher import ClassPrototypes, Teacher


def load_init(model: nn.Module, tcfg: TrainConfig, cloud: Manifest | None) -> dict[str, str]:
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


def transfer_images(
    role: str,
    tcfg: TrainConfig,
    cfg: RunConfig,
    split: OpenSetSplit,
    objective: CompatibilityObjective,
    teacher: Teacher,
    spec: InputSpec,
    progress: bool,
) -> tuple[TransferImages, dict]:
    """The edge's unlabeled transfer images with held-out duplicates dropped (hetero.data.transfer), and the record
    the manifest keeps. Unlabeled images only feed terms that compare with the cloud's embedding; anything else is a
    config error."""
    from hetero.data.transfer import drop_heldout_duplicates, load_transfer

    if role != "edge" or not objective.needs_cloud_embedding:
        names = ", ".join(t.source for t in tcfg.transfer)
        raise InputError(
            f"transfer = [{names}]: unlabeled images only feed an edge's cloud-embedding terms "
            "(regression_l2, regression_cosine, regression_features, contrastive, distillation)"
        )
    found = load_transfer(tcfg.transfer, cfg.data, split.heldout_classes, progress)
    heldout = np.concatenate([split.query.images, split.gallery.images])

    def embed(x: np.ndarray) -> np.ndarray:
        return embed_clean(teacher, x, spec, progress, "cloud: transfer hygiene")

    return drop_heldout_duplicates(found, heldout, embed, tcfg.transfer_max_cosine)


def embed_clean(teacher: Teacher, images: np.ndarray, spec: InputSpec, progress: bool, desc: str) -> np.ndarray:
    """The cloud's unit embeddings of clean (unaugmented) uint8 images, batch by batch."""
    pre, out = Preprocess(spec, teacher.resolution), []
    with torch.no_grad():
        for s in tqdm(range(0, len(images), 64), desc=desc, disable=not progress, leave=False):
            out.append(teacher.features_and_embedding(pre(torch.from_numpy(np.asarray(images[s : s + 64]))))[1])
    return torch.cat(out).numpy() if out else np.zeros((0, teacher.embed_dim), np.float32)


def inherit_from_cloud(model: nn.Module, name: str, cloud: nn.Module | None, manifest: Manifest | None) -> None:
    """Start an edge member from the fine-tuned cloud (first blocks, leading channels, its embedding head): it begins
    near the function it has to match instead of at ImageNet features plus a random head."""
    from hetero.models.weights import inherit_weights

    if cloud is None or manifest is None:
        raise InputError("inherit_cloud = true needs the cloud checkpoint: pass --cloud")
    cloud_family = MODELS[manifest.model["name"]].family if manifest.model.get("name") in MODELS else None
    if MODELS[name].family != cloud_family:
        raise InputError(f"inherit_cloud: {name} ({MODELS[name].family}) is not of the cloud's family ({cloud_family})")
    info = inherit_weights(model, cloud.state_dict(), skip=())
    model.pretrained_info = {"source": f"cloud {manifest.sha256[:12]}", **info}


def share_cloud_head(model: nn.Module, name: str, cloud: nn.Module) -> None:
    """Give the edge the cloud's embedding head, frozen: only the backbone learns, and whatever features it
    produces are projected exactly as the cloud projects its own."""
    if model.num_features != cloud.num_features:
        raise InputError(
            f"share_cloud_head: {name} has {model.num_features} features, the cloud's head takes {cloud.num_features}"
        )
    model.head.load_state_dict(cloud.head.state_dict())
    model.head.requires_grad_(False)


def targets_for(teacher: Teacher, train_set, spec, tcfg, features, progress):
    """Rank 0 builds (or finds) the cache; the other ranks then read the same file. An embedding-file cloud gives
    each image's stored row instead (one clean view; `require_imported_cloud_fits` refused more)."""
    rows = teacher.stored_rows(train_set.ids, "training images")
    if rows is not None:
        return CloudTargets.clean(torch.from_numpy(rows)), {"cached": False, "source": "embedding file", "views": 1}
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


def require_imported_cloud_fits(teacher: Teacher, cfg: RunConfig, tcfg: TrainConfig, active: set[str]) -> None:
    """An imported cloud has no training config to compare; its dim and input size must be the run's. An embedding
    file has one stored row per image: no augmented or blended views, no unlabeled transfer images to embed."""
    size = (teacher.input.height, teacher.input.width)
    if size != (cfg.data.image_size, cfg.data.image_size):
        raise InputError(f"the cloud takes {size[0]}x{size[1]} pixels; set data.image_size = {size[0]}")
    uses_rows = any(LOSS_TERMS[k].needs_cloud_embedding for k in active)
    if teacher.kind == "embeddings" and uses_rows and (tcfg.cloud_views > 1 or tcfg.mix > 0 or tcfg.transfer):
        names = ", ".join(t.source for t in tcfg.transfer)
        raise ConfigError(
            "an embedding-file cloud has one stored embedding per image and no model to embed new ones: set "
            f"cloud_views = 1, mix = 0 and no transfer sources (got cloud_views {tcfg.cloud_views}, mix "
            f"{tcfg.mix:g}, transfer [{names}])"
        )


def prototypes_from_teacher(
    teacher: Teacher, train_set: ImageSet, spec: InputSpec, scale: float, progress: bool
) -> ClassPrototypes:
    """BCT's class prototypes from the cloud's embeddings of the clean labelled training images (no classifier)."""
    from hetero.training.cloud import prototypes_from_embeddings

    labels = torch.from_numpy(train_set.labels)
    rows = teacher.stored_rows(train_set.ids, "training images")
    if rows is None:
        rows = embed_clean(teacher, train_set.images, spec, progress, "cloud prototypes")
    return prototypes_from_embeddings(torch.from_numpy(rows), labels, scale)


def load_previous(tcfg: TrainConfig, weights: dict, cloud: Manifest | None) -> tuple[nn.Module, dict[str, str]]:
    """The released model a flip-aware term distils from: a checkpoint in the cloud's space (its embeddings are
    scored against the cloud's prototypes, so both must live there)."""
    if not any(LOSS_TERMS[k].reads_previous for k in check_weights(weights)):
        readers = ", ".join(sorted(k for k, t in LOSS_TERMS.items() if t.reads_previous))
        raise ConfigError(f"previous is read only by {readers}; add one of them")
    model, m = load_checkpoint(Path(tcfg.previous))
    if cloud is None or m.space.id != cloud.space.id:
        raise SpaceMismatchError(
            f"previous {tcfg.previous} is in space {m.space.id}, not the cloud's "
            f"{cloud.space.id if cloud is not None else '(no --cloud)'}"
        )
    return model.eval().requires_grad_(False), {"checkpoint": str(tcfg.previous), "sha256": m.sha256}


def lineage_record(role: str, cloud: Manifest | None) -> dict[str, str]:
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


def aligned_prototypes(
    teacher: Teacher, split: OpenSetSplit, spec: InputSpec, scale: float, progress: bool
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
        weight = prototypes_from_teacher(teacher, split.train, spec, base.scale, progress).weight.clone()
    weight[known] = base.weight[[row[mine[i]] for i in known]]
    return ClassPrototypes(weight, base.scale), {
        "from_classifier": len(known),
        "from_embeddings": len(mine) - len(known),
    }


def require_cloud_matches(manifest: Manifest, cfg: RunConfig, split: OpenSetSplit) -> None:
    """The cloud's classifier and gallery mean something only for the same dataset, held-out identities and dim.
    The share of training identities may differ (a v2 trained on more of them): BCT then matches identities."""
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
