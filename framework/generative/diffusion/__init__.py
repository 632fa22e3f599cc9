"""Score-based diffusion: formulations (vp, subvp, ve, edm), samplers, and the `diffusion` model."""

from framework.generative import guidance  # noqa: F401  (registers the guidance rules)
from framework.generative.diffusion import formulations, samplers  # noqa: F401
