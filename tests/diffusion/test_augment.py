"""EDM's augmentation pipeline on fixed tensors, the nets' augment labels, and the `diffusion` option.

The reference's own outputs (NVlabs/edm ``training/augment.py``, the commit named in the file)
are in ``tests/nets/fixtures/edm_reference.pt``, written by ``tests/nets/make_edm_fixture.py``.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import registry
from framework.errors import ConfigError
from framework.generative.diffusion import Diffusion
from framework.generative.diffusion.augment import (
    EDM_CIFAR10,
    AugmentPipe,
    apply_augment,
    augment_labels,
)

TINY_UNET = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": ()}
STD = 0.125  # translate_frac_std


def _images(n=3, c=3, h=16, w=16):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))


def _blob(h=16, w=16, row=5.5, col=9.5):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.exp(-((yy - row) ** 2 + (xx - col) ** 2) / 6)[None, None]


def test_p_zero_is_the_identity_with_zero_labels():
    x = _images()
    out, labels = AugmentPipe(p=0.0, **EDM_CIFAR10)(x)
    assert torch.equal(out, x)
    assert labels.shape == (3, 9) and labels.dtype == torch.float32 and not labels.any()


def test_identity_transform_through_the_resampling_is_the_identity():
    """The symlet-6 up/down pair is orthonormal: an untouched sample comes back as it was."""
    x = _images()
    zero = torch.zeros(3)
    params = {"scale": zero, "rotate_frac": zero, "aniso": zero, "aniso_angle": zero, "translate_frac": torch.zeros(2, 3)}
    torch.testing.assert_close(apply_augment(x, params), x, rtol=0, atol=2e-5)
    assert not augment_labels(params, 16, 16).any()


def test_flips_are_torch_flips_with_their_label():
    x = _images()
    flips = torch.tensor([1, 0, 1])
    out = apply_augment(x, {"xflip": flips})
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]].flip(3), rtol=0, atol=0)
    torch.testing.assert_close(out[1], x[1], rtol=0, atol=0)
    out = apply_augment(x, {"yflip": flips})
    torch.testing.assert_close(out[0], x[0].flip(1), rtol=0, atol=0)
    assert augment_labels({"xflip": flips}, 16, 16).tolist() == [[1.0], [0.0], [1.0]]


def test_integer_translation_is_a_mirrored_shift():
    """translate_int moves right by tx and up by ty (the reference's convention), mirroring at the borders."""
    x = _images(n=2)
    out = apply_augment(x, {"translate_int": torch.tensor([[2, -3], [1, 0]])})  # rows: tx, ty
    right2_up1 = F.pad(x[:1], (2, 0, 0, 1), mode="reflect")[..., 1:, :16]
    left3 = F.pad(x[1:], (0, 3, 0, 0), mode="reflect")[..., 3:]
    torch.testing.assert_close(out, torch.cat([right2_up1, left3]), rtol=0, atol=0)
    labels = augment_labels({"translate_int": torch.tensor([[2, -3], [1, 0]])}, 16, 16)
    torch.testing.assert_close(labels, torch.tensor([[1.0, 0.5], [-1.5, 0.0]]))  # pixels / (16 * 0.125)


def test_whole_pixel_fractional_translation_equals_the_mirrored_shift():
    """translate_frac of whole pixels through the resampling: right and down, reflect-padded."""
    x = _images(n=2)
    shift = torch.tensor([[2.0, -3.0], [1.0, 0.0]]) / (16 * STD)  # normals giving (2, 1) and (-3, 0) pixels
    out = apply_augment(x, {"translate_frac": shift})
    right2_down1 = F.pad(x[:1], (2, 0, 1, 0), mode="reflect")[..., :16, :16]
    left3 = F.pad(x[1:], (0, 3, 0, 0), mode="reflect")[..., 3:]
    torch.testing.assert_close(out, torch.cat([right2_down1, left3]), rtol=0, atol=2e-5)


def test_rotation_and_scaling_directions():
    blob = _blob()
    # +pi/2 turns a smooth image as torch.rot90 (k=1 over (H, W)): the resampling blurs a little.
    turned = apply_augment(blob, {"rotate_frac": torch.tensor([math.pi / 2])})
    assert (turned - torch.rot90(blob, 1, (2, 3))).abs().max() < 0.05
    # scale w = 1 / scale_std doubles the size about the centre (7.5, 7.5): the peak's offset doubles.
    zoomed = apply_augment(_blob(row=6.25, col=9.25), {"scale": torch.tensor([1 / 0.2])})
    peak = int(zoomed.argmax())
    assert divmod(peak, 16) == (5, 11)


def test_labels_have_the_reference_layout():
    """[xflip, yflip, scale, cos a - 1, sin a, w cos r, w sin r, tx, ty] for EDM CIFAR-10's set."""
    a, r = 0.3, -1.1
    params = {
        "xflip": torch.tensor([1]), "yflip": torch.tensor([0]), "scale": torch.tensor([0.7]),
        "rotate_frac": torch.tensor([a]), "aniso": torch.tensor([-0.4]), "aniso_angle": torch.tensor([r]),
        "translate_frac": torch.tensor([[0.25], [-1.5]]),
    }  # fmt: skip
    expected = [1, 0, 0.7, math.cos(a) - 1, math.sin(a), -0.4 * math.cos(r), -0.4 * math.sin(r), 0.25, -1.5]
    torch.testing.assert_close(augment_labels(params, 32, 32), torch.tensor([expected]))
    pipe = AugmentPipe(p=0.12, **EDM_CIFAR10)
    assert pipe.label_dim == 9 and pipe.enabled == ("xflip", "yflip", "scale", "rotate_frac", "aniso", "translate_frac")
    quarter = augment_labels({"rotate_int": torch.tensor([0, 1, 2, 3])}, 8, 8)
    assert quarter.tolist() == [[0, 0], [1, 0], [1, 1], [0, 1]]


def test_draws_follow_the_probabilities_and_the_seed():
    n = 4000
    pipe = AugmentPipe(p=0.12, **EDM_CIFAR10)
    torch.manual_seed(0)
    params = pipe.draw(n, 32, 32)
    assert abs(params["xflip"].float().mean() - 0.5) < 0.03  # multiplier 1e8: always drawn, a fair coin
    assert abs(params["yflip"].float().mean() - 0.06) < 0.015  # 0.12, then a fair coin
    for name in ("scale", "rotate_frac", "aniso"):
        assert abs((params[name] != 0).float().mean() - 0.12) < 0.02
    assert abs((params["translate_frac"][0] != 0).float().mean() - 0.12) < 0.02
    torch.manual_seed(1)
    x = _images(n=4)
    first = pipe(x)
    torch.manual_seed(1)
    again = pipe(x)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape == x.shape and first[1].shape == (4, 9)


EDM_FIXTURE = Path(__file__).parents[1] / "nets" / "fixtures" / "edm_reference.pt"


@pytest.mark.parametrize("setting", ["edm_cifar10", "geometric_p1", "all_p05", "translate_int_nonsquare"])
def test_same_seed_gives_the_references_images_and_labels(setting):
    """Seeded like the reference, the pipeline draws the same parameters and produces the same images.

    Labels: the same draws, so equal up to float rounding of cos/sin (measured: equal). Images:
    pixel moves are exact; the resampling (two symlet-6 upsamplings, grid_sample, two
    downsamplings) differs by float32 rounding, at most 6.7e-6 measured on values of size ~3:
    5e-5 leaves a margin while a wrong sign, axis or filter moves pixels by 1e-1 or more.
    """
    case = torch.load(EDM_FIXTURE, weights_only=True)["augment"][setting]
    pipe = AugmentPipe(**case["args"])
    torch.manual_seed(case["seed"])
    out, labels = pipe(case["images"])
    assert labels.shape == case["labels"].shape and bool(case["labels"].any())
    torch.testing.assert_close(labels, case["labels"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out, case["output"], rtol=0, atol=5e-5)
    assert not torch.allclose(case["output"], case["images"], atol=1e-2)  # the reference did augment


def test_one_channel_and_small_images():
    x = _images(n=5, c=1, h=8, w=8)
    torch.manual_seed(0)
    out, labels = AugmentPipe(p=1.0, **EDM_CIFAR10)(x)
    assert out.shape == x.shape and torch.isfinite(out).all() and labels.shape == (5, 9)


def test_bad_pipelines_raise():
    with pytest.raises(ConfigError):
        AugmentPipe(p=1.5, xflip=1)
    with pytest.raises(ConfigError):
        AugmentPipe(p=0.1)  # nothing enabled
    with pytest.raises(ConfigError):
        AugmentPipe(p=0.1, scale=-1)
    with pytest.raises(ConfigError):
        apply_augment(torch.zeros(2, 8, 8), {"xflip": torch.tensor([1, 0])})


# -- the nets ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, args",
    [("unet", TINY_UNET), ("dit", {"hidden_size": 16, "depth": 1, "num_heads": 2, "patch_size": 2}),
     ("song_unet", {"model_channels": 16, "channel_mult": (1, 2), "num_blocks": 1, "attn_resolutions": ()})],
)
def test_nets_take_augment_labels(name, args):
    torch.manual_seed(0)
    net = registry.create("net", name, data_shape=(1, 8, 8), num_classes=3, augment_dim=9, **args).eval()
    with torch.no_grad():  # leave the zero-initialised output layers
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, sigma, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 3])
    plain = net(x, sigma, y)
    torch.testing.assert_close(net(x, sigma, y, augment_labels=torch.zeros(4, 9)), plain, rtol=0, atol=1e-6)
    assert not torch.allclose(net(x, sigma, y, augment_labels=torch.randn(4, 9)), plain, atol=1e-4)
    with pytest.raises(ConfigError):
        net(x, sigma, y, augment_labels=torch.zeros(4, 6))
    without = registry.create("net", name, data_shape=(1, 8, 8), num_classes=3, **args)
    with pytest.raises(ConfigError):
        without(x, sigma, y, augment_labels=torch.zeros(4, 9))


# -- the diffusion model ----------------------------------------------------------------------
def test_diffusion_trains_on_augmented_images_with_their_labels():
    seen = []

    class Recorder(Diffusion):
        def forward(self, x, noise_level, labels=None, augment_labels=None):
            seen.append(augment_labels)
            return super().forward(x, noise_level, labels, augment_labels)

    torch.manual_seed(0)
    model = Recorder(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET, augment_p=1.0)
    assert model.net.augment_dim == 9 and model.augment_pipe.p == 1.0
    x, y = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randint(0, 3, (8,))
    loss = model.training_step((x, y), 0)
    assert torch.isfinite(loss) and seen[-1].shape == (8, 9) and seen[-1].abs().sum() > 0
    model.validation_step((x, y), 0)  # validation scores the un-augmented task
    assert seen[-1] is None
    model.eval().generate(torch.tensor([0, 1]), [0, 1], steps=2)
    assert seen[-1] is None  # sampling asks for un-augmented images
    off = Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET)
    assert off.augment_pipe is None and off.net.augment_dim == 0


def test_diffusion_augment_options_are_checked():
    with pytest.raises(ConfigError):
        Diffusion(num_classes=2, data_shape=(2,), net="resmlp", augment_p=0.1)
    with pytest.raises(ConfigError):
        Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET, augment_args={"yflip": 0})
    with pytest.raises(ConfigError):
        Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET, augment_p=0.1, augment_args={"bogus": 1})
    with pytest.raises(ConfigError):
        Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args={**TINY_UNET, "augment_dim": 4}, augment_p=0.1)
    custom = Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET, augment_p=0.1, augment_args={"yflip": 0, "rotate_int": 1})
    assert custom.net.augment_dim == 10  # 9 - yflip + two rotate_int labels
