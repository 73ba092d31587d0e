"""A search candidate — one edge shape, named by a key that survives a resume — and the random sampler of them
(`[search] strategy = "random"`; hetero.training.evolve is the other proposer)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hetero.config import SearchConfig
from hetero.errors import InputError
from hetero.models.registry import create_model


@dataclass(frozen=True)
class Candidate:
    """One sub-network: per-stage width multipliers, repeats, kernel sizes (and expansion ratios), the compute
    resolution, and the member whose ImageNet weights it inherits ("" = the search's base)."""

    arch: dict[str, list]
    resolution: int
    model: str = ""

    @property
    def key(self) -> str:
        """Stable across runs; a candidate of the base (model "") keeps the key older trial logs recorded."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"arch": self.arch, "resolution": self.resolution}
        if self.model:
            d["model"] = self.model
        return d

    def describe(self) -> str:
        a = self.arch
        e = f" e{''.join(map(str, a['expand']))}" if "expand" in a else ""
        member = f"{self.model} " if self.model else ""
        return (
            f"{member}{self.resolution}px w{'/'.join(f'{w:g}' for w in a['width'])} "
            f"d{''.join(map(str, a['depth']))} k{''.join(map(str, a['kernel']))}{e}"
        )


def sample_candidates(
    scfg: SearchConfig,
    base: str,
    budget_macs: int,
    embed_dim: int,
    input_size: int,
    *,
    fits: Callable[[Candidate, torch.nn.Module], bool] | None = None,
    at_least: int = 2,
) -> list[tuple[Candidate, int]]:
    """`scfg.candidates` distinct candidates whose MACs lie in [min_budget_share, 1] x budget (seeded), with MACs;
    the resolutions take turns (one that yields nothing for a while leaves the rotation).

    Depth ranges over 1..the base's repeats per stage and kernels over the allowed sizes up to the base's own, so
    every candidate is a sub-network of the base and inherits all its weights. MACs are counted from the stage
    table (no network is built per draw); `fits` may refuse more (latency) and gets the built candidate. Fewer
    than `at_least` found is an error (the search space is too narrow for the budget).
    """
    from hetero.models.mbnet import VARIANTS

    variant = VARIANTS[base]
    full = variant.arch()
    widths = sorted(scfg.widths)
    rng = np.random.default_rng(scfg.seed)
    resolutions = list(scfg.resolutions) or [input_size]
    out: dict[str, tuple[Candidate, int]] = {}
    # Drawn freely, the budget would keep mostly the lowest resolution (large shapes fit only there).
    active, misses, patience = list(resolutions), 0, max(50, scfg.max_draws // (2 * len(resolutions)))
    for _ in range(scfg.max_draws):
        draw = {
            "width": [float(rng.choice([w for w in widths if w <= top] or [min(widths)])) for top in full["width"]],
            "depth": [int(rng.integers(1, d + 1)) for d in full["depth"]],
            "kernel": [int(rng.choice([k for k in scfg.kernels if k <= top] or [top])) for top in full["kernel"]],
        }
        if scfg.expands:  # a stage without expansion (ratio 1) keeps it: its block has no expand layer to cut
            draw["expand"] = [top if top == 1 else int(rng.choice([e for e in scfg.expands if e <= top] or [top]))
                              for top in full["expand"]]  # fmt: skip
        turn = active[len(out) % len(active)]
        shape = variant.with_arch(draw)
        cand = Candidate(shape.arch(), int(turn))
        try:
            macs = shape.macs(cand.resolution, embed_dim) if cand.key not in out else -1
        except InputError:
            macs = -1
        ok = scfg.min_budget_share * budget_macs <= macs <= budget_macs
        if ok and fits is not None:
            model = create_model(base, embed_dim=embed_dim, num_classes=2, resolution=cand.resolution, arch=cand.arch)
            ok = fits(cand, model)
        if not ok:
            misses += 1
            if misses >= patience and len(active) > 1:
                active.remove(turn)
                misses = 0
            continue
        misses = 0
        out[cand.key] = (cand, macs)
        if len(out) == scfg.candidates:
            break
    if len(out) < min(at_least, scfg.candidates):
        raise InputError(
            f"the search space has fewer than 2 candidates between {scfg.min_budget_share:g}x and 1x the budget "
            f"({budget_macs / 1e6:.2f} M MACs) after {scfg.max_draws} draws: widen widths/resolutions or the budget"
        )
    return list(out.values())
