"""Your cloud model as hetero's cloud: import an ONNX or TorchScript file hetero did not write.

`import_cloud` wraps the user's network in the deployable contract every hetero unit has — uint8 RGB NHWC pixels in,
their declared preprocessing ((x / 255 - mean) / std, channel order, layout) inside the graph, optionally L2
normalisation at the end — and writes it as a unit (model.onnx + manifest) whose space id is the sha256 of *the
user's file*: `<name>@<12 hex digits>`. A different file (retrained, re-exported) is a different space, so edges
trained against one are refused against the other. Everything that takes a cloud (`train edge --cloud`, `verify`,
`fixture create`, `check --cloud`) takes this unit as it takes a hetero checkpoint.

The import runs the wrapped graph on a few probe images and refuses (exit 2, nothing written) a model whose batch
axis is fixed, whose output is not [N, D], not finite or not unit length (declare `normalize` to L2-normalise in
the graph: cosine retrieval needs unit vectors, and silently normalising would hide a wrong output).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetero.errors import InputError
from hetero.io import atomic_dir, ensure_writable_dir, sha256_path
from hetero.manifest import Manifest, load_manifest, write_manifest
from hetero.spaces import INPUT_NAME, OUTPUT_NAME, EmbeddingSpace, InputSpec
from hetero.training.lineage import ROLE, SPACE_KEY, is_imported_cloud, require_imported_cloud
from hetero.training.teacher import CheckpointTeacher, ClassPrototypes, Teacher

MODEL_NAME = "model.onnx"
_INNER_PREFIX = "user_"  # names of the user's graph inside the wrapped one
# RGB -> grey for a grey-scale cloud (ITU-R BT.601 luma, what PIL's convert("L") computes).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class Preprocessing:
    """What the user's network expects as float input, declared by the user (it is not in an ONNX file)."""

    height: int
    width: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # in the network's channel order, on x / 255
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"  # RGB | BGR: what the network's channels are
    layout: str = "NCHW"  # NCHW | NHWC: the network's float input
    # 1: a grey-scale network; the graph turns the RGB pixels into luma (ITU-R BT.601) before mean/std.
    channels: int = 3

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise InputError(f"input size must be at least 8x8; got {self.height}x{self.width}")
        if self.channel_order not in ("RGB", "BGR") or self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"channel order RGB|BGR and layout NCHW|NHWC; got {self.channel_order}, {self.layout}")
        if self.channels not in (1, 3):
            raise InputError(f"channels is 1 (grey-scale) or 3 (colour); got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise InputError(
                f"mean and std take {self.channels} number(s) each (one per channel of a "
                f"{'grey-scale' if self.channels == 1 else 'colour'} network); got {len(self.mean)} and {len(self.std)}"
            )
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise InputError(f"mean must be finite and std positive; got mean {self.mean}, std {self.std}")

    def input_spec(self) -> InputSpec:
        """The unit's contract: RGB pixels; mean/std in RGB order (what an edge network's preprocessing applies).
        A grey-scale cloud's single mean/std apply to each of the edge's three channels."""
        if self.channels == 1:
            return InputSpec(height=self.height, width=self.width, mean=self.mean * 3, std=self.std * 3)
        flip = self.channel_order == "BGR"
        mean, std = (self.mean[::-1], self.std[::-1]) if flip else (self.mean, self.std)
        return InputSpec(height=self.height, width=self.width, mean=tuple(mean), std=tuple(std))


def _to_onnx(model: Path, workdir: Path, pre: Preprocessing) -> Path:
    """ONNX as given; TorchScript (.pt/.ts/.torchscript) through torch's TorchScript exporter, batch axis dynamic."""
    if model.suffix.lower() == ".onnx":
        return model
    if model.suffix.lower() not in (".pt", ".pth", ".ts", ".torchscript"):
        raise InputError(f"{model}: a cloud model is an .onnx file or a TorchScript file (.pt, .ts)")
    try:
        scripted = torch.jit.load(str(model), map_location="cpu").eval()
    except Exception as e:  # torch raises RuntimeError/ValueError/pickle errors for a non-TorchScript file
        raise InputError(f"{model}: not TorchScript ({type(e).__name__}); save it with torch.jit.save") from None
    k = pre.channels
    shape = (1, k, pre.height, pre.width) if pre.layout == "NCHW" else (1, pre.height, pre.width, k)
    out = workdir / "torchscript.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                scripted, (torch.zeros(shape),), str(out), dynamo=False, opset_version=17,
                input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            )  # fmt: skip
        except Exception as e:  # torch raises many types for a module it cannot trace or export
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise InputError(
                f"{model}: the TorchScript model could not be exported to ONNX ({first}); check the declared input "
                "size, --channels and layout, or export it to ONNX yourself and import that"
            ) from None
    return out


def _preprocess_model(pre: Preprocessing, user: Any) -> Any:
    """The graph before the user's: uint8 NHWC RGB pixels -> float, luma (grey networks) or channel order, layout,
    (x/255 - mean)/std -> `net_in`, at the user's opset and IR version."""
    from onnx import TensorProto, helper, numpy_helper

    k = pre.channels
    mean = np.array(pre.mean, np.float32)
    std = np.array(pre.std, np.float32)
    c = (1, k, 1, 1) if pre.layout == "NCHW" else (1, 1, 1, k)
    nodes = [helper.make_node("Cast", [INPUT_NAME], ["px"], to=TensorProto.FLOAT)]
    x = "px"
    if k == 1:  # luma: [n, h, w, 3] @ [3, 1] -> [n, h, w, 1]
        nodes.append(helper.make_node("MatMul", [x, "luma"], ["px_grey"]))
        x = "px_grey"
    elif pre.channel_order == "BGR":
        nodes.append(helper.make_node("Gather", [x, "bgr"], ["px_bgr"], axis=3))
        x = "px_bgr"
    if pre.layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [x], ["px_nchw"], perm=[0, 3, 1, 2]))
        x = "px_nchw"
    nodes += [
        helper.make_node("Sub", [x, "mean255"], ["centred"]),
        helper.make_node("Div", ["centred", "std255"], ["net_in"]),
    ]
    inits_pre = [
        numpy_helper.from_array((mean * 255).reshape(c), "mean255"),
        numpy_helper.from_array((std * 255).reshape(c), "std255"),
        numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr"),
        numpy_helper.from_array(LUMA.reshape(3, 1), "luma"),
    ]
    pixels = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["n", pre.height, pre.width, 3])
    net_in = helper.make_tensor_value_info("net_in", TensorProto.FLOAT, None)
    opset = next((o.version for o in user.opset_import if o.domain in ("", "ai.onnx")), 17)
    return helper.make_model(
        helper.make_graph(nodes, "hetero_preprocess", [pixels], [net_in], inits_pre),
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=user.ir_version,
    )


def _wrap(user: Any, pre: Preprocessing, normalize: bool, space_id: str) -> Any:
    """uint8 NHWC pixels -> float, channel order, (x/255 - mean)/std, layout -> the user's graph -> [L2]."""
    import onnx
    from onnx import TensorProto, compose, helper

    if len(user.graph.input) - len({i.name for i in user.graph.initializer} & {i.name for i in user.graph.input}) != 1:
        raise InputError("the cloud model must have exactly one input (the image batch)")
    if len(user.graph.output) != 1:
        raise InputError(f"the cloud model must have one output (the embedding); it has {len(user.graph.output)}")
    inits = {i.name for i in user.graph.initializer}
    user_in = next(i for i in user.graph.input if i.name not in inits)
    dims = user_in.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise InputError(f"the cloud model's input {user_in.name!r} has rank {len(dims)}; an image batch has rank 4")
    dims[0].ClearField("dim_value")
    dims[0].dim_param = "n"  # try a dynamic batch; the probe run tells whether the graph allows it
    k = pre.channels
    want = (k, pre.height, pre.width) if pre.layout == "NCHW" else (pre.height, pre.width, k)
    have = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    if any(h is not None and h != w for h, w in zip(have, want, strict=True)):
        hint = ""
        taken = have[0] if pre.layout == "NCHW" else have[2]
        if taken in (1, 3) and taken != k:
            hint = f"; it takes {taken} channel(s): pass --channels {taken} with {taken} mean/std value(s)"
        raise InputError(
            f"the cloud model takes {list(have)} per image; the declared preprocessing gives {list(want)}{hint}"
        )
    out_dims = user.graph.output[0].type.tensor_type.shape.dim
    if out_dims:
        out_dims[0].ClearField("dim_value")
        out_dims[0].dim_param = "n"
    pre_graph = _preprocess_model(pre, user)
    user = compose.add_prefix(user, _INNER_PREFIX)
    merged = compose.merge_models(pre_graph, user, io_map=[("net_in", _INNER_PREFIX + user_in.name)])
    emb = merged.graph.output[0].name
    if normalize:
        merged.graph.node.append(helper.make_node("LpNormalization", [emb], [OUTPUT_NAME], axis=1, p=2))
    else:
        merged.graph.node.append(helper.make_node("Identity", [emb], [OUTPUT_NAME]))
    del merged.graph.output[:]
    merged.graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", None]))
    del merged.metadata_props[:]
    merged.metadata_props.add(key=SPACE_KEY, value=space_id)  # binds the manifest's claim to the hashed file
    try:
        onnx.checker.check_model(merged)
    except onnx.checker.ValidationError as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InputError(f"the cloud model is not a valid ONNX graph once wrapped ({first})") from None
    return merged


def _probe(path: Path, pre: Preprocessing, normalize: bool, model: Path) -> int:
    """Run the wrapped graph on seeded noise and a flat image, batch of 3: the output must be [3, D], finite, unit."""
    from hetero.onnxrun import session_runner

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, pre.height, pre.width, 3), dtype=np.uint8)
    pixels[2] = 128
    try:
        out = np.asarray(session_runner(path)(pixels))
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise InputError(
            f"{model}: the model does not run on a batch of 3 images ({first}); export it with a dynamic batch axis "
            "and check the declared input size and layout"
        ) from None
    if out.ndim != 2 or out.shape[0] != 3:
        raise InputError(f"{model}: output shape per batch of 3 is {list(out.shape)}; an embedding model gives [3, D]")
    if not np.isfinite(out).all():
        raise InputError(f"{model}: the model's output is not finite on probe images")
    norms = np.linalg.norm(out, axis=1)
    if normalize and norms.min() < 0.5:  # L2 of a zero vector stays zero: the model put out nothing to normalise
        raise InputError(f"{model}: the model's output is zero on probe images; it embeds nothing")
    if np.abs(norms - 1).max() > 1e-3:
        raise InputError(
            f"{model}: the output is not unit length (norms {norms.min():.3g}..{norms.max():.3g}); cosine retrieval "
            "needs unit vectors: declare normalize (--normalize) to L2-normalise inside the graph"
        )
    if np.abs(out - out[0]).max() < 1e-6:  # noise and a flat grey image embedded identically: a constant function
        raise InputError(f"{model}: the model gives the same embedding for every probe image; it embeds nothing")
    return int(out.shape[1])


def import_cloud(model: Path, out: Path, pre: Preprocessing, *, name: str = "", normalize: bool = False) -> Manifest:
    """Wrap and check the user's cloud model; write the unit at `out` atomically and return its manifest."""

    model = Path(model)
    if not model.is_file():
        raise InputError(f"cloud model not found: {model}")
    ensure_writable_dir(Path(out).parent)
    digest = model_digest(model)
    name = name or model.stem
    try:
        return _import(model, out, pre, name, normalize, digest)
    except MemoryError:
        raise InputError(f"{model}: ran out of memory importing it (is this an embedding model?)") from None


def _import(model: Path, out: Path, pre: Preprocessing, name: str, normalize: bool, digest: str) -> Manifest:
    import onnx

    with tempfile.TemporaryDirectory() as work:
        src = _to_onnx(model, Path(work), pre)
        try:
            user = onnx.load(str(src))
        except Exception as e:  # protobuf DecodeError and friends
            raise InputError(f"{model}: not an ONNX model ({type(e).__name__})") from None
        space_id = f"{name}@{digest[:12]}"
        try:
            wrapped = _wrap(user, pre, normalize, space_id)
        except onnx.checker.ValidationError as e:  # onnx.compose checks the graphs it merges
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise InputError(f"{model}: not a valid ONNX graph ({first})") from None
        with atomic_dir(Path(out)) as tmp:
            onnx.save(wrapped, str(tmp / MODEL_NAME))
            dim = _probe(tmp / MODEL_NAME, pre, normalize, model)
            spec = pre.input_spec()
            manifest = Manifest(
                kind="artifact",
                file=MODEL_NAME,
                sha256="",
                format="onnx",
                precision="fp32",
                space=EmbeddingSpace(id=space_id, dim=dim, input=spec),
                input=spec,
                model={"name": f"imported:{name}", "embed_dim": dim, "imported": True},
                source={"model_file": model.name, "model_sha256": digest},  # graph + its external data
                extra={
                    "role": ROLE,
                    "declared_preprocessing": {**pre.__dict__, "mean": list(pre.mean), "std": list(pre.std)},
                    "normalize_in_graph": normalize,
                },
            )
            write_manifest(tmp, manifest)
    return load_manifest(out)[0]


def model_digest(model: Path) -> str:
    """The sha256 that names an imported cloud's space: of the file alone, or — for an ONNX graph that keeps its
    weights in external data files (torch.onnx.export's `model.onnx.data`) — of the graph and every file it
    references, so the same graph with other weights is another space. A reference outside the model's folder is
    refused (hetero.onnxrun.external_data)."""
    import hashlib

    from hetero.onnxrun import external_data

    model = Path(model)
    files = external_data(model) if model.suffix.lower() == ".onnx" else []
    if not files:
        return sha256_path(model)
    h = hashlib.sha256(b"hetero.onnx+external/1\n" + sha256_path(model).encode() + b"\n")
    for f in files:
        h.update(f.relative_to(model.parent.resolve()).as_posix().encode() + b"\0" + sha256_path(f).encode() + b"\n")
    return h.hexdigest()


class ImportedCloudTeacher:
    """An imported cloud as a teacher: embeddings of any view (through onnxruntime), no pooled features, and class
    prototypes only once computed from its embeddings of labelled images (`with_prototypes`)."""

    kind = "imported"
    model = None  # a user's graph: nothing to inherit or share

    def __init__(self, path: Path, threads: int | None = None, loaded: tuple[Manifest, Path] | None = None):
        from hetero.onnxrun import session_runner

        self.manifest, model_file = require_imported_cloud(path, loaded)  # sha256 verified once
        self.space, self.input, self.sha256 = self.manifest.space, self.manifest.input, self.manifest.sha256
        self.resolution = None
        self.embed_dim, self.feature_dim = self.space.dim, None
        self._run = session_runner(model_file, threads)
        self._prototypes: ClassPrototypes | None = None
        self.mean = torch.tensor(self.input.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.input.std).view(1, 3, 1, 1)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from hetero.batching import embed_batches

        return embed_batches(self._run, pixels, batch_size=64)

    def features_and_embedding(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        """Views arrive preprocessed (NCHW, normalised); the graph takes pixels, so they are mapped back to uint8 —
        the rounding a camera frame has anyway."""
        px = ((x * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return None, torch.from_numpy(self.embed_pixels(np.ascontiguousarray(px.numpy())))

    def prototypes(self) -> ClassPrototypes | None:
        return self._prototypes

    def with_prototypes(self, prototypes: ClassPrototypes) -> ImportedCloudTeacher:
        self._prototypes = prototypes
        return self

    def stored_rows(self, ids: object, what: str) -> None:
        return None

    def require_defines_space(self) -> None:
        """Checked at load (require_imported_cloud): the space id names the user's file's hash."""


def prototypes_from_embeddings(embeddings: torch.Tensor, labels: torch.Tensor, scale: float) -> ClassPrototypes:
    """BCT without the cloud's classifier: each class's direction is the normalised mean of the cloud's embeddings
    of its images (the BCT paper's rule for classes the old classifier never saw). Unlabelled rows (-1) are ignored."""
    keep = labels >= 0
    emb, y = embeddings[keep], labels[keep]
    n = int(y.max()) + 1
    sums = torch.zeros(n, emb.shape[1]).index_add_(0, y, emb.float())
    return ClassPrototypes(torch.nn.functional.normalize(sums, dim=1), float(scale))


def load_teacher(path: Path) -> Teacher:
    """The teacher a `--cloud` path names: a hetero cloud checkpoint, or a cloud model or embedding file imported by
    `hetero cloud import`."""
    from hetero.training.table import EmbeddingTable, is_embedding_cloud

    loaded = load_manifest(path)  # read and sha256-verified once, handed to whichever teacher it is
    if is_imported_cloud(loaded[0]):
        return ImportedCloudTeacher(path, loaded=loaded)
    if is_embedding_cloud(loaded[0]):
        return EmbeddingTable(path, loaded)
    return CheckpointTeacher.load(path, loaded)
