"""``dit``: a Diffusion Transformer with adaLN-Zero conditioning (Peebles & Xie 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.vision_transformer import Attention, Mlp
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.nets.backbones import require_image_shape
from framework.nets.embedding import Conditioning
from registry import register


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE / DiT), shape (grid_h * grid_w, dim)."""
    if dim % 4:
        raise ConfigError(f"dit: hidden size {dim} must be a multiple of 4 for 2-D position embeddings")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        args = pos[:, None] * omega[None]
        parts += [args.sin(), args.cos()]
    return torch.cat(parts, dim=1).float()


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the conditioning, gates zero-initialised."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift2, scale2))


@register("net", "dit")
class DiT(nn.Module):
    """Diffusion Transformer: patchify, transformer blocks with adaLN-Zero, linear un-patchify.

    The blocks are its FSDP units (``fsdp_units``, :mod:`framework.parallel`).

    Args:
        data_shape: (C, H, W) of the images; H and W divisible by ``patch_size``.
        num_classes: Number of classes (0: unconditional); label ``num_classes`` is "no label".
        patch_size: Side of the square patches.
        hidden_size: Token width.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width / token width.
        augment_dim: Width of EDM's augment labels (0: none), mapped onto the noise features;
            set by the ``diffusion`` model from its augmentation pipeline.
    """

    fsdp_units = (DiTBlock,)  # framework.parallel: one FSDP unit per block

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        patch_size: int = 2,
        hidden_size: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        augment_dim: int = 0,
    ) -> None:
        super().__init__()
        c, h, w = require_image_shape("dit", data_shape)
        if h % patch_size or w % patch_size:
            raise ConfigError(f"dit: {h}x{w} images do not split into {patch_size}x{patch_size} patches")
        if hidden_size % num_heads:
            raise ConfigError(f"dit: hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.c, self.p, self.gh, self.gw = c, patch_size, h // patch_size, w // patch_size
        self.embed = nn.Conv2d(c, hidden_size, patch_size, stride=patch_size)
        self.register_buffer("pos", _sincos_2d(hidden_size, self.gh, self.gw)[None], persistent=False)
        self.cond = Conditioning(hidden_size, num_classes, noise_channels=256, augment_dim=augment_dim)
        self.augment_dim = self.cond.augment_dim
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.final = nn.Linear(hidden_size, patch_size * patch_size * c)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT's initialisation: xavier for linears, zero for every modulation and the output.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cond.noise[1].weight, std=0.02)
        nn.init.normal_(self.cond.noise[3].weight, std=0.02)
        if self.cond.label is not None:
            nn.init.normal_(self.cond.label.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[1].weight)
            nn.init.zeros_(block.ada[1].bias)
        for layer in (self.final_ada[1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self, x: Tensor, noise_level: Tensor, labels: Tensor | None = None, augment_labels: Tensor | None = None
    ) -> Tensor:
        b = x.shape[0]
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        c = self.cond(noise_level, labels, augment_labels)
        for block in self.blocks:
            tokens = block(tokens, c)
        shift, scale = self.final_ada(c).chunk(2, dim=1)
        out = self.final(_modulate(self.final_norm(tokens), shift, scale))  # (b, gh*gw, p*p*c)
        out = out.reshape(b, self.gh, self.gw, self.p, self.p, self.c)
        return torch.einsum("bhwpqc->bchpwq", out).reshape(b, self.c, self.gh * self.p, self.gw * self.p)
