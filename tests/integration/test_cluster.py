"""Sweeps on multi-node Ray clusters made of real Ray processes on this machine.

Every cluster here has its own ports and temp dir, and is torn down by killing only the
processes it started: never `ray stop`, which kills every Ray process on the machine (and
which ray.cluster_utils.AutoscalingCluster's start/shutdown run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from orchestrator.cluster import DRIVER_NODE_RESOURCE, HEAD_DRIVER_UNITS

pytestmark = pytest.mark.integration

TRIAL_SETTINGS = """
data: {source: synthetic, synthetic_train_size: 200, synthetic_validation_size: 100, max_length: 32}
model: {from_scratch: true, tokenizer: wordpiece, wordpiece_vocab_size: 300}
train: {epochs: 1, lr: 1e-3}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _short_temp_dir(prefix: str) -> Path:
    # Ray's Unix sockets live under the temp dir, and socket paths are limited to 107 bytes.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="module")
def ray_env() -> Iterator[pytest.MonkeyPatch]:
    """Token auth on both sides (what a local ray.init turns on), whatever this process had."""
    from ray._raylet import Config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")
        # A fresh machine has no ~/.ray/auth_token until some ray.init made one; a test cluster
        # started by hand needs a token of its own (for this module's processes only).
        if not (Path.home() / ".ray" / "auth_token").is_file():
            mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
        Config.initialize("")  # Ray reads the mode once; this is how ray.init refreshes it
        yield mp


def _write_space(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body) + TRIAL_SETTINGS)
    return path


def _alive_nodes(address: str) -> list[dict]:
    ray.init(address=address, log_to_driver=False, logging_level="error")
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


# --- multi-node: a head and a worker node from ray.cluster_utils.Cluster ---------------------
# Cluster.add_node/remove_node/shutdown start and kill only that cluster's own processes.


@pytest.fixture(scope="module")
def two_nodes(ray_env) -> Iterator[tuple[Cluster, Path]]:
    temp = _short_temp_dir("scalesweep-mn-") / "ray"
    temp.mkdir()
    # Cluster records its address in Ray's default temp dir (<RAY_TMPDIR>/ray): keep it ours.
    ray_env.setenv("RAY_TMPDIR", str(temp.parent))
    head_args = {
        "num_cpus": 1,
        "resources": {DRIVER_NODE_RESOURCE: HEAD_DRIVER_UNITS},
        "temp_dir": str(temp),
        "dashboard_port": _free_port(),
        "dashboard_agent_listen_port": _free_port(),
    }
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster, temp
    finally:
        cluster.shutdown()
        shutil.rmtree(temp.parent, ignore_errors=True)


def test_a_two_worker_trial_spreads_over_two_nodes_with_shared_storage(
    two_nodes, tmp_path, scalesweep
):
    cluster, _ = two_nodes
    node_ids = {node.node_id for node in cluster.list_all_nodes()}
    assert len(node_ids) == 2
    shared = tmp_path / "shared"  # what every node mounts; a URI like s3:// in the cloud
    space = _write_space(
        tmp_path / "mn.yaml",
        f"""
        name: mn
        storage_path: file://{shared}
        compute: {{num_workers: 2, cpus_per_worker: 1, global_batch_size: 16}}
        """,
    )
    local = tmp_path / "local" / "mn"
    started = time.monotonic()
    run = scalesweep("run", space, "-o", local, "--address", cluster.address)
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"two-node sweep: {time.monotonic() - started:.0f} s")

    table = pd.read_csv(local / "results.csv")
    assert list(table["status"]) == ["TERMINATED"]
    spread = table.loc[0, "worker_node_ids"].split(",")
    print(f"2-worker trial ran on nodes {spread}; cluster nodes {sorted(node_ids)}")
    assert len(spread) == 2 and set(spread) == node_ids  # one worker on each node

    remote = shared / "mn"  # Tune's and Train's state, then the experiment directory
    for trial_id in table["trial_id"]:
        assert list((remote / "tune").glob(f"*{trial_id}*")), trial_id
        assert (remote / "train" / f"tune-{trial_id}").is_dir(), trial_id
        assert (remote / "trials" / trial_id / "history.jsonl").is_file()
    assert (remote / "results.csv").read_text() == (local / "results.csv").read_text()


def test_plan_on_the_connected_cluster_reports_admission_and_flags_what_never_fits(
    two_nodes, tmp_path, scalesweep
):
    cluster, _ = two_nodes
    space = _write_space(
        tmp_path / "p.yaml",
        """
        name: p
        compute: {cpus_per_worker: 1, global_batch_size: 12}
        axes: {compute.num_workers: [1, 2]}
        """,
    )
    plan = scalesweep("plan", space, "--address", cluster.address)
    assert plan.returncode == 0, plan.stderr
    out = plan.stdout
    assert f"cluster at {cluster.address} now: head, worker: each trial starts when its gang" in out
    # Two 1-CPU nodes: the 2-worker gang takes both, so the two trials run one after the other.
    assert re.search(r"now: makespan about \d+ s, CPU utilisation \d+%", out), out

    captured = scalesweep(
        "plan", space, "axes.compute.num_workers=[3]", "--address", cluster.address
    )
    assert captured.returncode == 2
    assert "3 workers need 3 CPU at once, and only 2 such workers fit" in captured.stdout
    assert captured.stderr.startswith("error: 1 trial(s) can never be placed on cluster at")


def test_a_sweep_submitted_as_a_ray_job_runs_on_the_cluster(two_nodes, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    cluster, _ = two_nodes
    space = _write_space(
        tmp_path / "job.yaml",
        """
        name: job
        compute: {cpus_per_worker: 1, num_workers: 2, global_batch_size: 16}
        """,
    )
    out = tmp_path / "job"
    client = JobSubmissionClient(f"http://{cluster.head_node.address_info['webui_url']}")
    # The job's runtime env sets a variable the sweep also forwards: Ray refuses a ray.init
    # runtime env that sets one again, so the sweep must leave it to the job.
    job_id = client.submit_job(
        entrypoint=f"{sys.executable} -m orchestrator.cli run {space} -o {out}",
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    deadline = time.monotonic() + 150
    while not client.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    assert "each started when its gang fits on cluster at" in logs
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["TERMINATED"]
    assert len(set(table.loc[0, "worker_node_ids"].split(","))) == 2


# --- autoscaling: Ray's fake multi-node provider, started by hand on our own ports -----------

GPU_NODE_TYPE = "fake_gpu_node"


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in pids if pid != os.getpid()]


@pytest.fixture(scope="module")
def autoscaling_cluster(ray_env) -> Iterator[tuple[str, Path, Path]]:
    """A head with the fake multi-node autoscaler and no worker nodes: (address, config, logs)."""
    temp = _short_temp_dir("scalesweep-as-")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = {
        "cluster_name": "fake",
        "max_workers": 2,
        "idle_timeout_minutes": 0.1,  # 6 s, so the test sees idle nodes go
        "upscaling_speed": 1.0,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": address,  # fake nodes join this head, not one on the default port
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": 1, DRIVER_NODE_RESOURCE: HEAD_DRIVER_UNITS},
                "node_config": {},
                "max_workers": 0,
            },
            # A GPU node stand-in: `fake_gpu` is requested where a real sweep asks for GPU.
            GPU_NODE_TYPE: {
                "resources": {"CPU": 1, "fake_gpu": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    config_file = temp / "autoscaler.yaml"
    config_file.write_text(yaml.safe_dump(config))
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--temp-dir={temp / 'ray'}",
        f"--autoscaling-config={config_file}",
        "--num-cpus=1",
        f"--resources={json.dumps({DRIVER_NODE_RESOURCE: HEAD_DRIVER_UNITS})}",
        f"--dashboard-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--ray-client-server-port={_free_port()}",
        "--disable-usage-stats",
    ]
    env = os.environ | {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_TMPDIR": str(temp),
    }
    log = temp / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield address, config_file, temp / "ray" / "session_latest" / "logs"
    finally:
        pids = {*_descendants(head.pid), *_mentioning(str(temp)), head.pid}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_autoscaler_adds_gpu_like_nodes_for_a_sweep_and_removes_them_after(
    autoscaling_cluster, tmp_path, scalesweep
):
    address, config_file, logs = autoscaling_cluster
    (head,) = _alive_nodes(address)  # no worker nodes yet
    print(f"head node {head['NodeID']}")
    space = _write_space(
        tmp_path / "as.yaml",
        """
        name: as
        compute: {cpus_per_worker: 1, resources_per_worker: {fake_gpu: 1}, global_batch_size: 16}
        seeds: [0, 1]
        """,
    )
    # Sized by the nodes up now (the head, no fake_gpu), the trials could never be placed:
    # an error before launch, not a hang.
    args = ["run", space, "--address", address]
    assert scalesweep(*args, "-o", tmp_path / "now").returncode == 2

    started = time.monotonic()
    out = tmp_path / "as"
    run = scalesweep(*args, "-o", out, "--cluster", config_file)
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"autoscaling sweep: {time.monotonic() - started:.0f} s")
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["TERMINATED", "TERMINATED"]
    used = set(table["worker_node_ids"])
    print(f"trials ran on added nodes {sorted(used)}")
    assert head["NodeID"] not in used and len(used) == 2  # one new node per concurrent trial

    deadline = time.monotonic() + 90
    while len(nodes := _alive_nodes(address)) > 1 and time.monotonic() < deadline:
        time.sleep(3)
    assert [n["NodeID"] for n in nodes] == [head["NodeID"]], "idle nodes were not removed"
    monitor = (logs / "monitor.log").read_text()
    added = re.findall(rf"Adding (\d+) node\(s\) of type {GPU_NODE_TYPE}", monitor)
    removed = re.findall(rf"Removing (\d+) nodes of type {GPU_NODE_TYPE} \(idle\)", monitor)
    print(f"monitor.log: 'Adding' {added}, 'Removing (idle)' {removed}")
    assert added and sum(map(int, removed)) >= len(used)
