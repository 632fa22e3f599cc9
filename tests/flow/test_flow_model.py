"""The registered `flow` model: training, seeded generation, NFE, guidance, likelihood, reflow."""

import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import registry
from framework.data.base import InMemoryDataset, batch_passthrough
from framework.errors import ConfigError
from framework.generative.flow.model import FlowMatching
from framework.generative.flow import reflow as reflow_module
from framework.generative.flow.reflow import ReflowPairs, load_flow

sys.path.insert(0, str(Path(__file__).parent))
from _nets import TinyVelocityNet  # noqa: E402


def _model(num_classes=3, data_shape=(2,), **kw):
    return FlowMatching(num_classes, data_shape, net=TinyVelocityNet(data_shape, num_classes), **kw)


def _trainer(**kw):
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False)
    args.update(kw)
    return L.Trainer(**args)


def _blobs(n=600, seed=0):
    # Three classes of 2-D points around (3c - 3, 2).
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.stack([3.0 * y - 3.0, torch.full((n,), 2.0)], 1) + 0.3 * torch.randn(n, 2, generator=g)
    return x, y


def _loader(x, y, batch_size=128):
    return DataLoader(InMemoryDataset(x, y), batch_size=batch_size, shuffle=True, collate_fn=batch_passthrough)


def test_registered_names():
    assert registry.get("model", "flow") is FlowMatching
    assert {"cfm", "ot_cfm", "class_ot_cfm", "target_cfm", "vp_path", "sb_cfm"} <= set(registry.names("path"))
    assert {"euler", "midpoint", "heun", "rk4", "dopri5"} <= set(registry.names("ode_solver"))
    assert registry.get("data", "reflow_pairs") is ReflowPairs


@pytest.mark.parametrize("path", ["cfm", "ot_cfm", "class_ot_cfm", "target_cfm", "vp_path", "sb_cfm"])
def test_every_path_trains_one_step(path):
    torch.manual_seed(0)
    model = _model(path=path, time_sampling="logit_normal")
    x, y = _blobs(64)
    before = [p.clone() for p in model.parameters()]
    _trainer(max_steps=1).fit(model, _loader(x, y, 32))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_class_conditional_flow_learns_the_classes():
    torch.manual_seed(0)
    np.random.seed(0)
    model = _model(path="class_ot_cfm", optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    x, y = _blobs()
    _trainer(max_epochs=60).fit(model, _loader(x, y))
    labels = torch.arange(300) % 3
    samples = model.generate(labels, torch.arange(300), solver="heun", steps=10)
    assert model.last_nfe == 20
    for c in range(3):
        mean = samples[labels == c].mean(0)
        assert torch.allclose(mean, torch.tensor([3.0 * c - 3.0, 2.0]), atol=0.35), (c, mean)


def test_generation_is_seeded_per_sample_and_reports_nfe():
    model = _model().eval()
    a = model.generate(torch.tensor([0, 1, 2]), [5, 6, 7], solver="rk4", steps=3)
    assert model.last_nfe == 12
    b = model.generate(torch.tensor([1, 2]), [6, 7], solver="rk4", steps=3)
    torch.testing.assert_close(a[1:], b)
    model.generate(torch.tensor([0]), [0], solver="dopri5")
    assert model.last_nfe > 0
    # NFE = net evaluations per sample, counted on the net itself: cfg at scale 1 is the plain
    # conditional model (one branch, 12), other scales evaluate both branches (24).
    rows = []
    hook = model.net.register_forward_pre_hook(lambda mod, args: rows.append(len(args[0])))
    guided = model.generate(torch.tensor([0, 1, 2]), [5, 6, 7], solver="rk4", steps=3, guidance="cfg", guidance_scale=1.0)
    assert model.last_nfe == sum(rows) // 3 == 12
    torch.testing.assert_close(guided, a)
    rows.clear()
    stronger = model.generate(torch.tensor([0, 1, 2]), [5, 6, 7], solver="rk4", steps=3, guidance="cfg", guidance_scale=3.0)
    assert model.last_nfe == sum(rows) // 3 == 24
    hook.remove()
    assert not torch.allclose(stronger, a)


class _ExactGaussianVelocity(nn.Module):
    """Exact velocity of the straight path from N(0, I) to N(mu, diag(s^2)), ignoring labels."""

    def __init__(self, mu, s):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("s", s)

    def forward(self, x, t, labels=None):
        t = t[:, None]
        return self.mu + (self.s - 1) * (x - t * self.mu) / (1 - t + t * self.s)


def test_module_likelihood_is_exact_for_the_exact_velocity():
    mu, s = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    model = FlowMatching(2, (2,), net=_ExactGaussianVelocity(mu, s)).double()
    x = mu + s * torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = model.log_likelihood(x, torch.zeros(8, dtype=torch.long))
    exact = torch.distributions.Normal(mu, s).log_prob(x).sum(1)
    torch.testing.assert_close(result.logp, exact, rtol=1e-5, atol=1e-5)
    samples = model.generate(torch.zeros(4000, dtype=torch.long), torch.arange(4000), solver="dopri5")
    torch.testing.assert_close(samples.mean(0), mu, atol=0.08, rtol=0)
    torch.testing.assert_close(samples.std(0), s, atol=0.08, rtol=0)


def test_bad_configuration_raises():
    with pytest.raises(ConfigError, match="time sampling"):
        _model(time_sampling="beta")
    with pytest.raises(ConfigError, match="label_dropout"):
        _model(label_dropout=1.5)
    with pytest.raises(ConfigError, match="guidance"):
        _model(num_classes=0).generate(torch.zeros(1, dtype=torch.long), [0], guidance="cfg", guidance_scale=2.0)
    with pytest.raises(ConfigError, match="re-pair"):
        _model(path="ot_cfm").loss(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, 2))


def test_reflow_needs_a_rebuildable_teacher(tmp_path):
    teacher = _model()
    trainer = _trainer(max_steps=1)
    trainer.fit(teacher, _loader(*_blobs(64)))
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    # Its net was passed as a module, so the checkpoint cannot rebuild it by name.
    with pytest.raises(ConfigError, match="cannot rebuild"):
        ReflowPairs(str(ckpt), num_pairs=100).setup()
    with pytest.raises(FileNotFoundError, match="not found"):
        ReflowPairs(str(tmp_path / "missing.ckpt"))


def test_reflow_pairs_datamodule(tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher = FlowMatching(3, (2,), net="resmlp", net_args={"width": 32, "depth": 2}, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    x, y = _blobs()
    trainer = _trainer(max_epochs=30)
    trainer.fit(teacher, _loader(x, y))
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)

    cache = tmp_path / "pairs.npz"
    data = ReflowPairs(
        str(ckpt), num_pairs=600, val_fraction=0.1, teacher_solver="rk4", teacher_steps=10, cache=str(cache), batch_size=128
    )
    assert data.num_classes == 3 and data.data_shape == (2,)
    data.setup("fit")
    assert cache.exists() and data.teacher_nfe == 40
    x1, labels, x0 = next(iter(data.train_dataloader()))
    assert x1.shape == x0.shape == (128, 2) and labels.dtype == torch.long
    # The pairs are the teacher's own ODE map.
    teacher.eval()
    torch.testing.assert_close(teacher.solve(x0, labels, solver="rk4", steps=10).x, x1, rtol=1e-4, atol=1e-4)
    # Same arguments, same pairs, read back from the cache (the teacher is not run again).
    again = ReflowPairs(str(ckpt), num_pairs=600, val_fraction=0.1, teacher_solver="rk4", teacher_steps=10, cache=str(cache))
    with monkeypatch.context() as m:
        m.setattr(reflow_module, "load_flow", lambda *a, **k: pytest.fail("the cached pairs were not reused"))
        again.setup("fit")
    torch.testing.assert_close(again.train_dataset.x, data.train_dataset.x)
    assert again.teacher_nfe is None
    # Other options (or another teacher): the cache is stale and the pairs are generated again.
    other = ReflowPairs(str(ckpt), num_pairs=600, val_fraction=0.1, teacher_solver="rk4", teacher_steps=5, cache=str(cache))
    other.setup("fit")
    assert other.teacher_nfe == 20
    torch.testing.assert_close(other.train_dataset.x0, data.train_dataset.x0)
    assert not torch.allclose(other.train_dataset.x, data.train_dataset.x)

    # The student starts from the teacher and trains on the pairs; at 1 Euler step it lands
    # closer to the teacher's samples than the teacher itself does.
    student = FlowMatching(3, (2,), net="resmlp", net_args={"width": 32, "depth": 2}, init_checkpoint=str(ckpt),
                           optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), label_dropout=0.0)
    student_trainer = _trainer(max_epochs=15)
    student_trainer.fit(student, datamodule=data)
    val_x1, val_y, val_x0 = data.val_dataset.x, data.val_dataset.y, data.val_dataset.x0
    student.eval()
    err_teacher = (teacher.solve(val_x0, val_y, solver="euler", steps=1).x - val_x1).pow(2).sum(1).mean()
    err_student = (student.solve(val_x0, val_y, solver="euler", steps=1).x - val_x1).pow(2).sum(1).mean()
    assert err_student < 0.5 * err_teacher, (err_student, err_teacher)
    # The student's checkpoint reloads without the teacher it was initialised from.
    student_trainer.save_checkpoint(tmp_path / "student.ckpt")
    ckpt.unlink()
    reloaded = load_flow(str(tmp_path / "student.ckpt"))
    torch.testing.assert_close(reloaded.solve(val_x0, val_y, solver="euler", steps=1).x,
                               student.solve(val_x0, val_y, solver="euler", steps=1).x)


class _LinearClassifier(nn.Module):
    """logits = x W^T (time ignored): grad_x log p(y | x) = W_y - sum_k p_k W_k."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))

    def forward(self, x, t):
        return x @ self.weight.T


def test_classifier_guidance_adds_the_scaled_class_score():
    model = _model().eval()
    model.guidance_classifier = _LinearClassifier()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1])
    t = torch.tensor(0.25)
    plain = model.velocity_field(labels)(t, x)
    guided = model.velocity_field(labels, "classifier", 2.0)(t, x)
    w = model.guidance_classifier.weight.detach()
    grad = w[labels] - torch.softmax(x @ w.T, 1) @ w
    # Straight path: velocity = x / t + (1 - t) / t * score.
    torch.testing.assert_close(guided - plain, 2.0 * (1 - 0.25) / 0.25 * grad)
    model.generate(labels, range(5), steps=4, guidance="classifier", guidance_scale=1.0)
    assert model.last_nfe == 4


def test_sampler_is_another_name_for_solver():
    model = _model().eval()
    labels, seeds = torch.tensor([0, 1]), [3, 4]
    torch.testing.assert_close(
        model.generate(labels, seeds, sampler="midpoint", steps=3), model.generate(labels, seeds, solver="midpoint", steps=3)
    )
    with pytest.raises(ConfigError, match="disagree"):
        model.generate(labels, seeds, solver="euler", sampler="midpoint")


def test_guidance_classifier_checkpoint_in_flow_time(tmp_path):
    import lightning as L

    from framework.generative.diffusion.noisy_classifier import FlowTimeClassifier, NoisyClassifier

    clf = NoisyClassifier(num_classes=3, data_shape=(2,), net="mlp", net_args={"hidden": (16,)})
    path = tmp_path / "noisy.ckpt"
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(clf)
    trainer.save_checkpoint(path)
    model = FlowMatching(3, (2,), net="resmlp", net_args={"width": 16, "depth": 1}, guidance_classifier=str(path)).eval()
    assert isinstance(model.guidance_classifier, FlowTimeClassifier)
    assert not any(p.requires_grad for p in model.guidance_classifier.parameters())
    labels, seeds = torch.tensor([0, 1, 2]), [5, 6, 7]
    plain = model.generate(labels, seeds, steps=4)
    guided = model.generate(labels, seeds, steps=4, guidance="classifier", guidance_scale=5.0)
    assert not torch.allclose(guided, plain)
    with pytest.raises(ConfigError, match="straight path"):
        FlowMatching(3, (2,), net="resmlp", path="vp_path", guidance_classifier=str(path))
    # Exact only for the independent coupling: OT couplings warn, in Python and in the log.
    import logging
    import warnings

    for coupled in ("ot_cfm", "class_ot_cfm"):
        with pytest.warns(UserWarning, match=f"path '{coupled}' is approximate"):
            FlowMatching(3, (2,), net="resmlp", path=coupled, guidance_classifier=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the independent coupling does not warn
        FlowMatching(3, (2,), net="resmlp", path="cfm", guidance_classifier=str(path))


def test_inexact_classifier_guidance_is_logged(caplog):
    from framework.generative.flow.model import warn_inexact_classifier_guidance

    with caplog.at_level("WARNING", logger="framework.generative.flow.model"), pytest.warns(UserWarning):
        warn_inexact_classifier_guidance("ot_cfm")
    assert any("independent coupling" in r.getMessage() for r in caplog.records)
