"""Callbacks for generators (kind ``callback``): sample grids, generation metrics, scheduled EMA."""

from framework.callbacks.ema import HalfLifeEMA, ScheduledEMA, WarmupEMA
from framework.callbacks.generation_metrics import GenerationMetrics
from framework.callbacks.sample_grid import SampleGrid

__all__ = ["GenerationMetrics", "HalfLifeEMA", "SampleGrid", "ScheduledEMA", "WarmupEMA"]
