"""`hetero split`: which identities train, and which are held out for the gate — before any training.

A user who trains their own cloud elsewhere must keep the held-out identities out of it (the gate measures
retrieval on identities no model has seen); this shows them, from the config alone, in a second.
"""

from __future__ import annotations

import argparse

from hetero.cli.common import emit, run_config


def run(args: argparse.Namespace) -> int:
    from hetero.config import space_name
    from hetero.data.datasets import load_split

    cfg = run_config(args)
    split = load_split(cfg.data)
    doc = {**split.describe(), "heldout_names": split.heldout_names(), "space_name": space_name(cfg)}
    text = split.to_text() + f"\nspace name: {doc['space_name']}"
    if args.list:
        text += "\nheld out: " + " ".join(doc["heldout_names"])
    emit(args, doc, text)
    return 0


def register(add) -> None:
    s = add(
        "split",
        "show which identities train and which are held out for the gate (before any training)",
        "Load the config's data and print its open-set split: the training identities, the held-out identities\n"
        "(queries and gallery are drawn from them, and no model may train on them) and the space's name. Train\n"
        "your own cloud without the held-out identities, or its R@1 on them is not an open-set measurement.\n"
        "`train` prints the same line first.",
        "examples:\n  hetero split --config my.toml\n  hetero split --config my.toml --list\n"
        "  hetero split --json | jq .heldout_names",
    )
    s.add_argument("--list", action="store_true", help="list every held-out identity")
    s.set_defaults(func=run)
