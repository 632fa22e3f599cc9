"""Every fit flushes subnormal floats on CPU (framework.core) and gives the flag back when it ends."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.core import ClasszooModule, flushing_subnormals


class Tiny(ClasszooModule):
    def __init__(self, inner: bool = False, fail: bool = False) -> None:
        super().__init__(num_classes=2, data_shape=(3,))
        self.layer = torch.nn.Linear(3, 2)
        self.inner, self.fail = inner, fail
        self.seen: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(flushing_subnormals())
        if self.fail:
            raise RuntimeError("the step fails")
        if self.inner:  # a fit inside a fit, as generative replay fits its generator
            fit(Tiny())
            self.seen.append(flushing_subnormals())
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(model: Tiny) -> Tiny:
    data = TensorDataset(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, DataLoader(data, batch_size=4))
    return model


@pytest.fixture
def not_flushing():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_flushing_is_on_during_a_fit_and_off_after_it(not_flushing):
    assert fit(Tiny()).seen == [True]
    assert not flushing_subnormals()


def test_a_nested_fit_leaves_the_outer_fit_flushing(not_flushing):
    assert fit(Tiny(inner=True)).seen == [True, True]
    assert not flushing_subnormals()


def test_a_flag_set_before_the_fit_stays_set():
    torch.set_flush_denormal(True)
    try:
        fit(Tiny())
        assert flushing_subnormals()
    finally:
        torch.set_flush_denormal(False)


def test_a_fit_that_raises_gives_the_flag_back(not_flushing):
    # Lightning skips the module's teardown when a fit raises; the flag must not leak anyway.
    model = Tiny(fail=True)
    with pytest.raises(RuntimeError, match="the step fails"):
        fit(model)
    assert model.seen == [True]
    assert not flushing_subnormals()
    assert not any(type(c).__name__ == "_RestoreSubnormalsOnException" for c in model.trainer.callbacks)
