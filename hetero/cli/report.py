"""`hetero report`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import emit


def run(args: argparse.Namespace) -> int:
    """Render the plots of saved results again: accuracy vs latency and the heatmap of a report, latency
    distributions of a bench result."""
    from hetero.io import read_json
    from hetero.release.plots import render

    made = {}
    for path in args.result:
        stem = Path(path).stem if len(args.result) == 1 else f"{Path(path).parent.name}_{Path(path).stem}"
        made[str(path)] = {
            k: {n: str(p) for n, p in v.items()} for k, v in render(read_json(path, "result"), args.out, stem).items()
        }
    lines = [f"{src}: {plot} -> {files['png']}" for src, plots in made.items() for plot, files in plots.items()]
    emit(args, {"plots": made}, "\n".join(lines))
    return 0


def register(add) -> None:
    r = add(
        "report",
        "plot saved results: accuracy vs latency, compatibility heatmap, latency distributions",
        "Render the plots of saved results as PNG, each with a CSV of the numbers it shows: from a report.json\n"
        "(verify, demo, check --json's report) the R@1-vs-latency scatter of every producer against the cloud with\n"
        "its Pareto front marked, and the heatmap of query producer x gallery producer; from a bench --json\n"
        "result the latency distribution of every row.",
        "examples:\n  hetero report runs/x/report.json --out runs/x/plots\n"
        "  hetero bench runs/x/export/* --json > bench.json && hetero report bench.json --out plots",
    )
    r.add_argument("result", type=Path, nargs="+", help="report.json or a saved bench --json document")
    r.add_argument("--out", type=Path, required=True, help="directory for the PNG and CSV files")
    r.set_defaults(func=run)
