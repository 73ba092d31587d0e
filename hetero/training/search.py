"""Compatibility-aware architecture search: the edge, reshaped stage by stage from the cloud's family, that lands
best in the cloud's space within a compute budget.

Why this shape (Duggal et al., CVPR 2021, CMP-NAS): an edge must approximate the cloud's *architecture* to reproduce
its function on unseen identities, so candidates are sub-networks of one reshapable member (per-stage width, depth,
depthwise kernel and the compute resolution), inheriting its weights (first blocks, leading channels, kernel
centres: `hetero.models.mbnet`). A cheap proxy ranks them — a short training against the cached cloud views — and the
top few are trained fully; the best of those is retrained on every training identity and written as a normal checkpoint.

Ranking never looks at the held-out identities a benchmark or the gate measures: `[search] validation_classes` of the
*training* identities are held out of every search training and their images form a validation query/gallery pair
(same style rule as the run's split); candidates are ranked by edge → cloud R@1 there. Every trial is appended to
`trials.jsonl` as it finishes, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetero.batching import embed_batches
from hetero.config import RunConfig, override, to_dict
from hetero.data.datasets import OpenSetSplit, load_dataset, open_set_split
from hetero.errors import InputError
from hetero.io import atomic_write_json, atomic_write_text, ensure_writable_dir, parse_json, read_json
from hetero.manifest import Manifest
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import MODELS, EmbeddingGraph, create_model
from hetero.release.metrics import retrieval_metrics
from hetero.release.plots import pareto_front
from hetero.training.candidates import Candidate, sample_candidates

TRIALS = "trials.jsonl"
Latency = Callable[[EmbeddingGraph, int, str], float]  # (deployable graph, threads, format) -> batch-1 ms
RESULT = "search.json"
BEST = "best"


@dataclass
class Trial:
    """A candidate trained for one stage: `proxy` (short, ranks) or `full` (the configured epochs)."""

    stage: str
    key: str
    candidate: Candidate
    macs: int
    macs_ratio: float  # of the cloud's MACs
    latency_ms: float | None
    val_recall_at_1: float
    val_edge_to_edge: float
    val_cosine: float  # mean cos(edge, cloud) of the validation queries: how closely the edge reproduces the cloud
    seconds: float

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["candidate"] = self.candidate.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Trial:
        """A logged trial, its types checked (TypeError/ValueError otherwise): ranking compares these numbers."""
        c = d["candidate"]
        t = cls(**{**d, "candidate": Candidate(c["arch"], int(c["resolution"]), str(c.get("model", "")))})
        numbers = (t.macs_ratio, t.val_recall_at_1, t.val_edge_to_edge, t.val_cosine, t.seconds)
        if t.stage not in ("proxy", "full") or not isinstance(t.key, str) or not isinstance(t.macs, int):
            raise TypeError("stage, key or macs of the wrong kind")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise ValueError("a trial's measurements are not finite numbers")
        if not isinstance(t.candidate.arch, dict):
            raise TypeError("candidate arch is not a table")
        return t


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial  # the full trial ranked first on validation
    checkpoint: Path  # `best` retrained on every training identity
    cloud_macs: int
    budget_macs: int
    pareto: list[str] = field(default_factory=list)  # keys of full trials no other full trial beats (MACs, R@1)
    seconds: float = 0.0  # wall time of the trials and the final training, resumed parts included

    def to_json(self) -> dict[str, Any]:
        return {
            "best": self.best.to_json(),
            "checkpoint": str(self.checkpoint),
            "cloud_macs": self.cloud_macs,
            "budget_macs": self.budget_macs,
            "pareto": self.pareto,
            "seconds": round(self.seconds, 1),
            "trials": [t.to_json() for t in self.trials],
        }


def base_model(cfg: RunConfig, cloud_model: str) -> str:
    """The member candidates are cut from: `[search] base`, else the cloud's own model (if reshapable)."""
    name = cfg.search.base or cloud_model
    if name not in MODELS or not MODELS[name].reshapable:
        reshapable = ", ".join(sorted(n for n, e in MODELS.items() if e.reshapable))
        raise InputError(f"search base {name!r} is not a reshapable member; set [search] base (one of: {reshapable})")
    return name


def validation_split(cfg: RunConfig, split: OpenSetSplit) -> OpenSetSplit:
    """Training identities split again: `validation_classes` of them held out (seeded by `[search] seed`), their
    images paired as query/gallery by the run's own rule. Class ids stay the dataset's, so BCT's prototypes match."""
    data = load_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data)
    inner = data.subset(np.flatnonzero(np.isin(data.labels, np.asarray(split.train_classes))))
    n = cfg.search.validation_classes
    dcfg = dataclasses.replace(cfg.data, heldout_classes=n, seed=cfg.search.seed, train_class_share=1.0)
    return open_set_split(inner, dcfg)


class ValidationScorer:
    """The cloud's validation gallery and queries, embedded once; scores an edge checkpoint against them."""

    def __init__(self, cloud: torch.nn.Module, manifest: Manifest, val: OpenSetSplit):
        self.manifest = manifest
        graph = EmbeddingGraph(cloud, manifest.input).eval()
        self.val = val
        self.gallery = _embed(graph, val.gallery.images)
        self.query = _embed(graph, val.query.images)

    @classmethod
    def load(cls, cloud: Path, val: OpenSetSplit) -> ValidationScorer:
        return cls(*load_checkpoint(cloud), val)

    def score(self, edge: Path) -> dict[str, float]:
        model, m = load_checkpoint(edge)
        graph = EmbeddingGraph(model, m.input).eval()
        q, g = _embed(graph, self.val.query.images), _embed(graph, self.val.gallery.images)
        ql, gl = self.val.query.labels, self.val.gallery.labels
        return {
            "val_recall_at_1": float(retrieval_metrics(q, ql, self.gallery, gl)["recall_at_1"]),
            "val_edge_to_edge": float(retrieval_metrics(q, ql, g, gl)["recall_at_1"]),
            "val_cosine": float((q * self.query).sum(1).mean()),
        }


def _embed(graph: EmbeddingGraph, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return embed_batches(lambda b: graph(torch.from_numpy(b)).numpy(), images)


def _config_hash(cfg: RunConfig, cloud_sha: str, weights: dict[str, float]) -> str:
    meta = {"data": to_dict(cfg.data), "edge": to_dict(cfg.edge), "search": to_dict(cfg.search), "cloud": cloud_sha}
    meta["weights"] = weights
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=list).encode()).hexdigest()[:16]


def _read_trials(path: Path) -> list[Trial]:
    if not path.is_file():
        return []
    trials, seen = [], set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            t = Trial.from_json(parse_json(line, str(path)))
        except (InputError, KeyError, TypeError, ValueError, AttributeError):
            continue  # a line cut short by an interruption (or garbled): that trial runs again, the others stay
        if (t.stage, t.key) not in seen:
            seen.add((t.stage, t.key))
            trials.append(t)
    return trials


def search(
    cfg: RunConfig,
    cloud: Path,
    out: Path,
    *,
    split: OpenSetSplit,
    loss_weights: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    latency: Latency | None = None,
) -> SearchResult:
    """Run (or resume) the search of `cfg.search` for an edge in `cloud`'s space; everything lands under `out`.

    `latency` measures a candidate's deployable graph on the runtime `[search] latency_format` names
    (`hetero.devices.bench.graph_latency_ms`); it is needed only for `[search] budget_ms`. A directory holding a
    search of another config, cloud or objective is refused (exit 2) rather than mixed in.
    """
    from hetero.training.train import train

    say = progress or (lambda _msg: None)
    scfg = cfg.search
    out = Path(out)
    cloud_model, cm = load_checkpoint(cloud)  # the manifest sets the budget; the model embeds the validation set
    base = base_model(cfg, str(cm.model["name"]))
    ensure_writable_dir(out)
    weights = dict(loss_weights if loss_weights is not None else cfg.edge.loss_weights)
    _claim(out, {"config": _config_hash(cfg, cm.sha256, weights), "base": base})
    spec = cm.input
    cloud_macs = int(cm.model["macs"])
    budget = int(scfg.budget_macs * cloud_macs)
    measured: dict[str, float] = {}
    fits = _latency_fits(scfg, spec, latency, measured)

    val = validation_split(cfg, split)
    scorer = ValidationScorer(cloud_model, cm, val)
    log = out / TRIALS
    trials = _read_trials(log)
    done = {(t.stage, t.key): t for t in trials}
    atomic_write_text(log, "".join(json.dumps(t.to_json(), sort_keys=True) + "\n" for t in trials))

    def run(cand: Candidate, epochs: int, on: OpenSetSplit, dest: Path) -> float:
        edge = {"model": cand.model or base, "arch": cand.arch, "resolution": cand.resolution, "epochs": epochs}
        t0 = time.perf_counter()
        train("edge", override(cfg, edge=edge), dest, cloud=cloud, loss_weights=weights, split=on, progress=False)
        return time.perf_counter() - t0

    def trial(stage: str, cand: Candidate, macs: int, epochs: int, i: int, n: int) -> Trial:
        if (stage, cand.key) in done:
            return done[stage, cand.key]
        say(f"{stage} {i}/{n}: {cand.describe()} ({macs / cloud_macs:.3f}x cloud MACs), {epochs} epochs")
        dest = out / stage / cand.key
        seconds = run(cand, epochs, val, dest)
        t = Trial(stage, cand.key, cand, macs, macs / cloud_macs, measured.get(cand.key), seconds=seconds,
                  **scorer.score(dest))  # fmt: skip
        say(f"  validation edge→cloud R@1 {t.val_recall_at_1:.3f}, cos {t.val_cosine:.3f} ({seconds:.0f} s)")
        trials.append(t)
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(t.to_json(), sort_keys=True) + "\n")
        return t

    proxies = _propose(cfg, base, budget, spec.height, fits, say)
    if isinstance(proxies, list):
        for i, (cand, macs) in enumerate(proxies, 1):
            trial("proxy", cand, macs, scfg.proxy_epochs, i, len(proxies))
    else:
        proxies(lambda cand, macs, i: _proxy_rank(trial("proxy", cand, macs, scfg.proxy_epochs, i, scfg.candidates)))
    ranked = sorted((t for t in trials if t.stage == "proxy"), key=_proxy_rank)
    top = [(t.candidate, t.macs) for t in ranked[: scfg.top]]
    for i, (cand, macs) in enumerate(top, 1):
        trial("full", cand, macs, cfg.edge.epochs, i, len(top))
    full = [t for t in trials if t.stage == "full" and t.key in {c.key for c, _ in top}]
    best = sorted(full, key=_rank)[0]
    final = out / BEST
    if not _is_final(final, best):
        say(f"best: {best.candidate.describe()}; retraining on every training identity")
        run(best.candidate, cfg.edge.epochs, split, final)
    return _save_result(out, trials, full, best, final, cloud_macs, budget)


def _propose(cfg: RunConfig, base: str, budget: int, size: int, fits, say):
    """The proxy's candidates: a list drawn at random, or (evolution) a function that proposes and scores them."""
    scfg = cfg.search
    say(f"{scfg.strategy} search: {scfg.candidates} candidates in {scfg.min_budget_share:g}-1x of "
        f"{budget / 1e6:.1f} M MACs")  # fmt: skip
    if scfg.strategy == "random":
        return sample_candidates(scfg, base, budget, cfg.space.dim, size, fits=fits)
    from hetero.training import evolve

    space = evolve.make_space(scfg, base, int(scfg.min_budget_share * budget), budget, cfg.space.dim, size)
    accept = None if fits is None else (lambda c: fits(c, _build(c, base, cfg.space.dim)))
    seeds = evolve.seed_shapes(space, _hand_set(cfg, size), accept)
    if len(seeds) < scfg.population:  # fill the first population with random shapes of the base
        more = dataclasses.replace(scfg, candidates=scfg.population - len(seeds))
        seeds += [c for c, _ in sample_candidates(more, base, budget, cfg.space.dim, size, fits=fits, at_least=0)]
    say(f"seeds: {', '.join(c.describe() for c in seeds) or 'none inside the budget'}")

    def run(score) -> None:
        n = iter(range(1, scfg.candidates + 1))
        evolve.evolve(space, seeds, scfg.candidates, lambda c, m: score(c, m, next(n)), accept=accept,
                      population=scfg.population, sample=scfg.tournament, seed=scfg.seed)  # fmt: skip

    return run


def _hand_set(cfg: RunConfig, size: int) -> list[Candidate]:
    """The config's own edge as a shape (when it is a reshapable member): a person's pick the search must beat."""
    from hetero.models.mbnet import VARIANTS

    e = cfg.edge
    if e.model not in VARIANTS:
        return []
    arch = VARIANTS[e.model].with_arch({k: list(v) for k, v in e.arch.items()}).arch()
    return [Candidate(arch, e.resolution or size, e.model)]


def _build(cand: Candidate, base: str, dim: int) -> torch.nn.Module:
    return create_model(cand.model or base, embed_dim=dim, num_classes=2, resolution=cand.resolution, arch=cand.arch)


def _claim(out: Path, stamp: dict[str, Any]) -> None:
    """Mark `out` as this search's (config, cloud, objective, base); a directory of another search is refused."""
    stamp_path = out / "search-config.json"
    if stamp_path.is_file() and read_json(stamp_path, "search stamp") != stamp:
        raise InputError(f"{out} holds a search with another config, cloud or objective: use a new --out")
    atomic_write_json(stamp_path, stamp)


def _latency_fits(scfg, spec, latency: Latency | None, measured: dict[str, float]):
    """With [search] budget_ms, the check each drawn candidate must pass (its measured latency kept in `measured`)."""
    if scfg.budget_ms <= 0:
        return None
    if latency is None:
        raise InputError("[search] budget_ms needs a latency measure (hetero.devices.bench.graph_latency_ms)")

    def fits(cand: Candidate, model: torch.nn.Module) -> bool:
        graph = EmbeddingGraph(model.eval(), spec).eval()
        measured[cand.key] = latency(graph, scfg.latency_threads, scfg.latency_format)
        return measured[cand.key] <= scfg.budget_ms

    return fits


def _save_result(out: Path, trials, full, best, final: Path, cloud_macs: int, budget: int) -> SearchResult:
    """The result with its Pareto front, written as JSON and plotted."""
    front = pareto_front([(float(t.macs), t.val_recall_at_1) for t in full])
    retrain = float(read_json(final / "manifest.json", "manifest")["extra"]["train_seconds"])
    result = SearchResult(
        trials, best, final, cloud_macs, budget, pareto=[full[i].key for i in front],
        seconds=sum(t.seconds for t in trials) + retrain,
    )  # fmt: skip
    atomic_write_json(out / RESULT, result.to_json())
    from hetero.release.plots import search_trials

    search_trials(result.to_json(), out / "search.png")
    return result


def _rank(t: Trial) -> tuple[float, float, int]:
    """Fully trained: validation edge → cloud R@1 first; the closer reproduction of the cloud, then fewer MACs,
    break ties."""
    return (-t.val_recall_at_1, -t.val_cosine, t.macs)


def _proxy_rank(t: Trial) -> tuple[float, float, int]:
    """After a few epochs: how closely the edge reproduces the cloud on unseen identities (mean cosine over every
    validation query, a continuous measure) first — R@1 of a barely trained edge over ~100 queries moves by a few
    hits between equally good candidates; then R@1 and fewer MACs."""
    return (-t.val_cosine, -t.val_recall_at_1, t.macs)


def _is_final(path: Path, best: Trial) -> bool:
    """`path` already holds the final retraining of `best` (a resumed search does not train it twice)."""
    mf = path / "manifest.json"
    if not mf.is_file():
        return False
    m = read_json(mf, "manifest")
    model = m.get("model") if isinstance(m, dict) else None
    if not isinstance(model, dict):
        return False
    same_member = not best.candidate.model or model.get("name") == best.candidate.model
    return (
        same_member
        and model.get("arch") == best.candidate.arch
        and model.get("resolution") == best.candidate.resolution
    )
