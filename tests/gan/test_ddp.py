"""adcgan under DDP: 2 CPU processes over gloo stay in sync (weights, EMA, counters) and draw different fakes."""

import os
import sys
from pathlib import Path

import torch
from tests import _processes as processes

SCRIPT = Path(__file__).with_name("ddp_script.py")


def test_two_process_ddp_keeps_replicas_in_sync(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = processes.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 9 optimizer steps with n_dis = 2: 6 D steps and 3 G steps on each rank.
    assert r0["global_step"] == r1["global_step"] == 9
    assert int(r0["state"]["generator_steps"]) == 3 and int(r0["state"]["discriminator_steps"]) == 6
    # Batch-norm running statistics are the exception: each rank updates them on its own
    # fakes and DDP re-broadcasts rank 0's at the start of every step (broadcast_buffers).
    synced = [k for k in r0["state"] if "running_" not in k and "num_batches_tracked" not in k]
    assert any(k.startswith("generator_ema.") for k in synced) and any("_u" in k for k in synced)
    for key in synced:
        value = r0["state"][key]
        torch.testing.assert_close(value, r1["state"][key], msg=f"{key} differs across ranks")
    # Each rank draws its own latents and fake labels.
    assert not torch.allclose(r0["z"], r1["z"])
