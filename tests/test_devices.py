"""Device harness and mobile-CI gate: fixture, matrix, flips, skips, JUnit, remote runtime over loopback SSH."""

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import export_to, make_fixture, run_cli

from hetero.devices.loader import load
from hetero.io import sha256_path
from hetero.release.fixture import Fixture


@pytest.fixture(scope="session")
def fixture_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("fixture") / "fixture.safetensors"
    make_fixture(tiny, path)
    return path


@pytest.fixture(scope="session")
def artifacts(tiny, tmp_path_factory):
    """TFLite int8 and Core ML fp32 of the tiny edge model (ONNX fp32 comes with `tiny`)."""
    root = tmp_path_factory.mktemp("art")
    export_to(tiny, tiny.edge, root, "tflite,coreml", "fp32,int8")
    return root


def _check(tiny, fixture_file, *extra):
    return run_cli("check", "--quiet", "--fixture", fixture_file, *extra)


def test_fixture_is_small_versioned_and_self_contained(tiny, fixture_file, capsys):
    assert fixture_file.stat().st_size < 20e6
    assert run_cli("fixture", "info", fixture_file, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["schema"] == "hetero.fixture/2" and info["probe_frame_shape"] == [32, 32, 3]  # twice the space's
    assert info["space"]["id"] == json.loads((tiny.cloud / "manifest.json").read_text())["space"]["id"]
    assert info["thresholds"]["min_relative_recall_at_1"] == 0.4  # frozen from the config's [check]
    fx = Fixture.load(fixture_file)
    ref = load(tiny.cloud).embed(fx.probe_images)
    np.testing.assert_allclose(fx.reference_queries, ref, atol=1e-5)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_fixture_is_refused(tiny, fixture_file, tmp_path, capsys, damage):
    bad = tmp_path / "bad.safetensors"
    data = bytearray(fixture_file.read_bytes())
    if damage == "flip":
        data[-100] ^= 0x01  # one bit in the gallery embeddings
    else:
        data = data[: len(data) // 2]
    bad.write_bytes(bytes(data))
    assert _check(tiny, bad, "--artifact", tiny.onnx) == 2
    err = capsys.readouterr().err
    assert ("checksum mismatch" if damage == "flip" else "corrupt or truncated fixture") in err


def test_healthy_artifacts_pass_and_core_ml_is_skipped_not_passed(tiny, fixture_file, artifacts, tmp_path, capsys):
    junit, md = tmp_path / "junit.xml", tmp_path / "report.md"
    rc = _check(
        tiny,
        fixture_file,
        "--json",
        "--junit",
        junit,
        "--markdown",
        md,
        "--artifact",
        tiny.onnx,
        "--artifact",
        artifacts / "tflite-int8",
        "--artifact",
        artifacts / "coreml-fp32",
        "--artifact",
        tiny.edge,
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["report"]["rows"]}
    assert (
        rows["coreml-fp32 → cloud"]["status"] == "not executed" and rows["coreml-fp32 → cloud"]["recall_at_1"] is None
    )
    coreml = [r for r in out["gate"]["rules"] if "coreml" in r["row"]]  # listed, never passed
    assert coreml and all(r["status"] == "not evaluated" and not r["passed"] for r in coreml)
    assert all("not executed here" in r["reason"] for r in coreml) and out["gate"]["not_evaluated"]
    assert rows["onnx-fp32 → cloud"]["parity_min_cosine"] > 0.99999  # vs the torch checkpoint in the same run
    assert rows["onnx-fp32 → cloud"]["latency_ms"] > 0
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0" and suite.get("skipped") == str(len(coreml))
    assert int(suite.get("tests")) == len(out["gate"]["rules"])
    skipped = [c for c in suite if c.find("skipped") is not None]
    assert {c.get("classname") for c in skipped} == {"coreml-fp32 → cloud"}
    assert "not executed" in md.read_text() and "## Gate: PASS" in md.read_text()


def test_only_unexecutable_candidates_is_not_a_pass(tiny, fixture_file, artifacts, tmp_path, capsys):
    junit = tmp_path / "j.xml"
    assert _check(tiny, fixture_file, "--artifact", artifacts / "coreml-fp32", "--junit", junit) == 2
    assert "no candidate could be executed" in capsys.readouterr().err
    suite = ET.parse(junit).getroot()  # each requested rule skipped with the reason, none passed
    skipped = [c for c in suite if c.find("skipped") is not None]
    assert suite.get("skipped") == str(len(skipped)) and len(skipped) == 3
    assert suite.get("errors") == "1" and suite.get("tests") == "4"  # exit 2 is an error on the CI page, not clean
    assert all(c.get("classname") == "coreml-fp32 → cloud" for c in skipped)


def _perturbed_onnx(src, dest, scale):
    import onnx
    from onnx import numpy_helper

    shutil.copytree(src, dest)
    model = onnx.load(dest / "model.onnx")
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 4:  # every conv kernel
            init.CopyFrom(
                numpy_helper.from_array(w + rng.normal(0, scale * np.abs(w).std(), w.shape).astype(w.dtype), init.name)
            )
    onnx.save(model, dest / "model.onnx")
    m = json.loads((dest / "manifest.json").read_text())
    m["sha256"] = sha256_path(dest / "model.onnx")
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_weight_perturbed_artifact_fails_with_exit_1_and_junit_failures(tiny, fixture_file, tmp_path):
    bad = _perturbed_onnx(tiny.onnx, tmp_path / "bad", scale=1.5)
    junit = tmp_path / "j.xml"
    assert _check(tiny, fixture_file, "--artifact", bad, "--junit", junit) == 1
    suite = ET.parse(junit).getroot()
    assert int(suite.get("failures")) >= 1
    assert any(c.find("failure") is not None and "R@1" in c.get("name") for c in suite)


def test_wrong_space_artifact_is_an_input_error(tiny, fixture_file, tmp_path, capsys):
    export_to(tiny, tiny.independent, tmp_path, "onnx", "fp32")
    capsys.readouterr()
    assert _check(tiny, fixture_file, "--artifact", tmp_path / "onnx-fp32") == 2
    assert "foreign embedding space" in capsys.readouterr().err


def test_previous_release_flips(tiny, fixture_file, artifacts, tmp_path, capsys):
    old = artifacts / "tflite-fp32"
    same = _check(tiny, fixture_file, "--json", "--artifact", f"new={tiny.onnx}", "--previous", f"old={old}")
    out = json.loads(capsys.readouterr().out)
    assert same == 0
    assert out["report"]["rows"][1]["previous_flip_rate"] == 0.0  # same model and pixels, other runtime: no flips
    worse = _perturbed_onnx(tiny.onnx, tmp_path / "worse", scale=0.6)
    rc = _check(
        tiny,
        fixture_file,
        "--json",
        "--artifact",
        f"new={worse}",
        "--previous",
        f"old={tiny.onnx}",
    )  # the fixture's thresholds are a floor: the flip rule fails whatever the others say
    out = json.loads(capsys.readouterr().out)
    flips = next(r for r in out["gate"]["rules"] if r["rule"] == "negative flips vs previous")
    assert flips["value"] > 0.05 and not flips["passed"] and rc == 1
    # which items regressed: per class, adding up to the counts the gate decided on
    from hetero.release.fixture import Fixture
    from hetero.release.report import Report

    row = next(r for r in out["report"]["rows"] if r["name"] == "new → cloud")
    assert sum(row["previous_flips_by_class"].values()) == row["vs_previous"]["worse"] > 0
    assert sum(row["flips_by_class"].values()) == row["vs_reference"]["worse"]
    labels = {str(y) for y in Fixture.load(fixture_file).probe_labels.tolist()}
    assert set(row["previous_flips_by_class"]) <= labels and all(n > 0 for n in row["flips_by_class"].values())
    md = Report.from_dict(out["report"]).to_markdown()
    assert "## Negative flips by class" in md and "new → cloud: flips against the previous release by class:" in md


def test_policy_file_sets_thresholds_and_refuses_unknown_keys(tiny, fixture_file, tmp_path, capsys):
    strict = tmp_path / "strict.toml"
    strict.write_text("[check]\nmin_recall_at_1 = 0.99\n")
    assert _check(tiny, fixture_file, "--artifact", tiny.onnx, "--policy", strict) == 1
    typo = tmp_path / "typo.toml"
    typo.write_text("[check]\nmin_recal_at_1 = 0.5\n")
    capsys.readouterr()
    assert _check(tiny, fixture_file, "--artifact", tiny.onnx, "--policy", typo) == 2
    assert "unknown config key 'check.min_recal_at_1'" in capsys.readouterr().err


def test_remote_target_cannot_smuggle_ssh_options():
    from hetero.devices.remote import SSHHost
    from hetero.errors import InputError

    for bad in ("-oProxyCommand=touch /tmp/x", "host;rm -rf /", "a b"):
        with pytest.raises(InputError, match="not a valid SSH target"):
            SSHHost(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback, key auth only, started and stopped by the test session."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary):
        pytest.skip("openssh-server is not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
        f"PidFile {d / 'sshd.pid'}\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege-separation directory sshd insists on
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    yield {"port": port, "key": d / "client_key", "target": f"{getpass.getuser()}@127.0.0.1"}
    proc.terminate()
    proc.wait(timeout=10)


def test_remote_runtime_over_loopback_ssh_matches_local(tiny, fixture_file, artifacts, sshd, capsys):
    remote = (
        "--remote",
        sshd["target"],
        "--ssh-port",
        str(sshd["port"]),
        "--ssh-key",
        sshd["key"],
        "--remote-python",
        sys.executable,
        "--ssh-option",
        "StrictHostKeyChecking=no",
        "--ssh-option",
        "UserKnownHostsFile=/dev/null",
    )
    rc = _check(tiny, fixture_file, "--json", "--artifact", f"tfl={artifacts / 'tflite-int8'}", *remote)
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    rows = {r["name"]: r for r in out["report"]["rows"]}
    local, far = rows["tfl → cloud"], rows["tfl@127.0.0.1 → cloud"]
    assert far["runtime"] == "remote:127.0.0.1" and far["latency_ms"] > 0
    assert far["parity_min_cosine"] > 0.999999  # the same artifact, the same embeddings, on the other host
    assert far["recall_at_1"] == local["recall_at_1"]
    assert out["report"]["producers"]["tfl@127.0.0.1"]["remote_runtime"] == "litert"


def test_unreachable_remote_is_one_clear_input_error(tiny, fixture_file, capsys):
    rc = _check(
        tiny,
        fixture_file,
        "--artifact",
        tiny.onnx,
        "--remote",
        "nobody@127.0.0.1",
        "--ssh-port",
        str(_free_port()),
        "--ssh-option",
        "StrictHostKeyChecking=no",
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hetero: error: remote 127.0.0.1: ssh mktemp failed") and "\n" not in err


def test_bench_over_loopback_ssh_uploads_each_unit_once(artifacts, sshd, monkeypatch):
    from hetero.devices.bench import bench
    from hetero.devices.remote import SSHHost

    puts, real_put = [], SSHHost.put
    monkeypatch.setattr(
        SSHHost, "put", lambda self, local, remote: (puts.append(remote), real_put(self, local, remote))
    )
    opts = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null")
    host = SSHHost(sshd["target"], sshd["port"], sshd["key"], sys.executable, opts)
    result = bench([str(artifacts / "tflite-int8")], (1, 2), runs=3, warmup=1, remote=host)
    far = [r for r in result.rows if r.host == "127.0.0.1"]
    assert [r.threads for r in far] == [1, 2] and all(r.status == "ok" and r.runtime == "litert" for r in far)
    assert len(puts) == 1 and all(r.latency.n >= 3 for r in far)


def test_bench_marks_core_ml_not_executed_here(artifacts):
    from hetero.devices.bench import bench

    (row,) = bench([str(artifacts / "coreml-fp32")], (1,), runs=2, warmup=0).rows
    if row.status == "ok":  # pragma: no cover - a Mac executes Core ML
        assert row.runtime == "coreml"
    else:
        assert row.status == "not executed" and row.latency is None and row.note
