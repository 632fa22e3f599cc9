"""Digits: classifiers steering generators at inference, judged by an independent classifier.

Needs, under ``--workdir`` (default ``outputs/steer``), checkpoints trained once, 1 thread each::

    guide/        lightning fit --config recipes/quickstart.yaml                  (cnn, seed 0: guides, verifies)
    judge/        lightning fit --config recipes/evaluator_digits.yaml --seed_everything 1 \\
                      --model.init_args.net mlp --model.init_args.net_args '{"hidden": [256, 256], "dropout": 0.1}'
    diff_uncond/  lightning fit --config recipes/diffusion_digits_uncond.yaml        (full length: 2,000 steps)
    flow_uncond/  lightning fit --config recipes/flow_digits_uncond.yaml           (full length: 2,000 steps)
    diff_cond/    lightning fit --config recipes/diffusion_digits.yaml             (full length: 200 epochs)
    noisy/        lightning fit --config recipes/noisy_classifier_digits.yaml --trainer.max_epochs=20

(each run in its folder; the newest ``*.ckpt`` below it is used). ``--table guidance`` samples
every configuration of GUIDANCE, ``--table search`` every (algorithm, budget) of SEARCH on the
conditional model's plain sampler, ``--table fkc`` FKC beside CFG at about the same NFE;
each scored by :func:`eval_generated.evaluate_samples` with the *judge* (another net and seed
than the guide): accuracy, Fréchet ratio at equal sample counts, memorisation check. Prints a
JSON line per configuration and writes them all to ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/steering_digits.py --table guidance --out docs/benchmarks/steering_guidance.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_generated import evaluate_samples  # noqa: E402

# (name, model, generate options): model "uncond" (diffusion), "flow" (flow matching), "cond".
# EluCD at the reference's defaults (AlexMaOLS/EluCD guided_sample.sh: classifier_scale 1,
# joint_temperature 1, margin_temperature_discount 0.5, softplus_beta 3; p_sample's sin
# schedule with 0.3): our elucd defaults. Then a sweep of the scale s alone, every point reported.
DDPM35 = {"sampler": "ddpm", "steps": 35}  # ancestral, as the EluCD reference's p_sample
DDPM250 = {"sampler": "ddpm", "steps": 250}  # the reference's own step count (timestep_respacing 250)
HEUN18 = {"sampler": "edm_heun", "steps": 18}  # 35 NFE
DDPM35VP = {**DDPM35, "schedule": "vp"}  # on DDPM's grid (uniform in the linear VP schedule's time)
DDPM250VP = {**DDPM250, "schedule": "vp"}  # the reference's sampler and grid (250 respaced steps)
MID10 = {"solver": "midpoint", "steps": 10}  # the flow recipe's 20 NFE
MID18 = {"solver": "midpoint", "steps": 18}  # 36 NFE, about the diffusion rows' 35
SCALES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def _elucd(scale: float, **extra) -> dict:
    return {"guidance": "elucd", "guidance_scale": scale, **({"guidance_args": extra} if extra else {})}


NOCLIP = {"clip_denoised": False}  # session 4's rows: the unclamped x0_hat (names without "clip")
GUIDANCE = [
    ("uncond, no guidance, edm_heun 18", "uncond", HEUN18),
    ("uncond, no guidance, ddpm 35", "uncond", DDPM35),
    *[(f"uncond, elucd s={s:g}, ddpm 35", "uncond", {**_elucd(s, **NOCLIP), **DDPM35}) for s in SCALES],
    ("uncond, elucd s=1 kappa=0, ddpm 35", "uncond", {**_elucd(1.0, kappa=0.0, **NOCLIP), **DDPM35}),
    ("uncond, no guidance, ddpm 250", "uncond", DDPM250),
    *[(f"uncond, elucd s={s:g}, ddpm 250", "uncond", {**_elucd(s, **NOCLIP), **DDPM250}) for s in (0.5, 1.0)],
    *[(f"uncond, elucd s={s:g}, edm_heun 18", "uncond", {**_elucd(s, **NOCLIP), **HEUN18}) for s in SCALES],
    ("flow, no guidance, midpoint 10", "flow", MID10),
    ("flow, no guidance, midpoint 18", "flow", MID18),
    *[(f"flow, elucd s={s:g}, midpoint 18", "flow", {**_elucd(s, **NOCLIP), **MID18}) for s in (0.5, 1.0, 2.0, 4.0)],
    ("flow, elucd s=1, midpoint 10", "flow", {**_elucd(1.0, **NOCLIP), **MID10}),
    # session 5: the reference's clip_denoised (x0_hat clamped to [-1, 1]), our elucd default
    *[(f"uncond, elucd s={s:g} clip, ddpm 35", "uncond", {**_elucd(s), **DDPM35}) for s in SCALES],
    *[(f"uncond, elucd s={s:g} clip, ddpm 250", "uncond", {**_elucd(s), **DDPM250}) for s in (1.0,)],
    *[(f"uncond, elucd s={s:g} clip, edm_heun 18", "uncond", {**_elucd(s), **HEUN18}) for s in (0.5, 1.0)],
    *[(f"flow, elucd s={s:g} clip, midpoint 18", "flow", {**_elucd(s), **MID18}) for s in (0.5, 1.0, 2.0)],
    ("uncond, no guidance, ddpm 35 vp", "uncond", DDPM35VP),
    *[(f"uncond, elucd s={s:g} clip, ddpm 35 vp", "uncond", {**_elucd(s), **DDPM35VP}) for s in (0.5, 1.0)],
    ("uncond, no guidance, ddpm 250 vp", "uncond", DDPM250VP),
    ("uncond, elucd s=1 clip, ddpm 250 vp", "uncond", {**_elucd(1.0), **DDPM250VP}),
    # the chain rule through the generator's x0_hat(x) (not the reference: it detaches x0_hat)
    *[(f"uncond, elucd s={s:g} through, ddpm 35", "uncond", {**_elucd(s, through_denoiser=True), **DDPM35})
      for s in (1.0, 2.0, 4.0)],
    *[(f"uncond, elucd s={s:g} through, edm_heun 18", "uncond", {**_elucd(s, through_denoiser=True), **HEUN18})
      for s in (1.0, 2.0, 4.0)],
    *[(f"flow, elucd s={s:g} through, midpoint 18", "flow", {**_elucd(s, through_denoiser=True), **MID18})
      for s in (1.0, 2.0, 4.0)],
    ("cond, no guidance", "cond", {}),
    ("cond, gfcg w=1", "cond", {"guidance": "gfcg", "guidance_scale": 1.0}),
    ("cond, gfcg w=2", "cond", {"guidance": "gfcg", "guidance_scale": 2.0}),
    ("cond, cfg w=2", "cond", {"guidance": "cfg", "guidance_scale": 2.0}),
    ("cond, cfg w=1.5", "cond", {"guidance": "cfg", "guidance_scale": 1.5}),
    ("cond, noise-aware classifier s=1", "cond", {"guidance": "classifier", "guidance_scale": 1.0}),
]
#: Checkpoint folder (under --workdir) of each generator.
FOLDERS = {"uncond": "diff_uncond", "cond": "diff_cond", "flow": "flow_uncond"}
# Search on the conditional model's plain dpmpp_2m (10 steps = 10 NFE): budgets 1x, 4x, 16x.
SEARCH_SAMPLER = {"sampler": "dpmpp_2m", "steps": 10}
SEARCH = [
    ("plain", None, {}),
    ("random n=4", "random", {"n": 4}),
    ("random n=16", "random", {"n": 16}),
    ("zero_order n=3 K=1", "zero_order", {"n": 3, "rounds": 1}),
    ("zero_order n=3 K=4", "zero_order", {"n": 3, "rounds": 4}),
    ("paths n=1 m=1", "paths", {"n": 1, "m": 1}),
    ("paths n=2 m=2", "paths", {"n": 2, "m": 2}),
]
FKC = [
    ("cfg w=3, edm_heun 18 steps", {"guidance": "cfg", "guidance_scale": 3.0}),
    ("fkc w=3, K=4, 8 steps", {"search": "fkc", "search_args": {"particles": 4, "scale": 3.0, "steps": 8}}),
    ("fkc w=3, K=2, 32 steps", {"search": "fkc", "search_args": {"particles": 2, "scale": 3.0, "steps": 32}}),
    ("cfg w=3 (fkc sampler, K=1, no weights), 32 steps",
     {"search": "fkc", "search_args": {"particles": 1, "scale": 3.0, "steps": 32, "resample": False}}),
    # equal NFE: FKC's K particles against one CFG chain with K times the steps
    ("fkc w=3, K=2, 16 steps", {"search": "fkc", "search_args": {"particles": 2, "scale": 3.0, "steps": 16}}),
    ("cfg w=3 (fkc sampler, K=1, no weights), 64 steps",
     {"search": "fkc", "search_args": {"particles": 1, "scale": 3.0, "steps": 64, "resample": False}}),
]


def newest(folder: Path) -> Path:
    return max(folder.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)


def load(workdir: Path, which: str, guide: Path, noisy: Path | None):
    from framework.loading import load_trained

    model = load_trained(newest(workdir / FOLDERS[which]), role=f"{which} generator")
    model.set_clean_classifier(str(guide))
    if noisy is not None and which == "cond":
        from framework.generative.diffusion.model import load_noisy_classifier

        model.guidance_classifier = load_noisy_classifier(str(noisy))
    return model


def sample(model, per_class: int, batch: int = 120, **options) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``per_class`` samples of each class (seeds 0..N-1); NFE and classifier evaluations per sample."""
    labels = torch.arange(10).repeat_interleave(per_class)
    seeds = torch.arange(len(labels))
    out, nfe, evals, verified = [], [], [], []
    cpu = time.process_time()
    for i in range(0, len(labels), batch):
        out.append(model.generate(labels[i:i + batch], seeds[i:i + batch], **options).clamp(-1, 1))
        nfe.append(model.last_nfe)
        evals.append(model.last_classifier_evaluations)
        if options.get("search") not in (None, "fkc"):
            verified.append(model.last_search_scores)
    cost = {"nfe": sum(nfe) / len(nfe), "classifier_evaluations": sum(evals) / len(evals),
            "cpu_seconds": round(time.process_time() - cpu, 1)}  # fmt: skip
    if verified:  # the verifier's (guide's) mean log p(y | x0) of the chosen samples
        cost["verifier_mean_log_prob"] = round(float(torch.cat(verified).mean()), 4)
    return torch.cat(out), labels, cost


def score(images, labels, judge: Path, guide: Path) -> dict:
    r = evaluate_samples((images.numpy(), labels.numpy()), evaluator=str(judge), verbose=False)
    g = evaluate_samples((images.numpy(), labels.numpy()), evaluator=str(guide), verbose=False)
    keys = ("accuracy", "fd_ratio_equal", "fd_real_equal", "fd_real_equal_sd", "fd_test", "nn_train_median",
            "nn_train_median_test", "num_samples", "real_accuracy")  # fmt: skip
    out = {f"judge_{k}" if k in ("accuracy", "real_accuracy") else k: round(r[k], 4) for k in keys}
    out["guide_accuracy"] = round(g["accuracy"], 4)  # the verifier's / guide's own view: hacking shows as a gap
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=("guidance", "search", "fkc"))
    parser.add_argument("--markdown", nargs="+", type=Path, metavar="JSON", help="print the rows of JSON files as a table")
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("JSON", "PNG"), help="plot a search table against NFE")
    parser.add_argument("--workdir", type=Path, default=ROOT / "outputs" / "steer")
    parser.add_argument("--per-class", type=int, default=36, help="36 x 10 = the 360 test digits")
    parser.add_argument("--which", choices=(*FOLDERS, "all"), default="all", help="generators to run")
    parser.add_argument("--only", help="run only the configurations whose name contains this")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return []
    if args.plot:
        plot_search(*args.plot)
        return []
    if args.table is None:
        parser.error("give --table, --markdown or --plot")
    torch.set_num_threads(1)
    w = args.workdir
    guide, judge = newest(w / "guide"), newest(w / "judge")
    noisy = newest(w / "noisy") if (w / "noisy").is_dir() and any((w / "noisy").rglob("*.ckpt")) else None
    rows, models = [], {}
    if args.table == "guidance":
        plan = [(name, which, opts) for name, which, opts in GUIDANCE if noisy or opts.get("guidance") != "classifier"]
    elif args.table == "search":
        plan = [(name, "cond", {**SEARCH_SAMPLER, **({"search": s, "search_args": a} if s else {})})
                for name, s, a in SEARCH]  # fmt: skip
    else:
        plan = [(name, "cond", opts) for name, opts in FKC]
    plan = [p for p in plan if args.which in ("all", p[1]) and (args.only is None or args.only in p[0])]
    for name, which, opts in plan:
        if which not in models:
            models[which] = load(w, which, guide, noisy)
        images, labels, cost = sample(models[which], args.per_class, **opts)
        row = {"config": name, **cost, **score(images, labels, judge, guide)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    machine = {"threads": 1, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
               "guide": str(guide.relative_to(w)), "judge": str(judge.relative_to(w))}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "machine": machine}, indent=1) + "\n")
    return rows


def plot_search(json_path: Path, png: Path) -> None:
    """Judge accuracy and verifier log-probability against NFE per algorithm (the search table's JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(json_path.read_text())["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for algo in ("random", "zero_order", "paths"):
        pts = sorted([r for r in rows if r["config"].startswith(algo) or r["config"] == "plain"], key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in pts]
        axes[0].plot(nfe, [r["judge_accuracy"] for r in pts], "o-", label=algo)
        axes[0].plot(nfe, [r["guide_accuracy"] for r in pts], "x:", color=axes[0].lines[-1].get_color())
        axes[1].plot(nfe, [r.get("verifier_mean_log_prob", float("nan")) for r in pts], "o-", label=algo)
    axes[0].set(xscale="log", xlabel="NFE per sample", ylabel="accuracy (o judge, x verifier)")
    axes[1].set(xscale="log", xlabel="NFE per sample", ylabel="verifier mean log p(y | x0)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def _floor(r: dict) -> str:
    """``FD(generated, test) / mean FD(train subsets, test) ± sd`` (rows written before the 50-subset floor: blank)."""
    if "fd_real_equal_sd" not in r:
        return ""
    return f"{r['fd_test']:.3g} / {r['fd_real_equal']:.3g} ± {r['fd_real_equal_sd']:.2g}"


def markdown(paths: list[Path]) -> str:
    """The rows of the JSON files as one Markdown table (docs/benchmarks/steering.md)."""
    head = ("| configuration | NFE | classifier evals | judge accuracy | guide accuracy | verifier log p | "
            "Fréchet ratio (equal counts) | FD test / floor ± sd | NN-train median (test: real) | samples | CPU s |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            v = r.get("verifier_mean_log_prob")
            lines.append(
                f"| {r['config']} | {r['nfe']:g} | {r['classifier_evaluations']:g} | {100 * r['judge_accuracy']:.1f}% "
                f"| {100 * r['guide_accuracy']:.1f}% | {'' if v is None else f'{v:.3f}'} | {r['fd_ratio_equal']:.2f} "
                f"| {_floor(r)} "
                f"| {r['nn_train_median']:.2f} ({r['nn_train_median_test']:.2f}) | {r['num_samples']} | {r['cpu_seconds']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
