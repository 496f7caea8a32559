"""DistributedDataParallel context: this process's place in a torchrun job and its collectives.

`train_arrays` asks `ddp_context()` whether it runs as one of several torchrun processes; if so
it picks this process's GPU and batch share (`ddp_device`), joins the process group, trains on
its `shard_indices` of every epoch and evaluates its `contiguous_share` of the validation rows.
`ml_platform.training.distributed` is the launcher that starts such processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import distributed as dist

from ml_platform.training.config import TrainingConfig, resolve_device


@dataclass(frozen=True)
class DdpContext:
    """This process's place in a torchrun job of more than one process.

    Attributes:
        rank: Global rank, 0 <= rank < world_size.
        local_rank: Rank on this machine; the index of this process's GPU.
        world_size: Number of processes.
    """

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs and writes files."""
        return self.rank == 0


def _environment_integer(name: str) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip().isdigit():
        raise RuntimeError(
            f"environment variable {name} is {value!r} but WORLD_SIZE is "
            f"{os.environ.get('WORLD_SIZE')!r}; start distributed training with torchrun, which "
            f"sets WORLD_SIZE, RANK and LOCAL_RANK together"
        )
    return int(value)


def ddp_context() -> DdpContext | None:
    """Returns this process's rank when it is one of several torchrun processes, else None.

    Raises:
        RuntimeError: WORLD_SIZE is above 1 but RANK or LOCAL_RANK is missing, or torch was built
            without torch.distributed.
    """
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        if world_size <= 1:
            return None
        rank = dist.get_rank()
        return DdpContext(rank, int(os.environ.get("LOCAL_RANK", rank)), world_size)
    if "WORLD_SIZE" not in os.environ or _environment_integer("WORLD_SIZE") <= 1:
        return None
    world_size = _environment_integer("WORLD_SIZE")
    rank = _environment_integer("RANK")
    local_rank = _environment_integer("LOCAL_RANK")
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE is {world_size} but torch {torch.__version__} was built without "
            f"torch.distributed; run a single process or install a torch build with it"
        )
    return DdpContext(rank, local_rank, world_size)


def ddp_device(
    config: TrainingConfig, context: DdpContext | None, log: Callable[[str], None]
) -> tuple[torch.device, int]:
    """Returns this process's device and its rows per optimizer step.

    Under torchrun a CUDA run gives each process `cuda:LOCAL_RANK` and `batch_size //
    world_size` rows per step, so `batch_size` stays the global batch.

    Args:
        config: Training settings.
        context: This process's place in the torchrun job, or None for a single process.
        log: Receives a line when the config's device is overridden.

    Raises:
        ValueError: The device does not exist, a process has no GPU of its own, or batch_size is
            below the number of processes.
    """
    device = resolve_device(config.device)
    if context is not None and device.type == "cuda":
        if context.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK is {context.local_rank} but {torch.cuda.device_count()} CUDA "
                f"device(s) are visible; start torchrun with --nproc_per_node at most the GPU count"
            )
        if config.device not in ("auto", "cuda"):
            log(f"device {config.device!r} is ignored under torchrun: each process uses its GPU")
        device = torch.device("cuda", context.local_rank)
    if context is None:
        return device, config.batch_size
    if config.batch_size < context.world_size:
        raise ValueError(
            f"TrainingConfig: batch_size {config.batch_size} is the global batch and must be "
            f"at least the {context.world_size} torchrun processes, which each need a row "
            f"per step"
        )
    return device, config.batch_size // context.world_size


def join_process_group(device: torch.device) -> None:
    """Initializes the default process group unless the caller did: NCCL on CUDA, else Gloo.

    The group is left initialized so later calls in the same process reuse it; the process that
    owns it (e.g. `ml_platform.training.distributed`) destroys it before exiting.

    Args:
        device: This process's device; a CUDA device becomes the current one.
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return
    if device.type == "cuda":
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")


def shard_indices(permutation: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Returns one process's share of an epoch's row order under DistributedDataParallel.

    Every process gets ceil(N / world_size) rows, so all run the same number of steps (DDP waits
    for every process at every step and would hang otherwise): when N is not a multiple of
    world_size, the order is padded by repeating its first rows, which are then seen twice that
    epoch. Process r takes positions r, r + world_size, r + 2 * world_size, ... of the padded
    order, so step i of all processes together, each taking b rows, covers positions
    [i * b * world_size, (i + 1) * b * world_size): exactly the batch a single process with
    batch size b * world_size takes at step i.

    Args:
        permutation: The epoch's row order, the same on every process.
        rank: This process's rank, 0 <= rank < world_size.
        world_size: Number of processes.

    Returns:
        The row indices this process trains on this epoch, in order.

    Raises:
        ValueError: rank is not in [0, world_size).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    rows = permutation.shape[0]
    per_rank = -(-rows // world_size)
    padding = per_rank * world_size - rows
    if padding:
        # Fewer rows than processes needs the order repeated more than once.
        repeats = -(-padding // rows)
        permutation = torch.cat([permutation, permutation.repeat(repeats)[:padding]])
    return permutation[rank::world_size].contiguous()


def contiguous_share(rows: int, rank: int, world_size: int) -> slice:
    """Rows [start, stop) of a split that one process evaluates; sizes differ by at most 1.

    Args:
        rows: Rows of the split.
        rank: This process's rank.
        world_size: Number of processes.
    """
    return slice(rows * rank // world_size, rows * (rank + 1) // world_size)


def require_same_resume(
    resumed_from: int | None,
    device: torch.device,
    world_size: int,
    checkpoint_path: Path | None,
) -> None:
    """Fails unless every process resumes from the same epoch (or none): else DDP would hang.

    Args:
        resumed_from: The epoch this process resumes from, or None.
        device: This process's device, for the collective.
        world_size: Number of processes.
        checkpoint_path: The checkpoint, named in the error.

    Raises:
        RuntimeError: The processes disagree.
    """
    mine = torch.tensor([-1 if resumed_from is None else resumed_from], device=device)
    everyone = [torch.zeros_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine)
    epochs = [int(epoch.item()) for epoch in everyone]
    if len(set(epochs)) > 1:
        raise RuntimeError(
            f"torchrun processes disagree on the checkpoint epoch to resume from (by rank, -1 for "
            f"none: {epochs}); checkpoint {checkpoint_path} must be one file every process reads"
        )


def barrier(device: torch.device) -> None:
    """Waits until every process reaches this point."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()
