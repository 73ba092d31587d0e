"""LQF on emoji: linearised fine-tuning against non-linear fine-tuning of the same edge, same loss, same images.

Issue 31. The starting point of every arm is the shipped recipe's edge of the same seed (`levers` of
emoji_transfer.py: Lite0 width 0.75 at 52 px, L2 regression, 16 cached cloud views, the 1.7k unlabeled drawings,
40 epochs) — the situation LQF is for: a trained model refined (or a release replaced) where the change should be
predictable. From it, each arm trains `--epochs` more epochs on the same images and cached cloud views with the same
loss, `regression_linear` (least squares of the head's output before normalisation onto the cloud's embedding):
- `ft`: non-linear fine-tuning of every weight (AdamW, lr 2e-4, one-cycle), from the same ridge-probe head as
  LQF's (without it the start's head, trained under L2 on normalised embeddings, has another scale, and Adam
  wrecked the edge chasing it: edge → cloud 0.240 → 0.050 in 6 epochs);
- `lqf`: linear in the change of `head_conv` and `head` around the start (K-FAC, exact step; the head first set to
  the ridge regression of the cloud's embeddings on the start's features). Its tangent pass costs MACs: counted;
- `lqf_head`: the head alone linearised (the ridge probe, then K-FAC on it): within the 1/10 budget.
Compared per seed on the same 705 held-out queries with exact paired intervals (edge → cloud R@1) and Student-t
intervals (held-out cosine to the cloud), each against the start and against `ft`.

    .venv/bin/python benchmarks/emoji_lqf.py --cloud CLOUD_DIR --work /tmp/emoji-lqf [--seeds 1 2 3] [--epochs 6]
Writes benchmarks/results/emoji_lqf.{json,md}. Run directories are reused when their config matches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import emoji_levers
import emoji_transfer
import numpy as np
from emoji_levers import CONFIG, evaluate, trained
from emoji_transfer import LEVERS, paired_mean, per_query

from hetero.config import load_config, override
from hetero.data.datasets import load_split
from hetero.manifest import load_manifest
from hetero.release.stats import PairedChange

LOSS = {"regression_linear": 1.0}
TAIL = ["head_conv", "head"]
FT = {"lr": 2e-4, "head_init": "probe"}
ARMS = {  # name: (what, [edge] settings, linearised modules or None, extra loss terms)
    "ft": ("non-linear fine-tuning of every weight, AdamW lr 2e-4, ridge-probe head", FT, None, {}),
    "lqf": ("LQF over head_conv + head (K-FAC, exact step, ridge-probe head)", {}, TAIL, {}),
    "lqf_head": ("LQF over the head alone (within budget)", {}, ["head"], {}),
    # The flip/error knob: + β‖z − previous‖², the start as the previous release (its answers to keep)
    "lqf_compat1": ("lqf + previous_linear β = 1 (keep the start's outputs)", {}, TAIL, {"previous_linear": 1.0}),
    "lqf_compat4": ("lqf + previous_linear β = 4", {}, TAIL, {"previous_linear": 4.0}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cloud", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="run directories (reused when configs match)")
    ap.add_argument("--start", type=Path, help="directory holding levers-s<seed> starts (default: --work)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--only", nargs="*", default=None, help="arm names (default: all)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    base = load_config(CONFIG)
    split = load_split(base.data)
    path = args.out / "emoji_lqf.json"
    remember_cloud(args.cloud)
    results = json.loads(path.read_text()) if path.is_file() else {}
    for seed in args.seeds:
        levers = override(base, edge={**LEVERS, "seed": seed})
        start = trained((args.start or args.work) / f"levers-s{seed}", "edge", levers, split, cloud=args.cloud)
        results[f"start-s{seed}"] = _row("start", "the shipped recipe's edge (levers)", seed, args.cloud, start, split)
        for name, (what, extra, stages, terms) in ARMS.items():
            if args.only and name not in args.only:
                continue
            edge = {**LEVERS, **extra, "seed": seed, "epochs": args.epochs, "init": str(start), "lqf": bool(stages)}
            if terms:
                edge["previous"] = str(start)
            cfg = override(base, edge=edge, **({"lqf": {"stages": stages}} if stages else {}))
            out = trained(args.work / f"{name}-e{args.epochs}-s{seed}", "edge", cfg, split, cloud=args.cloud,
                          loss_weights={**LOSS, **terms})  # fmt: skip
            results[f"{name}-s{seed}"] = _row(name, what, seed, args.cloud, out, split)
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results) + "\n")
            (args.out / "emoji_lqf.md").write_text(render(results, args.epochs))
            print(render(results, args.epochs), file=sys.stderr)


class _Remembered:
    """The cloud, embedding each image set once per process: every row compares with the same cloud embeddings
    (a Lite2 pass over the 5k train, query and gallery images costs minutes on 2 cores)."""

    def __init__(self, inner) -> None:
        self.inner, self.done = inner, {}

    def embed(self, images: np.ndarray) -> np.ndarray:
        key = (id(images), images.shape)
        if key not in self.done:
            self.done[key] = (images, self.inner.embed(images))  # the array kept: its id stays its own
        return self.done[key][1]


def remember_cloud(cloud: Path) -> None:
    """Route the shared evaluation helpers' `load(cloud)` through one remembering loader."""
    real, kept = emoji_levers.load, {}

    def load(path):
        if Path(path) != Path(cloud):
            return real(path)
        if "cloud" not in kept:
            kept["cloud"] = _Remembered(real(path))
        return kept["cloud"]

    emoji_levers.load = emoji_transfer.load = load


def _row(arm: str, what: str, seed: int, cloud: Path, out: Path, split) -> dict:
    m = load_manifest(out)[0]
    top1, cos_each = per_query(cloud, out, split)
    return {
        "arm": arm,
        "what": what,
        "seed": seed,
        "lqf": m.model.get("lqf"),
        "head_probe_mse": json.loads((out / "metrics.jsonl").read_text().splitlines()[0]).get("head_probe_mse"),
        "top1": top1.tolist(),
        "cos_each": cos_each.tolist(),
        **evaluate(cloud, out, split),
    }


def _nfr(r: dict, ref: dict | None) -> str:
    """Negative flips against `ref`: queries it answered right and `r` answers wrong, as a share of all queries."""
    if ref is None or ref is r:
        return "—"
    change = PairedChange.from_outcomes(np.array(ref["top1"], bool), np.array(r["top1"], bool))
    return f"{change.worse / change.n:.3f}"


def _delta(r: dict, ref: dict | None) -> tuple[str, str]:
    if ref is None or ref is r:
        return "—", "—"
    loss = PairedChange.from_outcomes(np.array(ref["top1"], bool), np.array(r["top1"], bool)).loss()
    m, lo, hi = paired_mean(np.array(r["cos_each"]) - np.array(ref["cos_each"]))
    return (
        f"{-loss.value * 100:+.1f} pt [{-loss.high * 100:+.1f}, {-loss.low * 100:+.1f}]",
        f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]",
    )


def render(results: dict, epochs: int) -> str:
    order = ["start", *ARMS]
    lines = [
        "# Emoji: LQF against non-linear fine-tuning (Twemoji queries → OpenMoji cloud gallery, 705 held-out ids)",
        "",
        f"Every arm starts from the shipped recipe's edge of its seed and trains {epochs} more epochs on the same",
        "images and cached cloud views with the same loss (`regression_linear`); commands in the script's docstring.",
        "",
        "| run | what | edge MACs / cloud | edge → cloud | / cloud→cloud | edge → edge | cos train | cos held-out | "
        "Δ edge→cloud vs start | NFR vs start | Δ vs ft | Δ cos held-out vs start | Δ cos vs ft | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in sorted(results.items(), key=lambda kv: (kv[1]["seed"], order.index(kv[1]["arm"]))):
        start, ft = results.get(f"start-s{r['seed']}"), results.get(f"ft-s{r['seed']}")
        (d_start, c_start), (d_ft, c_ft) = _delta(r, start), _delta(r, ft)
        lines.append(
            f"| {key} | {r['what']} | {r['macs_ratio']:.3f} | {r['edge_to_cloud']:.3f} | "
            f"{r['edge_to_cloud'] / r['cloud_to_cloud']:.2f} | {r['edge_to_edge']:.3f} | {r['cos_train']:.3f} | "
            f"{r['cos_query']:.3f} | {d_start} | {_nfr(r, start)} | {d_ft} | {c_start} | {c_ft} | "
            f"{r['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Δ: paired change of edge → cloud R@1 on the same 705 queries with its exact 95% interval (resolves when it",
        "excludes 0; 705 queries resolve ~0.6 points); Δ cos: paired mean change of cos(edge, cloud) over the same",
        "queries, Student-t 95%. NFR vs start: share of queries the start answered right (edge → cloud) and the arm",
        "answers wrong. MACs count the tangent pass of a linearised edge. Train seconds: the training loop on",
        "2 CPU cores (the start's 40 epochs not included for the arms).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
