"""Any timm model as a backbone: net name ``timm/<model name>`` (e.g. ``timm/resnet18``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from framework.errors import ConfigError
from framework.nets.backbones import load_state_dict_file, require_image_shape
from registry import register_namespace


def timm_backbone(model_name: str, data_shape: Sequence[int], pretrained: bool | str = False, **kwargs) -> nn.Module:
    """timm model ``model_name`` without its classifier (``num_classes=0``): features only.

    Args:
        model_name: Any name ``timm.list_models()`` knows.
        data_shape: (C, H, W); C becomes timm's ``in_chans``.
        pretrained: False (random init), True (timm's hub weights: needs network), or the path
            of a local weights file (state dict; classifier weights are dropped).
        **kwargs: Passed to ``timm.create_model`` (e.g. ``drop_rate``).
    """
    import timm

    c, _, _ = require_image_shape(f"timm/{model_name}", data_shape)
    if not timm.is_model(model_name):
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown timm model {model_name!r}{hint}")
    model = timm.create_model(model_name, pretrained=pretrained is True, num_classes=0, in_chans=c, **kwargs)
    if isinstance(pretrained, str):
        state = load_state_dict_file(pretrained)
        head = model.default_cfg.get("classifier", "fc")
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ConfigError(f"weights {pretrained} do not fit timm/{model_name}: {str(err).splitlines()[1].strip()}") from None
        if missing or unexpected:
            raise ConfigError(
                f"weights {pretrained} do not fit timm/{model_name}: "
                f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
            )
    return model


register_namespace("net", "timm", timm_backbone, "Any timm model by name as a feature backbone (timm/resnet18, ...).")
