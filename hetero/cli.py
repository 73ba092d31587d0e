"""`hetero` command line: train | export | verify | check | demo.

Exit codes: 0 pass, 1 compatibility/threshold failure, 2 usage or input error. Errors are one line on stderr
(a traceback only with --debug). `--json` prints one JSON document on stdout; progress goes to stderr.
Heavy modules (torch, exporters, runtimes) are imported inside the commands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hetero.errors import GateFailure, HeteroError, InputError

CHECK_SCHEMA = "hetero.check/1"  # `check --json`, described by hetero/schemas/check.schema.json
EPILOG_EXIT = "exit codes: 0 pass, 1 compatibility or threshold failure, 2 usage or input error"


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text, flush=True)


def _config(args: argparse.Namespace):
    from hetero.config import load_config

    return load_config(args.config)


def _check_config(args: argparse.Namespace, fixture_thresholds: dict | None = None):
    """Thresholds: the fixture's frozen ones are a floor that the --policy file and flags may only tighten; without
    a fixture, --policy (its keys over the defaults), else the config's [check]; flags override."""
    import dataclasses

    from hetero.config import CheckConfig, from_dict, read_policy
    from hetero.errors import ConfigError
    from hetero.gate import tightened

    table = read_policy(args.policy)[0] if getattr(args, "policy", None) else {}
    overrides = {key: getattr(args, flag[2:].replace("-", "_"), None) for flag, key in _THRESHOLD_FLAGS}
    overrides["require_executed"] = True if getattr(args, "require_executed", False) else None
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        if fixture_thresholds is not None:
            floor = from_dict(CheckConfig, fixture_thresholds, prefix="fixture thresholds.")
            policy = dataclasses.asdict(from_dict(CheckConfig, table, prefix="check.", base=floor))
            cfg = tightened(floor, policy, "the policy") if table else floor
            return tightened(cfg, flags, "a command-line threshold") if flags else cfg
        cfg = from_dict(CheckConfig, table, prefix="check.") if getattr(args, "policy", None) else _config(args).check
        return dataclasses.replace(cfg, **flags)
    except ConfigError as e:
        raise ConfigError(f"command-line threshold: {e}") from None


def _signing_key(args: argparse.Namespace):
    """The private key of --sign, loaded before any work: a bad key is found in a second, not after embedding."""
    if args.sign is None:
        return None
    from hetero.signing import load_private_key

    return load_private_key(args.sign)


def _trusted_keys(args: argparse.Namespace) -> list:
    """Public keys from --trust and the --policy file's trust list: with any, fixtures and reports must be signed."""
    from hetero.config import read_policy
    from hetero.signing import load_public_key

    paths = list(getattr(args, "trust", None) or [])
    if getattr(args, "policy", None):
        paths += list(read_policy(args.policy)[1])
    return [load_public_key(p) for p in paths]


# ---------------------------------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from hetero import distributed
    from hetero.config import OBJECTIVES, override
    from hetero.train import train

    cfg = _config(args)
    table = {k: v for k, v in {"epochs": args.epochs, "lr": args.lr}.items() if v is not None}
    if args.qat is not None:
        table |= {"init": str(args.qat), "qat": True}
    if args.previous is not None:
        table |= {"previous": str(args.previous)}
    if table:
        cfg = override(cfg, **{args.role: table})
    weights = OBJECTIVES[args.objective] if args.objective else None
    distributed.setup()
    try:
        t0 = time.perf_counter()
        m = train(
            args.role,
            cfg,
            args.out,
            cloud=args.cloud,
            loss_weights=weights,
            resume=args.resume,
            progress=not args.quiet,
        )
        secs = time.perf_counter() - t0
    finally:
        distributed.teardown()
    if m is None:  # a non-zero rank of a torchrun job: rank 0 reports
        return 0
    final = m.extra.get("final", {})
    _emit(
        args,
        {"checkpoint": str(args.out), "seconds": round(secs, 2), "manifest": m.to_dict()},
        f"{args.role} {m.model['name']} -> {args.out}  space {m.space.id}  "
        f"loss {final.get('loss', float('nan')):.3f}  ({secs:.0f} s, {m.extra.get('processes', 1)} process(es))",
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from hetero.config import OBJECTIVES, override
    from hetero.data import load_split
    from hetero.search import search

    cfg = _config(args)
    table = {k: v for k, v in {"candidates": args.candidates, "top": args.top}.items() if v is not None}
    if args.budget is not None:
        table["budget_macs"] = args.budget
    if table:
        cfg = override(cfg, search=table)
    weights = OBJECTIVES[args.objective] if args.objective else None
    say = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    latency = None
    if cfg.search.budget_ms > 0:
        from hetero.devices.bench import graph_latency_ms as latency
    r = search(
        cfg, args.cloud, args.out, split=load_split(cfg.data), loss_weights=weights, progress=say, latency=latency
    )
    b = r.best
    _emit(
        args,
        r.to_json(),
        f"best within {r.budget_macs / 1e6:.1f} M MACs ({r.budget_macs / r.cloud_macs:.2f}x the cloud): "
        f"{b.candidate.describe()}, {b.macs_ratio:.3f}x cloud MACs, validation edge->cloud R@1 "
        f"{b.val_recall_at_1:.3f} -> {r.checkpoint}  ({len(r.trials)} trials, {r.seconds / 60:.1f} min of training; "
        f"every trial in {Path(args.out) / 'trials.jsonl'}, plot {Path(args.out) / 'search.png'})",
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hetero.data import load_split
    from hetero.export.artifact import ExportData, export_matrix, validate_artifact
    from hetero.io import ensure_writable_dir

    cfg = _config(args)
    data = ExportData.from_split(load_split(cfg.data), cfg.export.calibration_images)
    if args.validate:
        v = validate_artifact(args.validate, args.checkpoint, data, cfg.export)
        if v["status"] != "passed":  # checked statically at most: that is not a validation
            from hetero.errors import NotExecutedError

            raise NotExecutedError(f"{args.validate}: not executed, not validated ({v.get('reason', v['status'])})")
        _emit(args, {"artifact": str(args.validate), "validation": v}, f"{args.validate}: {v['status']}")
        return 0
    if args.out is None:
        raise InputError("give --out DIR (artifacts go to DIR/<format>-<precision>/), or --validate ARTIFACT")
    ensure_writable_dir(args.out)
    formats = _csv(args.formats, "--formats") if args.formats is not None else list(cfg.export.formats)
    precisions = _csv(args.precisions, "--precisions") if args.precisions is not None else list(cfg.export.precisions)
    result = export_matrix(
        args.checkpoint, args.out, formats, precisions, data, cfg.export, log=lambda s: _log(args, s)
    )
    _emit(args, {"passed": result.passed, "artifacts": result.artifacts}, export_table(result.artifacts))
    result.raise_for_failures()  # exit 1, every failed rule listed; the table above shows the rest
    return 0


def _csv(value: str, flag: str) -> list[str]:
    """A flag's comma-separated names; one given empty (`--formats ,`) is refused, never read as 'the defaults'."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"{flag} names nothing ({value!r}); leave it out for the config's defaults")
    return names


def _drop_text(q: dict) -> str:
    """R@1 lost vs torch with its 95% interval, in points."""
    lo, hi = q.get("r1_drop_interval", (q["r1_drop"], q["r1_drop"]))
    return f"{q['r1_drop'] * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}] pt"


def export_table(results: list[dict]) -> str:
    head = ["format", "precision", "status", "min cos", "mean cos", "R@1 drop [95% CI]", "top-10", "size", "path"]
    rows = []
    for r in results:
        v = r.get("validation", {})
        e, q = v.get("embedding", {}), v.get("retrieval", {})
        rows.append(
            [
                r["format"],
                r["precision"],
                r["status"],
                f"{e['min_cosine']:.6f}" if e else "",
                f"{e['mean_cosine']:.6f}" if e else "",
                _drop_text(q) if q else "",
                f"{q['top10_overlap']:.3f}" if q else "",
                f"{r['size_bytes'] / 1024:.0f} KiB" if r.get("size_bytes") else "",
                r.get("path") or "",
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*row) for row in rows)]
    for r in results:
        lines += [f"FAILED {r['format']}-{r['precision']}: {f}" for f in r.get("failures", [])]
        if r["status"] == "not executed":
            lines.append(
                f"not executed {r['format']}-{r['precision']}: {r['validation']['reason']} "
                "(program checked against the torch graph: op sequence, output shapes, weights, MACs)"
            )
    return "\n".join(lines)


_UPGRADE_HELP = (
    "a cloud v2 trained into the cloud's space (hetero train cloud --cloud V1); its lineage is checked (exit 2 if "
    "it was not trained against this cloud), then "
)


def cmd_verify(args: argparse.Namespace) -> int:
    from hetero.devices.pipeline import verify

    key = _signing_key(args)
    result = verify(
        _config(args), args.cloud, args.candidate, args.control, args.out, _index_spec(args), upgrade=args.upgrade,
        sign=key,
    )  # fmt: skip
    report, paths = result.report, result.paths
    _emit(
        args,
        {"report": report.to_dict(), "paths": {k: str(v) for k, v in paths.items()}},
        report.to_text() + f"\n\nreport: {paths['json']}  {paths['markdown']}",
    )
    return 0


def _index_spec(args: argparse.Namespace):
    """--index KIND [--nprobe N]: search the cloud gallery through a faiss index; none: rank it densely."""
    if args.index == "none":
        return None
    from hetero.index import IndexSpec

    return IndexSpec(kind=args.index, nprobe=args.nprobe)


def _add_index_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        choices=["none", "auto", "exact", "ivfpq", "hnsw"],
        default="none",
        help="search the cloud gallery through a faiss index built over it, as a deployed search would "
        "(auto: exact up to 200k items, IVF-PQ above; the report records which and its recall vs exact); "
        "none: rank every gallery item densely (default)",
    )
    parser.add_argument("--nprobe", type=int, default=32, help="IVF cells probed per query (--index ivfpq)")


def cmd_check(args: argparse.Namespace) -> int:
    from hetero.devices.pipeline import check, cloud_fixture
    from hetero.errors import NotExecutedError
    from hetero.io import atomic_write_text, ensure_writable_dir
    from hetero.report import Report

    sources = [bool(args.report), bool(args.fixture), bool(args.cloud)]
    upgrade = args.fixture or args.upgrade  # a fixture may carry a cloud upgrade, gated without any artifact
    if (
        sum(sources) != 1
        or (args.report and args.artifact)
        or (not args.report and not args.artifact and not upgrade)
        or (args.upgrade and not args.cloud)
    ):
        raise InputError(
            "give exactly one of: --report REPORT.json | --fixture FIXTURE --artifact A | "
            "--cloud CHECKPOINT --artifact A | --cloud CHECKPOINT --upgrade V2"
        )
    for flag, out in (("--junit", args.junit), ("--markdown", args.markdown)):
        if out is not None:
            if Path(out).is_dir():
                raise InputError(f"{flag} {out} is a directory; give the file to write")
            ensure_writable_dir(Path(out).parent)
    remote = None
    if getattr(args, "remote", None):
        from hetero.devices.remote import SSHHost

        remote = SSHHost.from_args(args)
    trust = _trusted_keys(args)
    if trust and args.cloud:
        raise InputError("--trust verifies a signed fixture or report; --cloud builds its fixture here, unsigned")
    if args.report:
        result = check(
            thresholds=_check_config(args),
            report=Report.load(args.report, trust=trust),
            rows=args.row,
            index=_index_spec(args),
        )
    else:
        if args.fixture:
            from hetero.fixture import Fixture

            fx = Fixture.load(args.fixture, trust=trust)
        else:
            fx = cloud_fixture(_config(args), args.cloud, upgrade=args.upgrade)
        result = check(
            thresholds=_check_config(args, fx.thresholds if args.fixture else None),
            fixture=fx,
            artifacts=args.artifact,
            previous=args.previous,
            rows=args.row,
            remote=remote,
            index=_index_spec(args),
        )
    _write_check_outputs(args, result.report, result.gate, atomic_write_text)
    if result.not_executed:
        args.junit_written = True  # the skipped rows say more than a bare error
        raise NotExecutedError(result.not_executed)
    text = result.report.to_text() + "\n\n" + _gate_text(result.gate)
    payload = {"schema": CHECK_SCHEMA, "passed": result.passed, "gate": result.gate.to_dict()}
    signed = result.report.signed_by or (fx.signed_by if not args.report and args.fixture else "")
    if signed:
        payload["signed_by"] = signed
        text += f"\nsigned by trusted key {signed}"
    _emit(args, {**payload, "report": result.report.to_dict()}, text)
    if not result.passed:
        raise GateFailure(result.gate.failures)
    return 0


def _write_check_outputs(args: argparse.Namespace, report, result, write) -> None:
    """JUnit and Markdown are written on pass *and* fail: CI needs them most when the gate is red."""
    if args.junit:
        write(Path(args.junit), report.to_junit(result))
    if args.markdown:
        gate = [f"- {_verdict_word(result, r, '**FAIL**')} {r.describe()}" for r in result.rules]
        verdict = "PASS" if result.passed else ("FAIL" if result.failures else "NOT EXECUTED")
        md = Path(args.markdown)
        write(
            md,
            report.to_markdown()
            + _heatmap_markdown(report, md)
            + "\n## Gate: "
            + verdict
            + "\n\n"
            + "\n".join(gate)
            + "\n",
        )


def _heatmap_markdown(report, md: Path) -> str:
    """The compatibility heatmap as a PNG beside the Markdown file, linked from it (matplotlib: hetero[all])."""
    if not report.matrix:
        return ""
    from hetero.plots import heatmap

    try:
        heatmap(report.matrix, md.with_name(md.stem + "_heatmap.png"))
    except ImportError:  # the slim `hetero[check]` install has no matplotlib
        return "\n(heatmap not drawn: matplotlib is not installed; pip install hetero[all])\n"
    return f"\n![compatibility heatmap]({md.stem}_heatmap.png)\n"


def cmd_report(args: argparse.Namespace) -> int:
    """Render the plots of saved results again: accuracy vs latency and the heatmap of a report, latency
    distributions of a bench result."""
    from hetero.io import read_json
    from hetero.plots import render

    made = {}
    for path in args.result:
        stem = Path(path).stem if len(args.result) == 1 else f"{Path(path).parent.name}_{Path(path).stem}"
        made[str(path)] = {
            k: {n: str(p) for n, p in v.items()} for k, v in render(read_json(path, "result"), args.out, stem).items()
        }
    lines = [f"{src}: {plot} -> {files['png']}" for src, plots in made.items() for plot, files in plots.items()]
    _emit(args, {"plots": made}, "\n".join(lines))
    return 0


def cmd_fixture(args: argparse.Namespace) -> int:
    from hetero.fixture import Fixture

    if args.action == "info":
        if args.path is None:
            raise InputError("fixture info needs the fixture file: hetero fixture info FIXTURE")
        fx = Fixture.load(args.path, trust=_trusted_keys(args))
        info = {**fx.info(), "path": str(args.path), "size_bytes": Path(args.path).stat().st_size}
        info["signature"] = (
            f"verified: key {fx.signed_by}" if fx.signed_by
            else f"present, not verified (key {fx.signature.get('key_id')}; pass --trust)" if fx.signature
            else "unsigned"
        )  # fmt: skip
        _emit(args, info, "\n".join(f"{k}: {v}" for k, v in info.items()))
        return 0
    if args.cloud is None or args.out is None:
        raise InputError("fixture create needs --cloud CHECKPOINT and --out FIXTURE")
    from hetero.devices.pipeline import create_fixture

    key = _signing_key(args)
    made = create_fixture(_config(args), args.cloud, args.out, args.max_probes, upgrade=args.upgrade, sign=key)
    fx, size = made.fixture, made.size_bytes
    _emit(
        args,
        {**fx.info(), "path": str(args.out), "size_bytes": size},
        f"fixture -> {args.out}  ({size / 1e6:.2f} MB: {len(fx.probe_labels)} probes, {len(fx.gallery_labels)} "
        f"gallery vectors, space {fx.space.id}"
        + (f"; and cloud v2 {fx.upgrade['cloud_sha256'][:12]}'s gallery" if fx.has_upgrade else "")
        + (f"; signed by key {fx.signature['key_id']}" if fx.signature else "")
        + ")",
    )
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from hetero.signing import generate_key

    pub, kid = generate_key(args.path)
    _emit(
        args,
        {"private_key": str(args.path), "public_key": str(pub), "key_id": kid},
        f"key {kid}: private -> {args.path} (keep it secret), public -> {pub} (for check --trust)",
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from hetero.devices.pipeline import sign_file
    from hetero.signing import load_private_key

    r = sign_file(args.path, load_private_key(args.key))
    _emit(args, r.to_dict(), f"signed {r.kind} {r.path} with key {r.key_id} (content {r.content_sha256[:16]}…)")
    return 0


def cmd_cloud(args: argparse.Namespace) -> int:
    """Import the user's cloud model (ONNX or TorchScript) or its embedding file as a cloud unit."""
    from hetero.cloud import Preprocessing, import_cloud
    from hetero.table import import_embeddings, is_embedding_file

    def three(text: str, what: str) -> tuple[float, float, float]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"--{what} takes three comma-separated numbers, got {text!r}") from None
        if len(values) != 3:
            raise InputError(f"--{what} takes three comma-separated numbers, got {text!r}")
        return values

    height, width = args.size
    table = is_embedding_file(args.model)
    if table and (args.channel_order or args.layout):
        raise InputError("--channel-order and --layout describe a model's input; an embedding file has no model")
    pre = Preprocessing(
        height,
        width,
        three(args.mean, "mean"),
        three(args.std, "std"),
        args.channel_order or "RGB",
        args.layout or "NCHW",
    )
    if table:
        m = import_embeddings(args.model, args.out, pre.input_spec(), name=args.name, normalize=args.normalize)
        what = f"{m.model['rows']} stored embeddings, edges take {height}x{width} RGB uint8"
    else:
        m = import_cloud(args.model, args.out, pre, name=args.name, normalize=args.normalize)
        what = f"input {height}x{width} RGB uint8{', L2 in the graph' if args.normalize else ''}"
    _emit(
        args,
        {"path": str(args.out), "space": m.space.to_dict(), "sha256": m.sha256, "source": m.source},
        f"cloud -> {args.out}  (space {m.space.id}, dim {m.space.dim}, {what})",
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Latency percentiles, load time, memory, size and distance to the compute limit of units on their runtimes."""
    from hetero.devices.bench import bench
    from hetero.io import atomic_write_text, ensure_writable_dir

    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise InputError(f"--threads takes comma-separated counts, e.g. 1,2; got {args.threads!r}") from None
    for out in (args.markdown, args.csv):
        if out is not None:
            ensure_writable_dir(Path(out).parent)
    remote = None
    if args.remote:
        from hetero.devices.remote import SSHHost

        remote = SSHHost.from_args(args)
    result = bench(
        args.unit, threads, runs=args.runs, seconds=args.seconds, warmup=args.warmup, batch=args.batch,
        remote=remote, progress=lambda m: _log(args, f"bench {m}"),
    )  # fmt: skip
    if args.markdown:
        atomic_write_text(Path(args.markdown), result.to_markdown())
    if args.csv:
        atomic_write_text(Path(args.csv), result.to_csv())
    _emit(args, result.to_dict(), result.to_text())
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed a folder or manifest with any unit into resumable shards (and a faiss index)."""
    from hetero.devices.embed_job import embed_source

    k, _, m = args.part.partition("/")
    try:
        part = (int(k), int(m))
    except ValueError:
        raise InputError(f"--part takes K/M (this machine's share, 0-based), got {args.part!r}") from None
    r = embed_source(
        args.source, args.unit, args.out, batch_size=args.batch_size, shard_size=args.shard_size,
        workers=args.workers, part=part, threads=args.threads, max_bad_fraction=args.max_bad_fraction,
        index="" if args.index == "none" else args.index, progress=not args.quiet,
    )  # fmt: skip
    doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in r.__dict__.items()}
    status = "complete" if r.complete else f"partial: {r.shards_total} shards planned, run the other parts"
    text = (
        f"embeddings -> {r.out}  ({status}; {r.rows:,} rows x {r.dim}, space {r.space['id']}; "
        f"{r.shards_computed} shards computed at {r.images_per_second:,.0f} img/s, {r.shards_reused} reused; "
        f"{len(r.skipped)} images skipped)"
    )
    if r.index:
        rec = r.index["recall"]
        text += f"\nindex -> {r.out / 'index.faiss'}  ({r.index['factory']}, 1-recall@10 {rec['recall_1_at_10']})"
    _emit(args, doc, text)
    return 0


def _verdict_word(gate, rule, fail: str) -> str:
    """PASS, FAIL, or SKIP for a requested rule that could not be evaluated here (FAIL when execution is required)."""
    if gate.counts(rule):
        return "PASS" if rule.passed else fail
    return "SKIP"


def _gate_text(result) -> str:
    lines = [f"{_verdict_word(result, r, 'FAIL'):<6}{r.describe()}" for r in result.rules]
    return "\n".join(lines) + f"\n\ngate: {'PASS' if result.passed else 'FAIL'}"


def cmd_demo(args: argparse.Namespace) -> int:
    """Whole chain on the default dataset: train cloud, BCT edge, independent edge; export; verify; gate."""
    import dataclasses

    from hetero.devices.pipeline import run_demo

    cfg = dataclasses.replace(_config(args), check=_check_config(args))  # hidden threshold flags still apply
    r = run_demo(cfg, Path(args.out), log=lambda m: _log(args, m), progress=not args.quiet)
    out = r.out
    cloud_m, edge_m = r.cloud.model, r.edge.model
    shipped = sorted(
        (x for x in r.export if x.get("path")), key=lambda x: (x["format"] != "tflite", x["precision"] != "int8")
    )
    int8 = shipped[0]["path"] if shipped else None  # the mobile artifact to gate: TFLite int8 when it was written
    footer = (
        f"edge {edge_m['name']}: {edge_m['macs'] / 1e6:.1f} M MACs, {edge_m['params'] / 1e3:.0f} k params = "
        f"{edge_m['macs'] / cloud_m['macs']:.2f}x the cloud's MACs\n"
        f"outputs in {out}/: cloud/ edge_bct/ edge_independent/ export/ fixture.safetensors report.json report.md\n"
        f"re-run the gate: hetero check --report {r.paths['json']}"
        + (f"\nmobile CI gate:  hetero check --fixture {out / 'fixture.safetensors'} --artifact {int8}" if int8 else "")
    )
    _emit(
        args,
        {
            "passed": r.passed,
            "export": r.export,
            "export_failures": r.export_failures,
            "gate": r.gate.to_dict(),
            "report": r.report.to_dict(),
            "paths": {k: str(v) for k, v in r.paths.items()},
        },
        "\n" + export_table(r.export) + "\n\n" + r.report.to_text() + "\n\n" + _gate_text(r.gate) + "\n" + footer,
    )
    if not r.passed:
        raise GateFailure(r.export_failures + r.gate.failures, what="demo")
    return 0


# ---------------------------------------------------------------------------------------------------- parser


_THRESHOLD_FLAGS = (
    ("--min-r1", "min_recall_at_1"),
    ("--min-relative-r1", "min_relative_recall_at_1"),
    ("--min-map", "min_map"),
    ("--max-previous-flips", "max_previous_flip_rate"),
    ("--max-previous-r1-loss", "max_previous_r1_loss"),
    ("--max-upgrade-flips", "max_upgrade_flip_rate"),
    ("--max-upgrade-r1-loss", "max_upgrade_r1_loss"),
)


def _add_threshold_flags(parser: argparse.ArgumentParser, *, hidden: bool) -> None:
    """Gate overrides of the config's [check] table (read by `_check_config`)."""
    for flag, key in _THRESHOLD_FLAGS:
        parser.add_argument(flag, type=float, help=argparse.SUPPRESS if hidden else f"override [check].{key}")


def _support() -> dict[str, tuple[str, ...]]:
    from hetero.export.formats import SUPPORT

    return SUPPORT


def _add_remote_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("remote device (SSH)")
    g.add_argument("--remote", metavar="USER@HOST", help="also run each artifact on this host over SSH")
    g.add_argument("--remote-python", default="python3", help="python with hetero installed on the remote host")
    g.add_argument("--ssh-port", type=int, default=22)
    g.add_argument("--ssh-key", type=Path, help="private key for the remote host")
    g.add_argument("--ssh-option", action="append", default=[], metavar="OPT", help="extra `ssh -o OPT` (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config (TOML); default: the packaged digits config. Unknown keys are refused",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    p = argparse.ArgumentParser(
        prog="hetero",
        description="Train edge models into a cloud model's embedding space, export them, and prove on real "
        "runtimes that edge queries still find the right items in the cloud gallery.",
        epilog="Start with `hetero demo`. " + EPILOG_EXIT,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, description: str, epilog: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help_,
            description=description,
            epilog=epilog + "\n\n" + EPILOG_EXIT,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

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
        + "\n".join(f"  {k:<15} {', '.join(f'{t}={w:g}' for t, w in v.items())}" for k, v in _objectives().items()),
        "examples:\n  hetero train cloud --out runs/x/cloud\n"
        "  hetero train edge --cloud runs/x/cloud --out runs/x/edge_bct\n"
        "  hetero train edge --cloud runs/x/cloud --objective bct_regression --out runs/x/edge_bctreg\n"
        "  hetero train edge --objective independent --out runs/x/edge_ind\n"
        "  hetero train edge --cloud runs/x/cloud --out runs/x/edge_bct --resume    # after a kill\n"
        "  hetero train edge --cloud runs/x/cloud --qat runs/x/edge_bct --epochs 5 --lr 1e-4 --out runs/x/edge_qat\n"
        "  hetero train cloud --cloud runs/v1/cloud --objective bct_focal --out runs/v2/cloud  # v1 -> v2\n"
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
        choices=sorted(_objectives()),
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
    t.add_argument("--epochs", type=int, help="override the role's epochs")
    t.add_argument("--lr", type=float, help="override the role's learning rate")
    t.set_defaults(func=cmd_train)

    s = add(
        "search",
        "search the edge architecture within a budget, against a cloud",
        "Search the edge's architecture: sub-networks of one reshapable member ([search] base, default the cloud's\n"
        "own) cut per stage — width multiplier, depth, depthwise kernel, expansion ratio — at a compute resolution,\n"
        "inheriting its weights. Candidates must spend between min_budget_share and 1 x budget_macs of the cloud's\n"
        "MACs (and, with budget_ms, a latency measured on latency_format: onnx or tflite). Each is trained briefly\n"
        "against the cached cloud views and ranked on validation identities: training identities held out of every\n"
        "search training (never the held-out identities the gate measures). The top few are trained fully and\n"
        "ranked by validation edge->cloud R@1; the best is retrained on every training identity into OUT/best, a\n"
        "normal checkpoint (its manifest records the shape, so export, verify and check take it as is). Every trial\n"
        "is appended to OUT/trials.jsonl: run the same command again to resume. OUT/search.json and OUT/search.png\n"
        "hold the results and the Pareto plot. Settings: the config's [search] table.",
        "examples:\n  hetero search --config emoji.toml --cloud runs/emoji/cloud --out runs/emoji/search\n"
        "  hetero search --cloud runs/x/cloud --out runs/x/search --budget 0.2 --candidates 8 --top 2 --json\n"
        "  hetero export --checkpoint runs/emoji/search/best --out runs/emoji/export",
    )
    s.add_argument("--cloud", type=Path, required=True, help="the frozen cloud checkpoint (its MACs set the budget)")
    s.add_argument("--out", type=Path, required=True, help="search directory (trials, plot, best/); reused to resume")
    s.add_argument("--objective", choices=sorted(_objectives()), help="edge loss preset (default: [edge] weights)")
    s.add_argument("--budget", type=float, help="override [search] budget_macs (share of the cloud's MACs)")
    s.add_argument("--candidates", type=int, help="override [search] candidates (ranked by the proxy)")
    s.add_argument("--top", type=int, help="override [search] top (trained fully)")
    s.set_defaults(func=cmd_search)

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
        + "\n".join(f"  {f:<7} {', '.join(p)}" for f, p in _support().items())
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
    e.set_defaults(func=cmd_export)

    v = add(
        "verify",
        "measure edge queries against the cloud gallery",
        "Embed the held-out gallery with the cloud unit and the queries with each producer (torch checkpoint or\n"
        "exported artifact, run on its runtime). Reports R@1, R@5, mAP per row plus parity to torch. Candidates\n"
        "must declare the cloud's space; controls may not (they are baselines).",
        "example:\n  hetero verify --cloud runs/x/cloud --candidate edge=runs/x/edge_bct \\\n"
        "      --candidate edge.tflite=runs/x/export/tflite-int8 --control runs/x/edge_ind --out runs/x",
    )
    v.add_argument(
        "--cloud", type=Path, required=True, help="cloud checkpoint or imported cloud (model or embedding file)"
    )
    v.add_argument("--candidate", action="append", default=[], metavar="[NAME=]PATH", help="gated query producer")
    v.add_argument("--control", action="append", default=[], metavar="[NAME=]PATH", help="ungated baseline producer")
    v.add_argument("--out", type=Path, required=True, help="directory for report.json and report.md")
    v.add_argument(
        "--upgrade", type=Path, metavar="V2", help=_UPGRADE_HELP + "rows for v2/v1, v2/v2, edge/v2 are added"
    )
    v.add_argument("--sign", type=Path, metavar="KEY", help="sign report.json with this Ed25519 private key")
    _add_index_flags(v)
    v.set_defaults(func=cmd_verify)

    c = add(
        "check",
        "gate: pass/fail artifacts against a fixture, a cloud model, or a report",
        "The release gate. Runs each --artifact on its real runtime (plus, with --remote, on another host over SSH)\n"
        "against the cloud gallery and applies the thresholds to every candidate row: R@1, R@1 relative to\n"
        "cloud → cloud, mAP, and with --previous the share of probes the previous release got right and this one\n"
        "loses. A fixture made with --upgrade V2 also gates the cloud upgrade without backfill: v2's queries in v1's\n"
        "gallery may lose at most max_upgrade_r1_loss R@1 and flip at most max_upgrade_flip_rate of v1's right\n"
        "answers. Thresholds: a fixture's are a floor that --policy and flags may only tighten (loosening is refused,\n"
        "exit 2); without a fixture, --policy, else the config's [check]; flags override. With --trust KEY.pub (or a\n"
        "policy's trust list) the fixture or report must carry a valid signature by that key (hetero sign, fixture\n"
        "create --sign): unsigned, signed by another key or altered after signing is exit 2. A minimum at or below\n"
        "chance on the probes is refused. Every requested rule is listed: one that cannot be evaluated here (a Core\n"
        "ML artifact or previous release off macOS) is skipped with the reason, never passed (--require-executed:\n"
        "failed).\n"
        "Every rule is decided on the worse end of its 95% interval (exact, on counts; paired where two producers\n"
        "embed the same probes), so a verdict does not flip on the few probes another machine's kernels move; a\n"
        "flip tolerance below what the probes resolve is refused (exit 2). Exit 1 lists every failed rule with its\n"
        "interval; JUnit/Markdown files are written on pass and fail.",
        "examples:\n"
        "  hetero check --fixture fixture.safetensors --artifact tflite-int8 --junit junit.xml\n"
        "  hetero check --fixture fixture.safetensors --trust cloud-team.pub --artifact tflite-int8\n"
        "  hetero check --fixture fixture.safetensors --artifact new/tflite-int8 --previous old/tflite-int8 \\\n"
        "      --policy policy.toml --markdown report.md --json\n"
        "  hetero check --cloud runs/demo/cloud --artifact runs/demo/export/onnx-fp32\n"
        "  hetero check --fixture upgrade.safetensors      # a fixture made with --upgrade: v2 in v1's gallery\n"
        "  hetero check --report runs/demo/report.json",
    )
    c.add_argument("--fixture", type=Path, help="frozen fixture from `hetero fixture create` (no cloud model needed)")
    c.add_argument("--cloud", type=Path, help="cloud checkpoint; builds the fixture from the config's data instead")
    c.add_argument("--report", type=Path, help="gate an existing report.json (from verify or demo)")
    c.add_argument(
        "--upgrade", type=Path, metavar="V2", help=_UPGRADE_HELP + "v2 in v1's gallery is gated (with --cloud)"
    )
    c.add_argument(
        "--artifact", action="append", default=[], metavar="[NAME=]PATH", help="artifact or checkpoint to gate"
    )
    c.add_argument(
        "--previous", metavar="[NAME=]PATH", help="the previous release's artifact: measure flips against it"
    )
    c.add_argument(
        "--policy", type=Path, help="TOML file with a [check] table of thresholds and optionally trust = [KEY.pub]"
    )
    c.add_argument(
        "--trust",
        type=Path,
        action="append",
        default=[],
        metavar="KEY.pub",
        help="Ed25519 public key: the fixture or report must be signed by it (repeatable)",
    )
    c.add_argument("--junit", type=Path, help="write JUnit XML here")
    c.add_argument("--markdown", type=Path, help="write a Markdown report here")
    c.add_argument("--row", action="append", default=[], help="gate only these report rows (default: all candidates)")
    c.add_argument(
        "--require-executed",
        action="store_true",
        help="a candidate whose runtime cannot execute here fails instead of being skipped ([check].require_executed)",
    )
    _add_threshold_flags(c, hidden=False)
    _add_remote_flags(c)
    _add_index_flags(c)
    c.set_defaults(func=cmd_check)

    f = add(
        "fixture",
        "freeze what mobile CI needs into one file",
        "`create` embeds the config's held-out probes and gallery with the cloud model and writes one checksummed\n"
        "safetensors file: probe images (uint8, the on-device input), gallery embeddings and labels, the cloud's own\n"
        "query embeddings, the space and the config's [check] thresholds. `--sign KEY` adds the cloud team's\n"
        "Ed25519 signature over all of it (`hetero key generate` makes a key pair); CI checks it with --trust\n"
        "KEY.pub, and the thresholds become a floor nobody downstream can loosen. `info` shows one (with --trust,\n"
        "verified).",
        "examples:\n  hetero fixture create --cloud runs/demo/cloud --out fixture.safetensors\n"
        "  hetero key generate keys/cloud-team && hetero fixture create --cloud runs/demo/cloud \\\n"
        "      --out fixture.safetensors --sign keys/cloud-team\n"
        "  hetero fixture info fixture.safetensors --trust keys/cloud-team.pub\n"
        "  hetero fixture info fixture.safetensors --json",
    )
    f.add_argument("action", choices=["create", "info"])
    f.add_argument("path", nargs="?", type=Path, help="fixture file (info)")
    f.add_argument("--cloud", type=Path, help="cloud checkpoint (create)")
    f.add_argument("--out", type=Path, help="fixture file to write (create)")
    f.add_argument("--max-probes", type=int, default=0, help="keep at most N probes (seeded sample); 0 = all")
    f.add_argument(
        "--upgrade", type=Path, metavar="V2", help=_UPGRADE_HELP + "its gallery and probe embeddings are added"
    )
    f.add_argument("--sign", type=Path, metavar="KEY", help="sign the fixture with this Ed25519 private key (create)")
    f.add_argument(
        "--trust", type=Path, action="append", default=[], metavar="KEY.pub", help="verify its signature (info)"
    )
    f.set_defaults(func=cmd_fixture)

    k = add(
        "key",
        "make an Ed25519 key pair for signing fixtures and reports",
        "`generate PATH` writes a new private key to PATH (PEM, mode 0600: keep it with the team that owns the\n"
        "cloud) and its public key to PATH.pub (give it to mobile CI: check --trust PATH.pub). Never overwrites.\n"
        "`openssl genpkey -algorithm ed25519` keys work as well.",
        "example:\n  hetero key generate keys/cloud-team",
    )
    k.add_argument("action", choices=["generate"])
    k.add_argument("path", type=Path, help="private key file to write; the public key goes to PATH.pub")
    k.set_defaults(func=cmd_key)

    sg = add(
        "sign",
        "sign a fixture or a report with the cloud team's key",
        "Verifies the file's checksum, then writes it again (atomically) with an Ed25519 signature over its content:\n"
        "header, thresholds and every array of a fixture; every row and count of a report. `check --trust KEY.pub`\n"
        "then refuses it if any byte changes, or if it is re-signed by a key CI does not trust.",
        "examples:\n  hetero sign fixture.safetensors --key keys/cloud-team\n"
        "  hetero sign runs/demo/report.json --key keys/cloud-team",
    )
    sg.add_argument("path", type=Path, help="fixture (.safetensors) or report (.json) to sign in place")
    sg.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    sg.set_defaults(func=cmd_sign)

    b = add(
        "bench",
        "time units on their runtimes: latency percentiles, load time, memory, size, distance to the compute limit",
        "Each UNIT (checkpoint or exported artifact, [NAME=]PATH) at each --threads count runs in a fresh process:\n"
        "cold load timed, --warmup calls, then at least --runs timed calls and at least --seconds, one call per\n"
        "iteration with nothing else in the loop. Reports p50/p90/p99, mean and spread, load time, peak RSS, size on\n"
        "disk, MACs (from the manifest) and achieved GFLOP/s, and 'x limit': p50 over the time those MACs take at\n"
        "a 256^3 float32 GEMM rate measured in the same process (1.0 = as fast as dense matrix products allow).\n"
        "A runtime that cannot execute here (Core ML off macOS) is a row marked not executed. --remote runs the\n"
        "same worker on another host over SSH, each unit uploaded once.",
        "examples:\n  hetero bench runs/x/export/onnx-fp32 runs/x/export/tflite-int8 --threads 1,2\n"
        "  hetero bench edge=runs/x/export/tflite-fp32 --seconds 10 --markdown bench.md --csv bench.csv --json\n"
        "  hetero bench runs/x/export/tflite-int8 --remote pi@board.local --remote-python /opt/hetero/bin/python",
    )
    b.add_argument("unit", nargs="+", metavar="[NAME=]PATH", help="checkpoint or artifact units")
    b.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    b.add_argument("--runs", type=int, default=100, help="at least this many timed calls per row (default 100)")
    b.add_argument("--seconds", type=float, default=0.0, help="and at least this long per row (default 0)")
    b.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    b.add_argument("--batch", type=int, default=1, help="images per call (default 1, as on a device)")
    b.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    b.add_argument("--csv", type=Path, help="write one CSV row per (unit, host, threads) here")
    _add_remote_flags(b)
    b.set_defaults(func=cmd_bench)

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
    r.set_defaults(func=cmd_report)

    e = add(
        "embed",
        "embed a folder or manifest with any unit, into resumable shards and a faiss index",
        "Decode every image of SOURCE (a folder root/<class>/... or a .csv/.jsonl manifest) by the camera rule and\n"
        "embed it with UNIT (a cloud checkpoint, an imported cloud, an edge checkpoint or an exported artifact, on\n"
        "its runtime). Shards of --shard-size records are written atomically as shard-NNNNN.npz (embeddings, ids,\n"
        "undecodable images); after a kill, the same command skips the shards that exist and the result is\n"
        "identical. embeddings.json marks a complete set; --index then builds a faiss index with its recall\n"
        "against exact search measured and saved beside it (auto: exact up to 200,000 rows, else IVF-PQ).\n"
        "Several machines: give each --part K/M with the same --out (shared disk) or copy the shards together,\n"
        "then run once more to finalise.",
        "examples:\n  hetero embed catalogue/ --unit runs/shop/cloud --out runs/shop/gallery --index auto\n"
        "  hetero embed photos.csv --unit runs/shop/export/onnx-int8 --out runs/shop/queries --workers 2\n"
        "  hetero embed catalogue/ --unit runs/shop/cloud --out /shared/gallery --part 0/4   # machine 1 of 4",
    )
    e.add_argument("source", type=Path, help="image folder root/<class>/... or a .csv/.jsonl manifest")
    e.add_argument("--unit", type=Path, required=True, help="what embeds: any checkpoint or artifact unit")
    e.add_argument("--out", type=Path, required=True, help="directory for shards, plan and embeddings.json")
    e.add_argument("--batch-size", type=int, default=64, help="images per runtime call (default 64)")
    e.add_argument("--shard-size", type=int, default=10_000, help="records per shard file (default 10000)")
    e.add_argument("--workers", type=int, default=1, help="processes, each with its own runtime (default 1)")
    e.add_argument("--threads", type=int, default=None, help="runtime threads per worker (default: cores/workers)")
    e.add_argument("--part", default="0/1", help="K/M: compute only shards with index %% M == K (default 0/1)")
    e.add_argument("--max-bad-fraction", type=float, default=0.01, help="undecodable share that fails the run")
    e.add_argument(
        "--index", choices=["none", "auto", "exact", "ivfpq", "hnsw"], default="none", help="faiss index to build"
    )
    e.set_defaults(func=cmd_embed)

    cl = add(
        "cloud",
        "import your own cloud model (ONNX or TorchScript) or only its embeddings as the space's cloud",
        "Wrap a cloud model hetero did not train in the unit contract (uint8 RGB pixels in, your declared\n"
        "preprocessing inside the graph, unit-length embedding out) and write it as a cloud unit whose space id is\n"
        "the sha256 of your file. Then `train edge --cloud`, `verify`, `fixture create` and `check --cloud` take\n"
        "it like a hetero cloud checkpoint; BCT uses class prototypes from its embeddings (it has no classifier).\n"
        "The model is run on probe images first: a fixed batch axis, a wrong input size or an output that is not\n"
        "unit length (without --normalize) is refused and nothing is written.\n\n"
        "Only the cloud's embeddings? Import the file instead (.npz: arrays ids + embeddings; .safetensors: an\n"
        "embeddings tensor, ids in an integer tensor or as a JSON list in the metadata; .parquet: columns id,\n"
        "embedding). Ids are your images' ids (a folder's relative paths, a manifest's id column); --size and\n"
        "--mean/--std then declare the pixels and normalisation an edge of this space takes. Every image a run\n"
        "uses must have a row; training uses each image's stored row (one clean view: cloud_views = 1, mix = 0).",
        "examples:\n  hetero cloud import catalogue.onnx --size 224 --normalize --out runs/shop/cloud\n"
        "  hetero cloud import net.pt --size 96 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --out runs/x/cloud\n"
        "  # a network that takes 0..255 floats: --mean 0,0,0 --std 0.00392157,0.00392157,0.00392157\n"
        "  hetero cloud import catalogue_embeddings.parquet --size 224 --out runs/shop/cloud",
    )
    cl.add_argument("action", choices=["import"])
    cl.add_argument(
        "model",
        type=Path,
        help="the cloud model (.onnx, TorchScript .pt/.ts) or its embeddings (.npz/.safetensors/.parquet)",
    )
    cl.add_argument("--out", type=Path, required=True, help="unit directory to write")
    cl.add_argument(
        "--size", type=_size, required=True, metavar="PX|HxW", help="the network's input size, e.g. 224 or 256x192"
    )
    cl.add_argument("--mean", default="0.485,0.456,0.406", help="per channel, on x/255 (default: ImageNet)")
    cl.add_argument("--std", default="0.229,0.224,0.225", help="per channel, on x/255 (default: ImageNet)")
    cl.add_argument("--channel-order", choices=["RGB", "BGR"], help="the network's channel order (default RGB)")
    cl.add_argument("--layout", choices=["NCHW", "NHWC"], help="the network's float input layout (default NCHW)")
    cl.add_argument(
        "--normalize", action="store_true", help="L2-normalise the output inside the graph (or the stored rows)"
    )
    cl.add_argument("--name", default="", help="space name (default: the file's stem)")
    cl.set_defaults(func=cmd_cloud)

    d = add(
        "demo",
        "run the whole chain on the default dataset",
        "Train the cloud model, a BCT edge model and an independent edge model; export the BCT edge model to\n"
        "ONNX; run it in onnxruntime against the cloud gallery; gate the result. About a minute on 2 cores.",
        "example:\n  hetero demo --out runs/demo",
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    _add_threshold_flags(d, hidden=True)
    d.set_defaults(func=cmd_demo)

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
    r.set_defaults(func=cmd_models)

    ds = add(
        "datasets",
        "list the dataset registry",
        "Every registered dataset and where it comes from. All are offline: built from installed packages into\n"
        "$HETERO_CACHE on first use (emoji), read from a Debian package (fashion_mnist), or shipped in scikit-learn.",
        "example:\n  hetero datasets --json",
    )
    ds.set_defaults(func=cmd_datasets)
    return p


def cmd_models(args: argparse.Namespace) -> int:
    from hetero.models import MODELS, create_model, model_cost
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
    _emit(args, {"size": args.size, "models": rows}, "\n".join(lines))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from hetero.data import DATASETS

    rows = [{"name": n, "description": (f.__doc__ or "").strip().splitlines()[0]} for n, f in sorted(DATASETS.items())]
    _emit(args, {"datasets": rows}, "\n".join(f"{r['name']:<15}{r['description']}" for r in rows))
    return 0


def _size(text: str) -> tuple[int, int]:
    """`224` or `256x192` (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PX or HxW, got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected PX or HxW, got {text!r}")
    return (values[0], values[-1])


def _objectives() -> dict[str, dict[str, float]]:
    from hetero.config import OBJECTIVES

    return OBJECTIVES


def _report_error(args: argparse.Namespace, message: str, exit_code: int) -> None:
    """On exit 2 the CI page still needs a reason: --json prints it, --junit records it as an error."""
    if getattr(args, "json", False):
        doc = {"passed": False, "exit_code": exit_code, "error": message}
        if getattr(args, "func", None) is cmd_check:
            doc = {"schema": CHECK_SCHEMA, **doc}
        print(json.dumps(doc, indent=2), flush=True)
    junit = getattr(args, "junit", None)
    if junit and not getattr(args, "junit_written", False):
        import xml.etree.ElementTree as ET

        from hetero.io import atomic_write_text

        suite = ET.Element("testsuite", name="hetero.check", tests="1", failures="0", errors="1", skipped="0")
        case = ET.SubElement(suite, "testcase", classname="hetero.check", name="inputs")
        ET.SubElement(case, "error", message=message)
        with contextlib.suppress(OSError, ValueError, HeteroError):  # an unwritable --junit may be the error itself
            atomic_write_text(Path(junit), ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HeteroError as e:
        if args.debug:  # the traceback, and still the documented exit code
            import traceback

            traceback.print_exc()
        label = "FAIL" if isinstance(e, GateFailure) else "error"
        print(f"hetero: {label}: {e}", file=sys.stderr)
        if not isinstance(e, GateFailure):  # a gate failure has already written its report, JSON and JUnit
            _report_error(args, str(e), e.exit_code)
        return e.exit_code
    except BrokenPipeError:  # `hetero ... | head`: the reader left; nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 141
    except OSError as e:  # unreadable/unwritable paths, full disk: the environment, not a bug
        if args.debug:
            import traceback

            traceback.print_exc()
        msg = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"hetero: error: {msg}", file=sys.stderr)
        _report_error(args, msg, 2)
        return 2
    except KeyboardInterrupt:
        print("hetero: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
