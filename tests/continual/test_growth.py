"""FeTrIL at many classes: the memory-lean training path trains as before, and the streamed SVM solver
minimises liblinear's objective (benchmarks/continual_growth.py measures both)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from framework.continual import FeTrIL
from framework.continual.fetril import TranslatedFeatures
from framework.continual.functional import class_means, nearest_new_class, pseudo_features
from framework.continual.linear_svm import fit_ovr_squared_hinge, ovr_objective
from framework.data.base import EpochShuffleSampler, make_loader
from framework.errors import ConfigError


@pytest.mark.parametrize("n", [1, 7, 2 * 8192 + 5])
def test_epoch_shuffle_sampler_hands_out_the_int64_permutation(n):
    sampler = EpochShuffleSampler(range(n), seed=11)
    sampler.set_epoch(3)
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(14)).tolist()  # int64, whole list
    assert list(sampler) == expected


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("old", [3, 30, 300])
def test_nearest_new_class_in_blocks_is_the_whole_matrix_argmin(distance, old):
    g = torch.Generator().manual_seed(old)
    old_means, new_means = torch.randn(old, 16, generator=g), torch.randn(7, 16, generator=g)
    if distance == "euclidean":  # the official pairwise_distances argmin, all rows at once
        expected = torch.cdist(old_means.double(), new_means.double()).argmin(1)
    else:
        expected = (F.normalize(old_means, dim=1) @ F.normalize(new_means, dim=1).T).argmax(1)
    for block in (1, 4, 256):
        assert torch.equal(nearest_new_class(old_means, new_means, distance, block=block), expected)
    assert nearest_new_class(old_means[:0], new_means).shape == (0,)


def _step(start=40, new=4, per_class=25, dim=12):
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(start, start + new).repeat_interleave(per_class)
    features = torch.randn(len(labels), dim, generator=g) + 2 * torch.randn(new, dim, generator=g).repeat_interleave(per_class, 0)
    new_means = class_means(features, labels, range(start, start + new))
    old_means = torch.randn(start, dim, generator=g) * 2
    nearest = nearest_new_class(old_means, new_means)
    return TranslatedFeatures(features, labels, new_means, old_means, nearest, start), (features, labels, new_means, old_means, nearest)


def _materialised(data, features, labels, new_means, old_means, nearest):
    """The step's whole set as the official code builds it: real rows, then each old class's
    pseudo-features f - mu_n + mu_c, in class order."""
    xs, ys = [features], [labels]
    for c in range(data.start):
        n = int(nearest[c])
        rows = features[labels == data.start + n]
        xs.append(rows - new_means[n] + old_means[c])
        ys.append(torch.full((len(rows),), c))
    return torch.cat(xs), torch.cat(ys)


def test_fetril_linear_epoch_through_the_loader_trains_bit_for_bit_as_the_materialised_set():
    data, (features, labels, new_means, old_means, nearest) = _step()
    start = data.start
    # before: every pseudo-feature materialised, an int64 permutation of all rows as one list
    x_all, y_all = _materialised(data, features, labels, new_means, old_means, nearest)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(9)).tolist()

    def train(batches):
        torch.manual_seed(0)
        head = torch.nn.Linear(features.shape[1], start + 4)
        opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        for x, y in batches:
            loss = F.cross_entropy(head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return head.weight.detach(), head.bias.detach()

    before = train((x_all[b], y_all[b]) for b in torch.tensor(order).split(32))
    after = train(make_loader(data, 32, train=True, seed=9))
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def _blobs(classes, n, dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = F.normalize(torch.randn(n, dim, generator=g) + 1.5 * torch.randn(classes, dim, generator=g)[y], dim=1)
    return x, y


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("scaling", [1.0, 3.0])
def test_newton_svm_minimises_linearsvc_objective(classes, scaling):
    from sklearn.svm import LinearSVC

    x, y = _blobs(classes, 240)

    def batches():
        for i in range(0, len(y), 50):
            yield x[i : i + 50], y[i : i + 50]

    info = {}
    coef, intercept = fit_ovr_squared_hinge(batches, torch.arange(classes), C=0.7, tol=1e-6, intercept_scaling=scaling, info=info)
    assert info["converged"]
    ref = LinearSVC(dual=False, C=0.7, tol=1e-10, intercept_scaling=scaling, max_iter=10000).fit(x.numpy(), y.numpy())
    ref_coef, ref_intercept = torch.as_tensor(ref.coef_), torch.as_tensor(ref.intercept_)
    ref_dec = torch.as_tensor(ref.decision_function(x.numpy()))
    if classes == 2:  # scikit-learn's one hyperplane is class 1's; class 0's problem is its negation
        ref_coef, ref_intercept, ref_dec = torch.cat([-ref_coef, ref_coef]), torch.cat([-ref_intercept, ref_intercept]), torch.stack([-ref_dec, ref_dec], 1)
    assert (coef - ref_coef).abs().max() < 1e-4 and (intercept - ref_intercept).abs().max() < 1e-4
    dec = x.double() @ coef.T + intercept
    assert (dec - ref_dec).abs().max() < 1e-4 and torch.equal(dec.argmax(1), ref_dec.argmax(1))
    ours = ovr_objective(torch.cat([coef, (intercept / scaling)[:, None]], 1), x, y, torch.arange(classes), 0.7, scaling)
    theirs = ovr_objective(torch.cat([ref_coef, (ref_intercept / scaling)[:, None]], 1), x, y, torch.arange(classes), 0.7, scaling)
    assert torch.allclose(ours, theirs, rtol=1e-8, atol=0)


def test_fetril_newton_solver_gives_liblinears_rows_on_pseudo_features():
    data, _ = _step(start=6, new=3, per_class=30, dim=8)
    rows = {}
    for solver in ("liblinear", "newton"):
        model = FeTrIL(num_classes=9, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [8]}, svm_solver=solver, svm_batch_size=64, svm_tol=1e-6)
        model.fit_svm(data)
        rows[solver] = torch.cat([model.head.weight.detach(), model.head.bias.detach()[:, None]], 1)
    assert (rows["newton"] - rows["liblinear"]).abs().max() < 1e-3  # liblinear stopped at its tol 1e-6
    with pytest.raises(ConfigError, match="svm_solver"):
        FeTrIL(num_classes=9, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [8]}, svm_solver="dual")


def test_pseudo_features_in_place_is_the_same_bits():
    g = torch.Generator().manual_seed(2)
    f, mu_n, mu_c = torch.randn(5, 4, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
    expected = f - mu_n + mu_c
    rows = f.clone()
    pseudo_features(rows, mu_n, mu_c, out=rows)
    assert torch.equal(pseudo_features(f, mu_n, mu_c), expected) and torch.equal(rows, expected)


@pytest.mark.parametrize("step", [0, 1])
def test_fetril_training_loss_uses_the_seen_rows_only(monkeypatch, step):
    """The loss and the head's gradient are those of slicing the full logits to the seen classes;
    the unseen rows get no gradient."""
    monkeypatch.setattr(FeTrIL, "seen", property(lambda self: 6))
    torch.manual_seed(3)
    model = FeTrIL(num_classes=9, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [8]}, classifier="linear")
    model.step = step
    model.eval()  # the backbone the same in both calls (the head is what is compared)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 1, 8, 8, generator=g) if step == 0 else torch.randn(16, model.num_features, generator=g)
    y = torch.randint(0, 6, (16,), generator=g)
    loss = model.training_loss(x, y)
    loss.backward()
    got = model.head.weight.grad.clone(), model.head.bias.grad.clone()
    model.zero_grad()
    features = model.backbone(x) if step == 0 else x
    w, b = model.head.weight.detach().double().requires_grad_(), model.head.bias.detach().double().requires_grad_()
    expected = F.cross_entropy((features.detach().double() @ w.T + b)[:, :6], y)  # the full logits, sliced
    expected.backward()
    assert abs(float(loss) - float(expected)) < 1e-6
    assert torch.allclose(got[0].double(), w.grad, atol=1e-6) and torch.allclose(got[1].double(), b.grad, atol=1e-6)
    assert not got[0][6:].any() and not got[1][6:].any()


@pytest.mark.parametrize("translate_rows", [1, 7, 64, 10_000])
def test_translated_features_any_batch_any_chunk_are_the_materialised_rows(translate_rows, monkeypatch):
    """Rows of every batch (mixed real and pseudo, all pseudo, all real), however many pseudo
    rows are translated at once, are bit for bit f - mu_n + mu_c of the materialised set."""
    data, (features, labels, new_means, old_means, nearest) = _step()
    monkeypatch.setattr(TranslatedFeatures, "translate_rows", translate_rows)
    x_all, y_all = _materialised(data, features, labels, new_means, old_means, nearest)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(1))
    for idx in (order[:300], order, torch.arange(len(labels), len(y_all))[:150], torch.arange(len(labels))):
        x, y = data.__getitems__(idx)
        assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])
