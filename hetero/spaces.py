"""EmbeddingSpace: the contract every model, artifact and gallery vector declares.

A space is defined by the cloud model that fills the gallery. Its id carries a fingerprint of the cloud weights, so a
retrained cloud model is a *different* space and old edge artifacts are refused instead of silently mis-retrieving.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from hetero.errors import ManifestError, SpaceMismatchError

# The graph's input and output names in every format (and in an imported cloud): what an app binds to.
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class InputSpec:
    """What an app hands the exported model: raw pixels. Scaling happens inside the graph.

    Pixels are uint8 in `layout` with `channel_order`; the graph computes (x / 255 - mean) / std per channel.
    """

    height: int
    width: int
    layout: str = "NHWC"
    dtype: str = "uint8"
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        """The contract an app and every runtime rely on: refused whole when any part could not be honoured (a
        std of 0 divides by zero in the graph; a fourth mean would be silently ignored)."""
        problems = []
        for key in ("height", "width"):
            v = getattr(self, key)
            if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16384):
                problems.append(f"{key} must be an integer in 1..16384, got {v!r}")
        if self.layout != "NHWC" or self.dtype != "uint8":
            problems.append(f"pixels are uint8 NHWC, got {self.dtype!r} {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        for key, low in (("mean", -math.inf), ("std", 0.0)):
            v = getattr(self, key)
            if not (
                isinstance(v, tuple) and len(v) == 3
                and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > low
                        for x in v)
            ):  # fmt: skip
                problems.append(f"{key} must be three finite numbers{' above 0' if low == 0 else ''}, got {v!r}")
        if problems:
            raise ManifestError("invalid input spec: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        try:
            return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})
        except (TypeError, KeyError, AttributeError) as e:
            raise ManifestError(f"invalid input spec: {str(e)[:200]}") from None

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.height, self.width, 3)


@dataclass(frozen=True)
class EmbeddingSpace:
    id: str
    dim: int
    input: InputSpec
    metric: str = "cosine"
    normalized: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dim": self.dim,
            "metric": self.metric,
            "normalized": self.normalized,
            "input": self.input.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingSpace:
        try:
            dim, sid = d["dim"], d["id"]
            if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1):
                raise ValueError(f"dim must be a positive integer, got {dim!r}")
            if not (isinstance(sid, str) and sid and "\0" not in sid):
                raise ValueError(f"id must be a non-empty string, got {sid!r}")
            return cls(
                id=sid,
                dim=dim,
                metric=str(d.get("metric", "cosine")),
                normalized=bool(d.get("normalized", True)),
                input=InputSpec.from_dict(d["input"]),
            )
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise ManifestError(f"invalid embedding space: {str(e)[:200]}") from None

    def require_same(self, other: EmbeddingSpace, what: str) -> None:
        """Refuse vectors from another space: mixing them would return plausible-looking garbage.

        The input spec is not compared: an edge member may see a lower resolution than the cloud model and still
        live in the same space. Each unit's own input contract is in its manifest's `input`.
        """
        if other.dim != self.dim:
            raise SpaceMismatchError(
                f"{what}: embedding dim {other.dim} does not match space {self.id} (dim {self.dim})"
            )
        if other.id != self.id:
            raise SpaceMismatchError(f"{what}: foreign embedding space {other.id!r}, expected {self.id!r}")
        if (other.metric, other.normalized) != (self.metric, self.normalized):
            raise SpaceMismatchError(f"{what}: metric/normalisation differ from space {self.id}")
