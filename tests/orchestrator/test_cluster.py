"""Cluster files, capacity math and the resource half of `plan` (no Ray processes)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from contract.config import ComputeConfig, TrialConfig
from contract.rows import EpochRow
from orchestrator.cli import main
from orchestrator.cluster import (
    DRIVER_NODE_RESOURCE,
    GCS_PROBE_METHOD,
    Capacity,
    ClusterError,
    NodeType,
    check_reachable,
    gangs_that_fit,
    load_cluster_file,
    max_concurrent_trials,
    trial_gang,
)
from orchestrator.experiment import ExperimentDir, TrialRecord
from orchestrator.plan import plan_rows
from orchestrator.resource_plan import BENCHMARKED, measured_throughput
from orchestrator.spec import load_spec
from orchestrator.storage import storage_root, upload

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
KUBERAY = ROOT / "deploy" / "kuberay" / "raycluster.yaml"
LADDER = ROOT / "search_spaces" / "mrpc_bert_ladder.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PINS = {
    Requirement(line).name: Requirement(line)
    for line in (ROOT / "deploy" / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def _ray_requirement() -> Requirement:
    return next(
        r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == "ray"
    )


def _check_image(image: str) -> None:
    """rayproject/ray:<version>-py<XY>-<gpu|cuXY>, Ray as pyproject, Python as requires-python."""
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+)", image)
    assert match, image
    version, major, minor, _ = match.groups()
    assert Version(version) in _ray_requirement().specifier
    assert str(PINS["ray"].specifier) == f"=={version}"  # what setup_commands install
    assert f"{major}.{minor}" in PYPROJECT["project"]["requires-python"]


# --- cluster.yaml --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_doc() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates_against_the_schema_in_the_ray_wheel(cluster_doc):
    schema_path = Path(find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(cluster_doc, json.loads(schema_path.read_text()))


def test_cluster_image_and_pins_match_pyproject(cluster_doc):
    _check_image(cluster_doc["docker"]["image"])
    for dependency in map(Requirement, PYPROJECT["project"]["dependencies"]):
        pin = PINS.get(dependency.name)
        assert pin is not None, f"deploy/requirements.txt lacks {dependency.name}"
        (spec,) = pin.specifier
        assert spec.operator == "==", pin
        assert dependency.specifier.contains(spec.version, prereleases=True), (pin, dependency)
        assert pin.extras == dependency.extras, (pin, dependency)
    assert set(PINS) == {Requirement(d).name for d in PYPROJECT["project"]["dependencies"]}


def test_cluster_setup_installs_the_project_with_pinned_versions(cluster_doc):
    assert cluster_doc["file_mounts"] == {"~/scalesweep": "."}
    commands = cluster_doc["setup_commands"]
    assert any("-r ~/scalesweep/deploy/requirements.txt" in c for c in commands)
    assert any("--no-deps -e ~/scalesweep" in c for c in commands)
    for command in commands:
        # Nothing but the pinned file and the project itself: no bare package names or URLs.
        args = command.split("pip install", 1)[1].split()
        operands = [a for a in args if not a.startswith("-")]
        assert operands in (["~/scalesweep/deploy/requirements.txt"], ["~/scalesweep"]), command


def test_every_key_of_cluster_yaml_has_a_comment():
    previous = ""
    for number, line in enumerate(CLUSTER_YAML.read_text().splitlines(), 1):
        is_key = re.match(r"\s*[\w.~-]+:", line) and not line.lstrip().startswith("#")
        if is_key:
            assert "#" in line or previous.lstrip().startswith("#"), f"line {number}: {line}"
        if line.strip():
            previous = line


def test_cluster_yaml_keeps_drivers_on_the_head_and_scales_gpus_from_zero(cluster_doc):
    types = cluster_doc["available_node_types"]
    head = types.pop(cluster_doc["head_node_type"])
    assert head["resources"][DRIVER_NODE_RESOURCE] >= 1 and "GPU" not in head["resources"]
    assert types and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in types.values())
    assert all(DRIVER_NODE_RESOURCE not in t["resources"] for t in types.values())
    assert {t["resources"]["GPU"] for t in types.values()} == {1, 4}
    markets = [
        t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") for t in types.values()
    ]
    assert "spot" in markets and None in markets  # spot types and an on-demand fallback
    assert 0 < cluster_doc["idle_timeout_minutes"] <= 10
    assert cluster_doc["max_workers"] == sum(t["max_workers"] for t in types.values())


# --- KubeRay ---------------------------------------------------------------------------------


def test_kuberay_manifest_autoscales_gpu_groups_from_zero_with_the_same_image():
    doc = yaml.safe_load(KUBERAY.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert Version(spec["rayVersion"]) in _ray_requirement().specifier
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["template"]["spec"]["containers"]
        _check_image(container["image"])
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group["maxReplicas"] > 0
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
    capacity = load_cluster_file(KUBERAY)
    assert capacity.nodes == (("head", {"CPU": 8.0, DRIVER_NODE_RESOURCE: 1.0}),)
    assert [(t.name, t.resources["GPU"], t.max_count) for t in capacity.node_types] == [
        ("gpu1", 1.0, 8),
        ("gpu4", 4.0, 2),
    ]
    runtime_env = yaml.safe_load((KUBERAY.parent / "runtime_env.yaml").read_text())
    assert runtime_env["pip"] == "deploy/requirements.txt"


# --- capacity math -------------------------------------------------------------------------

HEAD = ("head", {"CPU": 1.0, DRIVER_NODE_RESOURCE: 1.0})
GPU_NODE = NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, max_count=3)


def _trial(workers: int, **compute) -> TrialConfig:
    return TrialConfig(
        compute=ComputeConfig(
            num_workers=workers, use_gpu=True, cpus_per_worker=4, global_batch_size=8, **compute
        )
    )


def test_a_gang_is_the_driver_bundle_plus_one_bundle_per_worker():
    assert trial_gang(_trial(2)) == [
        {DRIVER_NODE_RESOURCE: 0.001},
        {"CPU": 4, "GPU": 1},
        {"CPU": 4, "GPU": 1},
    ]


def test_gangs_fill_nodes_the_autoscaler_may_add_up_to_each_types_maximum():
    capacity = Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,))
    assert gangs_that_fit(trial_gang(_trial(1)), capacity, limit=10) == 3
    assert gangs_that_fit(trial_gang(_trial(2)), capacity, limit=10) == 1
    assert gangs_that_fit(trial_gang(_trial(4)), capacity, limit=10) == 0
    capped = Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,), max_added=2)
    assert gangs_that_fit(trial_gang(_trial(1)), capped, limit=10) == 2
    # 1000 drivers fit the head's one unit of the driver resource, not one more.
    cpu_only = Capacity("c", nodes=(("head", {"CPU": 1e6, DRIVER_NODE_RESOURCE: 1.0}),))
    driver_only = [{DRIVER_NODE_RESOURCE: 0.001}]
    assert gangs_that_fit(driver_only, cpu_only, limit=2000) == 1000


def _spec(tmp_path: Path, body: str):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(body))
    return load_spec(path)


def test_max_concurrent_trials_follows_the_largest_gang_and_the_spec_cap(tmp_path):
    capacity = Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,))
    body = """
        name: s
        compute: {use_gpu: true, cpus_per_worker: 4, global_batch_size: 8}
        axes: {compute.num_workers: [1, 2]}
        seeds: [0, 1, 2]
    """
    assert max_concurrent_trials(_spec(tmp_path, body), capacity) == 1  # one 2-GPU gang fits
    one = _spec(tmp_path, body.replace("[1, 2]", "[1]"))
    assert max_concurrent_trials(one, capacity) == 3
    capped = _spec(tmp_path, body.replace("[1, 2]", "[1]") + "    max_concurrent_trials: 2\n")
    assert max_concurrent_trials(capped, capacity) == 2


def test_unplaceable_trials_are_an_error_that_says_why(tmp_path):
    capacity = Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,))
    spec = _spec(
        tmp_path,
        """
        name: s
        compute: {use_gpu: true, cpus_per_worker: 4, global_batch_size: 8}
        axes: {compute.num_workers: [1, 4]}
        """,
    )
    with pytest.raises(ClusterError, match=r"1 trial\(s\) can never be placed .*·w4·s0: 4 workers"):
        max_concurrent_trials(spec, capacity)
    no_driver = Capacity("c", nodes=(("head", {"CPU": 8.0}),), node_types=(GPU_NODE,))
    with pytest.raises(ClusterError, match="no node offers the 'trial_driver' resource"):
        max_concurrent_trials(spec, no_driver)


def test_cluster_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "cluster_name: x\nhead_node_type: h\navailable_node_types: {h: {node_config: {}}}\n"
    )
    with pytest.raises(ClusterError, match=r"available_node_types\.h\.resources: list the node"):
        load_cluster_file(bad)
    bad.write_text("kind: Deployment\n")
    with pytest.raises(ClusterError, match="neither a cluster-launcher file"):
        load_cluster_file(bad)


# --- plan ------------------------------------------------------------------------------------


def test_plan_against_cluster_yaml_reports_concurrency_and_gpu_hours(capsys):
    assert main(["plan", str(LADDER), "--cluster", str(CLUSTER_YAML)]) == 0
    out = capsys.readouterr().out
    # 20 GPUs at full scale: 8 + 4 one-GPU nodes hold 3 four-worker gangs, 2 four-GPU nodes 2.
    assert "cluster.yaml: head + up to 8 gpu1-spot, 2 gpu4-spot, 4 gpu1-ondemand" in out
    assert "(at most 14 in all): 5 trials at once" in out
    assert "60 trials x 4 workers x (4 CPU, 1 GPU) = gang of 16 CPU, 4 GPU" in out
    assert re.search(r"180 trials: \d+\.\d\d GPU-hours", out)
    assert "estimate (BENCHMARKS.md: CPU measured" in out


def test_plan_flags_trials_no_node_type_set_can_hold(capsys):
    args = ["plan", str(LADDER), "compute.num_workers=32", "--cluster", str(CLUSTER_YAML)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "32 workers need 128 CPU, 32 GPU at once, and only 20 such workers fit" in captured.out
    assert captured.err.startswith("error: 60 trial(s) can never be placed on cluster.yaml")
    assert "Traceback" not in captured.err


def test_plan_with_a_cluster_file_imports_no_ray():
    code = (
        "import sys; from orchestrator.cli import main; "
        "main(['plan', sys.argv[1], '--cluster', sys.argv[2]]); "
        "heavy = {'ray', 'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(LADDER), str(CLUSTER_YAML)],
        check=True,
        capture_output=True,
    )


def _previous_sweep(tmp_path: Path) -> tuple[Path, object]:
    """An experiment directory with one finished trial whose throughput we know."""
    spec = _spec(
        tmp_path,
        """
        name: prev
        data: {source: synthetic, synthetic_train_size: 1000}
        model: {from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 1000}
        compute: {global_batch_size: 8}
        train: {epochs: 2}
        """,
    )
    experiment = ExperimentDir(tmp_path / "experiments" / "prev")  # where `run` puts it
    experiment.create(spec)
    row = plan_rows(spec)[0]
    history = EpochRow(
        epoch=2,
        train_loss=0.69,
        eval_loss=0.69,
        eval_accuracy=0.5,
        examples_per_s=100.0,
        tokens_per_s=3000.0,  # 30 tokens per example
        epoch_time_s=10.0,
        eval_time_s=1.0,
        train_time_s=20.0,  # 2 epochs x 1000 examples / 100 per s
        examples_seen=2000,
        train_tokens=60000,
        lr=0.0,
        worker_pid=1,
        params_total=row.params_total,
        params_non_embedding=row.params_non_embedding,
        train_examples=1000,
        global_batch=8,
        per_worker_batch=8,
        accumulation_steps=1,
        restarts=0,
    )
    record = TrialRecord("t1", spec.trials[0].model_dump(mode="json"), "TERMINATED")
    record.history, record.wall_s = [history], 35.0
    experiment.write_results([record])
    return experiment.path, row


def test_measured_throughput_reproduces_a_measured_trial(tmp_path):
    path, row = _previous_sweep(tmp_path)
    throughput = measured_throughput(path)
    assert "measured in" in throughput.source and "1 finished trials" in throughput.source
    # Same shape: 15 s of overhead (35 - 20) + the measured 20 s of training.
    assert throughput.seconds(row) == pytest.approx(35.0)
    assert BENCHMARKED.seconds(row) != pytest.approx(35.0)


def test_plan_uses_a_previous_sweeps_throughput(tmp_path, capsys):
    path, _ = _previous_sweep(tmp_path)
    assert main(["plan", str(tmp_path / "s.yaml"), "--measured", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"estimate (measured in {path} (1 finished trials))" in out
    assert "per trial: 35 s" in out


# --- storage -------------------------------------------------------------------------------


def test_storage_root_is_the_experiment_dir_or_a_folder_of_the_uri(tmp_path):
    assert storage_root("experiments", tmp_path / "x") == str(tmp_path / "x")
    assert storage_root("s3://bucket/sweeps/", Path("experiments/x_2")) == "s3://bucket/sweeps/x_2"


def test_upload_copies_the_experiment_directory_to_a_uri(tmp_path):
    local = tmp_path / "exp"
    (local / "trials" / "t1").mkdir(parents=True)
    (local / "results.csv").write_text("a\n1\n")
    (local / "trials" / "t1" / "history.jsonl").write_text("{}\n")
    upload(local, f"file://{tmp_path}/bucket/exp")
    assert (tmp_path / "bucket" / "exp" / "results.csv").read_text() == "a\n1\n"
    assert (tmp_path / "bucket" / "exp" / "trials" / "t1" / "history.jsonl").is_file()


def test_plan_times_trials_with_the_latest_run_of_the_same_spec(tmp_path, capsys, monkeypatch):
    path, _ = _previous_sweep(tmp_path)
    monkeypatch.chdir(tmp_path)  # storage_path: experiments, relative to where plan runs
    assert main(["plan", str(tmp_path / "s.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"estimate (measured in {path} (1 finished trials))" in out
    assert "per trial: 35 s" in out


# --- joining a cluster -----------------------------------------------------------------------


def _refused_address(address: str, timeout_s: float = 5) -> str:
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        check_reachable(address, timeout_s=timeout_s)
    assert time.monotonic() - started < timeout_s + 2
    assert "\n" not in str(caught.value)
    return str(caught.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


def test_unreachable_addresses_fail_fast_in_one_line():
    port = _closed_port()
    assert "Connection refused" in _refused_address(f"127.0.0.1:{port}")
    assert "Connection refused" in _refused_address(f"ray://127.0.0.1:{port}")
    assert "not host:port" in _refused_address("head-node")
    assert "is an HTTP address" in _refused_address("http://127.0.0.1:8265")
    check_reachable("local")  # starts a cluster of its own: nothing to reach


def test_a_server_that_is_not_a_gcs_is_refused():
    # Anything that accepts a connection (a proxy, a web server) must not pass for a GCS:
    # ray.init would then wait for minutes.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        threading.Thread(target=lambda: server.accept()[0].recv(1024), daemon=True).start()
        message = _refused_address(f"127.0.0.1:{port}", timeout_s=2)
    assert "no answer within 2 s" in message or "not a Ray GCS" in message


def test_the_gcs_probe_names_a_method_of_the_installed_ray():
    from ray.core.generated import gcs_service_pb2_grpc

    service, method = GCS_PROBE_METHOD.strip("/").split("/")
    source = Path(gcs_service_pb2_grpc.__file__).read_text()
    assert f"'/{service}/{method}'" in source


def test_run_on_an_unreachable_cluster_fails_fast_and_leaves_no_directory(tmp_path, scalesweep):
    space = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    out = tmp_path / "experiment"
    started = time.monotonic()
    run = scalesweep(
        "run", space, "-o", out, timeout=120, env={"RAY_ADDRESS": f"127.0.0.1:{_closed_port()}"}
    )
    assert time.monotonic() - started < 60
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: cannot reach the Ray cluster address '127.0.0.1:")
    assert run.stderr.count("\n") == 1 and not out.exists()
