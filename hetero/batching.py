"""One batching loop shared by every producer (torch, onnxruntime, ...), so they all see identical batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def embed_batches(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Apply `fn` to uint8 NHWC `images` in batches; returns float32 [N, D]."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W, 3] pixels, got {images.dtype} {images.shape}")
    if len(images) <= batch_size:  # one call (a device's batch 1 included): no list, no concatenation
        return np.asarray(fn(np.ascontiguousarray(images)), dtype=np.float32)
    out = [
        np.asarray(fn(np.ascontiguousarray(images[i : i + batch_size])), dtype=np.float32)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)
