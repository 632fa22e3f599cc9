"""General-purpose registered models."""

from framework.models import classifier  # noqa: F401
