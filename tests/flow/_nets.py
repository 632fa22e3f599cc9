"""A tiny velocity net for the flow tests: net(x, t, labels) -> like x (the denoiser-net interface)."""

import torch
from torch import nn


class TinyVelocityNet(nn.Module):
    def __init__(self, data_shape, num_classes=0, width=64):
        super().__init__()
        self.data_shape = tuple(data_shape)
        dim = int(torch.tensor(self.data_shape).prod())
        self.embed = nn.Embedding(num_classes + 1, width) if num_classes > 0 else None
        self.inp = nn.Linear(dim + 1, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x, t, labels=None):
        h = self.inp(torch.cat([x.flatten(1), t[:, None].to(x.dtype)], 1))
        if self.embed is not None and labels is not None:
            h = h + self.embed(labels)
        return self.body(h).view(x.shape)
