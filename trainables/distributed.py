"""The worker loop's collectives: every tensor goes on the device the process group's backend takes.

Ray Train starts the default process group with NCCL on GPU workers and gloo on CPU workers.
NCCL accepts CUDA tensors only (a CPU tensor raises "No backend type associated with device
type cpu"), gloo accepts CPU tensors. Every collective the project calls goes through this
module, so the choice of device is made in one place (``collective_device``), and a test runs
these helpers in process groups restricted to one device type (tests/trainables/
test_distributed.py). Without a process group (a test, a REPL) each helper is the identity; a
group of one rank still runs the collective, so a 1-rank NCCL group checks the devices too.
"""

from __future__ import annotations

import pickle
from typing import Any, Literal

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "all_reduce",
    "collective_device",
    "is_distributed",
    "rank_and_world",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This worker's rank and the number of workers (0, 1 without a process group)."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def collective_device() -> torch.device:
    """The device whose tensors the default group's collectives accept: CPU when the group has
    a CPU backend (gloo, or a mixed ``cpu:gloo,cuda:nccl``), else this worker's CUDA device."""
    if not is_distributed():
        return torch.device("cpu")
    # e.g. "cpu:gloo,cuda:gloo" (gloo), "cuda:nccl" (nccl), "cpu:gloo,cuda:nccl" (mixed)
    devices = {part.split(":", 1)[0] for part in dist.get_backend_config().split(",")}
    # NCCL: the current CUDA device, which Ray Train sets to the worker's GPU.
    return torch.device("cpu" if "cpu" in devices else "cuda")


def all_reduce(values: list[float], op: Literal["sum", "max"] = "sum") -> list[float]:
    """Sum (or max) a few numbers over all workers, in float64."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_objects(items: list[Any]) -> list[Any]:
    """Every worker's ``items`` (picklable), concatenated in rank order.

    torch's ``all_gather_object`` picks its own device by backend name, which is wrong for a
    group restricted to CUDA under gloo; this pickles into a byte tensor on
    ``collective_device`` instead, padded to the longest payload.
    """
    if not is_distributed():
        return list(items)
    device, world = collective_device(), dist.get_world_size()
    payload = torch.frombuffer(bytearray(pickle.dumps(items)), dtype=torch.uint8).to(device)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded)
    parts = [
        pickle.loads(b[:n].cpu().numpy().tobytes()) for b, n in zip(buffers, lengths, strict=True)
    ]
    return [item for part in parts for item in part]
