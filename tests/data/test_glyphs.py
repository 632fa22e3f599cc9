"""The ``glyphs`` DataModule: the class list, rendering determinism, cache keying, data conventions."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

import framework
from framework.data.glyphs import FONTS, GLYPHS, _font, fonts_for, render, render_class, render_pool
from framework.errors import ConfigError

TINY = {"n_train": 3, "n_test": 2, "render_workers": 1}


def test_the_glyph_list_has_100_distinct_classes_each_drawn_by_some_font():
    assert len(GLYPHS) == 100 and len(set(GLYPHS)) == 100
    assert all(len(g) == 1 for g in GLYPHS)
    for left_out in "01Oo\u03bf\u00d7|l\u03b9\u03bdcsuvwxz":  # look-alikes of kept classes (omicron, times, iota, nu)
        assert left_out not in GLYPHS
    for char in GLYPHS:
        names = fonts_for(char)
        assert len(names) >= 14, (char, names)
        # Computer Modern (TeX-encoded) draws digits and Latin letters, and nothing else
        latin = char.isascii() and char.isalnum()
        assert any(n.startswith("cm") for n in names) == latin, (char, names)


def test_rendering_is_pinned_by_seed():
    # The bytes of a small render of three classes; any change of the rendering (or of the
    # draws) changes this hash, and then RENDER_VERSION must be bumped too.
    images = np.concatenate([render_class(label, split, 4, seed=7) for label in (0, 48, 99) for split in ("train", "test")])
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8
    assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == "e368e7d908b5da22"
    again = np.concatenate([render_class(label, split, 4, seed=7) for label in (0, 48, 99) for split in ("train", "test")])
    assert np.array_equal(images, again)
    other_seed = render_class(0, "train", 4, seed=8)
    assert not np.array_equal(images[:4], other_seed)


def test_an_image_does_not_depend_on_how_many_are_rendered():
    # Per-(seed, split, class) generators: the first images of a longer render are the same.
    assert np.array_equal(render_class(5, "train", 3, seed=0), render_class(5, "train", 6, seed=0)[:3])
    assert not np.array_equal(render_class(5, "train", 3, seed=0), render_class(5, "test", 3, seed=0))


def _open_fonts() -> int:
    return _font.cache_info().currsize


def test_workers_render_the_same_bytes_after_the_parent_opened_the_fonts():
    # A DataModule opens every font (fonts_for) before it renders; forked workers must not read
    # through the parent's open faces (one shared file offset: garbage glyphs or a failure).
    for name in FONTS:
        fonts_for("A", (name,))
    with render_pool(2) as pool:
        assert pool.submit(_open_fonts).result() == 0  # the worker opens its own fonts
    two = render(2, 1, seed=3, workers=2)
    one = render(2, 1, seed=3, workers=1)
    assert all(np.array_equal(two[k], one[k]) for k in one)


def test_images_have_the_drawn_contrast():
    images = render_class(60, "train", 32, seed=1).astype(np.float64) / 255
    luma = images @ np.array([0.299, 0.587, 0.114])
    spread = luma.reshape(32, -1).max(1) - luma.reshape(32, -1).min(1)
    assert (spread > 0.2).all()  # every image shows its glyph (coverage reaches near 1 somewhere)


def test_datamodule_conventions_and_cache(tmp_path):
    dm = framework.build("data", "glyphs", root=str(tmp_path), **TINY)
    assert dm.num_classes == 100 and dm.class_names == list(GLYPHS) and dm.image_shape == (3, 32, 32)
    path = dm.cache_path
    assert os.path.basename(path).startswith("glyphs-") and not os.path.exists(path)
    dm.setup("fit")
    assert os.path.exists(path) and dm.render_seconds is not None
    x, y = dm.train_dataset.x, dm.train_dataset.y
    assert x.dtype == torch.float32 and x.shape == (300, 3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and torch.equal(torch.bincount(y), torch.full((100,), 3))
    assert len(dm.test_dataset) == 200 and dm.val_dataset is dm.test_dataset

    # A second DataModule with the same arguments reads the file instead of rendering.
    again = framework.build("data", "glyphs", root=str(tmp_path), **TINY)
    again.setup("fit")
    assert again.cache_path == path and again.render_seconds is None
    assert torch.equal(again.train_dataset.x, x)
    # The same bytes as rendering the classes one by one (the DataModule adds nothing).
    cached = np.load(path)
    for label in (0, 57, 99):
        assert np.array_equal(cached["x_test"][2 * label : 2 * label + 2], render_class(label, "test", 2, seed=0))


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"n_train": 4}, {"n_test": 3}, {"image_size": 16}, {"fonts": list(FONTS[:4])},
     {"size_range": (0.5, 0.8)}, {"max_rotation": 10.0}, {"max_shear": 0.0}, {"max_translation": 0.05},
     {"stroke_weights": [0]}, {"min_contrast": 0.2}],
)  # fmt: skip
def test_every_rendering_argument_changes_the_cache_file(tmp_path, change):
    base = framework.build("data", "glyphs", root=str(tmp_path), **TINY)
    changed = framework.build("data", "glyphs", root=str(tmp_path), **{**TINY, **change})
    assert changed.cache_path != base.cache_path
    # ... and what does not change the images does not change the file.
    assert framework.build("data", "glyphs", root=str(tmp_path), **{**TINY, "render_workers": 2, "batch_size": 7}).cache_path == base.cache_path


@pytest.mark.parametrize(
    "bad", [{"n_train": 0}, {"image_size": 4}, {"size_range": (0.9, 0.5)}, {"min_contrast": 0.9}, {"fonts": ["Nope"]}]
)
def test_bad_arguments_are_config_errors(tmp_path, bad):
    with pytest.raises(ConfigError, match="glyphs"):
        framework.build("data", "glyphs", root=str(tmp_path), **{**TINY, **bad})
