"""`rest finetune` under torchrun: data-parallel training with torch.distributed.

torchrun starts one process per device and tells each its RANK, LOCAL_RANK and WORLD_SIZE.
Each rank keeps and tokenizes its own slice of the training pairs (pairs r, r + n, ...), and the
ranks share only their records' lengths, so that every rank plans the same global batches as a
single process would (same data, same seed). Each rank trains on the rows of each batch that it
holds; DistributedDataParallel averages the gradients. Each rank's loss is normalised by the
token count of the whole global batch, so the averaged gradient is the gradient of the
single-process loss on that batch. Rank 0 alone writes files.

With `--fsdp` (`sharded`) the model is sharded over the ranks instead of copied to each
(`train.sharding`); batches, losses and gradients are as with DDP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from rest_cli.errors import UsageError
from rest_cli.train.data import TokenizedPairs


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    sharded: bool = False  # --fsdp: weights, gradients and optimizer state split over the ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def share(self) -> tuple[int, int]:
        """Which pairs of the training file this rank keeps: every size-th, from its rank."""
        return self.rank, self.size

    def plan(self, data: TokenizedPairs, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source and target lengths of all ranks' records in input order, and this rank's row of
        each (-1: another's).

        A rank's record `origin` j is pair j * size + rank of the whole input, so sorting on
        that puts the records in the order a single process reads them.
        """
        if not self.distributed:
            return data.src_lengths, data.tgt_lengths, np.arange(len(data))
        gathered = [self._gather(a, device) for a in
                    (data.origin * self.size + self.rank, data.src_lengths, data.tgt_lengths)]
        owner = np.concatenate([np.full(len(part), rank) for rank, part in enumerate(gathered[0])])
        positions, src, tgt = (np.concatenate(parts) for parts in gathered)
        order = np.argsort(positions, kind="stable")
        local = np.full(len(positions), -1, dtype=np.int64)
        mine = owner[order] == self.rank  # in input order, this rank's records come in its own order
        local[mine] = np.arange(int(mine.sum()))
        return src[order], tgt[order], local

    def _gather(self, array: np.ndarray, device: torch.device) -> list[np.ndarray]:
        """Every rank's int64 array (of any length), in rank order."""
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(array)], dtype=torch.int64, device=device))
        longest = max(int(n) for n in sizes)
        padded = torch.zeros(longest, dtype=torch.int64, device=device)
        padded[:len(array)] = torch.from_numpy(np.asarray(array, dtype=np.int64)).to(device)
        parts = [torch.zeros(longest, dtype=torch.int64, device=device) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return [part[:int(n)].cpu().numpy() for part, n in zip(parts, sizes)]

    def every_rank(self, state: dict[str, torch.Tensor],
                   device: torch.device) -> list[dict[str, torch.Tensor]]:
        """Each rank's `state` (byte tensors: random-number generator states), in rank order."""
        if not self.distributed:
            return [state]
        columns = {key: self._gather(value.numpy().astype(np.int64), device) for key, value in state.items()}
        return [{key: torch.from_numpy(parts[rank].astype(np.uint8)) for key, parts in columns.items()}
                for rank in range(self.size)]

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums over all ranks (float64, so token counts stay exact)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def sum_gradients(self, parameters: list[torch.Tensor]) -> None:
        """Sum the gradients of parameters DDP does not hold (an objective's value head) over the ranks."""
        if not self.distributed:
            return
        for parameter in parameters:
            if parameter.grad is None:  # unused on this rank: it adds nothing, but must join the sum
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device, skips_layers: bool = False,
             bf16: bool = False) -> torch.nn.Module:
        """The module to train, on `device`: DDP, which also makes every rank start from rank 0's
        weights; or, sharded, `model` itself split over the ranks (which all built the same weights).

        `skips_layers`: a step may leave some parameters without a gradient (LayerDrop), which DDP
        must look for after each backward pass, or it waits for them forever.
        """
        if self.sharded:
            return self._shard(model, device, skips_layers, bf16)
        model.to(device)
        if not self.distributed:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                         find_unused_parameters=skips_layers)

    @staticmethod
    def _shard(model: torch.nn.Module, device: torch.device, skips_layers: bool,
               bf16: bool) -> torch.nn.Module:
        from rest_cli.train.sharding import shard

        if skips_layers:  # a layer one rank skips, the others would wait to gather forever
            raise UsageError("--fsdp: this model skips layers in training (LayerDrop), which sharding cannot "
                             "follow; turn it off with --dropout 0, or train without --fsdp")
        return shard(model, device, bf16)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Whether this process reports and writes: rank 0 under torchrun, or a process alone."""
    return int(os.environ.get("RANK", "0")) == 0


def join_world(device_option: str, sharded: bool = False) -> World:
    """The world torchrun describes in the environment (one process alone when it does not).

    `sharded` (--fsdp) needs two processes at least: alone, there is nothing to shard over.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and sharded:
        raise UsageError("--fsdp shards the model over the processes torchrun starts: run it under torchrun "
                         "with 2 or more (torchrun --nproc-per-node N -m rest_cli finetune ...)")
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")), sharded)
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
