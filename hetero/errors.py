"""Typed errors. The exit code lives on the type so the CLI never has to guess.

Two families, matching the CLI contract:
- `InputError` (exit 2): the user handed us something we cannot use — missing or corrupt file, unknown config key,
  foreign embedding space, wrong dimension, unwritable output. Nothing was measured.
- `GateFailure` (exit 1): everything was readable and we measured, and the numbers are not good enough.
Gate failures carry *all* failed rules, so one run shows the full picture instead of the first problem.
"""

from __future__ import annotations


class HeteroError(Exception):
    exit_code = 2


class InputError(HeteroError):
    """Bad input: exit 2."""


class ConfigError(InputError):
    """A config file that is missing, malformed, or has unknown keys or wrong types."""


class ManifestError(InputError):
    """A manifest that is missing or does not match its file (sha256, schema)."""


class ArtifactError(InputError):
    """A model file that a runtime cannot load (truncated, corrupt, wrong format)."""


class SpaceMismatchError(InputError):
    """Vectors or models from a different embedding space (id or dimension) than the one asked for."""


class NotExecutedError(HeteroError):
    """The runtime an artifact needs does not exist on this machine (Core ML off macOS). Never a pass."""


class RuntimeFailure(HeteroError):
    """A runtime could not load or run an artifact (an opset too new for it, an op it lacks): in a report, a failed
    row carrying the runtime's message — the app shipping that runtime would fail the same way."""

    exit_code = 1


class GateFailure(HeteroError):
    """Measured and not good enough: exit 1. `failures` lists every failed rule."""

    exit_code = 1

    def __init__(self, failures: list[str], *, what: str = "check"):
        self.failures = list(failures)
        n = len(self.failures)
        super().__init__(f"{what} failed ({n} rule{'s' if n != 1 else ''}): " + "; ".join(self.failures))


class ParityError(GateFailure):
    """An exported artifact does not compute the same embedding as the model it came from."""

    def __init__(self, failures: list[str]):
        super().__init__(failures, what="parity")


class CompatibilityError(GateFailure):
    """Queries from an edge producer do not retrieve well enough against the cloud gallery."""

    def __init__(self, failures: list[str]):
        super().__init__(failures, what="compatibility")


class DivergenceError(HeteroError):
    """Training produced a non-finite loss: exit 1, and no checkpoint is written from it."""

    exit_code = 1
