"""Test-only generators with known answers: an analytic Gaussian-mixture diffusion model, a label-permuting generator."""

from __future__ import annotations

import math

import torch
from torch import nn

from framework.data.base import stratified_split
from framework.data.digits import load_digits_tensors
from framework.generative.base import GenerativeModule
from framework.generative.diffusion import Diffusion


class GaussianClassDenoiser(nn.Module):
    """EDM net F for data x0 | c ~ N(means[c], std^2 I): D(x, sigma, c) = mu_c + std^2 / (std^2 + sigma^2) (x - mu_c).

    The formulation calls it as F(c_in x, c_noise, c) and forms D = c_skip x + c_out F; this net
    inverts that preconditioning so that D is the exact posterior mean.
    """

    def __init__(self, means: torch.Tensor, std: float, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("means", means.double())
        self.std, self.sigma_data = std, sigma_data
        self.calls = 0  # rows evaluated, counted independently of the classifier's hook
        self.dtype_anchor = nn.Parameter(torch.zeros(1, dtype=torch.float64), requires_grad=False)  # Diffusion reads the net's dtype

    def forward(self, x_in, c_noise, labels):
        self.calls += len(x_in)
        sigma = (4 * c_noise.double()).exp().view(-1, *([1] * (x_in.ndim - 1)))
        sd2 = self.sigma_data**2
        x = x_in.double() * (sigma**2 + sd2).sqrt()
        mu = self.means[labels]
        denoised = mu + self.std**2 / (self.std**2 + sigma**2) * (x - mu)
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        return ((denoised - c_skip * x) / c_out).to(x_in.dtype)


def gaussian_mixture_diffusion(means: torch.Tensor, std: float) -> Diffusion:
    """A class-conditional EDM ``diffusion`` model whose denoiser is exact for the Gaussian classes."""
    num_classes, dim = means.shape
    model = Diffusion(num_classes=num_classes, data_shape=(dim,), net=GaussianClassDenoiser(means, std), formulation="edm")
    return model.double().eval()


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """log N(x; mean, var I) per row."""
    d = x.shape[1]
    return -0.5 * d * math.log(2 * math.pi * var) - (x - mean).pow(2).sum(1) / (2 * var)


class PermutedLabelGenerator(GenerativeModule):
    """Emits real digits training images of class ``(label + shift) % 10`` (shift 0: a perfect generator).

    Image of sample i: the ``seeds[i] % n``-th training image of that class (the digits split's
    default training part), so its output is real data with the labels permuted by ``shift``.
    """

    def __init__(self, num_classes: int = 10, data_shape=(1, 8, 8), shift: int = 1) -> None:
        super().__init__(num_classes, data_shape)
        self.save_hyperparameters()
        x, y = load_digits_tensors()
        train, _, _ = stratified_split(y, (0.7, 0.1, 0.2), 0)
        self.register_buffer("images", x[train], persistent=False)
        self.register_buffer("labels", y[train], persistent=False)
        self.shift = shift
        self.dummy = nn.Parameter(torch.zeros(1))

    def generate(self, labels, seeds):
        out = []
        for label, seed in zip(labels.tolist(), [int(s) for s in seeds]):
            pool = torch.nonzero(self.labels == (label + self.shift) % self.num_classes).flatten()
            out.append(self.images[pool[seed % len(pool)]])
        return torch.stack(out)


def save_checkpoint(model, path) -> str:
    """Write ``model`` as a Lightning checkpoint (its class recorded, as every classzoo model's) and return the path."""
    import lightning as L

    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return str(path)
