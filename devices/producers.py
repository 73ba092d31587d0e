"""Query producers: who embeds the probes in a report — a torch checkpoint or an exported artifact on its runtime
(local, a runtime target, a remote device), a variant of one with another resize filter, or the cloud itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import hetero.devices.base as base
from hetero.data.datasets import ImageSet
from hetero.devices.loader import load
from hetero.errors import ManifestError, NotExecutedError
from hetero.frames import FrameRule
from hetero.manifest import Manifest, load_manifest
from hetero.release.fixture import Fixture
from hetero.training.table import EmbeddingTable, is_embedding_cloud


@dataclass
class Producer:
    name: str
    kind: str  # "candidate" (gated, must share the cloud's space) | "control" (ungated) | "previous" (older release)
    manifest: Manifest
    runtime: base.Runtime | None  # None: cannot execute here, or refused before running (`failure`)
    skip_reason: str = ""
    failure: str = ""  # the runtime could not load or run it (its message), or its version is below the minimum
    filter: str = ""  # the filter its probes are resized with ("": its frame rule's; kind "resize": another one)

    @property
    def rule(self) -> FrameRule:
        """The frame rule its probes go through: its manifest's, with `filter` in place of the stated one if set."""
        return replace(self.manifest.frame, filter=self.filter) if self.filter else self.manifest.frame

    def probes(self, fx: Fixture) -> np.ndarray:
        """The fixture's frames through this producer's frame rule, at its input size."""
        return fx.probes(self.rule.height, self.rule.width, self.rule.filter)


def open_producer(spec: str, kind: str, *, remote: Any = None, threads: int | None = None) -> Producer:
    """`NAME=PATH` or `PATH` (the name is then the unit's directory name). `remote`: a worker host —
    hetero.devices.remote.SSHHost, or a runtime target's hetero.devices.targets.LocalHost."""
    name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    p = Path(path)
    manifest, model_file = load_manifest(p)  # sha256 verified before anything else
    _require_stated_frame(manifest, model_file)
    unit = p if p.is_dir() else p.parent
    name = name or unit.name
    if remote is not None:
        from hetero.devices.remote import RemoteRuntime

        return Producer(f"{name}@{remote.label}", kind, manifest, RemoteRuntime(remote, p))
    try:
        return Producer(name, kind, manifest, load(p, threads))
    except NotExecutedError as e:
        return Producer(name, kind, manifest, None, str(e))


def _require_stated_frame(manifest: Manifest, model_file: Path) -> None:
    """The frame rule decides which pixels the gate feeds; the manifest is not hashed, the model file is: they
    must agree, or an edited manifest could choose the filter a verdict is decided with."""
    from hetero.export.requires import stated_frame

    try:
        stated = stated_frame(model_file, manifest.format)
    except Exception:  # a malformed file: its runtime refuses it on load, with its own message
        return
    if stated is not None and FrameRule.from_dict(stated) != manifest.frame:
        raise ManifestError(
            f"{model_file}: the file states frame rule {stated}, its manifest {manifest.frame.to_dict()}: "
            "the manifest was edited or belongs to another file"
        )


def resize_variants(producers: list[Producer], filters: list[str]) -> list[Producer]:
    """Each executable candidate again, its probes resized by each of `filters` other than its own (kind "resize",
    named `NAME [FILTER]`): what the same artifact does when the app's resize is another library's."""
    return [
        Producer(f"{p.name} [{f}]", "resize", p.manifest, p.runtime, p.skip_reason, p.failure, filter=f)
        for p in producers
        if p.kind == "candidate" and p.runtime is not None
        for f in filters
        if f != p.manifest.frame.filter
    ]


def open_cloud(path: Path) -> base.Runtime | EmbeddingTable:
    """The cloud a `--cloud` path names: a model on its runtime, or an imported embedding file (looked up by id)."""
    manifest, _ = load_manifest(path)
    if is_embedding_cloud(manifest):
        return EmbeddingTable(path)  # verifies that the space names the imported file
    from hetero.training.lineage import (
        require_cloud,  # lazily: it reads checkpoint stamps (torch), which `check` never needs
    )

    require_cloud(manifest, path)
    return load(path)


def cloud_embeddings(
    cloud: base.Runtime | EmbeddingTable, images: ImageSet, what: str, frames: bool = False
) -> np.ndarray:
    """The cloud's embeddings of `images`: computed by its model, or its stored rows for their ids. `frames`: the
    images are camera-like frames, which reach the model through its frame rule."""
    if isinstance(cloud, EmbeddingTable):
        return cloud.lookup(images.ids, what)
    return cloud.embed(cloud.manifest.frame.apply(images.images) if frames else images.images)


def open_upgrade(path: Path, cloud: base.Runtime | EmbeddingTable) -> base.Runtime:
    """A cloud v2 on its runtime, after its lineage was checked against the v1 `cloud` (hetero.training.lineage)."""
    from hetero.training.lineage import require_upgrade

    require_upgrade(path, cloud.manifest)
    return load(path)
