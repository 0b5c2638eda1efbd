"""Data-parallel training with torch.distributed + DistributedDataParallel: start, wrap, shard, rank 0.

The README's "Scale out" section; `train.distill` (notebook 04) uses it. Under `torchrun --nproc_per_node N`
every process runs the same `train.distill`; `start()` joins the process group (gloo on CPU, nccl on
CUDA, from `config.distributed()`), `wrap` puts the student in DistributedDataParallel (gradients are
averaged over ranks), and `shard` hands each rank its contiguous slice of every global batch, so the
global batch order is the one a single process sees. With equal slices and a loss that is a mean over
the batch, one step on N ranks equals one step on the whole batch (up to float summation order).
Alone (no process group) every helper is the identity.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kd_lessons import config

__all__ = ["start", "stop", "active", "rank", "world_size", "is_main", "wrap", "shard"]


def active() -> bool:
    """True inside an initialised process group (torchrun + start())."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 alone."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes train together, 1 alone."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that shows progress and saves; `train.distill` asks. Notebook 04_distill_mnist."""
    return rank() == 0


def start() -> torch.device:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA); return this rank's device (README, Scale out)."""
    layout = config.distributed()
    device = config.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(layout["local_rank"])
        device = torch.device("cuda", layout["local_rank"])
    if layout["world_size"] > 1 and not active():
        dist.init_process_group(layout["backend"])
    return device


def stop() -> None:
    """Leave the process group (call at the end of a torchrun script)."""
    if active():
        dist.destroy_process_group()


def wrap(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """`module` in DistributedDataParallel when ranks train together and it has trainable parameters; else itself."""
    if not active() or world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    device = torch.device(device) if device is not None else None
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device is not None and device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def shard(batches):
    """Each rank's contiguous slice of every (idx, xb, yb) global batch; alone, the batches unchanged."""
    n, r = world_size(), rank()
    for batch in batches:
        if n == 1:
            yield batch
            continue
        if len(batch[0]) < n:
            raise ValueError(f"a batch of {len(batch[0])} rows cannot be split over {n} ranks; use batch_size >= {n} "
                             "and a dataset of at least that many rows")
        yield tuple(t.tensor_split(n)[r] for t in batch)
