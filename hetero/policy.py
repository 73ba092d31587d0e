"""The rules a verdict is judged by: gate policy files — the [check] thresholds a release must meet and the public
keys its evidence must be signed with, kept in the app's repository where release CI reads them (`hetero check
--policy`) — and what a report records about the rules it was verified under (thresholds, the config's digest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hetero.config import CheckConfig, RunConfig, from_dict, read_toml, to_dict
from hetero.errors import ConfigError


def read_policy(path: Path) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """A gate policy file: TOML with a [check] table, optionally `trust = ["key.pub", ...]` (public keys whose
    signature fixtures and reports must carry; relative to the file) and `runtimes = [...]` (policy_runtimes).
    Returns the [check] keys it sets, validated (unknown keys, wrong types and bad values refused), and the trusted
    key paths."""
    path = Path(path)
    data = read_toml(path, "policy file")
    if set(data) - {"check", "trust", "runtimes"}:
        raise ConfigError(
            f"{path}: a policy holds a [check] table, a trust list and a runtimes list, found "
            f"{sorted(set(data) - {'check', 'trust', 'runtimes'})}"
        )
    trust = data.get("trust", [])
    if not isinstance(trust, list) or not all(isinstance(t, str) and t for t in trust):
        raise ConfigError(f"{path}: trust must be a list of public key paths")
    policy_runtimes(path)
    table = data.get("check", {})
    try:
        from_dict(CheckConfig, table, prefix="check.")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return dict(table), tuple(path.parent / t for t in trust)


def policy_runtimes(path: Path) -> list[str]:
    """A policy's `runtimes = ["onnxruntime==1.17.3", "ai-edge-litert==1.4.0@arm64"]`: the runtime versions (and CPU
    targets) the app ships, on each of which every artifact of that runtime's format must pass the gate."""
    runtimes = read_toml(Path(path), "policy file").get("runtimes", [])
    if not isinstance(runtimes, list) or not all(isinstance(r, str) and r for r in runtimes):
        raise ConfigError(f"{path}: runtimes must be a list of PACKAGE==VERSION[@arm64] strings")
    return list(runtimes)


def load_policy(path: Path) -> CheckConfig:
    """A gate policy file's thresholds, every key it leaves out at its default."""
    return from_dict(CheckConfig, read_policy(path)[0], prefix="check.")


def digest(cfg: RunConfig) -> str:
    """sha256 of the whole run config as canonical JSON: names the config a report was verified under, so a check
    with another config can say so (anyone can recompute it from the TOML with `load_config`)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()


def verified_under(cfg: RunConfig, thresholds: CheckConfig | None = None) -> dict[str, Any]:
    """What a report records about the rules it was measured for: the thresholds and the config's digest."""
    return {"thresholds": to_dict(thresholds or cfg.check), "config_sha256": digest(cfg)}
