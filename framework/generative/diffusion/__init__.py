"""Score-based diffusion: formulations (vp, subvp, ve, edm), samplers, and the `diffusion` model."""

from framework.generative import guidance  # noqa: F401  (registers the guidance rules)
from framework.generative.diffusion import formulations, samplers  # noqa: F401
from framework.generative.diffusion import model, noisy_classifier  # noqa: F401,E402
from framework.generative.diffusion.model import Diffusion  # noqa: E402
from framework.generative.diffusion.noisy_classifier import NoisyClassifier  # noqa: E402

__all__ = ["Diffusion", "NoisyClassifier"]
