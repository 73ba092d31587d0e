"""Compatibility objective: small composable loss terms, weighted from config (pytorch-metric-learning style).

Each term reads what it needs from a `Batch`: the embeddings being trained, the model's own classifier logits,
labels, and (for terms that compare against the frozen cloud model) the cloud embedding of the *same augmented view*,
which comes from a cache so the cloud model is never re-run during edge training.

Two flags per term decide how a run is wired and what it may claim:
- `needs_cloud`: the term needs the frozen cloud checkpoint (classifier and/or embeddings);
- `aligns_space`: minimising it pulls the embedding into the cloud's space. A model trained with any such term is
  saved as a member of the cloud space; logit distillation uses the cloud but does not align (it is the negative
  control), so its model keeps a space of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hetero.config import OBJECTIVES  # noqa: F401  (presets are plain data; the CLI reads them without torch)
from hetero.errors import ConfigError, InputError
from hetero.training.teacher import ClassPrototypes, Teacher


@dataclass
class Batch:
    embedding: torch.Tensor  # [B, D] unit-length, being trained
    logits: torch.Tensor  # [B, C] the model's own classifier
    labels: torch.Tensor  # [B]
    cloud_embedding: torch.Tensor | None = None  # [B, D] frozen cloud model, same view (unit-length)
    # Blended views (mixup): the partner image's labels and the own image's weight; None when nothing is blended.
    partner_labels: torch.Tensor | None = None
    lam: torch.Tensor | None = None
    # [B, D] the previous release's embedding of the same view (TrainConfig.previous): what flip-aware terms distil
    previous_embedding: torch.Tensor | None = None
    # Pooled backbone features (before the embedding head) of the model and of the cloud, same view.
    features: torch.Tensor | None = None  # [B, F]
    cloud_features: torch.Tensor | None = None  # [B, F]
    raw_embedding: torch.Tensor | None = None  # [B, D] the head's output before L2 normalisation

    def cross_entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Class cross-entropy over labelled images (label -1: unlabeled, skipped); for a blended view, the blend
        of both images' losses (mixup's target), normalised by the label weight actually present."""
        if self.lam is None and bool((self.labels >= 0).all()):
            return F.cross_entropy(logits, self.labels)
        lam = self.lam if self.lam is not None else torch.ones(len(self.labels))
        partner = self.partner_labels if self.partner_labels is not None else self.labels
        w_own, w_other = lam * (self.labels >= 0), (1 - lam) * (partner >= 0)
        total = w_own.sum() + w_other.sum()
        if float(total) == 0.0:
            return logits.sum() * 0.0  # nothing labelled in this batch: no class signal, no NaN
        own = F.cross_entropy(logits, self.labels.clamp(min=0), reduction="none")
        other = F.cross_entropy(logits, partner.clamp(min=0), reduction="none")
        return (w_own * own + w_other * other).sum() / total


def _prototypes(term: str, teacher: Teacher) -> ClassPrototypes:
    """The teacher's class prototypes as tensors (buffers, never parameters: the cloud space must not move)."""
    protos = teacher.prototypes()
    if protos is None:
        raise InputError(f"loss term {term!r} needs the cloud's class prototypes; this teacher has none")
    return protos


class LossTerm(nn.Module):
    name: str = ""
    needs_cloud: bool = False
    needs_cloud_embedding: bool = False
    needs_cloud_features: bool = False
    needs_prototypes: bool = False  # reads the cloud's class prototypes (classifier, or means of its embeddings)
    reads_previous: bool = False  # distils from the previous release when one is given (TrainConfig.previous)
    aligns_space: bool = False

    def __init__(self, teacher: Teacher | None):
        super().__init__()
        if self.needs_cloud and teacher is None:
            raise InputError(
                f"loss term {self.name!r} needs the frozen cloud model: pass --cloud CHECKPOINT "
                "(or --objective independent)"
            )
        if self.needs_prototypes:  # buffers, never parameters: the cloud space must not move
            protos = _prototypes(self.name, teacher)
            self.register_buffer("prototypes", protos.weight)
            self.scale = protos.scale

    def forward(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError


class Classification(LossTerm):
    """The model's own cosine-softmax classification: learns a discriminative space of its own."""

    name = "classification"

    def forward(self, batch: Batch) -> torch.Tensor:
        return batch.cross_entropy(batch.logits)


class BCTInfluence(LossTerm):
    """BCT influence loss (Shen et al., CVPR 2020): the frozen cloud classifier scores the edge embedding.

    Minimising it pulls edge embeddings towards the cloud's class prototypes, i.e. into the cloud's space. It needs
    only the classifier weights, never a cloud forward pass.
    """

    name = "bct"
    needs_cloud = True
    needs_prototypes = True
    aligns_space = True

    def forward(self, batch: Batch) -> torch.Tensor:
        return batch.cross_entropy(self.scale * batch.embedding @ self.prototypes.t())


class _CloudTerm(LossTerm):
    needs_cloud = True
    needs_cloud_embedding = True
    aligns_space = True


class RegressionL2(_CloudTerm):
    """Feature regression: squared L2 distance to the cloud embedding of the same view (2 - 2 cos for unit vectors)."""

    name = "regression_l2"

    def forward(self, batch: Batch) -> torch.Tensor:
        return (batch.embedding - batch.cloud_embedding).pow(2).sum(dim=1).mean()


class RegressionLinear(_CloudTerm):
    """Least squares of the head's output *before* normalisation onto the cloud embedding: for a linearised member
    (LQF, `train --lqf`) a convex quadratic in the weight change; for any other member the same loss, so the two are
    compared on one objective. Its Gauss-Newton curvature is what LQF's K-FAC step approximates."""

    name = "regression_linear"

    def forward(self, batch: Batch) -> torch.Tensor:
        if batch.raw_embedding is None:
            raise InputError("regression_linear needs the head's output before normalisation (raw_embedding)")
        return (batch.raw_embedding - batch.cloud_embedding).pow(2).sum(dim=1).mean()


class PreviousLinear(_CloudTerm):
    """LQF's compatibility penalty for a release that replaces another: least squares of the head's output before
    normalisation onto the previous release's embedding of the same view (TrainConfig.previous).

    With `regression_linear` at weight 1 and this term at weight β, the objective is (1 + β)·‖z − t_β‖² plus a
    constant, with t_β = (cloud + β·previous) / (1 + β): for a linearised model the whole trade between following
    the cloud (error) and keeping the old answers (flips) is one convex quadratic per β, and β is the knob."""

    name = "previous_linear"
    reads_previous = True

    def forward(self, batch: Batch) -> torch.Tensor:
        if batch.raw_embedding is None or batch.previous_embedding is None:
            raise InputError("previous_linear needs the head's raw output and the previous release's embedding")
        return (batch.raw_embedding - batch.previous_embedding).pow(2).sum(dim=1).mean()


class RegressionCosine(_CloudTerm):
    """Feature regression on direction only: 1 - cos(edge, cloud); what cosine retrieval actually compares."""

    name = "regression_cosine"

    def forward(self, batch: Batch) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(batch.embedding, batch.cloud_embedding, dim=1)).mean()


class RegressionFeatures(_CloudTerm):
    """Regression of the pooled backbone features (mean squared error per feature) to the cloud's, same view.

    Used with `share_cloud_head = true`, where the edge's embedding *is* the cloud's frozen head applied to these
    features (reusing the teacher's last layer, SimKD: Chen et al., CVPR 2022): the backbone then learns the cloud's
    full feature vector (1,280 numbers per view for the Lite family) instead of its 128-d projection, a denser
    signal from the same images.
    """

    name = "regression_features"
    needs_cloud_features = True

    def forward(self, batch: Batch) -> torch.Tensor:
        return (batch.features - batch.cloud_features).pow(2).mean()


class CrossModelContrastive(_CloudTerm):
    """InfoNCE with edge embeddings as queries and cloud embeddings as keys (positive: the same image's view).

    Other images of the same class are masked out of the negatives: in a class-labelled batch they are not
    negatives, and pushing them away would fight the classification terms.
    """

    name = "contrastive"
    temperature = 0.07

    def forward(self, batch: Batch) -> torch.Tensor:
        sim = batch.embedding @ batch.cloud_embedding.t() / self.temperature
        same = (batch.labels[:, None] == batch.labels[None, :]) & (batch.labels[:, None] >= 0)  # -1: unlabeled
        eye = torch.eye(len(sim), dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(same & ~eye, float("-inf"))
        return F.cross_entropy(sim, torch.arange(len(sim), device=sim.device))


class LogitDistillation(_CloudTerm):
    """Hinton-style logit distillation: the model's own classifier matches the cloud's softened class posterior.

    The negative control of the literature: the student learns what the teacher predicts, not where the teacher
    puts embeddings, so it gains little compatibility.
    """

    name = "distillation"
    aligns_space = False
    needs_prototypes = True
    temperature = 4.0

    def forward(self, batch: Batch) -> torch.Tensor:
        t = self.temperature
        with torch.no_grad():
            teacher = F.softmax(self.scale * batch.cloud_embedding @ self.prototypes.t() / t, dim=1)
        student = F.log_softmax(batch.logits / t, dim=1)
        return F.kl_div(student, teacher, reduction="batchmean") * t * t


class RelationalDistillation(_CloudTerm):
    """Relational (contextual similarity) distillation for asymmetric retrieval: the edge embedding's similarities
    to a bank of cloud embeddings should rank that bank as the cloud's own embedding does (CSD, CVPR 2022; D3still,
    CVPR 2024). Regression matches each vector; this matches the neighbourhood a query sees in the cloud gallery,
    which is what retrieval reads. The bank is the batch's cloud embeddings (the same views, other images), so it
    costs no extra cloud pass; KL(cloud's softmax || edge's) over it at temperature 0.1, the edge side with grad.
    """

    name = "relational"
    temperature = 0.1

    def forward(self, batch: Batch) -> torch.Tensor:
        bank, t = batch.cloud_embedding, self.temperature
        with torch.no_grad():
            target = F.softmax(batch.cloud_embedding @ bank.t() / t, dim=1)
        log_p = F.log_softmax(batch.embedding @ bank.t() / t, dim=1)
        return F.kl_div(log_p, target, reduction="batchmean")


class FocalDistillation(_CloudTerm):
    """Focal distillation (positive-congruent training, Yan et al., CVPR 2021): match the old model's posterior,
    weighted up where the old model was right, so the new model keeps the old one's correct answers (fewer negative
    flips) without copying its mistakes.

    Per view: (alpha + beta * [old model right]) * KL(old || new) over the frozen class prototypes at temperature T.
    Both posteriors are scored against the same prototypes (the old model's classifier, or its embedding means for
    identities it never saw), so the term compares where the two models put the view in the *shared* space — what
    a retrieval flip depends on. The old model is the `--cloud` teacher (v1 when training a cloud v2 into its
    space), or the previous release when one is given (TrainConfig.previous: edge release N -> N+1).
    """

    name = "focal_distillation"
    needs_prototypes = True
    reads_previous = True
    alpha, beta, temperature = 1.0, 5.0, 4.0  # the paper's alpha = 1, beta = 5

    def forward(self, batch: Batch) -> torch.Tensor:
        t = self.temperature
        before = batch.previous_embedding if batch.previous_embedding is not None else batch.cloud_embedding
        with torch.no_grad():
            old_logits = self.scale * before @ self.prototypes.t()
            old = F.softmax(old_logits / t, dim=1)
            right = (old_logits.argmax(dim=1) == batch.labels) & (batch.labels >= 0)
            weight = self.alpha + self.beta * right.float()
        new = F.log_softmax(self.scale * batch.embedding @ self.prototypes.t() / t, dim=1)
        kl = (old * (old.clamp_min(1e-12).log() - new)).sum(dim=1)
        return (weight * kl).sum() / weight.sum() * t * t


class PlainDistillation(FocalDistillation):
    """Focal distillation's baseline: the same KL to the old model's posterior, every view weighted alike."""

    name = "plain_distillation"
    beta = 0.0


LOSS_TERMS: dict[str, type[LossTerm]] = {
    t.name: t
    for t in (
        Classification,
        BCTInfluence,
        RegressionL2,
        RegressionLinear,
        PreviousLinear,
        RegressionCosine,
        RegressionFeatures,
        CrossModelContrastive,
        LogitDistillation,
        RelationalDistillation,
        FocalDistillation,
        PlainDistillation,
    )
}


class CompatibilityObjective(nn.Module):
    def __init__(self, terms: dict[str, LossTerm], weights: dict[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    @property
    def needs_cloud(self) -> bool:
        return any(t.needs_cloud for t in self.terms.values())

    @property
    def needs_cloud_embedding(self) -> bool:
        return any(t.needs_cloud_embedding for t in self.terms.values())

    @property
    def needs_cloud_features(self) -> bool:
        return any(t.needs_cloud_features for t in self.terms.values())

    @property
    def aligns_space(self) -> bool:
        return any(t.aligns_space for t in self.terms.values())

    @property
    def uses_own_classifier(self) -> bool:
        return any(isinstance(t, Classification | LogitDistillation) for t in self.terms.values())

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {name: term(batch) for name, term in self.terms.items()}
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, {n: float(v.detach()) for n, v in parts.items()}


def check_weights(weights: dict[str, float]) -> dict[str, float]:
    """The non-zero terms of `weights`, after refusing unknown names and bad values (before any data loads)."""
    unknown = [k for k in weights if k not in LOSS_TERMS]
    if unknown:
        raise ConfigError(f"unknown loss term {unknown[0]!r} (available: {', '.join(sorted(LOSS_TERMS))})")
    negative = [k for k, w in weights.items() if not (math.isfinite(w) and w >= 0)]
    if negative:
        raise ConfigError(f"loss weight for {negative[0]!r} must be finite and >= 0 ({weights[negative[0]]})")
    active = {k: w for k, w in weights.items() if w != 0.0}
    if not active:
        raise ConfigError("loss_weights has no non-zero term")
    return active


def build_objective(weights: dict[str, float], teacher: Teacher | None) -> CompatibilityObjective:
    active = check_weights(weights)
    return CompatibilityObjective({k: LOSS_TERMS[k](teacher) for k in active}, active)
