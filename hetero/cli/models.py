"""`hetero models`: its parser beside its handler."""

from __future__ import annotations

import argparse

from hetero.cli.common import emit
from hetero.errors import InputError


def run(args: argparse.Namespace) -> int:
    from hetero.models.registry import MODELS, create_model, model_cost
    from hetero.spaces import InputSpec

    res = {}
    for item in args.resolution:
        name, _, px = item.partition("=")
        if name not in MODELS or not px.isdigit():
            raise InputError(f"--resolution wants NAME=PX with a registered model, got {item!r}")
        res[name] = int(px)
    spec = InputSpec(height=args.size, width=args.size)
    rows = []
    for name, e in sorted(MODELS.items()):
        m = create_model(name, embed_dim=args.dim, num_classes=2, resolution=res.get(name))
        rows.append(
            {
                "name": name,
                "family": e.family,
                "role": e.role,
                "pretrained": e.pretrained,
                "resolution": res.get(name, args.size),
                **model_cost(m, spec),
                "description": e.description,
            }
        )
    lines = [f"{'model':<24}{'family':<19}{'role':<7}{'px':>4}{'params':>11}{'MMACs':>9}  pretrained"]
    lines += [
        f"{r['name']:<24}{r['family']:<19}{r['role']:<7}{r['resolution']:>4}{r['params']:>11,}"
        f"{r['macs'] / 1e6:>9.1f}  {r['pretrained'] or '-'}"
        for r in rows
    ]
    emit(args, {"size": args.size, "models": rows}, "\n".join(lines))
    return 0


def register(add) -> None:
    r = add(
        "models",
        "list the model registry with parameters and MACs",
        "Every registered model: family, the role it was designed for, where its ImageNet weights come from, and\n"
        "its cost (parameters without the classifier; multiply-accumulates of one forward pass) at --size, or at\n"
        "--resolution for the backbone when a member computes at a lower size than the space's input.",
        "examples:\n  hetero models\n  hetero models --size 96 --resolution efficientnet_lite0_050=64 --json",
    )
    r.add_argument("--size", type=int, default=96, help="input size in pixels (default 96)")
    r.add_argument(
        "--resolution",
        action="append",
        default=[],
        metavar="NAME=PX",
        help="compute resolution of one member (repeatable)",
    )
    r.add_argument("--dim", type=int, default=128, help="embedding dim of the head (default 128)")
    r.set_defaults(func=run)
