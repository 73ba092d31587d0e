"""`hetero demo`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import add_threshold_flags, check_thresholds, emit, log, run_config
from hetero.errors import GateFailure


def run(args: argparse.Namespace) -> int:
    """Whole chain on the default dataset: train cloud, BCT edge, independent edge; export; verify; gate."""
    import dataclasses

    from hetero.export.artifact import artifacts_table
    from hetero.pipeline import run_demo

    cfg = dataclasses.replace(run_config(args), check=check_thresholds(args))  # hidden threshold flags still apply
    r = run_demo(cfg, Path(args.out), log=lambda m: log(args, m), progress=not args.quiet)
    out = r.out
    cloud_m, edge_m = r.cloud.model, r.edge.model
    shipped = sorted((a for a in r.export if a.path), key=lambda a: (a.format != "tflite", a.precision != "int8"))
    int8 = shipped[0].path if shipped else None  # the mobile artifact to gate: TFLite int8 when it was written
    footer = (
        f"edge {edge_m['name']}: {edge_m['macs'] / 1e6:.1f} M MACs, {edge_m['params'] / 1e3:.0f} k params = "
        f"{edge_m['macs'] / cloud_m['macs']:.2f}x the cloud's MACs\n"
        f"outputs in {out}/: cloud/ edge_bct/ edge_independent/ export/ fixture.safetensors report.json report.md\n"
        f"re-run the gate: hetero check --report {r.paths['json']}"
        + (f"\nmobile CI gate:  hetero check --fixture {out / 'fixture.safetensors'} --artifact {int8}" if int8 else "")
    )
    emit(
        args,
        {
            "passed": r.passed,
            "export": [a.to_dict() for a in r.export],
            "export_failures": r.export_failures,
            "gate": r.gate.to_dict(),
            "report": r.report.to_dict(),
            "paths": {k: str(v) for k, v in r.paths.items()},
        },
        "\n" + artifacts_table(r.export) + "\n\n" + r.report.to_text() + "\n\n" + r.gate.to_text() + "\n" + footer,
    )
    if not r.passed:
        raise GateFailure(r.export_failures + r.gate.failures, what="demo")
    return 0


def register(add) -> None:
    d = add(
        "demo",
        "run the whole chain on the default dataset",
        "Train the cloud model, a BCT edge model and an independent edge model; export the BCT edge model to\n"
        "ONNX; run it in onnxruntime against the cloud gallery; gate the result. About a minute on 2 cores.",
        "example:\n  hetero demo --out runs/demo",
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    add_threshold_flags(d, hidden=True)
    d.set_defaults(func=run)
