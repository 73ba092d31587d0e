"""What every artifact says about itself, inside the file: the same keys in ONNX (`metadata_props`), TFLite (a
`hetero` metadata buffer, JSON) and Core ML (user-defined metadata), so an app or a CI job can tell which space a
model embeds into, what pixels it takes and how a camera frame becomes those pixels, without the manifest."""

from __future__ import annotations

import json

from hetero.frames import DEFAULT_FILTER, FrameRule
from hetero.spaces import INPUT_NAME, OUTPUT_NAME, InputSpec

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "camera_rule", "describe"]


def camera_rule(spec: InputSpec, image_input: bool = False, frame_filter: str = DEFAULT_FILTER) -> str:
    """How an app turns a camera frame into the model's input (the training and evaluation images are square).
    `image_input`: the format takes an image (Core ML's ImageType: a CVPixelBuffer), not a uint8 tensor."""
    given = (
        f"pass it as an {spec.channel_order} image (CVPixelBuffer, 8 bits per channel)"
        if image_input
        else f"{spec.channel_order} uint8 {spec.layout}"
    )
    return (
        f"scale the frame so its shorter side is {min(spec.height, spec.width)} px ({frame_filter}), "
        f"centre-crop {spec.height}x{spec.width}, {given}; no normalisation (the model scales pixels itself)"
    )


def describe(
    space_id: str,
    dim: int,
    spec: InputSpec,
    precision: str,
    image_input: bool = False,
    frame_filter: str = DEFAULT_FILTER,
) -> dict[str, str]:
    """String key/values (the common denominator of the three formats' metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        hv = version("hetero")
    except PackageNotFoundError:
        hv = "unknown"
    return {
        "hetero.space_id": space_id,
        "hetero.dim": str(dim),
        "hetero.metric": "cosine (unit-length output)",
        "hetero.input": json.dumps(spec.to_dict(), sort_keys=True),
        "hetero.input_name": INPUT_NAME,
        "hetero.output_name": OUTPUT_NAME,
        "hetero.camera_to_input": camera_rule(spec, image_input, frame_filter),
        "hetero.frame": json.dumps(FrameRule(spec.height, spec.width, frame_filter).to_dict(), sort_keys=True),
        "hetero.precision": precision,
        "hetero.version": hv,
    }
