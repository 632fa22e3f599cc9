"""``glyphs``: 100 classes of characters rendered from the TrueType fonts inside matplotlib's wheel.

An embedded, CIFAR-100-shaped image set (RGB 32 x 32, 100 classes, 500 training and 100 test
images per class by default) that needs no download: a CPU-scale stand-in for CIFAR-100 in
class-incremental protocols, not a replacement for it (glyphs are simpler, flat and
synthetic).

How an image is made (every draw from a NumPy generator seeded by ``(seed, split, class, index)``, so
an image depends neither on how many are rendered nor on how the work is cut into processes):

1. The class's character is rasterised once per font by matplotlib's FreeType
   (``matplotlib.ft2font``, unhinted, anti-aliased) at 64 px per em on a 128 x 128 canvas,
   horizontally centred on its ink and with its baseline 0.35 em below the canvas centre
   (so capitals and digits are centred, descenders hang low, as in text). Its stroke is
   thinned or thickened by grey erosion / dilation (``stroke_weights``, in canvas pixels).
2. Per image: a font (uniformly among the fonts that have the character, see
   :data:`GLYPHS` and :func:`fonts_for`), a stroke weight, a size (em as a fraction of the
   image side), a rotation, a shear and a translation. The inverse affine map samples the
   canvas bilinearly on a grid twice the image resolution, averaged 2 x 2 (anti-aliasing).
3. Foreground and background colours uniform in RGB, redrawn until their luma (Rec. 601)
   differs by at least ``min_contrast``; pixel = bg + coverage * (fg - bg), rounded to uint8.

All arithmetic after the rasterisation is float64 NumPy (IEEE, no BLAS), and matplotlib ships
its own FreeType build, so one seed gives the same bytes on every machine with the same
matplotlib (a test pins a hash). The rendering is cached under ``root`` in a file whose name
holds a hash of every parameter, of the font files and of the FreeType version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_all_start_methods, get_context

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from framework.data.base import ImageDataModule, InMemoryDataset, stratified_split
from framework.data.vision import uint8_to_unit_range
from framework.errors import ConfigError
from framework.io import write_atomic
from registry import register

__all__ = ["FONTS", "GLYPHS", "GlyphsDataModule", "fonts_for", "render_class"]

RENDER_VERSION = 1  # bump when the rendering changes: it is part of the cache key

# Font files (without .ttf) of matplotlib's mpl-data/fonts/ttf used by default: 4 families x 4
# styles, and 5 Computer Modern faces (roman, bold, sans, text italic, typewriter).
FONTS: tuple[str, ...] = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
    "cmr10", "cmb10", "cmss10", "cmti10", "cmtt10",
)  # fmt: skip

# The 100 classes, in label order. Left out on purpose, because some font draws them like a
# kept class (up to size and position, which vary per image): 0 1 O o l | (vs each other and
# I), the lower case of c k o p s u v w x z (same shape as the capital), Greek iota kappa nu
# omicron rho final-sigma upsilon chi (like i k v o p c u x), x-like multiplication sign,
# hyphen (minus-like), ( ) (like C), the integral (italic f), partial (delta), element-of
# (epsilon), cup / cap (U / n), apostrophe (comma), up / down arrows, backslash, caret, double dagger.
GLYPHS: tuple[str, ...] = tuple(
    "23456789"  # 8 digits
    "ABCDEFGHIJKLMNPQRSTUVWXYZ"  # 25 capitals (no O)
    "abdefghijmnqrty"  # 15 lower case whose shape differs from the capital's
    "αβγδεζηθλμξπστφψω"  # 17 Greek lower case
    "+=÷<>%&@#$?!*§¶©®€£¥¢∞√∇≈≠≤≥±†~/¬→←"  # 35 symbols
)
_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

CANVAS = 128  # rasterisation canvas side (px)
EM = 64  # rasterisation size: pixels per em
BASELINE = 0.35  # baseline this many em below the canvas centre


def _font_path(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", f"{name}.ttf")


@lru_cache(maxsize=None)
def _font(name: str):
    from matplotlib import ft2font

    path = _font_path(name)
    if not os.path.exists(path):
        raise ConfigError(f"glyphs: matplotlib has no font {name!r} ({path} is missing)")
    return ft2font.FT2Font(path)


def fonts_for(char: str, fonts: Sequence[str] = FONTS) -> list[str]:
    """The fonts of ``fonts`` that draw ``char``: those whose character map has it, and the
    Computer Modern faces (``cm*``, TeX-encoded: their symbol slots hold other glyphs) only
    for digits and Latin letters."""
    return [
        name
        for name in fonts
        if _font(name).get_char_index(ord(char)) != 0 and (not name.startswith("cm") or char in _ALPHANUMERIC)
    ]


def rasterize(char: str, font: str) -> np.ndarray:
    """Coverage (float64 in [0, 1], CANVAS x CANVAS) of ``char`` in ``font`` at EM px per em."""
    from matplotlib import ft2font

    face = _font(font)
    face.set_size(EM, 72)  # points at 72 dpi = pixels
    face.set_text(char, 0.0, flags=ft2font.LoadFlags.NO_HINTING)
    face.draw_glyphs_to_bitmap(antialiased=True)
    bitmap = np.asarray(face.get_image(), dtype=np.float64) / 255.0
    cols = np.nonzero(bitmap.max(0) > 0)[0]
    if len(cols) == 0:
        raise ConfigError(f"glyphs: font {font} draws nothing for {char!r}")
    baseline_row = bitmap.shape[0] - face.get_descent() / 64.0  # rows from the bitmap's top
    top = int(round(CANVAS / 2 + BASELINE * EM - baseline_row))
    left = int(round(CANVAS / 2 - (cols[0] + cols[-1] + 1) / 2))
    canvas = np.zeros((CANVAS, CANVAS))
    h, w = bitmap.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, CANVAS), min(left + w, CANVAS)
    canvas[y0:y1, x0:x1] = bitmap[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + radius  # 3x3 square for 1, a disk beyond


def stroke(canvas: np.ndarray, weight: int) -> np.ndarray:
    """Thicken (weight > 0: grey dilation) or thin (weight < 0: erosion) the strokes by ``|weight|`` px."""
    from scipy import ndimage

    if weight == 0:
        return canvas
    op = ndimage.grey_dilation if weight > 0 else ndimage.grey_erosion
    return op(canvas, footprint=_disk(abs(weight)), mode="constant", cval=0.0)


def _bilinear(canvas: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``canvas`` (K, S, S) at float pixel coordinates (K, ...), zero outside."""
    k = np.arange(len(canvas)).reshape((-1,) + (1,) * (rows.ndim - 1))
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    padded = np.pad(canvas, ((0, 0), (1, 1), (1, 1)))  # a zero border: taps just outside read 0
    out = np.zeros(rows.shape)
    size = canvas.shape[-1]
    for dr, dc, wgt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr, cc = np.clip(r0 + dr + 1, 0, size + 1), np.clip(c0 + dc + 1, 0, size + 1)
        out += wgt * padded[k, rr, cc]
    return out


def _draw(rng, fonts, weights, size_range, max_rotation, max_shear, max_translation, min_contrast, luma) -> tuple:
    """One image's font, stroke weight, size, rotation (cos, sin), shear, shift (2) and colours (3 + 3)."""
    font, weight = int(rng.integers(fonts)), int(rng.integers(weights))
    scale = rng.uniform(size_range[0], size_range[1])
    angle = math.radians(rng.uniform(-max_rotation, max_rotation))
    shear = rng.uniform(-max_shear, max_shear)
    shift = rng.uniform(-max_translation, max_translation, size=2)
    bg = rng.uniform(size=3)
    for _ in range(100):  # rejection: redraw the foreground until the contrast is enough
        fg = rng.uniform(size=3)
        if abs(float((fg - bg) @ luma)) >= min_contrast:
            break
    else:  # practically unreachable for min_contrast <= 0.5
        fg = np.zeros(3) if float(bg @ luma) > 0.5 else np.ones(3)
    # math's scalar cos / sin (the C library), not NumPy's vectorised ones, which differ by CPU.
    return font, weight, scale, math.cos(angle), math.sin(angle), shear, shift, bg, fg


def render_class(
    label: int,
    split: str,
    count: int,
    seed: int,
    image_size: int = 32,
    fonts: Sequence[str] = FONTS,
    size_range: Sequence[float] = (0.5, 0.85),
    max_rotation: float = 15.0,
    max_shear: float = 0.2,
    max_translation: float = 0.1,
    stroke_weights: Sequence[int] = (-1, 0, 1, 2),
    min_contrast: float = 0.3,
) -> np.ndarray:
    """``count`` images (uint8, N x S x S x 3) of class ``label`` of :data:`GLYPHS` for ``split``.

    Image i's draws come from ``np.random.default_rng([seed, split_id, label, i])`` (train 0,
    test 1): it does not depend on ``count`` or on how the rendering is split up.
    """
    char = GLYPHS[label]
    split_id = {"train": 0, "test": 1}[split]
    names = fonts_for(char, fonts)
    if not names:
        raise ConfigError(f"glyphs: no font of {list(fonts)} draws {char!r} (class {label})")
    luma = np.array([0.299, 0.587, 0.114])
    params = [_draw(np.random.default_rng([seed, split_id, label, i]), len(names), len(stroke_weights), size_range,
                    max_rotation, max_shear, max_translation, min_contrast, luma) for i in range(count)]  # fmt: skip
    font, weight = (np.array([p[j] for p in params], dtype=np.int64) for j in (0, 1))
    scale, cosine, sine, shear = (np.array([p[j] for p in params], dtype=np.float64) for j in (2, 3, 4, 5))
    shift, bg, fg = (np.array([p[j] for p in params], dtype=np.float64).reshape(count, -1) for j in (6, 7, 8))
    sources = {(f, w): stroke(rasterize(char, names[f]), int(stroke_weights[w])) for f, w in set(zip(font.tolist(), weight.tolist()))}

    # Output sample points (2x supersampled) in units of the image side, centred: u in (-0.5, 0.5).
    fine = 2 * image_size
    u = (np.arange(fine) + 0.5) / fine - 0.5
    uy, ux = np.meshgrid(u, u, indexing="ij")
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, count, 64):
        idx = np.arange(start, min(start + 64, count))
        # Forward map (glyph em units g -> image units): u = s R(angle) Shear(k) g + t; invert it.
        cos, sin, k, s = cosine[idx], sine[idx], shear[idx], scale[idx]
        dx, dy = ux[None] - shift[idx, 0, None, None], uy[None] - shift[idx, 1, None, None]
        # R^-1 (rotation by -angle), then Shear^-1 (x -= k y), then / s.
        rx = (cos[:, None, None] * dx + sin[:, None, None] * dy) / s[:, None, None]
        ry = (-sin[:, None, None] * dx + cos[:, None, None] * dy) / s[:, None, None]
        gx = rx - k[:, None, None] * ry
        gy = ry
        cols, rows = CANVAS / 2 + EM * gx - 0.5, CANVAS / 2 + EM * gy - 0.5
        canvas = np.stack([sources[(int(font[i]), int(weight[i]))] for i in idx])
        cover = _bilinear(canvas, rows, cols)
        cover = cover.reshape(len(idx), image_size, 2, image_size, 2).mean(axis=(2, 4))
        pixels = bg[idx, None, None, :] + cover[..., None] * (fg[idx] - bg[idx])[:, None, None, :]
        images[idx] = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    return images


def _render_task(args: tuple) -> tuple[int, np.ndarray, np.ndarray]:
    label, n_train, n_test, seed, kwargs = args
    return label, render_class(label, "train", n_train, seed, **kwargs), render_class(label, "test", n_test, seed, **kwargs)


def render_pool(workers: int) -> ProcessPoolExecutor:
    """The worker processes of :func:`render`, each with its own open fonts."""
    # fork (Linux): the workers start at once, without importing torch again (they use NumPy only).
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    # A forked worker would inherit the parent's open FT2Font faces, whose font files share one
    # read offset with the parent and the other workers: concurrent glyph loads then read each
    # other's bytes (a wrong glyph, or "failed to load glyph"). Each worker opens its own.
    return ProcessPoolExecutor(workers, mp_context=get_context(method), initializer=_font.cache_clear)


def render(n_train: int, n_test: int, seed: int, workers: int = 2, **kwargs) -> dict[str, np.ndarray]:
    """Every class: ``x_train`` (100 n_train, S, S, 3) uint8, ``y_train``, ``x_test``, ``y_test``,
    class by class in label order. ``workers`` processes share the classes (the bytes do not
    depend on it)."""
    tasks = [(label, n_train, n_test, seed, kwargs) for label in range(len(GLYPHS))]
    if workers > 1:
        with render_pool(workers) as pool:
            parts = list(pool.map(_render_task, tasks, chunksize=4))
    else:
        parts = [_render_task(t) for t in tasks]
    parts.sort(key=lambda p: p[0])
    labels = np.arange(len(GLYPHS), dtype=np.int64)
    return {
        "x_train": np.concatenate([p[1] for p in parts]),
        "y_train": np.repeat(labels, n_train),
        "x_test": np.concatenate([p[2] for p in parts]),
        "y_test": np.repeat(labels, n_test),
    }


@register("data", "glyphs")
class GlyphsDataModule(ImageDataModule):
    """100 classes of glyphs rendered from matplotlib's bundled fonts (RGB 32 x 32, no download).

    The classes are :data:`GLYPHS` (``class_names`` are the characters). Rendered once into
    ``root/glyphs/glyphs-<hash>.npz``, the hash covering every rendering argument, the font
    files and FreeType's version; later runs read the file. A CPU-scale stand-in for
    CIFAR-100 in continual-learning protocols (docs/data.md), not a replacement.

    Args:
        root: Directory of the cache (``root/glyphs/``).
        n_train: Training images per class (CIFAR-100: 500).
        n_test: Test images per class (CIFAR-100: 100).
        seed: Seed of the rendering (fonts, geometry, colours).
        image_size: Side of the square images.
        fonts: Font files (names without ``.ttf``) of matplotlib's ``mpl-data/fonts/ttf`` to
            draw from (default: :data:`FONTS`); each class uses those that have its character.
        size_range: Em size as a fraction of the image side, uniform in this range.
        max_rotation: Rotation uniform in +-this many degrees.
        max_shear: Horizontal shear uniform in +-this.
        max_translation: Translation uniform in +-this fraction of the side, per axis.
        stroke_weights: Stroke changes drawn uniformly (px at 64 px per em; < 0 thins, > 0 thickens).
        min_contrast: Smallest luma difference between foreground and background (0..1).
        render_workers: Processes rendering the classes (the images do not depend on it).
        val_size: Training images held out for validation (stratified, ``split_seed``); 0
            validates on the test set.
        split_seed: Seed of the validation split.
        **kwargs: Training augmentations and loader options of
            :class:`~framework.data.base.ImageDataModule` (``crop_padding``, ``cutout``, ...,
            ``batch_size``). All off by default; ``horizontal_flip`` best stays off: a
            mirrored glyph of some classes is another class or none.
    """

    def __init__(
        self,
        root: str = "data",
        n_train: int = 500,
        n_test: int = 100,
        seed: int = 0,
        image_size: int = 32,
        fonts: list[str] | None = None,
        size_range: tuple[float, float] = (0.5, 0.85),
        max_rotation: float = 15.0,
        max_shear: float = 0.2,
        max_translation: float = 0.1,
        stroke_weights: list[int] = (-1, 0, 1, 2),
        min_contrast: float = 0.3,
        render_workers: int = 2,
        val_size: int = 0,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if n_train < 1 or n_test < 1:
            raise ConfigError(f"glyphs needs n_train and n_test >= 1, got {n_train} and {n_test}")
        if image_size < 8:
            raise ConfigError(f"glyphs image_size must be >= 8, got {image_size}")
        if not (len(size_range) == 2 and 0 < size_range[0] <= size_range[1]):
            raise ConfigError(f"glyphs size_range must be (low, high) with 0 < low <= high, got {list(size_range)}")
        if not 0 <= min_contrast <= 0.5:
            raise ConfigError(f"glyphs min_contrast must be in [0, 0.5], got {min_contrast}")
        if not stroke_weights or not 0 <= val_size < len(GLYPHS) * n_train:
            raise ConfigError("glyphs needs at least one stroke weight and val_size below the training set's size")
        self.root = os.path.expanduser(root)
        self.n_train, self.n_test, self.seed = n_train, n_test, seed
        self.render_workers, self.val_size, self.split_seed = render_workers, val_size, split_seed
        self.render_args = {
            "image_size": int(image_size),
            "fonts": list(fonts) if fonts is not None else list(FONTS),
            "size_range": [float(v) for v in size_range],
            "max_rotation": float(max_rotation),
            "max_shear": float(max_shear),
            "max_translation": float(max_translation),
            "stroke_weights": [int(w) for w in stroke_weights],
            "min_contrast": float(min_contrast),
        }
        for name in self.render_args["fonts"]:
            _font(name)  # an unknown font fails here, before any rendering
        self.num_classes = len(GLYPHS)
        self.class_names = list(GLYPHS)
        self.data_shape = (3, image_size, image_size)
        self.render_seconds: float | None = None  # CPU seconds of the rendering, when this run rendered

    def cache_key(self) -> str:
        """Hash of everything the images depend on: the arguments, the glyph list, the font
        files' bytes, FreeType's version and the rendering version."""
        from matplotlib import ft2font

        fonts = {}
        for name in self.render_args["fonts"]:
            with open(_font_path(name), "rb") as f:
                fonts[name] = hashlib.sha256(f.read()).hexdigest()
        spec = {
            "version": RENDER_VERSION,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seed": self.seed,
            "glyphs": "".join(GLYPHS),
            "freetype": ft2font.__freetype_version__,
            "font_files": fonts,
            **self.render_args,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def cache_path(self) -> str:
        return os.path.join(self.root, "glyphs", f"glyphs-{self.cache_key()}.npz")

    def prepare_data(self) -> None:
        """Render into the cache if it is not there (local rank 0 of each node)."""
        path = self.cache_path
        if os.path.exists(path):
            return
        wall, cpu = time.perf_counter(), time.process_time()
        arrays = render(self.n_train, self.n_test, self.seed, workers=self.render_workers, **self.render_args)
        wall = time.perf_counter() - wall
        self.render_seconds = wall
        write_atomic(path, lambda f: np.savez_compressed(f, **arrays))
        n = len(arrays["y_train"]) + len(arrays["y_test"])
        rank_zero_info(
            f"glyphs: rendered {n} images in {wall:.1f} s wall ({time.process_time() - cpu:.1f} s CPU in this "
            f"process, {self.render_workers} render workers) into {path}"
        )

    def load_arrays(self) -> dict[str, np.ndarray]:
        """The cached uint8 arrays (rendered first if needed)."""
        self.prepare_data()
        with np.load(self.cache_path) as data:
            return {k: data[k] for k in data.files}

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        arrays = self.load_arrays()

        def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.from_numpy(arrays[f"x_{split}"]).permute(0, 3, 1, 2).contiguous()
            return uint8_to_unit_range(images), torch.from_numpy(arrays[f"y_{split}"]).long()

        x, y = tensors("train")
        x_test, y_test = tensors("test")
        self.test_dataset = InMemoryDataset(x_test, y_test)
        if self.val_size == 0:
            self.train_dataset = InMemoryDataset(x, y, transform=self.augmentation)
            self.val_dataset = self.test_dataset
            return
        fraction = self.val_size / len(y)
        train, val = stratified_split(y, (1.0 - fraction, fraction), self.split_seed)
        self.train_dataset = InMemoryDataset(x[train], y[train], transform=self.augmentation)
        self.val_dataset = InMemoryDataset(x[val], y[val])
