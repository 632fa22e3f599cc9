"""Sharded data parallelism (FSDP2) for the large nets, under Lightning's ``ModelParallelStrategy``.

A net names the blocks that become FSDP units in a class attribute ``fsdp_units`` (``dit``:
its transformer blocks, ``song_unet``: its U-Net blocks, ``unet``: its residual and attention
blocks): the auto-wrap policy lives with the net. :func:`shard_children` shards every unit,
bottom-up, then each parameter-holding child of the LightningModule as a whole (what is left
outside the units: embeddings, stems, heads), over the data-parallel mesh. Each rank then holds
1/N of every parameter, gradient and optimizer state; the units' parameters are all-gathered
just before their forward and backward and freed after. Lightning calls it from
:meth:`framework.core.ClasszooModule.configure_model` when the trainer's strategy is a
``ModelParallelStrategy`` (recipe: ``recipes/diffusion_cifar10_dit_fsdp.yaml``; docs/launching.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from framework.errors import ConfigError

__all__ = ["fsdp_unit_types", "shard_children"]


def fsdp_unit_types(module: nn.Module) -> tuple[type[nn.Module], ...]:
    """The block classes named by the ``fsdp_units`` of every net inside ``module``."""
    types: dict[type[nn.Module], None] = {}
    for m in module.modules():
        types.update(dict.fromkeys(getattr(type(m), "fsdp_units", ())))
    return tuple(types)


def shard_children(module: nn.Module, mesh: Any, **fully_shard_kwargs: Any) -> dict[str, int]:
    """``fully_shard`` the FSDP units inside each child of ``module`` (innermost first), then the child.

    Args:
        module: The LightningModule (its children are the nets; it keeps no parameters of its own).
        mesh: The 1-D data-parallel device mesh (``ModelParallelStrategy``'s ``device_mesh["data_parallel"]``).
        **fully_shard_kwargs: Passed to ``torch.distributed.fsdp.fully_shard`` (e.g. ``mp_policy``).

    Returns:
        The number of units sharded in each child (0: the child is one unit).
    """
    from torch.distributed.fsdp import fully_shard

    own = [name for name, _ in module.named_parameters(recurse=False)]
    if own:
        raise ConfigError(f"{type(module).__name__} keeps parameters outside its nets ({', '.join(own)}): cannot shard them")
    units = fsdp_unit_types(module)
    counts = {}
    for name, child in module.named_children():
        if not any(p.requires_grad for p in child.parameters()):
            continue  # frozen copies (EMA nets, old models) stay whole on every rank
        inner = [m for m in child.modules() if units and isinstance(m, units) and m is not child]
        for m in reversed(inner):  # modules() is pre-order: reversed, a nested unit goes before its parent
            fully_shard(m, mesh=mesh, **fully_shard_kwargs)
        fully_shard(child, mesh=mesh, **fully_shard_kwargs)
        counts[name] = len(inner)
    return counts
