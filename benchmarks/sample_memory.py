"""Peak memory of `lightning sample` at 5,000 and 50,000 images of 3 x 32 x 32: shards keep it flat.

A tiny class-conditional GAN (AC-GAN, DCGAN generator with 8 channels) on the 100-class ``glyphs``
data (2 training images per class: only the shapes matter) is trained for one step, then
``lightning sample`` runs in a fresh process for each N with the default ``shard_size``; its peak
resident memory (``ru_maxrss`` of the child) and CPU seconds are printed, with their ratio.

    OMP_NUM_THREADS=1 python benchmarks/sample_memory.py [--out DIR] [--counts 5000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
seed_everything: 0
torch_threads: 1
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 0
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        dirpath: {ckpt_dir}
        filename: tiny
        enable_version_counter: false
model:
  class_path: acgan
  init_args:
    conditioning: ac
    generator: dcgan_generator
    generator_args:
      channels: 8
      latent_dim: 16
    discriminator: dcgan_discriminator
    discriminator_args:
      channels: 8
    n_dis: 1
    ema: false
data:
  class_path: glyphs
  init_args:
    root: {data_dir}
    n_train: 2
    n_test: 1
    batch_size: 32
    render_workers: 1
"""


def run(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Run ``args`` in a child process; its peak RSS (MiB) and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (KiB on Linux): run the smaller N first.
    return {
        "peak_rss_mib": after.ru_maxrss / 1024,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 50000], help="total samples, ascending")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.counts != sorted(args.counts):
        parser.error("--counts must be ascending (the peak of RUSAGE_CHILDREN only grows)")
    work = Path(args.out or tempfile.mkdtemp(prefix="sample_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    config = work / "tiny_gan.yaml"
    config.write_text(CONFIG.format(ckpt_dir=work / "ckpt", data_dir=work / "data"))
    lightning = [sys.executable, "-m", "framework.cli"]
    subprocess.run([*lightning, "fit", "--config", str(config)], check=True, env=env, cwd=work, stdout=subprocess.DEVNULL)
    ckpt = work / "ckpt" / "tiny.ckpt"
    # A child that only starts the CLI and stops: the cost of the imports, the floor of every run.
    floor = run([*lightning, "sample", "--config", str(config), "--help"], env, work)
    results = {"floor": floor}
    for count in args.counts:
        out = work / f"n{count}"
        out.mkdir(exist_ok=True)  # the CLI saves its config.yaml in the working directory
        sample_args = ["sample", "--config", str(config), "--ckpt_path", str(ckpt), "--output", str(out),
                       "--num_per_class", str(count // 100), "--batch_size", "500"]  # fmt: skip
        results[count] = run([*lightning, *sample_args], env, out)
        results[count]["files"] = len(list(out.glob("samples*.npz")))
    print(f"{'run':>12} {'peak RSS MiB':>13} {'CPU s':>7} {'npz files':>9}")
    print(f"{'imports':>12} {floor['peak_rss_mib']:13.0f} {floor['cpu_s']:7.1f} {'-':>9}")
    for count in args.counts:
        r = results[count]
        print(f"{count:>12,} {r['peak_rss_mib']:13.0f} {r['cpu_s']:7.1f} {r['files']:>9}")
    low, high = results[args.counts[0]], results[args.counts[-1]]
    print(f"peak RSS ratio {args.counts[-1]:,} / {args.counts[0]:,}: {high['peak_rss_mib'] / low['peak_rss_mib']:.2f}")
    data_mib = {c: c * 3 * 32 * 32 * 4 / 2**20 for c in args.counts}
    print("images as float32: " + ", ".join(f"{c:,}: {m:.0f} MiB" for c, m in data_mib.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
