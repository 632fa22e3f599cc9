"""EMA decay schedules: a weight average's decay as a pure function of training progress.

The average is updated ``ema <- decay * ema + (1 - decay) * weights`` after optimizer steps.
Two schedules, used by the callbacks in :mod:`framework.callbacks.ema`:

* :func:`halflife_decay`: EDM's (Karras et al. 2022; NVlabs/edm ``training/training_loop.py``).
  The average's half-life is a number of training *images*, ramped up with training:
  ``halflife = min(halflife_kimg * 1000, nimg * rampup_ratio)`` and
  ``decay = 0.5 ** (step_nimg / max(halflife, 1e-8))``, where ``nimg`` counts the images
  trained on before this update and ``step_nimg`` those since the previous update (the
  global batch for an update every step). EDM CIFAR-10: 500 kimg, ratio 0.05.
* :func:`warmup_decay`: a constant decay capped early in training,
  ``min(decay, (1 + t) / (10 + t))`` at the ``t``-th update (TensorFlow's
  ``ExponentialMovingAverage(num_updates=...)``; score_sde_pytorch's ``models/ema.py``, which
  its CIFAR-10 runs use with decay 0.9999). Without it a constant decay close to 1 keeps
  the initial weights for about ``1 / (1 - decay)`` updates.

Pure: no Lightning, no torch.
"""

from __future__ import annotations

from framework.errors import ConfigError

__all__ = ["halflife_decay", "warmup_decay"]


def halflife_decay(
    nimg: float, step_nimg: float, halflife_kimg: float = 500.0, rampup_ratio: float | None = 0.05
) -> float:
    """EDM's EMA decay ``0.5 ** (step_nimg / max(min(halflife_kimg * 1000, nimg * rampup_ratio), 1e-8))``.

    Args:
        nimg: Images trained on before this update (all devices; EDM's ``cur_nimg``).
        step_nimg: Images trained on since the previous update (EDM: the global batch).
        halflife_kimg: Half-life of the average in thousands of images (EDM: 500).
        rampup_ratio: The half-life is at most this fraction of ``nimg`` (EDM: 0.05);
            None for no ramp-up.
    """
    if nimg < 0 or step_nimg < 0 or halflife_kimg < 0 or (rampup_ratio is not None and rampup_ratio < 0):
        raise ConfigError(
            f"halflife_decay needs non-negative arguments, got nimg={nimg}, step_nimg={step_nimg}, "
            f"halflife_kimg={halflife_kimg}, rampup_ratio={rampup_ratio}"
        )
    halflife_nimg = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife_nimg = min(halflife_nimg, nimg * rampup_ratio)
    return 0.5 ** (step_nimg / max(halflife_nimg, 1e-8))


def warmup_decay(decay: float, num_updates: int) -> float:
    """``min(decay, (1 + t) / (10 + t))`` for the ``t``-th update (``t`` from 1; TensorFlow, score_sde)."""
    if not 0.0 <= decay <= 1.0:
        raise ConfigError(f"EMA decay must be in [0, 1], got {decay}")
    if num_updates < 0:
        raise ConfigError(f"num_updates must be >= 0, got {num_updates}")
    return min(decay, (1 + num_updates) / (10 + num_updates))
