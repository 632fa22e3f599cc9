"""FKC against plain CFG on a 2-D Gaussian mixture with exact scores: 2-Wasserstein to the tilted target.

Classes c = 0, 1 with p(x | c) = N(mu_c, I), mu = (-1, 0), (1, 0), p(x) their equal mixture.
The target of CFG weight w, p(x)^(1 - w) p(x | c)^w, is computed exactly on a grid; the
generator is a ``diffusion`` model whose denoiser is the exact one of p(x | c) (label c) and
p(x) (the null label). Both samplers are the FKC sampler of :mod:`framework.generative.fkc`
(EDM Euler-Maruyama, the same steps): plain CFG is one particle without weights, FKC has
``K`` particles with weights and resampling. W2 (POT ``emd2``, squared Euclidean cost) of
``--n`` samples to the grid distribution (its points weighted by the target's mass).

    OMP_NUM_THREADS=1 python benchmarks/fkc_mixture.py --out docs/benchmarks/fkc_mixture.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

MEANS = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)


def gaussian_denoiser(x, sigma, mean):
    """E[x0 | x0 + sigma n = x] for x0 ~ N(mean, I)."""
    return mean + (x - mean) / (1 + sigma.view(-1, 1) ** 2)


def mixture_denoiser(x, sigma):
    """E[x0 | x] for x0 ~ (N(mu_0, I) + N(mu_1, I)) / 2."""
    var = 1 + sigma.view(-1, 1) ** 2
    logr = -((x[:, None, :] - MEANS[None]) ** 2).sum(-1) / (2 * var)
    r = torch.softmax(logr, dim=1)
    return sum(r[:, k : k + 1] * gaussian_denoiser(x, sigma, MEANS[k]) for k in (0, 1))


def exact_model():
    from framework.generative.diffusion.model import Diffusion

    model = Diffusion(num_classes=2, data_shape=(2,), net="resmlp", net_args={"width": 8, "depth": 1}).double()

    def denoise(x, sigma, labels):
        out = mixture_denoiser(x, sigma)  # the null class
        for k in (0, 1):
            rows = labels == k
            out[rows] = gaussian_denoiser(x[rows], sigma[rows], MEANS[k])
        return out

    model.denoise = denoise
    return model


def tilted_grid(w: float, c: int = 1, size: int = 161, half: float = 6.0):
    """Grid points and the normalised mass of p(x)^(1 - w) p(x | c)^w on them."""
    g = torch.linspace(-half, half, size, dtype=torch.float64)
    pts = torch.cartesian_prod(g, g)
    log_n = lambda k: -((pts - MEANS[k]) ** 2).sum(1) / 2  # noqa: E731
    log_p = torch.logaddexp(log_n(0), log_n(1)) - math.log(2)
    return pts, torch.softmax((1 - w) * log_p + w * log_n(c), 0)


def w2(samples: torch.Tensor, pts: torch.Tensor, mass: torch.Tensor) -> float:
    import ot

    keep = mass > 1e-10
    a = torch.full((len(samples),), 1 / len(samples), dtype=torch.float64)
    b = mass[keep] / mass[keep].sum()
    cost = torch.cdist(samples.double(), pts[keep]) ** 2
    return math.sqrt(float(ot.emd2(a.numpy(), b.numpy(), cost.numpy(), numItermax=1_000_000)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--w", type=float, default=3.0)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = exact_model()
    pts, mass = tilted_grid(args.w)
    labels, seeds = torch.ones(args.n, dtype=torch.long), torch.arange(args.n)
    target_mean = (mass.view(-1, 1) * pts).sum(0)
    rows = {}
    runs = [("cfg", {"particles": 1, "resample": False}),
            ("fkc", {"particles": args.particles}),
            ("fkc_unclamped", {"particles": args.particles, "clamp": float("inf")})]  # fmt: skip
    for name, extra in runs:
        cpu = time.process_time()
        x = model.generate(labels, seeds, search="fkc", search_args={"scale": args.w, "steps": args.steps, **extra})
        rows[name] = {"w2": round(w2(x, pts, mass), 4), "mean": [round(v, 3) for v in x.mean(0).tolist()],
                      "nfe": model.last_nfe, "cpu_seconds": round(time.process_time() - cpu, 1)}  # fmt: skip
        print(name, json.dumps(rows[name]), flush=True)
    # the floor: W2 of n exact draws from the grid distribution (finite-sample error alone)
    draws = pts[torch.multinomial(mass, args.n, replacement=True, generator=torch.Generator().manual_seed(0))]
    result = {"w": args.w, "n": args.n, "particles": args.particles, "steps": args.steps,
              "target_mean": [round(v, 3) for v in target_mean.tolist()], "runs": rows,
              "w2_exact_draws": round(w2(draws, pts, mass), 4),
              "fkc_over_cfg": round(rows["fkc"]["w2"] / rows["cfg"]["w2"], 3), "threads": 1}  # fmt: skip
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
