"""Stand-ins for what a team already has: a folder of labelled images and a cloud model hetero did not write.

    python docs/examples/own_data.py runs/own
writes runs/own/images/<class>/<n>.png (sklearn's 1,797 digits as 32 px photos, one folder per class) and
runs/own/catalogue.onnx: a small CNN built and trained in plain PyTorch on six of the classes, exported with
torch.onnx, its output not normalised — as a cloud team would hand it over. Everything after this uses only the
hetero CLI (docs/examples/own_data.sh).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits


class CatalogueNet(torch.nn.Module):
    """The 'production cloud': conv features and a 16-d embedding head, ImageNet-normalised NCHW input."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )  # fmt: skip
        self.embed = torch.nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))


def main(out: Path) -> None:
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        path = out / "images" / f"digit_{label}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img / 16 * 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR).save(path)

    torch.manual_seed(0)
    known = digits.target < 6  # the cloud team trained on the classes it knew
    x = torch.from_numpy(np.stack([digits.images[known] / 16] * 3, 1)).float()
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear")
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    y = torch.from_numpy(digits.target[known])
    net, head = CatalogueNet(), torch.nn.Linear(16, 6)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], 3e-3)
    for _ in range(15):
        for idx in torch.randperm(len(x)).split(64):
            emb = torch.nn.functional.normalize(net(x[idx]), dim=1)
            loss = torch.nn.functional.cross_entropy(16 * head(emb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.onnx.export(
        net.eval(), (x[:1],), str(out / "catalogue.onnx"), dynamo=False,
        input_names=["pixels"], output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}},
    )  # fmt: skip
    print(f"wrote {out}/images/ ({len(digits.target)} images, 10 classes) and {out}/catalogue.onnx")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/own"))
