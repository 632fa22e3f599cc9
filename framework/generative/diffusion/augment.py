"""EDM's non-leaking augmentations (Karras et al. 2022, appendix C; NVlabs/edm ``training/augment.py``).

A transform of the training images is applied with probability ``p`` times its multiplier
per sample, and the transform's parameters are handed to the denoiser as a vector of
*augment labels* (zero when a sample is not augmented). The net learns to produce augmented
images only when asked; sampling passes zero labels (or none), so the augmentations do not
leak into the samples. EDM's CIFAR-10 run (``train.py --augment=0.12``) enables x-flip
(multiplier 1e8: always drawn, so a fair coin), y-flip, isotropic scaling, arbitrary
rotation, anisotropic scaling and fractional translation: 9 labels.

The same steps as the reference, in the same order and with the same random draws (so a run
seeded like EDM's draws the same parameters):

1. pixel blitting: x-flip, y-flip, rotation by multiples of 90 degrees, integer translation
   with mirrored borders;
2. one 3x3 inverse transform per sample (output pixel -> input pixel, both centred on the
   image) composed from scaling, rotation, anisotropic scaling and translation;
3. executed by reflect padding, 2x upsampling with the symlet-6 low-pass filter, bilinear
   ``grid_sample``, 2x downsampling with the same filter, and cropping. The filter pair is
   orthonormal, so a sample whose transform is the identity comes back unchanged up to
   float rounding.

Everything is batched torch; no Python loop runs over samples. The reference's colour
transforms are left out (EDM's configurations never enable them). Pure: no Lightning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError

__all__ = ["EDM_CIFAR10", "TRANSFORMS", "AugmentPipe", "apply_augment", "augment_labels", "geometric_matrix"]

#: Transforms in the order they are drawn, applied and listed in the labels (the reference's).
TRANSFORMS = ("xflip", "yflip", "rotate_int", "translate_int", "scale", "rotate_frac", "aniso", "translate_frac")
#: Labels per transform.
LABEL_WIDTH = {"xflip": 1, "yflip": 1, "rotate_int": 2, "translate_int": 2, "scale": 1, "rotate_frac": 2, "aniso": 2, "translate_frac": 2}
#: EDM ``train.py``'s multipliers with ``--augment``.
EDM_CIFAR10 = {"xflip": 1e8, "yflip": 1.0, "scale": 1.0, "rotate_frac": 1.0, "aniso": 1.0, "translate_frac": 1.0}
_GEOMETRIC = ("scale", "rotate_frac", "aniso", "translate_frac")

# Symlet-6 low-pass filter (the reference's resampling filter).
_SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)  # fmt: skip
_PAD = len(_SYM6) // 4  # low-resolution pixels the filters reach beyond the output


@dataclass(frozen=True)
class AugmentPipe:
    """EDM's augmentation pipeline: ``images -> (augmented images, augment labels)``.

    Args:
        p: Overall probability multiplier (EDM CIFAR-10: 0.12).
        xflip: Probability multiplier of a horizontal flip (a flip then happens half the time).
        yflip: Same, vertical flip.
        rotate_int: Same, rotation by a multiple of 90 degrees.
        translate_int: Same, integer translation with mirrored borders.
        scale: Same, isotropic scaling by ``2 ** (scale_std * N(0, 1))``.
        rotate_frac: Same, rotation by an angle uniform in ``[-pi, pi] * rotate_frac_max``.
        aniso: Same, anisotropic scaling by ``2 ** (+-aniso_std * N(0, 1))``.
        translate_frac: Same, translation by ``translate_frac_std * N(0, 1)`` of the image size.
        translate_int_max: Range of the integer translation, relative to the image size.
        scale_std: Log2 std of the isotropic scaling.
        rotate_frac_max: Range of the rotation (1: full circle).
        aniso_std: Log2 std of the anisotropic scaling.
        aniso_rotate_prob: Probability that the anisotropic scaling acts in a rotated frame.
        translate_frac_std: Std of the fractional translation, relative to the image size.
    """

    p: float = 0.12
    xflip: float = 0.0
    yflip: float = 0.0
    rotate_int: float = 0.0
    translate_int: float = 0.0
    scale: float = 0.0
    rotate_frac: float = 0.0
    aniso: float = 0.0
    translate_frac: float = 0.0
    translate_int_max: float = 0.125
    scale_std: float = 0.2
    rotate_frac_max: float = 1.0
    aniso_std: float = 0.2
    aniso_rotate_prob: float = 0.5
    translate_frac_std: float = 0.125

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"augment p must be in [0, 1], got {self.p}")
        bad = [t for t in TRANSFORMS if getattr(self, t) < 0]
        if bad:
            raise ConfigError(f"augment multipliers must be >= 0, got {', '.join(f'{t}={getattr(self, t)}' for t in bad)}")
        if not self.enabled:
            raise ConfigError(f"augment enables no transform; set a multiplier of one of {', '.join(TRANSFORMS)}")

    @property
    def enabled(self) -> tuple[str, ...]:
        """The transforms with a positive multiplier, in the reference's order."""
        return tuple(t for t in TRANSFORMS if getattr(self, t) > 0)

    @property
    def label_dim(self) -> int:
        """Width of the augment label vector (EDM CIFAR-10: 9), the nets' ``augment_dim``."""
        return sum(LABEL_WIDTH[t] for t in self.enabled)

    def draw(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Random parameters of ``n`` samples, zero where a transform is not applied.

        Draws from torch's global generator on ``device`` in the reference's order and shapes.
        Keys: the enabled transforms; ``xflip``/``yflip``/``rotate_int`` (n,) int64,
        ``translate_int`` (2, n) int64 pixels ``(tx, ty)``, ``scale`` and ``aniso`` (n,)
        standard normals (``aniso_angle`` the frame's angle), ``rotate_frac`` (n,) radians,
        ``translate_frac`` (2, n) standard normals.
        """
        params: dict[str, Tensor] = {}

        def chosen(multiplier: float, shape: list[int]) -> Tensor:
            return torch.rand(shape, device=device) < multiplier * self.p

        for name, choices in (("xflip", 2), ("yflip", 2), ("rotate_int", 4)):
            if getattr(self, name) > 0:
                w = torch.randint(choices, [n, 1, 1, 1], device=device)
                params[name] = torch.where(chosen(getattr(self, name), [n, 1, 1, 1]), w, 0).reshape(n)
        if self.translate_int > 0:
            w = torch.rand([2, n, 1, 1, 1], device=device) * 2 - 1
            w = torch.where(chosen(self.translate_int, [1, n, 1, 1, 1]), w, 0).reshape(2, n)
            reach = torch.tensor([width * self.translate_int_max, height * self.translate_int_max], device=device)
            params["translate_int"] = (w * reach.reshape(2, 1)).round().long()
        if self.scale > 0:
            w = torch.randn([n], device=device)
            params["scale"] = torch.where(chosen(self.scale, [n]), w, 0)
        if self.rotate_frac > 0:
            w = (torch.rand([n], device=device) * 2 - 1) * (math.pi * self.rotate_frac_max)
            params["rotate_frac"] = torch.where(chosen(self.rotate_frac, [n]), w, 0)
        if self.aniso > 0:
            w = torch.randn([n], device=device)
            r = (torch.rand([n], device=device) * 2 - 1) * math.pi
            params["aniso"] = torch.where(chosen(self.aniso, [n]), w, 0)
            params["aniso_angle"] = torch.where(torch.rand([n], device=device) < self.aniso_rotate_prob, r, 0)
        if self.translate_frac > 0:
            w = torch.randn([2, n], device=device)
            params["translate_frac"] = torch.where(chosen(self.translate_frac, [1, n]), w, 0)
        return params

    def labels(self, params: dict[str, Tensor], height: int, width: int) -> Tensor:
        """The (n, label_dim) float32 augment labels of ``params``."""
        return augment_labels(params, height, width, self.translate_int_max)

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``images`` (n, C, H, W) transformed by ``params``."""
        return apply_augment(
            images, params, scale_std=self.scale_std, aniso_std=self.aniso_std, translate_frac_std=self.translate_frac_std
        )

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch: ``(images, labels)``; with ``p = 0`` the images unchanged and zero labels."""
        n, _, h, w = images.shape
        if self.p == 0:
            return images, images.new_zeros(n, self.label_dim, dtype=torch.float32)
        params = self.draw(n, h, w, images.device)
        return self.apply(images, params), self.labels(params, h, w)


def augment_labels(params: dict[str, Tensor], height: int, width: int, translate_int_max: float = 0.125) -> Tensor:
    """The reference's label vector of ``params`` (:meth:`AugmentPipe.draw`'s keys), (n, dims) float32.

    Per transform: the flip (0/1); for ``rotate_int`` ``[w in {1, 2}, w in {2, 3}]``;
    ``[tx / (W max), ty / (H max)]``; the scaling's normal; ``[cos a - 1, sin a]``;
    ``[w cos r, w sin r]``; the translation's two normals. Zero for an untouched sample.
    """
    cols: list[Tensor] = []
    for name in TRANSFORMS:
        if name not in params:
            continue
        w = params[name]
        if name in ("xflip", "yflip", "scale"):
            cols.append(w)
        elif name == "rotate_int":
            cols += [(w == 1) | (w == 2), (w == 2) | (w == 3)]
        elif name == "translate_int":
            cols += [w[0] / (width * translate_int_max), w[1] / (height * translate_int_max)]
        elif name == "rotate_frac":
            cols += [w.cos() - 1, w.sin()]
        elif name == "aniso":
            r = params["aniso_angle"]
            cols += [w * r.cos(), w * r.sin()]
        else:  # translate_frac
            cols += [w[0], w[1]]
    if not cols:
        raise ConfigError("augment_labels: no transform in params")
    return torch.stack([c.float() for c in cols], dim=1)


# -- execution --------------------------------------------------------------------------------
def _mirror(index: Tensor, size: int) -> Tensor:
    """Mirror out-of-range pixel indices back into ``[0, size)`` (edge pixel not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * size - 2
    return size - 1 - (size - 1 - index % period).abs()


def _blit(images: Tensor, params: dict[str, Tensor]) -> Tensor:
    """Flips, quarter turns and integer translations: exact pixel moves."""
    n = images.shape[0]
    if "xflip" in params:
        images = torch.where(params["xflip"].reshape(n, 1, 1, 1) == 1, images.flip(3), images)
    if "yflip" in params:
        images = torch.where(params["yflip"].reshape(n, 1, 1, 1) == 1, images.flip(2), images)
    if "rotate_int" in params:
        if images.shape[2] != images.shape[3]:
            raise ConfigError(f"rotate_int needs square images, got {tuple(images.shape[2:])}")
        w = params["rotate_int"].reshape(n, 1, 1, 1)
        images = torch.where((w == 1) | (w == 2), images.flip(3), images)
        images = torch.where((w == 2) | (w == 3), images.flip(2), images)
        images = torch.where((w == 1) | (w == 3), images.transpose(2, 3), images)
    if "translate_int" in params:
        _, _, h, w = images.shape
        tx, ty = params["translate_int"]
        # The reference moves content right by tx and *up* by ty.
        xs = _mirror(torch.arange(w, device=images.device) - tx[:, None], w)  # (n, W)
        ys = _mirror(torch.arange(h, device=images.device) + ty[:, None], h)  # (n, H)
        rows = torch.arange(n, device=images.device)[:, None, None]
        images = images.permute(0, 2, 3, 1)[rows, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)
    return images


def _affine(n: int, a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor | float = 0.0, ty: Tensor | float = 0.0) -> Tensor:
    """(n, 3, 3) matrices ``[[a, b, tx], [c, d, ty], [0, 0, 1]]`` from (n,) or scalar entries."""
    m = torch.zeros(n, 3, 3, dtype=torch.float32, device=a.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, b, tx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = c, d, ty
    m[:, 2, 2] = 1
    return m


def _rotation(theta: Tensor) -> Tensor:
    return _affine(len(theta), theta.cos(), -theta.sin(), theta.sin(), theta.cos())


def _scaling(sx: Tensor, sy: Tensor) -> Tensor:
    z = torch.zeros_like(sx)
    return _affine(len(sx), sx, z, z, sy)


def geometric_matrix(
    params: dict[str, Tensor], height: int, width: int, scale_std: float = 0.2, aniso_std: float = 0.2,
    translate_frac_std: float = 0.125,
) -> Tensor | None:
    """Per-sample inverse transform (n, 3, 3): output pixel -> input pixel, centred coordinates.

    None when ``params`` holds no geometric transform. Composed as the reference: inverse
    scaling, then rotation, anisotropic scaling in a rotated frame, inverse translation.
    """
    present = [k for k in _GEOMETRIC if k in params]
    if not present:
        return None
    w0 = params[present[0]]
    n, device = w0.shape[-1], w0.device
    g = torch.eye(3, device=device).expand(n, 3, 3)
    if "scale" in params:
        s = torch.exp2(params["scale"] * scale_std)
        g = g @ _scaling(1 / s, 1 / s)
    if "rotate_frac" in params:
        g = g @ _rotation(params["rotate_frac"])
    if "aniso" in params:
        s = torch.exp2(params["aniso"] * aniso_std)
        r = params["aniso_angle"]
        g = g @ _rotation(-r) @ _scaling(1 / s, s) @ _rotation(r)
    if "translate_frac" in params:
        t = params["translate_frac"]
        one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
        g = g @ _affine(n, one, zero, zero, one, -t[0] * (width * translate_frac_std), -t[1] * (height * translate_frac_std))
    return g


def _shift(n: int, tx: float, ty: float, device) -> Tensor:
    one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
    return _affine(n, one, zero, zero, one, tx, ty)


def _zoom(n: int, sx: float, sy: float, device) -> Tensor:
    return _scaling(torch.full((n,), float(sx), device=device), torch.full((n,), float(sy), device=device))


def _filter(images: Tensor, taps: Tensor, dim: int, stride: int, padding: int) -> Tensor:
    """Depthwise 1-D correlation of ``images`` along ``dim`` (3: width, 2: height)."""
    c = images.shape[1]
    shape = (1, 1, 1, len(taps)) if dim == 3 else (1, 1, len(taps), 1)
    pad = (0, padding) if dim == 3 else (padding, 0)
    strides = (1, stride) if dim == 3 else (stride, 1)
    return F.conv2d(images, taps.reshape(shape).expand(c, -1, -1, -1), stride=strides, padding=pad, groups=c)


def _upsample2x(images: Tensor, taps: Tensor, dim: int) -> Tensor:
    """Zero-stuffing then convolution with the low-pass filter: length L -> 2L."""
    stuffed = torch.stack([images, torch.zeros_like(images)], dim=dim + 1).flatten(dim, dim + 1)
    stuffed = stuffed.narrow(dim, 0, stuffed.shape[dim] - 1)
    return _filter(stuffed, taps.flip(0), dim, 1, (len(taps) + 1) // 2)


def _downsample2x(images: Tensor, taps: Tensor, dim: int) -> Tensor:
    """Correlation with the low-pass filter at stride 2, then the filter's margin cropped."""
    out = _filter(images, taps, dim, 2, (len(taps) - 1) // 2)
    return out.narrow(dim, _PAD, out.shape[dim] - 2 * _PAD)


def _warp(images: Tensor, g_inv: Tensor) -> Tensor:
    """Resample ``images`` at ``g_inv @ output pixel`` (bilinear at 2x, zeros beyond the padding)."""
    n, c, h, w = images.shape
    device = images.device
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Reflect-pad as far as any sample's output corners reach, plus the filters' margin.
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device).T
    reach = (g_inv @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)  # (xy, n * corners)
    margin = torch.cat([-reach, reach]).amax(dim=1) + torch.tensor([2 * _PAD - cx, 2 * _PAD - cy] * 2, device=device)
    limit = torch.tensor([w - 1, h - 1] * 2, device=device)
    mx0, my0, mx1, my1 = (int(v) for v in margin.clamp(min=0).minimum(limit).ceil().tolist())
    images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    g = _shift(n, (mx0 - mx1) / 2, (my0 - my1) / 2, device) @ g_inv

    taps = torch.tensor(_SYM6, dtype=images.dtype, device=device)
    images = _upsample2x(_upsample2x(images, taps, 3), taps, 2)
    # Upsampled pixel m sits at low-resolution position (m - 1/2) / 2.
    g = _zoom(n, 2, 2, device) @ g @ _zoom(n, 0.5, 0.5, device)
    g = _shift(n, -0.5, -0.5, device) @ g @ _shift(n, 0.5, 0.5, device)

    out_h, out_w = (h + 2 * _PAD) * 2, (w + 2 * _PAD) * 2
    in_h, in_w = images.shape[2:]
    # grid_sample's coordinates run over [-1, 1] across each image (align_corners=False).
    theta = _zoom(n, 2 / in_w, 2 / in_h, device) @ g @ _zoom(n, out_w / 2, out_h / 2, device)
    grid = F.affine_grid(theta[:, :2, :], [n, c, out_h, out_w], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _downsample2x(_downsample2x(images, taps, 3), taps, 2)


def apply_augment(
    images: Tensor, params: dict[str, Tensor], scale_std: float = 0.2, aniso_std: float = 0.2, translate_frac_std: float = 0.125
) -> Tensor:
    """``images`` (n, C, H, W) transformed by ``params`` (:meth:`AugmentPipe.draw`'s keys), in float32.

    Pixel moves first, then (if any geometric transform is present) one resampling of the whole
    batch, as the reference: samples with the identity transform go through it too.
    """
    if images.ndim != 4:
        raise ConfigError(f"augmentation needs (n, C, H, W) images, got shape {tuple(images.shape)}")
    images = _blit(images.float(), params)
    g_inv = geometric_matrix(params, images.shape[2], images.shape[3], scale_std, aniso_std, translate_frac_std)
    return images if g_inv is None else _warp(images, g_inv)
