"""Runtime targets: the gate on the runtime versions an app ships and on ARM64 kernels (QEMU), with real runtimes.

Environments are made on first use (pip wheels; an arm64 Debian root by debootstrap) and cached in
$HETERO_RUNTIMES — kept across test sessions (conftest), since they are immutable pinned installs.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import export_to, run_cli

from hetero.devices.remote import RemoteRuntime
from hetero.devices.targets import LocalHost, RuntimeTarget, companions
from hetero.errors import InputError, RuntimeFailure
from hetero.export.requires import minimum_version, requirements, version_tuple
from hetero.manifest import load_manifest, write_manifest

OLD_ORT, NEW_ORT = "onnxruntime==1.17.3", "onnxruntime==1.32.0"
OLD_LITERT, NEW_LITERT = "ai-edge-litert==1.4.0", "ai-edge-litert==2.3.0"


@pytest.fixture(scope="module")
def fixture_file(tiny, tmp_path_factory):
    from conftest import make_fixture

    return make_fixture(tiny, tmp_path_factory.mktemp("rt-fixture") / "fixture.safetensors")


@pytest.fixture(scope="module")
def units(tiny, tmp_path_factory):
    """The tiny edge as ONNX fp32 / int8 and TFLite fp32 / int8: what the demo exports, small."""
    root = tmp_path_factory.mktemp("rt-units")
    export_to(tiny, tiny.edge, root, "onnx,tflite", "fp32,int8")
    return root


@pytest.fixture(scope="module")
def too_new(units, tmp_path_factory):
    """The ONNX fp32 unit stamped with opset 21 (onnxruntime 1.18+), its manifest rewritten to the new file."""
    import onnx
    from onnx import version_converter

    dest = tmp_path_factory.mktemp("rt-new") / "onnx-opset21"
    shutil.copytree(units / "onnx-fp32", dest)
    onnx.save(version_converter.convert_version(onnx.load(str(dest / "model.onnx")), 21), str(dest / "model.onnx"))
    manifest, _ = load_manifest(dest, verify=False)
    write_manifest(dest, manifest)  # re-hashes the file
    return dest


def _check_json(fixture_file, *argv, capsys):
    code = run_cli("check", "--quiet", "--json", "--fixture", fixture_file, *argv)
    return code, json.loads(capsys.readouterr().out)


def test_target_specs_parse_and_refuse_with_one_line():
    t = RuntimeTarget.parse("ai-edge-litert==1.4.0@arm64")
    assert (t.package, t.version, t.arch, t.cpu) == ("ai-edge-litert", "1.4.0", "arm64", "cortex-a76")
    assert t.format == "tflite"
    assert t.label == "ai-edge-litert==1.4.0@arm64:cortex-a76" and RuntimeTarget.parse(t.label) == t
    assert RuntimeTarget.parse(OLD_ORT).arch == "" and RuntimeTarget.parse(OLD_ORT).emulated == ""
    for bad in ("onnxruntime", "onnxruntime>=1.17", "torch==2.13.0", "onnxruntime==1.32.0@x86_64", "a==1; rm -rf /"):
        with pytest.raises(InputError):
            RuntimeTarget.parse(bad)
    assert companions("onnxruntime", "1.17.3") == ["numpy==1.26.4"] and companions("onnxruntime", "1.32.0")[0] != (
        "numpy==1.26.4"
    )
    assert version_tuple("1.18.0rc1") == (1, 18, 0) and version_tuple("1.9") < version_tuple("1.17.3")


def test_requirements_are_read_from_the_file_and_recorded_by_export(units, too_new):
    for unit, package in (("onnx-int8", "onnxruntime"), ("tflite-int8", "ai-edge-litert")):
        manifest, model_file = load_manifest(units / unit)
        req = requirements(model_file, manifest.format)
        assert manifest.extra["runtime_requirements"] == req
        assert minimum_version(package, req)[0] is not None
    onnx_req = requirements(units / "onnx-fp32" / "model.onnx", "onnx")
    assert onnx_req["onnx_opsets"] == {"": 17} and onnx_req["onnx_ir_version"] == 8
    assert minimum_version("onnxruntime", onnx_req)[0] == "1.12"
    assert minimum_version("onnxruntime", requirements(too_new / "model.onnx", "onnx"))[0] == "1.18"
    assert minimum_version("onnxruntime", {**onnx_req, "onnx_opsets": {"": 17, "ai.onnx.ml": 5}})[0] is None
    assert "QUANTIZE:1" in requirements(units / "tflite-int8" / "model.tflite", "tflite")["tflite_ops"]


def test_two_onnxruntime_and_two_litert_versions_gate_every_artifact(fixture_file, units, capsys):
    argv = []
    for unit in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"):
        argv += ["--artifact", units / unit]
    for spec in (OLD_ORT, NEW_ORT, OLD_LITERT, NEW_LITERT):
        argv += ["--runtime", spec]
    code, out = _check_json(fixture_file, *argv, capsys=capsys)
    assert code == 0 and out["passed"]
    rows = {r["name"]: r for r in out["report"]["rows"]}
    for unit in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"):
        local = rows[f"{unit} → cloud"]
        specs = (OLD_ORT, NEW_ORT) if unit.startswith("onnx") else (OLD_LITERT, NEW_LITERT)
        for spec in specs:
            row = rows[f"{unit}@{spec} → cloud"]
            assert row["status"] == "ok" and row["runtime"] == spec and row["cpu"].startswith(os.uname().machine)
            assert row["parity_min_cosine"] > 0.9999 and row["recall_at_1"] == pytest.approx(local["recall_at_1"])
            producer = out["report"]["producers"][f"{unit}@{spec}"]
            assert producer["remote_version"] == spec.replace("==", " ")  # the worker ran that version, not ours


def test_too_new_artifact_is_refused_naming_the_minimum_and_the_old_runtime_agrees(fixture_file, too_new, tmp_path,
                                                                                   capsys):  # fmt: skip
    junit = tmp_path / "junit.xml"
    code, out = _check_json(
        fixture_file, "--artifact", too_new, "--runtime", OLD_ORT, "--runtime", NEW_ORT, "--junit", junit,
        capsys=capsys,
    )  # fmt: skip
    assert code == 1 and not out["passed"]
    rows = {r["name"]: r for r in out["report"]["rows"]}
    refused = rows[f"onnx-opset21@{OLD_ORT} → cloud"]
    assert refused["status"] == "failed" and "onnxruntime >= 1.18" in refused["note"] and "opset 21" in refused["note"]
    assert rows[f"onnx-opset21@{NEW_ORT} → cloud"]["status"] == "ok"
    failed = [r for r in out["gate"]["rules"] if r["status"] == "failed"]
    assert [r["row"] for r in failed] == [f"onnx-opset21@{OLD_ORT} → cloud"] and failed[0]["rule"] == "runs"
    assert "onnxruntime &gt;= 1.18" in junit.read_text()
    # The minimum is not a guess: onnxruntime 1.17.3 itself refuses the file, and that is a RuntimeFailure (a failed
    # row with its message when it reaches a report), not a crash.
    runtime = RemoteRuntime(LocalHost(RuntimeTarget.parse(OLD_ORT)), too_new)
    try:
        with pytest.raises(RuntimeFailure, match=r"(?i)opset"):
            runtime.embed_timed(np.zeros((1, *load_manifest(too_new)[0].input.shape(1)[1:]), np.uint8))
    finally:
        runtime.close()


def test_a_runtime_no_artifact_can_use_is_refused_and_a_policy_adds_runtimes(fixture_file, units, tmp_path, capsys):
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", units / "onnx-fp32",
                   "--runtime", NEW_LITERT) == 2  # fmt: skip
    assert "runs tflite artifacts" in capsys.readouterr().err
    policy = tmp_path / "policy.toml"
    policy.write_text(f'runtimes = ["{OLD_ORT}"]\n[check]\nmin_recall_at_1 = 0.5\n')
    code, out = _check_json(fixture_file, "--artifact", units / "onnx-int8", "--policy", policy, capsys=capsys)
    assert code == 0 and f"onnx-int8@{OLD_ORT} → cloud" in {r["name"] for r in out["report"]["rows"]}
    policy.write_text('runtimes = "onnxruntime==1.17.3"\n')
    assert run_cli("check", "--quiet", "--fixture", fixture_file, "--artifact", units / "onnx-int8",
                   "--policy", policy) == 2  # fmt: skip


def _can_emulate_arm64() -> str:
    if os.geteuid() != 0 and not _root_exists():
        return "making the arm64 root needs root"
    missing = [t for t in ("qemu-aarch64-static", "debootstrap") if shutil.which(t) is None]
    return f"{', '.join(missing)} not installed (.ci/run installs qemu-user-static and debootstrap)" if missing else ""


def _root_exists() -> bool:
    from hetero.devices.targets import DEBIAN_SUITE, runtimes_root

    return (runtimes_root() / f"debian-{DEBIAN_SUITE}-arm64" / ".hetero-complete").is_file()


@pytest.mark.skipif(bool(_can_emulate_arm64()), reason=_can_emulate_arm64() or "-")
def test_arm64_kernels_under_emulation_run_fp32_and_int8_with_parity(fixture_file, units, capsys):
    argv = []
    for unit in ("onnx-fp32", "onnx-int8", "tflite-int8"):
        argv += ["--artifact", units / unit]
    code, out = _check_json(fixture_file, *argv, "--runtime", "onnxruntime==1.32.0@arm64", "--runtime",
                            f"{OLD_LITERT}@arm64", capsys=capsys)  # fmt: skip
    assert code == 0 and out["passed"]
    rows = {r["name"]: r for r in out["report"]["rows"]}
    for unit, spec in (("onnx-fp32", NEW_ORT), ("onnx-int8", NEW_ORT), ("tflite-int8", OLD_LITERT)):
        row = rows[f"{unit}@{spec}@arm64:cortex-a76 → cloud"]
        assert row["status"] == "ok" and row["cpu"] == "aarch64, emulated by QEMU cortex-a76"
        assert row["latency_ms"] is None  # emulated time is not a phone's
        assert row["parity_min_cosine"] > (0.9999 if unit.endswith("fp32") else 0.999)


def _export_int8(tiny, out, **overrides):
    import dataclasses

    from hetero.config import load_config
    from hetero.data.datasets import load_split
    from hetero.export.artifact import ExportData, export_matrix

    cfg = load_config(tiny.config)
    data = ExportData.from_split(load_split(cfg.data), cfg.export.calibration_images)
    export_cfg = dataclasses.replace(cfg.export, **overrides)
    return lambda elsewhere: export_matrix(tiny.edge, out, ["onnx"], ["int8"], data, export_cfg, elsewhere=elsewhere)


def test_export_validates_on_every_declared_target_and_fails_closed(tiny, tmp_path):
    from hetero.devices.targets import export_runners
    from hetero.export.validate import ElsewhereRunner

    export = _export_int8(tiny, tmp_path / "ok", validate_on=(OLD_ORT,), onnx_int8_scheme="u8u8")
    with pytest.raises(InputError, match=r"validate_on names onnxruntime==1\.17\.3"):
        export(())  # a declared target without a runner is refused, never skipped
    result = export(export_runners([OLD_ORT]))
    assert result.passed
    validation = load_manifest(tmp_path / "ok" / "onnx-int8")[0].validation
    assert validation["cpu"].startswith(os.uname().machine)
    on_old = validation["targets"][OLD_ORT]
    assert on_old["status"] == "passed" and on_old["cpu"].startswith(os.uname().machine)
    assert on_old["embedding"]["mean_cosine"] > 0.99
    assert load_manifest(tmp_path / "ok" / "onnx-int8")[0].extra["quantisation"]["scheme"] == "u8u8"

    def wrong(unit, images):  # a target whose kernels compute another function: every embedding moved one row
        real = RemoteRuntime(LocalHost(RuntimeTarget.parse(NEW_ORT)), unit)
        try:
            return np.roll(real.embed(images), 1, axis=0), "test CPU"
        finally:
            real.close()

    broken = _export_int8(tiny, tmp_path / "bad", validate_on=("elsewhere",))
    result = broken((ElsewhereRunner("elsewhere", "elsewhere", "onnx", wrong),))
    assert not result.passed and not (tmp_path / "bad" / "onnx-int8").exists()  # nothing half-written
    assert any("on elsewhere (test CPU)" in f for f in result.failures)


@pytest.mark.skipif(shutil.which("qemu-x86_64-static") is None, reason="qemu-user-static is not installed")
def test_an_x86_cpu_model_under_emulation_is_a_target_too(fixture_file, units, capsys):
    """`@x86_64:MODEL`: this machine's wheels run as another x86 CPU (QEMU has no AVX-512, so Haswell stands in for
    an AVX2-only CI runner); the row says it was emulated."""
    spec = "onnxruntime==1.32.0@x86_64:Haswell"
    code, out = _check_json(fixture_file, "--artifact", units / "onnx-int8", "--runtime", spec, capsys=capsys)
    assert code == 0
    row = {r["name"]: r for r in out["report"]["rows"]}[f"onnx-int8@{spec} → cloud"]
    assert row["cpu"] == "x86_64, emulated by QEMU Haswell" and row["parity_min_cosine"] > 0.9999
