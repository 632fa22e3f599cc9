"""classzoo's Lightning side: importing ``framework`` registers every model, DataModule and net.

    from framework import build
    model = build("model", "classifier", num_classes=10)
    data = build("data", "digits")
"""

from __future__ import annotations

from typing import Any

import registry

# Importing the subpackages registers their entries (order matters only for readability).
from framework import data, nets  # noqa: E402,F401
from framework import generative, continual, metrics, callbacks  # noqa: E402,F401
from framework import models  # noqa: E402,F401

registry.load_plugins()


def build(kind: str, name: str, **kwargs: Any) -> Any:
    """Create the object registered as ``kind``/``name`` with ``kwargs``: what the CLI builds."""
    from framework.building import create

    return create(kind, name, **kwargs)


__all__ = ["build"]
