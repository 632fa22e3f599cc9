"""Draw docs/images/glyphs_grid.png: 8 test-split images of each of the 100 ``glyphs`` classes.

    OMP_NUM_THREADS=1 MPLBACKEND=Agg python scripts/glyphs_grid.py [--out docs/images/glyphs_grid.png]

The images are those of ``glyphs`` with its default arguments and seed 0 (the first 8 of each
class's test split are rendered directly, nothing is cached); each cell is titled with the
class's character and its label.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from framework.data.glyphs import GLYPHS, render_class

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images" / "glyphs_grid.png"))
    parser.add_argument("--per-class", type=int, default=8)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = time.process_time()
    tiles = [render_class(label, "test", args.per_class, seed=0) for label in range(len(GLYPHS))]
    print(f"rendered {len(GLYPHS) * args.per_class} images in {time.process_time() - start:.1f} CPU s")
    half = (args.per_class + 1) // 2
    fig, axes = plt.subplots(10, 10, figsize=(16, 10))
    for label, (ax, images) in enumerate(zip(axes.flat, tiles)):
        padded = np.concatenate([images, np.full((2 * half - len(images), *images.shape[1:]), 255, np.uint8)])
        rows = [np.concatenate(list(padded[r * half : (r + 1) * half]), axis=1) for r in range(2)]
        ax.imshow(np.concatenate(rows, axis=0), interpolation="nearest")
        ax.set_title(f"{GLYPHS[label]}  ({label})", fontsize=9, pad=2)
        ax.axis("off")
    fig.suptitle("glyphs: 100 classes, 8 test images each (seed 0, 32 x 32 RGB)", fontsize=12)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
