"""What an artifact needs from the runtime that loads it, read from the file itself, and the oldest runtime that has it.

ONNX: the IR version and the opset of every domain the model imports, plus the op domains its nodes use (an app's
onnxruntime refuses a model stamped with a newer IR or opset than it implements, and a domain it does not know).
TFLite: the `min_runtime_version` the converter writes into the flatbuffer's metadata, and the builtin ops with their
versions. Export records this in the manifest (`extra.runtime_requirements`); `hetero check --runtime` reads it from
the (hash-verified) file again and refuses a requested runtime version below the minimum, naming it.

The ONNX header is read with a minimal protobuf wire reader, not the `onnx` package: the light `check` install and
the runtime worker environments do not have it, and only three fields are needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# onnxruntime release -> (newest ai.onnx opset, newest IR version) it implements: onnxruntime's compatibility table
# (docs/reference/compatibility, "ONNX opset support"). Verified here by test for 1.17 (opset 20 / IR 9 load,
# opset 21 refused) and the current release.
ORT_IMPLEMENTS: tuple[tuple[str, int, int], ...] = (
    ("1.10", 15, 8),
    ("1.11", 16, 8),
    ("1.12", 17, 8),
    ("1.14", 18, 8),
    ("1.15", 19, 9),
    ("1.17", 20, 9),
    ("1.18", 21, 10),
    ("1.21", 22, 10),
)
_LITERT_FIRST_TF = (2, 17)  # ai-edge-litert 1.0 is the TF Lite runtime of TensorFlow 2.17 under its new name
_ORT_DOMAINS = ("", "ai.onnx", "com.microsoft")  # every onnxruntime release of the table implements these


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire in (1, 5):
            value, i = buf[i : i + (8 if wire == 1 else 4)], i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def onnx_requirements(path: Path) -> dict[str, Any]:
    """IR version, imported opsets by domain, and the domains the graph's nodes use."""
    ir, opsets, used = 0, {}, set()
    for number, _, value in _fields(Path(path).read_bytes()):
        if number == 1:  # ModelProto.ir_version
            ir = value
        elif number == 8:  # ModelProto.opset_import: OperatorSetIdProto {1: domain, 2: version}
            entry = dict((n, v) for n, _, v in _fields(value))
            opsets[entry.get(1, b"").decode()] = int(entry.get(2, 0))
        elif number == 7:  # ModelProto.graph -> GraphProto.node (1) -> NodeProto.domain (7)
            for g_number, _, node in _fields(value):
                if g_number == 1:
                    used.add(next((v.decode() for n, _, v in _fields(node) if n == 7), ""))
    return {"onnx_ir_version": ir, "onnx_opsets": dict(sorted(opsets.items())), "onnx_op_domains": sorted(used)}


def tflite_requirements(path: Path) -> dict[str, Any]:
    """The flatbuffer's `min_runtime_version` metadata and its builtin ops as NAME:version."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    meta = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        meta[entry.Name().decode()] = bytes(data).rstrip(b"\0").decode(errors="replace") if len(data) else ""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        ops.add(f"{names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), '?')}:{code.Version()}")
    return {"tflite_min_runtime_version": meta.get("min_runtime_version", ""), "tflite_ops": sorted(ops)}


def requirements(path: Path, fmt: str) -> dict[str, Any]:
    """The runtime requirements of a model file of format `fmt` ({} for formats without a known reader)."""
    if fmt == "onnx":
        return onnx_requirements(path)
    if fmt == "tflite":
        return tflite_requirements(path)
    return {}


def version_tuple(version: str) -> tuple[int, ...]:
    """`1.17.3` -> (1, 17, 3); a pre-release suffix ends it (`1.18.0rc1` -> (1, 18, 0))."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d*", piece).group()
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def minimum_version(package: str, req: dict[str, Any]) -> tuple[str | None, str]:
    """The oldest `package` release that can load a file with requirements `req`, and why (None: not known — the
    file is run and the runtime's own answer decides)."""
    if package == "onnxruntime" and "onnx_opsets" in req:
        opsets = req["onnx_opsets"]
        opset, ir = max(opsets.get("", 0), opsets.get("ai.onnx", 0)), req["onnx_ir_version"]
        unknown = sorted(d for d in {*opsets, *req.get("onnx_op_domains", [])} if d not in _ORT_DOMAINS)
        why = f"ONNX IR {ir}, opset {opset}"
        if unknown:
            return None, f"{why}; domains {', '.join(unknown)} have no known minimum"
        for release, max_opset, max_ir in ORT_IMPLEMENTS:
            if opset <= max_opset and ir <= max_ir:
                return release, why
        return None, f"{why}: newer than any onnxruntime release hetero knows"
    if package == "ai-edge-litert" and req.get("tflite_min_runtime_version"):
        need = req["tflite_min_runtime_version"]
        why = f"TFLite min_runtime_version {need}"
        if version_tuple(need) <= _LITERT_FIRST_TF:  # every ai-edge-litert release implements at least this
            return "1.0", why
        return (
            None,
            f"{why}: newer than TF Lite {'.'.join(map(str, _LITERT_FIRST_TF))}, which ai-edge-litert 1.0 implements",
        )
    return None, ""


def stated_frame(model_file: Path, fmt: str) -> dict[str, object] | None:
    """The frame rule the file itself states (`hetero.frame`; ONNX and TFLite, read without onnx or torch), or None
    when it states none (an older artifact, Core ML, a checkpoint): what `check` holds the manifest to."""
    if fmt == "onnx":
        props = {}
        for number, _, value in _fields(Path(model_file).read_bytes()):
            if number == 14:  # ModelProto.metadata_props: StringStringEntryProto {1: key, 2: value}
                entry = dict((n, v) for n, _, v in _fields(value))
                props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    elif fmt == "tflite":
        from hetero.export.tflite import read_metadata

        props = read_metadata(model_file)
    else:
        return None
    return json.loads(props["hetero.frame"]) if "hetero.frame" in props else None
