"""A continual protocol under DDP: 2 CPU processes over gloo finish every step with identical state."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests import _processes as processes

SCRIPT = Path(__file__).with_name("ddp_script.py")


# Longer than the suite's 300 s: the process timeout (300 s) fails first, with its own message.
@pytest.mark.timeout(360)
def test_two_process_ddp_runs_the_protocol_in_lockstep(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = processes.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["done"] and r1["done"] and r0["epochs"] == r1["epochs"] == 2 + 3 * 1
    assert r0["correct"] == r1["correct"] and len(r0["correct"]) == 4
    assert r0["gammas"] == r1["gammas"] and len(r0["gammas"]) == 3
    torch.testing.assert_close(r0["head"], r1["head"])
    assert all(torch.equal(r0["memory"][c], r1["memory"][c]) for c in range(10))
    with open(tmp_path / "metrics.json") as f:  # written once, by rank 0
        assert len(json.load(f)["accuracy"]) == 4
