"""Write ``tests/nets/fixtures/edm_reference.pt``: NVlabs/edm's ``SongUNet`` and ``AugmentPipe`` on fixed inputs.

The tests of ``song_unet`` (tests/nets/test_song_unet.py) and of the augmentation pipeline
(tests/diffusion/test_augment.py) compare our implementations with these outputs of the
reference itself. Run once, by hand, against a checkout of the reference (its code is never
copied into this repository and the tests never import it)::

    git clone https://github.com/NVlabs/edm /tmp/edm && git -C /tmp/edm checkout 008a4e5
    python tests/nets/make_edm_fixture.py /tmp/edm

(a folder holding only the reference's ``training/``, ``torch_utils/`` and ``dnnlib/`` works
too; then say which commit it is with ``--commit``). The fixture records the commit, this
command and the torch version that ran it.

What it holds:

* ``song_unet``: per tiny configuration, the reference's parameter names and shapes (in
  order), the weights, fixed inputs and the reference's output. The weights are not the
  reference's initialisation: with it every residual branch, the attention and the output
  layer start scaled by 1e-5, so the output would hardly depend on them. Every parameter is
  instead drawn at unit scale (``randn / sqrt(fan_in)``; norms ``1 + 0.2 randn``; biases
  ``0.2 randn``) from a seeded generator and stored as float16, and the reference runs with
  exactly those (float16-representable) values, so every layer shows in the output.
* ``song_unet_cifar10``: the parameter count and tensor count of the reference's CIFAR-10
  ``--arch=ddpmpp`` net.
* ``augment``: per setting, the seed, the input images and the reference's augmented images
  and augment labels when ``torch.manual_seed(seed)`` is set just before the call.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "fixtures", "edm_reference.pt")

#: Tiny SongUNet configurations (the reference's argument names). ``data_shape`` is (C, H, W).
SONG_UNET_CONFIGS = {
    # DDPM++ as train.py --arch=ddpmpp builds it: positional embedding, [1, 1] filter; labels and augment labels.
    "ddpmpp_labels_augment": {
        "img_resolution": 8, "in_channels": 3, "out_channels": 3, "label_dim": 10, "augment_dim": 9,
        "model_channels": 12, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.0,
    },
    # Unconditional, attention at the top resolution, NCSN++'s Fourier embedding and [1, 3, 3, 1] filter.
    "fourier_unconditional": {
        "img_resolution": 8, "in_channels": 1, "out_channels": 1, "label_dim": 0, "augment_dim": 0,
        "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [8], "dropout": 0.0,
        "embedding_type": "fourier", "channel_mult_noise": 2, "resample_filter": [1, 3, 3, 1],
    },
}  # fmt: skip

#: EDM's CIFAR-10 net (train.py --cond=1 --arch=ddpmpp --augment=0.12).
CIFAR10 = {
    "img_resolution": 32, "in_channels": 3, "out_channels": 3, "label_dim": 10, "augment_dim": 9,
    "model_channels": 128, "channel_mult": [2, 2, 2], "num_blocks": 4, "attn_resolutions": [16], "dropout": 0.13,
}  # fmt: skip

#: AugmentPipe settings (the reference's argument names), each with its seed and input shape (N, C, H, W).
AUGMENT_SETTINGS = {
    # EDM's CIFAR-10 setting: --augment=0.12 with train.py's multipliers.
    "edm_cifar10": {"seed": 1, "shape": [8, 3, 16, 16],
                    "args": {"p": 0.12, "xflip": 1e8, "yflip": 1, "scale": 1, "rotate_frac": 1, "aniso": 1, "translate_frac": 1}},
    # The same transforms on every sample.
    "geometric_p1": {"seed": 2, "shape": [4, 3, 16, 16],
                     "args": {"p": 1.0, "xflip": 1, "yflip": 1, "scale": 1, "rotate_frac": 1, "aniso": 1, "translate_frac": 1}},
    # Every pixel-blitting and geometric transform, half of the time, one channel.
    "all_p05": {"seed": 3, "shape": [6, 1, 12, 12],
                "args": {"p": 0.5, "xflip": 1, "yflip": 1, "rotate_int": 1, "translate_int": 1, "scale": 1,
                         "rotate_frac": 1, "aniso": 1, "translate_frac": 1}},
    # Integer translation alone on non-square images (no resampling).
    "translate_int_nonsquare": {"seed": 4, "shape": [4, 2, 8, 12], "args": {"p": 1.0, "translate_int": 1}},
}  # fmt: skip


def unit_scale_weights(shapes: list[tuple[str, list[int]]], seed: int) -> list[torch.Tensor]:
    """Float16 weights at unit scale, one per (name, shape), drawn in order from ``seed``.

    Group norms' scales (``...norm*.weight``) are ``1 + 0.2 randn``, other 1-D tensors ``0.2 randn``,
    weight matrices and kernels ``randn / sqrt(fan_in)``.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in shapes:
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        if len(shape) >= 2:  # linear / conv weight
            w = noise / math.sqrt(math.prod(shape[1:]))
        elif "norm" in name.rsplit(".", 2)[-2] and name.endswith(".weight"):
            w = 1 + 0.2 * noise
        else:  # biases (and the group norms' shifts)
            w = 0.2 * noise
        out.append(w.to(torch.float16))
    return out


def song_unet_inputs(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Fixed inputs of one configuration: images, c_noise, labels (``label_dim`` = no label), augment labels."""
    g = torch.Generator().manual_seed(seed)
    n, res, c = 4, config["img_resolution"], config["in_channels"]
    inputs = {
        "x": torch.randn(n, c, res, res, generator=g),
        "noise_labels": torch.tensor([-1.5, -0.3, 0.4, 1.1]),  # EDM's c_noise = ln(sigma) / 4 over its sigma range
    }
    if config["label_dim"]:
        labels = torch.randint(0, config["label_dim"], (n,), generator=g)
        labels[-1] = config["label_dim"]  # the null label: the zero one-hot vector in the reference
        inputs["labels"] = labels
    if config["augment_dim"]:
        augment = torch.randn(n, config["augment_dim"], generator=g)
        augment[0] = 0  # an un-augmented sample
        inputs["augment_labels"] = augment
    return inputs


def _song_unet_case(networks, name: str, config: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    net = networks.SongUNet(**config).eval()
    shapes = [(k, list(p.shape)) for k, p in net.named_parameters()]
    weights = unit_scale_weights(shapes, seed)
    with torch.no_grad():
        for p, w in zip(net.parameters(), weights):
            p.copy_(w.float())
    buffers = {k: v.clone() for k, v in net.named_buffers() if k.endswith("map_noise.freqs")}  # Fourier frequencies
    inputs = song_unet_inputs(config, seed)
    onehot = None
    if config["label_dim"]:
        onehot = torch.nn.functional.one_hot(inputs["labels"], config["label_dim"] + 1)[:, : config["label_dim"]].float()
    with torch.no_grad():
        out = net(inputs["x"], inputs["noise_labels"], onehot, inputs.get("augment_labels"))
    print(f"song_unet {name}: {sum(math.prod(s) for _, s in shapes):,} parameters, output std {out.std():.3f}")
    # One flat float16 tensor (split by the shapes to load it): no per-tensor overhead in the file.
    flat = torch.cat([w.flatten() for w in weights])
    return {"config": config, "seed": seed, "names": [k for k, _ in shapes], "shapes": [s for _, s in shapes],
            "weights": flat, "buffers": buffers, "inputs": inputs, "output": out}  # fmt: skip


def _augment_case(augment, setting: dict) -> dict:
    g = torch.Generator().manual_seed(1000 + setting["seed"])
    images = torch.randn(setting["shape"], generator=g)
    pipe = augment.AugmentPipe(**setting["args"])
    torch.manual_seed(setting["seed"])
    out, labels = pipe(images)
    return {**setting, "images": images, "output": out, "labels": labels}


def _commit(path: str, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"error: {path} is not a git checkout; name the reference's commit with --commit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="checkout of NVlabs/edm (holding training/, torch_utils/, dnnlib/)")
    parser.add_argument("--commit", default=None, help="the reference's commit (default: git rev-parse HEAD in it)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="fixture file to write")
    args = parser.parse_args(argv)
    commit = _commit(args.reference, args.commit)
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.abspath(args.reference))
    from training import augment, networks  # the reference's modules

    fixture = {
        "reference": "NVlabs/edm",
        "commit": commit,
        "command": "python tests/nets/make_edm_fixture.py <edm checkout>" + (f" --commit {args.commit}" if args.commit else ""),
        "torch": str(torch.__version__),
        "song_unet": {name: _song_unet_case(networks, name, cfg, seed) for seed, (name, cfg) in
                      enumerate(SONG_UNET_CONFIGS.items())},
        "augment": {name: _augment_case(augment, s) for name, s in AUGMENT_SETTINGS.items()},
    }  # fmt: skip
    with torch.device("meta"):
        big = networks.SongUNet(**CIFAR10)
    params = list(big.parameters())
    fixture["song_unet_cifar10"] = {"config": CIFAR10, "num_params": sum(p.numel() for p in params), "num_tensors": len(params)}
    print(f"song_unet CIFAR-10: {fixture['song_unet_cifar10']['num_params']:,} parameters in {len(params)} tensors")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(fixture, args.output)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB), reference commit {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
