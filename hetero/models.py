"""Model family registry: cloud and edge members with aligned structure, timm-style.

`create_model(name, ...)` builds a member; every model has `forward_features` (pooled backbone features),
`forward_embedding` (head + L2 normalisation) and a cosine `classifier`. `EmbeddingGraph` wraps preprocessing +
embedding: it is what training evaluates, what export traces and what a device runs, so the three cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hetero.errors import InputError
from hetero.spaces import InputSpec


class Preprocess(nn.Module):
    """uint8 NHWC RGB pixels -> normalised float NCHW, exactly as `InputSpec` documents."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        # Fold /255, -mean and /std into one multiply-add: fewer ops in every exported graph.
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)
        return x * self.scale + self.shift


class L2Normalize(nn.Module):
    """x / ||x||, written as x * rsqrt(sum(x^2) + eps): `F.normalize` exports to ops that break ONNX quantisation."""

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + self.eps)


class CosineClassifier(nn.Module):
    """Scaled cosine logits. BCT applies the *cloud's* frozen instance to edge embeddings."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * embedding @ F.normalize(self.weight, dim=1).t()


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
        self, widths: tuple[int, ...], depths: tuple[int, ...], embed_dim: int, num_classes: int, scale: float
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
        self.head = nn.Linear(cin, embed_dim)
        self.norm = L2Normalize()
        self.classifier = CosineClassifier(embed_dim, num_classes, scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.head(self.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_embedding(x)


class EmbeddingGraph(nn.Module):
    """Pixels in, unit-length embedding out: the deployable contract."""

    def __init__(self, model: nn.Module, spec: InputSpec):
        super().__init__()
        self.preprocess = Preprocess(spec)
        self.model = model
        self.input_spec = spec

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_embedding(self.preprocess(pixels))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    role: str  # "cloud" | "edge"
    build: Callable[..., nn.Module]
    description: str


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, role: str, description: str):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelEntry(name, family, role, fn, description)
        return fn

    return deco


@register_model("hnet_cloud", family="hnet", role="cloud", description="residual CNN, widths 32/64/128, 2 blocks/stage")
def hnet_cloud(embed_dim: int, num_classes: int, scale: float = 16.0) -> HNet:
    return HNet((32, 64, 128), (2, 2, 2), embed_dim, num_classes, scale)


@register_model("hnet_edge", family="hnet", role="edge", description="hnet at half width, 1 block/stage")
def hnet_edge(embed_dim: int, num_classes: int, scale: float = 16.0) -> HNet:
    return HNet((16, 32, 64), (1, 1, 1), embed_dim, num_classes, scale)


def create_model(name: str, *, embed_dim: int, num_classes: int, scale: float = 16.0) -> nn.Module:
    if name not in MODELS:
        raise InputError(f"unknown model {name!r} (available: {', '.join(sorted(MODELS))})")
    if embed_dim < 1 or num_classes < 1:
        raise InputError(f"embed_dim and num_classes must be positive, got {embed_dim}, {num_classes}")
    return MODELS[name].build(embed_dim=embed_dim, num_classes=num_classes, scale=scale)


def model_cost(model: nn.Module, spec: InputSpec) -> dict[str, int]:
    """Parameters and multiply-accumulates of one forward pass at the space's input size (conv + linear)."""
    macs = 0

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
            model.forward_embedding(torch.zeros(1, 3, spec.height, spec.width))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))
    return {"params": int(params), "macs": int(macs)}
