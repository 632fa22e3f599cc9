"""Wall time of one FeTrIL incremental step against one WA step on the same data.

    OMP_NUM_THREADS=1 python benchmarks/continual_step_time.py [--image_size 32] [--net cifar_resnet32]
        [--wa_epochs 15] [--fetril_epochs 50] [--repeats 1]

Both methods run the same digits scenario (4 base classes, then 3 steps of 2) with the same
backbone and base training; the figure is the mean wall time of the incremental steps (steps
1-3: training and step-end work, evaluation excluded), as recorded in ``step_seconds``. FeTrIL
is timed with the paper's SVM and with PyCIL's linear layer (``--fetril_epochs`` epochs on
cached features); WA trains the whole net for ``--wa_epochs`` epochs on new data + memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import lightning as L
import torch

from framework.continual.scenario import ClassIncremental
from framework.data.digits import DigitsDataModule
from registry import create


def steps_time(name: str, args, **kwargs) -> list[float]:
    L.seed_everything(0)
    data = ClassIncremental(DigitsDataModule(image_size=args.image_size), base_classes=4, increment=2, batch_size=64)
    model = create("model", name, num_classes=10, data_shape=(1, args.image_size, args.image_size), net=args.net,
                   base_epochs=args.base_epochs, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp)
        trainer.fit(model, datamodule=data)
    return model.step_seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--net", default="cifar_resnet32")
    parser.add_argument("--base_epochs", type=int, default=5)
    parser.add_argument("--wa_epochs", type=int, default=15)
    parser.add_argument("--fetril_epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = {
        "fetril (svm)": lambda: steps_time("fetril", args, classifier="svm"),
        f"fetril (linear, {args.fetril_epochs} epochs)": lambda: steps_time(
            "fetril", args, classifier="linear", epochs=args.fetril_epochs),
        f"wa ({args.wa_epochs} epochs, 200 exemplars)": lambda: steps_time(
            "wa", args, epochs=args.wa_epochs, memory_size=200),
    }
    print(f"| method | mean incremental step (s) | steps 1-3 (s) |  net {args.net}, {args.image_size} px, "
          f"{torch.get_num_threads()} thread(s)")
    print("|---|---|---|")
    for label, fn in runs.items():
        times = [t for _ in range(args.repeats) for t in fn()]
        print(f"| {label} | {statistics.mean(times):.2f} | {' / '.join(f'{t:.2f}' for t in times[:3])} |")


if __name__ == "__main__":
    main()
