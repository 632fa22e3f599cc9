"""BigGAN's standing statistics: G's batch-norm statistics re-estimated before sampling, no Lightning.

The running statistics that batch norm keeps during training are an exponential average over
past weights (and, for the EMA generator, an average of G's averages). BigGAN-PyTorch's
``utils.accumulate_standing_stats`` (with ``layers.myBN``, ``--accumulate_stats``) replaces
them before sampling: reset the statistics, run G in training mode on
``num_standing_accumulations`` (16) batches of random latents and uniformly drawn labels
without gradients, then sample in eval mode with the plain average of the per-batch means and
variances. Here every batch norm gets ``momentum=None`` for those passes, which is PyTorch's
cumulative average of the same per-batch statistics.

Differences from the reference, on purpose:

- Only the batch norms run in training mode. The reference puts all of G in training mode, so
  its spectral norm also takes one power iteration per pass and the sampled weights move; here
  the re-estimated G has exactly the weights of the G it copies.
- The variance averaged is the unbiased per-batch variance (what PyTorch's running statistics
  hold during training too); ``myBN`` averages the biased one. They differ by the factor
  n / (n - 1), n = batch x H x W values per channel (at least 16 x batch in our generators).
- Latents and labels come from a CPU generator seeded with ``seed``, so every run, device and
  rank computes the same statistics, and a sample still depends on its own seed only.
- The statistics are computed on a private copy (:func:`standing_stats_copy`): the generator
  that training continues with, and its running statistics, are left as they were.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from framework.errors import ConfigError

__all__ = [
    "STANDING_STATS_SEED",
    "StandingStatsCache",
    "accumulate_standing_stats_",
    "batch_norms",
    "standing_stats_copy",
    "without_sync_batchnorm",
]

STANDING_STATS_SEED = 0x5D1A_4E5B
"""Seed of the latents and labels of the accumulation passes (a constant: the statistics are
part of the sampler, so every sampling run of the same weights must use the same ones)."""


def batch_norms(net: nn.Module) -> list[_BatchNorm]:
    """Every batch-norm layer of ``net`` (BatchNorm1d/2d/3d, SyncBatchNorm, conditional BN's inner one)."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def accumulate_standing_stats_(
    net: nn.Module, num_accumulations: int, batch_size: int, seed: int = STANDING_STATS_SEED
) -> nn.Module:
    """Replace the running statistics of ``net``'s batch norms by standing statistics, in place.

    Resets them, runs ``num_accumulations`` batches of ``batch_size`` latents ``N(0, I)`` and
    uniform labels through ``net`` with only the batch norms in training mode and
    ``momentum=None`` (cumulative average), then restores the momenta and leaves ``net`` in
    eval mode. ``net`` follows the generator convention of :mod:`framework.nets.gan`
    (``latent_dim``, ``num_classes``, ``forward(z, labels)``).

    Returns:
        ``net``, in eval mode.
    """
    if num_accumulations < 1:
        raise ConfigError(f"standing statistics need num_accumulations >= 1, got {num_accumulations}")
    if batch_size < 1:
        raise ConfigError(f"standing statistics need batch_size >= 1, got {batch_size}")
    norms = batch_norms(net)
    if not norms:
        raise ConfigError(f"standing statistics need a generator with batch norm; {type(net).__name__} has none")
    if not all(m.track_running_stats for m in norms):
        raise ConfigError("standing statistics need batch norms that track running statistics")
    reference = next(net.parameters())
    noise = torch.Generator().manual_seed(seed)
    momenta = [m.momentum for m in norms]
    net.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for _ in range(num_accumulations):
            z = torch.randn(batch_size, net.latent_dim, generator=noise)
            labels = torch.randint(0, net.num_classes, (batch_size,), generator=noise)
            net(z.to(reference), labels.to(reference.device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        net.eval()
    return net


class _LocalBatchNorm(_BatchNorm):
    """A batch norm over dimension 1 of any input that never synchronises across processes."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")


def without_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``SyncBatchNorm`` replaced by a local batch norm sharing its tensors.

    The reverse of ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (what Lightning's
    ``trainer.sync_batchnorm`` applies). A SyncBatchNorm in training mode all-reduces over the
    process group, so the accumulation passes on one rank only (the sample grid is drawn on rank
    0) would wait for the others forever; every rank computes the same statistics from the same
    seed anyway, so the copy needs no synchronisation.
    """
    if isinstance(module, nn.SyncBatchNorm):
        local = _LocalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            local.weight, local.bias = module.weight, module.bias
        local.running_mean, local.running_var = module.running_mean, module.running_var
        local.num_batches_tracked = module.num_batches_tracked
        local.train(module.training)
        return local
    for name, child in module.named_children():
        module.add_module(name, without_sync_batchnorm(child))
    return module


def standing_stats_copy(
    net: nn.Module, num_accumulations: int, batch_size: int, seed: int = STANDING_STATS_SEED
) -> nn.Module:
    """A copy of ``net`` (without SyncBatchNorm) with standing statistics, in eval mode; ``net`` is untouched."""
    # Under inference mode (Lightning's predict) the copy would be made of inference tensors,
    # which may not be updated in place once outside it.
    with torch.inference_mode(False):
        twin = without_sync_batchnorm(copy.deepcopy(net))
        return accumulate_standing_stats_(twin, num_accumulations, batch_size, seed)


def _weights(net: nn.Module) -> dict[str, Tensor]:
    """State of ``net`` without the batch-norm statistics (which the standing copy replaces)."""
    skip = {f"{name}.{buffer}" for name, m in net.named_modules() if isinstance(m, _BatchNorm) for buffer, _ in m.named_buffers()}
    return {k: v for k, v in net.state_dict().items() if k not in skip}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    wa, wb = _weights(a), _weights(b)
    if wa.keys() != wb.keys():
        return False
    for k, x in wa.items():
        y = wb[k]
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device or not torch.equal(x, y):
            return False
    return True


class StandingStatsCache:
    """The last standing-statistics copy, reused while the weights it was made from are unchanged.

    Sampling calls the generator batch after batch; re-estimating the statistics for each
    batch would cost ``num_accumulations`` extra passes per batch. The copy is kept and
    compared with the source's current weights (parameters and buffers other than batch-norm
    statistics, compared exactly) before every use, so training steps, EMA updates, loaded
    checkpoints and device moves all make it recompute.
    """

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._net: nn.Module | None = None

    def get(self, net: nn.Module, num_accumulations: int, batch_size: int, seed: int = STANDING_STATS_SEED) -> nn.Module:
        """The copy of ``net`` with standing statistics of these settings (see :func:`standing_stats_copy`)."""
        key = (id(net), num_accumulations, batch_size, seed)
        if self._net is None or self._key != key or not _same_weights(net, self._net):
            self._net = None  # release the old copy before making the new one
            self._net = standing_stats_copy(net, num_accumulations, batch_size, seed)
            self._key = key
        return self._net

    def clear(self) -> None:
        self._key, self._net = None, None
