"""Your own data and your own cloud: image folders and manifests, imported ONNX/TorchScript clouds, prototype BCT."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetero.config import DataConfig, load_config, override
from hetero.data.datasets import load_split
from hetero.data.folder import decode, load_images, scan
from hetero.errors import ConfigError, InputError
from hetero.manifest import load_manifest
from hetero.training.cloud import (
    ImportedCloudTeacher,
    Preprocessing,
    import_cloud,
    prototypes_from_embeddings,
    require_imported_cloud,
)
from tests.conftest import run_cli


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def _folder(root: Path, classes: int = 4, per_class: int = 3, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            _png(root / f"c{c}" / f"{i}.png", rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8))
    return root


# ---- decoding: the camera rule, every mode --------------------------------------------------------------------------


def test_decode_scales_the_shorter_side_and_crops_the_centre(tmp_path: Path) -> None:
    """A 32x64 frame: left and right quarters red/blue, centre green; at 16 px only the centre (green) survives."""
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :16] = (255, 0, 0)
    a[:, 16:48] = (0, 255, 0)
    a[:, 48:] = (0, 0, 255)
    _png(tmp_path / "wide.png", a)
    out = decode(tmp_path / "wide.png", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[:, 1:-1] == (0, 255, 0)).all()  # the crop holds the centre only (edges: bilinear blend)


def test_decode_modes_to_rgb(tmp_path: Path) -> None:
    """16-bit gray is scaled (not clipped), transparency becomes white, CMYK and gray become RGB."""
    sixteen = np.full((8, 8), 32768, np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    assert np.allclose(decode(tmp_path / "g16.png", 8), 128, atol=1)
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    _png(tmp_path / "t.png", rgba, "RGBA")
    assert (decode(tmp_path / "t.png", 8) == 255).all()
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert decode(tmp_path / "c.jpg", 8).mean() > 250  # no ink = white
    Image.new("L", (8, 8), 40).save(tmp_path / "l.png")
    assert (decode(tmp_path / "l.png", 8) == 40).all()


def test_folder_counts_and_lists_bad_images_and_fails_past_the_limit(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", classes=3, per_class=10)
    (root / "c0" / "broken.jpg").write_bytes(b"not an image")
    os.symlink("loop_b.png", root / "c1" / "loop_a.png")
    os.symlink("loop_a.png", root / "c1" / "loop_b.png")
    os.symlink(root / "c2", root / "c2" / "dir_loop")  # a directory link loop: never followed
    with pytest.raises(InputError, match=r"3 of 33 images cannot be decoded .*broken\.jpg"):
        load_images(root, 8, max_bad_fraction=0.05, cache_dir=tmp_path / "cache", progress=False)
    d = load_images(root, 8, max_bad_fraction=0.1, cache_dir=tmp_path / "cache", progress=False)
    assert d.images.shape == (30, 8, 8, 3) and d.source_images == 33
    assert {Path(p).name for p, _ in d.skipped} == {"broken.jpg", "loop_a.png", "loop_b.png"}
    assert d.class_names == ("c0", "c1", "c2") and np.bincount(d.labels).tolist() == [10, 10, 10]
    assert d.ids[0] == "c0/0.png"


def test_folder_cache_is_reused_and_invalidated_by_a_changed_file(tmp_path: Path, monkeypatch) -> None:
    root = _folder(tmp_path / "imgs")
    first = load_images(root, 8, cache_dir=tmp_path / "cache", progress=False)
    import hetero.data.folder as folder

    monkeypatch.setattr(folder, "decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_images(root, 8, cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(first.images, again.images) and isinstance(again.images, np.memmap)
    monkeypatch.undo()
    _png(root / "c0" / "0.png", np.zeros((12, 12, 3), np.uint8))
    os.utime(root / "c0" / "0.png", ns=(1, 1))
    changed = load_images(root, 8, cache_dir=tmp_path / "cache", progress=False)
    assert (changed.images[0] == 0).all() and not (first.images[0] == 0).all()


def test_a_folder_split_stays_on_disk(tmp_path: Path, monkeypatch) -> None:
    """Train, query and gallery of a decoded folder are memory-mapped row files beside the cache (never copies in
    RAM), hold exactly the rows a plain in-memory split would, and are written once."""
    monkeypatch.setenv("HETERO_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig(dataset="folder", path=str(_folder(tmp_path / "imgs", classes=6)), image_size=8, heldout_classes=2)
    whole = load_images(Path(cfg.path), 8, progress=False)
    s = load_split(cfg)
    for part in (s.train, s.query, s.gallery):
        assert isinstance(part.images, np.memmap) and Path(part.images.filename).parent == tmp_path / "cache" / "images"
        rows = [int(np.flatnonzero(whole.ids == i)[0]) for i in part.ids]
        assert np.array_equal(part.images, whole.images[rows])
    files = sorted((tmp_path / "cache" / "images").iterdir())
    load_split(cfg)
    assert sorted((tmp_path / "cache" / "images").iterdir()) == files  # the same rows: the same files, reused


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: r.mkdir(), "no class folders"),
        (lambda r: (r / "a").mkdir(parents=True), "hold no images"),
        (lambda r: None, "not found"),
    ],
)
def test_empty_or_missing_sources_are_one_line(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "src"
    setup(root)
    with pytest.raises(InputError, match=message):
        scan(root)


# ---- manifests, roles, domains, splits ------------------------------------------------------------------------------


def _manifest_rows(root: Path) -> list[dict]:
    rows = []
    for c in range(5):
        for i, domain in enumerate(["phone", "catalogue", "catalogue"]):
            p = root / f"img_{c}_{i}.png"
            _png(p, np.full((10, 10, 3), 40 * c + i, np.uint8))
            rows.append({"path": p.name, "label": f"sku{c}", "domain": domain})
    return rows


def test_jsonl_manifest_domains_give_a_cross_domain_split(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path)
    (tmp_path / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(
        dataset="folder", path=str(tmp_path / "images.jsonl"), image_size=8, heldout_classes=2,
        query_style="phone", gallery_style="catalogue",
    )  # fmt: skip
    s = load_split(cfg)
    assert len(s.query) == 2 and len(s.gallery) == 4  # one phone shot per held-out SKU; its two catalogue images
    assert set(s.query.labels) == set(s.gallery.labels) == set(s.heldout_classes)
    assert s.query.ids is not None and all(i.endswith("_0.png") for i in s.query.ids)


def test_csv_manifest_roles_are_honoured(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path)
    for r in rows:
        r["role"] = "query" if r["domain"] == "phone" else "gallery"
        del r["domain"]
    lines = ["path,label,role"] + [f"{r['path']},{r['label']},{r['role']}" for r in rows]
    (tmp_path / "images.csv").write_text("\n".join(lines) + "\n")
    s = load_split(DataConfig(dataset="folder", path=str(tmp_path / "images.csv"), image_size=8, heldout_classes=2))
    assert (s.query.roles == "query").all() and (s.gallery.roles == "gallery").all()
    assert len(s.query) == 2 and len(s.gallery) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label,colour\na.png,x,red\n", "unknown column 'colour'"),
        ("path,label\na.png,x\na.png,y\n", "repeats line 2"),
        ("path,label,role\na.png,x,probe\n", "role must be query, gallery"),
        ("path,label\n,x\n", "needs a path and a label"),
        ("path,label\n", "lists no images"),
    ],
)
def test_bad_manifests_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        scan(tmp_path / "m.csv")


def test_single_image_classes_are_never_held_out(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", classes=6, per_class=3)
    for c in range(3):  # three classes keep one image: no query/gallery pair
        for i in (1, 2):
            (root / f"c{c}" / f"{i}.png").unlink()
    for seed in range(5):
        cfg = DataConfig(dataset="folder", path=str(root), image_size=8, heldout_classes=3, seed=seed)
        s = load_split(cfg)
        assert set(s.heldout_classes) == {3, 4, 5}
        assert set(s.query.labels) == set(s.gallery.labels) == {3, 4, 5}  # every held-out class: query and gallery
    with pytest.raises(InputError, match="only 3 of 6 classes can give both"):
        load_split(DataConfig(dataset="folder", path=str(root), image_size=8, heldout_classes=4))


def test_folder_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="read only by dataset"):
        DataConfig(dataset="digits", path="x")
    with pytest.raises(ConfigError, match="max_bad_fraction"):
        DataConfig(dataset="folder", path="x", max_bad_fraction=1.5)
    with pytest.raises(InputError, match=r"needs data\.path"):
        load_split(DataConfig(dataset="folder"))


# ---- an imported cloud ----------------------------------------------------------------------------------------------


class PlainNet(torch.nn.Module):
    """A cloud 'hetero did not write': plain torch, its own normalisation convention (unit output optional)."""

    def __init__(self, unit: bool = True, nhwc: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.unit, self.nhwc = unit, nhwc
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(16, 16),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x.permute(0, 3, 1, 2) if self.nhwc else x)
        return torch.nn.functional.normalize(y, dim=1) if self.unit else y


def _export(net: torch.nn.Module, path: Path, shape: tuple[int, ...], dynamic: bool = True) -> Path:
    import warnings

    kw = {"dynamic_axes": {"x": {0: "n"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the TorchScript exporter's constant-folding notes
        torch.onnx.export(net.eval(), (torch.rand(shape),), str(path), dynamo=False, input_names=["x"], **kw)
    return path


def _reference(net: PlainNet, pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    x = torch.from_numpy(pixels).float() / 255
    if pre.channel_order == "BGR":
        x = x.flip(-1)
    x = (x - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    if not net.nhwc:
        x = x.permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.nn.functional.normalize(net(x), dim=1).numpy()


@pytest.mark.parametrize(
    ("channel_order", "layout", "unit", "fmt"),
    [("RGB", "NCHW", True, "onnx"), ("BGR", "NHWC", False, "onnx"), ("RGB", "NCHW", True, "torchscript")],
)
def test_imported_cloud_computes_the_users_function(
    tmp_path: Path, channel_order: str, layout: str, unit: bool, fmt: str
) -> None:
    """Pixels in, the user's preprocessing and network inside, the same numbers as running it in torch."""
    net = PlainNet(unit=unit, nhwc=layout == "NHWC")
    pre = Preprocessing(20, 20, (0.1, 0.2, 0.3), (0.5, 0.25, 0.2), channel_order, layout)
    shape = (1, 3, 20, 20) if layout == "NCHW" else (1, 20, 20, 3)
    if fmt == "onnx":
        src = _export(net, tmp_path / "cloud.onnx", shape)
    else:
        src = tmp_path / "cloud.pt"
        torch.jit.trace(net.eval(), torch.rand(shape)).save(str(src))
    m = import_cloud(src, tmp_path / "unit", pre, normalize=not unit)
    from hetero.io import sha256_path

    assert m.space.id == f"cloud@{sha256_path(src)[:12]}" and m.space.dim == 16
    if channel_order == "BGR":  # the unit's contract is RGB pixels: the declared BGR statistics, reordered
        assert m.input.mean == (0.3, 0.2, 0.1)
    pixels = np.random.default_rng(3).integers(0, 256, (7, 20, 20, 3), dtype=np.uint8)
    got = ImportedCloudTeacher(tmp_path / "unit").embed_pixels(pixels)
    np.testing.assert_allclose(got, _reference(net, pixels, pre), atol=2e-6)


def test_import_refuses_a_non_unit_output_and_writes_nothing(tmp_path: Path, capsys) -> None:
    src = _export(PlainNet(unit=False), tmp_path / "raw.onnx", (1, 3, 20, 20))
    code = run_cli("cloud", "import", src, "--size", "20", "--out", tmp_path / "unit")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not unit length" in err[0] and "--normalize" in err[0]
    assert not (tmp_path / "unit").exists() and not list(tmp_path.glob(".unit*"))
    code = run_cli("cloud", "import", src, "--size", "24", "--normalize", "--out", tmp_path / "unit")
    assert code == 2 and "declared preprocessing gives [3, 24, 24]" in capsys.readouterr().err


class GreyNet(torch.nn.Module):
    """An MNIST-style cloud: one input channel."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(8, 12),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.body(x), dim=1)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_grey_scale_cloud_imports_and_computes_luma_then_its_normalisation(tmp_path: Path, capsys, fmt) -> None:
    net = GreyNet().eval()
    if fmt == "onnx":
        src = _export(net, tmp_path / "grey.onnx", (1, 1, 28, 28))
    else:
        src = tmp_path / "grey.pt"
        torch.jit.trace(net, torch.rand(1, 1, 28, 28)).save(str(src))
    # As a newcomer first tries it: three channels (the default) is refused with the fix named.
    assert run_cli("cloud", "import", src, "--size", "28", "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "--channels" in err, err
    argv = ("cloud", "import", src, "--size", "28", "--channels", "1", "--out", tmp_path / "unit")
    assert run_cli(*argv, "--mean", "0.1307", "--std", "0.3081", "--quiet") == 0
    m = load_manifest(tmp_path / "unit")[0]
    assert m.space.dim == 12 and m.input.mean == (0.1307,) * 3  # the edge's three channels, each as the grey one
    pixels = np.random.default_rng(5).integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    grey = torch.from_numpy(pixels).float() @ torch.tensor([0.299, 0.587, 0.114])
    x = ((grey / 255 - 0.1307) / 0.3081).unsqueeze(1)
    with torch.no_grad():
        want = net(x).numpy()
    got = ImportedCloudTeacher(tmp_path / "unit").embed_pixels(pixels)
    np.testing.assert_allclose(got, want, atol=3e-6)
    assert run_cli("cloud", "import", src, "--size", "28", "--channels", "1", "--out", tmp_path / "y") == 2
    assert "needs --mean" in capsys.readouterr().err


def test_a_fixed_batch_export_is_made_batchable(tmp_path: Path) -> None:
    src = _export(PlainNet(), tmp_path / "fixed.onnx", (1, 3, 20, 20), dynamic=False)
    import_cloud(src, tmp_path / "unit", Preprocessing(20, 20))
    out = ImportedCloudTeacher(tmp_path / "unit").embed_pixels(np.zeros((5, 20, 20, 3), np.uint8))
    assert out.shape == (5, 16)


def test_a_manifest_edited_to_claim_another_space_is_refused(tmp_path: Path) -> None:
    """The space id is stamped inside the hashed graph: editing the manifest (and its sha) cannot move the unit."""
    src = _export(PlainNet(), tmp_path / "cloud.onnx", (1, 3, 20, 20))
    import_cloud(src, tmp_path / "unit", Preprocessing(20, 20))
    mpath = tmp_path / "unit" / "manifest.json"
    doc = json.loads(mpath.read_text())
    doc["space"]["id"] = "catalogue@" + "0" * 12
    doc["source"]["model_sha256"] = "0" * 64
    mpath.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not the one this imported model was wrapped for"):
        require_imported_cloud(tmp_path / "unit")


def test_prototypes_are_normalised_class_means() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    protos = prototypes_from_embeddings(emb, torch.tensor([0, 0, 1, -1]), scale=10.0)
    s = 2**-0.5
    torch.testing.assert_close(protos.weight, torch.tensor([[s, s], [0.0, 1.0]]))
    assert protos.scale == 10.0


def test_edge_trains_into_an_imported_cloud_from_a_folder(tmp_path: Path) -> None:
    """The whole chain on the user's inputs: digits written as a folder, a plain-torch ONNX cloud with no
    classifier, a BCT (prototypes) + regression edge, verified against the cloud gallery."""
    from sklearn.datasets import load_digits

    from hetero.pipeline import verify
    from hetero.training.train import train

    d = load_digits()
    root = tmp_path / "digits"
    for i, (img, y) in enumerate(zip(d.images[:600], d.target[:600], strict=True)):
        _png(root / f"digit_{y}" / f"{i}.png", np.repeat((img / 16 * 255).astype(np.uint8)[..., None], 3, -1))
    src = _export(PlainNet(), tmp_path / "cloud.onnx", (1, 3, 16, 16))
    import_cloud(src, tmp_path / "cloud", Preprocessing(16, 16))
    weights = {"classification": 1.0, "bct": 1.0, "regression_cosine": 1.0}
    cfg = override(
        load_config(),
        data={"dataset": "folder", "path": str(root), "image_size": 16},
        edge={"epochs": 20, "batch_size": 32, "resolution": 0, "loss_weights": weights},
    )
    m = train("edge", cfg, tmp_path / "edge", cloud=tmp_path / "cloud", progress=False).manifest
    assert (
        m.space.id.startswith("cloud@")
        and m.source["cloud_sha256"] == json.loads((tmp_path / "cloud" / "manifest.json").read_text())["sha256"]
    )
    result = verify(cfg, tmp_path / "cloud", [f"edge={tmp_path / 'edge'}"])
    from hetero.devices.loader import load

    rows = {r.kind: r for r in result.report.rows}
    assert rows["reference"].gallery == rows["candidate"].gallery == "cloud"
    # The edge reproduces the cloud on held-out images (never trained on), far beyond an untrained edge's agreement.
    held = load_split(cfg.data).query.images
    cloud_emb = ImportedCloudTeacher(tmp_path / "cloud").embed_pixels(np.asarray(held))
    cos = (load(tmp_path / "edge").embed(np.asarray(held)) * cloud_emb).sum(1)
    print(f"edge-cloud cosine mean {cos.mean():.3f}, R@1 {rows['candidate'].recall_at_1:.3f}")
    assert cos.mean() > 0.7  # an untrained edge: about 0 (its own random space)


def test_the_readme_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    """docs/examples/own_data.sh as the README shows it (fewer epochs): folder + foreign ONNX cloud -> import,
    train, export, verify, embed + index, all through the CLI."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path / "own"), "EPOCHS": "3"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the test's interpreter, wherever its venv is
    done = subprocess.run(["sh", "docs/examples/own_data.sh"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "own" / "report.json").read_text())
    assert report["space"]["id"].startswith("catalogue@") and {r["runtime"] for r in report["rows"]} >= {
        "onnxruntime",
        "litert",
    }
    gallery = json.loads((tmp_path / "own" / "gallery" / "embeddings.json").read_text())
    assert gallery["rows"] == 1797 and gallery["index"]["factory"] == "Flat"


def test_a_cloud_trained_before_new_data_keys_still_matches(tiny) -> None:
    """Data keys added later (path, max_bad_fraction) were at their defaults for an older cloud: still the same data."""
    from hetero.models.checkpoint import load_checkpoint
    from hetero.training.start import require_cloud_matches as _require_cloud_matches

    cfg = load_config(tiny.config)
    _, m = load_checkpoint(tiny.cloud)
    split = load_split(cfg.data)
    old = {k: v for k, v in m.extra["data"].items() if k not in ("path", "max_bad_fraction")}
    m.extra["data"] = old
    _require_cloud_matches(m, cfg, split)  # accepted
    m.extra["data"] = {**old, "seed": old["seed"] + 1}
    with pytest.raises(InputError, match="different data config"):
        _require_cloud_matches(m, cfg, split)


class RealFamilyNet(torch.nn.Module):
    """What a team exports from its own code: a real-family network (EfficientNet-Lite0 at half width, ImageNet
    weights) on normalised float NCHW input, its own resize to the compute size inside, raw (unnormalised) output."""

    def __init__(self, model: torch.nn.Module, compute: int):
        super().__init__()
        self.model, self.compute = model.eval(), compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=(self.compute, self.compute), mode="bilinear", align_corners=False)
        return self.model.head(self.model.forward_features(x))


def test_a_real_family_cloud_imports_and_computes_what_torch_does(lite_edge, tmp_path: Path) -> None:
    """The imported path on the model family we ship, on real digits: the unit's embeddings match torch running the
    user's network with the declared preprocessing and L2, and retrieval among them is the torch ranking's."""
    from hetero.models.checkpoint import load_checkpoint
    from hetero.release.metrics import retrieval_metrics
    from tests.conftest import LITE_RES, LITE_SIZE

    root, data = lite_edge
    model, _ = load_checkpoint(root / "edge")
    net = RealFamilyNet(model, LITE_RES)
    src = _export(net, tmp_path / "lite.onnx", (1, 3, LITE_SIZE, LITE_SIZE))
    pre = Preprocessing(LITE_SIZE, LITE_SIZE)  # ImageNet mean/std, RGB, NCHW
    import_cloud(src, tmp_path / "cloud", pre, name="lite", normalize=True)
    teacher = ImportedCloudTeacher(tmp_path / "cloud")

    def torch_side(pixels: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(pixels).float() / 255 - torch.tensor(pre.mean)) / torch.tensor(pre.std)
        with torch.no_grad():
            return torch.nn.functional.normalize(net(x.permute(0, 3, 1, 2)), dim=1).numpy()

    q, g = data.query, data.gallery
    got = [teacher.embed_pixels(s.images) for s in (q, g)]
    want = [torch_side(s.images) for s in (q, g)]
    cos = np.concatenate([(a * b).sum(axis=1) for a, b in zip(got, want, strict=True)])
    assert cos.min() > 0.99999, cos.min()
    r_got = retrieval_metrics(got[0], q.labels, got[1], g.labels)["recall_at_1"]
    r_want = retrieval_metrics(want[0], q.labels, want[1], g.labels)["recall_at_1"]
    assert r_got == pytest.approx(r_want, abs=2 / len(q.labels)) and r_want > 0.3  # a real ranking, not chance
