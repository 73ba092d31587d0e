"""Shared export validation: an artifact must compute what the torch model computes, or it is not written.

Unlike exporters that only warn, every failed rule is collected and raised together as a `ParityError` (exit 1),
and the caller's atomic directory is discarded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hetero.errors import ParityError
from hetero.metrics import cosine_parity


def validate_parity(
    reference: np.ndarray, candidate: np.ndarray, *, expected_dim: int, min_cosine: float, norm_tol: float = 1e-3
) -> dict[str, Any]:
    """Check shape, unit norm and per-image cosine of `candidate` against `reference`; return the measurements."""
    failures: list[str] = []
    if candidate.ndim != 2 or candidate.shape[1] != expected_dim:
        raise ParityError([f"output shape {candidate.shape}, expected [N, {expected_dim}]"])
    if not np.isfinite(candidate).all():
        failures.append("output contains NaN or Inf")
    norms = np.linalg.norm(candidate, axis=1)
    norm_err = float(np.abs(norms - 1.0).max())
    if norm_err > norm_tol:
        failures.append(f"embeddings are not unit length (max |norm - 1| = {norm_err:.2e} > {norm_tol:g})")
    parity = cosine_parity(reference, candidate)
    if not parity["min_cosine"] >= min_cosine:
        failures.append(f"min cosine to torch {parity['min_cosine']:.7f} < {min_cosine}")
    result = {**parity, "max_norm_error": norm_err, "min_cosine_threshold": min_cosine, "passed": not failures}
    if failures:
        raise ParityError(failures)
    return result
