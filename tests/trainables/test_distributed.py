"""Collectives on the backend's device: the project's helpers, the evaluation gather, a DDP
epoch and the checkpoint's RNG gather, run by 2 processes in a process group restricted to one
device type. NCCL takes CUDA tensors only; a group restricted to CPU (or, on a GPU machine, to
CUDA) makes a tensor on the wrong device raise here as it does under NCCL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from trainables.distributed import all_gather_objects, all_reduce, collective_device

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
# One rank, as its own process: a script of the installed packages only (a spawned copy of a
# test module could not import it under plain `pytest`).
RANK = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

        from trainables.distributed import all_gather_objects, all_reduce, collective_device
    from trainables.loop import FineTuneRecipe, LoopCallbacks

    rank, device_type, scratch = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    store = dist.FileStore(str(scratch / "store"), 2)
    dist.init_process_group(f"{device_type}:gloo", store=store, rank=rank, world_size=2)
    result = {
        "device": collective_device().type,
        "sum": all_reduce([rank + 1.0, 10.0]),
        "max": all_reduce([float(rank)], op="max"),
        "gathered": all_gather_objects([f"r{rank}", {"rank": rank}]),
    }
    trial = {
        "model": {"from_scratch": True, "tokenizer": "wordpiece", "wordpiece_vocab_size": 300},
        "data": {"synthetic_train_size": 64, "synthetic_validation_size": 30, "max_length": 32},
        "compute": {"num_workers": 2, "global_batch_size": 8},
        "train": {"epochs": 1, "seed": 5},
    }
    recipe = FineTuneRecipe(
        TrialConfig.model_validate(trial), device=torch.device(device_type), cache_dir=scratch
    )
    recipe.setup()
    recipe.train_epoch(1, LoopCallbacks())  # DDP's gradient all-reduce, the epoch's sums
    row = recipe.epoch_row(recipe.evaluate())  # the loss all-reduce, the predictions gather
    state = recipe.state_dict()  # every rank's RNG states, gathered
    weights = next(recipe.model.parameters()).detach().cpu()
    result |= {"row": row.to_dict(), "rng_states": len(state["rng"]), "weights": weights}
    torch.save(result, scratch / f"rank{rank}.pt")
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("device_type", DEVICES)
def test_every_collective_runs_in_a_group_restricted_to_one_device_type(tmp_path, device_type):
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(rank), device_type, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    for process in ranks:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert first["device"] == second["device"] == device_type
    assert first["sum"] == second["sum"] == [3.0, 20.0]
    assert first["max"] == [1.0]
    assert first["gathered"] == second["gathered"] == ["r0", {"rank": 0}, "r1", {"rank": 1}]
    # Both ranks scored the whole validation split and summed the same epoch.
    for key in ("eval_loss", "eval_accuracy", "eval_f1", "train_loss", "train_tokens"):
        assert first["row"][key] == second["row"][key], key
    assert first["row"]["examples_seen"] == 64 and first["row"]["eval_examples"] == 30
    assert first["rng_states"] == 2
    torch.testing.assert_close(first["weights"], second["weights"])  # DDP kept them equal


@pytest.mark.parametrize(
    ("backend", "device_type"), [("gloo", "cpu"), ("cpu:gloo", "cpu"), ("cuda:gloo", "cuda")]
)
def test_collective_device_follows_the_groups_backend(tmp_path, backend, device_type):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    try:
        assert collective_device().type == device_type
        if device_type == "cuda":
            # What NCCL says to a CPU tensor, and what the loop's sums raised before they
            # went on collective_device (issue 15).
            with pytest.raises(
                RuntimeError, match="No backend type associated with device type cpu"
            ):
                dist.all_reduce(torch.zeros(2, dtype=torch.float64))
        else:
            # One rank still runs the collective (no shortcut), so a 1-rank NCCL group on one
            # GPU checks the devices too (benchmarks/gpu_check.py).
            assert all_reduce([2.0]) == [2.0] and all_gather_objects([1]) == [1]
    finally:
        dist.destroy_process_group()


def test_without_a_process_group_every_helper_is_the_identity():
    assert not dist.is_initialized()
    assert collective_device().type == "cpu"
    assert all_reduce([1.5, 2.0], op="max") == [1.5, 2.0]
    assert all_gather_objects(["a"]) == ["a"]
