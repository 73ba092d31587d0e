"""The training loop: one for every role and objective, resumable after a kill, the same under torchrun.

Rank 0 saves the whole state (weights, optimiser, schedule, RNG) after every epoch; a resumed run continues
bit-for-bit on the same machine. Every rank draws the same permutation and views and takes its slice of each
global batch, so the effective batch and schedule do not depend on the number of processes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from hetero.config import LqfConfig, TrainConfig
from hetero.data.datasets import ImageSet
from hetero.errors import DivergenceError, InputError
from hetero.io import atomic_write, atomic_write_text, parse_json
from hetero.models.linearised import Linearised
from hetero.models.registry import Preprocess, features_and_embedding
from hetero.spaces import InputSpec
from hetero.training import distributed
from hetero.training.losses import Batch, CompatibilityObjective
from hetero.training.lqf import KFAC, LEAST_SQUARES, fit_head
from hetero.training.qat import freeze_batchnorm
from hetero.training.targets import CloudTargets, OnlineTargets, render, sample_views

METRICS_NAME = "metrics.jsonl"


class TrainStep(nn.Module):
    """What DDP wraps: one forward that yields everything loss terms read (the own classifier included)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.model.forward_features(x)
        raw = self.model.head(feats)  # norm(head(features)) is every member's embedding (features_and_embedding)
        emb = self.model.norm(raw)
        return feats, raw, emb, self.model.classifier(emb)


@dataclass
class _Run:
    """What every step of one training run reads: the step module, objective, data, targets and the rank's slice."""

    step: nn.Module
    objective: CompatibilityObjective
    x: torch.Tensor
    y: torch.Tensor
    pre: Preprocess
    cfg: TrainConfig
    targets: CloudTargets | OnlineTargets | None
    previous: nn.Module | None
    prev_pre: Preprocess | None
    opt: torch.optim.Optimizer
    sched: Any

    def batch(self, gidx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One optimisation step on this rank's share of a global batch; returns [loss, *terms, 1] × images."""
        n_rank, n_world = distributed.rank(), distributed.world()
        cloud_emb = cloud_feats = None
        if self.targets is not None:
            views, cloud_emb, cloud_feats = self.targets.for_batch(gidx, gen)
        else:
            views = sample_views(gidx, len(self.x), gen, augment=self.cfg.augment, mix=self.cfg.mix)
        mine = slice(n_rank, None, n_world)
        idx, mine_views = gidx[mine], views[mine]
        kfac = self.opt if isinstance(self.opt, KFAC) else None
        pixels = render(self.pre, self.x, idx, mine_views)
        if kfac is not None:
            kfac.arm()
        feats, raw, emb, logits = self.step(pixels)
        if kfac is not None:
            kfac.observe(raw)
        prev_emb = None
        if self.previous is not None:  # the released model on the same views, at its own compute size
            with torch.no_grad():
                prev_emb = features_and_embedding(self.previous, render(self.prev_pre, self.x, idx, mine_views))[1]
        mixed = mine_views.blended
        batch = Batch(
            emb,
            logits,
            self.y[idx],
            None if cloud_emb is None else cloud_emb[mine],
            partner_labels=self.y[mine_views.partner] if mixed else None,
            lam=mine_views.lam if mixed else None,
            features=feats,
            cloud_features=None if cloud_feats is None else cloud_feats[mine],
            previous_embedding=prev_emb,
            raw_embedding=raw,
        )
        loss, parts = self.objective(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return torch.tensor([float(loss.detach()), *parts.values(), 1.0], dtype=torch.float64) * len(idx)

    def probe_batches(self, seed: int):
        """Every training image once, one cached view each, with the cloud's embedding of it (own generator: the
        training's draws are unchanged)."""
        gen = torch.Generator().manual_seed(seed + 7919)
        for gidx in torch.arange(len(self.x)).split(self.cfg.batch_size):
            views, cloud_emb, _ = self.targets.for_batch(gidx, gen)
            yield render(self.pre, self.x, gidx, views), cloud_emb

    def epoch(self, epoch: int, gen: torch.Generator) -> dict[str, Any]:
        """One pass over a seeded permutation; the epoch's mean loss terms, reduced over ranks."""
        t0, sums = time.perf_counter(), torch.zeros(len(self.objective.terms) + 2, dtype=torch.float64)
        n_world = distributed.world()
        for gidx in torch.randperm(len(self.x), generator=gen).split(self.cfg.batch_size):
            if len(gidx) < 2 * n_world:
                continue  # a ragged last batch too small to give every rank two images (BatchNorm needs them)
            sums += self.batch(gidx, gen)
        if n_world > 1:
            torch.distributed.all_reduce(sums)
        n_seen = float(sums[-1])
        if n_seen == 0:
            raise InputError(f"epoch {epoch + 1} trained on no batch: batch_size {self.cfg.batch_size} is too small")
        if not torch.isfinite(sums).all():  # all ranks see the same reduced sums, so all stop together
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1}: the loss is not finite (lr {self.cfg.lr:g}); "
                "nothing was written for this epoch"
            )
        means = dict(zip(["loss", *self.objective.terms.keys()], (sums[:-1] / n_seen).tolist(), strict=True))
        return {"epoch": epoch + 1, **means, "images": int(n_seen), "seconds": round(time.perf_counter() - t0, 3)}


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
    lqf: LqfConfig | None = None,
) -> list[dict[str, Any]]:
    """Minimise `objective` over `train`; returns one metrics dict per epoch.

    With `state_dir`, rank 0 saves the full training state (weights, optimiser, schedule, RNG) after every epoch and
    rewrites `metrics.jsonl`; `resume=True` continues from there, bit-for-bit on the same machine. Under torchrun
    every rank draws the same permutation and views (one generator, same seed) and takes its slice of each global
    batch, so the effective batch and schedule do not depend on the number of processes.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    params = list({id(p): p for p in params}.values())
    if lqf is not None:  # a linearised model: its quadratic, K-FAC preconditioned (hetero.training.lqf)
        curvature = sum(w for k, w in objective.weights.items() if k in LEAST_SQUARES)
        lr, opt = lqf.lr, KFAC(model, lqf, lqf.lr, cfg.weight_decay, cfg.seed, curvature=curvature)
    else:
        lr, opt = cfg.lr, torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, cfg.epochs * steps_per_epoch), pct_start=0.15, cycle_momentum=lqf is None
    )  # K-FAC keeps [lqf] momentum
    history: list[dict[str, Any]] = []
    state_path = state_dir / "state.pt" if state_dir is not None else None
    if resume and state_path is not None and state_path.is_file():
        history = _load_state(state_path, fingerprint, model, opt, sched, gen)
    step = TrainStep(model)
    if distributed.world() > 1:
        step = DDP(step, find_unused_parameters=not objective.uses_own_classifier)
    run = _Run(
        step, objective, torch.from_numpy(train.images), torch.from_numpy(train.labels),
        Preprocess(spec, getattr(model, "resolution", None)), cfg, targets, previous,
        Preprocess(spec, getattr(previous, "resolution", None)) if previous is not None else None, opt, sched,
    )  # fmt: skip
    probe = {}
    if _probes_head(cfg, lqf) and not history and targets is not None:
        net = model.model if isinstance(model, Linearised) else model
        probe["head_probe_mse"] = round(fit_head(net, run.probe_batches(cfg.seed), cfg.head_ridge), 6)
    model.train()
    if cfg.qat:
        freeze_batchnorm(model)  # normalise as deployed: the rounded weights are learned against running statistics
    show = progress and distributed.is_main()
    bar = tqdm(range(len(history), cfg.epochs), desc=desc, disable=not show, leave=False, unit="epoch",
               initial=len(history), total=cfg.epochs)  # fmt: skip
    for epoch in bar:
        row = run.epoch(epoch, gen) | (probe if epoch == 0 else {})
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if state_path is not None and distributed.is_main():
            _save_state(state_path, fingerprint, model, opt, sched, gen, history)
        distributed.barrier()
    model.eval()
    return history


def _probes_head(cfg: TrainConfig, lqf: LqfConfig | None) -> bool:
    return cfg.head_init == "probe" or (cfg.head_init == "auto" and lqf is not None)


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
    atomic_write_text(path.parent / METRICS_NAME, jsonl(history))


def jsonl(rows: list[dict]) -> str:
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
