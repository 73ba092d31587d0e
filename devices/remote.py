"""Worker runtimes: run an artifact through `hetero.devices.remote_worker` somewhere other than this process — on
another host over SSH (a phone bridge, a board, a Mac for Core ML), or in a pinned runtime environment on this machine,
natively or under emulation (`hetero.devices.targets`). One protocol for all of them: copy the unit once and the probe
images per call, run the worker with that place's python, fetch embeddings, per-image timings, the runtime's version
and the CPU, and remove the temp directory when closed. A worker that reports the runtime could not load or run the
artifact (exit 3) raises `RuntimeFailure`: a failed row, with the runtime's own message.
Commands are argument lists; the one string ssh sends to the remote shell is built only from `shlex.quote`d parts,
and the host must look like a host (it can never be read as an ssh option).
"""

from __future__ import annotations

import atexit
import json
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetero.cpu import cpu_tag
from hetero.devices.remote_worker import RUNTIME_FAILED
from hetero.errors import InputError, RuntimeFailure
from hetero.manifest import load_manifest

_HOST = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*@?[A-Za-z0-9_.:-]*$")


@dataclass(frozen=True)
class SSHHost:
    target: str  # user@host or host
    port: int = 22
    key: Path | None = None
    python: str = "python3"
    options: tuple[str, ...] = field(default_factory=tuple)
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.target) or self.target.startswith("-"):  # `$` alone admits a trailing newline
            raise InputError(f"not a valid SSH target: {self.target!r} (expected user@host)")
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise InputError(f"SSH port must be in 1..65535, got {self.port!r}")

    @classmethod
    def from_args(cls, args: Any) -> SSHHost:
        return cls(args.remote, args.ssh_port, args.ssh_key, args.remote_python, tuple(args.ssh_option))

    @property
    def label(self) -> str:
        return self.target.split("@")[-1]

    @property
    def runtime_name(self) -> str:
        return f"remote:{self.label}"

    @property
    def python_argv(self) -> tuple[str, ...]:
        return (self.python,)

    @property
    def emulated(self) -> str:
        return ""

    def mkdtemp(self) -> str:
        remote_dir = self.run("mktemp", "-d").strip()
        if not remote_dir.startswith("/"):
            raise InputError(f"remote {self.label}: mktemp returned {remote_dir!r}")
        return remote_dir

    def remove(self, path: str) -> None:
        self.run("rm", "-rf", "--", path)

    def _common(self, port_flag: str) -> list[str]:
        opts = [port_flag, str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.key:
            opts += ["-i", str(self.key)]
        for o in self.options:
            opts += ["-o", o]
        return opts

    def run(self, *argv: str, worker: bool = False) -> str:
        """Run argv on the remote host; every element is quoted for the remote shell."""
        cmd = ["ssh", *self._common("-p"), self.target, " ".join(shlex.quote(a) for a in argv)]
        return call(cmd, f"ssh {argv[0]}", f"remote {self.label}", self.timeout, worker=worker)

    def put(self, local: Path, remote: str) -> None:
        cmd = ["scp", "-q", "-r", *self._common("-P"), str(local), f"{self.target}:{remote}"]
        call(cmd, "scp to host", f"remote {self.label}", self.timeout)

    def get(self, remote: str, local: Path) -> None:
        cmd = ["scp", "-q", *self._common("-P"), f"{self.target}:{remote}", str(local)]
        call(cmd, "scp from host", f"remote {self.label}", self.timeout)


def call(
    cmd: list[str], what: str, label: str, timeout: float, *, worker: bool = False, env: dict[str, str] | None = None
) -> str:
    """Run one command of the worker protocol; a failure is one line naming where and what, with the last line the
    command printed. The worker's own exit 3 (`worker=True`) is the runtime refusing the artifact: RuntimeFailure."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise InputError(f"{label}: {what} timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise InputError(f"{label}: {what} could not start ({e.strerror}: {cmd[0]})") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("qemu")] or ["(no output)"]
        last = lines[-1].removeprefix("hetero worker: ")
        if worker and done.returncode == RUNTIME_FAILED:
            raise RuntimeFailure(last)
        raise InputError(f"{label}: {what} failed (exit {done.returncode}): {last}")
    return done.stdout


class RemoteRuntime:
    """An artifact run by the worker on a host (SSHHost, or a runtime target's LocalHost). The unit is uploaded once,
    on first use, into a temp directory there that `close()` (or interpreter exit) removes; each call then uploads
    only its images."""

    def __init__(self, host: Any, path: Path):
        self.host = host
        self.path = Path(path)
        self.manifest, model_file = load_manifest(path)
        self.unit = model_file.parent
        self.name = host.runtime_name
        self._info: dict[str, Any] = {}
        self._remote_dir: str | None = None

    def _workdir(self) -> str:
        if self._remote_dir is None:
            remote_dir = self.host.mkdtemp()
            self._remote_dir = remote_dir
            atexit.register(self.close)
            self.host.put(self.unit, f"{remote_dir}/unit")
        return self._remote_dir

    def close(self) -> None:
        """Remove the remote temp directory (idempotent)."""
        if self._remote_dir is not None:
            remote_dir, self._remote_dir = self._remote_dir, None
            atexit.unregister(self.close)
            self.host.remove(remote_dir)

    def embed_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        remote_dir = self._workdir()
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "probes.npy", np.ascontiguousarray(images))
            self.host.put(Path(tmp) / "probes.npy", f"{remote_dir}/probes.npy")
            self.host.run(
                *self.host.python_argv,
                "-m",
                "hetero.devices.remote_worker",
                f"{remote_dir}/unit",
                f"{remote_dir}/probes.npy",
                f"{remote_dir}/out.npz",
                worker=True,
            )
            self.host.get(f"{remote_dir}/out.npz", Path(tmp) / "out.npz")
            with np.load(Path(tmp) / "out.npz") as out:
                emb, latency = out["embeddings"], float(out["latency_ms"])
                cpu = json.loads(str(out["cpu"])) if "cpu" in out.files else {}
                self._info = {
                    "remote_runtime": str(out["runtime"]),
                    "remote_version": str(out["version"]),
                    "cpu": _cpu_line(cpu, self.host.emulated),
                }
        return emb, latency

    @property
    def emulated(self) -> str:
        """The emulator running it ("" on real hardware): its timings are not the device's."""
        return self.host.emulated

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.embed_timed(images)[0]

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "host": self.host.label,
            "format": self.manifest.format,
            "precision": self.manifest.precision,
            **self._info,
        }


def _cpu_line(cpu: dict[str, Any], emulated: str) -> str:
    """The worker's CPU for a row. Under QEMU user mode /proc/cpuinfo is the host's (or the one the arm64 root
    carries), not the emulated model's, so an emulated row names the architecture and the model only."""
    if not cpu:
        return ""
    return f"{cpu.get('machine', '?')}, emulated by {emulated}" if emulated else cpu_tag(cpu)

