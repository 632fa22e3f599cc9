"""The registered GAN nets: shapes, spectral norm, init, conditioning, bad shapes."""

import copy

import pytest
import torch

import registry
from framework.errors import ConfigError
from framework.generative.gan.discriminator import ConditionalDiscriminator
from framework.nets.gan import ConditionalBatchNorm2d

GENERATORS = ["sn_resnet_generator", "dcgan_generator"]
DISCRIMINATORS = ["sn_resnet_discriminator", "dcgan_discriminator"]


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (3, 32, 32)])
def test_generators(name, shape):
    g = registry.create("net", name, data_shape=shape, num_classes=3, channels=4)
    out = g(torch.randn(5, g.latent_dim), torch.tensor([0, 1, 2, 0, 1]))
    assert out.shape == (5, *shape) and out.abs().max() <= 1


@pytest.mark.parametrize("name", DISCRIMINATORS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (3, 32, 32)])
def test_discriminator_trunks(name, shape):
    d = registry.create("net", name, data_shape=shape, channels=4)
    h = d(torch.randn(5, *shape))
    assert h.shape == (5, d.num_features) and (h >= 0).all()  # sum of ReLU


def test_biggan_32px_sizes_match_biggan_pytorch():
    # BigGAN-PyTorch at resolution 32, ch 64, dim_z 128, per-layer CBN embeddings, K = 10, counted
    # layer by layer from its BigGAN.py/layers.py: G = linear 528,384 + 3 GBlocks x 1,256,192 +
    # output BN and conv 7,427; D trunk = DBlocks 598,272 + 1,245,952 + 2 x 1,180,160.
    g = registry.create("net", "sn_resnet_generator", data_shape=(3, 32, 32), num_classes=10)
    d = registry.create("net", "sn_resnet_discriminator", data_shape=(3, 32, 32))
    assert len(g.blocks) == 3 and g.width == 256
    assert [b.downsample for b in d.blocks] == [True, True, False, False] and d.num_features == 256
    assert sum(p.numel() for p in g.parameters()) == 528_384 + 3 * 1_256_192 + 7_427
    assert sum(p.numel() for p in d.parameters()) == 598_272 + 1_245_952 + 2 * 1_180_160


def test_spectral_norm_bounds_the_layers():
    torch.manual_seed(0)  # power iteration starts from a random vector: fix it, whatever ran before
    d = registry.create("net", "sn_resnet_discriminator", data_shape=(1, 16, 16), channels=4)
    d.train()
    for _ in range(100):  # power iterations run in training forwards
        d(torch.randn(2, 1, 16, 16))
    conv = d.blocks[1].conv1
    sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=1e-3)
    plain = registry.create("net", "sn_resnet_discriminator", data_shape=(1, 16, 16), channels=4, spectral_norm=False)
    assert not hasattr(plain.blocks[1].conv1, "parametrizations")
    g = registry.create("net", "dcgan_generator", data_shape=(1, 8, 8), num_classes=3, spectral_norm=True)
    assert hasattr(g.ups[0], "parametrizations") and not hasattr(g.norms[0].gain, "parametrizations")


@pytest.mark.parametrize("init, check", [("N02", lambda w: abs(w.std().item() - 0.02) < 0.003), ("ortho", None)])
def test_init(init, check):
    g = registry.create("net", "sn_resnet_generator", data_shape=(3, 16, 16), num_classes=5, channels=16, init=init, spectral_norm=False)
    w = g.blocks[0].conv1.weight
    if check is not None:
        assert check(w)
    else:
        flat = w.flatten(1)  # orthogonal rows (fewer rows than columns)
        torch.testing.assert_close(flat @ flat.T, torch.eye(flat.shape[0]), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="init"):
        registry.create("net", "dcgan_generator", data_shape=(1, 8, 8), num_classes=3, init="kaiming")


def test_conditional_batch_norm_gain_and_bias_per_class():
    cbn = ConditionalBatchNorm2d(2, num_classes=3)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -0.5], [0.0, 0.0]]))
        cbn.bias.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 0.0]]))
    x = torch.randn(4, 2, 3, 3)
    labels = torch.tensor([0, 1, 1, 2])
    out = cbn(x, labels)
    normed = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(out[0], normed[0])
    torch.testing.assert_close(out[1], normed[1] * torch.tensor([2.0, 0.5]).view(2, 1, 1) + torch.tensor([3.0, 0.0]).view(2, 1, 1))


def test_shared_embedding_generator_is_class_conditional():
    g = registry.create("net", "sn_resnet_generator", data_shape=(3, 16, 16), num_classes=4, channels=4, shared_dim=8)
    assert g.shared.embedding_dim == 8 and isinstance(g.blocks[0].bn1.gain, torch.nn.Linear)
    g.eval()
    z = torch.randn(1, g.latent_dim).repeat(2, 1)
    out = g(z, torch.tensor([0, 3]))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name", GENERATORS + DISCRIMINATORS)
def test_bad_shapes_are_config_errors(name):
    kwargs = {"num_classes": 3} if name in GENERATORS else {}
    with pytest.raises(ConfigError, match=name):
        registry.create("net", name, data_shape=(1, 12, 12), **kwargs)
    with pytest.raises(ConfigError):
        registry.create("net", name, data_shape=(10,), **kwargs)


@pytest.mark.parametrize("cond, heads", [("adc", {"adc": 6}), ("tac", {"ac": 3, "twin": 3}), ("projection", {})])
def test_conditional_discriminator_builds_only_the_needed_heads(cond, heads):
    trunk = registry.create("net", "dcgan_discriminator", data_shape=(1, 8, 8), channels=4)
    d = ConditionalDiscriminator(trunk, 3, registry.create("gan_loss", cond))
    assert set(d.heads) == {"adversarial", *heads, *(["embedding"] if cond == "projection" else [])}
    out = d(torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert out.adversarial.shape == (5,)
    for name, size in heads.items():
        assert getattr(out.logits, name).shape == (5, size)
    if cond == "adc":
        d.eval()  # no power-iteration update between the two calls
        torch.testing.assert_close(d.class_logits(torch.zeros(2, 1, 8, 8)), d(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])).logits.adc[:, ::2])
    if cond == "projection":
        assert not d.has_classifier
        with pytest.raises(ConfigError, match="no classifier"):
            d.class_logits(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("name", GENERATORS)
def test_sync_batchnorm_converts_every_batch_norm_of_the_generators(name):
    # Lightning's trainer.sync_batchnorm applies torch's convert_sync_batchnorm, which only
    # sees nn.BatchNorm* modules: the conditional batch norms must hold one, not call F.batch_norm.
    torch.manual_seed(0)
    g = registry.create("net", name, data_shape=(3, 16, 16), num_classes=3, channels=2, latent_dim=8)
    conditional = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    norms = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert conditional and len(norms) >= len(conditional)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(g))
    assert all(isinstance(m.bn, torch.nn.SyncBatchNorm) for m in synced.modules() if isinstance(m, ConditionalBatchNorm2d))
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == len(norms)
    assert not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())
    z, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        g.train()(z, labels)  # non-trivial running statistics, copied over below
        synced.load_state_dict(g.state_dict())
        torch.testing.assert_close(synced.eval()(z, labels), g.eval()(z, labels), rtol=0, atol=0)
