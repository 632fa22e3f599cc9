"""DiffAugment's operations (Zhao et al. 2020) on fixed images: what each may and may not change."""

import pytest
import torch
import torch.nn.functional as F

from framework.errors import ConfigError
from framework.generative.gan import diffaugment as A


def _shift(x, dy, dx):
    """x shifted so that out[i, j] = x[i + dy, j + dx], zeros outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, [w, w, h, h])
    return padded[..., h + dy : 2 * h + dy, w + dx : 2 * w + dx]


def test_brightness_and_contrast():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    out = A.brightness(x)
    offsets = (out - x).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6) and offsets.abs().max() <= 0.5
    out = A.contrast(x)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    one_channel = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(A.saturation(one_channel), one_channel)  # grey images have no saturation


def test_translation_is_a_shift_of_at_most_an_eighth():
    torch.manual_seed(1)
    x = torch.randn(16, 2, 16, 16)
    out = A.translation(x)
    for i in range(len(x)):
        assert any(torch.equal(out[i], _shift(x[i], dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3))


def test_cutout_zeroes_one_square_and_keeps_the_rest():
    torch.manual_seed(2)
    x = torch.rand(16, 1, 8, 8) + 1.0  # no zeros of its own
    out = A.cutout(x)
    zeros = out == 0
    assert torch.equal(out[~zeros], x[~zeros])
    for mask in zeros[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 4 and 0 < len(cols) <= 4
        assert mask.sum() == len(rows) * len(cols)  # one rectangle (the 4x4 square, clipped at the border)


def test_policy_parsing_and_gradients():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    A.diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert A.parse_policy("") == () and A.parse_policy(["color"]) == ("color",)
    with pytest.raises(ConfigError, match="colour"):
        A.parse_policy("colour")
