"""Runs on the remote host: `python -m hetero.devices.remote_worker UNIT PROBES.npy OUT.npz`.

Loads the unit with the same checks as locally (sha256 against its manifest), embeds the probes one at a time on the
host's runtime for that format, and writes embeddings, the median per-image latency and the runtime's name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m hetero.devices.remote_worker UNIT PROBES.npy OUT.npz", file=sys.stderr)
        return 2
    from hetero.devices.harness import timed_embed
    from hetero.devices.loader import load
    from hetero.errors import HeteroError

    unit, probes, out = (Path(a) for a in argv)
    try:
        rt = load(unit)
        emb, latency = timed_embed(rt, np.load(probes))
    except HeteroError as e:
        print(f"hetero remote worker: {e}", file=sys.stderr)
        return e.exit_code
    info = rt.info()
    np.savez(
        out,
        embeddings=emb,
        latency_ms=np.float64(latency),
        runtime=np.str_(info["runtime"]),
        version=np.str_(info.get("version", "")),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
