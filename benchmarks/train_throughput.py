"""Does augmentation keep up? Training images/s of the emoji edge: hetero's loop with augmentation against a plain
PyTorch loop without any, same model, batch, optimiser and threads.

    .venv/bin/python benchmarks/train_throughput.py --cloud runs/e/cloud     # ~5 min on 2 cores
Writes benchmarks/results/train_throughput.{json,md}.

Arms, each 2 epochs from the same initial weights, the second epoch timed (the first warms allocators and caches),
`--repeats` times in rotating order (shared, noisy machine: read the ratios of medians):
- plain: `for idx in batches: loss = CE(model(preprocess(pixels[idx]))); step` — no augmentation;
- hetero, augmented: `fit` with the classification objective and random affine views (augment = true, no mixup);
- hetero, emoji recipe: `fit` with classification + BCT + cosine regression on 4 cached cloud views with mixup 0.5
  (the cloud cache built once beforehand, not timed);
- two-pass render: the augmented arm with the previous view rendering (resize, then a second resample for the
  affine transform; blends resized twice), kept to show what the single-pass rendering saved.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from emoji_setup import emoji_run

import hetero.training.targets as targets_module
from hetero.config import override
from hetero.models.registry import Preprocess, create_model
from hetero.training.cloud import load_teacher
from hetero.training.loop import TrainStep, fit
from hetero.training.losses import build_objective
from hetero.training.targets import cloud_targets


def _model(cfg, n_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    e = cfg.edge
    return create_model(e.model, embed_dim=cfg.space.dim, num_classes=n_classes, scale=e.scale,
                        resolution=e.resolution or None, pretrained=e.pretrained)  # fmt: skip


def plain_epoch_seconds(cfg, split, spec) -> float:
    """The obvious loop, no augmentation: seconds of its second epoch."""
    model = _model(cfg, split.num_train_classes).train()
    step = TrainStep(model)
    pre = Preprocess(spec, model.resolution)
    x_all, y_all = torch.from_numpy(split.train.images), torch.from_numpy(split.train.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.edge.lr, weight_decay=cfg.edge.weight_decay)
    gen = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(x_all), generator=gen).split(cfg.edge.batch_size):
            if len(idx) < 2:
                continue
            _, _, logits = step(pre(x_all[idx]))
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - t0)
    return seconds[-1]


def fit_epoch_seconds(cfg, split, spec, weights: dict, targets=None) -> float:
    model = _model(cfg, split.num_train_classes)
    history = fit(model, build_objective(weights, None), split.train, cfg.edge, spec, targets=targets, progress=False)
    return float(history[-1]["seconds"])


def two_pass_render(pre, pixels, idx, views):
    """The rendering before single-pass views: preprocess (with resize) each image, blend, then resample again."""
    x = pre(pixels[idx])
    if views.blended:
        lam = views.lam.view(-1, 1, 1, 1)
        x = lam * x + (1 - lam) * pre(pixels[views.partner])
    return targets_module.apply_affine(x, views.affine) if bool(views.affine.any()) else x


def main() -> None:
    run = emoji_run(__doc__, "train-throughput-", lambda ap: ap.add_argument("--repeats", type=int, default=3))
    args, cfg, split = run.args, run.cfg, run.split
    cfg = override(cfg, edge={"epochs": 2, "augment": True})
    teacher = load_teacher(args.cloud)
    spec = teacher.input
    cls = {"classification": 1.0}
    recipe = {"classification": 1.0, "bct": 1.0, "regression_cosine": 1.0}
    # the recipe's cloud cache, built once (untimed) exactly as train() builds it
    targets, _ = cloud_targets(teacher, teacher.sha256, split.train, spec, views=4, seed=cfg.edge.seed,
                               augment=True, mix=0.5, progress=False)  # fmt: skip

    def recipe_seconds() -> float:
        model = _model(cfg, split.num_train_classes)
        history = fit(model, build_objective(recipe, teacher), split.train, override(cfg, edge={"mix": 0.5}).edge,
                      spec, targets=targets, progress=False)  # fmt: skip
        return float(history[-1]["seconds"])

    def two_pass_seconds() -> float:
        saved = targets_module.render
        import hetero.training.train as train_module

        train_module.render = two_pass_render
        try:
            return fit_epoch_seconds(cfg, split, spec, cls)
        finally:
            train_module.render = saved

    arms = {
        "plain, no augmentation": lambda: plain_epoch_seconds(cfg, split, spec),
        "hetero, augmented": lambda: fit_epoch_seconds(cfg, split, spec, cls),
        "hetero, emoji recipe (4 cached views, mixup)": recipe_seconds,
        "two-pass render, augmented": two_pass_seconds,
    }
    names = list(arms)
    seconds: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            seconds[k].append(arms[k]())
            print(f"repeat {r + 1}: {k}: {seconds[k][-1]:.2f} s", flush=True)
    n = len(split.train)
    ips = {k: n / statistics.median(v) for k, v in seconds.items()}
    base = ips["plain, no augmentation"]
    doc = {"model": cfg.edge.model, "images": n, "batch": cfg.edge.batch_size, "threads": torch.get_num_threads(),
           "seconds": seconds, "images_per_s": ips, "ratio_to_plain": {k: v / base for k, v in ips.items()},
           "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    out: Path = args.out
    (out / "train_throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# Training throughput with augmentation: {cfg.edge.model} on emoji ({n} images, batch "
        f"{cfg.edge.batch_size}, {doc['threads']} threads)",
        "",
        f"Produced by `benchmarks/train_throughput.py` on {doc['date']}: second-epoch time of each arm, median of "
        f"{args.repeats} rotating repeats. Target: augmented ≥ 0.9× the plain loop without augmentation.",
        "",
        "| arm | epoch s (each repeat) | images/s | × plain |",
        "|---|---|---|---|",
        *(f"| {k} | {', '.join(f'{s:.2f}' for s in seconds[k])} | {ips[k]:.0f} | {ips[k] / base:.2f} |" for k in names),
    ]
    (out / "train_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
