"""Runs where the artifact runs: `python -m hetero.devices.remote_worker UNIT PROBES.npy OUT.npz`.

The one worker behind every runtime that is not this process: a host over SSH (`--remote`), a pinned runtime version
in its own environment, an ARM64 runtime under emulation (`--runtime`, hetero.devices.targets). It loads the unit with
the same checks as locally (sha256 against its manifest), embeds the probes one at a time on that environment's
runtime for the format, and writes embeddings, the median per-image latency, the runtime's name and version and the
CPU it ran on. It needs only numpy and the runtime: nothing here imports scipy, torch or the training stack.

Exit codes: 0 done; 2 bad input (a unit that fails its checks); 3 the runtime could not load or run the artifact
(its message is the last line of stderr) — the caller reports that as a failed row, not a crash.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RUNTIME_FAILED = 3


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m hetero.devices.remote_worker UNIT PROBES.npy OUT.npz", file=sys.stderr)
        return 2
    from hetero.cpu import cpu_info
    from hetero.devices.base import timed_embed
    from hetero.devices.loader import load
    from hetero.errors import ArtifactError, HeteroError

    unit, probes, out = (Path(a) for a in argv)
    try:
        rt = load(unit)
        emb, latency = timed_embed(rt, np.load(probes))
    except ArtifactError as e:  # the runtime refused the file (too new an opset, an op it lacks)
        print(f"hetero worker: {e}", file=sys.stderr)
        return RUNTIME_FAILED
    except HeteroError as e:
        print(f"hetero worker: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        print(f"hetero worker: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}",
              file=sys.stderr)  # fmt: skip
        return RUNTIME_FAILED
    info = rt.info()
    np.savez(
        out,
        embeddings=emb,
        latency_ms=np.float64(latency),
        runtime=np.str_(info["runtime"]),
        version=np.str_(info.get("version", "")),
        cpu=np.str_(json.dumps(cpu_info())),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
