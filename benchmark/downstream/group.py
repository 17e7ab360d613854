"""This process's place in a downstream run: one process, or one of torchrun's N (accelerate opens the group and
the training loop, histosynth.training, wraps the model in DistributedDataParallel; see
histosynth.benchmark.downstream.run for what data parallelism keeps and changes)."""

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
