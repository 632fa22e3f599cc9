"""Batch-aware augmentations for in-memory NCHW image tensors in [-1, 1].

:class:`~framework.data.base.InMemoryDataset` hands its ``transform`` a whole batch, so each
augmentation here draws its random parameters for every sample at once (one call per batch,
a different draw per sample) and applies them with tensor operations: no per-sample Python
loop. Randomness comes from torch's global RNG (seeded by ``seed_everything``, saved in and
restored from checkpoints by :class:`~framework.core.ClasszooModule`; DataLoader workers get
their own seeds), drawn on the CPU so that the same seed gives the same augmentation on any
device.

:func:`build_augmentation` turns the options every image DataModule takes
(:class:`~framework.data.base.ImageDataModule`) into one pipeline, in the order of PyCIL's
FeTrIL and TEEN's CIFAR training: crop, flip, brightness, AutoAugment, Cutout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "AutoAugment",
    "Compose",
    "Cutout",
    "RandomBrightness",
    "RandomCrop",
    "RandomHorizontalFlip",
    "build_augmentation",
    "equalize",
]

#: The policies of torchvision's ``AutoAugmentPolicy`` by the name the options take.
AUTOAUGMENT_POLICIES = ("cifar10", "imagenet", "svhn")


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"batch augmentations expect an NCHW batch, got shape {tuple(x.shape)}")


class RandomCrop:
    """Pad by ``padding`` on every side, then crop back to the input size at a random offset per sample.

    The batch version of torchvision's ``RandomCrop(size, padding=p)``. Its default fill, 0 on
    a [0, 1] image before normalisation, is black; black is -1 in our [-1, 1] convention, so
    ``fill`` defaults to -1.

    Args:
        padding: Pixels added on each side (the crop offset is uniform in ``0..2*padding``).
        fill: Value of constant padding.
        padding_mode: ``constant``, ``reflect``, ``replicate`` or ``circular`` (``F.pad`` modes).
    """

    def __init__(self, padding: int = 4, fill: float = -1.0, padding_mode: str = "constant") -> None:
        if padding < 0:
            raise ConfigError(f"crop padding must be >= 0, got {padding}")
        if padding_mode not in ("constant", "reflect", "replicate", "circular"):
            raise ConfigError(f"unknown padding_mode {padding_mode!r}")
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        p = self.padding
        if p == 0:
            return x
        b, _, h, w = x.shape
        if self.padding_mode == "constant":
            padded = F.pad(x, (p, p, p, p), mode="constant", value=self.fill)
        else:
            padded = F.pad(x, (p, p, p, p), mode=self.padding_mode)
        top = torch.randint(0, 2 * p + 1, (b,)).to(x.device)
        left = torch.randint(0, 2 * p + 1, (b,)).to(x.device)
        # Every crop of the padded batch as a strided view (B, C, 2p+1, 2p+1, H, W), no copy;
        # picking one window per sample copies only the output.
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)
        return windows[torch.arange(b, device=x.device), :, top, left]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, fill={self.fill}, padding_mode={self.padding_mode!r})"


class RandomHorizontalFlip:
    """Mirror each sample left-right with probability ``p`` (drawn per sample)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        flip = (torch.rand(x.shape[0]) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply batch transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


class RandomBrightness:
    """torchvision's ``ColorJitter(brightness=strength)`` for a batch: one factor per sample.

    Each image (in [0, 1] pixel space) is multiplied by its own factor drawn uniformly from
    ``[max(0, 1 - strength), 1 + strength]`` and clipped to [0, 1]; in our [-1, 1] range that is
    ``clamp((x + 1) * f - 1, -1, 1)``. PyCIL's CIFAR training uses ``strength = 63/255``.

    Args:
        strength: Half-width of the factor's range (0: no change).
    """

    def __init__(self, strength: float) -> None:
        if strength < 0:
            raise ConfigError(f"brightness strength must be >= 0, got {strength}")
        self.strength = float(strength)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        low, high = max(0.0, 1.0 - self.strength), 1.0 + self.strength
        factor = torch.empty(x.shape[0]).uniform_(low, high).to(device=x.device, dtype=x.dtype)
        return ((x + 1) * factor[:, None, None, None] - 1).clamp_(-1.0, 1.0)

    def __repr__(self) -> str:
        return f"RandomBrightness(strength={self.strength})"


class Cutout:
    """Cutout (DeVries & Taylor, 2017) as PyCIL's and TEEN's ``Cutout(n_holes, length)``, for a batch.

    Per sample and hole, a centre ``(cy, cx)`` uniform over the pixels; rows
    ``clip(cy - length // 2, 0, H) : clip(cy + length // 2, 0, H)`` and the same columns are
    set to ``fill`` (a ``length`` x ``length`` square for even lengths, clipped at the borders;
    holes may overlap). The references multiply the [0, 1] tensor by the mask before
    normalising, i.e. paint black: ``fill`` -1 in our range.

    Args:
        length: Side of the square (0: off).
        holes: Squares per image.
        fill: Value of the cut-out pixels.
    """

    def __init__(self, length: int, holes: int = 1, fill: float = -1.0) -> None:
        if length < 0 or holes < 1:
            raise ConfigError(f"cutout needs length >= 0 and holes >= 1, got length {length}, holes {holes}")
        self.length, self.holes, self.fill = int(length), int(holes), float(fill)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        if self.length == 0:
            return x
        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b, self.holes)).to(x.device)
        cx = torch.randint(0, w, (b, self.holes)).to(x.device)
        half = self.length // 2
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        # (B, holes, H) and (B, holes, W) interval masks; their outer product is each square.
        in_rows = (rows >= (cy - half)[..., None]) & (rows < (cy + half)[..., None])
        in_cols = (cols >= (cx - half)[..., None]) & (cols < (cx + half)[..., None])
        hole = (in_rows[..., :, None] & in_cols[..., None, :]).any(1)  # (B, H, W)
        return x.masked_fill(hole[:, None], self.fill)

    def __repr__(self) -> str:
        return f"Cutout(length={self.length}, holes={self.holes}, fill={self.fill})"


class AutoAugment:
    """torchvision's ``AutoAugment(policy)`` (Cubuk et al., 2019) for a batch, one draw per sample.

    Per sample, as torchvision draws per image: a sub-policy uniformly, then for each of its
    two operations a probability draw (applied when ``u <= p``) and a sign for the signed
    magnitudes. Samples that share an (operation, signed magnitude) are transformed together
    by torchvision's own operation (``torchvision.transforms.autoaugment._apply_op``), so the
    output equals ``AutoAugment`` applied image by image with the same draws. Images are
    quantised to 8 bits for the operations (torchvision's and the references' PIL ops work on
    uint8 images; CIFAR's pixels are exactly 8-bit); samples that no operation touches are
    returned unchanged.

    Args:
        policy: ``cifar10`` (PyCIL's and TEEN's ``CIFAR10Policy``), ``imagenet`` or ``svhn``.
        fill: 8-bit value of the pixels that rotations, shears and translations uncover (128:
            the references' grey ``fillcolor``; torchvision's default would be 0).
        interpolation: ``nearest`` (torchvision's default) or ``bilinear``.
    """

    def __init__(self, policy: str = "cifar10", fill: float = 128.0, interpolation: str = "nearest") -> None:
        from torchvision.transforms import AutoAugment as Reference
        from torchvision.transforms import AutoAugmentPolicy, InterpolationMode

        if policy not in AUTOAUGMENT_POLICIES:
            raise ConfigError(f"unknown AutoAugment policy {policy!r}; choose one of {', '.join(AUTOAUGMENT_POLICIES)}")
        if interpolation not in ("nearest", "bilinear"):
            raise ConfigError(f"AutoAugment interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.policy, self.fill, self.interpolation = policy, float(fill), interpolation
        self.reference = Reference(AutoAugmentPolicy(policy), InterpolationMode(interpolation), fill=None)
        self.policies = self.reference.policies  # 25 pairs ((op, p, magnitude bin), (op, p, magnitude bin))

    def __call__(self, x: Tensor) -> Tensor:
        from torchvision.transforms.autoaugment import _apply_op

        _check_batch(x)
        b, c, h, w = x.shape
        policy = torch.randint(len(self.policies), (b,))
        probs = torch.rand(b, 2)
        signs = torch.randint(2, (b, 2))
        space = self.reference._augmentation_space(10, (h, w))
        image = ((x.detach() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
        touched = torch.zeros(b, dtype=torch.bool)
        for slot in range(2):
            groups: dict[tuple[str, float], list[Tensor]] = {}
            for k, ops in enumerate(self.policies):
                name, p, bin_ = ops[slot]
                chosen = (policy == k) & (probs[:, slot] <= p)
                if not chosen.any():
                    continue
                magnitudes, signed = space[name]
                magnitude = float(magnitudes[bin_].item()) if bin_ is not None else 0.0
                if signed:
                    for sign, value in ((0, -magnitude), (1, magnitude)):
                        groups.setdefault((name, value), []).append(chosen & (signs[:, slot] == sign))
                else:
                    groups.setdefault((name, magnitude), []).append(chosen)
            for (name, magnitude), masks in groups.items():
                index = torch.nonzero(torch.stack(masks).any(0)).flatten()
                if len(index) == 0:
                    continue
                touched[index] = True
                index = index.to(x.device)
                if name == "Equalize":  # torchvision's loops over images and channels; the same LUTs at once
                    image[index] = equalize(image[index])
                else:
                    image[index] = _apply_op(
                        image[index], name, magnitude, self.reference.interpolation, [self.fill] * c
                    )
        if not touched.any():
            return x
        out = x.clone()
        index = torch.nonzero(touched).flatten().to(x.device)
        out[index] = image[index].to(x.dtype) / 127.5 - 1.0
        return out

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy!r}, fill={self.fill}, interpolation={self.interpolation!r})"


def equalize(images: Tensor) -> Tensor:
    """torchvision's ``equalize`` of a uint8 NCHW batch, every (image, channel) at once.

    Per channel (PIL's ``ImageOps.equalize``): histogram h of the 256 levels; ``step =
    (pixels - h[last non-empty level]) // 255``; level v maps to ``(cumsum(h)[v - 1] + step // 2)
    // step`` (0 for v = 0), clipped to 255; a channel with ``step == 0`` is left as it is.
    """
    n, c, height, width = images.shape
    flat = images.reshape(n * c, height * width).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=images.device).scatter_add_(1, flat, torch.ones_like(flat))
    top = flat.max(1, keepdim=True).values  # the last non-empty level
    step = (height * width - hist.gather(1, top)) // 255  # (N*C, 1)
    safe = step.clamp(min=1)
    lut = (hist.cumsum(1) + safe // 2) // safe
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp_(0, 255)
    out = torch.where(step > 0, lut.gather(1, flat), flat)
    return out.to(torch.uint8).reshape(n, c, height, width)


def build_augmentation(
    crop_padding: int = 0,
    horizontal_flip: bool = False,
    brightness: float = 0.0,
    autoaugment: str | None = None,
    cutout: int = 0,
    cutout_holes: int = 1,
) -> Compose | None:
    """The training augmentation from the DataModule options (see :class:`~framework.data.base.ImageDataModule`).

    Order: random crop with padding, horizontal flip, brightness jitter, AutoAugment, Cutout,
    as PyCIL's FeTrIL (``RandomCrop(32, padding=4)``, flip, ``ColorJitter(brightness=63/255)``,
    ``CIFAR10Policy()``, ``Cutout(1, 16)``) and TEEN (the same without the jitter). None when
    every option is off.
    """
    if cutout < 0 or cutout_holes < 1:
        raise ConfigError(f"cutout must be >= 0 and cutout_holes >= 1, got {cutout} and {cutout_holes}")
    steps: list[Callable[[Tensor], Tensor]] = []
    if crop_padding:
        steps.append(RandomCrop(crop_padding))
    if horizontal_flip:
        steps.append(RandomHorizontalFlip())
    if brightness:
        steps.append(RandomBrightness(brightness))
    if autoaugment is not None:
        steps.append(AutoAugment(autoaugment))
    if cutout:
        steps.append(Cutout(cutout, cutout_holes))
    return Compose(steps) if steps else None
