"""Lineage: which model a checkpoint was trained into the space of, and the check an upgrade must pass.

A cloud v2 trained into v1's space (`hetero train cloud --cloud V1`, a BCT-style objective) records its lineage
(`extra.lineage`: kind "upgrade", `compatible_with` v1's space id, v1's sha256), and its weights file carries the
same claim in its own metadata (hetero.models.checkpoint's stamp), which the manifest's sha256 covers. Before v2 embeds
a gallery that v1's users will search, all three must agree with the v1 cloud at hand; a v2 that claims a lineage it
was not trained for — an independently trained model whose manifest was edited, a v2 of another v1, a checkpoint
from before stamps — is refused with one line (exit 2). Whether v2 is *actually* compatible is then measured: the
gate's upgrade rules (hetero.release.gate) decide on v2's queries against v1's gallery.
"""

from __future__ import annotations

from pathlib import Path

from hetero.errors import InputError
from hetero.kinds import Format
from hetero.manifest import Manifest, load_manifest
from hetero.models.checkpoint import CLOUD_STAMP, OWN_SPACE, SPACE_STAMP, weights_stamp

UPGRADE = "upgrade"
ROLE = "cloud"  # extra["role"] of an imported cloud unit (hetero cloud import)
SPACE_KEY = "hetero.space_id"  # the space an imported cloud's wrapped graph was made for, in its metadata


def is_imported_cloud(m: Manifest) -> bool:
    return m.extra.get("role") == ROLE and m.format == Format.ONNX


def require_imported_cloud(path: Path, loaded: tuple[Manifest, Path] | None = None) -> tuple[Manifest, Path]:
    """An imported cloud defines its space: the id names the user's file's hash, and the wrapped graph (whose sha256
    the manifest verifies) carries the same id, so a manifest edited to claim another space is refused."""
    import onnx

    m, model_file = loaded if loaded is not None else load_manifest(path)
    if not is_imported_cloud(m):
        raise InputError(f"{path}: not an imported cloud unit (hetero cloud import)")
    src = str(m.source.get("model_sha256", ""))
    stamped = {p.key: p.value for p in onnx.load(str(model_file), load_external_data=False).metadata_props}
    if len(src) != 64 or not m.space.id.endswith(f"@{src[:12]}") or stamped.get(SPACE_KEY) != m.space.id:
        raise InputError(
            f"{path}: space {m.space.id} is not the one this imported model was wrapped for "
            f"({stamped.get(SPACE_KEY)!r}); import the cloud model again"
        )
    return m, model_file


def require_cloud(m: Manifest, where: object, weights: Path | None = None) -> None:
    """A cloud is the model whose weights define the space id (`<name>-<model>@<sha256 of its weights>`): an edge
    trained into that space, an artifact or another cloud's checkpoint would embed the gallery with the wrong model.
    A cloud imported with `hetero cloud import` defines its space by its user file's hash (hetero.training.cloud)."""
    if is_imported_cloud(m):
        require_imported_cloud(Path(str(where)))
        return
    if m.kind != "checkpoint" or m.format != "safetensors":
        raise InputError(
            f"{where}: a {m.format} {m.kind} is not a cloud model; pass the cloud's training checkpoint "
            "or a unit made by `hetero cloud import`"
        )
    if _is_checked_upgrade(m, Path(str(where)), weights):
        return  # a cloud v2 in v1's space: after a backfill it is the cloud that fills the gallery
    if not m.space.id.endswith(f"@{m.sha256[:12]}"):
        raise InputError(
            f"{where}: this checkpoint ({m.model.get('name')}) does not define space {m.space.id}: its weights are "
            f"{m.sha256[:12]}; pass the checkpoint of the cloud that defines the space"
        )


def _is_checked_upgrade(m: Manifest, where: Path, weights: Path | None = None) -> bool:
    """A cloud checkpoint trained into another cloud's space, whose weights carry that space
    (hetero.training.lineage)."""
    lineage = m.extra.get("lineage") or {}
    if lineage.get("kind") != UPGRADE or lineage.get("compatible_with") != m.space.id:
        return False
    return weights_stamp(weights or load_manifest(where)[1]).get(SPACE_STAMP) == m.space.id


def require_upgrade(path: Path, v1: Manifest) -> Manifest:
    """The manifest of the v2 checkpoint at `path`, after checking it was trained into `v1`'s space against `v1`."""
    m, weights = load_manifest(path)  # sha256 of the weights verified
    where = f"upgrade {path}"
    if m.kind != "checkpoint" or m.format != "safetensors":
        raise InputError(f"{where}: a {m.format} {m.kind}; an upgrade is the v2 cloud's training checkpoint")
    lineage = m.extra.get("lineage") or {}
    if lineage.get("kind") != UPGRADE:
        what = "an edge member" if lineage.get("kind") == "member" else "trained into no other model's space"
        raise InputError(f"{where}: not a cloud upgrade ({what}); train it with hetero train cloud --cloud V1")
    stamp = weights_stamp(weights)
    if not stamp:
        raise InputError(f"{where}: its weights carry no lineage stamp (written by an older hetero); retrain it")
    if stamp.get(SPACE_STAMP) == OWN_SPACE:
        raise InputError(
            f"{where}: its weights were trained for their own space (an independent model), not the cloud's "
            f"{v1.space.id!r}; its manifest claims a lineage it does not have"
        )
    claims = {
        "space in the manifest": m.space.id,
        "space it records compatibility with": lineage.get("compatible_with"),
        "space stamped in its weights": stamp.get(SPACE_STAMP),
    }
    for what, space in claims.items():
        if space != v1.space.id:
            raise InputError(f"{where}: {what} is {space!r}, not the cloud's {v1.space.id!r}")
    for what, sha in (("recorded", lineage.get("cloud_sha256")), ("stamped in its weights", stamp.get(CLOUD_STAMP))):
        if sha != v1.sha256:
            raise InputError(
                f"{where}: the cloud it was trained against ({what}) is {str(sha)[:12]}, not this cloud "
                f"({v1.sha256[:12]}): it is an upgrade of another cloud"
            )
    if m.space.dim != v1.space.dim:
        raise InputError(f"{where}: dim {m.space.dim}, the cloud's space has dim {v1.space.dim}")
    return m
