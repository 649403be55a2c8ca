"""GPU-slot utilisation of a ladder sweep on a simulated multi-node cluster: the global cap that
gang-aware admission replaced, against gang-aware admission, side by side in one run.

The cluster is made of real Ray processes (``ray.cluster_utils.Cluster``): a head that offers
``trial_driver``, four 1-GPU nodes (4 CPUs each) and four 4-GPU nodes (16 CPUs each), 20 GPUs
in all; the GPUs are declared, not real. The sweep is the ladder's grid (5 models x 4 data
fractions x 1/2/4 workers x ``--seeds``) run by ``orchestrator.sweep.run_sweep``, the path
``scalesweep run`` takes: Tune, the same trial-driver resources and the same admission. What
differs is the trial: instead of fitting a TorchTrainer it reserves its workers' bundles as
one placement group (as Ray Train does, strategy PACK), holds them for the ladder trial's
estimated time (``resource_plan.BENCHMARKED``, times ``--scale``) and releases them.

- before: Tune's own ``max_concurrent_trials`` = capacity / the largest gang (5 here), trials
  in grid order: the code this work replaced, put back for the run.
- after: gang-aware admission (``GangAdmission``), longest estimated trials first.

GPU-slot utilisation = sum(gang GPUs x time the gang was held) / (20 GPUs x makespan), where
the makespan runs from the first trial function's start to the last release.

    python -m benchmarks.admission [--seeds 1] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, header, print_table

SPACE = """
name: admission
storage_path: {storage}
wandb: {{mode: disabled}}
# The ladder's grid and per-worker resources; synthetic pairs as many as MRPC's, so nothing
# needs the hub (the trials do not train).
data: {{source: synthetic, synthetic_train_size: 3668, max_length: 128}}
compute: {{use_gpu: true, gpus_per_worker: 1, cpus_per_worker: 4, global_batch_size: 32}}
train: {{epochs: 3}}
axes:
  model.name: [bert-tiny, bert-mini, bert-small, bert-medium, bert-base]
  data.train_fraction: [0.1, 0.25, 0.5, 1.0]
  compute.num_workers: [1, 2, 4]
seeds: {seeds}
"""

ONE_GPU_NODES, FOUR_GPU_NODES = 4, 4


def holding_trial(seconds: dict[str, float], log: str):
    """A Tune trial function with ``_tune_trial``'s signature that holds its workers' bundles
    (one placement group) for ``seconds[label]`` and appends its timestamps to ``log``."""

    def trial(config, storage_path, tracking, finished=frozenset()) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        from contract.config import TrialConfig
        from orchestrator.cluster import trial_gang

        trial_config = TrialConfig.model_validate(config)
        started = time.time()
        group = placement_group(trial_gang(trial_config)[1:], strategy="PACK")
        ray.get(group.ready())
        held = time.time()
        time.sleep(seconds[trial_config.label()])
        remove_placement_group(group)
        row = {
            "label": trial_config.label(),
            "gpus": trial_config.compute.trial_resources()["GPU"],
            "started": started,
            "held": held,
            "released": time.time(),
        }
        with open(log, "a") as out:
            out.write(json.dumps(row) + "\n")

    return trial


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def simulated_cluster():
    """Head + 1-GPU and 4-GPU nodes as local Ray processes, on ports and a temp dir of its
    own; torn down by killing only its own processes (never ``ray stop``)."""
    from ray._raylet import Config
    from ray.cluster_utils import Cluster

    from orchestrator.cluster import DRIVER_NODE_RESOURCE, HEAD_DRIVER_UNITS

    os.environ["RAY_AUTH_MODE"] = "token"
    if not (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)  # a fresh machine has none yet
    Config.initialize("")
    # Ray's Unix sockets live in the temp dir: keep its path short.
    temp = Path(tempfile.mkdtemp(prefix="bench-adm-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(temp)
    small = {"object_store_memory": 80 << 20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {DRIVER_NODE_RESOURCE: HEAD_DRIVER_UNITS},
            "temp_dir": str(temp / "ray"),
            "include_dashboard": False,
            "dashboard_port": _free_port(),
            "dashboard_agent_listen_port": _free_port(),
            **small,
        },
    )
    for _ in range(ONE_GPU_NODES):
        cluster.add_node(num_cpus=4, num_gpus=1, dashboard_agent_listen_port=_free_port(), **small)
    for _ in range(FOUR_GPU_NODES):
        cluster.add_node(num_cpus=16, num_gpus=4, dashboard_agent_listen_port=_free_port(), **small)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def run_policy(policy: str, searcher, cluster, spec_file: Path, seconds: dict[str, float], tmp):
    """One sweep with ``searcher`` in place of ``GangAdmission``; the trials' timestamp rows."""
    from orchestrator import sweep
    from orchestrator.spec import load_spec

    log = Path(tmp) / f"{policy}.jsonl"
    sweep._tune_trial = holding_trial(seconds, str(log))
    sweep.GangAdmission = searcher
    # The sweep's own lines (one per trial start and end) go to a file: the table stays readable.
    with open(Path(tmp) / f"{policy}.out", "w") as quiet, contextlib.redirect_stdout(quiet):
        sweep.run_sweep(load_spec(spec_file), Path(tmp) / policy, address=cluster.address)
    return [json.loads(line) for line in log.read_text().splitlines()]


def utilisation(rows: list[dict], gpus: float) -> dict[str, float]:
    start = min(r["started"] for r in rows)
    makespan = max(r["released"] for r in rows) - start
    busy = sum(r["gpus"] * (r["released"] - r["held"]) for r in rows)
    events = sorted([(r["held"], 1) for r in rows] + [(r["released"], -1) for r in rows])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return {
        "trials": len(rows),
        "makespan_s": makespan,
        "gpu_s_held": busy,
        "utilisation": busy / (gpus * makespan),
        "most_at_once": peak,
        "wait_s_median": sorted(r["held"] - r["started"] for r in rows)[len(rows) // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the ladder grid")
    parser.add_argument("--scale", type=float, default=0.25, help="x the estimated trial time")
    args = parser.parse_args()
    header(f"admission: ladder grid x {args.seeds} seed(s), trial times x {args.scale}")

    from ray import cloudpickle
    from ray.tune.search import BasicVariantGenerator

    from orchestrator import sweep
    from orchestrator.cluster import Capacity, gangs_that_fit, simulate, trial_gang
    from orchestrator.plan import plan_rows
    from orchestrator.resource_plan import BENCHMARKED
    from orchestrator.spec import load_spec

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import it
    ladder = load_spec(REPO / "search_spaces" / "mrpc_bert_ladder.yaml")
    rows = plan_rows(ladder)
    seconds = {row.trial.label(): args.scale * BENCHMARKED.seconds(row) for row in rows}
    capacity = Capacity(
        "simulated",
        nodes=(("head", {"CPU": 2.0, "trial_driver": 1.0}),)
        + (("gpu1", {"CPU": 4.0, "GPU": 1.0}),) * ONE_GPU_NODES
        + (("gpu4", {"CPU": 16.0, "GPU": 4.0}),) * FOUR_GPU_NODES,
    )
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        space = Path(tmp) / "space.yaml"
        seeds = list(range(args.seeds))
        space.write_text(SPACE.format(storage=f"{tmp}/storage", seeds=seeds))
        trials = load_spec(space).trials
        gangs = {json.dumps(trial_gang(t)): trial_gang(t) for t in trials}
        # The cap this work replaced: how many copies of the largest gang fit (5 x 4 GPUs).
        cap = min(gangs_that_fit(g, capacity, len(trials)) for g in gangs.values())
        timed = [(trial_gang(t), seconds[t.label()]) for t in trials]
        predicted = {
            "before": simulate(capacity, timed, max_running=cap),
            "after": simulate(capacity, timed),
        }
        print(f"   {len(trials)} trials, {capacity.total('GPU'):g} GPUs, global cap {cap}")
        searchers = {
            "before": lambda admission, estimates: BasicVariantGenerator(max_concurrent=cap),
            "after": sweep.GangAdmission,
        }
        results = {}
        with simulated_cluster() as cluster:
            for policy, searcher in searchers.items():
                started = time.monotonic()
                rows = run_policy(policy, searcher, cluster, space, seconds, tmp)
                results[policy] = utilisation(rows, capacity.total("GPU"))
                print(f"   {policy}: sweep took {time.monotonic() - started:.0f} s", flush=True)
    table = [
        {
            "policy": policy,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
            "simulated_utilisation": round(predicted[policy].utilisation, 3),
        }
        for policy, r in results.items()
    ]
    print_table(table)
    print(
        f"GPU-slot utilisation: before {results['before']['utilisation']:.1%}, "
        f"after {results['after']['utilisation']:.1%}; makespan after / before = "
        f"{results['after']['makespan_s'] / results['before']['makespan_s']:.2f}"
    )


if __name__ == "__main__":
    main()
