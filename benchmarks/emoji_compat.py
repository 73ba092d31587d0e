"""Compatible training on the emoji cross-style set: every objective, the honest baselines, and what it costs.

One cloud model (EfficientNet-Lite2 at 96 px, ImageNet init) is fine-tuned on 705 identities (3 styles each); edge
models (EfficientNet-Lite0 at half width and 64 px, ~7% of the cloud's MACs) are trained with each objective. On the
705 held-out identities, Twemoji queries search an OpenMoji gallery embedded by the cloud model (chance 1/705).
Everything goes through the stage API (`hetero.training.train.train`, `hetero.pipeline.verify`), as a user's script
does.

Cost (issue target: compatible training <= 1.15x the wall time of independent training): a few epochs each of the
independent baseline, a cached-cloud objective and the same objective running the cloud model every step, measured
back to back in this one process, plus the one-off time to build the cache.

    .venv/bin/python benchmarks/emoji_compat.py            # ~40 min on 2 cores
Writes benchmarks/results/emoji_compat.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from hetero.config import DEFAULT_CONFIG, OBJECTIVES, RunConfig, load_config, override
from hetero.data.datasets import load_split
from hetero.manifest import Manifest, load_manifest
from hetero.pipeline import verify
from hetero.training.train import train

CONFIG = DEFAULT_CONFIG.parent / "emoji.toml"
EDGES = ["independent", "distillation", "l2", "bct", "contrastive", "bct_regression"]
LABELS = {
    "independent": "independent (own classification)",
    "distillation": "logit distillation (+ own classification)",
    "l2": "L2 feature regression only",
    "bct": "BCT (+ own classification)",
    "contrastive": "cross-model InfoNCE (+ own classification)",
    "bct_regression": "BCT + cosine regression (+ own classification)",
}


def timed_train(role: str, cfg: RunConfig, out: Path, **kw) -> tuple[Manifest, float]:
    """`hetero.training.train.train` and its wall seconds (data loading and the cloud cache included)."""
    print(f"training {role} -> {out.name} …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    manifest = train(role, cfg, out, progress=False, **kw).manifest
    return manifest, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--cost-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, help="override every epochs key (a smoke run: results not comparable)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--cloud", type=Path, help="reuse a cloud checkpoint `hetero train cloud` made with --config")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emoji-bench-"))
    os.environ["HETERO_CACHE"] = str(work / "cache")  # cold caches: the cost numbers include building them
    cfg = load_config(args.config)
    if args.epochs:
        cfg = override(cfg, cloud={"epochs": args.epochs}, edge={"epochs": args.epochs})
    split = load_split(cfg.data)
    results: dict = {"config": args.config.read_text(), "edges": {}}

    cloud = work / "cloud"
    if args.cloud:
        cloud.symlink_to(args.cloud.resolve())
        manifest = load_manifest(args.cloud)[0]
    else:
        manifest, _ = timed_train("cloud", cfg, cloud, split=split)
    results["cloud"] = {"model": manifest.model, "space": manifest.to_dict()["space"]}
    results["cloud"]["train_seconds"] = manifest.extra["train_seconds"]
    for name in EDGES:
        m, secs = timed_train("edge", cfg, work / name, cloud=cloud, loss_weights=OBJECTIVES[name], split=split)
        results["edges"][name] = {
            "seconds": round(secs, 2),
            "train_seconds": m.extra["train_seconds"],
            "cloud_targets": m.extra["cloud_targets"],
            "model": m.model,
            "space": m.space.id,
        }
    controls = [f"{name}={work / name}" for name in EDGES]
    results["report"] = verify(cfg, cloud, [], controls, out=work / "verify").report.to_dict()

    # Cost: same epochs, same data, back to back; the online run computes the cloud's targets every step.
    cost_cfg = override(cfg, edge={"epochs": args.cost_epochs})
    cost = {}
    for label, run_cfg, objective in (
        ("independent", cost_cfg, "independent"),
        ("bct_regression cached (warm)", cost_cfg, "bct_regression"),
        ("bct_regression online", override(cost_cfg, edge={"cache_cloud": False}), "bct_regression"),
    ):
        out = work / f"cost-{len(cost)}"
        m, _ = timed_train("edge", run_cfg, out, cloud=cloud, loss_weights=OBJECTIVES[objective], split=split)
        cost[label] = m.extra["train_seconds"]
    builds = [e["cloud_targets"] for e in results["edges"].values() if e["cloud_targets"].get("hit") is False]
    build = builds[0] if builds else {}
    results["cost"] = {
        "epochs": args.cost_epochs,
        "train_seconds": cost,
        "cache_build_seconds": build.get("seconds"),
        "cache_hit": build.get("hit"),
        "cache_views": build.get("views"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emoji_compat.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "emoji_compat.md").write_text(render(results))
    print(render(results))


def render(res: dict) -> str:
    rows = {r["name"]: r for r in res["report"]["rows"]}
    chance = res["report"]["chance"].get("recall_at_1")
    cc = rows["cloud → cloud"]["recall_at_1"]
    cm, em = res["cloud"]["model"], res["edges"]["bct"]["model"]
    lines = [
        "# Emoji cross-style compatibility (Twemoji queries → OpenMoji gallery, 705 held-out identities)",
        "",
        f"Cloud {cm['name']} ({cm['macs'] / 1e6:.1f} M MACs at {cm.get('resolution') or 96} px), "
        f"edge {em['name']} ({em['macs'] / 1e6:.1f} M MACs at {em.get('resolution')} px, "
        f"{em['macs'] / cm['macs']:.3f}x the cloud). Chance R@1 {chance:.4f}.",
        "",
        "| objective | edge → cloud R@1 | / cloud→cloud | edge → edge R@1 | edge → cloud mAP | joins cloud space |",
        "|---|---|---|---|---|---|",
        f"| cloud → cloud | {cc:.3f} | 1.000 | | {rows['cloud → cloud']['map']:.3f} | |",
    ]
    for name in EDGES:
        x = rows.get(f"{name} → cloud", {})
        s = rows.get(f"{name} → {name}", {})
        joined = res["edges"][name]["space"] == res["cloud"]["space"]["id"]
        r1 = x.get("recall_at_1")
        lines.append(
            f"| {LABELS[name]} | {r1:.3f} | {r1 / cc:.3f} | {s.get('recall_at_1', float('nan')):.3f} | "
            f"{x.get('map', float('nan')):.3f} | {'yes' if joined else 'no'} |"
        )
    c = res["cost"]
    t = c["train_seconds"]
    ind = t["independent"]
    lines += [
        "",
        f"## Cost ({c['epochs']} epochs each, back to back, wall seconds of the training loop)",
        "",
        "| run | seconds | / independent |",
        "|---|---|---|",
        *(f"| {k} | {v:.1f} | {v / ind:.2f} |" for k, v in t.items()),
        "",
        f"Building the cloud-embedding cache once ({c.get('cache_views')} views of every training image): "
        f"{c['cache_build_seconds']} s; "
        "it is shared by every edge run against the same cloud checkpoint and data (all objectives, seeds,\n"
        "architectures).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
