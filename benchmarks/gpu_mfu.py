"""GPU throughput and MFU: bert-base at sequence length 128 in bf16 (skipped without CUDA).

The project's own pieces: ``trainables.models.build_model`` (the ladder's bert-base, random
init, SDPA attention), ``trainables.loop.build_optimizer`` (fused AdamW on CUDA) and bf16
autocast as ``fit`` uses it, on full 128-token batches of random ids already on the device
(compute only; the data path is measured on CPU by the other benchmarks).
Model FLOPs per token: 6 * N_non_embedding + 12 * layers * hidden * seq (attention, PaLM
appendix B); the issue's 6 * N_total is printed too. MFU = model FLOPs/s / the device's peak
dense bf16 FLOPs/s. Target: MFU >= 40% on a modern data-centre GPU.

    python -m benchmarks.gpu_mfu [--batch-size 64] [--steps 30] [--peak-tflops 989]
    python -m benchmarks.gpu_mfu --device cpu --model bert-tiny --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

from benchmarks.common import header
from trainables.hardware import peak_tflops, training_flops_per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert-base", help="a BERT ladder name")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps, after 5 warm-up")
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()

    import torch

    precision = "bf16" if args.device == "cuda" else "fp32"
    header(f"GPU: {args.model}, seq {args.seq_len}, batch {args.batch_size}, {precision}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device here (torch.cuda.is_available() is False); run on a GPU")
        return
    from contract.config import TrialConfig
    from trainables.loop import build_optimizer
    from trainables.models import build_model, count_parameters

    cuda = args.device == "cuda"
    device = torch.device(args.device)
    trial = TrialConfig.model_validate(
        {
            "model": {"name": args.model, "from_scratch": True},
            "compute": {"use_gpu": cuda, "global_batch_size": args.batch_size},
            "train": {"precision": precision},
        }
    )
    model = build_model(
        trial.model,
        num_labels=2,
        problem_type="classification",
        vocab_size=30522,
        pad_token_id=0,
    ).to(device)
    total, non_embedding = count_parameters(model)
    optimizer, scheduler = build_optimizer(model, trial, 5 + args.steps, device)
    shape = (args.batch_size, args.seq_len)
    batch = {
        "input_ids": torch.randint(1000, 30522, shape, device=device),
        "attention_mask": torch.ones(shape, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (args.batch_size,), device=device),
    }
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), trial.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    for _ in range(5):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    cfg = model.config
    tokens_per_s = args.steps * args.batch_size * args.seq_len / seconds
    flops_per_token = training_flops_per_token(
        non_embedding, layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, seq_len=args.seq_len
    )
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    print(f"   device {name}; attention {cfg._attn_implementation}; params {total / 1e6:.1f}M")
    print(f"   examples/s {tokens_per_s / args.seq_len:.1f}, tokens/s {tokens_per_s:.0f}")
    achieved = tokens_per_s * flops_per_token / 1e12
    print(f"   model TFLOP/s {achieved:.1f} (6*N_total: {tokens_per_s * 6 * total / 1e12:.1f})")
    if peak is None:
        print("   MFU: unknown peak for this device; pass --peak-tflops")
        return
    print(
        f"MFU {achieved / peak:.1%} of {peak:g} TFLOP/s bf16 "
        f"(6*N_total: {tokens_per_s * 6 * total / 1e12 / peak:.1%}); target >= 40%"
    )


if __name__ == "__main__":
    main()
