"""``song_unet``: EDM's DDPM++ U-Net (NVlabs/edm ``training/networks.py`` ``SongUNet``, ``--arch=ddpmpp``).

The reference's own outputs, parameter shapes and counts for fixed weights and inputs are in
``tests/nets/fixtures/edm_reference.pt`` (written by ``tests/nets/make_edm_fixture.py`` from a
checkout of the reference; the file records the commit); the other checks are what the net can
show on its own.
"""

import math
from pathlib import Path

import pytest
import torch

import registry
from framework.errors import ConfigError
from framework.generative.diffusion import Diffusion
from framework.nets.song_unet import (
    OUTPUT_INIT,
    QKV_INIT,
    ResampleConv,
    SongBlock,
    SongUNet,
)

FIXTURE = Path(__file__).parent / "fixtures" / "edm_reference.pt"
CIFAR10 = {"model_channels": 128, "channel_mult": [2, 2, 2], "num_blocks": 4, "attn_resolutions": [16], "dropout": 0.13}
TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}


def _tiny(num_classes=3, **kw):
    torch.manual_seed(0)
    return SongUNet(data_shape=(1, 8, 8), num_classes=num_classes, **{**TINY, **kw}).eval()


@pytest.fixture(scope="module")
def edm():
    return torch.load(FIXTURE, weights_only=True)


def from_reference_config(config: dict) -> SongUNet:
    """Our net for the reference's ``SongUNet(**config)`` (square images, in = out channels)."""
    assert config["in_channels"] == config["out_channels"]
    res = config["img_resolution"]
    return SongUNet(
        data_shape=(config["in_channels"], res, res), num_classes=config["label_dim"], augment_dim=config["augment_dim"],
        model_channels=config["model_channels"], channel_mult=config["channel_mult"], num_blocks=config["num_blocks"],
        attn_resolutions=config["attn_resolutions"], dropout=config["dropout"],
        embedding=config.get("embedding_type", "positional"), channel_mult_noise=config.get("channel_mult_noise", 1),
        resample_filter=config.get("resample_filter", [1, 1]),
    )  # fmt: skip


def load_reference_case(case: dict) -> SongUNet:
    """Our net with the fixture's weights, mapped tensor by tensor in the reference's order."""
    net = from_reference_config(case["config"]).eval()
    params = list(net.parameters())
    # Same tensors in the same order with the same shapes: the state dicts map one to one.
    assert [list(p.shape) for p in params] == case["shapes"]
    weights = case["weights"].float().split([math.prod(s) for s in case["shapes"]])
    buffers = dict(net.named_buffers())
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w.view_as(p))
        for name, value in case["buffers"].items():  # the Fourier embedding's random frequencies
            buffers[name].copy_(value)
    return net


@pytest.mark.parametrize("name", ["ddpmpp_labels_augment", "fourier_unconditional"])
def test_outputs_equal_the_reference_for_the_same_weights(edm, name):
    """The reference's output for fixed unit-scale weights (every branch, attention included, matters).

    Tolerance: the largest difference measured is 1.6e-6 on outputs of size ~1 (float32; the
    two compute attention and the linear maps in a different order); 2e-5 leaves a 10x margin
    while a wrong layer (an attention scale, a skip factor, a swapped embedding half) moves
    the output by 1e-2 or more.
    """
    case = edm["song_unet"][name]
    net = load_reference_case(case)
    assert sum(p.numel() for p in net.parameters()) == sum(math.prod(s) for s in case["shapes"])
    inputs = case["inputs"]
    with torch.no_grad():
        out = net(inputs["x"], inputs["noise_labels"], inputs.get("labels"), inputs.get("augment_labels"))
    assert case["output"].abs().max() > 0.5  # the fixture is not a near-zero output
    torch.testing.assert_close(out, case["output"], rtol=0, atol=2e-5)


def test_fixture_names_its_reference():
    fixture = torch.load(FIXTURE, weights_only=True)
    assert fixture["reference"] == "NVlabs/edm" and len(fixture["commit"]) == 40
    assert fixture["commit"].startswith("008a4e5") and "make_edm_fixture.py" in fixture["command"]
    assert FIXTURE.stat().st_size < 600_000


def test_cifar10_size_has_the_reference_parameter_count(edm):
    # NVlabs/edm SongUNet(img_resolution=32, in/out_channels=3, label_dim=10, augment_dim=9) with
    # train.py --arch=ddpmpp's settings, counted by the reference (55,735,299 in 419 tensors);
    # every tensor has the same shape in the same order as ours (checked on the tiny nets above).
    reference = edm["song_unet_cifar10"]
    with torch.device("meta"):
        net = from_reference_config(reference["config"])
    params = list(net.parameters())
    assert sum(p.numel() for p in params) == reference["num_params"] == 55_735_299
    assert len(params) == reference["num_tensors"] == 419
    blocks = [m for m in net.modules() if isinstance(m, SongBlock)]
    assert len(blocks) == 14 + 19  # encoder: 3 x 4 blocks, 2 down; decoder: in0, in1, 3 x 5 blocks, 2 up
    assert sum(b.attention for b in blocks) == 4 + 1 + 1  # 16 px encoder blocks, in0, last 16 px decoder block
    assert net.map_label.weight.shape == (128, 10) and net.map_label.bias is not None
    assert net.map_augment.weight.shape == (128, 9) and net.map_augment.bias is None
    assert net.map_layer0.weight.shape == (512, 128) and net.map_layer1.weight.shape == (512, 512)


def _bound(weight):
    fan_in, fan_out = weight.shape[1] * weight[0, 0].numel(), weight.shape[0] * weight[0, 0].numel()
    return math.sqrt(6 / (fan_in + fan_out))


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    net = SongUNet(data_shape=(3, 16, 16), num_classes=10, augment_dim=9, **{**CIFAR10, "model_channels": 32})
    block = net.enc["16_block1"]
    assert block.attention and block.skip is None
    for layer, gain in [(block.conv0, 1.0), (block.affine, 1.0), (block.conv1, OUTPUT_INIT), (block.qkv, QKV_INIT),
                        (block.proj, OUTPUT_INIT), (net.out_conv, OUTPUT_INIT), (net.map_layer1, 1.0), (net.map_label, 1.0)]:
        bound = gain * _bound(layer.weight)
        w = layer.weight.detach()
        # xavier-uniform times EDM's init_weight: within the bound, spread over it (std bound / sqrt 3)
        assert w.abs().max() <= bound and w.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0
    assert net.map_augment.weight.abs().max() <= _bound(net.map_augment.weight) and net.map_augment.bias is None
    norm = block.norm0
    assert (norm.num_groups, norm.eps) == (min(32, 64 // 4), 1e-6) and torch.equal(norm.weight, torch.ones(64))
    assert net.out_norm.num_groups == 16  # 64 channels: groups of at least 4


def test_resampling_is_a_box_filter():
    conv = ResampleConv(2, 2, 1, down=True)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2)[:, :, None, None])
    x = torch.randn(1, 2, 4, 4)
    assert torch.allclose(conv(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    up = ResampleConv(2, 2, 1, up=True)
    with torch.no_grad():
        up.weight.copy_(torch.eye(2)[:, :, None, None])
    assert torch.allclose(up(x), x.repeat_interleave(2, -1).repeat_interleave(2, -2), atol=1e-6)


def test_noise_embedding_puts_the_sine_half_first():
    net = _tiny(num_classes=0)
    seen = {}
    net.map_layer0.register_forward_pre_hook(lambda module, args: seen.setdefault("features", args[0]))
    c_noise = 0.5
    net(torch.zeros(1, 1, 8, 8), torch.tensor([c_noise]), None)
    half = 4  # model_channels 8 x channel_mult_noise 1, halved
    freqs = 1e-4 ** (torch.arange(half) / (half - 1))  # EDM's endpoint=True: the last frequency is 1 / 10000
    expected = torch.cat([torch.sin(c_noise * freqs), torch.cos(c_noise * freqs)])
    assert torch.allclose(seen["features"][0], expected, atol=1e-6)


def test_null_label_is_the_unconditional_branch():
    net = _tiny()
    x, noise = torch.randn(2, 1, 8, 8), torch.tensor([0.3, -0.2])
    null, classes = torch.tensor([3, 3]), torch.tensor([0, 2])
    with torch.no_grad():
        before_null, before_cls = net.embed(noise, null), net.embed(noise, classes)
        assert torch.equal(net(x, noise, None), net(x, noise, null))
        net.map_label.weight.add_(torch.randn_like(net.map_label.weight))
        # the null label is the zero one-hot vector: no class weight touches it
        assert torch.equal(net.embed(noise, null), before_null)
        assert (net.embed(noise, classes) - before_cls).abs().min(dim=1).values.gt(0).all()
    with pytest.raises(ConfigError):
        net(x, noise, torch.tensor([0, 4]))


def test_zero_augment_labels_equal_none():
    net = _tiny(augment_dim=9)
    x, noise, labels = torch.randn(2, 1, 8, 8), torch.tensor([0.3, -0.2]), torch.tensor([1, 3])
    with torch.no_grad():
        assert torch.equal(net(x, noise, labels, augment_labels=torch.zeros(2, 9)), net(x, noise, labels))
        plain = net.embed(noise, labels)
        assert (net.embed(noise, labels, torch.ones(2, 9)) - plain).abs().max() > 1e-3
        with pytest.raises(ConfigError):
            net(x, noise, labels, augment_labels=torch.zeros(2, 6))


def test_options_are_checked_and_the_alias_builds_it():
    with pytest.raises(ConfigError, match="attn_resolutions"):
        SongUNet(data_shape=(1, 8, 8), attn_resolutions=[16])
    with pytest.raises(ConfigError, match="halved"):
        SongUNet(data_shape=(1, 8, 8), channel_mult=[1, 1, 1, 1, 1])
    with pytest.raises(ConfigError, match="groups"):
        SongUNet(data_shape=(1, 8, 8), model_channels=42)
    assert isinstance(registry.create("net", "ddpmpp", data_shape=(1, 8, 8), num_classes=2), SongUNet)


def test_adaptive_scale_conditions_by_scale_and_shift():
    net = _tiny(adaptive_scale=True)
    assert net.enc["8_block0"].affine.out_features == 2 * 8
    x = torch.randn(2, 1, 8, 8)
    assert net(x, torch.zeros(2), torch.tensor([0, 1])).shape == x.shape


def test_trains_one_step_inside_diffusion_with_the_edm_formulation():
    torch.manual_seed(0)
    model = Diffusion(num_classes=3, data_shape=(1, 8, 8), net="song_unet", net_args=TINY, formulation="edm", augment_p=0.5)
    assert isinstance(model.net, SongUNet) and model.net.augment_dim == 9
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.rand(8, 1, 8, 8) * 2 - 1, torch.randint(0, 3, (8,))
    loss = model.training_step((x, y), 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.requires_grad)
