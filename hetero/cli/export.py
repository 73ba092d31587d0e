"""`hetero export`: its parser beside its handler."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from hetero.cli.common import csv_names, emit, log, run_config, support_matrix
from hetero.errors import InputError


def run(args: argparse.Namespace) -> int:
    from hetero.data.datasets import load_split
    from hetero.export.artifact import ExportData, export_matrix, validate_artifact
    from hetero.io import ensure_writable_dir

    cfg = run_config(args)
    data = ExportData.from_split(load_split(cfg.data), cfg.export.calibration_images)
    if args.validate:
        v = validate_artifact(args.validate, args.checkpoint, data, cfg.export)
        if v["status"] != "passed":  # checked statically at most: that is not a validation
            from hetero.errors import NotExecutedError

            raise NotExecutedError(f"{args.validate}: not executed, not validated ({v.get('reason', v['status'])})")
        emit(args, {"artifact": str(args.validate), "validation": v}, f"{args.validate}: {v['status']}")
        return 0
    if args.out is None:
        raise InputError("give --out DIR (artifacts go to DIR/<format>-<precision>/), or --validate ARTIFACT")
    ensure_writable_dir(args.out)
    formats = csv_names(args.formats, "--formats") if args.formats is not None else list(cfg.export.formats)
    precisions = (
        csv_names(args.precisions, "--precisions") if args.precisions is not None else list(cfg.export.precisions)
    )
    elsewhere = ()
    if cfg.export.validate_on:  # the runtime targets every artifact of their format is validated on too
        from hetero.devices.targets import export_runners

        elsewhere = export_runners(list(cfg.export.validate_on), lambda s: log(args, s))
    result = export_matrix(
        args.checkpoint,
        args.out,
        formats,
        precisions,
        data,
        cfg.export,
        log=lambda s: log(args, s),
        elsewhere=elsewhere,
    )
    text = result.to_text() + ("\n" + _next_step(args) if result.passed else "")
    emit(args, result.to_dict(), text)
    result.raise_for_failures()  # exit 1, every failed rule listed; the table above shows the rest
    return 0


def _next_step(args: argparse.Namespace) -> str:
    """Verify every artifact just written against the cloud the checkpoint was trained for (runnable as printed)."""
    from hetero.manifest import load_manifest

    cloud = load_manifest(args.checkpoint)[0].source.get("cloud_checkpoint")
    if not cloud:
        return "next: hetero verify --cloud CLOUD --candidate DIR ...  (this checkpoint records no cloud)"
    config = f" --config {shlex.quote(str(args.config))}" if args.config else ""
    out = Path(args.out)
    report_dir = shlex.quote(str(out.with_name(out.name + "_verify")))
    return (
        f"next: hetero verify{config} --cloud {shlex.quote(str(cloud))} --candidate {shlex.quote(str(out))} "
        f"--out {report_dir}"
    )


def register(add) -> None:
    e = add(
        "export",
        "export a checkpoint to ONNX, Core ML and TFLite and prove parity",
        "Export a checkpoint to every requested format x precision, each into OUT/<format>-<precision>/ with its\n"
        "manifest. Preprocessing and L2 normalisation are inside every graph. Each artifact is executed on its real\n"
        "runtime (onnxruntime, LiteRT) over the held-out images and compared with torch: min/mean cosine, top-10\n"
        "overlap, and the R@1 drop (each held-out image against the others, paired) decided on the upper end of its\n"
        "95% interval; a tolerance below what the held-out set resolves is refused (exit 2). Core ML off macOS is\n"
        "checked against the torch graph (ops, shapes, weights, MACs) and marked not executed. An artifact that\n"
        "misses a tolerance is not written and the command exits 1 after trying all the others.\n\n"
        "support matrix (unsupported combinations in the cross product are listed as such and skipped):\n"
        + "\n".join(f"  {f:<7} {', '.join(p)}" for f, p in support_matrix().items())
        + "\nprecisions: fp32; fp16; int8 = int8 weights and activations (calibrated); int8w = int8 weights only",
        "examples:\n  hetero export --checkpoint runs/x/edge_bct --out runs/x/export\n"
        "  hetero export --checkpoint runs/x/edge_bct --out runs/x/export --formats onnx,coreml,tflite "
        "--precisions fp32,fp16,int8,int8w\n"
        "  hetero export --checkpoint runs/x/edge_bct --validate runs/x/export/tflite-int8",
    )
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--out", type=Path, help="directory for the artifacts (OUT/<format>-<precision>/)")
    e.add_argument("--formats", help="comma-separated (default: [export].formats)")
    e.add_argument("--precisions", help="comma-separated (default: [export].precisions)")
    e.add_argument(
        "--validate",
        type=Path,
        metavar="ARTIFACT",
        help="re-validate an existing artifact against --checkpoint instead of exporting",
    )
    e.set_defaults(func=run)
