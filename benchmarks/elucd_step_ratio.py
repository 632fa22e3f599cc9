"""How strongly ``elucd`` moves one ancestral (``ddpm``) step, relative to the EluCD reference's rule.

The reference (AlexMaOLS/EluCD ``p_sample``) moves the DDPM step's mean by ``(Sigma_t + add) s g``
in ``x_t`` units, ``Sigma_t`` the step's variance (posterior beta-tilde on our sampler). Ours adds
``s lambda(sigma) g`` to the score of ``x_hat``, i.e. ``sigma^2 s lambda g`` to the denoised
estimate, which the ``ddpm`` step (DDIM with eta 1) carries into ``x_{t-1}`` with its ``x0``
coefficient. Both share ``gamma`` and ``s``; their ratio per step, on a formulation's noise levels::

    python benchmarks/elucd_step_ratio.py --steps 35 250 --schedule karras vp

The two agree as the steps shrink (the ratio -> 1): a discretisation difference, not a formula one.
"""

from __future__ import annotations

import argparse

import torch

from framework.generative.diffusion.formulations import EDM


def step_ratio(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Ours / the reference's mean shift of one ancestral step from ``sigma`` to ``sigma_next`` (> 0)."""
    ab, ab_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
    var = (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)  # beta-tilde: the step's variance in x_t units
    x0_coef = ab_next.sqrt() - ((1 - ab_next - var) * ab / (1 - ab)).sqrt()  # d x_{t-1} / d x0
    ours = x0_coef * sigma**2 * ab.sqrt()  # the x0 shift sigma^2 lambda g, lambda = gamma sqrt(ab)
    return ours / var


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[35, 250])
    parser.add_argument("--schedule", nargs="+", default=["karras", "vp"])
    args = parser.parse_args(argv)
    print("| steps | schedule | ratio at sigma > 1 (min-max) | 0.1 < sigma <= 1 | sigma <= 0.1 (before the last step) |")
    print("|---|---|---|---|---|")
    for steps in args.steps:
        for schedule in args.schedule:
            s = EDM().sigmas(steps, schedule)[:-1]  # the last step (to sigma 0) has no variance
            r, lo = step_ratio(s[:-1], s[1:]), s[:-1]
            cells = [r[m] for m in (lo > 1, (lo > 0.1) & (lo <= 1), lo <= 0.1)]
            txt = [f"{float(c.min()):.2f}-{float(c.max()):.2f}" if len(c) else "-" for c in cells]
            print(f"| {steps} | {schedule} | " + " | ".join(txt) + " |")


if __name__ == "__main__":
    main()
