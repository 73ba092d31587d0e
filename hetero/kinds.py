"""The closed vocabularies every stage shares: export formats, precisions and the runtimes that execute artifacts.

String enums, so a manifest, report or config keeps the plain names it always had ("int8", "onnxruntime") and a
comparison with a name read from a file still holds, while code names a member once instead of repeating literals
that could drift apart.
"""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    ONNX = "onnx"
    COREML = "coreml"
    TFLITE = "tflite"


class Precision(StrEnum):
    FP32 = "fp32"  # float32 weights and compute
    FP16 = "fp16"  # float16 weights (and compute where the runtime does it)
    INT8 = "int8"  # int8 weights and activations, calibrated on training images
    INT8W = "int8w"  # int8 weights, float activations

    @property
    def quantised(self) -> bool:
        """Built from the network with batch norm folded and weights rounded to int8 (hetero.export.prepare)."""
        return self in (Precision.INT8, Precision.INT8W)

    @property
    def floating(self) -> bool:
        return self in (Precision.FP32, Precision.FP16)


class Runtime(StrEnum):
    TORCH = "torch"  # the checkpoint itself (reference)
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    COREML = "coreml"


# The runtime each format's artifacts execute on.
RUNTIME_OF: dict[Format, Runtime] = {
    Format.ONNX: Runtime.ONNXRUNTIME,
    Format.COREML: Runtime.COREML,
    Format.TFLITE: Runtime.LITERT,
}
