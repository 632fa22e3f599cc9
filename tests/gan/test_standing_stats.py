"""BigGAN's standing statistics (G's batch norms re-estimated before sampling) and SyncBatchNorm."""

import copy

import pytest
import torch
from lightning.pytorch.plugins import TorchSyncBatchNorm
from torch import nn

import registry
from framework.errors import ConfigError
from framework.generative.gan import ADCGAN
from framework.generative.gan import standing_stats as standing
from framework.generative.gan.standing_stats import (
    accumulate_standing_stats_,
    batch_norms,
    standing_stats_copy,
)
from framework.generative.output import check_options, load_samples
from framework.trainer import ClasszooTrainer

TINY = {"generator_args": {"channels": 4, "latent_dim": 8}, "discriminator_args": {"channels": 4}}
RESNET = {
    "data_shape": (3, 16, 16),
    "generator": "sn_resnet_generator",
    "generator_args": {"channels": 2, "latent_dim": 8, "spectral_norm": True},
    "discriminator": "sn_resnet_discriminator",
    "discriminator_args": {"channels": 2},
}


def _resnet_generator():
    torch.manual_seed(0)
    return registry.create("net", "sn_resnet_generator", data_shape=(3, 16, 16), num_classes=3, channels=2, latent_dim=8)


def _stats(net):
    return [(m.running_mean.clone(), m.running_var.clone()) for m in batch_norms(net)]


def test_standing_stats_are_the_cumulative_average_of_per_batch_statistics():
    g = _resnet_generator()
    with torch.no_grad():  # running statistics of some earlier training, to be replaced
        for m in batch_norms(g):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    weights = {k: v.clone() for k, v in g.state_dict().items() if "running_" not in k and "num_batches" not in k}
    inputs = {m: [] for m in batch_norms(g)}
    hooks = [m.register_forward_hook(lambda m, args, out: inputs[m].append(args[0].detach())) for m in inputs]
    accumulate_standing_stats_(g, num_accumulations=3, batch_size=5)
    for h in hooks:
        h.remove()
    assert len(inputs) == 5 and not g.training and not any(m.training for m in batch_norms(g))
    for m, seen in inputs.items():
        assert len(seen) == 3 and seen[0].shape[0] == 5
        # Per-batch statistics computed here, independently of batch norm's own update.
        means = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen])
        variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen])
        torch.testing.assert_close(m.running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var, variances.mean(0), rtol=1e-5, atol=1e-6)
        assert int(m.num_batches_tracked) == 3 and m.momentum == 0.1
    # Only the batch norms ran in training mode: spectral norm's power-iteration vectors and
    # every weight are as they were.
    assert any("_u" in k for k in weights)
    for k, v in weights.items():
        torch.testing.assert_close(g.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_standing_stats_are_seeded_and_forget_the_old_statistics():
    g = _resnet_generator()
    trained = copy.deepcopy(g)
    with torch.no_grad():  # other running statistics, same weights
        for m in batch_norms(trained):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(100)
    a, b = standing_stats_copy(g, 2, 6), standing_stats_copy(trained, 2, 6)
    for (ma, va), (mb, vb) in zip(_stats(a), _stats(b), strict=True):
        torch.testing.assert_close(ma, mb, rtol=0, atol=0)
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    other = standing_stats_copy(g, 2, 6, seed=1)
    assert not torch.equal(_stats(other)[0][0], _stats(a)[0][0])
    assert not torch.equal(_stats(g)[0][0], _stats(trained)[0][0])  # the sources are untouched


def test_generate_with_standing_stats_leaves_training_state_alone(monkeypatch):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, ema_start=0, standing_stats_batch_size=8, **RESNET)
    with torch.no_grad():
        for m in batch_norms(model.generator):
            m.running_mean.normal_()
        model.update_ema()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copies = []
    monkeypatch.setattr(standing, "standing_stats_copy", lambda *a, **k: copies.append(a) or standing_stats_copy(*a, **k))
    labels, seeds = torch.tensor([0, 1, 2, 0]), [5, 6, 7, 8]
    running = model.generate(labels, seeds)
    assert copies == []
    stood = model.generate(labels, seeds, standing_stats=3)
    assert not torch.allclose(stood, running)
    # The re-estimation happens on a copy: every parameter and buffer of G, the EMA G and D is unchanged.
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    # One copy serves every batch; a sample still depends only on its own seed and label.
    torch.testing.assert_close(model.generate(labels[2:], seeds[2:], standing_stats=3), stood[2:])
    assert len(copies) == 1 and copies[0][0] is model.generator_ema
    # Reproducible: a fresh copy of the module gives the same samples.
    torch.testing.assert_close(copy.deepcopy(model).generate(labels, seeds, standing_stats=3), stood)
    copies.clear()
    # New weights (an EMA step) make it re-estimate.
    with torch.no_grad():
        model.generator.output_conv.bias.add_(0.1)
    model.update_ema()
    assert not torch.allclose(model.generate(labels, seeds, standing_stats=3), stood)
    assert len(copies) == 1
    # The raw G has its own copy; the module's default applies when generate is not told.
    model.standing_stats = 3
    model.generate(labels, seeds, use_ema=False)
    assert len(copies) == 2 and copies[1][0] is model.generator
    default = model.generate(labels, seeds)
    torch.testing.assert_close(default, model.generate(labels, seeds, standing_stats=3), rtol=0, atol=0)
    assert not torch.allclose(model.generate(labels, seeds, standing_stats=0), default)


def test_sample_command_takes_standing_stats(tmp_path):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, standing_stats_batch_size=8, **TINY)
    check_options(model.generate, {"standing_stats": 2}, "ADCGAN")
    trainer = ClasszooTrainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    path = trainer.sample(model, num_per_class=2, output=str(tmp_path), batch_size=4, options={"standing_stats": 2})
    images = torch.as_tensor(load_samples(path)[0])
    index = torch.arange(6)
    expected = model.generate(index // 2, index, standing_stats=2).clamp(-1, 1)
    torch.testing.assert_close(images, expected)
    assert not torch.allclose(images, model.generate(index // 2, index).clamp(-1, 1))


def test_lightning_sync_batchnorm_converts_the_generators_and_standing_stats_need_no_sync(monkeypatch):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, ema_start=0, **RESNET)
    labels, seeds = torch.tensor([0, 1, 2]), [1, 2, 3]
    expected = {n: model.generate(labels, seeds, standing_stats=n) for n in (0, 2)}
    plain = sum(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules())
    synced = TorchSyncBatchNorm().apply(copy.deepcopy(model))  # what trainer.sync_batchnorm: true does
    for net in (synced.generator, synced.generator_ema):
        norms = batch_norms(net)
        assert len(norms) == plain == 5 and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
        assert all(isinstance(block.bn1.bn, nn.SyncBatchNorm) for block in net.blocks)  # the conditional ones too
    for n, images in expected.items():
        torch.testing.assert_close(synced.generate(labels, seeds, standing_stats=n), images, rtol=0, atol=0)
    # With a process group, SyncBatchNorm in training mode all-reduces (on the CPU it refuses);
    # the standing-statistics copy uses local batch norms, so rank 0 can re-estimate alone.
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match="SyncBatchNorm"), torch.no_grad():
        synced.generator.train()(torch.randn(2, 8), torch.tensor([0, 1]))
    synced._standing_cache.clear()
    torch.testing.assert_close(synced.generate(labels, seeds, standing_stats=2), expected[2], rtol=0, atol=0)


def test_bad_standing_stats():
    with pytest.raises(ConfigError, match="standing_stats"):
        ADCGAN(standing_stats=-1, **TINY)
    with pytest.raises(ConfigError, match="standing_stats_batch_size"):
        ADCGAN(standing_stats_batch_size=0, **TINY)
    model = ADCGAN(**TINY)
    with pytest.raises(ConfigError, match="standing_stats"):
        model.generate(torch.tensor([0]), [0], standing_stats=-2)

    class NoNorm(nn.Linear):
        latent_dim, num_classes = 4, 2

        def forward(self, z, labels):
            return super().forward(z)

    with pytest.raises(ConfigError, match="batch norm"):
        accumulate_standing_stats_(NoNorm(4, 4), 2, 4)
