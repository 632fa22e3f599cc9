"""Feature extractors for the generation metrics, registered under kind ``feature``.

Each is an ``nn.Module`` with a ``num_features`` attribute (torchmetrics' FID and KID read
it) whose ``forward`` takes samples as the data come (float32 in [-1, 1], NCHW or (N, D))
and returns (N, num_features) features. Extractors that can also classify have
``features_and_logits(x)``. They stay in eval mode and hold no trainable parameters.
No extractor downloads anything: weights come from files the user names.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from framework.errors import ConfigError
from registry import register

__all__ = ["ClassifierFeatures", "InceptionFeatures", "FrozenExtractor"]


class FrozenExtractor(nn.Module):
    """Base of the extractors: never trains (``train()`` keeps eval mode), no gradients to its weights."""

    num_features: int

    def train(self, mode: bool = True) -> FrozenExtractor:
        return super().train(False)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features and class logits (None for extractors that do not classify)."""
        return self(x), None


@register("feature", "classifier")
class ClassifierFeatures(FrozenExtractor):
    """Penultimate features and logits of a trained ``classifier`` (the evaluator network).

    Args:
        checkpoint: Path of a checkpoint of the registered ``classifier`` model (train one
            with ``lightning fit --config recipes/quickstart.yaml``).
    """

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        from framework.models.classifier import Classifier

        from framework.loading import load_trained

        self._set_classifier(load_trained(checkpoint, Classifier, role="evaluator", base=Classifier))

    @classmethod
    def from_module(cls, classifier: nn.Module) -> ClassifierFeatures:
        """Wrap a classifier already in memory (it needs ``features(x)`` and ``forward(x) -> logits``)."""
        extractor = cls.__new__(cls)
        nn.Module.__init__(extractor)
        extractor._set_classifier(classifier)
        return extractor

    def _set_classifier(self, classifier: nn.Module) -> None:
        if not callable(getattr(classifier, "features", None)):
            raise ConfigError(f"{type(classifier).__name__} has no features(x) method to extract features with")
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = int(getattr(getattr(classifier, "backbone", None), "num_features", 0)) or None
        self.num_classes = getattr(classifier, "num_classes", None)
        if self.num_features is None:
            shape = getattr(classifier, "data_shape", None)
            if shape is None:
                raise ConfigError(f"cannot tell the feature width of {type(classifier).__name__}")
            with torch.no_grad():
                self.num_features = int(classifier.features(torch.zeros(2, *shape)).shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x).flatten(1)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        from framework.models.classifier import Classifier

        features = self.classifier.features(x)
        # The registered classifier's logits are head(features): reuse them rather than run the net twice.
        if type(self.classifier).forward is Classifier.forward:
            return features.flatten(1), self.classifier.head(features)
        return features.flatten(1), self.classifier(x)


@register("feature", "inception")
class InceptionFeatures(FrozenExtractor):
    """The FID Inception-v3 (torchmetrics' ``NoTrainInceptionV3``, torch-fidelity weights) from a local file.

    Samples in [-1, 1] are mapped to uint8 as the reference FID code expects; one-channel
    images are repeated to three. Resizing to 299x299 uses TensorFlow-1-compatible bilinear
    interpolation when ``antialias`` is False (the published FID protocol, comparable with
    papers) and PyTorch's antialiased bilinear when True (torchmetrics' default since 1.8).

    Args:
        weights: Path of the Inception weights (``pt_inception-2015-12-05-6726825d.pth`` of
            torch-fidelity / pytorch-fid). Never downloaded.
        feature: Which layer: 64, 192, 768 or 2048 (the usual FID).
        antialias: Antialiased resize (see above).
    """

    def __init__(self, weights: str, feature: int = 2048, antialias: bool = False) -> None:
        super().__init__()
        if feature not in (64, 192, 768, 2048):
            raise ConfigError(f"inception feature must be 64, 192, 768 or 2048, got {feature}")
        if not os.path.isfile(weights):
            raise ConfigError(f"Inception weights file not found: {weights} (it is never downloaded)")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as error:  # pragma: no cover - torch-fidelity is a dependency
            raise ConfigError(f"the inception extractor needs torch-fidelity: {error}") from error
        self.inception = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature)],
            feature_extractor_weights_path=weights,
            antialias=antialias,
        )
        self.num_features = feature

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ConfigError(f"the inception extractor needs 1- or 3-channel NCHW images, got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        uint8 = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.inception(uint8)
