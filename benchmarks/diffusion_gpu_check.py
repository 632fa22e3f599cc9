"""GPU smoke check of the CIFAR-10 diffusion recipes' nets, on synthetic 32x32 data (no download).

For each of ``diffusion_cifar10_edm.yaml``, ``_vp.yaml`` and ``_dit.yaml``: builds the recipe's model,
runs ``--steps`` training steps at the recipe's per-device batch in bf16 autocast, and reports
images/s, the loss of the first and last steps, peak memory, and the time of one EDM-Heun
(35 NFE) batch of 64 samples with the EMA-free weights. A few minutes on one GPU.

    python benchmarks/diffusion_gpu_check.py --steps 50 --out gpu_check.json
    python benchmarks/diffusion_gpu_check.py --device cpu --steps 1 --batch 4 --tiny  # CPU dry run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["diffusion_cifar10_edm.yaml", "diffusion_cifar10_vp.yaml", "diffusion_cifar10_dit.yaml"]
# --tiny (a CPU dry run of this script): small nets in place of the recipes' ones.
TINY = {
    "unet": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []},
    "dit": {"hidden_size": 16, "depth": 1, "num_heads": 2, "patch_size": 4},
}


def check(recipe: str, steps: int, device: str, tiny: bool = False, batch: int | None = None) -> dict:
    from framework.generative.diffusion import Diffusion

    config = yaml.safe_load((ROOT / "recipes" / recipe).read_text())
    init = dict(config["model"]["init_args"])
    if tiny:
        init["net_args"] = TINY[init["net"]]
    batch = batch or config["data"]["init_args"]["batch_size"]
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    lr = init.pop("optimizer")["init_args"]["lr"]
    init.pop("scheduler", None)
    torch.manual_seed(0)
    model = Diffusion(num_classes=10, data_shape=(3, 32, 32), **init).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # Smooth synthetic images: a fixed random low-frequency pattern per class plus noise.
    patterns = torch.nn.functional.interpolate(torch.randn(10, 3, 4, 4), size=32, mode="bilinear").tanh().to(device)
    losses = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warmup = min(5, steps)
    for step in range(steps + warmup):
        if step == warmup:
            sync()
            start = time.perf_counter()
        y = torch.randint(0, 10, (batch,), device=device)
        x = (patterns[y] + 0.1 * torch.randn(batch, 3, 32, 32, device=device)).clamp(-1, 1)
        with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
            loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    sync()
    seconds = time.perf_counter() - start
    model.eval()
    t0 = time.perf_counter()
    with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        out = model.generate(torch.arange(64, device=device) % 10, range(64), sampler="edm_heun", steps=18)
    sync()
    return {
        "recipe": recipe, "batch": batch, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "images_per_s": round(steps * batch / seconds, 1), "loss_first": round(losses[0], 4),
        "loss_last": round(sum(losses[-5:]) / 5, 4), "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "heun35_64_samples_s": round(time.perf_counter() - t0, 2), "nfe": model.last_nfe,
        "samples_finite": bool(torch.isfinite(out).all()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (with --tiny, --batch)")
    parser.add_argument("--tiny", action="store_true", help="small nets (a CPU dry run of the script)")
    parser.add_argument("--batch", type=int, default=None, help="override the recipes' batch size")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no GPU: this check is for the device machine (or pass --device cpu)")
    rows = []
    for recipe in RECIPES:
        rows.append(check(recipe, args.steps, args.device, args.tiny, args.batch))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        Path(args.out).write_text(json.dumps({"device": name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
