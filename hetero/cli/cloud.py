"""`hetero cloud`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import emit, pixel_size
from hetero.errors import InputError


def run(args: argparse.Namespace) -> int:
    """Import the user's cloud model (ONNX or TorchScript) or its embedding file as a cloud unit."""
    from hetero.training.cloud import Preprocessing, import_cloud
    from hetero.training.table import import_embeddings, is_embedding_file

    def numbers(text: str | None, what: str, default: tuple[float, ...]) -> tuple[float, ...]:
        if text is None:
            if args.channels == 1:
                raise InputError(
                    f"a grey-scale network (--channels 1) needs --{what}: one number, e.g. MNIST's "
                    f"{'0.1307' if what == 'mean' else '0.3081'}"
                )
            return default
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"--{what} takes comma-separated numbers (one per channel), got {text!r}") from None

    height, width = args.size
    table = is_embedding_file(args.model)
    if table and (args.channel_order or args.layout or args.channels != 3):
        raise InputError(
            "--channels, --channel-order and --layout describe a model's input; an embedding file has no model"
        )
    pre = Preprocessing(
        height,
        width,
        numbers(args.mean, "mean", (0.485, 0.456, 0.406)),
        numbers(args.std, "std", (0.229, 0.224, 0.225)),
        args.channel_order or "RGB",
        args.layout or "NCHW",
        args.channels,
    )
    if table:
        m = import_embeddings(args.model, args.out, pre.input_spec(), name=args.name, normalize=args.normalize)
        what = f"{m.model['rows']} stored embeddings, edges take {height}x{width} RGB uint8"
    else:
        m = import_cloud(args.model, args.out, pre, name=args.name, normalize=args.normalize)
        grey = ", turned grey in the graph" if args.channels == 1 else ""
        what = f"input {height}x{width} RGB uint8{grey}{', L2 in the graph' if args.normalize else ''}"
    emit(
        args,
        {"path": str(args.out), "space": m.space.to_dict(), "sha256": m.sha256, "source": m.source},
        f"cloud -> {args.out}  (space {m.space.id}, dim {m.space.dim}, {what})",
    )
    return 0


def register(add) -> None:
    cl = add(
        "cloud",
        "import your own cloud model (ONNX or TorchScript) or only its embeddings as the space's cloud",
        "Wrap a cloud model hetero did not train in the unit contract (uint8 RGB pixels in, your declared\n"
        "preprocessing inside the graph, unit-length embedding out) and write it as a cloud unit whose space id is\n"
        "the sha256 of your file. Then `train edge --cloud`, `verify`, `fixture create` and `check --cloud` take\n"
        "it like a hetero cloud checkpoint; BCT uses class prototypes from its embeddings (it has no classifier).\n"
        "The model is run on probe images first: a fixed batch axis, a wrong input size or an output that is not\n"
        "unit length (without --normalize) is refused and nothing is written.\n\n"
        "Only the cloud's embeddings? Import the file instead (.npz: arrays ids + embeddings; .safetensors: an\n"
        "embeddings tensor, ids in an integer tensor or as a JSON list in the metadata; .parquet: columns id,\n"
        "embedding). Ids are your images' ids (a folder's relative paths, a manifest's id column); --size and\n"
        "--mean/--std then declare the pixels and normalisation an edge of this space takes. Every image a run\n"
        "uses must have a row; training uses each image's stored row (one clean view: cloud_views = 1, mix = 0).",
        "examples:\n  hetero cloud import catalogue.onnx --size 224 --normalize --out runs/shop/cloud\n"
        "  hetero cloud import net.pt --size 96 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --out runs/x/cloud\n"
        "  # a network that takes 0..255 floats: --mean 0,0,0 --std 0.00392157,0.00392157,0.00392157\n"
        "  hetero cloud import mnist_net.onnx --size 28 --channels 1 --mean 0.1307 --std 0.3081 --out runs/g/cloud\n"
        "  hetero cloud import catalogue_embeddings.parquet --size 224 --out runs/shop/cloud",
    )
    cl.add_argument("action", choices=["import"])
    cl.add_argument(
        "model",
        type=Path,
        help="the cloud model (.onnx, TorchScript .pt/.ts) or its embeddings (.npz/.safetensors/.parquet)",
    )
    cl.add_argument("--out", type=Path, required=True, help="unit directory to write")
    cl.add_argument(
        "--size", type=pixel_size, required=True, metavar="PX|HxW", help="the network's input size, e.g. 224 or 256x192"
    )
    cl.add_argument("--mean", help="per channel, on x/255 (default: ImageNet's 0.485,0.456,0.406)")
    cl.add_argument("--std", help="per channel, on x/255 (default: ImageNet's 0.229,0.224,0.225)")
    cl.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        default=3,
        help="the network's input channels: 1 for a grey-scale network (the graph computes luma from the RGB "
        "pixels; give one --mean and --std), 3 for colour (default)",
    )
    cl.add_argument("--channel-order", choices=["RGB", "BGR"], help="the network's channel order (default RGB)")
    cl.add_argument("--layout", choices=["NCHW", "NHWC"], help="the network's float input layout (default NCHW)")
    cl.add_argument(
        "--normalize", action="store_true", help="L2-normalise the output inside the graph (or the stored rows)"
    )
    cl.add_argument("--name", default="", help="space name (default: the file's stem)")
    cl.set_defaults(func=run)
