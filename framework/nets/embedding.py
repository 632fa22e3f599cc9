"""Conditioning embeddings shared by the denoiser nets (``unet``, ``dit``, ``resmlp``).

A denoiser net is called ``net(x, noise_level, labels)``; :class:`Conditioning` turns the
(B,) noise level and the (B,) labels into one (B, dim) vector: a positional (sinusoidal)
embedding of the noise level through a two-layer MLP, plus a learned class embedding with
one extra row for the null label ``num_classes`` (classifier-free guidance). With
``num_classes = 0`` the net is unconditional and ignores ``labels``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from framework.errors import ConfigError


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar (Vaswani et al. 2017; EDM's DDPM++ ``PositionalEmbedding``).

    Args:
        dim: Output width (even).
        max_positions: Longest period.
    """

    def __init__(self, dim: int, max_positions: int = 10000) -> None:
        super().__init__()
        if dim % 2:
            raise ConfigError(f"a positional embedding needs an even width, got {dim}")
        half = dim // 2
        freqs = (1 / max_positions) ** (torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        args = x.float().reshape(-1, 1) * self.freqs
        return torch.cat([args.cos(), args.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos 2 pi f x, sin 2 pi f x]``, ``f ~ N(0, scale^2)`` (NCSN++'s embedding)."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        if dim % 2:
            raise ConfigError(f"a Fourier embedding needs an even width, got {dim}")
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        args = 2 * math.pi * x.float().reshape(-1, 1) * self.freqs
        return torch.cat([args.cos(), args.sin()], dim=1)


EMBEDDINGS = {"positional": PositionalEmbedding, "fourier": FourierEmbedding}


def noise_embedding(name: str, dim: int) -> nn.Module:
    """The noise-level embedding ``name`` (a key of :data:`EMBEDDINGS`) of width ``dim``."""
    if name not in EMBEDDINGS:
        raise ConfigError(f"unknown noise embedding {name!r}; choose one of {', '.join(EMBEDDINGS)}")
    return EMBEDDINGS[name](dim)


def augment_map(augment_dim: int, width: int) -> nn.Linear | None:
    """EDM's ``map_augment``: a bias-free linear map of the augment labels onto ``width`` noise features.

    Bias-free so that zero augment labels (an un-augmented image) add nothing; xavier-uniform
    as in EDM's ``SongUNet``. ``None`` when ``augment_dim`` is 0.
    """
    if augment_dim < 0:
        raise ConfigError(f"augment_dim must be >= 0, got {augment_dim}")
    if not augment_dim:
        return None
    layer = nn.Linear(augment_dim, width, bias=False)
    nn.init.xavier_uniform_(layer.weight)
    return layer


def add_augment(features: Tensor, augment: nn.Linear | None, augment_labels: Tensor | None) -> Tensor:
    """``features + augment(augment_labels)``; no labels add nothing; labels a net was not built for are an error."""
    if augment_labels is None:
        return features
    width = augment_labels.shape[-1]
    if augment is None or width != augment.in_features:
        built = augment.in_features if augment is not None else 0
        raise ConfigError(f"augment labels of width {width} given to a net built with augment_dim={built}")
    return features + augment(augment_labels.to(features.dtype))


class Conditioning(nn.Module):
    """``(noise_level, labels[, augment_labels]) -> (B, dim)``: noise embedding MLP plus class embedding.

    With ``augment_dim > 0`` a bias-free linear map of EDM's augment labels is added to the
    noise features before the MLP (EDM's ``map_augment`` in ``SongUNet``/``DhariwalUNet``);
    zero labels, or none, add nothing, which is how sampling asks for un-augmented images.

    Args:
        dim: Output width.
        num_classes: Number of classes (0: unconditional); row ``num_classes`` is the null label.
        noise_channels: Width of the sinusoidal/Fourier features before the MLP.
        embedding: ``positional`` or ``fourier``.
        augment_dim: Width of the augment labels (0: none; EDM CIFAR-10: 9).
    """

    def __init__(
        self, dim: int, num_classes: int, noise_channels: int = 64, embedding: str = "positional", augment_dim: int = 0
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.augment_dim = int(augment_dim)
        self.noise = nn.Sequential(
            noise_embedding(embedding, noise_channels), nn.Linear(noise_channels, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.label = nn.Embedding(self.num_classes + 1, dim) if self.num_classes > 0 else None
        self.augment = augment_map(self.augment_dim, noise_channels)

    def forward(self, noise_level: Tensor, labels: Tensor | None, augment_labels: Tensor | None = None) -> Tensor:
        features = self.noise[0](noise_level)
        emb = add_augment(features, self.augment, augment_labels)
        for layer in self.noise[1:]:
            emb = layer(emb)
        if self.label is not None:
            if labels is None:  # no label given: the null class
                labels = torch.full((emb.shape[0],), self.num_classes, dtype=torch.long, device=emb.device)
            emb = emb + self.label(labels.long())
        return emb
