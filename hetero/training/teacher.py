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
from typing import Protocol

import torch
import torch.nn.functional as F

from hetero.manifest import Manifest
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


class CheckpointTeacher:
    """A hetero cloud checkpoint as a teacher (frozen, eval mode). `model` stays reachable for what only a checkpoint
    of the same family can give: inheriting its weights or sharing its embedding head."""

    def __init__(self, model: torch.nn.Module, manifest: Manifest):
        self.model = model.eval().requires_grad_(False)
        self.manifest = manifest
        self.space, self.input, self.sha256 = manifest.space, manifest.input, manifest.sha256
        self.resolution = getattr(model, "resolution", None)
        self.embed_dim = int(model.head.out_features)
        self.feature_dim = int(model.head.in_features)

    @classmethod
    def load(cls, path: Path) -> CheckpointTeacher:
        from hetero.models.checkpoint import load_checkpoint

        return cls(*load_checkpoint(path))

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
