"""Shared test settings: one torch thread (2 shared cores), quiet Lightning, a temp working dir helper."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside a fresh temporary directory (logs and checkpoints land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_glyphs(tmp_path_factory):
    """CLI overrides for a glyphs cache of 6 training and 2 test images per class, rendered once.

    Call it with the recipe's prefix of the glyphs arguments (``"--data.init_args."`` for a
    generator recipe, ``"--data.init_args.dataset.init_args."`` for a continual one).
    """
    root = tmp_path_factory.mktemp("glyphs")
    return lambda prefix: [f"{prefix}root={root}", f"{prefix}n_train=6", f"{prefix}n_test=2", f"{prefix}render_workers=1"]
