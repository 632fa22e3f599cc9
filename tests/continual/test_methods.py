"""Every continual method runs a whole digits protocol in one fit; ordering, resume, caches."""

import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from framework.continual import ContinualModule, FeTrIL
from framework.continual.scenario import ClassIncremental, FewShotIncremental
from framework.data.base import InMemoryDataset
from framework.data.digits import DigitsDataModule
from framework.errors import ConfigError
from registry import create

NET = {"net": "cnn", "net_args": {"channels": [16, 32], "dropout": 0.0}}
EPOCHS = {"base_epochs": 6, "epochs": 6}
KEYS = {"accuracy", "accuracy_matrix", "average_incremental_accuracy", "last_accuracy", "forgetting",
        "old_accuracy", "new_accuracy"}


def cil():
    return ClassIncremental(DigitsDataModule(), base_classes=4, increment=2, seed=1993, batch_size=64)


def fscil():
    return FewShotIncremental(DigitsDataModule(), base_classes=4, ways=2, shots=5, seed=1993, support_seed=0, batch_size=64)


def run(name, data, root, callbacks=(), ckpt_path=None, **kwargs):
    L.seed_everything(0)
    model = create("model", name, num_classes=10, data_shape=(1, 8, 8), **NET, **{**EPOCHS, **kwargs})
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("continual")
    out = {}
    for name, kw in [("finetune", {}), ("joint", {}), ("fetril", {}), ("wa", {"memory_size": 80}), ("icarl", {"memory_size": 80})]:
        out[name] = run(name, cil(), root / name, **kw)
    for name, kw in [("finetune", {}), ("joint", {}), ("teen", {"alpha": 0.5})]:
        out["fs_" + name] = run(name, fscil(), root / ("fs_" + name), **kw)
    out["ncm"] = run("ncm", cil(), root / "ncm")
    return out


def aia(model):
    return model.results()["average_incremental_accuracy"]


def test_ordering_finetune_below_methods_below_joint(runs):
    """The issue's seeded check: finetune < each of fetril, wa, teen <= joint (AIA)."""
    for method in ("fetril", "wa", "icarl"):
        assert aia(runs["finetune"][0]) < aia(runs[method][0]) <= aia(runs["joint"][0]), method
    assert aia(runs["fs_finetune"][0]) < aia(runs["fs_teen"][0]) <= aia(runs["fs_joint"][0])
    assert aia(runs["finetune"][0]) < aia(runs["ncm"][0])


def test_every_run_covers_the_protocol_and_writes_its_outputs(runs):
    for name, (model, trainer) in runs.items():
        assert model.done and len(model.correct) == 4, name
        with open(os.path.join(trainer.default_root_dir, "metrics.json")) as f:
            saved = json.load(f)
        assert KEYS <= set(saved) and len(saved["accuracy"]) == 4, name
        assert saved["average_incremental_accuracy"] == pytest.approx(aia(model))
        if name.startswith("fs_"):
            assert {"harmonic_mean", "performance_drop"} <= set(saved)
        assert os.path.exists(os.path.join(trainer.default_root_dir, "results.csv"))
        # trained epochs: the base step and the later steps that train (0 for training-free ones)
        expected = sum(model.step_epochs(s) for s in range(4))
        assert trainer.current_epoch == expected, name


def test_fetril_features_are_extracted_once(runs):
    model, trainer = runs["fetril"]
    data = trainer.datamodule
    n_train, n_test = len(data.labels("train")), len(data.labels("test"))
    assert model.feature_cache.computed == n_train + n_test
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_wa_clips_aligns_and_keeps_a_herding_memory(runs):
    model, _ = runs["wa"]
    assert len(model.gammas) == 3 and all(0 < g <= 1 for g in model.gammas)
    assert bool((model.head.weight >= 0).all())
    assert sorted(model.memory) == list(range(10)) and all(len(ix) == 8 for ix in model.memory.values())
    # the old model is the final one (snapshot after aligning)
    assert torch.equal(model.old_head.weight, model.head.weight)


def test_icarl_classifies_by_exemplar_means_and_reports_the_cnn_beside(runs):
    import torch.nn.functional as F

    model, trainer = runs["icarl"]
    data = trainer.datamodule
    assert sorted(model.memory) == list(range(10)) and all(len(ix) == 8 for ix in model.memory.values())
    for c in (0, 9):  # prototype = normalised mean of the exemplars' normalised features
        feats, _ = model.features_of("train", model.memory[c])
        mean = F.normalize(feats, dim=1).mean(0)
        assert torch.allclose(model.means[c], mean / mean.norm(), atol=1e-5)
    with open(os.path.join(trainer.default_root_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert len(saved["cnn_accuracy"]) == 4 and all(0 <= a <= 100 for a in saved["cnn_accuracy"])
    assert saved["cnn_average_incremental_accuracy"] == pytest.approx(sum(saved["cnn_accuracy"]) / 4)
    # the reported accuracy is the NME's: recompute the last step's from the prototypes
    feats, labels = model.features_of("test", data.eval_indices(3))
    nme = (-torch.cdist(F.normalize(feats, dim=1), model.means)).argmax(1)
    assert saved["accuracy"][-1] == pytest.approx(100 * (nme == labels).float().mean().item(), abs=1e-4)
    assert torch.equal(model.old_head.weight, model.head.weight)


def test_teen_prototypes_are_calibrated_class_means(runs):
    from framework.continual.functional import calibrate_prototypes, class_means

    model, trainer = runs["fs_teen"]
    data = trainer.datamodule
    feats, labels = model.train_features(data.train_indices(3))
    expected = calibrate_prototypes(class_means(feats, labels, range(8, 10)), model.head.weight[:4], 16.0, 0.5)
    assert torch.allclose(model.head.weight[8:10], expected, atol=1e-5)


def test_fetril_linear_resumes_at_the_same_step(tmp_path):
    """Stop mid-protocol (a checkpoint per epoch), resume from a step boundary and from mid-step."""
    ckpts = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", every_n_epochs=1, save_top_k=-1)
    full, _ = run("fetril", cil(), tmp_path / "full", callbacks=[ckpts], classifier="linear", base_epochs=3, epochs=2)
    assert full.done and len(full.correct) == 4

    class CountEpochs(Callback):
        epochs = 0

        def on_train_epoch_start(self, trainer, module):
            CountEpochs.epochs += 1

    # epoch index 4 ends step 1 (3 base epochs + 2): resume at the start of step 2
    for ckpt, step, remaining in [("epoch=4.ckpt", 2, 4), ("epoch=5.ckpt", 2, 3)]:
        CountEpochs.epochs = 0
        model, _ = run("fetril", cil(), tmp_path / ckpt, callbacks=[CountEpochs()], ckpt_path=tmp_path / "ck" / ckpt,
                             classifier="linear", base_epochs=3, epochs=2)
        assert CountEpochs.epochs == remaining
        assert model.done and len(model.correct) == 4
        assert model.correct[:2] == full.correct[:2]  # the steps done before stopping come from the checkpoint
        assert model.results()["average_incremental_accuracy"] > 50


def test_training_free_resume_reproduces_the_run(tmp_path):
    """NCM after its base step is deterministic: a resumed run equals the uninterrupted one."""
    ckpts = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", every_n_epochs=1, save_top_k=-1)
    full, _ = run("ncm", cil(), tmp_path / "full", callbacks=[ckpts], base_epochs=2)
    model, _ = run("ncm", cil(), tmp_path / "again", ckpt_path=tmp_path / "ck" / "epoch=1.ckpt", base_epochs=2)
    assert model.correct == full.correct


def test_scenario_is_required(tmp_path):
    model = create("model", "finetune", num_classes=10, data_shape=(1, 8, 8), **NET, **EPOCHS)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, max_epochs=1,
                        enable_progress_bar=False, default_root_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="incremental scenario"):
        trainer.fit(model, datamodule=DigitsDataModule())


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError):
        FeTrIL(num_classes=10, data_shape=(1, 8, 8), classifier="knn", **NET)
    with pytest.raises(ConfigError):
        FeTrIL(num_classes=10, data_shape=(1, 8, 8), head_bias=False, **NET)
    with pytest.raises(ConfigError):
        ContinualModule(num_classes=10, data_shape=(1, 8, 8), epochs=-1, **NET)
    with pytest.raises(ConfigError, match="kd_weight"):
        create("model", "wa", num_classes=10, data_shape=(1, 8, 8), kd_weight=-1.0, **NET)


def test_wa_align_and_clip_on_fixed_rows():
    from framework.continual.wa import WA

    model = WA(num_classes=4, data_shape=(1, 8, 8), **NET)
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [4.0, 4.0, 4.0], [-6.0, 0.0, 2.0]]).repeat_interleave(
        model.num_features // 3 + 1, dim=1)[:, : model.num_features]
    with torch.no_grad():
        model.head.weight.copy_(w)
    model.on_train_batch_end(None, None, 0)  # official code: clip after every optimiser step
    clipped = w.clamp(min=0)
    assert torch.equal(model.head.weight, clipped)
    gamma = model.align_weights(known=2, seen=4)
    l1 = clipped.abs().sum(1)
    expected = min(1.0, float(l1[:2].mean() / l1[2:].mean()))
    assert gamma == pytest.approx(expected)
    assert torch.allclose(model.head.weight[2:], clipped[2:] * expected) and torch.equal(model.head.weight[:2], clipped[:2])
    pycil = WA(num_classes=4, data_shape=(1, 8, 8), norm=2.0, clamp_gamma=False, clip_weights=False, head_bias=True, **NET)
    with torch.no_grad():
        pycil.head.weight.copy_(w)
    pycil.on_train_batch_end(None, None, 0)
    assert torch.equal(pycil.head.weight, w)  # no clipping
    l2 = w.norm(dim=1)
    assert pycil.align_weights(2, 4) == pytest.approx(float(l2[:2].mean() / l2[2:].mean()))


@pytest.mark.parametrize("num_classes", [2, 5])
def test_fetril_svm_rows_reproduce_sklearn_and_the_pool_gives_the_same(num_classes):
    from sklearn.svm import LinearSVC

    torch.manual_seed(0)
    x = torch.randn(60, 8) + torch.arange(60).remainder(num_classes).unsqueeze(1).float()
    y = torch.arange(60).remainder(num_classes)
    model = FeTrIL(num_classes=num_classes, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [8]})
    model.fit_svm(InMemoryDataset(x, y))
    xn = torch.nn.functional.normalize(x, dim=1)
    ref = LinearSVC(dual=False, C=1.0, tol=1e-4).fit(xn.numpy(), y.numpy())
    ours = model.head(xn).argmax(1)
    assert torch.equal(ours, torch.as_tensor(ref.predict(xn.numpy())))
    if num_classes == 2:
        return  # the pool (process start-up: seconds) is checked once, on the multi-class case
    single = model.head.weight.detach().clone()
    pooled = FeTrIL(num_classes=num_classes, data_shape=(1, 8, 8), net="mlp", net_args={"hidden": [8]}, svm_jobs=2)
    pooled.fit_svm(InMemoryDataset(x, y))
    assert torch.allclose(pooled.head.weight, single, atol=1e-6)


def test_lightning_test_scores_the_seen_classes(runs):
    model, trainer = runs["fetril"]
    out = trainer.test(model, datamodule=trainer.datamodule, verbose=False)
    assert out[0]["test/accuracy"] == pytest.approx(model.results()["last_accuracy"], abs=1e-3)


def test_wa_writes_its_gammas_to_metrics_json(runs):
    """metrics.json carries each incremental step's gamma (benchmarks/continual_digits.py prints them)."""
    model, trainer = runs["wa"]
    with open(os.path.join(trainer.default_root_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["gammas"] == pytest.approx(model.gammas) and len(saved["gammas"]) == 3
    _, other = runs["fetril"]
    with open(os.path.join(other.default_root_dir, "metrics.json")) as f:
        assert "gammas" not in json.load(f)


def test_wa_reports_its_accuracy_before_aligning_beside_after(runs):
    """``unaligned_*`` is the model of each step before its gamma: undo the last one and re-predict."""
    model, trainer = runs["wa"]
    with open(os.path.join(trainer.default_root_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert len(saved["unaligned_accuracy"]) == 4
    assert saved["unaligned_accuracy"][0] == pytest.approx(saved["accuracy"][0])  # the base step is not aligned
    data = trainer.datamodule
    known, seen = data.step_range(3)
    aligned = model.head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.head.weight[known:seen] /= model.gammas[-1]
        correct, total = model.eval_counts(3)
    finally:
        with torch.no_grad():
            model.head.weight.copy_(aligned)
    assert saved["unaligned_accuracy"][-1] == pytest.approx(100 * sum(correct) / sum(total), abs=1e-6)
    assert saved["unaligned_average_incremental_accuracy"] == pytest.approx(sum(saved["unaligned_accuracy"]) / 4)
    assert len(saved["unaligned_old_accuracy"]) == len(saved["unaligned_new_accuracy"]) == 4


def test_base_checkpoint_gives_every_method_the_same_base_model(tmp_path):
    """A finetune run's checkpoint (later steps untrained) is the base of other methods: with
    ``base_epochs: 0`` their base step reproduces its base accuracy, no base training is run,
    and a checkpoint that does not fit is one ConfigError line."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", filename="base")
    base, _ = run("finetune", cil(), tmp_path / "base", callbacks=[ckpt], base_epochs=3, epochs=0)
    path = str(tmp_path / "ck" / "base.ckpt")
    assert base.results()["accuracy"][0] > 50
    for name in ("finetune", "icarl", "ncm"):
        model, _ = run(name, cil(), tmp_path / name, base_checkpoint=path, base_epochs=0, epochs=1,
                       **({"memory_size": 40} if name == "icarl" else {}))
        head_accuracy = model.method_metrics()["cnn_accuracy"][0] if name == "icarl" else model.results()["accuracy"][0]
        if name != "ncm":  # the loaded head classifies the base step exactly as in the base run
            assert head_accuracy == pytest.approx(base.results()["accuracy"][0]), name
        assert model.done and model.results()["accuracy"][0] > 50, name
    with pytest.raises(ConfigError, match="base_checkpoint"):
        create("model", "finetune", num_classes=10, data_shape=(1, 8, 8), net="cnn", net_args={"channels": [8, 16]},
               base_checkpoint=path)


def test_fetril_newton_svm_runs_the_protocol_as_liblinear_does(runs, tmp_path):
    """svm_solver: newton through Lightning (pseudo-features streamed to the solver at each step):
    the same base model, SVM rows equal within the solvers' tolerance, so the same accuracies."""
    model, _ = run("fetril", cil(), tmp_path / "newton", svm_solver="newton", svm_batch_size=64)
    reference = runs["fetril"][0]
    assert model.done and len(model.correct) == 4
    assert aia(model) == pytest.approx(aia(reference), abs=1.0)
