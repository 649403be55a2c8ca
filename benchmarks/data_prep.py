"""Data preparation: tokenisation happens once per (data, tokenizer, max length) per machine.

Every measurement is a fresh process, as a trial's worker is. The first finds an empty cache
($SCALESWEEP_CACHE in a new temporary directory) and tokenises (and, for a WordPiece tokenizer,
trains it); the second, on the same data, memory-maps what the first saved. Columns: loading
the raw task, the tokenizer, ``tokenize_cached``. Target: the warm ``tokenize_cached`` ~0 s.

    python -m benchmarks.data_prep [--synthetic-size 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import GLUE_DIR, header, minilm_dir, print_table


def cases(synthetic_size: int) -> dict[str, dict]:
    """Trial configs whose data preparation is timed, by name."""
    return {
        "MRPC, MiniLM tokenizer, max_len 128": {
            "model": {"name": str(minilm_dir())},
            "data": {"source": "glue", "task": "mrpc", "glue_dir": str(GLUE_DIR)},
        },
        f"synthetic {synthetic_size} pairs, WordPiece, max_len 64": {
            "model": {"from_scratch": True, "tokenizer": "wordpiece"},
            "data": {
                "source": "synthetic",
                "synthetic_train_size": synthetic_size,
                "max_length": 64,
            },
        },
    }


def child(config: dict) -> None:
    """Time one trial's data preparation in this process; print the seconds as JSON."""
    from contract.config import TrialConfig
    from trainables.data import default_cache_dir, load_task_data, tokenize_cached
    from trainables.models import build_tokenizer

    trial = TrialConfig.model_validate(config)
    cache_dir = default_cache_dir()
    start = time.perf_counter()
    task = load_task_data(trial.data)
    loaded = time.perf_counter()
    tokenizer = build_tokenizer(trial.model, task, cache_dir)
    built = time.perf_counter()
    tokenize_cached(task, tokenizer, trial.data.max_length, cache_dir)
    done = time.perf_counter()
    print(
        json.dumps({"load_s": loaded - start, "tokenizer_s": built - loaded, "tok_s": done - built})
    )


def run_child(config: dict, cache: str) -> dict[str, float]:
    env = os.environ | {"SCALESWEEP_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_prep", "--child", json.dumps(config)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-size", type=int, default=20000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    header("data preparation: a cold cache, then a second process on the same data")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        for name, config in cases(args.synthetic_size).items():
            cache = str(Path(tmp) / name.split(",")[0].replace(" ", "-"))
            for state in ("cold", "warm"):
                rows.append({"data": name, "cache": state, **run_child(config, cache)})
                print(f"   {name}, {state}: tokenize_cached {rows[-1]['tok_s']:.3f}s", flush=True)
    print_table(rows)
    for cold, warm in zip(rows[::2], rows[1::2], strict=True):
        print(
            f"{cold['data']}: tokenize_cached warm {warm['tok_s']:.3f}s vs cold "
            f"{cold['tok_s']:.2f}s ({cold['tok_s'] / warm['tok_s']:.0f}x); tokenizer warm "
            f"{warm['tokenizer_s']:.2f}s vs cold {cold['tokenizer_s']:.2f}s"
        )


if __name__ == "__main__":
    main()
