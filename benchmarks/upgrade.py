"""Cloud v1 -> v2 without backfill, and flip-aware training, on the emoji cross-style set.

v1: EfficientNet-Lite0 trained on half of the training identities (the cloud in the field, its gallery indexed).
v2: EfficientNet-Lite2 on all of them (a bigger model on more data), trained five ways, same epochs and seed:
  independent   its own classification only (the baseline that needs a backfill)
  l2            classification + L2 regression to v1's embeddings of the same views
  bct           classification + BCT with v1's classifier (prototypes from v1's embeddings for identities v1 never saw)
  bct_kd        bct + uniform distillation from v1 (focal distillation's baseline)
  bct_focal     bct + focal distillation from v1 (positive-congruent training)
  bct_reg       bct + cosine regression to v1's embeddings of the same views
  bct_reg_focal bct_reg + focal distillation
  bct_emb       bct with v1's embedding means as the prototypes of every identity (not v1's classifier rows)
  bct_emb_focal bct_emb + focal distillation
  emb_only_focal bct_emb_focal without v2's own classification term
An edge trained into v1's space (the emoji edge recipe) stands for the edges in the field.

Every row is Twemoji queries of the 705 held-out identities against an OpenMoji gallery (chance 1/705): v1/v1,
v2/v1 (new queries, old gallery: no backfill), v2/v2 (after a backfill), edge/v1 and edge/v2-gallery, with
negative flips against v1/v1 (probes v1 retrieves correctly and the upgrade does not), relative NFR and paired
95% intervals. Checkpoints are kept in --work, so a rerun only evaluates.

  python benchmarks/upgrade.py --work /path/to/runs/upgrade
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

from hetero.config import OBJECTIVES, CheckConfig, RunConfig, load_config, override, to_dict
from hetero.data.datasets import load_split
from hetero.devices.harness import compatibility_report, fixture_from_cloud, open_cloud, open_producer, open_upgrade
from hetero.devices.loader import load
from hetero.io import atomic_write_json, atomic_write_text
from hetero.manifest import load_manifest
from hetero.release.gate import evaluate
from hetero.release.metrics import retrieval_metrics
from hetero.release.stats import PairedChange
from hetero.training.train import train

CONFIG = Path(__file__).resolve().parents[1] / "hetero" / "configs" / "emoji.toml"
ARMS = {
    "independent": OBJECTIVES["independent"],
    "l2": {"classification": 1.0, "regression_l2": 1.0},
    "bct": OBJECTIVES["bct"],
    "bct_kd": OBJECTIVES["bct_kd"],
    "bct_focal": OBJECTIVES["bct_focal"],
    "bct_reg": OBJECTIVES["bct_regression"],
    "bct_reg_focal": {**OBJECTIVES["bct_regression"], "focal_distillation": 1.0},
    "bct_emb": OBJECTIVES["bct"],
    "bct_emb_focal": OBJECTIVES["bct_focal"],
    # without v2's own classifier: the embedding answers only to v1's prototypes (and v1's posterior)
    "emb_only_focal": {"bct": 1.0, "focal_distillation": 1.0},
}
# Arms whose BCT prototypes are v1's embedding means for *every* identity (prototypes = "embeddings"), not v1's
# classifier rows: the means sit where v1 puts images of the identity in every style, the gallery's included.
EMBEDDING_PROTOTYPES = ("bct_emb", "bct_emb_focal", "emb_only_focal")
# Each flip-aware arm against the same objective without distillation (its NFR ratio, paired over the probes).
FLIP_PAIRS = {"bct_kd": "bct", "bct_focal": "bct", "bct_reg_focal": "bct_reg", "bct_emb_focal": "bct_emb"}

# Edge release N -> N+1: the emoji edge recipe again with another seed, alone or distilling from release N.
EDGE_ARMS = {"recipe": {}, "recipe_kd": {"plain_distillation": 1.0}, "recipe_focal": {"focal_distillation": 1.0}}


def _train_all(work: Path, epochs: int, seed: int) -> dict[str, Path]:
    """v1, an edge in v1's space, and the v2 arms; a unit already on disk is kept (delete it to retrain)."""
    base = load_config(CONFIG)
    v1_cfg = _v1_config(base, epochs, seed)
    units = {"v1": work / "v1", "edge": work / "edge_v1"}
    if not (units["v1"] / "manifest.json").is_file():
        train("cloud", v1_cfg, units["v1"])
    if not (units["edge"] / "manifest.json").is_file():
        train("edge", v1_cfg, units["edge"], cloud=units["v1"])
    for arm, extra in EDGE_ARMS.items():  # edge release N+1 (another seed) against release N = units["edge"]
        units[arm] = work / f"edge_next_{arm}"
        if not (units[arm] / "manifest.json").is_file():
            weights = {**v1_cfg.edge.loss_weights, **extra}
            table = {"seed": v1_cfg.edge.seed + 1, "previous": str(units["edge"]) if extra else ""}
            train("edge", override(v1_cfg, edge=table), units[arm], cloud=units["v1"], loss_weights=weights)
    v2_cfg = override(base, cloud={"epochs": epochs, "seed": seed})
    for arm, weights in ARMS.items():
        units[arm] = work / f"v2_{arm}"
        if not (units[arm] / "manifest.json").is_file():
            cloud = None if arm == "independent" else units["v1"]
            arm_cfg = override(v2_cfg, cloud={"prototypes": "embeddings"}) if arm in EMBEDDING_PROTOTYPES else v2_cfg
            train("cloud", arm_cfg, units[arm], cloud=cloud, loss_weights=weights)
    return units


def _v1_config(base: RunConfig, epochs: int, seed: int) -> RunConfig:
    return override(
        base,
        data={"train_class_share": 0.5},
        cloud={"model": "efficientnet_lite0", "epochs": epochs, "seed": seed},
    )


def _top1(q: np.ndarray, g: np.ndarray, split) -> np.ndarray:
    return retrieval_metrics(q, split.query.labels, g, split.gallery.labels, per_query=True)["top1_correct"]


def _nfr_ratio(ref_ok: np.ndarray, a_ok: np.ndarray, b_ok: np.ndarray) -> dict[str, float]:
    """NFR(a) / NFR(b) against the same reference on the same probes, with a paired percentile bootstrap (probes
    resampled together: the arms are compared on identical queries)."""
    fa, fb = (ref_ok & ~a_ok).astype(float), (ref_ok & ~b_ok).astype(float)

    def ratio(x, y, axis=-1):
        return x.mean(axis=axis) / np.maximum(y.mean(axis=axis), 1e-12)

    ci = bootstrap((fa, fb), ratio, paired=True, n_resamples=4000, method="percentile", rng=np.random.default_rng(0))
    return {
        "ratio": float(ratio(fa, fb)),
        "low": float(ci.confidence_interval.low),
        "high": float(ci.confidence_interval.high),
    }


def evaluate_arms(units: dict[str, Path], cfg: RunConfig) -> dict:
    """Every v2 arm as a fixture carrying v1's and that arm's gallery, through the harness and the gate."""
    split = load_split(cfg.data)
    v1 = open_cloud(units["v1"])
    fx = fixture_from_cloud(v1, split.query, split.gallery, to_dict(cfg.check), {"dataset": "emoji"})
    ref_ok = _top1(fx.reference_queries, fx.gallery_embeddings, split)
    edge = [open_producer(f"edge={units['edge']}", "candidate")]
    gate_cfg = CheckConfig(min_recall_at_1=0, min_relative_recall_at_1=0, min_map=0)  # the upgrade rules only
    arms, outcomes = {}, {}
    for arm in ARMS:
        # the independent arm claims no lineage (open_upgrade refuses it); it is measured, not admitted
        rt = load(units[arm]) if arm == "independent" else open_upgrade(units[arm], v1)
        up = fixture_from_cloud(v1, split.query, split.gallery, to_dict(cfg.check), {}, upgrade=rt)
        if arm == "independent":
            up.upgrade = {"kind": "independent (no lineage: measured only)"}
        report = compatibility_report(up, edge)
        rows = {r.name: r for r in report.rows}
        gate = evaluate(report, gate_cfg, ["cloud v2 → cloud"])
        outcomes[arm] = {
            "v2/v1": _top1(up.upgrade_queries, fx.gallery_embeddings, split),
            "v2/v2": _top1(up.upgrade_queries, up.upgrade_gallery_embeddings, split),
        }
        m = load_manifest(units[arm])[0]
        arms[arm] = {
            "weights": ARMS[arm],
            "train_seconds": m.extra.get("train_seconds"),
            "rows": {
                name: {
                    k: getattr(r, k)
                    for k in (
                        "recall_at_1",
                        "recall_at_5",
                        "map",
                        "negative_flip_rate",
                        "relative_flip_rate",
                        "vs_reference",
                    )
                }
                for name, r in rows.items()
                if name in ("cloud v2 → cloud", "cloud v2 → cloud v2", "edge → cloud v2", "edge → cloud")
            },
            "gain_v2v1_over_v1v1": _gain(PairedChange(**rows["cloud v2 → cloud"].vs_reference)),
            "nfr_interval": {
                which: PairedChange(**rows[name].vs_reference).flip_rate().to_dict()
                for which, name in (("v2/v1", "cloud v2 → cloud"), ("v2/v2", "cloud v2 → cloud v2"))
            },
            "gate_no_backfill": {"passed": gate.passed, "rules": [r.describe() for r in gate.rules]},
        }
    for arm, plain in FLIP_PAIRS.items():
        arms[arm]["nfr_vs_plain"] = {
            "plain": plain,
            **{w: _nfr_ratio(ref_ok, outcomes[arm][w], outcomes[plain][w]) for w in ("v2/v1", "v2/v2")},
        }
    base = {r.name: r for r in compatibility_report(fx, edge).rows}
    edges, edge_ok = {}, {}
    for arm in EDGE_ARMS:
        producers = [
            open_producer(f"next={units[arm]}", "candidate"),
            open_producer(f"released={units['edge']}", "previous"),
        ]
        rep = compatibility_report(fx, producers)
        row = rep.row("next → cloud")
        change = PairedChange(**row.vs_previous)
        edge_ok[arm] = _top1(load(units[arm]).embed(split.query.images), fx.gallery_embeddings, split)
        edges[arm] = {
            "recall_at_1": row.recall_at_1,
            "released_recall_at_1": rep.row("released → cloud").recall_at_1,
            "gain_over_released": _gain(change),
            "nfr_vs_released": change.flip_rate().to_dict(),
        }
    released_ok = _top1(load(units["edge"]).embed(split.query.images), fx.gallery_embeddings, split)
    for arm in ("recipe_kd", "recipe_focal"):
        edges[arm]["nfr_vs_recipe"] = _nfr_ratio(released_ok, edge_ok[arm], edge_ok["recipe"])
    return {
        "v1/v1": base["cloud → cloud"].recall_at_1,
        "edge/v1": base["edge → cloud"].recall_at_1,
        "n_query": len(split.query),
        "chance": 1 / len(set(split.gallery.labels.tolist())),
        "arms": arms,
        "edge_release": edges,
    }


def _gain(change: PairedChange) -> dict[str, float]:
    """R@1 gained over the reference (minus the paired loss), its interval's ends swapped accordingly."""
    loss = change.loss()
    return {"value": -loss.value, "low": -loss.high, "high": -loss.low}


def _ratio(d: dict) -> str:
    return f"{d['ratio']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"


def _fmt(iv: dict) -> str:
    return f"{iv['value']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def markdown(res: dict) -> str:
    lines = [
        "# Cloud upgrade v1 → v2 without backfill, and flip-aware training (emoji)",
        "",
        f"Generated by `benchmarks/upgrade.py` ({res['date']}, {res['seconds']:.0f} s of evaluation). "
        f"v1: {res['v1_model']} on {res['v1_classes']} of the training identities; v2: {res['v2_model']} on all "
        f"{res['v2_classes']}; every cloud {res['epochs']} epochs, seed {res['seed']}. "
        f"{res['n_query']} Twemoji queries of held-out identities against an OpenMoji gallery (chance "
        f"{res['chance']:.4f}).",
        "",
        f"v1/v1 R@1 = **{res['v1/v1']:.3f}**; the edge trained into v1's space: edge/v1 = {res['edge/v1']:.3f}.",
        "",
        "| v2 arm | v2/v1 R@1 (no backfill) | gain over v1/v1 [95% CI] | v2/v2 R@1 | v2/v1 ÷ v2/v2 | NFR v2/v1 [CI] "
        "| rel. NFR | NFR v2/v2 [CI] | edge/v2 R@1 | gate (no backfill) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in res["arms"].items():
        r = a["rows"]
        up, bf, eg = r["cloud v2 → cloud"], r["cloud v2 → cloud v2"], r["edge → cloud v2"]
        rel = up["relative_flip_rate"]
        lines.append(
            f"| {arm} | {up['recall_at_1']:.3f} | {_fmt(a['gain_v2v1_over_v1v1'])} | {bf['recall_at_1']:.3f} | "
            f"{up['recall_at_1'] / bf['recall_at_1']:.2f} | {_fmt(a['nfr_interval']['v2/v1'])} | "
            f"{'' if rel is None else f'{rel:.2f}'} | {_fmt(a['nfr_interval']['v2/v2'])} | {eg['recall_at_1']:.3f} | "
            f"{'pass' if a['gate_no_backfill']['passed'] else 'FAIL'} |"
        )
    lines += [
        "",
        "Flip-aware training against the same objective without distillation (NFR ratio, paired bootstrap over the "
        "same probes, 95%; the target is ≤ 0.70):",
        "",
        "| arm | against | NFR ratio, v2/v1 | NFR ratio, v2/v2 |",
        "|---|---|---|---|",
    ]
    for arm, a in res["arms"].items():
        if "nfr_vs_plain" in a:
            d = a["nfr_vs_plain"]
            lines.append(f"| {arm} | {d['plain']} | {_ratio(d['v2/v1'])} | {_ratio(d['v2/v2'])} |")
    lines += [
        "",
        "Edge release N → N+1 (N: the edge above; N+1: the same recipe, next seed, alone or distilling from N), "
        "on v1's gallery:",
        "",
        "| N+1 arm | R@1 (N: {:.3f}) | gain over N [95% CI] | NFR vs N [CI] | NFR ÷ recipe's [bootstrap 95%] |".format(
            next(iter(res["edge_release"].values()))["released_recall_at_1"]
        ),
        "|---|---|---|---|---|",
    ]
    for arm, e in res["edge_release"].items():
        cell = _ratio(e["nfr_vs_recipe"]) if "nfr_vs_recipe" in e else ""
        lines.append(
            f"| {arm} | {e['recall_at_1']:.3f} | {_fmt(e['gain_over_released'])} | {_fmt(e['nfr_vs_released'])} | "
            f"{cell} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="where the checkpoints are kept (reused)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of every cloud (v1 and each v2 arm)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    os.environ.setdefault("HETERO_CACHE", str(args.work / "cache"))
    units = _train_all(args.work, args.epochs, args.seed)
    if args.train_only:
        print(json.dumps({k: str(v) for k, v in units.items()}))
        return
    t0 = time.perf_counter()
    cfg = override(load_config(CONFIG), cloud={"epochs": args.epochs, "seed": args.seed})
    res = evaluate_arms(units, cfg)
    v1m, v2m = load_manifest(units["v1"])[0], load_manifest(units["bct"])[0]
    res.update(
        date=time.strftime("%Y-%m-%d"),
        seconds=time.perf_counter() - t0,
        epochs=args.epochs,
        seed=args.seed,
        v1_model=v1m.model["name"],
        v2_model=v2m.model["name"],
        v1_classes=v1m.model["num_classes"],
        v2_classes=v2m.model["num_classes"],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "upgrade.json", res)
    atomic_write_text(args.out / "upgrade.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
