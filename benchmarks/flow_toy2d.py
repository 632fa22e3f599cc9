"""Toy 2-D flow matching: our `flow` module beside torchcfm's own training loop, same net/steps/seed.

For each task (N(0, I) -> 8gaussians, 8gaussians -> moons) and each method (cfm, ot_cfm),
trains torchcfm's MLP (w=64, time as an input) twice from the same initial weights and seed:

- *ours*: the registered ``flow`` model (path ``cfm``/``ot_cfm``) under a Lightning Trainer;
- *torchcfm*: torchcfm's ``ConditionalFlowMatcher`` / ``ExactOptimalTransportConditionalFlowMatcher``
  in the plain loop of its README (Adam, fresh source batch each step).

Both see the same sequence of target batches. Each model then carries 2,000 seeded source
points with 10 and 100 Euler steps (ours: ``framework.generative.ode``; torchcfm's:
``torchdiffeq.odeint(method="euler")``) and we report the exact 2-Wasserstein distance (POT
``emd2``, squared Euclidean cost, square root) to 2,000 fresh target points, plus the
reference W2 between two independent target draws (the sampling-noise floor).

    OMP_NUM_THREADS=1 python benchmarks/flow_toy2d.py --steps 3000 --out docs/benchmarks/flow_toy2d.json
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L
import numpy as np
import ot as pot
import torch
from torch import nn
from torch.utils.data import DataLoader

from framework.data import toy2d
from framework.data.base import InMemoryDataset, batch_passthrough
from framework.generative.flow.model import FlowMatching

TASKS = [("gaussian", "8gaussians"), ("8gaussians", "moons")]
METHODS = ["cfm", "ot_cfm"]


def sample(name: str, n: int, seed: int) -> torch.Tensor:
    """``n`` points of a distribution (``gaussian`` = N(0, I)) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    if name == "gaussian":
        return torch.randn(n, 2, generator=g)
    return toy2d.sample_toy2d(name, n, generator=g)[0].float()


def w2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between two point clouds of equal weight (POT emd2)."""
    cost = torch.cdist(a.double(), b.double()) ** 2
    return float(np.sqrt(pot.emd2(pot.unif(len(a)), pot.unif(len(b)), cost.numpy(), numItermax=1_000_000)))


class TorchcfmMLP(nn.Module):
    """torchcfm's MLP under the denoiser-net interface ``net(x, t, labels)``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        from torchcfm.models import MLP

        torch.manual_seed(seed)
        self.mlp = MLP(dim=2, w=64, time_varying=True)

    def forward(self, x, t, labels=None):
        return self.mlp(torch.cat([x, t[:, None]], 1))


def train_ours(method, source, targets, steps, batch, lr, sigma, seed):
    net = TorchcfmMLP(seed)
    model = FlowMatching(
        num_classes=0, data_shape=(2,), net=net, path=method, path_args={"sigma": sigma}, source=source,
        optimizer=lambda p: torch.optim.Adam(p, lr=lr),
    )
    loader = DataLoader(InMemoryDataset(targets, torch.zeros(len(targets), dtype=torch.long)),
                        batch_size=batch, shuffle=False, collate_fn=batch_passthrough)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    L.seed_everything(seed, verbose=False)
    start = time.perf_counter()
    trainer.fit(model, loader)
    seconds = time.perf_counter() - start
    model.eval()

    def generate(x0, euler_steps):
        with torch.no_grad():
            return model.solve(x0, None, solver="euler", steps=euler_steps).x

    return generate, seconds


def train_torchcfm(method, source, targets, steps, batch, lr, sigma, seed):
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )
    from torchdiffeq import odeint

    net = TorchcfmMLP(seed)
    matcher = {"cfm": ConditionalFlowMatcher, "ot_cfm": ExactOptimalTransportConditionalFlowMatcher}[method](sigma)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    L.seed_everything(seed, verbose=False)
    start = time.perf_counter()
    for k in range(steps):
        x1 = targets[k * batch : (k + 1) * batch]
        x0 = torch.randn(batch, 2) if source == "gaussian" else toy2d.sample_toy2d(source, batch)[0].float()
        opt.zero_grad()
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        loss = torch.mean((net.mlp(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    net.eval()

    def generate(x0, euler_steps):
        with torch.no_grad():
            ts = torch.linspace(0, 1, euler_steps + 1)
            return odeint(lambda t, x: net.mlp(torch.cat([x, t.repeat(len(x))[:, None]], 1)), x0, ts, method="euler")[-1]

    return generate, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps of every run")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sigma", type=float, default=0.1, help="path sigma (torchcfm's notebooks: 0.1)")
    parser.add_argument("--eval", type=int, default=2000, help="points generated and target points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results = []
    for source, target in TASKS:
        targets = sample(target, args.steps * args.batch, args.seed + 1)
        reference = sample(target, args.eval, args.seed + 2)
        x0 = sample(source, args.eval, args.seed + 3)
        floor = w2(sample(target, args.eval, args.seed + 4), reference)
        for method in METHODS:
            for impl, train in (("ours", train_ours), ("torchcfm", train_torchcfm)):
                generate, seconds = train(method, source, targets, args.steps, args.batch, args.lr, args.sigma, args.seed)
                row = {"task": f"{source}->{target}", "method": method, "impl": impl, "train_s": round(seconds, 1),
                       "w2_floor": round(floor, 4)}
                for n in (10, 100):
                    row[f"w2_euler{n}"] = round(w2(generate(x0, n), reference), 4)
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
