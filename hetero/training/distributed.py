"""torch DDP on CPU (gloo): `torchrun --nproc_per_node=N -m hetero.cli train …` scales the same training loop out.

Only the environment torchrun sets decides whether a run is distributed, so a script never needs a flag for it.
Rank 0 owns every file (checkpoints, resume state, metrics, caches); other ranks wait at barriers.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def setup() -> None:
    """Join the process group torchrun describes (no-op for a plain single-process run)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
