"""`rest finetune` under torchrun: data-parallel training with torch.distributed.

torchrun starts one process per device and tells each its RANK, LOCAL_RANK and WORLD_SIZE.
Every rank plans the same global batches (same data, same seed) and trains on its share of
each batch's rows; DistributedDataParallel averages the gradients. Each rank's loss is
normalised by the token count of the whole global batch, so the averaged gradient is the
gradient of the single-process loss on that batch. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .errors import UsageError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch: every size-th row, so ranks get equal shares of lengths."""
        return indices[self.rank::self.size]

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums over all ranks (float64, so token counts stay exact)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train: DDP, which also makes every rank start from rank 0's weights."""
        if not self.distributed:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Whether this process reports and writes: rank 0 under torchrun, or a process alone."""
    return int(os.environ.get("RANK", "0")) == 0


def join_world(device_option: str) -> World:
    """The world torchrun describes in the environment (one process alone when it does not)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_option == "cuda" or (device_option == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        except (RuntimeError, ValueError) as err:
            raise UsageError(f"cannot join the torchrun process group: {err}") from None
    return world


def device_of(world: World, device: torch.device) -> torch.device:
    """Each rank's own GPU (LOCAL_RANK); the CPU is shared."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device
