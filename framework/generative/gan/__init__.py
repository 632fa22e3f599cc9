"""Conditional GANs: ADC-GAN with AC-GAN, TAC-GAN and projection-discriminator baselines.

Importing this package registers the ``adcgan`` model (and ``acgan``, ``tacgan``, ``pdgan``),
the ``gan_loss`` conditionings, the ``adversarial_loss`` pairs and the ``gan_discriminator``
feature extractor; the nets live in
:mod:`framework.nets.gan`.
"""

from framework.generative.gan import losses  # noqa: F401
from framework.generative.gan.classifier import (
    DiscriminatorClassifier,
    DiscriminatorFeatures,
)
from framework.generative.gan.module import ACGAN, ADCGAN, PDGAN, TACGAN

__all__ = ["ACGAN", "ADCGAN", "PDGAN", "TACGAN", "DiscriminatorClassifier", "DiscriminatorFeatures"]
