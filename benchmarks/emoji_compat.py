"""Compatible training on the emoji cross-style set: every objective, the honest baselines, and what it costs.

One cloud model (EfficientNet-Lite2 at 96 px, ImageNet init) is fine-tuned on 705 identities (3 styles each); edge
models (EfficientNet-Lite0 at half width and 64 px, ~7% of the cloud's MACs) are trained with each objective. On the
705 held-out identities, Twemoji queries search an OpenMoji gallery embedded by the cloud model (chance 1/705).
Everything goes through the `hetero` CLI, exactly as a user runs it.

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
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hetero.config import DEFAULT_CONFIG

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


def hetero(*args: str | Path, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "hetero.cli", *map(str, args), "--json", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[3:])}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    out = json.loads(proc.stdout)
    out["_wall"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--cost-epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--cloud", type=Path, help="reuse a cloud checkpoint `hetero train cloud` made with --config")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emoji-bench-"))
    env = {**os.environ, "HETERO_CACHE": str(work / "cache")}  # cold caches: the cost numbers include building them
    cfg = ["--config", str(args.config)]
    results: dict = {"config": args.config.read_text(), "edges": {}}

    if args.cloud:
        (work / "cloud").symlink_to(args.cloud.resolve())
        manifest = json.loads((args.cloud / "manifest.json").read_text())
        seconds = manifest["extra"]["train_seconds"]
    else:
        print("training cloud …", file=sys.stderr)
        manifest = hetero("train", "cloud", *cfg, "--out", work / "cloud", env=env)["manifest"]
        seconds = manifest["extra"]["train_seconds"]
    results["cloud"] = {k: manifest[k] for k in ("model", "space")} | {"train_seconds": seconds}
    for name in EDGES:
        print(f"training edge: {name} …", file=sys.stderr)
        r = hetero("train", "edge", *cfg, "--objective", name, "--cloud", work / "cloud", "--out", work / name, env=env)
        ex = r["manifest"]["extra"]
        results["edges"][name] = {
            "seconds": r["seconds"],
            "train_seconds": ex["train_seconds"],
            "cloud_targets": ex["cloud_targets"],
            "model": r["manifest"]["model"],
            "space": r["manifest"]["space"]["id"],
        }
    verify = ["verify", *cfg, "--cloud", work / "cloud", "--out", work / "verify"]
    for name in EDGES:
        verify += ["--control", f"{name}={work / name}"]
    results["report"] = hetero(*verify, env=env)["report"]

    # Cost: same epochs, same data, back to back.
    cost_cfg = work / "cost.toml"
    cost_cfg.write_text(re.sub(r"(?m)^epochs = \d+", f"epochs = {args.cost_epochs}", args.config.read_text()))
    cost = {}
    for label, extra in (
        ("independent", ["--objective", "independent"]),
        ("bct_regression cached (warm)", ["--objective", "bct_regression"]),
        ("bct_regression online", ["--objective", "bct_regression"]),
    ):
        run_cfg = cost_cfg
        if "online" in label:
            run_cfg = work / "cost_online.toml"
            run_cfg.write_text(re.sub(r"(?m)^cloud_views = .*$", r"\g<0>\ncache_cloud = false", cost_cfg.read_text()))
        r = hetero(
            "train",
            "edge",
            "--config",
            run_cfg,
            *extra,
            "--cloud",
            work / "cloud",
            "--out",
            work / f"cost-{len(cost)}",
            env=env,
        )
        cost[label] = r["manifest"]["extra"]["train_seconds"]
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
