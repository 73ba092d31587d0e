"""TFLite via litert-torch (no TensorFlow), executed with ai-edge-litert.

fp32 is converted from the same `EmbeddingGraph`; fp16, int8w (dynamic range) and int8 (full integer, calibrated on
training images) are post-training recipes of ai-edge-quantizer applied to that fp32 flatbuffer. Batch is fixed at 1,
the on-device shape. tflite-runtime is deliberately not used: its newest release (2.14) needs numpy<2, rejects newer
int8 op versions and returned wrong numbers without error on a dynamic-range int8 model (docs/environment.md).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hetero.errors import ArtifactError
from hetero.export.formats import BuildRequest
from hetero.export.metadata import INPUT_NAME, OUTPUT_NAME, describe
from hetero.export.quiet import native_quiet
from hetero.export.scopes import cut, tflite_ops

FILE = "model.tflite"
MIXED_PRECISION = True  # int8 with some layers float (`keep_float`): ai-edge-quantizer's no_quantize rules

_FLOAT_SCOPES = ".*(Preprocess_preprocess|GlobalPool_pool|Linear_head|L2Normalize_norm).*"  # graph ends, kept float

_FP16_RECIPE = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }
]


def build(req: BuildRequest) -> dict[str, Any]:
    import torch  # export needs torch; running an artifact (`runner`) does not

    with native_quiet():  # torchao, imported by litert-torch, reports CUDA kernels it cannot load
        import litert_torch

    fp32 = req.dest / (FILE if req.precision == "fp32" else "fp32.tflite")
    sample = {INPUT_NAME: torch.from_numpy(req.calibration[:1])}
    with native_quiet():
        litert_torch.convert(_named(req.graph).eval(), sample_args=(), sample_kwargs=sample).export(str(fp32))
    if req.precision != "fp32":
        from hetero.export.prepare import network_input_range  # torch: export only, never the runner

        span = network_input_range(req.graph, req.calibration) if req.precision == "int8" else None
        _quantize(fp32, req.dest / FILE, req.precision, req.calibration, req.keep_float, span)
        fp32.unlink()
    meta = describe(
        req.space_id,
        req.embed_dim,
        req.graph.input_spec,
        req.precision,
        frame_filter=req.frame_filter,
    )
    _stamp(req.dest / FILE, meta)
    facts = {"batch": 1, "converter": "litert-torch", "signature": {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}}
    if req.precision == "int8":  # ai-edge-quantizer's static recipe calibrates min-max, whatever the config asks
        facts["quantisation"] = {"calibration_method": "minmax", "keep_float": list(req.keep_float)}
    return facts


def _named(graph: Any) -> Any:
    """The deployable graph with the signature every format shares: `image` in, `embedding` out."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.deployable = graph

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            return {OUTPUT_NAME: self.deployable(image)}

    return Named()


def _stamp(path: Path, meta: dict[str, str]) -> None:
    """Add a `hetero` metadata entry (JSON of `meta`) to the flatbuffer, via LiteRT's generated schema."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    model = read_model(path.read_bytes())
    data = schema.BufferT()
    data.data = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(data)
    entry = schema.MetadataT()
    entry.name = "hetero"
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (b"hetero", "hetero")] + [entry]
    path.write_bytes(pack_model(model))


def read_model(buf: bytes) -> Any:
    """A .tflite flatbuffer as LiteRT's generated object tree (`ModelT`), every constant inline."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    for b in model.buffers or []:
        # ai-edge-quantizer writes large constants after the flatbuffer, addressed by (offset, size); the object API
        # keeps the numbers but not those bytes, so a re-packed file pointed past its own end. Inline them.
        if getattr(b, "offset", 0) > 1:
            b.data = np.frombuffer(buf, dtype=np.uint8, count=b.size, offset=b.offset)
            b.offset, b.size = 0, 0
    return model


def pack_model(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(path: Path) -> dict[str, str]:
    """The `hetero` metadata entry of a .tflite file ({} when it has none)."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if m.Name() == b"hetero":
            return json.loads(model.Buffers(m.Buffer()).DataAsNumpy().tobytes())
    return {}


def module_regex(module_path: str) -> str:
    """The ai-edge-quantizer regex for the ops of a torch module ("stages.1.0.dw"): litert-torch names an op's
    output by its module scopes, "<Class>_<attribute>" joined by "/" (fused ops join several names with ";")."""
    return ".*/" + "/".join(f"[^/;]*_{re.escape(p)}" for p in module_path.split(".")) + "[/;].*"


def _quantize(
    src: Path,
    dst: Path,
    precision: str,
    calibration: np.ndarray,
    keep_float: tuple[str, ...] = (),
    input_range: tuple[float, float] | None = None,
) -> None:
    """ai-edge-quantizer's recipe for `precision` on the fp32 flatbuffer; int8 calibrated on global min/max ranges,
    the network's input given `input_range` (`prepare.network_input_range`: off the pixel lattice's ties)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    chosen = {"fp16": _FP16_RECIPE, "int8w": recipe.dynamic_wi8_afp32(), "int8": recipe.static_wi8_ai8()}[precision]
    # Later rules win: keep the pixel scaling, the head and the L2 normalisation in float. Quantised, the norm
    # tail gave embeddings off unit length and a 1.4-point R@1 drop on the digits edge model.
    # The last op's output tensor carries the signature's name, not the norm's scope: name it explicitly.
    with native_quiet():
        interp = Interpreter(model_path=str(src))
    float_scopes = "|".join(
        [_FLOAT_SCOPES, re.escape(interp.get_output_details()[0]["name"]), *map(module_regex, keep_float)]
    )
    chosen = [*chosen, {"regex": float_scopes, "operation": "*", "algorithm_key": "no_quantize"}]
    q = quantizer.Quantizer(str(src), chosen)
    calib = None
    with native_quiet():
        if q.need_calibration:
            sig = next(iter(interp.get_signature_list()))
            key = next(iter(interp.get_signature_runner(sig).get_input_details()))
            # Ranges are the min and max over every calibration image. The quantizer's own `calibrate` keeps a moving
            # average (0.95) of per-sample ranges instead: fed one image at a time (batch 1 is baked in), that is a
            # range of the last ~20 images, and activations of images beyond it clip — the emoji edge's int8 fell to
            # a per-image cosine of 0.78 while ONNX's global min-max gave 0.95 on the same weights.
            rules = recipe_manager.RecipeManager()
            rules.load_quantization_recipe(chosen)
            cal = calibrator.Calibrator(str(src), qsv_update_func=qsv_utils.min_max_update)
            cal.calibrate({sig: [{key: img[None]} for img in calibration]}, rules)
            calib = cal.get_model_qsvs()
            if input_range is not None:
                g = read_model(src.read_bytes()).subgraphs[0]
                for t in cut(tflite_ops(g))[0]:
                    name = g.tensors[t].name.decode()
                    if name in calib:
                        calib[name] = {**calib[name], "min": np.full_like(calib[name]["min"], input_range[0]),
                                       "max": np.full_like(calib[name]["max"], input_range[1])}  # fmt: skip
        q.quantize(calib, enable_progress_report=False).export_model(str(dst), overwrite=True)


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A LiteRT interpreter as a batch function (it runs one image at a time: batch 1 is baked in)."""
    interp = interpreter(path, threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    plain = not in_scale and not out_scale and inp["dtype"] == np.uint8 and out["dtype"] == np.float32

    def run(batch: np.ndarray) -> np.ndarray:
        if plain and len(batch) == 1:  # the device's shape, float graph: nothing to convert (get_tensor copies)
            interp.set_tensor(inp["index"], batch)
            interp.invoke()
            return interp.get_tensor(out["index"])
        rows = []
        for img in batch:
            x = img[None]
            if in_scale:  # a quantised input takes q = x / scale + zero_point, not raw pixels
                x = np.clip(np.round(x / in_scale + in_zero), *dtype_range(inp["dtype"])).astype(inp["dtype"])
            interp.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
            interp.invoke()
            y = interp.get_tensor(out["index"])[0].copy()
            if out_scale:  # a quantised output must be dequantised, or the "embedding" is raw int8 codes
                y = (y.astype(np.float32) - out_zero) * out_scale
            rows.append(y.astype(np.float32, copy=False))
        return rows[0][None] if len(rows) == 1 else np.stack(rows)

    return run


def interpreter(model: Path | bytes, threads: int | None = None) -> Any:
    """A LiteRT interpreter with its tensors allocated, from a file or from flatbuffer bytes."""
    Interpreter = _interpreter_class()
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    try:
        with native_quiet():
            interp = Interpreter(**source, num_threads=threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        where = model if isinstance(model, Path) else "flatbuffer"
        raise ArtifactError(f"{where}: LiteRT cannot load it ({first})") from None
    return interp


def _interpreter_class() -> type:
    """ai-edge-litert; where a device only has the legacy tflite_runtime, use it, loudly."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ArtifactError("no TFLite runtime: install ai-edge-litert") from None
        warnings.warn(
            "using the legacy tflite_runtime: it is stale (2.14, numpy<2) and returned wrong int8 results without "
            "error; prefer ai-edge-litert",
            RuntimeWarning,
            stacklevel=3,
        )
    return Interpreter


def dtype_range(dtype: type) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def inspect(path: Path, graph: Any, space_id: str, dim: int, precision: str) -> dict[str, Any]:
    """No static check: this format executes here, and running it against torch proves more than reading it."""
    return {}


def runtime_version() -> str:
    import importlib.metadata

    return f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
