"""The conditional discriminator: a registered trunk plus the heads a conditioning method needs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from framework.generative.gan.losses import ClassLogits, Conditioning, projection_logit
from framework.nets.gan import init_gan_weights_, spectral_norm_


@dataclass
class DiscriminatorOutput:
    """One discriminator call: adversarial logits (B,), trunk features h (B, C) and classifier logits."""

    adversarial: Tensor
    features: Tensor
    logits: ClassLogits

    def split(self, sizes: list[int]) -> list[DiscriminatorOutput]:
        """Split along the batch (D sees real and fake samples in one call, as the reference)."""
        parts = [t.split(sizes) for t in (self.adversarial, self.features)]
        heads = {k: (v.split(sizes) if v is not None else [None] * len(sizes)) for k, v in vars(self.logits).items()}
        return [
            DiscriminatorOutput(parts[0][i], parts[1][i], ClassLogits(**{k: v[i] for k, v in heads.items()}))
            for i in range(len(sizes))
        ]


class ConditionalDiscriminator(nn.Module):
    """Trunk h = f(x) plus heads, as BigGAN-PyTorch's ``Discriminator`` in the ADC-GAN code.

    Heads (spectrally normalised linears with bias when ``spectral_norm``): the adversarial
    linear(h) -> 1; ``adc`` linear(h) -> 2K; ``ac`` linear(h) -> K; ``twin`` linear(h) -> K
    (TAC); and for projection an embedding(K, C) whose inner product with h is added to the
    adversarial logit. Only the heads the conditioning method uses are built, so DDP sees no
    parameter that never gets a gradient.

    Args:
        trunk: A discriminator trunk (``forward(x) -> (B, num_features)``).
        num_classes: Number of classes K.
        conditioning: The conditioning method (decides the heads).
        spectral_norm: Spectral norm on the heads.
        init: Weight init of the heads (see :func:`framework.nets.gan.init_gan_weights_`).
    """

    def __init__(
        self, trunk: nn.Module, num_classes: int, conditioning: Conditioning, spectral_norm: bool = True, init: str = "N02"
    ) -> None:
        super().__init__()
        self.trunk, self.num_classes, self.conditioning = trunk, num_classes, conditioning
        width = trunk.num_features
        self.num_features = width
        heads = nn.ModuleDict({"adversarial": nn.Linear(width, 1)})
        sizes = {"adc": 2 * num_classes, "ac": num_classes, "twin": num_classes}
        for name in conditioning.heads:
            heads[name] = nn.Linear(width, sizes[name])
        if conditioning.projection:
            heads["embedding"] = nn.Embedding(num_classes, width)
        init_gan_weights_(heads, init)
        if spectral_norm:
            spectral_norm_(heads)
        self.heads = heads

    def forward(self, x: Tensor, labels: Tensor) -> DiscriminatorOutput:
        h = self.trunk(x)
        adversarial = self.heads["adversarial"](h).squeeze(1)
        if self.conditioning.projection:
            adversarial = projection_logit(adversarial, h, self.heads["embedding"](labels))
        logits = ClassLogits(**{name: self.heads[name](h) for name in ("adc", "ac", "twin") if name in self.heads})
        return DiscriminatorOutput(adversarial, h, logits)

    def class_logits(self, x: Tensor) -> Tensor:
        """K-way logits of p(y | x) from the classifier head (ADC: real-class logits 2k)."""
        return self.class_logits_from_features(self.trunk(x))

    def class_logits_from_features(self, h: Tensor) -> Tensor:
        """K-way logits of p(y | x) from trunk features h."""
        if not self.has_classifier:
            from framework.errors import ConfigError

            raise ConfigError(f"a {type(self.conditioning).__name__} discriminator has no classifier head")
        logits = ClassLogits(**{name: self.heads[name](h) for name in ("adc", "ac") if name in self.heads})
        return self.conditioning.class_logits(logits)

    @property
    def has_classifier(self) -> bool:
        return any(name in self.heads for name in ("adc", "ac"))
