"""Sharded training (FSDP2 under Lightning's ModelParallelStrategy) of a tiny DiT in 2 CPU processes over gloo."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import framework  # noqa: F401 - registers everything
from framework.errors import ConfigError
from framework.generative.diffusion import Diffusion
from framework.nets.dit import DiTBlock
from framework.nets.song_unet import SongBlock
from framework.nets.unet import AttentionBlock, ResBlock
from framework.parallel import fsdp_unit_types, shard_children
from registry import create

REPO = Path(__file__).resolve().parents[2]
TINY_DIT = "{patch_size: 2, hidden_size: 32, depth: 2, num_heads: 2}"


def test_the_large_nets_name_their_blocks_as_fsdp_units():
    shape = (1, 8, 8)
    assert fsdp_unit_types(create("net", "dit", data_shape=shape, num_classes=10, hidden_size=32, depth=1, num_heads=2)) == (DiTBlock,)
    assert fsdp_unit_types(create("net", "song_unet", data_shape=shape, num_classes=10)) == (SongBlock,)
    assert set(fsdp_unit_types(create("net", "unet", data_shape=shape, num_classes=10))) == {ResBlock, AttentionBlock}


def test_parameters_outside_the_nets_are_refused():
    module = nn.Module()
    module.scale = nn.Parameter(torch.ones(()))
    with pytest.raises(ConfigError, match="scale"):
        shard_children(module, mesh=None)


def test_fsdp_recipe_trains_in_two_gloo_processes_and_its_checkpoint_reloads(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        sys.executable, "-m", "framework", "fit", "--config", str(REPO / "recipes" / "diffusion_cifar10_dit_fsdp.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy.init_args.data_parallel_size=2",
        "--trainer.precision=32-true", "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        "--data=digits", "--data.batch_size=8", f"--model.init_args.net_args={TINY_DIT}", "--torch_threads=1",
    ]  # fmt: skip
    # The timeout is the join timeout of the process group: a hung rank fails the test in minutes.
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FSDPDiT" in proc.stdout + proc.stderr  # the model summary shows the net wrapped by fully_shard
    (checkpoint,) = (tmp_path / "checkpoints").glob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2
    assert all(float(s["step"]) == 2 for s in saved["optimizer_states"][0]["state"].values())
    # One full (unsharded) state dict: it loads strictly into a plain, one-process model.
    model = Diffusion.load_from_checkpoint(checkpoint, map_location="cpu")
    reference = Diffusion(num_classes=10, data_shape=(1, 8, 8), net="dit", net_args=dict(patch_size=2, hidden_size=32, depth=2, num_heads=2))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, reference.state_dict()[k])]
    assert moved  # trained: not the initial weights
    with torch.no_grad():
        samples = model.generate(torch.tensor([0, 1]), [0, 1], steps=2)
    assert samples.shape == (2, 1, 8, 8) and torch.isfinite(samples).all()
