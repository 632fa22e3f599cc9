"""A trained GAN discriminator as a classifier: ADC's p(y | x) (or AC-GAN's head) outside training.

ADC-GAN's discriminator learns p(y | x) on real data through the real-class logits 2k of its
2K-way head (Hou et al. 2022); AC/TAC-GAN's through the K-way AC head.
:class:`DiscriminatorClassifier` exposes it with the ``classifier`` model's interface
(``features(x)``, ``forward(x) -> logits``). From a checkpoint path, the ``feature`` entry
``gan_discriminator`` builds the frozen extractor the generation metrics use, and the ``net``
entry ``gan_discriminator`` the trunk as a backbone of the ``classifier`` model.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from framework.errors import ConfigError
from framework.metrics.features import FrozenExtractor
from registry import register


class DiscriminatorClassifier(nn.Module):
    """The discriminator of a trained conditional GAN as a K-way classifier.

    ``features(x)`` is the trunk's h = sum_{H,W} ReLU(blocks(x)); ``forward(x)`` the class
    logits (ADC: the real-class logits 2k; AC/TAC: the AC head).

    Args:
        gan: A trained :class:`~framework.generative.gan.module.ADCGAN` (or subclass) whose
            conditioning has a classifier head (not ``projection``).
    """

    def __init__(self, gan: nn.Module) -> None:
        super().__init__()
        discriminator = gan.discriminator
        if not discriminator.has_classifier:
            raise ConfigError(f"the {gan.hparams.get('conditioning')!r} discriminator has no classifier head")
        self.discriminator = discriminator
        self.num_classes, self.data_shape = gan.num_classes, gan.data_shape
        self.num_features = discriminator.num_features

    @classmethod
    def from_checkpoint(cls, checkpoint: str, map_location: str = "cpu") -> DiscriminatorClassifier:
        """Load an ``adcgan``/``acgan``/``tacgan`` checkpoint and keep its discriminator."""
        from framework.generative.gan.module import ADCGAN
        from framework.loading import load_trained

        return cls(load_trained(checkpoint, ADCGAN, role="GAN", base=ADCGAN, map_location=map_location, freeze=False))

    def features(self, x: Tensor) -> Tensor:
        return self.discriminator.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.discriminator.class_logits(x)


@register("feature", "gan_discriminator")
class DiscriminatorFeatures(FrozenExtractor):
    """Features h and class logits of a trained ADC-/AC-/TAC-GAN discriminator (frozen).

    Args:
        checkpoint: Path of a checkpoint of a registered ``adcgan``/``acgan``/``tacgan`` run.
    """

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        self.classifier = DiscriminatorClassifier.from_checkpoint(checkpoint).eval().requires_grad_(False)
        self.num_features = self.classifier.num_features
        self.num_classes = self.classifier.num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.classifier.features(x)
        return h, self.classifier.discriminator.class_logits_from_features(h)


@register("net", "gan_discriminator")
def discriminator_backbone(data_shape: Sequence[int], checkpoint: str, freeze: bool = False) -> nn.Module:
    """The trunk of a trained GAN discriminator as a backbone (``forward(x)`` -> h, ``num_features``).

    For a linear probe or fine-tuning with the ``classifier`` model
    (``net: gan_discriminator``, ``net_args: {checkpoint: ..., freeze: true}``).

    Args:
        data_shape: Shape of the inputs; must be the GAN's.
        checkpoint: Path of an ``adcgan``/``acgan``/``tacgan``/``pdgan`` checkpoint.
        freeze: Keep the trunk's weights fixed (no gradients).
    """
    from framework.generative.gan.module import ADCGAN
    from framework.loading import load_trained

    gan = load_trained(checkpoint, ADCGAN, role="GAN", base=ADCGAN, data_shape=data_shape, freeze=False)
    trunk = gan.discriminator.trunk
    return trunk.requires_grad_(False) if freeze else trunk
