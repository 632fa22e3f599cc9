"""The GAN module's total D and G losses on a tiny net with fixed weights, against the papers' sums.

For each conditioning the module's ``discriminator_loss`` / ``generator_loss`` must equal
adversarial + lambda * class term, with lambda_D != lambda_G != 1, the class terms written
out by hand (math.exp / math.log over the discriminator's logits of that very call, captured
by a hook), not by the loss functions under test. A module that ignores ``d_lambda``, uses
one lambda for both, or subtracts G's class term fails here.
"""

from __future__ import annotations

import math

import pytest
import torch

import framework  # noqa: F401  (registers the models)
import registry

D_LAMBDA, G_LAMBDA = 0.3, 0.7
TINY = {
    "generator_args": {"channels": 4, "latent_dim": 8},
    "discriminator_args": {"channels": 4, "spectral_norm": False},  # plain heads: their weights are read below
}


def _ce(logits: torch.Tensor, labels: list[int]) -> float:
    """Mean cross-entropy, -log softmax written out."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels):
        total -= row[y] - math.log(sum(math.exp(v) for v in row))
    return total / len(labels)


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> float:
    return sum(max(0.0, 1 - v) for v in real.tolist()) / len(real) + sum(max(0.0, 1 + v) for v in fake.tolist()) / len(fake)


def _d_class(conditioning, real_out, y_real, fake_out, y_fake) -> float | None:
    if conditioning.startswith("adc"):  # real k -> 2k, fake k -> 2k + 1
        return _ce(real_out.logits.adc, [2 * y for y in y_real]) + _ce(fake_out.logits.adc, [2 * y + 1 for y in y_fake])
    if conditioning == "ac":  # real data only
        return _ce(real_out.logits.ac, y_real)
    if conditioning == "tac":  # AC plus the twin classifier on fakes
        return _ce(real_out.logits.ac, y_real) + _ce(fake_out.logits.twin, y_fake)
    return None


def _g_class(conditioning, out, y_fake) -> float | None:
    if conditioning.startswith("adc"):
        return _ce(out.logits.adc, [2 * y for y in y_fake]) - _ce(out.logits.adc, [2 * y + 1 for y in y_fake])
    if conditioning == "ac":
        return _ce(out.logits.ac, y_fake)
    if conditioning == "tac":
        return _ce(out.logits.ac, y_fake) - _ce(out.logits.twin, y_fake)
    return None


def _model(conditioning):
    torch.manual_seed(0)
    model = registry.create(
        "model", "adcgan", num_classes=3, conditioning=conditioning, d_lambda=D_LAMBDA, g_lambda=G_LAMBDA, **TINY
    )
    model._base_seed = 7
    calls = []
    model.discriminator.register_forward_hook(lambda module, args, out: calls.append((args[1].tolist(), out)))
    return model, calls


@pytest.mark.parametrize("conditioning", ["adc", "ac", "tac", "projection", "adc+projection"])
def test_discriminator_loss_is_adversarial_plus_d_lambda_class_term(conditioning):
    model, calls = _model(conditioning)
    real = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y_real = [0, 1, 2, 0, 1]
    with torch.no_grad():
        terms = model.discriminator_loss(real, torch.tensor(y_real))
    ((labels, out),) = calls  # one D call on real and fake together
    assert labels[:5] == y_real
    y_fake = labels[5:]
    real_out, fake_out = out.split([5, 5])
    adversarial = _hinge_d(real_out.adversarial, fake_out.adversarial)
    class_term = _d_class(conditioning, real_out, y_real, fake_out, y_fake)
    expected = adversarial + (D_LAMBDA * class_term if class_term is not None else 0.0)
    assert terms["d_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert ("d_class" in terms) == (class_term is not None)
    if class_term is not None:
        assert terms["d_class"].item() == pytest.approx(class_term, rel=1e-5)
        assert abs(class_term) > 0.1  # lambda shows in the total
    if conditioning.endswith("projection"):
        # psi(h) + <embed(y), h>, from the head weights by hand
        heads, h = model.discriminator.heads, out.features
        emb = heads["embedding"].weight[torch.tensor(labels)]
        by_hand = h @ heads["adversarial"].weight[0] + heads["adversarial"].bias[0] + (emb * h).sum(1)
        torch.testing.assert_close(out.adversarial, by_hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["adc", "ac", "tac", "projection", "adc+projection"])
def test_generator_loss_is_adversarial_plus_g_lambda_class_term(conditioning):
    model, calls = _model(conditioning)
    terms = model.generator_loss(6)
    ((y_fake, out),) = calls  # one D call on the fakes
    adversarial = -sum(out.adversarial.tolist()) / 6  # hinge G loss
    class_term = _g_class(conditioning, out, y_fake)
    expected = adversarial + (G_LAMBDA * class_term if class_term is not None else 0.0)
    assert terms["g_loss"].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert terms["g_adversarial"].item() == pytest.approx(adversarial, rel=1e-5, abs=1e-6)
    if class_term is not None:
        assert terms["g_class"].item() == pytest.approx(class_term, rel=1e-5, abs=1e-6)
        assert abs(class_term) > 1e-3  # a sign flip of the class term shows in the total
    else:
        assert "g_class" not in terms
    # The gradient is that of the total: G receives it through the fakes.
    terms["g_loss"].backward()
    assert model.generator.linear.weight.grad.abs().sum() > 0
