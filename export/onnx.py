"""ONNX: fp32 (legacy TorchScript exporter, dynamic batch), fp16 (onnxconverter-common), int8 (static QDQ).

Preprocessing (uint8 NHWC pixels) and L2 normalisation are inside the graph. int8 is QDQ with per-channel weights in
one of two schemes (`[export] onnx_int8_scheme`). U8U8 (the default: unsigned activations, asymmetric unsigned
weights) computed the same function on an AVX2 x86 CPU and on ARM64: the emoji edge's one file gives mean cosine
0.9948 to torch on both, identical to four digits (no VNNI machine was at hand; its u8u8 path has no saturating
step). S8S8 (signed both, onnxruntime's recommended QDQ default) is better where it holds (0.9975 on ARM64), but x86
without VNNI runs it as u8 x s8 with a saturating 16-bit add: the same file gives 0.705 there
(benchmarks/results/int8_cpu_targets.md). 7-bit weights (`onnx_reduce_range`) avoid the saturation too, at 0.976.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hetero.export.formats import BuildRequest
from hetero.export.metadata import INPUT_NAME, OUTPUT_NAME, describe

FILE = "model.onnx"
# Layers kept float inside an int8 graph: not offered. Built either way (nodes excluded from the quantiser, or
# quantised with their float weights restored), onnxruntime's graph optimiser computes another function than the
# QDQ graph states: emoji edge with its first depthwise layer float, mean cosine 0.989 with optimisations off and
# 0.888 with the default (basic or all) that every device runs.
MIXED_PRECISION = False
_FLOAT_SCOPES = ("/preprocess/", "/pool/", "/head/", "/norm/")  # EmbeddingGraph ends (legacy exporter node scopes)


def build(req: BuildRequest) -> dict[str, Any]:
    """Write `req.dest/model.onnx` at `req.precision`; returns facts for the manifest."""
    import torch  # export needs torch; running an artifact (`runner`) does not

    dest, precision, calibration = req.dest, req.precision, req.calibration
    fp32 = dest / (FILE if precision == "fp32" else "fp32.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is not the user's problem
        torch.onnx.export(
            req.graph,
            (torch.from_numpy(calibration[:2]),),
            str(fp32),
            dynamo=False,
            opset_version=req.opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    if precision == "fp16":
        _to_fp16(fp32, dest / FILE)
    elif precision == "int8":
        _to_int8(fp32, dest / FILE, dest, req)
    if fp32.name != FILE:
        fp32.unlink()
    _stamp(
        dest / FILE,
        describe(
            req.space_id,
            req.embed_dim,
            req.graph.input_spec,
            precision,
            frame_filter=req.frame_filter,
        ),
    )
    facts = {"opset": req.opset, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "batch": "dynamic"}
    if precision == "int8":
        facts["quantisation"] = {
            "calibration_method": req.calibration_method,
            "keep_float": [],  # MIXED_PRECISION is False: see there
            "weight_bits": req.weight_bits,
            "scheme": req.int8_scheme,  # activation x weight types
        }
    return facts


def _stamp(path: Path, meta: dict[str, str]) -> None:
    """Write the artifact's self-description into the ONNX file's metadata_props."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "hetero"
    model.producer_version = meta["hetero.version"]  # not torch's: the file says which hetero wrote it
    onnx.save(model, str(path))


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    # The converter retypes a Cast's output without changing its `to`: keep the uint8 -> float Cast in fp32. The
    # graph's ends stay fp32 too (pixel scaling, resize, L2 norm). What remains is the backbone computing in fp16
    # (activations too, unlike TFLite fp16 on CPU): emoji edge min cosine 0.99883 either way (ExportConfig).
    kept = [n.name for n in model.graph.node if n.op_type == "Cast" or n.name.startswith(_FLOAT_SCOPES)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "1e-12 truncated to 1e-07": the L2 epsilon, harmless
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=kept)
    onnx.save(half, str(dst))


def _to_int8(src: Path, dst: Path, workdir: Path, req: BuildRequest) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from hetero.export.prepare import network_input_range
    from hetero.export.scopes import cut, onnx_ops

    pre = workdir / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            cal = req.calibration
            self._it = iter([{INPUT_NAME: cal[i : i + 32]} for i in range(0, len(cal), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    # Keep the pixel scaling, the embedding head (1k of 3M MACs) and the L2 normalisation in float: quantised, the
    # norm tail left embeddings 4% off unit length. Only the backbone runs in int8 (all of it: MIXED_PRECISION).
    graph = onnx.load(str(pre)).graph
    excluded = [n.name for n in graph.node if n.name.startswith(_FLOAT_SCOPES)]
    # The network's input gets the range of prepare.network_input_range (off the pixel lattice's rounding ties).
    lo, hi = network_input_range(req.graph, req.calibration)
    overrides = {name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for name in cut(onnx_ops(graph))[0]}
    quantize_static(
        str(pre),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if req.int8_scheme == "u8u8" else QuantType.QInt8,
        weight_type=QuantType.QUInt8 if req.int8_scheme == "u8u8" else QuantType.QInt8,
        per_channel=True,
        reduce_range=req.weight_bits == 7,
        nodes_to_exclude=excluded,
        extra_options={"TensorQuantOverrides": overrides},
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[req.calibration_method],
    )
    pre.unlink()
    _drop_unused_opsets(dst)


def _drop_unused_opsets(path: Path) -> None:
    """The quantiser declares opset domains it never uses (nine, e.g. com.microsoft.experimental); older runtimes
    refuse a model that imports a domain they do not know, so keep only the domains the graph's nodes use."""
    import onnx

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
        onnx.save(model, str(path))


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """An onnxruntime session as a batch function; a file it cannot load is an input error."""
    from hetero.onnxrun import session_runner

    return session_runner(path, threads)


def inspect(path: Path, graph: Any, space_id: str, dim: int, precision: str) -> dict[str, Any]:
    """No static check: this format executes here, and running it against torch proves more than reading it."""
    return {}


def runtime_version() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"
