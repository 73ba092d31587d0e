"""What training needs from a cloud model — the teacher — and the hetero checkpoint as its first implementation.

Edge training never needs the cloud's code: it needs the cloud's embedding (and, for some terms, pooled features) of
each training view, optionally its class prototypes (BCT scores edge embeddings against them), and the space and
input spec those live in. A `Teacher` provides exactly that; loss terms receive tensors (`ClassPrototypes`, the
cached embeddings in a `Batch`), never a model. A user's ONNX/TorchScript cloud imported with `hetero cloud import`
is one too (`hetero.training.cloud.ImportedCloudTeacher`: no features, prototypes from its embeddings), and so is a
file of the cloud's embeddings (`hetero.training.table.EmbeddingTable`: stored rows by image id);
`hetero.training.cloud.load_teacher` picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from hetero.manifest import Manifest
from hetero.models.registry import embed_dim
from hetero.spaces import EmbeddingSpace, InputSpec


@dataclass(frozen=True)
class ClassPrototypes:
    """The cloud's class directions in its own space (unit rows) and the logit scale: BCT's frozen 'old classifier'."""

    weight: torch.Tensor  # [C, D], detached
    scale: float

    @classmethod
    def from_classifier(cls, classifier: torch.nn.Module) -> ClassPrototypes:
        return cls(F.normalize(classifier.weight.detach().clone(), dim=1), float(classifier.scale))

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * embedding @ self.weight.t()


class Teacher(Protocol):
    """What a cloud offers training. Capabilities are attributes, so the training loop asks instead of checking types:
    `model` is the frozen torch module when the teacher is a hetero checkpoint (its weights can be inherited and its
    head shared), else None; `stored_rows` answers for a file of stored embeddings (no model to embed new views)."""

    kind: str  # "checkpoint" (hetero's), "imported" (a user's model), "embeddings" (a file of rows)
    model: torch.nn.Module | None
    manifest: Manifest  # the cloud unit's manifest (checkpoint or imported model)
    space: EmbeddingSpace
    input: InputSpec
    sha256: str  # identity of the cloud: part of every cache key
    resolution: int | None  # compute size (None: the input size)
    embed_dim: int
    feature_dim: int | None  # pooled-feature width, when the teacher exposes features

    def features_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Normalised NCHW views at the teacher's compute size -> (pooled features or None, unit embeddings)."""
        ...

    def prototypes(self) -> ClassPrototypes | None: ...

    def with_prototypes(self, prototypes: ClassPrototypes) -> Teacher: ...

    def stored_rows(self, ids: Any, what: str) -> np.ndarray | None:
        """The stored embedding of each image id (a file of rows), or None: a model embeds views instead."""
        ...

    def require_defines_space(self) -> None:
        """Refuse a unit that does not define the space it names (an edge, an artifact, a foreign checkpoint)."""
        ...


class CheckpointTeacher:
    """A hetero cloud checkpoint as a teacher (frozen, eval mode). `model` stays reachable for what only a checkpoint
    of the same family can give: inheriting its weights or sharing its embedding head."""

    kind = "checkpoint"

    def __init__(
        self, model: torch.nn.Module, manifest: Manifest, path: Path | None = None, weights: Path | None = None
    ):
        self.model = model.eval().requires_grad_(False)
        self.manifest = manifest
        self.path, self.weights = path, weights
        self.space, self.input, self.sha256 = manifest.space, manifest.input, manifest.sha256
        self.resolution = getattr(model, "resolution", None)
        self.embed_dim = embed_dim(model)
        self.feature_dim = int(getattr(model.head, "in_features", self.embed_dim))  # linearised: its embedding

    @classmethod
    def load(cls, path: Path, loaded: tuple[Manifest, Path] | None = None) -> CheckpointTeacher:
        """`loaded`: the manifest and weights file already read (and sha256-verified) by the caller."""
        from hetero.models.checkpoint import load_checkpoint

        model, manifest = load_checkpoint(path, loaded)
        return cls(model, manifest, Path(path), loaded[1] if loaded else None)

    def stored_rows(self, ids: Any, what: str) -> None:
        return None

    def require_defines_space(self) -> None:
        from hetero.training.lineage import require_cloud  # an edge or a foreign checkpoint is no cloud

        require_cloud(self.manifest, self.path, self.weights)

    def features_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from hetero.models.registry import features_and_embedding

        return features_and_embedding(self.model, x)

    _override: ClassPrototypes | None = None

    def prototypes(self) -> ClassPrototypes | None:
        if self._override is not None:
            return self._override
        classifier = getattr(self.model, "classifier", None)
        return None if classifier is None else ClassPrototypes.from_classifier(classifier)

    def with_prototypes(self, prototypes: ClassPrototypes) -> CheckpointTeacher:
        """Use these prototypes instead of the classifier's (TrainConfig.prototypes = "embeddings")."""
        self._override = prototypes
        return self
