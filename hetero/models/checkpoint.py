"""Checkpoints: safetensors weights + manifest, written atomically, loaded with sha256 and space checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hetero.errors import ArtifactError, InputError, ManifestError
from hetero.io import atomic_dir, sha256_file
from hetero.manifest import Manifest, load_manifest, write_manifest
from hetero.models.linearised import Linearised
from hetero.models.registry import MODELS, create_model, embed_dim, model_cost
from hetero.spaces import EmbeddingSpace, InputSpec

WEIGHTS_NAME = "model.safetensors"
# Stamped into the weights file's own metadata, so the manifest's sha256 covers them: which space the weights were
# trained for ("own": the space their digest names) and the sha256 of the cloud they were trained against. A manifest
# edited to claim another space or another lineage then disagrees with its own weights and is refused.
# One metadata key holding sorted JSON: safetensors writes a metadata map in hash order, which would make two
# identical trainings hash differently.
STAMP_KEY = "hetero.lineage"
SPACE_STAMP = "space_id"
CLOUD_STAMP = "trained_against"
OWN_SPACE = "own"


def save_checkpoint(
    out_dir: Path,
    model: torch.nn.Module,
    *,
    model_name: str,
    input_spec: InputSpec,
    space: EmbeddingSpace | None,
    space_name: str,
    seed: int,
    extra: dict[str, Any],
    source: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> Manifest:
    """Write weights and manifest into `out_dir` as one unit.

    `space=None` means the model defines its own space (a cloud model, or an edge model trained without any cloud
    term): its id is derived from the weights' sha256, so any retraining yields a new, distinguishable space.
    """
    stamp = {
        SPACE_STAMP: space.id if space is not None else OWN_SPACE,
        CLOUD_STAMP: (source or {}).get("cloud_sha256", ""),
    }
    with atomic_dir(out_dir) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={STAMP_KEY: json.dumps(stamp, sort_keys=True)})
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        digest = sha256_file(tmp / WEIGHTS_NAME)
        if space is None:
            dim = embed_dim(model)
            space = EmbeddingSpace(id=f"{space_name}-{model_name}@{digest[:12]}", dim=dim, input=input_spec)
        entry = MODELS[model_name]
        manifest = Manifest(
            kind="checkpoint",
            file=WEIGHTS_NAME,
            sha256=digest,
            format="safetensors",
            precision="fp32",
            space=space,
            input=input_spec,
            model={
                "name": model_name,
                "family": entry.family,
                "role": entry.role,
                "embed_dim": embed_dim(model),
                "num_classes": int(model.classifier.weight.shape[0]),
                "scale": float(model.classifier.scale),
                "resolution": getattr(model, "resolution", None),
                **({"arch": model.arch} if getattr(model, "arch", None) else {}),
                **({"lqf": model.lqf_record()} if hasattr(model, "lqf_record") else {}),
                **model_cost(model, input_spec),
            },
            seed=seed,
            source=source or {},
            extra=extra,
        )
        write_manifest(tmp, manifest)
    return manifest


def load_checkpoint(path: Path, loaded: tuple[Manifest, Path] | None = None) -> tuple[torch.nn.Module, Manifest]:
    """Load a checkpoint unit (directory or its files) into an eval-mode model. `loaded`: its manifest and weights
    file as `load_manifest` returned them (sha256 verified), so a caller that already read them does not again."""
    manifest, weights = loaded if loaded is not None else load_manifest(path)
    if manifest.kind != "checkpoint" or manifest.format != "safetensors":
        raise InputError(f"{path} is a {manifest.format} {manifest.kind}, not a training checkpoint")
    m = manifest.model
    try:
        model = create_model(
            str(m["name"]),
            embed_dim=int(m["embed_dim"]),
            num_classes=int(m["num_classes"]),
            scale=float(m["scale"]),
            resolution=None if m.get("resolution") is None else int(m["resolution"]),
            arch=m.get("arch"),
        )
        if m.get("lqf"):  # trained linearised: the member around its starting weights, plus the weight change
            model = Linearised(model, tuple(m["lqf"]["stages"]), float(m["lqf"]["leak"]))
    except (KeyError, TypeError, ValueError, InputError) as e:
        raise ManifestError(f"{path}: manifest 'model' is not a model this hetero can build ({e})") from None
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{weights}: cannot load weights ({first})") from None
    _require_stamp_agrees(manifest, weights, path)
    return model.eval(), manifest


def weights_stamp(weights: Path) -> dict[str, str]:
    """The space and lineage stamped into a checkpoint's weights file ({} for one written before stamps existed)."""
    from safetensors import safe_open

    with safe_open(str(weights), "np") as f:
        raw = (f.metadata() or {}).get(STAMP_KEY)
    try:
        stamp = json.loads(raw) if raw is not None else {}
    except (ValueError, RecursionError):  # malformed, too deep, or a 5,000-digit number
        stamp = None
    if not isinstance(stamp, dict) or not all(isinstance(v, str) for v in stamp.values()):
        raise ManifestError(f"{weights}: its lineage stamp is not what hetero writes")
    return stamp


def _require_stamp_agrees(manifest: Manifest, weights: Path, where: Path) -> None:
    stamp = weights_stamp(weights)
    if not stamp:
        return  # written before stamps: its lineage cannot be proven (an upgrade refuses it, hetero.training.lineage)
    space = stamp.get(SPACE_STAMP, "")
    own = space == OWN_SPACE and manifest.space.id.endswith(f"@{manifest.sha256[:12]}")
    if not own and space != manifest.space.id:
        raise ManifestError(
            f"{where}: the manifest claims space {manifest.space.id}, but the weights were trained for "
            f"{'their own space' if space == OWN_SPACE else space}"
        )
    claimed, stamped = str(manifest.source.get("cloud_sha256", "")), stamp.get(CLOUD_STAMP, "")
    if stamped != claimed:
        raise ManifestError(
            f"{where}: the manifest names cloud {claimed[:12] or 'none'} as the one it was trained against, but the "
            f"weights were trained against {stamped[:12] or 'none'}"
        )
