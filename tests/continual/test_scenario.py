"""Scenario splits: class order, steps, remapped labels, few-shot support sets and index files."""

import json

import pytest
import torch

from framework.continual.scenario import (
    ClassIncremental,
    FewShotIncremental,
    class_order_from_seed,
)
from framework.data.base import ClasszooDataModule, InMemoryDataset
from framework.data.digits import DigitsDataModule
from framework.errors import ConfigError


class Toy(ClasszooDataModule):
    """n classes, `per_class` train and 3 test samples each; x encodes (label, index)."""

    def __init__(self, num_classes=10, per_class=8):
        super().__init__(batch_size=16)
        self.num_classes, self.data_shape = num_classes, (2,)
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.per_class = per_class

    def setup(self, stage=None):
        y = torch.arange(self.num_classes).repeat_interleave(self.per_class)
        x = torch.stack([y.float(), torch.arange(len(y)).float()], 1)
        self.train_dataset = InMemoryDataset(x, y)
        yt = torch.arange(self.num_classes).repeat(3)
        self.val_dataset = self.test_dataset = InMemoryDataset(torch.stack([yt.float(), -torch.ones(len(yt))], 1), yt)


def test_pycil_class_order_for_seed_1993():
    assert class_order_from_seed(100, 1993)[:4] == [68, 56, 78, 8]


@pytest.mark.parametrize(
    "base,inc,steps,sizes",
    [(50, 10, None, [50] + [10] * 5), (50, 5, None, [50] + [5] * 10), (40, 3, 20, [40] + [3] * 20), (0, 10, None, [10] * 10),
     (50, [20, 20, 10], None, [50, 20, 20, 10]), (50, 15, None, [50, 15, 15, 15, 5])],
)
def test_step_sizes(base, inc, steps, sizes):
    s = ClassIncremental(Toy(100, 2), base_classes=base, increment=inc, num_steps=steps)
    assert s.step_sizes == sizes and s.num_steps == len(sizes)


def test_steps_serve_remapped_contiguous_labels():
    s = ClassIncremental(Toy(), base_classes=4, increment=2, seed=1993)
    s.setup("fit")
    order = s.class_order
    assert sorted(order) == list(range(10)) and s.class_names[0] == f"c{order[0]}"
    step1 = s.train_data(1)
    assert set(step1.y.tolist()) == {4, 5}
    # the original label of each sample (x[:, 0]) is the class at that position of the order
    assert all(order[int(y)] == int(x[0]) for x, y in zip(step1.x, step1.y))
    assert len(s.train_data(range(3))) == 8 * 8
    ev = s.eval_data(2)
    assert set(ev.y.tolist()) == set(range(8)) and len(ev) == 8 * 3
    assert s.class_step().tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]


def test_explicit_order_and_errors():
    s = ClassIncremental(Toy(), base_classes=5, increment=5, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert s.class_order[0] == 9 and int(s.label_map[9]) == 0
    with pytest.raises(ConfigError):
        ClassIncremental(Toy(), base_classes=5, increment=5, class_order=[0, 1, 2])
    with pytest.raises(ConfigError):
        ClassIncremental(Toy(), base_classes=11, increment=1)
    with pytest.raises(ConfigError):
        ClassIncremental(Toy(), base_classes=4, increment=[4, 4])
    with pytest.raises(ConfigError):
        ClassIncremental(Toy(), base_classes=10, increment=1)  # a single step


def test_few_shot_support_sets_are_seeded_saved_and_reloaded(tmp_path):
    path = tmp_path / "support.json"
    s = FewShotIncremental(Toy(), base_classes=4, ways=2, shots=3, support_seed=5, support_file=str(path))
    s.setup("fit")
    assert s.step_sizes == [4, 2, 2, 2] and s.class_order == list(range(10))
    assert len(s.train_data(0)) == 4 * 8
    for step in (1, 2, 3):
        ys = s.train_data(step).y
        assert sorted(ys.tolist()) == sorted([2 * step + 2] * 3 + [2 * step + 3] * 3)
    saved = json.loads(path.read_text())
    again = FewShotIncremental(Toy(), base_classes=4, ways=2, shots=3, support_seed=99, support_file=str(path))
    again.setup("fit")  # reads the file: the seed no longer matters
    assert [ix.tolist() for ix in again._session_indices] == saved["sessions"]
    other = FewShotIncremental(Toy(), base_classes=4, ways=2, shots=3, support_seed=6)
    other.setup("fit")
    assert [ix.tolist() for ix in other._session_indices] != saved["sessions"]
    with pytest.raises(ConfigError):
        FewShotIncremental(Toy(), base_classes=4, ways=3, shots=3, support_file=str(path)).setup("fit")


def test_few_shot_reads_cec_index_files(tmp_path):
    # CEC layout: session_1 = base training samples (indices), session_k = support set of session k-1.
    (tmp_path / "session_1.txt").write_text("\n".join(str(i) for i in range(24)) + "\n")  # classes 0-2
    (tmp_path / "session_2.txt").write_text("72\n73\n64\n65\n")  # classes 9 and 8
    s = FewShotIncremental(Toy(), base_classes=1, ways=1, shots=1, index_dir=str(tmp_path))
    s.setup("fit")
    assert s.step_sizes == [3, 2] and s.class_order[:5] == [0, 1, 2, 8, 9]
    assert sorted(s.train_data(1).y.tolist()) == [3, 3, 4, 4]
    assert len(s.train_data(0)) == 24


def test_wraps_a_registered_datamodule():
    s = ClassIncremental(DigitsDataModule(batch_size=32), base_classes=4, increment=2)
    s.setup("fit")
    assert s.num_classes == 10 and s.data_shape == (1, 8, 8) and s.batch_size == 32
    assert len(s.train_data(0)) + sum(len(s.train_data(i)) for i in range(1, 4)) == len(s.dataset.train_dataset)


def test_features_are_taken_on_clean_images():
    s = ClassIncremental(Toy(), base_classes=4, increment=2)
    s.setup("fit")
    s.dataset.train_dataset.transform = lambda x: x + 100.0  # stands for a random augmentation
    assert float(s.train_data(0)[0][0][1]) >= 100.0
    assert float(s.subset("train", torch.tensor([0]), augment=False)[0][0][1]) < 100.0


class Files(torch.utils.data.Dataset):
    """An ImageFolder-like dataset: ``samples`` of (path, label)."""

    def __init__(self, n_classes=4, per_class=3):
        self.samples = [(f"/data/CUB/images/{c:03d}/img_{c}_{i}.jpg", c) for c in range(n_classes) for i in range(per_class)]
        self.targets = [c for _, c in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return torch.tensor([float(i)]), self.targets[i]


def test_few_shot_index_files_with_image_paths(tmp_path):
    data = Toy(num_classes=4, per_class=3)
    data.setup = lambda stage=None: None
    data.train_dataset = data.val_dataset = data.test_dataset = Files()
    (tmp_path / "session_1.txt").write_text("CUB/images/000/img_0_0.jpg\nCUB/images/000/img_0_1.jpg\nCUB/images/002/img_2_2.jpg\n")
    (tmp_path / "session_2.txt").write_text("CUB/images/003/img_3_1.jpg\n")
    s = FewShotIncremental(data, base_classes=1, ways=1, shots=1, index_dir=str(tmp_path))
    s.setup("fit")
    assert s._session_indices[0].tolist() == [0, 1, 8] and s._session_indices[1].tolist() == [10]
    assert s.class_order[:3] == [0, 2, 3] and s.step_sizes == [2, 1]
    x, y = s.train_data(1)[0]
    assert float(x[0]) == 10.0 and int(y) == 2
    (tmp_path / "session_2.txt").write_text("CUB/images/009/missing.jpg\n")
    with pytest.raises(ConfigError, match="missing.jpg"):
        FewShotIncremental(data, base_classes=1, ways=1, shots=1, index_dir=str(tmp_path)).setup("fit")


@pytest.mark.parametrize("revisit", [0.3, 0.75])
def test_generalized_steps_hold_exactly_the_documented_samples(revisit):
    # Class c first seen at step s with n samples: n - floor(revisit n) at step s, the rest in
    # near-equal chunks over the later steps (the first held % later chunks one larger); the
    # classes of the last step keep everything; nothing before step s; every sample once.
    per_class = 13
    s = ClassIncremental(Toy(10, per_class), base_classes=4, increment=2, revisit=revisit, revisit_seed=3)
    s.setup("fit")
    labels = s.labels("train")
    steps = [s.train_indices(t) for t in range(s.num_steps)]
    seen = torch.cat(steps)
    assert len(seen) == len(set(seen.tolist())) == 10 * per_class  # a partition of the training set
    for c in range(10):
        first = c // 2 - 1 if c >= 4 else 0  # base 4 classes, then pairs
        later = s.num_steps - 1 - first
        held = int(revisit * per_class) if later else 0
        expected = [0] * first + [per_class - held] + [held // later + (k < held % later) for k in range(later)]
        counts = [int((labels[ix] == c).sum()) for ix in steps]
        assert counts == expected, (c, counts, expected)
    # new classes of each step are the usual contiguous range; old classes may come back
    for t, ix in enumerate(steps):
        start, end = s.step_range(t)
        assert labels[ix].max() < end and set(range(start, end)) <= set(labels[ix].tolist())
    assert s.describe()["step_samples"] == [len(ix) for ix in steps]
    # revisit 0 is the ordinary scenario, sample for sample
    plain = ClassIncremental(Toy(10, per_class), base_classes=4, increment=2)
    plain.setup("fit")
    assert torch.equal(plain.train_indices(1), torch.nonzero((labels >= 4) & (labels < 6)).flatten())


def test_revisit_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="revisit"):
        ClassIncremental(Toy(), base_classes=4, increment=2, revisit=1.0)
