"""Shared fixtures: an analytic Gaussian data distribution and its exact denoiser."""

import pytest
import torch


class GaussianData:
    """Data ~ N(mu, C); D(x, sigma) = mu + C (C + sigma^2 I)^-1 (x - mu) is E[x0 | x0 + sigma n = x]."""

    def __init__(self, d: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
        self.d = d
        self.cov = 0.3 * a @ a.T + 0.05 * torch.eye(d, dtype=torch.float64)
        self.mean = 0.5 * torch.randn(d, generator=g, dtype=torch.float64)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = sigma.reshape(-1)[0] ** 2
        gain = self.cov @ torch.linalg.inv(self.cov + s2 * torch.eye(self.d, dtype=x.dtype))
        return self.mean + (x - self.mean) @ gain.T

    def log_prob(self, x: torch.Tensor, noise_var: float = 0.0) -> torch.Tensor:
        cov = self.cov + noise_var * torch.eye(self.d, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.mean, cov).log_prob(x)


@pytest.fixture
def gaussian():
    return GaussianData()
