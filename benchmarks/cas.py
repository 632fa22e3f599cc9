"""Classification Accuracy Score of a generator checkpoint, beside the same classifier trained on real data.

    python benchmarks/cas.py --generator-recipe recipes/flow_digits.yaml --ckpt outputs/flow_digits/flow_digits.ckpt \
        --classifier-recipe recipes/quickstart.yaml [--generated-args '{"steps": 10}'] [--json out.json] \
        [-- --trainer.max_epochs=10]

Trains the classifier recipe from scratch twice, on the generator recipe's real training split
and on the ``generated`` DataModule (the same size and labels, sample i from seed i; cached
under ``--root``/cache by checkpoint hash and options), tests both on the real test split and
prints CAS, the real-data accuracy and their ratio (Ravuri & Vinyals 2019). Arguments after
``--`` go to both training runs. Figures: docs/benchmarks/compositions.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator-recipe", required=True, help="the recipe that trained the generator (its data are the real data)")
    parser.add_argument("--ckpt", required=True, help="the generator checkpoint")
    parser.add_argument("--classifier-recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--generated-args", default="{}", help="JSON arguments of the generated DataModule (sampler, steps, ...)")
    parser.add_argument("--root", default="runs/cas")
    parser.add_argument("--no-real", action="store_true", help="skip the real-data arm")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    try:
        generated_args = json.loads(args.generated_args)
    except json.JSONDecodeError as err:
        parser.error(f"--generated-args is not JSON: {err}")
    if not isinstance(generated_args, dict):
        parser.error(f"--generated-args must be a JSON object, got {args.generated_args}")
    torch.set_num_threads(1)

    from framework.metrics.cas import classification_accuracy_score

    start = time.process_time()
    result = classification_accuracy_score(
        args.ckpt, args.classifier_recipe, args.generator_recipe, root=args.root,
        generated_args=generated_args, overrides=extra, real_arm=not args.no_real,
    )
    result["cpu_seconds"] = time.process_time() - start
    line = f"CAS {100 * result['cas']:.2f}%"
    if "real_accuracy" in result:
        line += f"  real {100 * result['real_accuracy']:.2f}%  ratio {result['ratio']:.3f}"
    print(f"{args.ckpt}: {line}  ({result['cpu_seconds']:.0f} CPU s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**vars(args), "overrides": extra, **result}, indent=1))
    return result


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` with the project's bad-input rule: a ClasszooError is one line on stderr and exit 2."""
    from framework.errors import ClasszooError

    try:
        main(argv)
    except ClasszooError as err:
        print(f"cas.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
