"""The `diffusion` LightningModule: training, seeded generation, NFE, guidance, EMA, likelihood."""


import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import registry
from framework.errors import ConfigError
from framework.generative.diffusion import Diffusion, NoisyClassifier
from framework.generative.diffusion.noisy_classifier import FlowTimeClassifier
from framework.generative.diffusion.samplers import Denoiser, pf_velocity
from framework.generative.likelihood import log_likelihood

TINY_UNET = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": ()}


def _tiny(**kw):
    torch.manual_seed(0)
    return Diffusion(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET, **kw)


@pytest.mark.parametrize("formulation", ["vp", "subvp", "ve", "edm"])
def test_every_formulation_trains(formulation):
    model = _tiny(formulation=formulation)
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.randint(0, 3, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.training_step((x, y), 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # score_sde's likelihood weighting for the SDE losses
    if formulation != "edm":
        w = _tiny(formulation=formulation, likelihood_weighting=True)
        assert torch.isfinite(w.loss(x, y))


def test_generation_is_seeded_per_sample_and_reports_nfe():
    model = _tiny().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    labels, seeds = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    for sampler, steps, nfe in [("edm_heun", 18, 35), ("ddpm", 10, 10), ("pc", 6, 12), ("dpmpp_2m", 8, 8)]:
        batch = model.generate(labels, seeds, sampler=sampler, steps=steps)
        assert model.last_nfe == nfe and batch.shape == (3, 1, 8, 8) and batch.dtype == torch.float32
        alone = model.generate(labels[1:2], seeds[1:2], sampler=sampler, steps=steps)
        torch.testing.assert_close(alone, batch[1:2], rtol=1e-5, atol=1e-5)
        again = model.generate(labels, torch.tensor([10, 99, 12]), sampler=sampler, steps=steps)
        assert not torch.allclose(again[1], batch[1]) and torch.allclose(again[0], batch[0], atol=1e-5)
    # Classifier-free guidance: scale 1 is the conditional model; other scales cost 2 evaluations.
    plain = model.generate(labels, seeds, steps=4)
    torch.testing.assert_close(model.generate(labels, seeds, steps=4, guidance="cfg", guidance_scale=1.0), plain)
    guided = model.generate(labels, seeds, steps=4, guidance="cfg", guidance_scale=3.0)
    assert model.last_nfe == 2 * 7 and not torch.allclose(guided, plain)
    # The sampler state may run in float32 (named as on the command line): same samples, nearly.
    torch.testing.assert_close(model.generate(labels, seeds, steps=4, dtype="float32"), plain, rtol=1e-3, atol=1e-4)
    # Sampler options pass through; a wrong one is a configuration error.
    model.generate(labels, seeds, sampler="edm_heun", steps=4, churn=10.0)
    with pytest.raises(ConfigError):
        model.generate(labels, seeds, sampler="ddim", steps=4, snr=0.1)
    with pytest.raises(registry.UnknownNameError):
        model.generate(labels, seeds, sampler="dpm_fast")


def test_classifier_guidance_with_the_noisy_classifier():
    model = _tiny().eval()
    clf = NoisyClassifier(num_classes=3, data_shape=(1, 8, 8), net_args={"channels": (8,)}).eval()
    model.guidance_classifier = clf
    labels, seeds = torch.tensor([0, 1, 2]), [1, 2, 3]
    plain = model.generate(labels, seeds, steps=4)
    guided = model.generate(labels, seeds, steps=4, guidance="classifier", guidance_scale=5.0)
    both = model.generate(labels, seeds, steps=4, guidance="cfg+classifier", guidance_scale=2.0)
    assert not torch.allclose(guided, plain) and not torch.allclose(both, guided)
    # The flow-time view: x_t = t x1 + (1 - t) x0 is x_hat = x_t / t at sigma = (1 - t) / t.
    x_t, t = torch.randn(3, 1, 8, 8), torch.tensor(0.25)
    torch.testing.assert_close(FlowTimeClassifier(clf)(x_t, t), clf(x_t / 0.25, torch.full((3,), 3.0)))


def test_noisy_classifier_learns_clean_and_noisy_inputs():
    torch.manual_seed(0)
    # Two classes: blobs in the left or right half of the image.
    y = torch.randint(0, 2, (256,))
    x = -torch.ones(256, 1, 8, 8)
    for i, c in enumerate(y):
        x[i, :, :, 4 * c : 4 * c + 4] = 1.0
    clf = NoisyClassifier(num_classes=2, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": (64,)}, sigma_max=2.0)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    for _ in range(60):
        loss = clf.training_step((x, y), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    assert (clf(x).argmax(1) == y).float().mean() > 0.95
    noisy = x + 0.5 * torch.randn_like(x)
    assert (clf(noisy, 0.5).argmax(1) == y).float().mean() > 0.9


class _ExactEDMNet(nn.Module):
    """The EDM net F whose preconditioned denoiser is the exact Gaussian one."""

    def __init__(self, gaussian, sigma_data=0.5):
        super().__init__()
        self.g, self.sd = gaussian, sigma_data
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x_in, c_noise, labels):
        sigma = (4 * c_noise).exp().reshape(-1, 1)
        x = x_in * (sigma**2 + self.sd**2).sqrt()
        c_skip = self.sd**2 / (sigma**2 + self.sd**2)
        c_out = sigma * self.sd / (sigma**2 + self.sd**2).sqrt()
        return (self.g.denoise(x, sigma[:1, 0]) - c_skip * x) / c_out


def test_module_likelihood_equals_the_exact_gaussian_density(gaussian):
    torch.manual_seed(0)
    model = Diffusion(num_classes=0, data_shape=(gaussian.d,), net=_ExactEDMNet(gaussian), formulation="edm").double()
    x = gaussian.mean + torch.randn(6, gaussian.d, dtype=torch.float64) @ torch.linalg.cholesky(gaussian.cov).T
    result = model.log_likelihood(x, divergence="exact", rtol=1e-8, atol=1e-8)
    # The ODE starts at sigma_min = 0.002: the density of the data convolved with N(0, sigma_min^2).
    expected = gaussian.log_prob(x, noise_var=0.002**2)
    # score_sde's estimate uses the prior N(0, 80^2 I) for the true marginal at sigma_max
    # (N(mu, C + 80^2 I)); with the true marginal the ODE + divergence part is exact.
    exact_end = gaussian.log_prob(result.z, noise_var=80.0**2)
    torch.testing.assert_close(result.delta_logp + exact_end, expected, rtol=0, atol=1e-3)
    assert (result.logp - expected).abs().max() < 0.2
    # Hutchinson-Skilling: unbiased; one probe per row, so average 64 copies of each sample.
    reps = 64
    hutch = model.log_likelihood(x.repeat(reps, 1), divergence="hutchinson", generator=torch.Generator().manual_seed(0))
    per_copy = hutch.logp.reshape(reps, len(x))
    assert per_copy.std(0).min() > 0.01  # the probes really differ
    assert (per_copy.mean(0) - result.logp).abs().max() < 0.6

@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_pf_ode_likelihood_equals_exact_marginal_density(gaussian, name):
    """score_sde's likelihood: the PF-ODE from eps to T plus the prior gives log p_eps exactly."""
    torch.manual_seed(0)
    f = registry.create("formulation", name)
    model = Denoiser(gaussian.denoise, f)
    eps = 1e-3
    x = gaussian.mean + torch.randn(5, gaussian.d, dtype=torch.float64) @ torch.linalg.cholesky(gaussian.cov).T
    velocity = lambda t, x_t: pf_velocity(model, x_t, t.clamp(eps, 1.0))
    result = log_likelihood(velocity, x, t_data=eps, t_noise=1.0, prior_logp=f.prior_logp, divergence="exact")

    def marginal(t):
        """Exact density of the marginal at time t: N(alpha mu, alpha^2 C + std^2 I)."""
        alpha, std = f.alpha_std(torch.tensor(t, dtype=torch.float64))
        cov = alpha**2 * gaussian.cov + std**2 * torch.eye(gaussian.d, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(alpha * gaussian.mean, cov)

    # x read as a sample of the marginal at eps; with the true marginal at T in place of the
    # prior the estimate is exact up to the ODE tolerance.
    torch.testing.assert_close(result.delta_logp + marginal(1.0).log_prob(result.z), marginal(eps).log_prob(x), rtol=0, atol=1e-3)
    # With the prior (score_sde's choice) it is off by the prior's mismatch only.
    assert (result.logp - marginal(eps).log_prob(x)).abs().max() < 0.1

def test_ema_weights_are_validated_and_checkpointed(tmp_path):
    """Lightning's EMAWeightAveraging swaps the EMA weights in for validation and saves them."""

    seen = []

    class Probe(Diffusion):
        def validation_step(self, batch, batch_idx):
            seen.append(self.net.head[2].weight.detach().clone())
            return super().validation_step(batch, batch_idx)

    class LiveWeights(L.Callback):  # the trained weights after every optimizer step
        weights = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.weights.append(pl_module.net.head[2].weight.detach().clone())

    torch.manual_seed(0)
    model = Probe(num_classes=3, data_shape=(1, 8, 8), net_args=TINY_UNET)
    data = TensorDataset(torch.rand(32, 1, 8, 8) * 2 - 1, torch.randint(0, 3, (32,)))
    ema, live = EMAWeightAveraging(decay=0.5), LiveWeights()
    trainer = L.Trainer(
        max_steps=4, callbacks=[ema, live], logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, limit_val_batches=1, val_check_interval=4, accelerator="cpu", devices=1,
    )
    trainer.fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    # After fit the model holds the average (on_train_end); validation saw the same weights.
    averaged = ema._average_model.module.net.head[2].weight
    # It is the 0.5-average of the trained weights (the first update copies), not the initial or the last ones.
    expected = live.weights[0]
    for w in live.weights[1:]:
        expected = 0.5 * expected + 0.5 * w
    assert len(live.weights) == 4
    torch.testing.assert_close(averaged, expected)
    assert not torch.allclose(averaged, live.weights[-1], atol=1e-6)
    torch.testing.assert_close(seen[-1], averaged)
    torch.testing.assert_close(model.net.head[2].weight, averaged)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    torch.testing.assert_close(ckpt["state_dict"]["net.head.2.weight"], averaged)
    restored = Diffusion.load_from_checkpoint(path)
    torch.testing.assert_close(restored.net.head[2].weight, averaged)


def test_class_conditional_diffusion_learns_the_classes():
    """Two classes at (-1, -1) and (1, 1): samples land at their own class's point."""
    from framework.data.toy2d import Toy2DDataModule  # noqa: F401 - the registered toy data exists

    torch.manual_seed(0)
    y = torch.randint(0, 2, (512,))
    x = (y.float() * 2 - 1).view(-1, 1).repeat(1, 2) + 0.1 * torch.randn(512, 2)
    model = Diffusion(num_classes=2, data_shape=(2,), net="resmlp", net_args={"width": 64, "depth": 2})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        idx = torch.randint(0, 512, (128,))
        loss = model.loss(x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    labels = torch.tensor([0] * 50 + [1] * 50)
    out = model.generate(labels, range(100), steps=10)
    centre = (labels.float() * 2 - 1).view(-1, 1)
    assert ((out - centre).norm(dim=1) < 0.5).float().mean() > 0.9


def test_bad_configuration_raises():
    with pytest.raises(ConfigError):
        _tiny(label_dropout=1.5)
    with pytest.raises(ConfigError):
        _tiny(formulation="vp", formulation_args={"sigma_data": 0.5})
    with pytest.raises(registry.UnknownNameError):
        _tiny(formulation="vpsde")
    with pytest.raises(registry.UnknownNameError):
        _tiny(sampler="heun3")
    with pytest.raises(ConfigError):
        Diffusion(num_classes=0, net_args=TINY_UNET).generate(torch.zeros(1, dtype=torch.long), [0], guidance="cfg", guidance_scale=2)
    with pytest.raises(ConfigError):
        _tiny().generate(torch.zeros(1, dtype=torch.long), [0], steps=2, guidance="classifier", guidance_scale=2)
    with pytest.raises(ConfigError):
        _tiny(formulation="edm", likelihood_weighting=True).loss(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("nan_to_num", [True, False])
def test_grad_nan_to_num_replaces_nonfinite_gradients_before_the_step(nan_to_num):
    class PoisonGradients(L.Callback):
        def on_after_backward(self, trainer, pl_module):
            grad = pl_module.net.parameters().__next__().grad.view(-1)
            grad[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
            self.grad = grad

    torch.manual_seed(0)
    model = _tiny(grad_nan_to_num=nan_to_num, optimizer=lambda p: torch.optim.SGD(p, lr=1.0))
    first = next(model.net.parameters())
    before = first.detach().clone().view(-1)
    poison = PoisonGradients()
    data = DataLoader(TensorDataset(torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0])), batch_size=4)
    trainer = L.Trainer(max_steps=1, callbacks=[poison], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    after = first.detach().view(-1)
    if nan_to_num:  # EDM: nan -> 0, +-inf -> +-1e5, then a plain SGD step of lr 1
        assert poison.grad[:3].tolist() == [0.0, 1e5, -1e5]
        torch.testing.assert_close(after[:3], before[:3] - torch.tensor([0.0, 1e5, -1e5]))
        assert torch.isfinite(after).all()
    else:
        assert not torch.isfinite(after[:3]).any()
