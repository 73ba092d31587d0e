"""Architecture search on emoji (issue: the best edge within 1/10 of the cloud's MACs), and the honest comparison.

1. `hetero.training.search.search` with emoji.toml's `[search]` table: sub-networks of the Lite2 cloud's member
   within 1/10 of its MACs, a 3-epoch proxy ranking on 150 training identities held out of every search training, the
   top 3 trained fully, the best retrained on every training identity. Resumable (`--work` keeps trials.jsonl).
2. The searched edge against the best hand-picked edge at the same budget (Lite0 width 0.75 at 52 px, the levers
   table's best), same cloud, recipe, epochs, on ≥ 3 seeds: edge → cloud and edge → edge R@1 on the 705 held-out
   Twemoji probes against the cloud's OpenMoji gallery, and the paired difference with its exact 95% interval.

    .venv/bin/python benchmarks/arch_search.py --cloud /path/to/emoji/cloud --work /path/to/work --seeds 1,2,3
Writes benchmarks/results/arch_search.{json,md} and arch_search/search.png (+ csv).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from emoji_setup import emoji_run

from hetero.config import override
from hetero.devices.loader import load
from hetero.manifest import load_manifest
from hetero.pipeline import cloud_fixture
from hetero.release.metrics import retrieval_metrics
from hetero.release.stats import PairedChange
from hetero.training.search import ValidationScorer, search, validation_split
from hetero.training.train import train

HAND = {"model": "efficientnet_lite0_075", "resolution": 52, "arch": {}}
# Edge recipes both arms are trained with: the config's (what the search ranked with), and the levers table's best
# (L2 regression, the 1.7k unlabeled drawings, 16 cached cloud views), with which the hand-picked shape reached 0.71x.
RECIPES = {
    "config": {},
    "levers": {"loss_weights": {"regression_l2": 1.0}, "transfer": "emoji_unlabeled", "cloud_views": 16},
}


def main() -> None:
    def extra(ap) -> None:
        ap.add_argument("--seeds", default="1,2,3")
        ap.add_argument("--recipes", default="config,levers", help=f"of {', '.join(RECIPES)}")
        ap.add_argument("--name", default="arch_search", help="results file stem (one per search space measured)")
        ap.add_argument("--search-recipe", default="config", choices=sorted(RECIPES), help="recipe of the trials")

    run = emoji_run(__doc__, "arch-search-", extra)
    t0 = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    search_cfg = override(run.cfg, edge=RECIPES[run.args.search_recipe])
    result = search(search_cfg, run.args.cloud, run.work / "search", split=run.split, progress=say)
    search_wall = time.perf_counter() - t0
    best = result.best.candidate
    hand_val = hand_on_validation(run, search_cfg)
    searched = {"model": run.cfg.search.base, "resolution": best.resolution, "arch": best.arch}
    fx = cloud_fixture(run.cfg, run.args.cloud, run.split)
    gallery_images = run.split.gallery.images
    cloud_ok = retrieval_metrics(
        fx.reference_queries, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels, per_query=True
    )["top1_correct"]

    def measure(edge: Path) -> dict:
        rt = load(edge)
        q, g = rt.embed(fx.probe_images), rt.embed(gallery_images)
        m = retrieval_metrics(q, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels, per_query=True)
        own = retrieval_metrics(q, fx.probe_labels, g, run.split.gallery.labels)["recall_at_1"]
        man = load_manifest(edge)[0]
        return {
            "ok": m["top1_correct"],
            "edge_to_cloud": float(m["recall_at_1"]),
            "edge_to_edge": float(own),
            "cos_query": float((q * fx.reference_queries).sum(1).mean()),
            "macs_ratio": man.model["macs"] / result.cloud_macs,
            "train_seconds": man.extra["train_seconds"],
        }

    rows = []
    for recipe in run.args.recipes.split(","):
        for seed in [int(s) for s in run.args.seeds.split(",")]:
            arms = {}
            for arm, edge in (("hand-picked", HAND), ("searched", searched)):
                out = run.work / (f"{arm}_{seed}" if recipe == "config" else f"{recipe}_{arm}_{seed}")
                same = recipe == run.args.search_recipe and seed == run.cfg.edge.seed
                if arm == "searched" and same and not out.exists():
                    shutil.copytree(result.checkpoint, out)  # the search's own final training is this run
                if not (out / "manifest.json").is_file():
                    cfg = override(run.cfg, edge={**edge, **RECIPES[recipe], "seed": seed})
                    train("edge", cfg, out, cloud=run.args.cloud, split=run.split, progress=False)
                arms[arm] = measure(out)
            change = PairedChange.from_outcomes(arms["hand-picked"]["ok"], arms["searched"]["ok"]).loss()
            row = {
                "recipe": recipe,
                "seed": seed,
                **{a: {k: v for k, v in m.items() if k != "ok"} for a, m in arms.items()},
            }
            row.update(gain=-change.value, low=-change.high, high=-change.low)
            rows.append(row)
            print(json.dumps(row), flush=True)

    c2c = float(cloud_ok.mean())
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "cloud": str(run.args.cloud),
        "cloud_to_cloud": c2c,
        "probes": len(fx.probe_labels),
        "search": result.to_json(),
        "search_wall_seconds": round(search_wall, 1),
        "search_recipe": run.args.search_recipe,
        "hand_on_validation": hand_val,
        "hand_picked": HAND,
        "searched": searched,
        "recipes": {r: RECIPES[r] for r in run.args.recipes.split(",")},
        "seeds": rows,
    }
    out_dir, stem = run.args.out, run.args.name
    (out_dir / stem).mkdir(parents=True, exist_ok=True)
    for name in ("search.png", "search.csv"):
        shutil.copy(run.work / "search" / name, out_dir / stem / name)
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(render(doc, run.cfg, stem))


def hand_on_validation(run, search_cfg) -> dict:
    """The hand-picked shape through the search's own protocol (proxy and full training on the training identities
    outside the validation ones, scored on those): would the search have ranked it above its choice?"""
    val = validation_split(search_cfg, run.split)
    scorer = ValidationScorer.load(run.args.cloud, val)
    scores = {}
    for stage, epochs in (("proxy", search_cfg.search.proxy_epochs), ("full", search_cfg.edge.epochs)):
        dest = run.work / f"hand-picked_validation_{stage}"
        if not (dest / "manifest.json").is_file():
            cfg = override(search_cfg, edge={**HAND, "epochs": epochs})
            train("edge", cfg, dest, cloud=run.args.cloud, split=val, progress=False)
        scores[stage] = scorer.score(dest)
    return scores


def render(doc: dict, cfg, stem: str) -> str:
    s, c2c = doc["search"], doc["cloud_to_cloud"]
    full = sorted((t for t in s["trials"] if t["stage"] == "full"), key=lambda t: -t["val_recall_at_1"])
    proxy = sorted((t for t in s["trials"] if t["stage"] == "proxy"), key=lambda t: -t["val_cosine"])

    def cand(t: dict) -> str:
        a = t["candidate"]["arch"]
        return (
            f"{t['candidate']['resolution']} px, width {'/'.join(f'{w:g}' for w in a['width'])}, "
            f"depth {''.join(map(str, a['depth']))}, kernel {''.join(map(str, a['kernel']))}"
        )

    def mean(recipe: str, arm: str, key: str) -> float:
        return float(np.mean([r[arm][key] for r in doc["seeds"] if r["recipe"] == recipe]))

    lines = [
        "# Architecture search on emoji: the best edge within 1/10 of the cloud's MACs",
        "",
        f"Generated by `benchmarks/arch_search.py` ({doc['date']}); cloud `{Path(doc['cloud']).name}` "
        f"(cloud → cloud R@1 {c2c:.3f} on {doc['probes']} Twemoji probes → OpenMoji gallery); edge recipe "
        f"{', '.join(f'{k}={v:g}' for k, v in cfg.edge.loss_weights.items())}, {cfg.edge.epochs} epochs, "
        f"{cfg.edge.cloud_views} cached cloud views.",
        "",
        "## The search",
        "",
        f"Candidates: `{cfg.search.base}` cut per stage (widths {list(cfg.search.widths)}, depth 1..its repeats, "
        f"kernels {list(cfg.search.kernels)}, expansion ratios {list(cfg.search.expands) or 'of the base'}, "
        f"resolutions {list(cfg.search.resolutions)}), "
        f"{cfg.search.min_budget_share:g}–1 × the budget of {s['budget_macs'] / 1e6:.1f} M MACs "
        f"(cloud {s['cloud_macs'] / 1e6:.1f} M). Trials train with the `{doc.get('search_recipe', 'config')}` recipe "
        f"(below). Proxy: {cfg.search.proxy_epochs} epochs, ranked by mean "
        f"cos(edge, cloud) on {cfg.search.validation_classes} validation identities (training identities held out "
        f"of every search training); top {cfg.search.top} trained {cfg.edge.epochs} epochs and ranked by validation "
        f"edge → cloud R@1. Cost: {s['seconds'] / 60:.1f} min of training on this 2-core machine (every trial and "
        f"the final training, as the search's log records them). Plot: [{stem}/search.png]({stem}/search.png).",
        "",
        "| stage | candidate | MACs / cloud | val cos | val edge→cloud R@1 | val edge→edge | train s |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {t['stage']}{' (chosen)' if t['key'] == s['best']['key'] else ''} | {cand(t)} | "
            f"{t['macs_ratio']:.3f} | {t['val_cosine']:.3f} | {t['val_recall_at_1']:.3f} | "
            f"{t['val_edge_to_edge']:.3f} | {t['seconds']:.0f} |"
            for t in full + proxy
        ),
        "",
        *(
            [
                f"The hand-picked shape through the same protocol: proxy val cos "
                f"{doc['hand_on_validation']['proxy']['val_cosine']:.3f}, val R@1 "
                f"{doc['hand_on_validation']['proxy']['val_recall_at_1']:.3f}; fully trained val cos "
                f"{doc['hand_on_validation']['full']['val_cosine']:.3f}, val edge→cloud R@1 "
                f"{doc['hand_on_validation']['full']['val_recall_at_1']:.3f}, val edge→edge "
                f"{doc['hand_on_validation']['full']['val_edge_to_edge']:.3f}.",
                "",
            ]
            if "hand_on_validation" in doc
            else []
        ),
        "## Searched vs hand-picked, same budget (held-out identities, the gate's probes)",
        "",
        f"Hand-picked: `{doc['hand_picked']['model']}` at {doc['hand_picked']['resolution']} px (the levers table's "
        f"best in-budget shape). Searched: {cand(s['best'])}.",
        "",
        "Recipes: "
        + "; ".join(f"`{r}` = the config's edge with {v or 'nothing changed'}" for r, v in doc["recipes"].items())
        + ".",
        "",
        "| recipe | seed | arm | MACs / cloud | edge → cloud | / cloud→cloud | edge → edge | cos (queries) | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["seeds"]:
        for arm in ("hand-picked", "searched"):
            m = r[arm]
            lines.append(
                f"| {r['recipe']} | {r['seed']} | {arm} | {m['macs_ratio']:.3f} | {m['edge_to_cloud']:.3f} | "
                f"{m['edge_to_cloud'] / c2c:.2f}× | {m['edge_to_edge']:.3f} | {m['cos_query']:.3f} | "
                f"{m['train_seconds']:.0f} |"
            )
    lines += [
        "",
        "| recipe | seed | searched − hand-picked edge → cloud R@1 [exact paired 95%] |",
        "|---|---|---|",
        *(
            f"| {r['recipe']} | {r['seed']} | {r['gain']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |"
            for r in doc["seeds"]
        ),
        "",
    ]
    for recipe in doc["recipes"]:
        h, s_ = mean(recipe, "hand-picked", "edge_to_cloud"), mean(recipe, "searched", "edge_to_cloud")
        lines.append(
            f"- Mean over seeds, `{recipe}`: hand-picked {h:.3f} ({h / c2c:.2f}× cloud→cloud, edge→edge "
            f"{mean(recipe, 'hand-picked', 'edge_to_edge'):.3f}); searched {s_:.3f} ({s_ / c2c:.2f}×, edge→edge "
            f"{mean(recipe, 'searched', 'edge_to_edge'):.3f})."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
