"""The process group of a downstream training run: one process, or torchrun's N processes under
DistributedDataParallel (see histosynth.benchmark.tasks.downstream for what data parallelism keeps and changes)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun data-parallel launch: rank of world (0 of 1 when not launched so)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: object) -> object:
        """Rank 0's `value` on every rank (a picklable object)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def mean(self, value: torch.Tensor) -> float:
        """The mean over ranks of a scalar tensor."""
        if self.world == 1:
            return value.item()
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)
        return float(total) / self.world


ONE_PROCESS = Group()


def process_group(device: str = "cpu") -> Group:
    """The torchrun group this process belongs to (accelerate's PartialState opens it: gloo for CPU training, NCCL
    for CUDA); Group() without torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ONE_PROCESS
    from accelerate import PartialState

    state = PartialState(cpu=torch.device(device).type != "cuda")
    return Group(state.process_index, state.num_processes)


def close_group() -> None:
    """End the torchrun process group, if one was opened (torch warns about a group left open at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
