"""Compatibility objective: small composable loss terms, weighted from config (pytorch-metric-learning style).

Each term sees the embeddings being trained and their labels. Terms that need the frozen cloud model declare it
(`needs_cloud`); a model trained with any such term lives in the cloud's embedding space, otherwise in its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hetero.errors import ConfigError, InputError


class LossTerm(nn.Module):
    name: str = ""
    needs_cloud: bool = False

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Classification(LossTerm):
    """The model's own cosine-softmax classification: learns a discriminative space of its own."""

    name = "classification"

    def __init__(self, model: nn.Module, cloud: nn.Module | None):
        super().__init__()
        self.classifier = model.classifier

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(embedding), labels)


class BCTInfluence(LossTerm):
    """BCT influence loss (Shen et al., CVPR 2020): the frozen cloud classifier scores the edge embedding.

    Minimising it pulls edge embeddings towards the cloud's class prototypes, i.e. into the cloud's space.
    """

    name = "bct"
    needs_cloud = True

    def __init__(self, model: nn.Module, cloud: nn.Module | None):
        super().__init__()
        if cloud is None:
            raise InputError("loss term 'bct' needs the frozen cloud model (pass --cloud CHECKPOINT)")
        self.cloud_classifier = cloud.classifier
        for p in self.cloud_classifier.parameters():
            p.requires_grad_(False)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.cloud_classifier(embedding), labels)


LOSS_TERMS: dict[str, type[LossTerm]] = {t.name: t for t in (Classification, BCTInfluence)}

# Named objectives for the CLI's --objective; config `loss_weights` can give any other combination.
OBJECTIVES: dict[str, dict[str, float]] = {
    "bct": {"classification": 1.0, "bct": 1.0},
    "independent": {"classification": 1.0},
}


class CompatibilityObjective(nn.Module):
    def __init__(self, terms: dict[str, LossTerm], weights: dict[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    @property
    def needs_cloud(self) -> bool:
        return any(t.needs_cloud for t in self.terms.values())

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {name: term(embedding, labels) for name, term in self.terms.items()}
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, {n: float(v.detach()) for n, v in parts.items()}


def build_objective(weights: dict[str, float], model: nn.Module, cloud: nn.Module | None) -> CompatibilityObjective:
    unknown = [k for k in weights if k not in LOSS_TERMS]
    if unknown:
        raise ConfigError(f"unknown loss term {unknown[0]!r} (available: {', '.join(sorted(LOSS_TERMS))})")
    active = {k: w for k, w in weights.items() if w != 0.0}
    if not active:
        raise ConfigError("loss_weights has no non-zero term")
    return CompatibilityObjective({k: LOSS_TERMS[k](model, cloud) for k in active}, active)
