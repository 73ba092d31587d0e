"""One benchmark measurement in a fresh process: `python -m hetero.devices.bench_worker UNIT THREADS RUNS SECONDS
WARMUP BATCH`, run by `hetero bench` locally or on a remote host over SSH; prints one JSON object.

A fresh process per (unit, thread count) so that load time is a cold load, peak RSS belongs to this unit alone and
the BLAS/OpenMP pools are sized before any library starts them (the parent sets OMP_NUM_THREADS and friends). The
timed loop is the bare loop a user would write — one call per iteration, `perf_counter` around it, nothing else — and
the machine's 256³ float32 GEMM rate is measured in the same process at the same thread count, so "how close to the
compute limit" is a ratio of two numbers taken side by side.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hetero.cpu import cpu_info
from hetero.export.scopes import cut, onnx_ops, tflite_ops
from hetero.kinds import Format
from hetero.timing import interleaved_ms

GEMM_N = 256


def gemm_gflops(seconds: float = 0.3) -> float:
    """float32 256³ matrix products per second through numpy's BLAS, in GFLOP/s (2 n³ per product)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: thread pool and caches
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or done < 5:
        a @ b
        done += 1
    return 2 * GEMM_N**3 * done / elapsed / 1e9


def peak_rss_bytes() -> int:
    """This process image's peak resident memory. On Linux VmHWM (reset by exec): getrusage's ru_maxrss survives
    exec, so a worker forked from a large parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB, macOS bytes


def bare_onnx(model_file: Path) -> tuple[bytes, str] | None:
    """The ONNX graph without its in-graph extras: from the tensor the pixel scaling and resize hand the network
    (the `/preprocess/` scope's output) to the one the L2 normalisation (`/norm/`) takes. None when the graph
    has no such scopes (another exporter's naming) or onnx is not installed (the slim check install)."""
    try:
        import onnx
        from onnx.utils import Extractor
    except ImportError:
        return None
    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_file)))  # the extractor needs value infos

    starts, ends = cut(onnx_ops(model.graph))
    if len(starts) != 1 or len(ends) != 1:
        return None
    bare = Extractor(model).extract_model(sorted(starts), sorted(ends))
    return bare.SerializeToString(), next(iter(starts))


def bare_tflite(model_file: Path) -> bytes | None:
    """The TFLite flatbuffer without its in-graph extras, cut like the ONNX graph: litert-torch names each tensor
    by its torch module scopes, so the ops under `Preprocess_preprocess` (cast, scaling, resize) and under
    `L2Normalize_norm` (with the graph's output) are dropped and the subgraph's input and output moved to the
    tensors between them. Quantise/dequantise ops stay with the side whose tensor they convert."""
    from hetero.export.tflite import pack_model, read_model

    model = read_model(model_file.read_bytes())
    g = model.subgraphs[0]
    ops = tflite_ops(g)
    starts, ends = cut(ops)
    if len(starts) != 1 or len(ends) != 1:
        return None
    g.operators = [op for op, (sc, _, _) in zip(g.operators, ops, strict=True) if sc == "network"]
    g.inputs, g.outputs = np.array(sorted(starts), dtype=np.int32), np.array(sorted(ends), dtype=np.int32)
    model.signatureDefs = []  # the signature names the full graph's input and output
    return pack_model(model)


def _input_dtype(graph: bytes, name: str) -> type:
    """float16 graphs (ONNX fp16) take half-precision activations at the cut."""
    import onnx

    value = next(v for v in onnx.load_from_string(graph).graph.input if v.name == name)
    return np.float16 if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else np.float32


def bare_call(model_file: Path, fmt: str, shape: tuple[int, ...], threads: int) -> Callable[[], object] | None:
    """One call of the bare network on the artifact's runtime at `threads`, on random activations of the compute
    resolution (float NCHW for ONNX, NHWC for TFLite); None when it cannot be cut out."""
    rng = np.random.default_rng(0)
    if fmt == Format.ONNX:
        cut = bare_onnx(model_file)
        if cut is None:
            return None
        import onnxruntime as ort

        graph, name = cut
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        x = {name: rng.standard_normal(shape).astype(_input_dtype(graph, name))}
        return lambda: sess.run(None, x)
    if fmt == Format.TFLITE:
        flat = bare_tflite(model_file)
        if flat is None:
            return None
        from hetero.export.tflite import dtype_range, interpreter

        interp = interpreter(flat, threads)
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        x = rng.standard_normal(inp["shape"])
        x = (x * 20).clip(*dtype_range(inp["dtype"])) if np.issubdtype(inp["dtype"], np.integer) else x
        x = x.astype(inp["dtype"])

        def call() -> object:  # the artifact's own loop: set, invoke, read
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            return interp.get_tensor(out["index"])

        return call
    return None


def measure(unit: Path, threads: int, runs: int, seconds: float, warmup: int, batch: int) -> dict:
    from hetero.devices.loader import load
    from hetero.errors import NotExecutedError
    from hetero.manifest import load_manifest

    manifest, model_file = load_manifest(unit)
    if manifest.format == "safetensors":  # the torch reference: its intra-op pool is sized here
        import torch

        torch.set_num_threads(threads)
    rss_before = peak_rss_bytes()
    t0 = time.perf_counter()
    try:
        rt = load(unit, threads)
    except NotExecutedError as e:
        return {"status": "not executed", "note": str(e)}
    load_ms = (time.perf_counter() - t0) * 1e3
    shape = manifest.input.shape(batch)
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    artifact = lambda: rt.embed(x)  # noqa: E731
    artifact()
    peak = peak_rss_bytes()  # before the bare network is loaded beside it
    res = manifest.model.get("resolution") or None
    size = (res, res) if res else (manifest.input.height, manifest.input.width)
    call = bare_call(model_file, manifest.format, (batch, 3, *size), threads)
    # The artifact and its bare network in alternating blocks of one process: their ratio (the in-graph extras)
    # is measured under the same machine state, and per-round pairs give it an interval.
    (samples, *bare), rounds = interleaved_ms([artifact, *([call] if call else [])], runs, seconds, warmup)
    return {
        "status": "ok",
        "runtime": rt.name,
        "load_ms": load_ms,
        "samples_ms": samples,
        "rss_before_load_bytes": rss_before,
        "peak_rss_bytes": peak,
        "bare_samples_ms": bare[0] if bare else [],
        "rounds_ms": rounds if bare else [],
        "gemm_gflops": gemm_gflops(),
        "cpu": cpu_info(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print("usage: python -m hetero.devices.bench_worker UNIT THREADS RUNS SECONDS WARMUP BATCH", file=sys.stderr)
        return 2
    from hetero.errors import HeteroError

    unit, threads, runs, seconds, warmup, batch = argv
    try:
        out = measure(Path(unit), int(threads), int(runs), float(seconds), int(warmup), int(batch))
    except HeteroError as e:
        print(f"hetero bench worker: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
