"""BCT without the cloud's classifier: class prototypes from the cloud's embeddings vs the classifier's own weights.

    .venv/bin/python benchmarks/prototype_bct.py --cloud /path/to/emoji/cloud   # ~25 min on 2 cores (3 seeds x 2)
Writes benchmarks/results/prototype_bct.{json,md}.

A cloud imported from ONNX/TorchScript, or known only by a file of its embeddings, has no classifier; BCT then
scores the edge against frozen prototypes, the normalised mean of the cloud's embeddings of each training class
(`TrainConfig.prototypes = "embeddings"`, what `hetero cloud import` clouds get automatically). The objective here is
BCT alone (own classification + BCT influence): it needs no cloud view at all, only the prototypes, so these
numbers are also what an embeddings-only cloud gives. Same emoji cloud, same edge config and seeds for both arms;
per seed the paired difference of edge→cloud R@1 on the same probes with its exact 95% interval (hetero.stats).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hetero.config import load_config, override
from hetero.data import load_split
from hetero.devices.loader import load
from hetero.devices.pipeline import cloud_fixture
from hetero.metrics import retrieval_metrics
from hetero.stats import PairedChange, proportion
from hetero.train import train

CONFIG = Path(__file__).resolve().parents[1] / "hetero" / "configs" / "emoji.toml"
ARMS = ("classifier", "embeddings")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cloud", type=Path, required=True, help="emoji cloud checkpoint (hetero train cloud)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, help="override the edge's epochs (smoke runs: not comparable)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="proto-bct-"))
    os.environ.setdefault("HETERO_CACHE", str(work / "cache"))
    cfg = load_config(args.config)
    if args.epochs:
        cfg = override(cfg, edge={"epochs": args.epochs})
    split = load_split(cfg.data)
    fx = cloud_fixture(cfg, args.cloud, split)
    cloud_ok = retrieval_metrics(
        fx.reference_queries, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels, per_query=True
    )
    weights = {"classification": 1.0, "bct": 1.0}
    runs = []
    for seed in args.seeds:
        outcome = {}
        for arm in ARMS:
            run_cfg = override(cfg, edge={"seed": seed, "prototypes": arm, "loss_weights": weights})
            print(f"seed {seed}: BCT with {arm} prototypes …", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            train("edge", run_cfg, work / f"{arm}-{seed}", cloud=args.cloud, split=split, progress=False)
            q = load(work / f"{arm}-{seed}").embed(fx.probe_images)
            m = retrieval_metrics(q, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels, per_query=True)
            outcome[arm] = m
            hits, secs = int(np.sum(m["top1_correct"])), round(time.perf_counter() - t0, 1)
            runs.append({"seed": seed, "arm": arm, "recall_at_1": m["recall_at_1"], "hits": hits, "seconds": secs})
        change = PairedChange.from_outcomes(
            outcome["classifier"]["top1_correct"], outcome["embeddings"]["top1_correct"]
        )
        runs[-1]["paired_loss_vs_classifier"] = change.loss().to_dict()
    n = len(fx.probe_labels)
    mean = {a: float(np.mean([r["recall_at_1"] for r in runs if r["arm"] == a])) for a in ARMS}
    doc = {
        "config": str(args.config.name), "epochs": cfg.edge.epochs, "edge": cfg.edge.model, "probes": n,
        "cloud_r1": cloud_ok["recall_at_1"], "mean_r1": mean, "ratio": mean["embeddings"] / mean["classifier"],
        "runs": runs, "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prototype_bct.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# BCT with class prototypes from the cloud's embeddings vs the cloud classifier (emoji cross-style)",
        "",
        f"Edge {cfg.edge.model} ({cfg.edge.epochs} epochs, objective classification + BCT), {n} probes; "
        f"cloud → cloud R@1 {cloud_ok['recall_at_1']:.3f}. Produced by `benchmarks/prototype_bct.py` on {doc['date']}.",
        "",
        "| seed | classifier prototypes R@1 [95% CI] | embedding prototypes R@1 [95% CI] | R@1 lost [95% CI] |",
        "|---|---|---|---|",
    ]
    for seed in args.seeds:
        r = {x["arm"]: x for x in runs if x["seed"] == seed}
        loss = r["embeddings"]["paired_loss_vs_classifier"]
        arms = " | ".join(proportion(r[a]["hits"], n).text() for a in ARMS)
        lines.append(f"| {seed} | {arms} | {loss['value']:+.3f} [{loss['low']:+.3f}, {loss['high']:+.3f}] |")
    lines += [
        "",
        f"Mean edge → cloud R@1: classifier {mean['classifier']:.3f}, embeddings {mean['embeddings']:.3f}; "
        f"ratio **{doc['ratio']:.3f}** (target ≥ 0.9).",
    ]
    (args.out / "prototype_bct.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
