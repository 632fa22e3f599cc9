"""A frozen open_clip image encoder as a classification backbone (pretrained-feature protocols).

Weights come from a local file (or an open_clip ``local-dir:`` folder); nothing is downloaded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.errors import ConfigError, DataNotFoundError
from registry import register


@register("net", "open_clip")
class OpenCLIPImageEncoder(nn.Module):
    """The image tower of an open_clip model, frozen, taking classzoo images in [-1, 1].

    Inputs are mapped to [0, 1], grey images repeated to 3 channels, resized (bilinear) to the
    model's input size and normalised with the model's mean and std; the output is the
    image embedding (``num_features`` = the model's embedding width). Parameters never
    require grad and the tower stays in eval mode.

    Args:
        data_shape: (C, H, W) of the input images (C is 1 or 3).
        model_name: An open_clip architecture (``ViT-B-32``, ``ViT-B-16``, ``RN50``, ...), or
            ``local-dir:/path`` to a folder holding ``open_clip_config.json`` and the weights.
        weights: Local weights file of a named architecture (e.g. a downloaded
            ``open_clip_pytorch_model.bin``); None leaves random weights (tests only).
        normalize: L2-normalise the embeddings (CLIP's convention for similarities).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        model_name: str = "ViT-B-32",
        weights: str | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        import open_clip

        if len(data_shape) != 3 or data_shape[0] not in (1, 3):
            raise ConfigError(f"open_clip needs images with 1 or 3 channels, got data shape {tuple(data_shape)}")
        if model_name.startswith("hf-hub:"):
            raise ConfigError("open_clip: hf-hub models would be downloaded; give a local file (weights) or local-dir:")
        if model_name.startswith("local-dir:"):
            if weights is not None:
                raise ConfigError("open_clip: a local-dir: model carries its own weights; leave `weights` empty")
            if not os.path.isdir(model_name[len("local-dir:") :]):
                raise DataNotFoundError(f"open_clip model folder not found: {model_name[len('local-dir:'):]}")
        elif model_name not in open_clip.list_models():
            raise ConfigError(f"unknown open_clip architecture {model_name!r}")
        if weights is not None and not os.path.isfile(weights):
            raise DataNotFoundError(f"open_clip weights file not found: {weights}")
        if weights is None and not model_name.startswith("local-dir:"):
            warnings.warn(f"open_clip {model_name}: no weights given, the encoder is randomly initialised", stacklevel=2)
        model = open_clip.create_model(model_name, pretrained=weights, pretrained_image=False, pretrained_text=False)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", model.visual.image_size)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.register_buffer("mean", torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1))
        self.visual = model.visual.requires_grad_(False).eval()  # the text tower is not kept
        self.normalize = normalize
        with torch.no_grad():
            self.num_features = int(self.visual(torch.zeros(1, 3, *self.image_size)).shape[-1])

    def train(self, mode: bool = True) -> OpenCLIPImageEncoder:
        super().train(mode)
        self.visual.eval()  # frozen: dropout and normalisation statistics never change
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        features = self.visual((x - self.mean) / self.std)
        return F.normalize(features, dim=-1) if self.normalize else features
