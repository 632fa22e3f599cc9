"""Quickstart wall time and digits test accuracy, with 1 and 2 torch threads.

    python benchmarks/quickstart.py [--threads 1 2]

Each setting runs `lightning fit --config recipes/quickstart.yaml --torch_threads N` in a
fresh process, then tests the final weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from framework.cli import run_cli
start = time.perf_counter()
cli = run_cli(["fit", "--config", sys.argv[2], "--torch_threads", sys.argv[1],
               "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
fit_s = time.perf_counter() - start
(result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
print("RESULT", json.dumps({"threads": torch.get_num_threads(), "fit_seconds": round(fit_s, 1),
                            "test_acc": round(result["test/acc"], 4),
                            "epochs": cli.trainer.current_epoch}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    recipe = os.path.join(REPO, "recipes", "quickstart.yaml")
    for threads in args.threads:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(threads), recipe], cwd=tmp, env=env,
                                 capture_output=True, text=True, check=True).stdout
            total = time.perf_counter() - start
        result = json.loads(out.split("RESULT", 1)[1])
        result["process_seconds"] = round(total, 1)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
