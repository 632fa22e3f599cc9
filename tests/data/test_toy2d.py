"""toy2d: shapes, labels, determinism, and agreement in distribution with the references."""

import math

import numpy as np
import pytest
import torch

from framework.data import toy2d
from framework.errors import ConfigError

NAMES = list(toy2d.DISTRIBUTIONS)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _moments_close(ours, ref, mean_tol=0.06, cov_rtol=0.05):
    ours, ref = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    scale = ref.std(0).max()
    assert torch.allclose(ours.mean(0), ref.mean(0), atol=mean_tol * scale), (ours.mean(0), ref.mean(0))
    c_ours, c_ref = torch.cov(ours.T), torch.cov(ref.T)
    assert torch.allclose(c_ours, c_ref, atol=cov_rtol * c_ref.abs().max()), (c_ours, c_ref)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_labels_and_seeding(name):
    points, labels = toy2d.sample_toy2d(name, 4000, _gen(3))
    assert points.shape == (4000, 2) and points.dtype == torch.float32
    assert labels.shape == (4000,) and labels.dtype == torch.int64
    k = len(toy2d.toy2d_class_names(name))
    # Every class occurs, with roughly equal frequency (all distributions are balanced).
    counts = torch.bincount(labels, minlength=k)
    assert len(counts) == k and counts.min() > 0.8 * 4000 / k
    again = toy2d.sample_toy2d(name, 4000, _gen(3))
    assert torch.equal(points, again[0]) and torch.equal(labels, again[1])
    other = toy2d.sample_toy2d(name, 4000, _gen(4))[0]
    assert not torch.equal(points, other)
    # generator=None uses the global RNG, which torch.manual_seed controls.
    torch.manual_seed(11)
    a = toy2d.sample_toy2d(name, 10)[0]
    torch.manual_seed(11)
    assert torch.equal(a, toy2d.sample_toy2d(name, 10)[0])


def test_eight_gaussians_matches_torchcfm():
    utils = pytest.importorskip("torchcfm.utils")
    torch.manual_seed(0)
    ref = utils.sample_8gaussians(20000)
    ours, labels = toy2d.eight_gaussians(20000, _gen())
    _moments_close(ours, ref)
    # Label = component: each component's points sit around scale * centre with torchcfm's std.
    centers = torch.tensor(toy2d._EIGHT_CENTERS) * 5.0
    for k in range(8):
        part = ours[labels == k]
        assert torch.allclose(part.mean(0), centers[k], atol=0.05)
        assert torch.allclose(part.std(0), torch.full((2,), 0.1**0.25), rtol=0.05)


def test_moons_matches_torchcfm():
    utils = pytest.importorskip("torchcfm.utils")
    np.random.seed(0)
    ref = utils.sample_moons(20000)
    ours, labels = toy2d.moons(20000, _gen())
    _moments_close(ours, ref)
    # Label 0 is the upper moon (y >= -1 before noise after the 3x - 1 map), label 1 the lower.
    assert ours[labels == 0, 1].mean() > ours[labels == 1, 1].mean() + 1.0
    ref_upper = ref[:10000]  # torchdyn puts the outer (upper) moon first
    assert torch.allclose(ours[labels == 0].mean(0), ref_upper.mean(0), atol=0.1)


def _ffjord_checkerboard(n, rng):
    # FFJORD's toy_data checkerboard, written from its formula.
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _ffjord_spirals(n, rng):
    r = np.sqrt(rng.random((n // 2, 1))) * 540 * (2 * np.pi) / 360
    dx = -np.cos(r) * r + rng.random((n // 2, 1)) * 0.5
    dy = np.sin(r) * r + rng.random((n // 2, 1)) * 0.5
    x = np.vstack((np.hstack((dx, dy)), np.hstack((-dx, -dy)))) / 3
    return x + rng.standard_normal(x.shape) * 0.1


def test_checkerboard_matches_ffjord_and_labels_are_cells():
    ours, labels = toy2d.checkerboard(20000, _gen())
    _moments_close(ours, _ffjord_checkerboard(20000, np.random.default_rng(0)))
    assert ours.abs().max() <= 4.0
    names = toy2d.toy2d_class_names("checkerboard")
    for k, name in enumerate(names):
        (x0, x1), (y0, y1) = [tuple(int(v) for v in part.strip("[)").split(",")) for part in name.split("x")]
        part = ours[labels == k]
        assert len(part) > 0
        assert (part[:, 0] >= x0).all() and (part[:, 0] < x1).all()
        assert (part[:, 1] >= y0).all() and (part[:, 1] < y1).all()
    # The 8 cells are a checkerboard: no two occupied cells share an edge.
    corners = {(int(float(n.split(",")[0][1:])), int(n.split("x")[1].split(",")[0][1:])) for n in names}
    for x, y in corners:
        assert (x + 2, y) not in corners and (x, y + 2) not in corners


def test_spirals_match_ffjord_and_arms_rotate():
    ours, labels = toy2d.spirals(20000, _gen())
    _moments_close(ours, _ffjord_spirals(20000, np.random.default_rng(0)))
    # Arm 1 of two is arm 0 negated: their mean radius profiles agree and their means are opposite.
    a0, a1 = ours[labels == 0], ours[labels == 1]
    assert torch.allclose(a0.mean(0), -a1.mean(0), atol=0.06)
    three, lab3 = toy2d.spirals(30000, _gen(), arms=3)
    assert toy2d.toy2d_class_names("spirals", arms=3) == ["arm0", "arm1", "arm2"]
    means = torch.stack([three[lab3 == k].mean(0) for k in range(3)])
    angle = 2 * math.pi / 3
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    assert torch.allclose(means[1], rot @ means[0], atol=0.06)


def test_swissroll_matches_sklearn_and_segments():
    from sklearn.datasets import make_swiss_roll

    ref = make_swiss_roll(20000, noise=1.0, random_state=0)[0][:, [0, 2]] / 5
    ours, _ = toy2d.swissroll(20000, _gen())
    _moments_close(ours, ref)
    # Noise-free, the segment label orders points by their distance from the roll's centre.
    clean, lab = toy2d.swissroll(3000, _gen(), noise=0.0, segments=3)
    radius = clean.norm(dim=1)
    assert radius[lab == 0].max() <= radius[lab == 1].min() + 1e-5
    assert radius[lab == 1].max() <= radius[lab == 2].min() + 1e-5


def test_per_sample_generators_give_the_batch_distribution():
    # One generator per sample (how flow sources draw seeded samples) still gives every class.
    rows = [toy2d.sample_toy2d("8gaussians", 1, _gen(s)) for s in range(400)]
    labels = torch.cat([r[1] for r in rows])
    assert len(torch.unique(labels)) == 8


def test_bad_names_and_options():
    with pytest.raises(ConfigError, match="unknown toy2d distribution 'mooons'"):
        toy2d.sample_toy2d("mooons", 10)
    with pytest.raises(ConfigError, match="toy2d 'moons'"):
        toy2d.sample_toy2d("moons", 10, arms=3)
    with pytest.raises(ConfigError):
        toy2d.Toy2DDataModule("spirals", options={"arms": 0})
    with pytest.raises(ConfigError):
        toy2d.Toy2DDataModule("moons", size=0)


def test_datamodule_splits_and_shapes():
    dm = toy2d.Toy2DDataModule("spirals", size=300, val_size=50, test_size=70, seed=5, noise=0.0, batch_size=64)
    assert dm.num_classes == 2 and dm.data_shape == (2,) and dm.dim == 2 and dm.image_shape is None
    assert dm.class_names == ["arm0", "arm1"]
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (300, 50, 70)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The splits are consecutive draws of one generator seeded with `seed`, with the options passed on.
    expected_x, expected_y = toy2d.sample_toy2d("spirals", 420, _gen(5), noise=0.0)
    assert torch.equal(dm.train_dataset.x, expected_x[:300]) and torch.equal(dm.test_dataset.y, expected_y[350:])
    dm2 = toy2d.Toy2DDataModule("spirals", size=300, val_size=50, test_size=70, seed=5, noise=0.0)
    dm2.setup()
    assert torch.equal(dm.train_dataset.x, dm2.train_dataset.x)
    assert torch.equal(dm.test_dataset.y, dm2.test_dataset.y)
    assert not torch.equal(dm.train_dataset.x[:50], dm.val_dataset.x)
    dm3 = toy2d.Toy2DDataModule("checkerboard", size=10, options={"noise": 0.0})
    assert dm3.num_classes == 8


def test_registered_and_built_by_name():
    from framework import build

    dm = build("data", "toy2d", distribution="moons", size=100, val_size=10, test_size=10)
    assert isinstance(dm, toy2d.Toy2DDataModule) and dm.num_classes == 2
