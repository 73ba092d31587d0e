"""Aging evolution over edge shapes: the proposer `hetero search` uses with `[search] strategy = "evolution"`.

Random draws from ~10^10 shapes found nothing a person's pick did not beat (benchmarks/results/arch_search*.md), so
the population starts from what people already chose — every registry member of the base's family and the hand-set
edge of the config, each at the largest resolution its budget allows — and improves it by small steps. Aging
evolution (Real et al., AAAI 2019, "Regularized evolution"): draw `sample` members of the population, the best of
them is the parent; the child is a mutation of it (one gene: a stage's width, depth, kernel or expansion ratio, the
member it inherits weights from, or the resolution by one 4-px step) or, with probability `crossover`, a per-stage
mix of it and the second best; the oldest member dies. Old members dying keeps one lucky proxy score from ruling the
whole run, which is what makes the method robust to noisy scores such as a short training's.

Every child is inside the budget and new; the proposer is deterministic given the seed and the scores, so a
resumed search (scores read back from its trial log) proposes the same children again.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hetero.errors import InputError
from hetero.models.registry import MODELS
from hetero.training.candidates import Candidate

STEP = 4  # resolution step in pixels


@dataclass(frozen=True)
class Space:
    """What a candidate may be: members of one family, per-stage genes and resolutions, and the MACs window."""

    base: str  # the member whose stage table the genes index
    members: tuple[str, ...]  # reshapable members of the base's family (weights a candidate may inherit)
    widths: tuple[float, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    resolutions: tuple[int, ...]  # every allowed resolution (multiples of STEP between the config's extremes)
    low: int  # MACs window [low, high]
    high: int
    embed_dim: int

    def macs(self, cand: Candidate) -> int:
        """MACs of the candidate, or -1 when the shape cannot be built at its resolution."""
        from hetero.models.mbnet import VARIANTS

        try:
            return VARIANTS[cand.model or self.base].with_arch(cand.arch).macs(cand.resolution, self.embed_dim)
        except InputError:
            return -1

    def admits(self, cand: Candidate) -> bool:
        return self.low <= self.macs(cand) <= self.high


def make_space(scfg, base: str, low: int, high: int, embed_dim: int, input_size: int) -> Space:
    """The evolution's space from `[search]`: resolutions every STEP px between the smallest and largest listed."""
    from hetero.models.mbnet import VARIANTS

    listed = sorted(scfg.resolutions) or [input_size]
    lo, hi = listed[0], listed[-1]
    steps = tuple(sorted({*listed, *range(math.ceil(lo / STEP) * STEP, hi + 1, STEP)}))
    family = VARIANTS[base].base
    members = tuple(n for n, v in VARIANTS.items() if v.base == family and MODELS[n].reshapable)
    return Space(base, members, tuple(sorted(scfg.widths)), tuple(sorted(scfg.kernels)), tuple(sorted(scfg.expands)),
                 steps, low, high, embed_dim)  # fmt: skip


def seed_shapes(
    space: Space, hand_set: list[Candidate], accept: Callable[[Candidate], bool] | None = None
) -> list[Candidate]:
    """The hand-set shapes that fit, then every member at the largest resolution inside the window (deduplicated).
    `accept` may refuse more (a latency budget)."""
    from hetero.models.mbnet import VARIANTS

    def ok(c: Candidate) -> bool:
        return space.admits(c) and (accept is None or accept(c))

    out: dict[str, Candidate] = {c.key: c for c in hand_set if ok(c)}
    for name in space.members:
        arch = VARIANTS[name].arch()
        for r in reversed(space.resolutions):
            if ok(c := Candidate(arch, r, name)):
                out.setdefault(c.key, c)
                break
    return list(out.values())


def mutate(cand: Candidate, space: Space, rng: np.random.Generator) -> Candidate:
    """One or more genes changed (1 + a geometric count, as a few tens of proxy trials cannot afford one-gene steps
    through ~30 genes): each a stage's width, depth, kernel or expansion, the resolution by one step, or the member."""
    for _ in range(1 + min(int(rng.geometric(0.5)) - 1, 3)):
        cand = _mutate_one(cand, space, rng)
    return cand


def _mutate_one(cand: Candidate, space: Space, rng: np.random.Generator) -> Candidate:
    from hetero.models.mbnet import VARIANTS

    arch = {k: list(v) for k, v in cand.arch.items()}
    top = VARIANTS[VARIANTS[cand.model or space.base].weights].arch()  # the shape whose weights it inherits
    gene = str(rng.choice(["width", "depth", "kernel", "expand", "resolution", "member"]))
    i = int(rng.integers(len(arch["width"])))
    if gene == "resolution":
        r = space.resolutions.index(cand.resolution) if cand.resolution in space.resolutions else 0
        j = int(np.clip(r + rng.choice([-1, 1]), 0, len(space.resolutions) - 1))
        return Candidate(cand.arch, space.resolutions[j], cand.model)
    if gene == "member":
        return Candidate(cand.arch, cand.resolution, str(rng.choice(space.members)))
    if gene == "depth":
        arch["depth"][i] = int(np.clip(arch["depth"][i] + rng.choice([-1, 1]), 1, max(top["depth"][i], 1)))
    else:
        choices = {"width": space.widths, "kernel": space.kernels, "expand": space.expands}[gene]
        allowed = [v for v in choices if v <= top[gene][i]]
        if gene == "expand" and top["expand"][i] == 1:
            allowed = []  # a stage without expansion has no expand layer to cut
        if allowed:
            arch[gene][i] = type(arch[gene][i])(rng.choice(allowed))
    return Candidate(arch, cand.resolution, cand.model)


def crossover(a: Candidate, b: Candidate, rng: np.random.Generator) -> Candidate:
    """Each stage's genes from one parent or the other; resolution and member from either."""
    pick = rng.integers(0, 2, len(a.arch["width"])).astype(bool)
    arch = {k: [bv if p else av for av, bv, p in zip(a.arch[k], b.arch[k], pick, strict=True)] for k in a.arch}
    return Candidate(arch, b.resolution if rng.integers(2) else a.resolution, b.model if rng.integers(2) else a.model)


def evolve(
    space: Space,
    seeds: list[Candidate],
    trials: int,
    score: Callable[[Candidate, int], tuple],
    *,
    population: int = 8,
    sample: int = 3,
    crossover_rate: float = 0.3,
    seed: int = 0,
    max_tries: int = 2000,
    accept: Callable[[Candidate], bool] | None = None,
) -> list[Candidate]:
    """Propose and score `trials` candidates: the seeds first (up to `population`; each already inside the budget
    and accepted), then children of tournaments.

    `score(candidate, macs)` trains (or reads back) the candidate and returns its rank key (smaller is better);
    `accept` may refuse more (a latency budget). Returns the scored candidates in the order proposed."""
    rng = np.random.default_rng(seed)
    scored: dict[str, tuple] = {}
    alive: deque[Candidate] = deque()
    order: list[Candidate] = []

    def take(cand: Candidate) -> None:
        scored[cand.key] = score(cand, space.macs(cand))
        alive.append(cand)
        order.append(cand)
        if len(alive) > population:
            alive.popleft()  # the oldest dies, however good

    for cand in seeds:
        if len(order) < min(population, trials) and cand.key not in scored:
            take(cand)
    while len(order) < trials:
        if not alive:
            raise InputError("the search has no seed shape inside the budget: widen resolutions or the budget")
        child = None
        for _ in range(max_tries):
            pool = [alive[int(i)] for i in rng.choice(len(alive), size=min(sample, len(alive)), replace=False)]
            pool.sort(key=lambda c: scored[c.key])
            if len(pool) > 1 and rng.random() < crossover_rate:
                proposal = mutate(crossover(pool[0], pool[1], rng), space, rng)
            else:
                proposal = mutate(pool[0], space, rng)
            new = proposal.key not in scored and space.admits(proposal)
            if new and (accept is None or accept(proposal)):
                child = proposal
                break
        if child is None:
            break  # the neighbourhood is exhausted: fewer trials than asked, never a shape outside the budget
        take(child)
    return order
