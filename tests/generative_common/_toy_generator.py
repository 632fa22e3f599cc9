"""A tiny generator for the tests of the shared generative plumbing (sampling, callbacks, metrics)."""

from __future__ import annotations

import torch
from torch import nn

from framework.generative.base import GenerativeModule
from framework.generative.noise import seeded_randn


class ToyGenerator(GenerativeModule):
    """Sample = tanh(class mean + 0.5 noise), optionally pushed along -grad of ||x||^2 (a stand-in for guidance)."""

    def __init__(self, num_classes: int = 3, data_shape=(1, 4, 4)) -> None:
        super().__init__(num_classes, data_shape)
        self.save_hyperparameters()
        self.means = nn.Parameter(torch.zeros(max(num_classes, 1), *self.data_shape))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return (self.means[self._rows(y)] - x).square().mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", (self.means[self._rows(y)] - x).square().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def _rows(self, labels):
        return labels if self.num_classes else torch.zeros_like(labels)  # unconditional: one mean

    def generate(self, labels, seeds, guidance_scale: float = 0.0, steps: int = 1):
        x = self.means[self._rows(labels)] + 0.5 * seeded_randn(seeds, self.data_shape, device=self.device)
        for _ in range(steps if guidance_scale else 0):
            # Needs autograd: fails under inference mode, as classifier guidance would.
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(x.square().sum(), x)
            x = x - guidance_scale * grad
        return torch.tanh(x)
