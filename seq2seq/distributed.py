"""Several processes (torchrun): process group, batch sharding and rank-0 broadcasts.

`torchrun --nproc_per_node N -m seq2seq.train ...` starts N copies of the training
command with WORLD_SIZE, RANK and LOCAL_RANK set. They join one process group (NCCL on
GPUs, gloo on CPU); the model is wrapped in DistributedDataParallel, every rank trains
on a disjoint share of the same seeded batch order, and rank 0 alone validates, prints
and writes."""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

import torch

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_dist() -> DistInfo:
    """The process group this process belongs to; a lone process otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistInfo(dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return DistInfo()


def setup_distributed(device_name: str = "auto") -> torch.device | None:
    """Under torchrun (WORLD_SIZE > 1): join the process group and return this process's
    device, cuda:LOCAL_RANK with NCCL when CUDA is there and wanted, else CPU with gloo.
    None when this is a lone process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    # generous timeout: the other ranks wait while rank 0 validates and writes
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=dt.timedelta(minutes=60))
    return device


def teardown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_batches(batches: list, rank: int, world_size: int) -> list:
    """This rank's share of an epoch's batches (a distributed sampler over batches): every
    world_size-th batch starting at `rank`, after dropping the last len % world_size, so
    the shares are disjoint and equal in number (each step's gradient all-reduce needs
    every rank)."""
    if world_size == 1:
        return batches
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def broadcast_json(obj, device: torch.device):
    """Rank 0's `obj` (anything JSON holds) on every rank, sent as bytes (no pickle)."""
    import torch.distributed as dist

    if dist.get_rank() == 0:
        data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).to(device)
        size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    else:
        size = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(size, 0)
    if dist.get_rank() != 0:
        data = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(data, 0)
    return json.loads(bytes(data.cpu().tolist()).decode())


def broadcast_tensors(tensors: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Rank 0's named CPU tensors on every rank (the others may not see rank 0's disk)."""
    import torch.distributed as dist

    meta = broadcast_json([[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors.items()]
                           if dist.get_rank() == 0 else None, device)
    out = {}
    for name, dtype, shape in meta:
        buf = (tensors[name].to(device) if dist.get_rank() == 0
               else torch.empty(shape, dtype=getattr(torch, dtype), device=device))
        dist.broadcast(buf, 0)
        out[name] = buf.cpu()
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Distributed runs: a seed per (epoch, rank), so ranks draw different teacher-forcing
    coins and dropout masks, and a resumed run draws what the uninterrupted one drew."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank
