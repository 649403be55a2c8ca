"""The GPU check: one script for a lent GPU machine (torch and transformers there; no Ray).

1. The device: name, torch/CUDA, bf16 support, and a dense bf16 matmul's TFLOP/s (measured,
   beside the data-sheet peak of trainables.hardware).
2. Collectives under NCCL: a 1-rank NCCL group (NCCL refuses two ranks on one GPU) runs every
   helper of trainables.distributed for real (no single-process shortcut), the evaluation
   gather, a checkpoint's RNG gather (CUDA generator included), and DDP steps in bf16. A tensor
   on the wrong device raises here as it would in a multi-GPU trial.
   Inference timing through the DDP wrapper (its throughput all-reduce under NCCL).
3. ``trainables.loop.fit`` on a bert-base-sized model (from scratch, seq 128, bf16, one epoch
   of full-length sequences): examples/s, MFU and peak GPU memory, the recipe as trials run it,
   checked against the row's own utilisation figures; its inference throughput and latency.

    python -m benchmarks.gpu_check                       # on the GPU box
    python -m benchmarks.gpu_check --device cpu --model bert-tiny --examples 96   # smoke test

The bare box needs the wheels of datasets and pydantic (and their dependencies) carried in:
the loop's data path and the trial contract use them. Ray is not needed.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import header
from trainables.hardware import peak_tflops, training_flops_per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--model", default="bert-base", help="a BERT ladder name")
    parser.add_argument("--examples", type=int, default=8192, help="training examples (1 epoch)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch

    cuda = args.device == "cuda"
    header(f"GPU check: {args.model}, seq 128, batch {args.batch_size}, {args.device}")
    if cuda and not torch.cuda.is_available():
        print("skipped: no CUDA device here (torch.cuda.is_available() is False)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        device_report(cuda)
        collectives(cuda, args.model, Path(scratch))
        fit_benchmark(cuda, args, Path(scratch))
    print("GPU check: all passed")


def device_report(cuda: bool) -> None:
    import torch

    if not cuda:
        print("1. device: cpu (smoke test)")
        return
    name = torch.cuda.get_device_name()
    print(f"1. device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    print(f"   bf16 native: {native}; data-sheet peak bf16: {peak_tflops(name)} TFLOP/s")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ a
    torch.cuda.synchronize()
    measured = reps * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
    print(f"   measured dense bf16 matmul (8192^3): {measured:.0f} TFLOP/s")


def collectives(cuda: bool, model: str, scratch: Path) -> None:
    """Every collective helper, the eval gather, the RNG gather and DDP steps under the
    backend a GPU trial uses (NCCL), in a 1-rank group."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from contract.config import TrialConfig
    from trainables.distributed import all_gather_objects, all_reduce, collective_device
    from trainables.loop import FineTuneRecipe, LoopCallbacks

    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(0)  # Ray Train does this for its workers
    store = dist.FileStore(str(scratch / "store"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    try:
        device = collective_device()
        assert device.type == ("cuda" if cuda else "cpu"), device
        assert all_reduce([1.0, 2.0]) == [1.0, 2.0]
        assert all_reduce([3.0], op="max") == [3.0]
        assert all_gather_objects(["a", {"b": 1}]) == ["a", {"b": 1}]
        print(f"2. {backend}: all_reduce, all_gather_objects on {device.type}: ok")

        trial = TrialConfig.model_validate(_trial(model, cuda, train_size=256, scratch=scratch))
        recipe = FineTuneRecipe(
            trial, device=torch.device("cuda" if cuda else "cpu"), cache_dir=scratch
        )
        recipe.setup()
        # One rank does not wrap the model in DDP in the loop; here it is, so that DDP's own
        # gradient all-reduce runs under the backend too.
        recipe.model = DistributedDataParallel(recipe.model, device_ids=[0] if cuda else None)
        recipe.train_epoch(1, LoopCallbacks())
        scores = recipe.evaluate()
        row = recipe.epoch_row(scores, recipe.measure_inference())
        state = recipe.state_dict()
        rng = state["rng"][0]
        assert (rng["cuda"] is not None) == cuda, "CUDA RNG state missing from the checkpoint"
        assert row.train_loss == row.train_loss and row.eval_examples == 64  # finite, all scored
        assert row.inference_examples == 64 and len(row.latency) == 2, row.latency
        print(
            f"   DDP epoch in {trial.train.precision.value}: {recipe.progress.step} steps, "
            f"train loss {row.train_loss:.4f}, eval gathered ({row.eval_examples} examples), "
            f"RNG states gathered (cuda: {rng['cuda'] is not None}), inference timed: ok"
        )
    finally:
        dist.destroy_process_group()


def fit_benchmark(cuda: bool, args: argparse.Namespace, scratch: Path) -> None:
    import torch

    from contract.config import BERT_LADDER, TrialConfig
    from trainables.loop import fit

    trial = TrialConfig.model_validate(
        _trial(args.model, cuda, train_size=args.examples, scratch=scratch, batch=args.batch_size)
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    row = fit(trial, device=torch.device("cuda" if cuda else "cpu"), cache_dir=scratch)
    wall = time.perf_counter() - start
    tokens_per_example = row.train_tokens / row.examples_seen
    config = BERT_LADDER[args.model]
    flops = row.tokens_per_s * training_flops_per_token(
        row.params_non_embedding,
        layers=config.num_layers,
        hidden=config.hidden_size,
        seq_len=tokens_per_example,
    )
    print(
        f"3. fit: {args.model} ({row.params_total / 1e6:.1f}M params), {row.examples_seen} "
        f"examples of {tokens_per_example:.0f} tokens in {row.train_time_s:.1f} s "
        f"(trial {wall:.1f} s with set-up and evaluation)"
    )
    print(f"   examples/s {row.examples_per_s:.1f}, tokens/s {row.tokens_per_s:.0f}")
    print(f"   model TFLOP/s {flops / 1e12:.1f}")
    # The row's own figures (what results.csv gets) must agree with this independent count.
    assert abs(row.model_flops_per_s / flops - 1) < 1e-6, (row.model_flops_per_s, flops)
    if cuda:
        name = torch.cuda.get_device_name()
        peak = peak_tflops(name)
        mfu = f"{flops / 1e12 / peak:.1%} of {peak:g}" if peak else "unknown peak for this device"
        memory = torch.cuda.max_memory_allocated() / 2**30
        print(f"   MFU {mfu} TFLOP/s bf16; peak GPU memory {memory:.2f} GiB")
        assert row.device == name and row.peak_tflops == peak
        assert peak is None or abs(row.mfu - flops / 1e12 / peak) < 1e-9
        assert abs(row.peak_gpu_memory_gib - memory) < 1e-9
    else:
        assert row.mfu is None and row.peak_gpu_memory_gib is None
    print(
        f"   inference: {row.inference_examples_per_s:.0f} examples/s at batch "
        f"{row.inference_batch_size} ({row.inference_examples} examples); "
        + "; ".join(
            f"batch {lat.batch_size}: p50 {lat.p50_ms:.2f} / p95 {lat.p95_ms:.2f} / p99 "
            f"{lat.p99_ms:.2f} ms over {lat.batches}"
            for lat in row.latency
        )
        + f"; {row.inference_time_s:.1f} s in all"
    )
    assert all(0 < lat.p50_ms <= lat.p95_ms <= lat.p99_ms for lat in row.latency)


def _trial(model: str, cuda: bool, *, train_size: int, scratch: Path, batch: int = 32) -> dict:
    """A from-scratch ladder model on a files task of full-length (128-token) pairs."""
    train, validation = scratch / f"train{train_size}.csv", scratch / "validation.csv"
    for path, rows in ((train, train_size), (validation, 64)):
        if not path.exists():
            _write_long_pairs(path, rows)
    return {
        "model": {"name": model, "from_scratch": True, "tokenizer": "wordpiece"},
        "data": {
            "source": "files",
            "train_file": str(train),
            "validation_file": str(validation),
            "text_columns": ["a", "b"],
            "max_length": 128,
        },
        "compute": {
            "use_gpu": cuda,
            "global_batch_size": batch,
            "cpus_per_worker": max(1, min(8, (os.cpu_count() or 2) // 2)),
        },
        "train": {
            "epochs": 1,
            "lr": 1e-4,
            "precision": "bf16" if cuda else "fp32",
            "group_by_length": False,
        },
    }


def _write_long_pairs(path: Path, rows: int) -> None:
    """Pairs of 100-word texts over a 2000-word vocabulary: every pair fills 128 tokens."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "label"])
        for i in range(rows):
            writer.writerow([" ".join(rng.choices(words, k=100)) for _ in range(2)] + [i % 2])


if __name__ == "__main__":
    main()
