"""`hetero train`: its parser beside its handler."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from hetero.cli.common import emit, objectives, run_config


def run(args: argparse.Namespace) -> int:
    from hetero.config import OBJECTIVES, override
    from hetero.training import distributed
    from hetero.training.train import train

    cfg = run_config(args)
    table = {k: v for k, v in {"epochs": args.epochs, "lr": args.lr}.items() if v is not None}
    if args.lqf:  # --lr is then LQF's step size ([lqf] lr), the role's lr is unused
        table = {k: v for k, v in table.items() if k != "lr"} | {"lqf": True}
        if args.lr is not None:
            cfg = override(cfg, lqf={"lr": args.lr})
    if args.qat is not None:
        table |= {"init": str(args.qat), "qat": True}
    if args.previous is not None:
        table |= {"previous": str(args.previous)}
    if table:
        cfg = override(cfg, **{args.role: table})
    weights = OBJECTIVES[args.objective] if args.objective else (OBJECTIVES["lqf"] if args.lqf else None)
    distributed.setup()
    try:
        r = train(
            args.role,
            cfg,
            args.out,
            cloud=args.cloud,
            loss_weights=weights,
            resume=args.resume,
            progress=not args.quiet,
        )
    finally:
        distributed.teardown()
    if r is None:  # a non-zero rank of a torchrun job: rank 0 reports
        return 0
    emit(args, r.to_dict(), r.to_text() + "\n" + next_step(args, r))
    return 0


def next_step(args: argparse.Namespace, r) -> str:
    """The command that continues from this checkpoint, runnable as printed."""
    config = f" --config {shlex.quote(str(args.config))}" if args.config else ""
    out = shlex.quote(str(args.out))
    if args.role == "cloud":
        edge = shlex.quote(str(Path(args.out).with_name(Path(args.out).name + "_edge")))
        return f"next: hetero train edge{config} --cloud {out} --out {edge}"
    export = shlex.quote(str(Path(args.out).with_name(Path(args.out).name + "_export")))
    return f"next: hetero export{config} --checkpoint {out} --out {export}"


def register(add) -> None:
    t = add(
        "train",
        "train a cloud model, or an edge model into its space",
        "Train the cloud model (defines the embedding space) or an edge model. An objective with a term that\n"
        "aligns spaces (bct, regression_l2, regression_cosine, regression_features, contrastive) puts the edge\n"
        "checkpoint into the cloud's space; the baselines `independent` and `distillation` (logit distillation,\n"
        "the negative control) train a space of their own. What the frozen cloud model computes on the training\n"
        "views is cached on disk ($HETERO_CACHE, default ~/.cache/hetero), so compatible training costs about what\n"
        "independent training does. A cloud trained with --cloud V1 and such an objective is an upgrade: it lives in\n"
        "V1's space (lineage recorded and stamped into its weights), so its queries search V1's gallery unchanged.\n"
        "State is saved after every epoch; `--resume` continues a killed run. Scale out with torchrun (gloo, CPU).\n\n"
        "objectives (presets for --objective; [edge].loss_weights in the config gives any mix):\n"
        + "\n".join(f"  {k:<15} {', '.join(f'{t}={w:g}' for t, w in v.items())}" for k, v in objectives().items()),
        "examples:\n  hetero train cloud --out runs/x/cloud\n"
        "  hetero train edge --cloud runs/x/cloud --out runs/x/edge_bct\n"
        "  hetero train edge --cloud runs/x/cloud --objective bct_regression --out runs/x/edge_bctreg\n"
        "  hetero train edge --objective independent --out runs/x/edge_ind\n"
        "  hetero train edge --cloud runs/x/cloud --out runs/x/edge_bct --resume    # after a kill\n"
        "  hetero train edge --cloud runs/x/cloud --qat runs/x/edge_bct --epochs 5 --lr 1e-4 --out runs/x/edge_qat\n"
        "  hetero train cloud --cloud runs/v1/cloud --objective bct_focal --out runs/v2/cloud  # v1 -> v2\n"
        "  hetero train edge --config emoji.toml --cloud runs/e/cloud --lqf --out runs/e/edge_lqf\n"
        "  hetero train edge --cloud runs/x/cloud --previous runs/x/edge_bct --objective bct_focal --out runs/x/edge2\n"
        "  torchrun --nproc_per_node=2 -m hetero.cli train cloud --out runs/x/cloud",
    )
    t.add_argument("role", choices=["cloud", "edge"])
    t.add_argument(
        "--out", type=Path, required=True, help="checkpoint directory to write (model.safetensors + manifest.json)"
    )
    t.add_argument("--cloud", type=Path, help="frozen cloud checkpoint (needed by every term that uses the cloud)")
    t.add_argument(
        "--objective",
        choices=sorted(objectives()),
        help="preset loss weights (default: the config's loss_weights for the role)",
    )
    t.add_argument("--resume", action="store_true", help="continue from the state a killed run left beside --out")
    t.add_argument(
        "--qat",
        type=Path,
        metavar="CHECKPOINT",
        help="quantisation-aware fine-tuning of this trained checkpoint: weights and conv inputs rounded as int8 in "
        "every step, batch norm frozen; pair with a short, low-lr schedule (--epochs 5 --lr 1e-4)",
    )
    t.add_argument(
        "--previous",
        type=Path,
        metavar="CHECKPOINT",
        help="the release this model replaces (same space): focal_distillation / plain_distillation distil from it "
        "on every training view, so fewer of its right answers flip (e.g. --objective bct_focal)",
    )
    t.add_argument(
        "--lqf",
        action="store_true",
        help="linear quadratic fine-tuning: the model is made linear in its weight change over [lqf] stages and "
        "trained with a K-FAC step (default objective: lqf, least squares onto the cloud's embeddings; --lr is then "
        "the K-FAC step size, [lqf] lr). The checkpoint exports like any model; its MACs include the tangent pass",
    )
    t.add_argument("--epochs", type=int, help="override the role's epochs")
    t.add_argument("--lr", type=float, help="override the role's learning rate")
    t.set_defaults(func=run)
