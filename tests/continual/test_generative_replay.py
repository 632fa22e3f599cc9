"""Generative replay (DGR): the share arithmetic by hand, a 2-step protocol that replays old classes
and resumes bit for bit, every generator family, the generator's training data, bad input."""

import json
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from framework.continual.replay import MixedBatches, keyed_generator, mix_replay, replay_count, replay_share
from framework.continual.scenario import ClassIncremental
from framework.data.digits import DigitsDataModule
from framework.errors import ConfigError
from registry import create

NET = {"net": "cnn", "net_args": {"channels": [16, 32], "dropout": 0.0}}
FLOW = {
    "net": "resmlp",
    "net_args": {"width": 128, "depth": 2},
    "path": "cfm",
    "label_dropout": 0.0,
    "solver": "euler",
    "steps": 4,
    "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 3e-3}},
}
GENERATORS = {
    "flow": FLOW,
    "diffusion": {"net": "resmlp", "net_args": {"width": 32, "depth": 1}, "formulation": "edm", "sampler": "edm_heun", "steps": 3},
    "adcgan": {"generator_args": {"channels": 8, "latent_dim": 8}, "discriminator_args": {"channels": 8}, "n_dis": 1},
}


def two_steps():
    """Digits, 2 base classes then one step of 2 (class order from seed 1993)."""
    return ClassIncremental(DigitsDataModule(), base_classes=2, increment=2, num_steps=1, seed=1993, batch_size=32)


def run(name, root, callbacks=(), ckpt_path=None, **kwargs):
    L.seed_everything(0)
    model = create("model", name, num_classes=10, data_shape=(1, 8, 8), **NET, **kwargs)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=two_steps(), ckpt_path=ckpt_path)
    return model


DGR = {"generator": "flow", "generator_args": FLOW, "generator_epochs": 12, "generator_batch_size": 32,
       "base_epochs": 3, "epochs": 3}


# -- the arithmetic, by hand ------------------------------------------------------------------------
def test_replay_share_is_old_over_seen_and_the_count_makes_that_share_of_the_batch():
    assert replay_share(0, 4) == 0.0
    assert replay_share(4, 6) == pytest.approx(2 / 3)  # digits step 1: 4 old of 6 seen
    assert replay_share(8, 10) == pytest.approx(0.8)
    assert replay_share(8, 10, ratio=0.5) == 0.5  # a fixed share overrides old / seen
    assert replay_share(0, 4, ratio=0.5) == 0.0  # nothing to replay at the base step
    # 64 new rows: 2/3 replayed -> 128 more (128 / 192 = 2/3); 0.8 -> 256 (256 / 320); 0.5 -> 64
    assert [replay_count(64, s) for s in (0.0, 2 / 3, 0.8, 0.5)] == [0, 128, 256, 64]
    assert replay_count(10, 0.25) == 3  # 10 / 3 = 3.33 rounds to 3
    for bad in (lambda: replay_share(4, 4), lambda: replay_share(2, 4, ratio=1.0), lambda: replay_count(8, 1.0)):
        with pytest.raises(ConfigError):
            bad()


def test_mixed_batches_append_pool_rows_at_the_share_and_repeat_per_key():
    pool_x, pool_y = torch.arange(40.0).view(40, 1) + 1000, torch.arange(40) % 4
    x, y = torch.zeros(6, 1), torch.full((6,), 7)
    mx, my = mix_replay(x, y, pool_x, pool_y, 0.6, keyed_generator(0, 1, 2))
    assert len(my) == 6 + 9 and torch.equal(mx[:6], x) and (mx[6:] >= 1000).all()
    assert torch.equal(my[6:], pool_y[(mx[6:, 0] - 1000).long()])  # each row keeps its own label
    again = mix_replay(x, y, pool_x, pool_y, 0.6, keyed_generator(0, 1, 2))[0]
    other = mix_replay(x, y, pool_x, pool_y, 0.6, keyed_generator(0, 1, 3))[0]
    assert torch.equal(again, mx) and not torch.equal(other, mx)
    loader = [(torch.zeros(4, 1), torch.full((4,), 9))] * 3
    mixed = MixedBatches(loader, pool_x, pool_y, 0.5, num_classes=10, key=(0,))
    assert [len(b[1]) for b in mixed] == [8, 8, 8] and mixed.class_counts[9] == 12 and mixed.class_counts[:4].sum() == 12


# -- the protocol ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    root = tmp_path_factory.mktemp("dgr")
    ckpts = ModelCheckpoint(dirpath=root / "ck", filename="{epoch}", every_n_epochs=1, save_top_k=-1)
    dgr = run("generative_replay", root / "full", callbacks=[ckpts], **DGR)
    finetune = run("finetune", root / "finetune", base_epochs=3, epochs=3)
    return root, dgr, finetune


def test_the_solver_keeps_the_old_classes_that_finetune_forgets(protocol):
    root, dgr, finetune = protocol
    assert dgr.done and len(dgr.correct) == 2
    old = dgr.results()["old_accuracy"][1]
    assert finetune.results()["old_accuracy"][1] < 5  # fine-tuning on the new classes only forgets them
    assert old > 80, old
    with open(root / "full" / "metrics.json") as f:
        saved = json.load(f)
    assert saved["method"] == "GenerativeReplay" and len(saved["accuracy"]) == 2
    assert len(saved["step_cpu_seconds"]) == 2 and all(s > 0 for s in saved["step_cpu_seconds"])
    step1 = saved["replay"][1]
    assert step1["share"] == 0.5 and step1["nfe_per_sample"] == 4  # 4 Euler steps
    assert step1["samples"] == 2 * step1["per_class"] and step1["generator_nfe"] == 4 * step1["samples"]


def test_the_generator_is_trained_every_step_on_new_data_and_replayed_old_classes(protocol):
    _, dgr, _ = protocol
    base, step1 = (dgr.replay_log[s]["generator_class_counts"] for s in (0, 1))
    assert all(c > 0 for c in base[:2]) and sum(base[2:]) == 0  # step 0: the base classes only
    assert all(c > 0 for c in step1[:4]) and sum(step1[4:]) == 0  # step 1: new (2, 3) and replayed (0, 1)
    replayed = sum(step1[:2]) / sum(step1)
    assert replayed == pytest.approx(0.5, abs=0.03)  # share old / seen = 2 / 4 of the rows it learned from
    batches = math.ceil(len(dgr.trainer.datamodule.train_indices(1)) / 32)  # of new data, replay on top
    assert dgr.replay_log[1]["generator_epochs"] == 12 and dgr.replay_log[1]["generator_steps"] == 12 * batches


def test_a_resumed_protocol_equals_the_uninterrupted_one(protocol, tmp_path):
    root, full, _ = protocol
    expected = full.state_dict()
    # epochs 0-2 are the base step, epoch=3.ckpt is saved mid-step 1: the pool is drawn again from
    # the checkpoint's generator, the solver's optimizer and replay draws continue, the generator trains
    model = run("generative_replay", tmp_path, ckpt_path=root / "ck" / "epoch=3.ckpt", **DGR)
    assert model.correct == full.correct
    state = model.state_dict()
    assert state.keys() == expected.keys()
    changed = [k for k in expected if not torch.equal(state[k], expected[k])]
    assert not changed, changed[:5]
    assert model.replay_log[1]["generator_class_counts"] == full.replay_log[1]["generator_class_counts"]


@pytest.mark.parametrize("generator", ["diffusion", "adcgan"])
def test_every_generator_family_trains_and_replays(generator, tmp_path):
    model = run("dgr", tmp_path, generator=generator, generator_args=GENERATORS[generator], generator_epochs=1,
                base_epochs=1, epochs=1, replay_per_class=8)
    assert model.done and type(model.generator).__name__ == {"diffusion": "Diffusion", "adcgan": "ADCGAN"}[generator]
    entry = model.replay_log[1]
    assert entry["samples"] == 16 and entry["nfe_per_sample"] == {"diffusion": 5, "adcgan": 1}[generator]
    assert entry["generator_steps"] > 0 and all(c > 0 for c in entry["generator_class_counts"][:4])


def test_solver_labels_are_the_old_solvers_predictions():
    model = create("model", "dgr", num_classes=10, data_shape=(1, 8, 8), **NET, replay_labels="solver",
                   generator_args=FLOW)
    images = torch.randn(20, 1, 8, 8)
    with torch.no_grad():  # an old head that says "class 1" for every image, "class 5" louder (not old)
        model.old_head.weight.zero_()
        model.old_head.bias.copy_(torch.tensor([0.0, 2.0, 1.0, 0, 0, 9.0, 0, 0, 0, 0]))
    assert torch.equal(model.label_with_old_solver(images, known=3), torch.ones(20, dtype=torch.long))


def test_bad_arguments_are_config_errors():
    base = {"num_classes": 10, "data_shape": (1, 8, 8), **NET}
    for bad in [
        {"generator": "classifier"},  # not a generator
        {"generator": "flow", "generator_args": {"nett": "resmlp"}},  # an argument flow does not take
        {"replay_labels": "oracle"},
        {"replay_ratio": 1.0},
        {"generator_epochs": 0},  # issue 1138: a generator that never learns the new classes
        {"sample_options": {"churn": 1.0}, "generator_args": FLOW},  # flow's generate has no churn
    ]:
        with pytest.raises(ConfigError):
            create("model", "generative_replay", **base, **bad)
