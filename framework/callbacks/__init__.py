"""Callbacks for generators (kind ``callback``): sample grids, generation metrics, scheduled EMA;
and FinalCheckpoint, which every ClasszooTrainer run has."""

from framework.callbacks.ema import HalfLifeEMA, ScheduledEMA, WarmupEMA
from framework.callbacks.final_checkpoint import FinalCheckpoint
from framework.callbacks.generation_metrics import GenerationMetrics
from framework.callbacks.sample_grid import SampleGrid

__all__ = ["FinalCheckpoint", "GenerationMetrics", "HalfLifeEMA", "SampleGrid", "ScheduledEMA", "WarmupEMA"]
