"""torchrun: one training process per GPU (nccl) or CPU process (gloo); its rank, device and the collective
helpers the loop uses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as torch_dist

from swinseg.device import rank_device, resolve_device, torchrun_rank

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def all_gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order (pickled; for small things)."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every process (pickled)."""
        if not self.enabled:
            return value
        holder = [value]
        torch_dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()


def init_distributed(device_spec: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun job described by the environment (if any) and pick this process's device."""
    launched = torchrun_rank()
    if launched is None:
        return Distributed(), resolve_device(device_spec)
    rank, world_size, local_rank = launched
    device = resolve_device(rank_device(device_spec, local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank), device
