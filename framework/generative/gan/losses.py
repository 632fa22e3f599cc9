"""Adversarial losses and the class-aware terms of conditional GANs (pure functions, no Lightning).

Adversarial losses take the discriminator's adversarial logits (shape (B,)); the class-aware
terms take classifier-head logits and labels. Conventions follow the ADC-GAN reference code
(liang-hou/adcgan, BigGAN-PyTorch ``losses.py`` and ``train_fns.py``):

* ADC (Hou et al. 2022): a 2K-way head; real class k is index 2k, fake class k is
  2k+1. D minimises CE(real -> 2y) + CE(fake -> 2y'+1); G minimises CE(fake -> 2y') -
  CE(fake -> 2y'+1).
* AC (Odena et al. 2017, as in the reference code): D minimises CE(real -> y) on real data
  only; G minimises CE(fake -> y').
* TAC (Gong et al. 2019): AC plus a second K-way "twin" head trained on fakes; D adds
  CE_mi(fake -> y'), G subtracts it.
* Projection (Miyato & Koyama 2018): no extra loss; the discriminator adds <embed(y), h> to its
  adversarial logit (:func:`projection_logit`).

:class:`Conditioning` subclasses (kind ``gan_loss``: ``adc``, ``ac``, ``tac``, ``projection``,
``adc+projection``) say which heads the discriminator needs and combine the terms;
:class:`AdversarialLoss` subclasses (kind ``adversarial_loss``: ``hinge``, ``nonsaturating``,
``wasserstein``) wrap the adversarial pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from registry import register


# -- adversarial losses --------------------------------------------------------------------
def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Hinge loss of D (Lim & Ye 2017; SNGAN): (mean relu(1 - D(x)), mean relu(1 + D(G(z))))."""
    return F.relu(1.0 - real).mean(), F.relu(1.0 + fake).mean()


def hinge_generator_loss(fake: Tensor) -> Tensor:
    """Hinge loss of G: -mean D(G(z))."""
    return -fake.mean()


def nonsaturating_discriminator_loss(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Non-saturating (DCGAN) loss of D (Goodfellow et al. 2014): (mean softplus(-D(x)), mean softplus(D(G(z))))."""
    return F.softplus(-real).mean(), F.softplus(fake).mean()


def nonsaturating_generator_loss(fake: Tensor) -> Tensor:
    """Non-saturating loss of G: mean softplus(-D(G(z))) = -mean log sigmoid(D(G(z)))."""
    return F.softplus(-fake).mean()


def wasserstein_discriminator_loss(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Wasserstein critic loss (Arjovsky et al. 2017): (-mean D(x), mean D(G(z))); needs a Lipschitz D (spectral norm)."""
    return -real.mean(), fake.mean()


def wasserstein_generator_loss(fake: Tensor) -> Tensor:
    """Wasserstein loss of G: -mean D(G(z))."""
    return -fake.mean()


# -- class-aware terms ---------------------------------------------------------------------
def multiclass_hinge_loss(logits: Tensor, labels: Tensor, relu: bool = True) -> Tensor:
    """Crammer-Singer style multi-class hinge of the reference code's ``--hinge`` option.

    Mean over the wrong classes j of relu(1 - logit_y + logit_j) (``relu=False``: the linear
    version -logit_y + logit_j that the reference uses in G's term).
    """
    chosen = logits.gather(1, labels.view(-1, 1))
    margins = logits - chosen + 1.0 if relu else logits - chosen
    if relu:
        margins = F.relu(margins)
    wrong = ~F.one_hot(labels, logits.shape[1]).bool()
    return margins[wrong].mean()


def _classification_loss(logits: Tensor, labels: Tensor, hinge: bool, discriminator: bool) -> Tensor:
    if hinge:
        return multiclass_hinge_loss(logits, labels, relu=discriminator)
    return F.cross_entropy(logits, labels)


def adc_discriminator_loss(
    real_logits: Tensor, real_labels: Tensor, fake_logits: Tensor, fake_labels: Tensor, hinge: bool = False
) -> Tensor:
    """ADC-GAN's discriminator term (Hou et al. 2022): CE(real -> 2y) + CE(fake -> 2y'+1) on the 2K-way head."""
    return _classification_loss(real_logits, 2 * real_labels, hinge, True) + _classification_loss(
        fake_logits, 2 * fake_labels + 1, hinge, True
    )


def adc_generator_loss(fake_logits: Tensor, fake_labels: Tensor, hinge: bool = False) -> Tensor:
    """ADC-GAN's generator term (Hou et al. 2022): CE(fake -> 2y') - CE(fake -> 2y'+1)."""
    return _classification_loss(fake_logits, 2 * fake_labels, hinge, False) - _classification_loss(
        fake_logits, 2 * fake_labels + 1, hinge, False
    )


def adc_real_class_logits(adc_logits: Tensor) -> Tensor:
    """The K real-class logits (even indices) of a 2K-way ADC head: softmax over them is ADC's p(y | x)."""
    return adc_logits[:, 0::2]


def ac_discriminator_loss(real_logits: Tensor, real_labels: Tensor, hinge: bool = False) -> Tensor:
    """AC-GAN's discriminator term as in the reference code: CE(real -> y), real data only."""
    return _classification_loss(real_logits, real_labels, hinge, True)


def ac_generator_loss(fake_logits: Tensor, fake_labels: Tensor, hinge: bool = False) -> Tensor:
    """AC-GAN's generator term: CE(fake -> y')."""
    return _classification_loss(fake_logits, fake_labels, hinge, False)


def tac_discriminator_loss(
    real_logits: Tensor, real_labels: Tensor, twin_fake_logits: Tensor, fake_labels: Tensor, hinge: bool = False
) -> Tensor:
    """TAC-GAN's discriminator term (Gong et al. 2019): CE(real -> y) + CE_twin(fake -> y')."""
    return _classification_loss(real_logits, real_labels, hinge, True) + _classification_loss(
        twin_fake_logits, fake_labels, hinge, True
    )


def tac_generator_loss(fake_logits: Tensor, twin_fake_logits: Tensor, fake_labels: Tensor, hinge: bool = False) -> Tensor:
    """TAC-GAN's generator term: CE(fake -> y') - CE_twin(fake -> y')."""
    return _classification_loss(fake_logits, fake_labels, hinge, False) - _classification_loss(
        twin_fake_logits, fake_labels, hinge, False
    )


def projection_logit(adversarial: Tensor, features: Tensor, class_embedding: Tensor) -> Tensor:
    """Projection discriminator (Miyato & Koyama 2018): psi(h) + <embed(y), h>, shapes (B,), (B, C), (B, C)."""
    return adversarial + (class_embedding * features).sum(dim=1)


# -- the pieces selectable by name -----------------------------------------------------------
class AdversarialLoss(ABC):
    """An adversarial loss pair; subclasses are registered as kind ``adversarial_loss``."""

    @abstractmethod
    def discriminator(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """D's loss on real and on fake adversarial logits, as (loss_real, loss_fake)."""

    @abstractmethod
    def generator(self, fake: Tensor) -> Tensor:
        """G's loss on the adversarial logits of its samples."""


@register("adversarial_loss", "hinge")
class HingeLoss(AdversarialLoss):
    """Hinge loss (SNGAN, BigGAN; the reference code's default)."""

    def discriminator(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        return hinge_discriminator_loss(real, fake)

    def generator(self, fake: Tensor) -> Tensor:
        return hinge_generator_loss(fake)


@register("adversarial_loss", "nonsaturating", aliases=("ns", "dcgan"))
class NonSaturatingLoss(AdversarialLoss):
    """Non-saturating logistic loss (DCGAN)."""

    def discriminator(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        return nonsaturating_discriminator_loss(real, fake)

    def generator(self, fake: Tensor) -> Tensor:
        return nonsaturating_generator_loss(fake)


@register("adversarial_loss", "wasserstein", aliases=("wgan",))
class WassersteinLoss(AdversarialLoss):
    """Wasserstein loss (WGAN); relies on spectral norm for the Lipschitz constraint."""

    def discriminator(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        return wasserstein_discriminator_loss(real, fake)

    def generator(self, fake: Tensor) -> Tensor:
        return wasserstein_generator_loss(fake)


@dataclass
class ClassLogits:
    """The classifier-head logits of one discriminator call (heads the method does not use are None)."""

    adc: Tensor | None = None
    ac: Tensor | None = None
    twin: Tensor | None = None


class Conditioning:
    """How a GAN is made class-conditional; subclasses are registered as kind ``gan_loss``.

    Class attributes tell the discriminator what to build: ``heads`` lists the classifier
    heads (``adc``: 2K-way, ``ac``: K-way, ``twin``: TAC's second K-way head) and
    ``projection`` whether the adversarial logit gets the projection term. Subclass and
    override the two terms to try a new conditioning.

    Args:
        hinge: Use the multi-class hinge instead of cross-entropy (the reference's ``--hinge``).
    """

    heads: tuple[str, ...] = ()
    projection: bool = False

    def __init__(self, hinge: bool = False) -> None:
        self.hinge = hinge

    def discriminator_term(
        self, real: ClassLogits, real_labels: Tensor, fake: ClassLogits, fake_labels: Tensor
    ) -> Tensor | None:
        """The class-aware part of D's loss (before lambda_D); None when the method has none."""
        return None

    def generator_term(self, fake: ClassLogits, fake_labels: Tensor) -> Tensor | None:
        """The class-aware part of G's loss (before lambda_G); None when the method has none."""
        return None

    def class_logits(self, logits: ClassLogits) -> Tensor | None:
        """D's K-way logits of p(y | x) (ADC: the real-class logits; AC/TAC: the AC head); None if D has no classifier."""
        if logits.adc is not None:
            return adc_real_class_logits(logits.adc)
        return logits.ac


@register("gan_loss", "adc", aliases=("adcgan",))
class ADCConditioning(Conditioning):
    """ADC-GAN (Hou et al. 2022): a 2K-way discriminative classifier of real and fake classes."""

    heads = ("adc",)

    def discriminator_term(self, real, real_labels, fake, fake_labels):
        return adc_discriminator_loss(real.adc, real_labels, fake.adc, fake_labels, self.hinge)

    def generator_term(self, fake, fake_labels):
        return adc_generator_loss(fake.adc, fake_labels, self.hinge)


@register("gan_loss", "ac", aliases=("acgan",))
class ACConditioning(Conditioning):
    """AC-GAN (Odena et al. 2017): a K-way auxiliary classifier trained on real data."""

    heads = ("ac",)

    def discriminator_term(self, real, real_labels, fake, fake_labels):
        return ac_discriminator_loss(real.ac, real_labels, self.hinge)

    def generator_term(self, fake, fake_labels):
        return ac_generator_loss(fake.ac, fake_labels, self.hinge)


@register("gan_loss", "tac", aliases=("tacgan",))
class TACConditioning(Conditioning):
    """TAC-GAN (Gong et al. 2019): AC-GAN plus a twin classifier of the fake classes."""

    heads = ("ac", "twin")

    def discriminator_term(self, real, real_labels, fake, fake_labels):
        return tac_discriminator_loss(real.ac, real_labels, fake.twin, fake_labels, self.hinge)

    def generator_term(self, fake, fake_labels):
        return tac_generator_loss(fake.ac, fake.twin, fake_labels, self.hinge)


@register("gan_loss", "projection", aliases=("pd", "pdgan"))
class ProjectionConditioning(Conditioning):
    """Projection discriminator (Miyato & Koyama 2018): adds <embed(y), h> to the adversarial logit."""

    projection = True


@register("gan_loss", "adc+projection", aliases=("adcpdgan", "adc+pd"))
class ADCProjectionConditioning(ADCConditioning):
    """ADC-GAN with a projection discriminator (the paper's ADC + PD)."""

    projection = True
