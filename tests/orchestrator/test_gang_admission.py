"""GangAdmission, the Tune search algorithm that admits trials as their gangs fit (no Ray
processes: Tune expands the grid and pickles the searcher's state in-process)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from ray import cloudpickle, tune
from ray.tune.experiment import Experiment

from orchestrator.cluster import (
    DRIVER_NODE_RESOURCE,
    DRIVER_RESOURCES,
    Admission,
    Capacity,
    NodeType,
)
from orchestrator.spec import SweepSpec, load_spec
from orchestrator.sweep import GangAdmission

# Four 1-GPU nodes at most: one 4-worker trial, or a 2-worker and two 1-worker trials, at once.
CAPACITY = Capacity(
    "c",
    nodes=(("head", {"CPU": 1.0, DRIVER_NODE_RESOURCE: 1.0}),),
    node_types=(NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, max_count=4),),
)


def _trial_function(config: dict) -> None:
    """Never run: Tune only needs a trainable to expand the grid."""


def _searcher(tmp_path: Path, text: str) -> tuple[GangAdmission, SweepSpec]:
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(text))
    spec = load_spec(space)
    # Longest first: here the 1-worker trials are the long ones.
    seconds = {t.model_dump_json(): 100.0 / t.compute.num_workers for t in spec.trials}
    searcher = GangAdmission(Admission(CAPACITY), seconds, spec.points())
    trainable = tune.with_resources(_trial_function, DRIVER_RESOURCES)
    experiment = Experiment(
        "e",
        trainable,
        config=spec.param_space(),
        num_samples=len(spec.trials),
        storage_path=str(tmp_path),
    )
    searcher.add_configurations([experiment])
    return searcher, spec


@pytest.fixture
def searcher(tmp_path: Path) -> GangAdmission:
    return _searcher(
        tmp_path,
        """
        name: s
        compute: {use_gpu: true, cpus_per_worker: 4, global_batch_size: 8}
        axes: {compute.num_workers: [1, 2, 4]}
        seeds: [0, 1]
        """,
    )[0]


def _workers(trial) -> int:
    return trial.config["compute"]["num_workers"]


def test_trials_are_handed_to_tune_only_as_their_gangs_fit_longest_first(searcher):
    first = [searcher.next_trial() for _ in range(3)]
    assert [_workers(t) for t in first] == [1, 1, 2]  # 4 GPUs: the 4-worker trials wait
    assert searcher.next_trial() is None and not searcher.is_finished()
    searcher.on_trial_complete(first[2].trial_id)
    assert _workers(searcher.next_trial()) == 2  # the other 2-worker trial, not a 4-worker one
    for trial in first[:2]:
        searcher.on_trial_complete(trial.trial_id)
    assert searcher.next_trial() is None  # 2 GPUs free: a 4-worker gang still does not fit


def test_a_resumed_sweep_keeps_the_running_gangs_and_the_waiting_trials(searcher):
    running = [searcher.next_trial() for _ in range(3)]
    saved = cloudpickle.dumps(searcher.get_state())  # what Tune writes with its experiment

    restored = GangAdmission(Admission(CAPACITY), {}, [])
    restored.set_state(cloudpickle.loads(saved))
    assert restored.next_trial() is None  # the three restored trials still hold 4 GPUs
    for trial in running:
        restored.on_trial_complete(trial.trial_id)
    rest = []
    while (trial := restored.next_trial()) is not None:
        rest.append(trial)
        restored.on_trial_complete(trial.trial_id)
    assert sorted(_workers(t) for t in rest) == [2, 4, 4]
    assert restored.is_finished()


def test_stopping_the_experiment_starts_nothing_more(searcher):
    searcher.next_trial()
    searcher.set_finished()  # what Tune does when a stopper or fail-fast ends the sweep
    assert searcher.is_finished() and searcher.next_trial() is None


def test_tune_runs_exactly_the_union_of_the_grids(tmp_path, caplog):
    # Ray's loggers do not propagate to the root logger, where caplog listens.
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(caplog.handler)
    searcher, spec = _searcher(
        tmp_path,
        """
        name: s
        compute: {use_gpu: true, cpus_per_worker: 4, global_batch_size: 8}
        axes:
          - {compute.num_workers: [1], train.lr: [1.0e-4, 2.0e-4]}
          - {compute.num_workers: [1, 2], train.lr: [1.0e-4], seeds: [0, 1]}
        """,
    )
    configs = []
    try:
        while (trial := searcher.next_trial()) is not None:
            configs.append(trial.config)
            searcher.on_trial_complete(trial.trial_id)
    finally:
        ray_logger.removeHandler(caplog.handler)
    # 2 + 4 cells, one shared (1 worker, lr 1e-4, seed 0): 5 trials, each as validated.
    assert len(configs) == len(spec.trials) == 5
    assert sorted(map(str, configs)) == sorted(map(str, spec.points()))
    assert "Pre-set value" not in caplog.text  # every point lies in Tune's param space
