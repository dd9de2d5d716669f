"""`rest finetune --fsdp`: the policy sharded over torchrun's processes with torch's FSDP2.

Each process holds 1/N of every weight, gradient and optimizer moment (DDP holds them whole on
each). A layer's whole weights exist only while it runs: they are gathered from all processes
before its forward and backward pass and freed after, and its gradients are reduce-scattered
back to their shards. The units are the model's layers, the elements of its stacks of identical
blocks (Llama's decoder layers, T5's blocks, the native Transformer's encoder and decoder
layers), then the root, which holds the rest (embeddings, output layer, final norms).

Checkpoints and model directories do not change: the whole state dicts are gathered on rank 0,
on the CPU, and written in the format of an unsharded run (the optimizer's state keyed by the
position of its parameters, as `optimizer.state_dict()` has it); a checkpoint is loaded back
shard by shard. So a sharded run may resume unsharded, and the other way round.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from rest_cli.errors import UsageError


def shard(model: nn.Module, device: torch.device, bf16: bool) -> nn.Module:
    """`model` itself, its layers then its root sharded in place over all processes, on `device`.

    With `bf16` the gathered weights are cast to bfloat16 (half the memory and traffic of the
    gathered layer) and gradients reduced in float32; the sharded weights stay float32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    layers = layer_stacks(model)
    if not layers:
        raise UsageError(f"--fsdp: found no stack of layers to shard in {type(model).__name__}; "
                         f"train without --fsdp")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def layer_stacks(model: nn.Module) -> list[nn.Module]:
    """The elements of every outermost ModuleList of same-class blocks that hold weights: the layers.

    Found by shape rather than by name, so that every architecture (transformers' own, peft's
    wrapper around it, the native Transformer) is covered by one rule.
    """
    layers: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():  # parents before children: a stack inside a layer is left to it
        if id(module) in inside:
            continue
        if isinstance(module, nn.ModuleList) and _is_stack(module):
            layers.extend(module)
            inside.update(id(m) for layer in module for m in layer.modules())
    return layers


def _is_stack(modules: nn.ModuleList) -> bool:
    return (len(modules) > 0 and len({type(m) for m in modules}) == 1
            and any(True for _ in modules[0].parameters()))


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on rank 0's CPU ({} on the other ranks). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_whole())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The whole optimizer state on rank 0's CPU, as an unsharded run's `optimizer.state_dict()`
    has it ({} on the other ranks). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_whole())
    return _renamed(state, positions(model)) if state else state


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (every rank holds it) into the shards of a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an unsharded run's optimizer state (every rank holds it) into a sharded model's optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {}
    for name, position in positions(model).items():
        names.setdefault(position, name)  # a tied weight under its first name, as named_parameters() gives
    set_optimizer_state_dict(model, optimizer, _renamed(state, names),
                             options=StateDictOptions(full_state_dict=True))


def positions(model: nn.Module) -> dict[str, int]:
    """Each name of a trained parameter -> its position in the optimizer (built on the trained
    parameters in model order); a tied weight has several names."""
    index = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
    return {name: index[id(p)] for name, p in model.named_parameters(remove_duplicate=False)
            if id(p) in index}


def _renamed(state: dict, key: dict) -> dict:
    """An optimizer state dict with its parameter keys mapped through `key` (names <-> positions)."""
    return {"state": {key[k]: v for k, v in state["state"].items()},
            "param_groups": [{**group, "params": list(dict.fromkeys(key[k] for k in group["params"]))}
                             for group in state["param_groups"]]}


def _whole():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # On the CPU of rank 0 alone: a model too big for one device's memory is gathered tensor by tensor.
    return StateDictOptions(full_state_dict=True, cpu_offload=True)
