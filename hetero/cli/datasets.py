"""`hetero datasets`: its parser beside its handler."""

from __future__ import annotations

import argparse

from hetero.cli.common import emit


def run(args: argparse.Namespace) -> int:
    from hetero.data.datasets import DATASETS

    rows = [{"name": n, "description": (f.__doc__ or "").strip().splitlines()[0]} for n, f in sorted(DATASETS.items())]
    emit(args, {"datasets": rows}, "\n".join(f"{r['name']:<15}{r['description']}" for r in rows))
    return 0


def register(add) -> None:
    ds = add(
        "datasets",
        "list the dataset registry",
        "Every registered dataset and where it comes from. All are offline: built from installed packages into\n"
        "$HETERO_CACHE on first use (emoji), read from a Debian package (fashion_mnist), or shipped in scikit-learn.",
        "example:\n  hetero datasets --json",
    )
    ds.set_defaults(func=run)
