"""`hetero search`: its parser beside its handler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hetero.cli.common import emit, objectives, run_config


def run(args: argparse.Namespace) -> int:
    from hetero.config import OBJECTIVES, override
    from hetero.data.datasets import load_split
    from hetero.training.search import search

    cfg = run_config(args)
    given = {"candidates": args.candidates, "top": args.top, "strategy": args.strategy}
    table = {k: v for k, v in given.items() if v is not None}
    if args.budget is not None:
        table["budget_macs"] = args.budget
    if table:
        cfg = override(cfg, search=table)
    weights = OBJECTIVES[args.objective] if args.objective else None
    say = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    latency = None
    if cfg.search.budget_ms > 0:
        from hetero.devices.bench import graph_latency_ms as latency
    r = search(
        cfg, args.cloud, args.out, split=load_split(cfg.data), loss_weights=weights, progress=say, latency=latency
    )
    b = r.best
    emit(
        args,
        r.to_json(),
        f"best within {r.budget_macs / 1e6:.1f} M MACs ({r.budget_macs / r.cloud_macs:.2f}x the cloud): "
        f"{b.candidate.describe()}, {b.macs_ratio:.3f}x cloud MACs, validation edge->cloud R@1 "
        f"{b.val_recall_at_1:.3f} -> {r.checkpoint}  ({len(r.trials)} trials, {r.seconds / 60:.1f} min of training; "
        f"every trial in {Path(args.out) / 'trials.jsonl'}, plot {Path(args.out) / 'search.png'})",
    )
    return 0


def register(add) -> None:
    s = add(
        "search",
        "search the edge architecture within a budget, against a cloud",
        "Search the edge's architecture: sub-networks of one reshapable member ([search] base, default the cloud's\n"
        "own) cut per stage — width multiplier, depth, depthwise kernel, expansion ratio — at a compute resolution,\n"
        "inheriting its weights. Candidates must spend between min_budget_share and 1 x budget_macs of the cloud's\n"
        "MACs (and, with budget_ms, a latency measured on latency_format: onnx or tflite). They are proposed by\n"
        "aging evolution (strategy = evolution): the first population is every registry member of the family at the\n"
        "largest resolution inside the budget and the config's own [edge] shape, then children mutate or cross the\n"
        "best of a tournament (resolutions in 4-px steps); strategy = random draws them independently. Each is\n"
        "trained briefly against the cached cloud views and ranked on validation identities: training identities\n"
        "held out of every search training (never the held-out identities the gate measures). The top few are\n"
        "trained fully and ranked by validation edge->cloud R@1; the best is retrained on every training identity\n"
        "into OUT/best, a normal checkpoint (its manifest records the shape, so export, verify and check take it as\n"
        "is). Every trial is appended to OUT/trials.jsonl: run the same command again to resume. OUT/search.json\n"
        "and OUT/search.png hold the results and the Pareto plot. Settings: the config's [search] table.",
        "examples:\n  hetero search --config emoji.toml --cloud runs/emoji/cloud --out runs/emoji/search\n"
        "  hetero search --cloud runs/x/cloud --out runs/x/search --budget 0.2 --candidates 8 --top 2 --json\n"
        "  hetero export --checkpoint runs/emoji/search/best --out runs/emoji/export",
    )
    s.add_argument("--cloud", type=Path, required=True, help="the frozen cloud checkpoint (its MACs set the budget)")
    s.add_argument("--out", type=Path, required=True, help="search directory (trials, plot, best/); reused to resume")
    s.add_argument("--objective", choices=sorted(objectives()), help="edge loss preset (default: [edge] weights)")
    s.add_argument("--budget", type=float, help="override [search] budget_macs (share of the cloud's MACs)")
    s.add_argument("--candidates", type=int, help="override [search] candidates (ranked by the proxy)")
    s.add_argument("--top", type=int, help="override [search] top (trained fully)")
    s.add_argument("--strategy", choices=("evolution", "random"), help="override [search] strategy")
    s.set_defaults(func=run)
