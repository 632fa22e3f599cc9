"""The adcgan module (and acgan/tacgan/pdgan): training steps, EMA, sampling, checkpoints, D as classifier."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import registry
from framework.errors import ConfigError
from framework.generative.gan import ADCGAN, DiscriminatorClassifier
from framework.generative.gan.ema import ema_update_

TINY = {"generator_args": {"channels": 4, "latent_dim": 8}, "discriminator_args": {"channels": 4}}


def _data(n=24, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    y = torch.arange(n) % k
    return DataLoader(TensorDataset(x, y), batch_size=6)


def _trainer(tmp_path, **kw):
    opts = {
        "default_root_dir": tmp_path, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "accelerator": "cpu", "devices": 1,
    }
    return L.Trainer(**(opts | kw))


@pytest.mark.parametrize(
    "name, conditioning",
    [("adcgan", "adc"), ("adcgan", "adc+projection"), ("acgan", None), ("tacgan", None), ("pdgan", None)],
)
def test_training_counts_steps_and_validates(tmp_path, name, conditioning):
    torch.manual_seed(0)
    kwargs = {"conditioning": conditioning} if conditioning else {}
    model = registry.create("model", name, num_classes=3, n_dis=2, ema_start=1, **TINY, **kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=12)  # 4 batches per epoch: 8 D + 4 G optimizer steps
    trainer.fit(model, _data(), _data(12))
    # Manual optimisation counts every optimizer step: max_steps = D steps + G steps.
    assert trainer.global_step == 12
    assert int(model.discriminator_steps) == 8 and int(model.generator_steps) == 4
    for prefix in ("generator.", "discriminator.", "generator_ema."):
        key = next(k for k in before if k.startswith(prefix) and k.endswith(("weight", "original")))
        assert not torch.equal(before[key], model.state_dict()[key]), prefix
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/d_loss"]) and torch.isfinite(metrics["train/g_loss"])
    assert "val/d_adversarial_real" in metrics
    expected_conditioning = {"acgan": "ac", "tacgan": "tac", "pdgan": "projection"}.get(name, conditioning)
    assert model.hparams.conditioning == expected_conditioning
    assert ("val/discriminator_accuracy" in metrics) == (expected_conditioning != "projection")
    (tested,) = trainer.test(model, _data(12), verbose=False)
    assert ("test/discriminator_accuracy" in tested) == (expected_conditioning != "projection")


def test_discriminator_sees_real_and_fake_in_one_call_and_g_step_calls_it_once():
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, **TINY)
    calls = []
    model.discriminator.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    x, y = torch.rand(5, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0, 1])
    model.discriminator_loss(x, y)
    assert calls == [10]
    calls.clear()
    model.generator_loss(4)
    assert calls == [4]


def test_generator_class_term_flows_through_the_adc_classifier():
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, **TINY)
    terms = model.generator_loss(6)
    terms["g_class"].backward()
    assert model.generator.linear.weight.grad.abs().sum() > 0
    assert model.discriminator.heads["adc"].parametrizations.weight.original.grad.abs().sum() > 0
    # With identical rows in the ADC head (all logits equal) CE(fake -> 2y') - CE(fake -> 2y'+1) is exactly 0.
    with torch.no_grad():
        weight = model.discriminator.heads["adc"].parametrizations.weight.original
        weight.copy_(weight[:1].expand_as(weight))
        model.discriminator.heads["adc"].bias.zero_()
    assert model.generator_loss(6)["g_class"].item() == 0.0


def test_fakes_are_a_function_of_seed_stream_and_step():
    model = ADCGAN(num_classes=3, **TINY)
    model._base_seed = 123
    z, labels = model._fake_batch(16, stream=0, counter=5)
    z2, labels2 = model._fake_batch(16, stream=0, counter=5)
    assert torch.equal(z, z2) and torch.equal(labels, labels2)  # a resumed run redraws the same fakes
    assert not torch.allclose(z, model._fake_batch(16, stream=0, counter=6)[0])
    assert not torch.allclose(z, model._fake_batch(16, stream=1, counter=5)[0])
    assert labels.min() >= 0 and labels.max() < 3


def test_ema_copies_before_start_then_averages():
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, ema_start=2, ema_decay=0.9, **TINY)
    g, ema = model.generator, model.generator_ema
    with torch.no_grad():
        g.linear.bias.add_(1.0)
        g.norms[0].bn.running_mean.add_(2.0)
    model.generator_steps.fill_(1)
    model.update_ema()  # before ema_start: copy
    torch.testing.assert_close(ema.linear.bias, g.linear.bias)
    old_bias, old_mean = ema.linear.bias.clone(), ema.norms[0].bn.running_mean.clone()
    with torch.no_grad():
        g.linear.bias.add_(1.0)
        g.norms[0].bn.running_mean.add_(1.0)
    model.generator_steps.fill_(2)
    model.update_ema()
    torch.testing.assert_close(ema.linear.bias, 0.9 * old_bias + 0.1 * g.linear.bias)
    torch.testing.assert_close(ema.norms[0].bn.running_mean, 0.9 * old_mean + 0.1 * g.norms[0].bn.running_mean)


def test_ema_copies_spectral_norm_vectors():
    src = registry.create("net", "dcgan_generator", data_shape=(1, 8, 8), num_classes=3, channels=4, spectral_norm=True)
    dst = registry.create("net", "dcgan_generator", data_shape=(1, 8, 8), num_classes=3, channels=4, spectral_norm=True)
    ema_update_(dst, src, 0.5)
    u_src = src.state_dict()["linear.parametrizations.weight.0._u"]
    torch.testing.assert_close(dst.state_dict()["linear.parametrizations.weight.0._u"], u_src)
    w = 0.5 * (src.state_dict()["linear.parametrizations.weight.original"])
    assert not torch.allclose(dst.state_dict()["linear.parametrizations.weight.original"], 2 * w)


def test_generate_is_seeded_per_sample_and_uses_the_ema(tmp_path):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, n_dis=1, ema_start=100, **TINY)
    _trainer(tmp_path, max_steps=6).fit(model, _data())
    a = model.generate(torch.tensor([0, 1, 2]), [10, 11, 12])
    b = model.generate(torch.tensor([2, 1]), [99, 11])
    torch.testing.assert_close(a[1], b[1])
    assert a.shape == (3, 1, 8, 8) and a.abs().max() <= 1
    # Before ema_start the EMA equals G; push G away and the two samplers differ.
    torch.testing.assert_close(a, model.generate(torch.tensor([0, 1, 2]), [10, 11, 12], use_ema=False))
    with torch.no_grad():
        model.generator.output_conv.bias.add_(0.5)
    assert not torch.allclose(a, model.generate(torch.tensor([0, 1, 2]), [10, 11, 12], use_ema=False))
    torch.testing.assert_close(a, model.generate(torch.tensor([0, 1, 2]), [10, 11, 12]))


def test_checkpoint_holds_the_ema_and_the_discriminator_classifier(tmp_path):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, n_dis=1, ema_start=2, ema_decay=0.5, **TINY)
    trainer = _trainer(tmp_path, max_steps=8)
    trainer.fit(model, _data())
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    loaded = ADCGAN.load_from_checkpoint(path)
    labels, seeds = torch.tensor([0, 1, 2]), [3, 4, 5]
    torch.testing.assert_close(loaded.generate(labels, seeds), model.generate(labels, seeds))
    assert not torch.allclose(loaded.generate(labels, seeds), loaded.generate(labels, seeds, use_ema=False))
    assert int(loaded.generator_steps) == 4

    clf = DiscriminatorClassifier.from_checkpoint(str(path)).eval()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    model.eval()
    torch.testing.assert_close(clf(x), model.discriminator.class_logits(x))
    extractor = registry.create("feature", "gan_discriminator", checkpoint=str(path))
    h, logits = extractor.features_and_logits(x)
    assert h.shape == (4, extractor.num_features) and logits.shape == (4, 3)
    torch.testing.assert_close(logits, clf(x))
    with pytest.raises(ConfigError, match="not found"):
        registry.create("feature", "gan_discriminator", checkpoint=str(tmp_path / "missing.ckpt"))

    trunk = registry.create("net", "gan_discriminator", data_shape=(1, 8, 8), checkpoint=str(path), freeze=True)
    torch.testing.assert_close(trunk.eval()(x), h)
    assert not any(p.requires_grad for p in trunk.parameters())
    with pytest.raises(ConfigError, match="shape"):
        registry.create("net", "gan_discriminator", data_shape=(1, 16, 16), checkpoint=str(path))


@pytest.mark.parametrize("loss", ["nonsaturating", "wasserstein"])
def test_other_adversarial_losses_train(tmp_path, loss):
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, n_dis=1, adversarial_loss=loss, diffaugment="color,translation", **TINY)
    _trainer(tmp_path, max_steps=4).fit(model, _data())
    assert int(model.generator_steps) == 2 and torch.isfinite(model.generator_loss(4)["g_loss"])


def test_diffaugment_applies_in_both_steps():
    torch.manual_seed(0)
    model = ADCGAN(num_classes=3, diffaugment="translation,cutout", **TINY)
    seen = []
    model.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x = torch.ones(4, 1, 8, 8)
    model.discriminator_loss(x, torch.tensor([0, 1, 2, 0]))
    assert (seen[0][:4] == 0).any()  # cutout zeroed part of the (constant) real images


@pytest.mark.parametrize(
    "kwargs, error",
    [({"n_dis": 0}, ConfigError), ({"num_classes": 0}, ConfigError), ({"ema_decay": 1.0}, ConfigError),
     ({"conditioning": "adcc"}, registry.UnknownNameError), ({"diffaugment": "colour"}, ConfigError),
     ({"generator": "dcgan_generator", "data_shape": (1, 12, 12)}, ConfigError)],
)
def test_bad_configuration(kwargs, error):
    with pytest.raises(error):
        ADCGAN(**(TINY | kwargs))
