"""GAN losses on fixed logits against the papers' formulas (written out with math.exp/log)."""

import math

import pytest
import torch

import registry
from framework.generative.gan import losses as L


def _log_softmax(row: list[float], i: int) -> float:
    return row[i] - math.log(sum(math.exp(v) for v in row))


REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 0.5])


def test_hinge():
    real, fake = L.hinge_discriminator_loss(REAL, FAKE)
    assert real.item() == pytest.approx((0 + 0.5 + 2.0) / 3)
    assert fake.item() == pytest.approx((0 + 1.0 + 1.5) / 3)
    assert L.hinge_generator_loss(FAKE).item() == pytest.approx(-(-2.0 + 0.0 + 0.5) / 3)


def test_nonsaturating_is_logistic():
    sig = lambda v: 1 / (1 + math.exp(-v))
    real, fake = L.nonsaturating_discriminator_loss(REAL, FAKE)
    assert real.item() == pytest.approx(sum(-math.log(sig(v)) for v in REAL.tolist()) / 3)
    assert fake.item() == pytest.approx(sum(-math.log(1 - sig(v)) for v in FAKE.tolist()) / 3)
    assert L.nonsaturating_generator_loss(FAKE).item() == pytest.approx(sum(-math.log(sig(v)) for v in FAKE.tolist()) / 3)


def test_wasserstein():
    real, fake = L.wasserstein_discriminator_loss(REAL, FAKE)
    assert real.item() == pytest.approx(-0.5) and fake.item() == pytest.approx(-0.5)
    assert L.wasserstein_generator_loss(FAKE).item() == pytest.approx(0.5)


# K = 2 classes: the ADC head has 4 logits [real 0, fake 0, real 1, fake 1].
ADC_REAL = [[1.0, -0.5, 0.2, 0.3], [0.1, 0.4, 2.0, -1.0]]
ADC_FAKE = [[0.3, 1.2, -0.7, 0.0], [0.5, 0.2, 0.9, 1.5]]
Y_REAL, Y_FAKE = [0, 1], [1, 0]


def test_adc_discriminator_term_matches_the_paper():
    expected = -sum(_log_softmax(r, 2 * y) for r, y in zip(ADC_REAL, Y_REAL)) / 2
    expected += -sum(_log_softmax(r, 2 * y + 1) for r, y in zip(ADC_FAKE, Y_FAKE)) / 2
    got = L.adc_discriminator_loss(torch.tensor(ADC_REAL), torch.tensor(Y_REAL), torch.tensor(ADC_FAKE), torch.tensor(Y_FAKE))
    assert got.item() == pytest.approx(expected)


def test_adc_generator_term_matches_the_paper_and_its_gradient():
    logits = torch.tensor(ADC_FAKE, requires_grad=True)
    got = L.adc_generator_loss(logits, torch.tensor(Y_FAKE))
    # CE(fake -> 2y') - CE(fake -> 2y'+1) = logit[2y'+1] - logit[2y'] (the normaliser cancels).
    expected = sum(r[2 * y + 1] - r[2 * y] for r, y in zip(ADC_FAKE, Y_FAKE)) / 2
    assert got.item() == pytest.approx(expected)
    got.backward()
    grad = torch.zeros(2, 4)
    for i, y in enumerate(Y_FAKE):
        grad[i, 2 * y], grad[i, 2 * y + 1] = -0.5, 0.5
    torch.testing.assert_close(logits.grad, grad)


def test_adc_real_class_logits_are_the_even_indices():
    out = L.adc_real_class_logits(torch.tensor(ADC_REAL))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.2], [0.1, 2.0]]))


AC_REAL = [[0.5, -0.2, 1.0], [2.0, 0.1, -0.3]]
AC_FAKE = [[0.0, 0.3, -0.4], [1.1, -0.6, 0.2]]
TWIN_FAKE = [[0.9, -0.1, 0.0], [-0.2, 0.4, 0.7]]
Y3_REAL, Y3_FAKE = [2, 0], [1, 2]


def _ce(rows, ys):
    return -sum(_log_softmax(r, y) for r, y in zip(rows, ys)) / len(rows)


def test_ac_terms_use_real_data_only_in_d():
    d = L.ac_discriminator_loss(torch.tensor(AC_REAL), torch.tensor(Y3_REAL))
    assert d.item() == pytest.approx(_ce(AC_REAL, Y3_REAL))
    g = L.ac_generator_loss(torch.tensor(AC_FAKE), torch.tensor(Y3_FAKE))
    assert g.item() == pytest.approx(_ce(AC_FAKE, Y3_FAKE))
    cond = registry.create("gan_loss", "ac")
    real, fake = L.ClassLogits(ac=torch.tensor(AC_REAL)), L.ClassLogits(ac=torch.tensor(AC_FAKE))
    other_fake = L.ClassLogits(ac=torch.tensor(TWIN_FAKE))
    y_r, y_f = torch.tensor(Y3_REAL), torch.tensor(Y3_FAKE)
    assert cond.discriminator_term(real, y_r, fake, y_f).item() == cond.discriminator_term(real, y_r, other_fake, y_f).item()


def test_tac_terms():
    d = L.tac_discriminator_loss(torch.tensor(AC_REAL), torch.tensor(Y3_REAL), torch.tensor(TWIN_FAKE), torch.tensor(Y3_FAKE))
    assert d.item() == pytest.approx(_ce(AC_REAL, Y3_REAL) + _ce(TWIN_FAKE, Y3_FAKE))
    g = L.tac_generator_loss(torch.tensor(AC_FAKE), torch.tensor(TWIN_FAKE), torch.tensor(Y3_FAKE))
    assert g.item() == pytest.approx(_ce(AC_FAKE, Y3_FAKE) - _ce(TWIN_FAKE, Y3_FAKE))


def test_multiclass_hinge_matches_reference_definition():
    logits = torch.tensor([[1.0, 0.5, -1.0], [0.0, 2.0, 1.5]])
    labels = torch.tensor([0, 2])
    # wrong classes: row 0 -> j=1: relu(1-1+0.5)=0.5, j=2: relu(1-1-1)=0; row 1 -> j=0: relu(1-1.5+0)=0, j=1: relu(1-1.5+2)=1.5
    assert L.multiclass_hinge_loss(logits, labels).item() == pytest.approx((0.5 + 0 + 0 + 1.5) / 4)
    # linear version (G's side in the reference): -logit_y + logit_j
    assert L.multiclass_hinge_loss(logits, labels, relu=False).item() == pytest.approx((-0.5 - 2.0 - 1.5 + 0.5) / 4)


def test_projection_logit():
    h = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    emb = torch.tensor([[0.5, 0.25], [2.0, 1.0]])
    out = L.projection_logit(torch.tensor([0.1, -0.2]), h, emb)
    torch.testing.assert_close(out, torch.tensor([0.1 + 0.5 + 0.5, -0.2 + 1.0 - 1.0]))


@pytest.mark.parametrize(
    "name, heads, projection",
    [("adc", ("adc",), False), ("ac", ("ac",), False), ("tac", ("ac", "twin"), False),
     ("projection", (), True), ("adc+projection", ("adc",), True), ("adcgan", ("adc",), False), ("pdgan", (), True)],
)
def test_conditionings_by_name(name, heads, projection):
    cond = registry.create("gan_loss", name)
    assert cond.heads == heads and cond.projection == projection


def test_conditioning_terms_dispatch_to_the_formulas():
    y_r, y_f = torch.tensor(Y_REAL), torch.tensor(Y_FAKE)
    real, fake = L.ClassLogits(adc=torch.tensor(ADC_REAL)), L.ClassLogits(adc=torch.tensor(ADC_FAKE))
    for name in ("adc", "adc+projection"):
        cond = registry.create("gan_loss", name)
        assert cond.discriminator_term(real, y_r, fake, y_f).item() == pytest.approx(
            L.adc_discriminator_loss(real.adc, y_r, fake.adc, y_f).item()
        )
        assert cond.generator_term(fake, y_f).item() == pytest.approx(L.adc_generator_loss(fake.adc, y_f).item())
    proj = registry.create("gan_loss", "projection")
    assert proj.discriminator_term(real, y_r, fake, y_f) is None and proj.generator_term(fake, y_f) is None
    hinge = registry.create("gan_loss", "adc", hinge=True)
    assert hinge.discriminator_term(real, y_r, fake, y_f).item() == pytest.approx(
        (L.multiclass_hinge_loss(real.adc, 2 * y_r) + L.multiclass_hinge_loss(fake.adc, 2 * y_f + 1)).item()
    )


def test_unknown_names_are_user_errors():
    with pytest.raises(registry.UnknownNameError, match="adc"):
        registry.create("gan_loss", "adcc")
    with pytest.raises(registry.UnknownNameError):
        registry.create("adversarial_loss", "hingee")
    assert isinstance(registry.create("adversarial_loss", "ns"), L.NonSaturatingLoss)
