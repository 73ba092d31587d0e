"""Where the deployable graph's parts sit in an exported graph: hetero's exporters keep torch's module scopes in
tensor and node names (`/preprocess/...` in ONNX, `..._preprocess` in litert-torch's TFLite names), so the network
between the pixel preprocessing and the L2 normalisation can be found in any artifact — to time it alone
(`hetero bench`'s extras) and to give int8 quantisers the range of its input."""

from __future__ import annotations

from typing import Any

Op = tuple[str, list, list]  # (scope, input tensors, output tensors)


def cut(ops: list[Op]) -> tuple[set, set]:
    """Where the network starts and ends in a graph of scoped ops ("preprocess", "norm", the network's, or "" when
    unscoped): the tensors the network takes from the pixel scaling and resize, and those the L2 normalisation
    takes from the network. One of each, or the graph is not hetero's shape. Unscoped ops (shape arithmetic a
    quantiser's pre-processing adds, weight dequantisation) belong to neither side."""
    made_by = {o: sc for sc, _, outs in ops for o in outs}
    starts = {i for sc, ins, _ in ops if sc not in ("preprocess", "norm", "")
              for i in ins if made_by.get(i) == "preprocess"}  # fmt: skip
    ends = {i for sc, ins, _ in ops if sc == "norm" for i in ins if made_by.get(i) not in (None, "norm", "")}
    return starts, ends


def onnx_ops(graph: Any) -> list[Op]:
    """Each node of an onnx GraphProto with the top scope of its name ("/preprocess/Cast" -> "preprocess")."""

    def scope(name: str) -> str:
        return name.split("/")[1] if name.startswith("/") and name.count("/") > 1 else ""

    return [(scope(n.name or (n.output[0] if n.output else "")), list(n.input), list(n.output)) for n in graph.node]


def tflite_ops(subgraph: Any) -> list[Op]:
    """Each operator of LiteRT's `SubGraphT` with the scope of its first output tensor's name; the graph's output
    belongs to the norm."""
    outputs = {int(t) for t in subgraph.outputs}

    def scope(t: int) -> str:
        name = subgraph.tensors[t].name
        name = name.decode() if isinstance(name, bytes) else str(name)
        if "Preprocess_preprocess" in name:
            return "preprocess"
        return "norm" if "L2Normalize_norm" in name or t in outputs else "network"

    ops = subgraph.operators
    return [(scope(op.outputs[0]), [int(i) for i in op.inputs], [int(o) for o in op.outputs]) for op in ops]
