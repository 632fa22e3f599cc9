"""The one loader of trained parts (framework.loading): checks, class inference, one-line errors."""


import lightning as L
import pytest
import torch

from framework.errors import ConfigError
from framework.generative.base import GenerativeModule
from framework.loading import CLASS_KEY, load_trained
from framework.models.classifier import Classifier


class _Subclassed(Classifier):
    """A user's subclass: rebuilt as itself when loaded as `classifier`."""


def _save(model, path):
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return _save(Classifier(num_classes=10, data_shape=(1, 8, 8)), tmp_path_factory.mktemp("c") / "clf.ckpt")


def test_class_is_read_from_the_checkpoint_and_weights_equal(classifier_ckpt):
    saved = torch.load(classifier_ckpt, weights_only=False)
    assert saved[CLASS_KEY] == "framework.models.classifier.Classifier"
    loaded = load_trained(classifier_ckpt, role="judge")
    assert type(loaded) is Classifier and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    reference = Classifier.load_from_checkpoint(classifier_ckpt, weights_only=False).eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(loaded(x), reference(x))


def test_a_recorded_subclass_rebuilds_as_itself(tmp_path):
    path = _save(_Subclassed(num_classes=10), tmp_path / "sub.ckpt")
    assert type(load_trained(path, "classifier")) is _Subclassed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": GenerativeModule}, "holds a Classifier, not a GenerativeModule"),
        ({"num_classes": 7}, "trained on 10 classes, the data have 7"),
        ({"data_shape": (3, 32, 32)}, "shaped (1, 8, 8), the data are (3, 32, 32)"),
        ({"model": "diffusion"}, "cannot rebuild Diffusion"),
    ],
)
def test_a_part_that_does_not_fit_is_one_config_error(classifier_ckpt, kwargs, message):
    with pytest.raises(ConfigError, match="^guide: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        load_trained(classifier_ckpt, role="guide", **kwargs)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="guide: checkpoint not found"):
        load_trained(tmp_path / "absent.ckpt", role="guide")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        load_trained(junk, role="guide")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match="is not a Lightning checkpoint"):
        load_trained(tmp_path / "plain.pt", role="guide")
    unnamed = torch.load(_save(Classifier(), tmp_path / "old.ckpt"), weights_only=False)
    del unnamed[CLASS_KEY]  # a checkpoint from before the class was recorded
    torch.save(unnamed, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match="does not record its model class: name it"):
        load_trained(tmp_path / "old.ckpt", role="guide")
    assert type(load_trained(tmp_path / "old.ckpt", "classifier")) is Classifier


def test_the_evaluator_feature_loads_through_it(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 10)
    from framework.metrics.features import ClassifierFeatures

    with pytest.raises(ConfigError, match="^evaluator: "):
        ClassifierFeatures(str(junk))
