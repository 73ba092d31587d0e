"""Remote runtime: run an artifact on another host over SSH (a phone bridge, a board, a Mac for Core ML).

Copies the artifact unit once and the probe images per call, runs `hetero.devices.remote_worker` there with the
remote's python (which must have hetero installed), fetches embeddings and per-image timings, and removes its remote
temp directory when closed.
Commands are argument lists; the one string ssh sends to the remote shell is built only from `shlex.quote`d parts,
and the host must look like a host (it can never be read as an ssh option).
"""

from __future__ import annotations

import atexit
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetero.errors import InputError
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

    def _common(self, port_flag: str) -> list[str]:
        opts = [port_flag, str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.key:
            opts += ["-i", str(self.key)]
        for o in self.options:
            opts += ["-o", o]
        return opts

    def run(self, *argv: str) -> str:
        """Run argv on the remote host; every element is quoted for the remote shell."""
        cmd = ["ssh", *self._common("-p"), self.target, " ".join(shlex.quote(a) for a in argv)]
        return self._call(cmd, f"ssh {argv[0]}")

    def put(self, local: Path, remote: str) -> None:
        self._call(["scp", "-q", "-r", *self._common("-P"), str(local), f"{self.target}:{remote}"], "scp to host")

    def get(self, remote: str, local: Path) -> None:
        self._call(["scp", "-q", *self._common("-P"), f"{self.target}:{remote}", str(local)], "scp from host")

    def _call(self, cmd: list[str], what: str) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"remote {self.label}: {what} timed out after {self.timeout:.0f} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise InputError(f"remote {self.label}: {what} failed (exit {done.returncode}): {last}")
        return done.stdout


class RemoteRuntime:
    """An artifact on a remote host. The unit is uploaded once, on first use, into a remote temp directory that
    `close()` (or interpreter exit) removes; each call then uploads only its images."""

    def __init__(self, host: SSHHost, path: Path):
        self.host = host
        self.path = Path(path)
        self.manifest, model_file = load_manifest(path)
        self.unit = model_file.parent
        self.name = f"remote:{host.label}"
        self._info: dict[str, Any] = {}
        self._remote_dir: str | None = None

    def _workdir(self) -> str:
        if self._remote_dir is None:
            remote_dir = self.host.run("mktemp", "-d").strip()
            if not remote_dir.startswith("/"):
                raise InputError(f"remote {self.host.label}: mktemp returned {remote_dir!r}")
            self._remote_dir = remote_dir
            atexit.register(self.close)
            self.host.put(self.unit, f"{remote_dir}/unit")
        return self._remote_dir

    def close(self) -> None:
        """Remove the remote temp directory (idempotent)."""
        if self._remote_dir is not None:
            remote_dir, self._remote_dir = self._remote_dir, None
            atexit.unregister(self.close)
            self.host.run("rm", "-rf", "--", remote_dir)

    def embed_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        remote_dir = self._workdir()
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "probes.npy", np.ascontiguousarray(images))
            self.host.put(Path(tmp) / "probes.npy", f"{remote_dir}/probes.npy")
            self.host.run(
                self.host.python,
                "-m",
                "hetero.devices.remote_worker",
                f"{remote_dir}/unit",
                f"{remote_dir}/probes.npy",
                f"{remote_dir}/out.npz",
            )
            self.host.get(f"{remote_dir}/out.npz", Path(tmp) / "out.npz")
            with np.load(Path(tmp) / "out.npz") as out:
                emb, latency = out["embeddings"], float(out["latency_ms"])
                self._info = {"remote_runtime": str(out["runtime"]), "remote_version": str(out["version"])}
        return emb, latency

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
