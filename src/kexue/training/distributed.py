"""Plain ``torch.distributed`` DDP under ``torchrun``; every helper is a no-op in one process."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns True when running distributed. Uses NCCL on CUDA, gloo otherwise.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def shutdown(barrier: bool = True) -> None:
    """Leave the process group cleanly (barrier first, so no rank exits while others still talk)."""
    if is_distributed():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def require_single_process(what: str) -> None:
    """Refuse to run ``what`` under ``torchrun`` with more than one process (not DDP-ready yet)."""
    if world_size() > 1:
        from kexue.errors import KexueError

        raise KexueError(f"{what} does not run under torchrun with {world_size()} processes yet; run it as one process")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable object; the identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a copy; ``x`` is untouched)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world_size()
