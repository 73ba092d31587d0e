"""The stage sections of a run's config: export, check (the gate), search, and LQF training.

A module of their own beside `hetero.config`, which reads the file and holds the data, space and training sections;
every section is a frozen dataclass validated in `__post_init__`, so a wrong value fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from hetero.errors import ConfigError
from hetero.frames import FILTERS


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = ("onnx", "tflite", "coreml")
    precisions: tuple[str, ...] = ("fp32", "int8")  # fp32, fp16, int8, int8w (see export/formats.py)
    opset: int = 17
    calibration_images: int = 256  # training images for int8 calibration
    calibration_method: str = "minmax"  # minmax | percentile | entropy (percentile and entropy: ONNX only)
    # int8 and int8w are built from the network with batch norm folded and (hetero.export.prepare):
    bias_correction: bool = True  # each conv's bias absorbs the mean error of its rounded weights (calibration set)
    equalise: bool = False  # cross-layer equalisation; same fp32 function, but measured worse with per-channel int8
    onnx_reduce_range: bool = False  # ONNX int8 weights in 7 bits: for x86 without VNNI, where u8s8 can saturate
    # ONNX int8 types: "u8u8" (unsigned both, asymmetric weights) computed the same function on AVX2 x86 and ARM64;
    # "s8s8" saturates on x86 without VNNI (benchmarks/results/int8_cpu_targets.md).
    onnx_int8_scheme: str = "u8u8"
    # What an artifact takes: "compute" (the member's compute size: the app resizes the camera frame once, straight
    # to it, and the graph has no resize) or "space" (the space's size, resized inside the graph); frame_filter: the
    # resize the app calls (hetero.frames.FILTERS), stated in the artifact and what the gate resizes its probes with.
    input_size: str = "compute"
    frame_filter: str = "pil-bilinear"
    validate_on: tuple[str, ...] = ()  # also validate on these targets: "onnxruntime==1.32.0@arm64"
    # Network layers (module paths such as "stages.0.0.dw", "stem") kept float in TFLite int8 artifacts, beside the
    # pixel scaling, resize, embedding head and L2 normalisation that always are (ONNX: not offered, see onnx.py).
    keep_float: tuple[str, ...] = ()
    # When a TFLite int8 artifact fails validation, keep up to this many more layers float, most sensitive first
    # (ranked by simulating each layer's quantisation alone in torch), until it passes; the manifest says which.
    auto_keep_float: int = 0
    # Parity of every artifact against the torch model, over all held-out images (export fails below these):
    min_cosine_fp32: float = 0.99999
    # fp16: ONNX computes activations in fp16 (11-bit mantissa) through ~30 layers; on the emoji edge that is min
    # cosine 0.99883 (mean 0.99987) with the R@1 drop inside +-0.9 points; TFLite fp16 stores fp16 weights and computes
    # fp32 on CPU (min 0.99975). The per-image floor is set for the former; retrieval parity is decided below.
    min_cosine_fp16: float = 0.998
    min_mean_cosine_int8: float = 0.99
    min_cosine_int8: float = 0.95
    # R@1 the artifact may lose against its torch model (leave-one-out over the held-out images, paired): the upper
    # end of the 95% interval must stay within it, and it must be at least what the held-out set can resolve
    # (about 4.4 / n: 0.0061 for the 718 digits images) or export refuses it (exit 2).
    max_r1_drop_float: float = 0.02
    max_r1_drop_int8: float = 0.03
    min_top10_overlap_float: float = 0.9
    min_top10_overlap_int8: float = 0.6

    def __post_init__(self) -> None:
        require_shares(self, exclude=("opset", "calibration_images", "auto_keep_float"))
        if self.auto_keep_float < 0:
            raise ConfigError(f"auto_keep_float must be >= 0; got {self.auto_keep_float}")
        one_of(
            self,
            input_size=("compute", "space"),
            frame_filter=tuple(FILTERS),
            onnx_int8_scheme=("s8s8", "u8u8"),
            calibration_method=("minmax", "percentile", "entropy"),
        )
        if self.calibration_images < 1:
            raise ConfigError(f"calibration_images must be at least 1; got {self.calibration_images}")


@dataclass(frozen=True)
class CheckConfig:
    """Gate thresholds for every candidate row; 0 turns a rule off (it is then not listed, never 'passed')."""

    # Each rule is decided on the worse end of its 95% interval (hetero.release.gate); on the digits fixture's 358
    # probes the R@1 interval is about +-0.04 wide, so these sit that far below the weakest healthy seed.
    min_recall_at_1: float = 0.45  # chance on the digits split is 0.25
    min_relative_recall_at_1: float = 0.5  # candidate→cloud R@1 / cloud→cloud R@1, paired with the cloud's probes
    min_map: float = 0.4
    max_previous_flip_rate: float = 0.05  # with --previous: share of probes the old release got right and this loses
    max_previous_r1_loss: float = 1.0  # with --previous: R@1 this release may lose against it (1 = rule off)
    # A fixture with a cloud upgrade (fixture create --upgrade V2): v2's queries in v1's gallery, against v1's own
    max_upgrade_flip_rate: float = 0.05
    max_upgrade_r1_loss: float = 0.02
    require_executed: bool = False  # true: a candidate whose runtime cannot execute here fails instead of skipping
    require_resizers: bool = False  # true: each candidate must also pass with its probes resized by every filter

    def __post_init__(self) -> None:
        require_shares(self)


@dataclass(frozen=True)
class SearchConfig:
    """`hetero search`: the edge architecture within a budget (hetero.training.search). Candidates are the base member
    cut stage by stage; the proxy ranks them on training identities held out of every search training."""

    base: str = ""  # the reshapable member candidates are cut from ("" = the cloud's own model)
    widths: tuple[float, ...] = (0.5, 0.75, 1.0)  # per-stage width multipliers to draw from (at most the base's)
    kernels: tuple[int, ...] = (3, 5)  # depthwise kernel sizes to draw from (at most each stage's own)
    expands: tuple[int, ...] = ()  # expansion ratios to draw from (at most each stage's own); () = the base's
    resolutions: tuple[int, ...] = ()  # compute sizes to draw from (() = the space's input size)
    budget_macs: float = 0.1  # share of the cloud's MACs a candidate may spend
    min_budget_share: float = 0.6  # and at least this share of the budget (far smaller ones waste the budget)
    budget_ms: float = 0.0  # > 0: also a latency budget, batch-1 fp32 measured here for each draw that fits the MACs
    latency_format: str = "onnx"  # the runtime that measures it: onnx (onnxruntime) or tflite (LiteRT)
    latency_threads: int = 1
    # How the proxy's candidates are proposed: "evolution" (aging evolution seeded with every registry member and
    # the config's own edge; hetero.training.evolve) or "random" (independent draws inside the budget).
    strategy: str = "evolution"
    population: int = 8  # evolution: candidates alive at once (the oldest dies when a child is born)
    tournament: int = 3  # evolution: candidates drawn per tournament; the best of them is the parent
    candidates: int = 12  # candidates ranked by the proxy
    max_draws: int = 5000  # random draws allowed to find them
    proxy_epochs: int = 3  # the proxy: this many epochs of the edge's own training
    top: int = 2  # candidates trained fully (edge epochs) after the proxy
    validation_classes: int = 100  # training identities held out of every search training to rank on
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.widths or not self.kernels or any(w <= 0 for w in self.widths):
            raise ConfigError("search widths and kernels must be non-empty, widths positive")
        if not (self.budget_macs > 0.0 and 0.0 <= self.min_budget_share <= 1.0):
            raise ConfigError(
                f"search budget_macs must be > 0 and min_budget_share in [0, 1]; got {self.budget_macs}, "
                f"{self.min_budget_share}"
            )
        one_of(self, latency_format=("onnx", "tflite"), strategy=("evolution", "random"))
        if self.population < 1 or self.tournament < 1:
            raise ConfigError(
                f"search population and tournament must be >= 1; got {self.population}, {self.tournament}"
            )
        small = {k: getattr(self, k) for k in ("candidates", "proxy_epochs", "top", "validation_classes")}
        bad = [k for k, v in small.items() if v < 1]
        if bad or self.top > self.candidates or self.latency_threads < 1 or self.budget_ms < 0:
            raise ConfigError(
                f"search candidates, proxy_epochs, top, validation_classes, latency_threads must be >= 1, "
                f"top <= candidates and budget_ms >= 0; got {small}, latency_threads {self.latency_threads}, "
                f"budget_ms {self.budget_ms}"
            )


@dataclass(frozen=True)
class LqfConfig:
    """`hetero train --lqf`: linear quadratic fine-tuning (hetero.training.lqf). The member becomes linear in the
    change of its trailing modules' weights around its starting weights; regression to the cloud's embeddings is then
    a convex quadratic, minimised with a K-FAC-preconditioned step."""

    # Module paths made linear, a trailing run of the member (MBNet: "stages.6", "head_conv", "head"); everything
    # before the first of them is frozen and runs once, everything after it also carries the tangent pass.
    stages: tuple[str, ...] = ("stages.6", "head_conv", "head")
    leak: float = 0.0  # slope of the clipped-leaky ReLU6 under `stages` outside [0, 6] (0: the member's ReLU6)
    damping: float = 1e-3  # Tikhonov damping of each Kronecker factor pair, relative to their mean eigenvalue
    inverse_every: int = 10  # steps between re-inverting the factors (running averages are updated every step)
    factor_decay: float = 0.95  # running average of the factors
    momentum: float = 0.0  # heavy-ball on top of the exact step (> 0 overshoots on the emoji and digits quadratics)
    # Multiplies the step to the minimum of each batch's quadratic along the K-FAC direction (1: all the way; the
    # block-diagonal K-FAC direction alone overshoots by 30-100x, so the step size is computed, not guessed).
    lr: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lqf lr must be a positive finite number; got {self.lr}")
        if not self.stages or any(not s for s in self.stages):
            raise ConfigError('lqf stages must name at least one module (e.g. ["head_conv", "head"])')
        bad = {k: getattr(self, k) for k in ("leak", "factor_decay", "momentum") if not 0.0 <= getattr(self, k) < 1.0}
        if bad or not (math.isfinite(self.damping) and self.damping > 0) or self.inverse_every < 1:
            raise ConfigError(
                f"lqf leak, factor_decay and momentum must be in [0, 1), damping > 0 and inverse_every >= 1; got "
                f"{bad or ''} damping {self.damping}, inverse_every {self.inverse_every}"
            )


def one_of(cfg: Any, **choices: tuple[str, ...]) -> None:
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}")


def require_shares(cfg: Any, exclude: tuple[str, ...] = ()) -> None:
    """Every threshold is a share in [0, 1] or a cosine in [-1, 1] (-1: measured, never refused): NaN or a value
    outside the range would make a rule vanish or never hold."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in exclude or not isinstance(v, float | int) or isinstance(v, bool):
            continue
        low = -1.0 if "cosine" in f.name else 0.0
        if not (math.isfinite(v) and low <= v <= 1.0):
            raise ConfigError(f"{f.name} must be a number between {low:g} and 1; got {v}")
