"""The GAN's generator EMA over whole trajectories: the reference's schedule, computed by hand.

BigGAN-PyTorch's ``ema.update(itr)`` (the ADC-GAN reference): at G iteration ``itr`` (from 1),
decay 0 (a copy) while ``itr < ema_start``, else ``ema <- decay ema + (1 - decay) G``, for
parameters and batch-norm statistics alike.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.generative.gan import ADCGAN

TINY = {"generator_args": {"channels": 4, "latent_dim": 8}, "discriminator_args": {"channels": 4}}


def _floats(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _expected_average(trajectory: list[dict[str, torch.Tensor]], start: int, decay: float) -> dict[str, torch.Tensor]:
    average = {}
    for itr, weights in enumerate(trajectory, start=1):
        d = 0.0 if itr < start else decay
        average = {k: d * average[k] + (1 - d) * w if d else w.clone() for k, w in weights.items()}
    return average


def test_known_trajectory_gives_the_hand_computed_average():
    """G's float state set to k * b at iteration k: EMA = 2b, 2b, 2.4b, 3.04b, 3.824b, 4.6944b (start 3, decay 0.6)."""
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, ema_start=3, ema_decay=0.6, **TINY)
    g, ema = model.generator, model.generator_ema
    base = {k: torch.randn_like(v) for k, v in _floats(g).items() if not k.endswith(("._u", "._v"))}
    coefficients = [1.0, 2.0, 2.4, 3.04, 3.824, 4.6944]
    for k, coefficient in enumerate(coefficients, start=1):
        with torch.no_grad():
            state = g.state_dict()
            for name, b in base.items():
                state[name].copy_(k * b)
        model.generator_steps.fill_(k)
        model.update_ema()
        averaged = ema.state_dict()
        for name, b in base.items():  # parameters and batch-norm running statistics
            torch.testing.assert_close(averaged[name], coefficient * b, rtol=1e-5, atol=1e-5, msg=f"{name} at {k}")
    assert ema.state_dict()["norms.0.bn.num_batches_tracked"] == g.state_dict()["norms.0.bn.num_batches_tracked"]


def test_training_averages_g_after_every_g_step_from_ema_start(tmp_path):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, n_dis=2, ema_start=2, ema_decay=0.5, **TINY)
    trajectory = []

    class RecordG(L.Callback):  # G's float state after every G step
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if int(pl_module.generator_steps) > len(trajectory):
                trajectory.append(_floats(pl_module.generator))

    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.rand(24, 1, 8, 8, generator=g) * 2 - 1, torch.arange(24) % 3), batch_size=6)
    trainer = L.Trainer(
        max_steps=12, callbacks=[RecordG()], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, data)
    assert int(model.generator_steps) == len(trajectory) == 4
    expected = _expected_average(trajectory, start=2, decay=0.5)
    averaged = _floats(model.generator_ema)
    for name, value in expected.items():
        if name.endswith(("._u", "._v")):  # spectral-norm power-iteration vectors are copied, not averaged
            torch.testing.assert_close(averaged[name], trajectory[-1][name])
        else:
            torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6, msg=name)
    moved = [k for k in expected if not torch.allclose(expected[k], trajectory[-1][k], atol=1e-5)]
    assert moved  # the average is not simply the last G: the test can tell
