"""The methods' step hooks on fixed features, against hand computations (plain Python floats).

Each test gives a method a stand-in scenario (the step's class range) and fixed training
features instead of a backbone, calls the hook that the step loop calls (``on_step_start``,
``training_loss``, ``on_step_end``, ``classify_features``) and checks what it builds: FeTrIL's
pseudo-features and the new class each old class borrows, WA's (1 - l) CE + l KD with
l = known / seen and its weight aligning, NCM's scores, TEEN's calibrated prototypes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from framework.continual import ContinualModule
from framework.continual.baselines import NCM
from framework.continual.fetril import FeTrIL
from framework.continual.teen import TEEN
from framework.continual.wa import WA


class StepRanges:
    """A stand-in for an incremental scenario: steps of the given numbers of classes."""

    def __init__(self, *sizes: int) -> None:
        self.sizes = sizes

    def step_range(self, step: int) -> tuple[int, int]:
        start = sum(self.sizes[:step])
        return start, start + self.sizes[step]

    def seen_classes(self, step: int) -> int:
        return self.step_range(step)[1]

    def train_indices(self, step: int) -> torch.Tensor:
        return torch.arange(3)  # ignored: the features below stand in for the extractor


@pytest.fixture
def scenario(monkeypatch):
    """Install a :class:`StepRanges` as every continual module's scenario; returns a setter."""
    current = {}
    monkeypatch.setattr(ContinualModule, "scenario", property(lambda self: current["scenario"]))

    def use(*sizes: int) -> StepRanges:
        current["scenario"] = StepRanges(*sizes)
        return current["scenario"]

    return use


def _fixed_features(model: ContinualModule, features: list[list[float]], labels: list[int]) -> None:
    f, y = torch.tensor(features), torch.tensor(labels)
    model.train_features = lambda indices: (f.clone(), y.clone())


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _rows_by_label(x: torch.Tensor, y: torch.Tensor) -> dict[int, list[list[float]]]:
    out: dict[int, list[list[float]]] = {}
    for row, label in zip(x.tolist(), y.tolist()):
        out.setdefault(label, []).append([round(v, 5) for v in row])
    return {k: sorted(v) for k, v in out.items()}


# -- FeTrIL ---------------------------------------------------------------------------------------
# Old class means mu_0 = (1, 0), mu_1 = (8, 3); new class 2 has mean (10, 1) (3 samples), new class 3
# mean (0.5, 0.5) (4 samples).
#   Euclidean (official): |mu_0 - mu_2| = 9.06 > |mu_0 - mu_3| = 0.71 -> 0 borrows 3;
#                         |mu_1 - mu_2| = 2.83 < |mu_1 - mu_3| = 7.91 -> 1 borrows 2.
#   Cosine (PyCIL):       cos(mu_0, mu_2) = 0.995 > cos(mu_0, mu_3) = 0.707 -> 0 borrows 2;
#                         cos(mu_1, mu_2) = 0.967 > cos(mu_1, mu_3) = 0.911 -> 1 borrows 2.
OLD_MEANS = [[1.0, 0.0], [8.0, 3.0]]
NEW_2 = [[9.0, 0.0], [11.0, 2.0], [10.0, 1.0]]
NEW_3 = [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.5, 0.5]]
NEW_MEANS = {2: [10.0, 1.0], 3: [0.5, 0.5]}


@pytest.mark.parametrize("distance, borrowed", [("euclidean", {0: 3, 1: 2}), ("cosine", {0: 2, 1: 2})])
def test_fetril_pseudo_features_translate_the_nearest_new_class(scenario, distance, borrowed):
    scenario(2, 2)
    model = FeTrIL(num_classes=4, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [2]}, distance=distance)
    assert model.num_features == 2
    with torch.no_grad():
        model.means[:2] = torch.tensor(OLD_MEANS)
    _fixed_features(model, NEW_2 + NEW_3, [2] * 3 + [3] * 4)
    model.step = 1
    model.on_step_start(1)

    data = model.train_data(None)  # the step's training set, assembled batch by batch
    batches = [data.__getitems__(list(range(i, min(i + 3, len(data))))) for i in range(0, len(data), 3)]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    expected = {2: sorted(NEW_2), 3: sorted(NEW_3)}  # the real features of the new classes
    for c, n in borrowed.items():  # f - mu_n + mu_c for every real feature f of the borrowed class n
        rows = NEW_2 if n == 2 else NEW_3
        expected[c] = sorted([round(f[i] - NEW_MEANS[n][i] + OLD_MEANS[c][i], 5) for i in range(2)] for f in rows)
    assert _rows_by_label(x, y) == expected
    assert len(y) == 7 + sum(3 if n == 2 else 4 for n in borrowed.values())  # no subsampling
    # the new classes' means are kept for later steps; the old ones are untouched
    torch.testing.assert_close(model.means, torch.tensor(OLD_MEANS + [NEW_MEANS[2], NEW_MEANS[3]]))


def test_fetril_default_distance_is_the_papers_euclidean():
    model = FeTrIL(num_classes=4, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [2]})
    assert model.distance == "euclidean"


# -- WA -------------------------------------------------------------------------------------------
def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


W_NEW = [[0.5, -1.0, 0.2], [1.0, 0.3, -0.4], [-0.2, 0.8, 0.6], [0.4, 0.9, 1.5], [1.2, -0.9, 0.6], [3.0, 3.0, 3.0]]
W_OLD = [[0.7, -0.5, 0.1], [0.2, 0.9, -0.3], [-1.0, 0.4, 0.8], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
X = [[1.0, 0.5, -0.5], [-0.3, 1.2, 0.4], [0.8, -0.9, 1.1], [0.2, 0.1, -1.4]]
Y = [3, 4, 0, 3]


def _wa(**kwargs) -> WA:
    model = WA(num_classes=6, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [3]}, memory_size=0, **kwargs)
    model.backbone, model.old_backbone = nn.Flatten(), nn.Flatten()  # features = the inputs
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor(W_NEW))
        model.old_head.weight.copy_(torch.tensor(W_OLD))
    return model


@pytest.mark.parametrize("kd_weight", [None, 2.0])
def test_wa_loss_is_one_minus_lambda_ce_plus_lambda_kd_with_lambda_known_over_seen(scenario, kd_weight):
    """The paper's (1 - l) CE + l KD, l = known / seen; with ``kd_weight`` w, PyCIL's CE + w KD."""
    scenario(3, 2, 1)  # step 1: 3 known classes, 5 seen, 1 class not yet seen
    model = _wa(kd_weight=kd_weight)
    model.step = 1
    loss = model.training_loss(torch.tensor(X), torch.tensor(Y))

    known, seen, temperature = 3, 5, 2.0
    ce = kd = 0.0
    for x, y in zip(X, Y):
        logits = [_dot(w, x) for w in W_NEW[:seen]]  # the unseen class 5 is masked out
        ce -= math.log(_softmax(logits)[y])
        old = _softmax([_dot(w, x) / temperature for w in W_OLD[:known]])
        new = _softmax([v / temperature for v in logits[:known]])
        kd -= sum(q * math.log(p) for q, p in zip(old, new))  # no T^2 factor (both WA references)
    ce, kd = ce / len(X), kd / len(X)
    lam = known / seen  # 0.6: old / seen classes
    expected = (1 - lam) * ce + lam * kd if kd_weight is None else ce + 2.0 * kd
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert abs(ce - kd) > 0.1  # a wrong lambda shows

    # The base step has no old model: plain CE over its 3 classes.
    model.step = 0
    base_labels = [0, 1, 2, 0]
    base_ce = -sum(math.log(_softmax([_dot(w, x) for w in W_NEW[:3]])[y]) for x, y in zip(X, base_labels)) / len(X)
    assert model.training_loss(torch.tensor(X), torch.tensor(base_labels)).item() == pytest.approx(base_ce, rel=1e-5)


@pytest.mark.parametrize("kwargs, p, clamp", [({}, 1, True), ({"norm": 2.0, "clamp_gamma": False}, 2, False)])
def test_wa_step_end_aligns_the_new_rows_of_the_step(scenario, kwargs, p, clamp):
    scenario(3, 2, 1)
    model = _wa(**kwargs)
    model.step = 1
    evaluated = []  # the head each evaluation saw: the unaligned figures come before aligning
    model.eval_counts = lambda step: (evaluated.append(model.head.weight.clone()), ([2, 1, 0], [3, 2, 1]))[1]
    model.on_step_end(1)
    assert len(evaluated) == 1 and torch.equal(evaluated[0], torch.tensor(W_NEW))
    assert model.unaligned_correct == [[2, 1, 0]] and model.unaligned_total == [[3, 2, 1]]

    def norm(row):
        return sum(abs(v) ** p for v in row) ** (1 / p)

    old = sum(norm(r) for r in W_NEW[:3]) / 3
    new = sum(norm(r) for r in W_NEW[3:5]) / 2  # the step's new classes 3, 4 only
    gamma = min(old / new, 1.0) if clamp else old / new
    assert model.gammas == [pytest.approx(gamma, rel=1e-6)]
    expected = [r if i < 3 or i >= 5 else [v * gamma for v in r] for i, r in enumerate(W_NEW)]
    torch.testing.assert_close(model.head.weight, torch.tensor(expected))
    torch.testing.assert_close(model.old_head.weight, model.head.weight)  # the next step distils the aligned model
    assert gamma != pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("reinit_head", [False, True])
def test_wa_reinit_head_reinitialises_every_seen_row_at_a_later_step(reinit_head):
    """Official main.py re-creates the head each step (the old rows' copy is commented out); PyCIL keeps them."""
    model = _wa(reinit_head=reinit_head)
    torch.manual_seed(0)
    model.reset_rows(3, 5)  # step 1 of a 3 + 2 + 1 scenario: classes 3 and 4 are new
    weight = model.head.weight.detach()
    kept = torch.tensor(W_NEW)
    assert not torch.equal(weight[3:5], kept[3:5])  # new rows are always fresh
    assert torch.equal(weight[5:], kept[5:])  # classes not yet seen are untouched
    assert torch.equal(weight[:3], kept[:3]) is (not reinit_head)
    if reinit_head:  # nn.Linear's initialisation over 3 inputs: |w| <= 1 / sqrt(3)
        assert float(weight[:5].abs().max()) <= 3**-0.5


@pytest.mark.parametrize("divide", [True, False])
def test_wa_divides_the_weight_decay_by_step_plus_one_as_the_official_code(scenario, divide):
    scenario(3, 2, 1)
    model = _wa(divide_weight_decay=divide)  # the default optimizer: SGD, weight decay 5e-4
    for step in (0, 1, 2):
        model.step = step
        config = model.configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        expected = 5e-4 / (step + 1) if divide else 5e-4
        assert [g["weight_decay"] for g in optimizer.param_groups] == [pytest.approx(expected, rel=1e-12)]
        assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(optimizer.defaults["lr"])]  # the lr stays


# -- NCM ------------------------------------------------------------------------------------------
def test_ncm_scores_are_distances_to_normalised_means_of_normalised_features(scenario):
    scenario(2, 1)
    model = NCM(num_classes=3, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [2]}, base_epochs=0)
    train = {0: [[3.0, 0.0], [0.0, 1.0]], 1: [[-2.0, 2.0], [-1.0, 0.0]], 2: [[0.0, -5.0], [1.0, -1.0]]}
    _fixed_features(model, train[0] + train[1], [0, 0, 1, 1])
    model.on_step_end(0)
    _fixed_features(model, train[2], [2, 2])
    model.step = 1
    model.on_step_end(1)

    means = []
    for c in range(3):  # mean of the unit features, normalised again (PyCIL's NME)
        units = [_unit(f) for f in train[c]]
        means.append(_unit([sum(u[i] for u in units) / len(units) for i in range(2)]))
    torch.testing.assert_close(model.means, torch.tensor(means))
    queries = [[2.0, 1.0], [-0.1, -3.0], [-4.0, 1.0]]
    scores = model.classify_features(torch.tensor(queries))
    expected = [[-math.dist(_unit(q), m) for m in means] for q in queries]
    torch.testing.assert_close(scores, torch.tensor(expected))
    assert scores.argmax(1).tolist() == [0, 2, 1]
    # The scale of a query does not matter, only its direction.
    torch.testing.assert_close(model.classify_features(10 * torch.tensor(queries)), scores)


# -- TEEN -----------------------------------------------------------------------------------------
BASE_PROTOS = [[2.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, -1.0, 0.5]]
SHOTS = {3: [[1.0, 0.2, 0.1], [0.6, 0.4, 0.3]], 4: [[-0.5, 0.9, 0.2], [-0.3, 0.5, 1.0]]}


def _teen_by_hand(tau: float, alpha: float) -> list[list[float]]:
    base = [_unit(b) for b in BASE_PROTOS]
    out = []
    for c in (3, 4):
        mean = [sum(f[i] for f in SHOTS[c]) / len(SHOTS[c]) for i in range(3)]
        p = _unit(mean)
        w = _softmax([tau * _dot(p, b) for b in base])  # softmax over the base classes of tau * cos
        delta = _unit([sum(w[j] * base[j][i] for j in range(3)) for i in range(3)])
        out.append([(1 - alpha) * p[i] + alpha * delta[i] for i in range(3)])
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_teen_session_calibrates_the_shot_means_against_the_base_prototypes(scenario, alpha):
    scenario(3, 2)
    tau = 4.0
    model = TEEN(num_classes=5, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [3]}, tau=tau, alpha=alpha)
    with torch.no_grad():
        model.head.weight[:3] = torch.tensor(BASE_PROTOS)  # base rows: the base class means (step 0's end)
    _fixed_features(model, SHOTS[3] + SHOTS[4], [3, 3, 4, 4])
    model.step = 1
    model.on_step_start(1)
    expected = torch.tensor(_teen_by_hand(tau, alpha))
    torch.testing.assert_close(model.head.weight[3:5].detach(), expected)
    torch.testing.assert_close(model.head.weight[:3].detach(), torch.tensor(BASE_PROTOS))  # base rows untouched
    if alpha == 0.0:  # the normalised own mean
        for row, c in zip(expected.tolist(), (3, 4)):
            assert row == pytest.approx(_unit([sum(f[i] for f in SHOTS[c]) / 2 for i in range(3)]))
    if alpha == 1.0:  # the normalised softmax-weighted sum of the unit base prototypes, nothing of its own
        assert torch.allclose(model.head.weight[3:5].norm(dim=1), torch.ones(2))
        assert not torch.allclose(expected, torch.tensor(_teen_by_hand(tau, 0.0)), atol=1e-2)
