"""JSON Schemas (draft 2020-12) of what hetero writes for machines: unit manifests, reports, fixture headers and the
`hetero check --json` output. Each carries its schema version in `schema` (e.g. "hetero.report/1")."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

NAMES = ("manifest", "report", "fixture", "check")


@cache
def load(name: str) -> dict[str, Any]:
    """The schema `name` (one of NAMES) as a dict, read from the installed package."""
    if name not in NAMES:
        raise KeyError(f"no schema {name!r} (available: {', '.join(NAMES)})")
    return json.loads((Path(__file__).parent / f"{name}.schema.json").read_text(encoding="utf-8"))
