"""`hetero check`: its parser beside its handler."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hetero import __version__
from hetero.cli.common import (
    CHECK_SCHEMA,
    UPGRADE_HELP,
    add_index_flags,
    add_remote_flags,
    add_threshold_flags,
    check_thresholds,
    emit,
    index_spec,
    output_file,
    run_config,
    trusted_keys,
)
from hetero.errors import GateFailure, InputError


def run(args: argparse.Namespace) -> int:
    from hetero.errors import NotExecutedError
    from hetero.io import atomic_write_text
    from hetero.pipeline import check, cloud_fixture
    from hetero.release.report import Report

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
    output_file(args.junit, "--junit")
    output_file(args.markdown, "--markdown")
    remote = None
    if getattr(args, "remote", None):
        from hetero.devices.remote import SSHHost

        remote = SSHHost.from_args(args)
    trust = trusted_keys(args)
    if trust and args.cloud:
        raise InputError("--trust verifies a signed fixture or report; --cloud builds its fixture here, unsigned")
    notes: list[str] = []
    if args.report:
        report = Report.load(args.report, trust=trust)
        result = check(
            thresholds=_report_thresholds(args, report, notes),
            report=report,
            rows=args.row,
            index=index_spec(args),
            runtimes=_runtimes(args),
            resizers=args.resize,
        )
    else:
        if args.fixture:
            from hetero.release.fixture import Fixture

            fx = Fixture.load(args.fixture, trust=trust)
        else:
            fx = cloud_fixture(run_config(args), args.cloud, upgrade=args.upgrade)
        result = check(
            thresholds=check_thresholds(args, fx.thresholds if args.fixture else None),
            fixture=fx,
            artifacts=args.artifact,
            previous=args.previous,
            rows=args.row,
            remote=remote,
            index=index_spec(args),
            runtimes=_runtimes(args),
            resizers=args.resize,
            log=lambda line: print(line, file=sys.stderr),
        )
    _write_check_outputs(args, result.report, result.gate, atomic_write_text, error=result.not_executed)
    if result.not_executed:
        args.junit_written = True  # the skipped rows and the error case say more than a bare error
        raise NotExecutedError(result.not_executed)
    signed = result.report.signed_by or (fx.signed_by if not args.report and args.fixture else "")
    _render(args, result, notes, signed)
    if not result.passed:
        raise GateFailure(result.gate.failures)
    return 0


def _render(args: argparse.Namespace, result, notes: list[str], signed: str) -> None:
    """Text and --json of a verdict; resize rows' verdicts beside the gate when they are reported, not gated."""
    advisory = result.resize_gate
    if advisory is not None:
        notes.append("resize rows (--resize) are reported, not gated; [check] require_resizers = true gates them")
    text = "\n".join(
        [
            result.report.to_text(),
            "",
            result.gate.to_text(),
            *(["", "other resize filters (not gated):", advisory.to_text()] if advisory is not None else []),
            *(f"note: {n}" for n in notes),
        ]
    )
    payload = {
        "schema": CHECK_SCHEMA,
        "hetero_version": __version__,
        "passed": result.passed,
        "gate": result.gate.to_dict(),
        "thresholds": dataclasses.asdict(result.thresholds),
        **({"notes": notes} if notes else {}),
        **({"resize_verdicts": advisory.to_dict()} if advisory is not None else {}),
    }
    if signed:
        payload["signed_by"] = signed
        text += f"\nsigned by trusted key {signed}"
    emit(args, {**payload, "report": result.report.to_dict()}, text)


def _runtimes(args: argparse.Namespace) -> list[str]:
    """--runtime flags and the policy's runtimes list: a policy's runtime can be added to, never dropped by a flag."""
    from hetero.policy import policy_runtimes

    return list(dict.fromkeys([*(policy_runtimes(args.policy) if args.policy else []), *args.runtime]))


def _report_thresholds(args: argparse.Namespace, report, notes: list[str]):
    """A report is judged by the thresholds it was verified under; what changes them — --config, --policy, a flag —
    is applied and stated (text and JSON), never silent. A report too old to record them says so."""
    from hetero.config import CheckConfig, from_dict
    from hetero.policy import digest

    under = report.verified_under
    if under is None:
        notes.append("the report does not record the thresholds it was verified under (written by an older hetero); "
                     "judged by the config's [check]")  # fmt: skip
        return check_thresholds(args)
    verified = from_dict(CheckConfig, under["thresholds"], prefix="report thresholds.")
    cfg = check_thresholds(args, base=verified)
    changed = [
        f"{k} {v:g} (verified under {getattr(verified, k):g})"
        for k, v in dataclasses.asdict(cfg).items()
        if v != getattr(verified, k)
    ]
    if changed:
        notes.append("judged by other thresholds than the report was verified under: " + "; ".join(changed))
    if args.config is not None and under.get("config_sha256") not in (None, digest(run_config(args))):
        notes.append(f"--config {args.config} is not the config the report was verified under "
                     f"(config sha256 {str(under['config_sha256'])[:12]}…)")  # fmt: skip
    return cfg


def _write_check_outputs(args: argparse.Namespace, report, result, write, error: str = "") -> None:
    """JUnit and Markdown are written on pass *and* fail: CI needs them most when the gate is red."""
    if args.junit:
        write(Path(args.junit), report.to_junit(result, error))
    if args.markdown:
        md = Path(args.markdown)
        write(md, report.to_markdown() + _heatmap_markdown(report, md) + result.to_markdown())


def _heatmap_markdown(report, md: Path) -> str:
    """The compatibility heatmap as a PNG beside the Markdown file, linked from it (matplotlib: hetero[all])."""
    if not report.matrix:
        return ""
    from hetero.release.plots import heatmap

    try:
        heatmap(report.matrix, md.with_name(md.stem + "_heatmap.png"))
    except ImportError:  # the slim `hetero[check]` install has no matplotlib
        return "\n(heatmap not drawn: matplotlib is not installed here; `pip install matplotlib==3.11.2` adds it)\n"
    return f"\n![compatibility heatmap]({md.stem}_heatmap.png)\n"


def register(add) -> None:
    c = add(
        "check",
        "gate: pass/fail artifacts against a fixture, a cloud model, or a report",
        "The release gate. Runs each --artifact on its real runtime (plus, with --remote, on another host over SSH)\n"
        "against the cloud gallery and applies the thresholds to every candidate row: R@1, R@1 relative to\n"
        "cloud → cloud, mAP, and with --previous the share of probes the previous release got right and this one\n"
        "loses. A fixture made with --upgrade V2 also gates the cloud upgrade without backfill: v2's queries in v1's\n"
        "gallery may lose at most max_upgrade_r1_loss R@1 and flip at most max_upgrade_flip_rate of v1's right\n"
        "answers. Thresholds: a fixture's are a floor that --policy and flags may only tighten (loosening is refused,\n"
        "exit 2); a report is judged by the thresholds it was verified under (--config, --policy and flags may\n"
        "change them, and every change is stated); with --cloud, --policy, else the config's [check]; flags\n"
        "override. With --trust KEY.pub (or a policy's trust list) the fixture or report must carry a valid\n"
        "signature by that key (hetero sign, fixture create --sign): unsigned, signed by another key or altered\n"
        "after signing is exit 2. A minimum at or below chance on the probes is refused. Every requested rule is\n"
        "listed: one that cannot be evaluated here (a Core ML artifact or previous release off macOS) is skipped\n"
        "with the reason, never passed (--require-executed: failed).\n"
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
        "  hetero check --fixture fixture.safetensors --artifact export/onnx-int8 --artifact export/tflite-int8 \\\n"
        "      --runtime onnxruntime==1.17.3 --runtime ai-edge-litert==1.4.0@arm64   # the versions the app ships\n"
        "  hetero check --fixture upgrade.safetensors      # a fixture made with --upgrade: v2 in v1's gallery\n"
        "  hetero check --report runs/demo/report.json",
    )
    c.add_argument("--fixture", type=Path, help="frozen fixture from `hetero fixture create` (no cloud model needed)")
    c.add_argument("--cloud", type=Path, help="cloud checkpoint; builds the fixture from the config's data instead")
    c.add_argument("--report", type=Path, help="gate an existing report.json (from verify or demo)")
    c.add_argument(
        "--upgrade", type=Path, metavar="V2", help=UPGRADE_HELP + "v2 in v1's gallery is gated (with --cloud)"
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
    c.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="PACKAGE==VERSION[@arm64]",
        help="also run each artifact of this runtime's format on this exact runtime version — the one your app ships "
        "— in its own environment, made on first use and cached: onnxruntime==1.17.3, ai-edge-litert==1.4.0; "
        "@arm64 runs the aarch64 build under QEMU emulation (@arm64:CPU picks the core), @x86_64:CPU an x86 CPU "
        "without some ISA extensions (repeatable; a policy's runtimes list adds to these)",
    )
    c.add_argument(
        "--resize",
        action="append",
        default=[],
        metavar="FILTER",
        help="also run each artifact on the probes resized by this implementation instead of its stated one: "
        "pil-bilinear, pil-box, cv2-linear, cv2-area, torch-bilinear-aa, or all (repeatable); rows 'NAME [FILTER]', "
        "reported with their verdicts but not gated unless --require-resizers",
    )
    c.add_argument(
        "--require-resizers",
        action="store_true",
        help="every resize implementation must pass too ([check].require_resizers; implies --resize all)",
    )
    add_threshold_flags(c, hidden=False)
    add_remote_flags(c)
    add_index_flags(c)
    c.set_defaults(func=run)
