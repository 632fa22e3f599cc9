"""A two-Gaussian mixture in 2-D with exact denoisers, velocities and clean classifier (test fixtures)."""

import math

import torch
from torch import nn

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
STD = 0.5
WEIGHTS = torch.tensor([0.5, 0.5], dtype=torch.float64)


def mixture_denoiser(x, sigma, means=MEANS, std=STD, weights=WEIGHTS):
    """E[x0 | x0 + sigma n = x] for x0 ~ sum_k w_k N(mu_k, std^2 I), exactly."""
    means, weights = means.to(x), weights.to(x)
    var = std**2 + sigma.view(-1, 1) ** 2
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)  # (B, K)
    logr = weights.log()[None] - d2 / (2 * var) - means.shape[1] / 2 * torch.log(var)
    r = torch.softmax(logr, dim=1)
    shrink = std**2 / var  # (B, 1)
    component_means = means[None] + shrink[..., None] * (x[:, None, :] - means[None])
    return (r[..., None] * component_means).sum(1)


class MixtureClassifier(nn.Module):
    """The exact clean classifier p(k | x0) of the mixture (logits up to a constant), with a ReLU-free body."""

    def __init__(self, means=MEANS, std=STD, weights=WEIGHTS):
        super().__init__()
        self.register_buffer("means", means.clone())
        self.register_buffer("logw", weights.log().clone())
        self.std = std
        self.num_classes = len(means)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        x = x.to(self.means)
        return self.logw[None] - ((x[:, None, :] - self.means[None]) ** 2).sum(-1) / (2 * self.std**2)


def exact_velocity(path, x, t, denoiser=mixture_denoiser):
    """The marginal velocity a' x1_hat + b' x0_hat of a path from N(0, I) to the mixture."""
    tb = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]).clamp(1e-4, 1 - 1e-4)
    a, b, da, db = (c.view(-1, 1) for c in path.coefficients(tb))
    x1 = denoiser(x / a, (b / a).view(-1))
    x0 = (x - a * x1) / b
    return da * x1 + db * x0


def mode_fraction(samples, k):
    """Fraction of samples nearer mean k than the other mean."""
    d = ((samples[:, None, :].double() - MEANS[None]) ** 2).sum(-1)
    return (d.argmin(1) == k).double().mean().item()


def gaussian_log_density(x, mean, std):
    return -((x - mean) ** 2).sum(-1) / (2 * std**2) - x.shape[-1] * math.log(std * math.sqrt(2 * math.pi))
