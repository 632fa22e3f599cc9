"""Training-augmentation throughput: images/s of each batched pipeline, and AutoAugment per image for comparison.

    OMP_NUM_THREADS=1 python benchmarks/augmentation_speed.py [--images 5120] [--threads 1] [--out FILE.json]

CIFAR-shaped batches (128 x 3 x 32 x 32, 8-bit values in [-1, 1]), no DataLoader: each
pipeline of ``framework.data.transforms.build_augmentation`` is applied to ``--images``
images batch by batch; ``torchvision AutoAugment per image`` applies
``torchvision.transforms.AutoAugment(CIFAR10)`` to each uint8 image in a Python loop (the
per-sample alternative to the batched version). Figures: images per CPU second (process
time, the steadier figure on a shared machine) and per wall second.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

PIPELINES = {
    "none": {},
    "crop 4 + flip": {"crop_padding": 4, "horizontal_flip": True},
    "crop + flip + brightness 63/255": {"crop_padding": 4, "horizontal_flip": True, "brightness": 63 / 255},
    "crop + flip + cutout 16": {"crop_padding": 4, "horizontal_flip": True, "cutout": 16},
    "AutoAugment cifar10 (batched)": {"autoaugment": "cifar10"},
    "TEEN: crop + flip + AutoAugment + cutout": {"crop_padding": 4, "horizontal_flip": True, "autoaugment": "cifar10", "cutout": 16},
    "PyCIL FeTrIL: crop + flip + brightness + AutoAugment + cutout": {
        "crop_padding": 4, "horizontal_flip": True, "brightness": 63 / 255, "autoaugment": "cifar10", "cutout": 16,
    },
}  # fmt: skip


def timed(fn, batches: list[torch.Tensor]) -> dict:
    fn(batches[0])  # warm-up (imports, first-call allocations)
    cpu, wall = time.process_time(), time.perf_counter()
    for x in batches:
        fn(x)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = sum(len(x) for x in batches)
    return {"images": n, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "images_per_cpu_s": round(n / cpu), "images_per_wall_s": round(n / wall)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5120)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    from framework.data.transforms import build_augmentation

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), generator=g).float() / 127.5 - 1
    batches = list(torch.split(images, args.batch_size))
    torch.manual_seed(0)
    rows = {}
    for name, options in PIPELINES.items():
        aug = build_augmentation(**options)
        rows[name] = timed(aug if aug is not None else (lambda x: x), batches)
        print(f"{name:>62}: {json.dumps(rows[name])}", flush=True)
    reference = AutoAugment(AutoAugmentPolicy.CIFAR10, fill=128)

    def per_image(x: torch.Tensor) -> torch.Tensor:
        u8 = ((x + 1) * 127.5).round().to(torch.uint8)
        return torch.stack([reference(img) for img in u8]).float() / 127.5 - 1

    rows["torchvision AutoAugment per image"] = timed(per_image, batches)
    print(f"{'torchvision AutoAugment per image':>62}: {json.dumps(rows['torchvision AutoAugment per image'])}")
    result = {"threads": args.threads, "batch_size": args.batch_size, "load_average": os.getloadavg(), "pipelines": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
