"""EmbeddingSpace: the contract every model, artifact and gallery vector declares.

A space is defined by the cloud model that fills the gallery. Its id carries a fingerprint of the cloud weights, so a
retrained cloud model is a *different* space and old edge artifacts are refused instead of silently mis-retrieving.
"""

from __future__ import annotations

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        try:
            return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})
        except (TypeError, KeyError) as e:
            raise ManifestError(f"invalid input spec {d!r}: {e}") from None

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
            return cls(
                id=str(d["id"]),
                dim=int(d["dim"]),
                metric=str(d.get("metric", "cosine")),
                normalized=bool(d.get("normalized", True)),
                input=InputSpec.from_dict(d["input"]),
            )
        except (TypeError, KeyError, ValueError) as e:
            raise ManifestError(f"invalid embedding space {d!r}: {e}") from None

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
