"""What export validates and calibrates on: training images for int8 calibration, the held-out split for parity and
retrieval checks — at the artifact's input size, through the frame rule when that is not the space's."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hetero.data.datasets import ImageSet, OpenSetSplit
from hetero.frames import FrameRule
from hetero.spaces import InputSpec


@dataclass(frozen=True)
class ExportData:
    calibration: np.ndarray  # training images (never the held-out ones used for validation)
    query: ImageSet  # held-out
    gallery: ImageSet

    @property
    def n_heldout(self) -> int:
        """Validation queries: every held-out image, each against all the others (leave-one-out)."""
        return len(self.query) + len(self.gallery)

    def at(self, spec: InputSpec) -> ExportData:
        """The same images through the frame rule at an artifact's input size (itself when that is theirs)."""
        if self.calibration.shape[1:3] == (spec.height, spec.width):
            return self
        rule, size = FrameRule(spec.height, spec.width), lambda s: replace(s, images=rule.apply(s.images))
        return ExportData(rule.apply(self.calibration), size(self.query), size(self.gallery))

    @classmethod
    def from_split(cls, split: OpenSetSplit, calibration_images: int) -> ExportData:
        rng = np.random.default_rng(0)
        idx = rng.permutation(len(split.train))[:calibration_images]
        return cls(split.train.images[np.sort(idx)], split.query, split.gallery)
