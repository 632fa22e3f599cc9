"""Callbacks for generators (kind ``callback``): sample grids and generation metrics."""

from framework.callbacks.generation_metrics import GenerationMetrics
from framework.callbacks.sample_grid import SampleGrid

__all__ = ["GenerationMetrics", "SampleGrid"]
