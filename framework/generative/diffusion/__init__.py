"""Score-based diffusion: formulations (vp, subvp, ve, edm), samplers, and the `diffusion` model.

Importing this package registers the formulations (kind ``formulation``), the samplers (kind
``sampler``), the guidance rules (kind ``guidance``) and the ``diffusion`` and
``noisy_classifier`` models.
"""

from framework.generative import guidance  # noqa: F401  (registers the guidance rules)
from framework.generative.diffusion import (  # noqa: F401
    formulations,
    model,
    noisy_classifier,
    samplers,
)
from framework.generative.diffusion.model import Diffusion
from framework.generative.diffusion.noisy_classifier import NoisyClassifier

__all__ = ["Diffusion", "NoisyClassifier"]
