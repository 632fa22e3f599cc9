"""FinalCheckpoint: the state a fit ends with is always in its checkpoints."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from framework.callbacks.common import run_before_weight_averaging


class FinalCheckpoint(L.Callback):
    """At the end of ``fit``, let every ``ModelCheckpoint`` save the final state if it has not.

    ``ModelCheckpoint`` saves at epoch ends or after validation. A run that stops between
    the two (``max_steps`` reached mid-epoch, as the GAN recipes do; ``trainer.should_stop``
    set by a callback; validation only every few epochs) ends with its checkpoints holding an
    older step: Lightning (2.6) writes ``last.ckpt`` at the end only when nothing was saved
    before. This callback then saves, through the checkpoint callback itself (same file names,
    same rotation):

    - ``last.ckpt``, when the checkpoint callback has ``save_last``;
    - the newest top-k file, when it has no ``monitor`` (its files then are the latest
      states). A monitored top-k is kept as is: the final state has no fresh score (and
      with ``save_last="link"`` Lightning points ``last.ckpt`` at that best file).

    :class:`~framework.trainer.ClasszooTrainer` adds it to every run; it does nothing after
    a run that stopped on a checkpoint already, and nothing when a run ends with an error
    (an interrupted run keeps its last finished checkpoint). It runs before weight-averaging
    callbacks, which put the averaged weights into the model at the end of training.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_before_weight_averaging(trainer, self)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for checkpoint in trainer.checkpoint_callbacks:
            if not isinstance(checkpoint, ModelCheckpoint) or checkpoint._should_skip_saving_checkpoint(trainer):
                continue  # skipped: fast_dev_run, or this step is saved already
            candidates = checkpoint._monitor_candidates(trainer)
            if checkpoint.monitor is None and checkpoint.save_top_k != 0:
                checkpoint._save_topk_checkpoint(trainer, candidates)
            checkpoint._save_last_checkpoint(trainer, candidates)  # a no-op without save_last
