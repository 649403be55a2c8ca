"""Cluster files, capacity math and the resource half of `plan` (no Ray processes)."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
import textwrap
import tomllib
from collections import Counter
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from contract.config import ComputeConfig, TrialConfig
from orchestrator.cli import main
from orchestrator.cluster import (
    DRIVER_NODE_RESOURCE,
    Admission,
    Capacity,
    ClusterError,
    NodeType,
    check_placeable,
    cluster_now,
    gangs_that_fit,
    load_cluster_file,
    simulate,
    start_order,
    trial_gang,
)
from orchestrator.experiment import ExperimentDir, TrialRecord
from orchestrator.plan import plan_rows
from orchestrator.resource_plan import BENCHMARKED, measured_throughput
from orchestrator.spec import load_spec
from orchestrator.storage import storage_root

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
KUBERAY = ROOT / "deploy" / "kuberay" / "raycluster.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
AWS = ROOT / "deploy" / "aws"
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


def _base_image() -> str:
    """The Dockerfile's FROM: rayproject/ray:<version>-py<XY>-<gpu|cuXY>."""
    (line,) = [x for x in DOCKERFILE.read_text().splitlines() if x.startswith("FROM ")]
    return line.split()[1]


def _check_image(image: str) -> None:
    """The project's image, tagged <project version>-ray<Ray>-py<XY>-<variant>: the version of
    pyproject and the Ray, Python and variant of the Dockerfile's base image."""
    match = re.fullmatch(r"[\w.-]+/scalesweep:([\w.]+)-ray([\w.]+-py\d+-[\w]+)", image)
    assert match, image
    assert match[1] == PYPROJECT["project"]["version"], image
    assert _base_image() == f"rayproject/ray:{match[2]}", image


# --- cluster.yaml --------------------------------------------------------------------------


@pytest.fixture
def cluster_doc() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())  # a fresh copy: tests take it apart


def test_cluster_yaml_validates_against_the_schema_in_the_ray_wheel(cluster_doc):
    schema_path = Path(find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(cluster_doc, json.loads(schema_path.read_text()))


def test_the_image_is_rays_pinned_gpu_image_with_the_pins_and_the_project(cluster_doc):
    base = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+)", _base_image())
    assert base, _base_image()
    version, major, minor, _ = base.groups()
    assert Version(version) in _ray_requirement().specifier
    assert str(PINS["ray"].specifier) == f"=={version}"
    assert f"{major}.{minor}" in PYPROJECT["project"]["requires-python"]
    installs = [x for x in DOCKERFILE.read_text().splitlines() if "pip install" in x]
    # Nothing but the pinned file and the project itself: no bare package names or URLs.
    assert [x.split()[-2:] for x in installs] == [
        ["-r", "/home/ray/scalesweep/deploy/requirements.txt"],
        ["--no-deps", "/home/ray/scalesweep"],
    ]
    _check_image(cluster_doc["docker"]["image"])
    for dependency in map(Requirement, PYPROJECT["project"]["dependencies"]):
        pin = PINS.get(dependency.name)
        assert pin is not None, f"deploy/requirements.txt lacks {dependency.name}"
        (spec,) = pin.specifier
        assert spec.operator == "==", pin
        assert dependency.specifier.contains(spec.version, prereleases=True), (pin, dependency)
        assert pin.extras == dependency.extras, (pin, dependency)
    assert set(PINS) == {Requirement(d).name for d in PYPROJECT["project"]["dependencies"]}


def test_nodes_install_nothing_when_they_start(cluster_doc):
    # Everything is in the image: no pip (multi-GB CUDA wheels) on a node or for a job.
    assert "pip" not in CLUSTER_YAML.read_text().split("\nhead_node_type:")[1]
    assert not {"setup_commands", "head_setup_commands", "worker_setup_commands"} & {*cluster_doc}
    runtime_env = yaml.safe_load((KUBERAY.parent / "runtime_env.yaml").read_text())
    assert runtime_env == {"working_dir": "."}


def test_every_node_boots_the_same_pinned_ami(cluster_doc):
    images = {t["node_config"]["ImageId"] for t in cluster_doc["available_node_types"].values()}
    # One AMI ID (filled in from AWS's parameter, README), never Ray's default Ubuntu 18.04 one.
    assert len(images) == 1 and re.fullmatch(r"ami-[0-9a-f]{8,17}|AMI_ID", images.pop())


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


def _v2_launches(doc: dict, gangs: list[int]) -> Counter:
    """Nodes Ray 2.60's autoscaler v2 (its own scheduler, in-process) launches for pending
    placement groups of ``gangs`` ladder workers each, from an empty cluster."""
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
    from ray.autoscaler.v2.utils import ResourceRequestUtil
    from ray.core.generated.autoscaler_pb2 import GangResourceRequest

    config = AutoscalingConfig(copy.deepcopy(doc), skip_content_hash=True)
    worker = load_spec(LADDER).trials[0].compute.worker_resources()  # {CPU: 4, GPU: 1}
    reply = ResourceDemandScheduler().schedule(
        SchedulingRequest(
            node_type_configs=config.get_node_type_configs(),
            max_num_nodes=config.get_max_num_nodes(),
            gang_resource_requests=[
                GangResourceRequest(requests=[ResourceRequestUtil.make(worker)] * n) for n in gangs
            ],
            disable_launch_config_check=True,
        )
    )
    launched: Counter = Counter()
    for request in reply.to_launch:
        launched[request.instance_type] += request.count
    return launched


def _first_wave(capacity: Capacity) -> list[int]:
    """Worker counts of the ladder trials that gang-aware admission starts at once."""
    admission = Admission(capacity)
    rows = plan_rows(load_spec(LADDER))
    gangs = [trial_gang(row.trial) for row in rows]
    order = start_order(gangs, [BENCHMARKED.seconds(row) for row in rows])
    waiting = [(str(i), gangs[i]) for i in order]
    started = []
    while (index := admission.start_next(waiting)) is not None:
        _, gang = waiting.pop(index)
        started.append(len(gang) - 1)  # the driver's bundle is not a worker
    return started


SPOT_FIRST_CASES = {
    "one 2-worker trial": [2],
    "five 2-worker trials": [2] * 5,
    "ten 1-worker trials": [1] * 10,
    "three 4-worker trials": [4] * 3,
    "five 4-worker trials": [4] * 5,
    "a ladder mix": [4, 2, 1] * 3,
    "twenty 1-worker trials": [1] * 20,
}


def test_autoscaler_v2_launches_on_demand_nodes_only_once_spot_is_full(cluster_doc):
    types = cluster_doc["available_node_types"]
    spot = {
        name
        for name, t in types.items()
        if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    }
    workers = set(types) - {cluster_doc["head_node_type"]}
    cases = {
        **SPOT_FIRST_CASES,
        "the ladder's first wave": _first_wave(load_cluster_file(CLUSTER_YAML)),
    }
    for case, gangs in cases.items():
        launched = _v2_launches(cluster_doc, gangs)
        print(f"{case}: {dict(launched)}")
        assert sum(launched[t] * types[t]["resources"]["GPU"] for t in launched) >= min(
            sum(gangs), 20
        ), case
        if any(launched[t] for t in workers - spot):
            assert all(launched[t] == types[t]["max_workers"] for t in spot), (case, launched)
    assert _v2_launches(cluster_doc, [2]) == {"gpu1-spot": 2}  # issue 11: spot 1 + on-demand 1

    # Priority alone orders only types that v2 scores alike: without the on_demand marker, a
    # 2-worker gang fills a 1-GPU on-demand node rather than a quarter-used 4-GPU spot node.
    unmarked = copy.deepcopy(cluster_doc)
    del unmarked["available_node_types"]["gpu1-ondemand"]["resources"]["on_demand"]
    assert _v2_launches(unmarked, [2] * 5) == {"gpu1-spot": 8, "gpu1-ondemand": 2}


def test_every_worker_type_has_a_priority_spot_above_on_demand(cluster_doc):
    types = dict(cluster_doc["available_node_types"])
    types.pop(cluster_doc["head_node_type"])
    for name, node_type in types.items():
        spot = node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType")
        assert isinstance(node_type["priority"], int), name
        assert (node_type["priority"] > 0) == (spot == "spot"), name
        assert ("on_demand" in node_type["resources"]) == (spot is None), name


# --- KubeRay ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kuberay_docs() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERAY.read_text())}


def test_kuberay_manifest_autoscales_gpu_groups_from_zero_with_the_same_image(kuberay_docs):
    doc = kuberay_docs["RayCluster"]
    assert doc["apiVersion"] == "ray.io/v1"
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
    assert capacity.nodes == (("head", {"CPU": 7.0, DRIVER_NODE_RESOURCE: 1.0}),)
    assert [(t.name, t.resources["GPU"], t.max_count) for t in capacity.node_types] == [
        ("gpu1", 1.0, 8),
        ("gpu4", 4.0, 2),
    ]


# vCPUs and GiB of the instance types the manifest names. A pod may ask for what the kubelet
# leaves (EKS reserves ~0.1 vCPU and ~1 GiB per 8 vCPU / 32 GiB node, DaemonSets ~0.2 vCPU and
# ~0.3 GiB): here at most the vCPUs less half a CPU, and 85 % of the memory.
INSTANCE_TYPES = {"m5.2xlarge": (8, 32), "g5.2xlarge": (8, 32), "g5.12xlarge": (48, 192)}


def test_kuberay_pods_fit_their_nodes_head_on_demand_secrets_shm_and_irsa(kuberay_docs):
    spec = kuberay_docs["RayCluster"]["spec"]
    account = kuberay_docs["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/scalesweep-storage"
    )
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        is_head = group is spec["headGroupSpec"]
        selector = pod["nodeSelector"]
        assert selector["eks.amazonaws.com/capacityType"] == ("ON_DEMAND" if is_head else "SPOT")
        cpus, gib = INSTANCE_TYPES[selector["node.kubernetes.io/instance-type"]]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"]  # Guaranteed: never evicted first
        assert float(resources["requests"]["cpu"]) <= cpus - 0.5
        assert float(resources["requests"]["memory"].removesuffix("Gi")) <= 0.85 * gib
        assert pod["serviceAccountName"] == account["metadata"]["name"]  # S3 through IRSA
        (key,) = [e for e in container["env"] if e["name"] == "WANDB_API_KEY"]
        assert "value" not in key and key["valueFrom"]["secretKeyRef"]["name"] == "wandb"
        (shm,) = [v for v in pod["volumes"] if v["emptyDir"].get("medium") == "Memory"]
        assert {"name": shm["name"], "mountPath": "/dev/shm"} in container["volumeMounts"]


# --- IAM (deploy/aws) ------------------------------------------------------------------------


def _statements(name: str) -> dict[str, dict]:
    return {s["Sid"]: s for s in json.loads((AWS / name).read_text())["Statement"]}


def test_the_head_may_pass_only_the_workers_role_and_end_only_its_own_nodes(cluster_doc):
    head = _statements("head-policy.json")
    region = cluster_doc["provider"]["region"]
    types = cluster_doc["available_node_types"]
    head_type = types.pop(cluster_doc["head_node_type"])
    assert head_type["node_config"]["IamInstanceProfile"] == {"Name": "scalesweep-head"}
    (worker_profile,) = {t["node_config"]["IamInstanceProfile"]["Name"] for t in types.values()}
    passing = head["PassTheWorkersRole"]
    assert passing["Action"] == "iam:PassRole"
    assert passing["Resource"] == f"arn:aws:iam::ACCOUNT_ID:role/{worker_profile}"
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    ending = head["RetagAndTerminateThisClustersNodesOnly"]
    tag = {"ec2:ResourceTag/ray-cluster-name": cluster_doc["cluster_name"]}
    assert ending["Condition"] == {"StringEquals": tag}
    assert head["LaunchWorkers"]["Condition"]["StringEquals"]["aws:RequestedRegion"] == region
    # Nothing else is passed, deleted or granted on every resource but describing and launching.
    actions = {
        a
        for s in head.values()
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
    }
    assert {sid for sid, s in head.items() if s["Resource"] == "*"} == {
        "LaunchWorkers",
        "SeeTheNodes",
    }


def test_storage_policy_covers_the_readmes_storage_path_and_nothing_else():
    storage = _statements("storage-policy.json")
    assert storage["FindTheBucket"]["Resource"] == "arn:aws:s3:::BUCKET"
    objects = storage["ReadWriteSweepsUnderStoragePath"]
    assert objects["Resource"] == "arn:aws:s3:::BUCKET/sweeps/*"
    assert "storage_path=s3://BUCKET/sweeps" in (ROOT / "README.md").read_text()
    assert all(a.startswith("s3:") for a in objects["Action"])


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


# --- gang-aware admission ---------------------------------------------------------------------


def _gang(workers: int, **per_worker: float) -> list[dict[str, float]]:
    return [{DRIVER_NODE_RESOURCE: 0.001}] + [dict(per_worker) for _ in range(workers)]


def test_a_trial_starts_only_when_its_whole_gang_fits_beside_the_running_ones():
    admission = Admission(Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,)))  # 3 GPU nodes
    assert admission.try_start("a", _gang(2, CPU=4, GPU=1))
    assert not admission.try_start("b", _gang(2, CPU=4, GPU=1))  # one GPU left
    assert admission.try_start("c", _gang(1, CPU=4, GPU=1))
    assert not admission.try_start("d", _gang(1, CPU=4, GPU=1))
    admission.finish("a")
    assert admission.try_start("b", _gang(2, CPU=4, GPU=1))
    assert admission.running == 2


def test_a_gang_that_does_not_fit_holds_nothing():
    admission = Admission(Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,)))
    assert admission.try_start("one", _gang(1, CPU=4, GPU=1))
    # Two of its four workers would fit: none may stay placed (nor their added nodes counted).
    assert not admission.try_start("four", _gang(4, CPU=4, GPU=1))
    assert admission.try_start("x", _gang(1, CPU=4, GPU=1))
    assert admission.try_start("y", _gang(1, CPU=4, GPU=1))
    admission.finish("never-started")  # a trial that ends before it started frees nothing


def test_mixed_shapes_and_custom_resources_pack_per_node():
    capacity = Capacity(
        "c",
        nodes=(HEAD,),
        node_types=(
            NodeType("gpu1", {"CPU": 4.0, "GPU": 1.0}, max_count=2),
            NodeType("gpu4", {"CPU": 48.0, "GPU": 4.0}, max_count=1),
            NodeType("accel", {"CPU": 8.0, "accel": 2.0}, max_count=1),
        ),
    )
    admission = Admission(capacity)
    # 8 CPUs per worker fit only the 4-GPU node: two such workers take half of it.
    assert admission.try_start("wide", _gang(2, CPU=8, GPU=1))
    assert admission.try_start("accel", _gang(2, CPU=2, accel=1))
    assert not admission.try_start("accel2", _gang(1, CPU=2, accel=1))
    # Two 1-GPU nodes and the 4-GPU node's two free GPUs: four more 1-GPU workers, not five.
    assert admission.try_start("four", _gang(4, CPU=4, GPU=1))
    assert not admission.try_start("one", _gang(1, CPU=4, GPU=1))
    admission.finish("wide")
    assert admission.try_start("one", _gang(1, CPU=4, GPU=1))


def test_start_next_backfills_past_a_gang_that_does_not_fit_and_keeps_the_spec_cap():
    capacity = Capacity("c", nodes=(HEAD,), node_types=(GPU_NODE,))
    admission = Admission(capacity)
    assert admission.try_start("running", _gang(1, CPU=4, GPU=1))
    waiting = [("big", _gang(4, CPU=4, GPU=1)), ("two", _gang(2, CPU=4, GPU=1))]
    assert admission.start_next(waiting) == 1  # the 2-worker trial fills the 2 free GPUs
    assert admission.start_next([("one", _gang(1, CPU=4, GPU=1))]) is None  # full

    capped = Admission(capacity, max_running=1)
    assert capped.start_next([("a", _gang(1, CPU=4, GPU=1))]) == 0
    assert capped.start_next([("b", _gang(1, CPU=4, GPU=1))]) is None  # room, but the cap


def test_longest_trials_start_first_then_the_largest_gangs():
    gangs = [_gang(1, GPU=1), _gang(4, GPU=1), _gang(2, GPU=1), _gang(4, GPU=1)]
    assert start_order(gangs, [10.0, 30.0, 30.0, None]) == [1, 2, 0, 3]
    assert start_order(gangs, [None] * 4) == [1, 3, 2, 0]


def test_capacity_total_counts_what_the_autoscaler_can_add():
    cluster_yaml = load_cluster_file(CLUSTER_YAML)
    assert cluster_yaml.total("GPU") == 20  # 8 + 4 one-GPU nodes, 2 four-GPU nodes
    capped = Capacity("c", nodes=(HEAD,), node_types=cluster_yaml.node_types, max_added=3)
    assert capped.total("GPU") == 4 + 4 + 1  # the largest nodes first
    assert capped.total("CPU") == 1 + 48 + 48 + 4


def test_every_mix_of_shapes_runs_to_the_end_without_deadlock():
    capacity = Capacity(
        "c",
        nodes=(HEAD,),
        node_types=(
            NodeType("gpu1", {"CPU": 4.0, "GPU": 1.0}, max_count=3),
            NodeType("gpu4", {"CPU": 16.0, "GPU": 4.0}, max_count=1),
        ),
    )
    rng = random.Random(0)
    trials = [
        (_gang(rng.choice([1, 2, 4]), CPU=rng.choice([1, 4]), GPU=rng.choice([0.5, 1])), t)
        for t in (rng.uniform(1, 10) for _ in range(60))
    ]
    schedule = simulate(capacity, trials)
    busy = sum(t * sum(b.get("GPU", 0) for b in gang) for gang, t in trials)
    assert schedule.busy == pytest.approx(busy)  # every trial ran once
    assert schedule.makespan_s >= busy / capacity.total("GPU")  # never over capacity
    assert 0 < schedule.utilisation <= 1


def test_gang_aware_admission_beats_a_cap_by_the_largest_gang_on_the_ladder():
    capacity = load_cluster_file(CLUSTER_YAML)
    spec = load_spec(LADDER)
    rows = plan_rows(spec)
    trials = [(trial_gang(row.trial), BENCHMARKED.seconds(row)) for row in rows]
    gang_aware = simulate(capacity, trials)
    # The cap this replaced: 20 GPUs / the 4-worker gang = 5 trials at once, whatever their size.
    capped = simulate(capacity, trials, max_running=5)
    assert gang_aware.utilisation >= 0.85
    assert gang_aware.makespan_s < capped.makespan_s and capped.utilisation < 0.6


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
        check_placeable(spec, capacity)
    no_driver = Capacity("c", nodes=(("head", {"CPU": 8.0}),), node_types=(GPU_NODE,))
    with pytest.raises(ClusterError, match="no node offers the 'trial_driver' resource"):
        check_placeable(spec, no_driver)


def test_the_live_cluster_lists_the_head_first_whatever_the_number_of_workers(monkeypatch):
    import ray

    gpu = {"CPU": 4.0, "GPU": 1.0}
    head = {"CPU": 1.0, "node:__internal_head__": 1.0}
    alive = [gpu, head, {"CPU": 16.0, "GPU": 4.0}, gpu]
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": r} for r in alive])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(gcs_address="h:1"))
    capacity = cluster_now()
    assert [name for name, _ in capacity.nodes] == ["head", "worker", "worker", "worker"]
    assert capacity.total("GPU") == 6 and capacity.source == "cluster at h:1 now"


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


def test_plan_against_cluster_yaml_reports_makespan_utilisation_and_gpu_hours(capsys):
    assert main(["plan", str(LADDER), "--cluster", str(CLUSTER_YAML)]) == 0
    out = capsys.readouterr().out
    assert "cluster.yaml: head + up to 8 gpu1-spot, 2 gpu4-spot, 4 gpu1-ondemand" in out
    assert "(at most 14 in all): each trial starts when its gang fits" in out
    utilisation = re.search(r"cluster.yaml: makespan about [\d.]+ min, GPU utilisation (\d+)%", out)
    assert utilisation and int(utilisation[1]) >= 85, out
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


def _previous_sweep(tmp_path: Path, epoch_row) -> tuple[Path, object]:
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
    history = epoch_row(
        epoch=2,
        eval_accuracy=0.5,
        examples_per_s=100.0,
        tokens_per_s=3000.0,  # 30 tokens per example
        train_time_s=20.0,  # 2 epochs x 1000 examples / 100 per s
        params_total=row.params_total,
        params_non_embedding=row.params_non_embedding,
    )
    record = TrialRecord("t1", spec.trials[0].model_dump(mode="json"), "TERMINATED")
    record.history, record.wall_s = [history], 35.0
    experiment.write_results([record])
    return experiment.path, row


def test_measured_throughput_reproduces_a_measured_trial(tmp_path, epoch_row):
    path, row = _previous_sweep(tmp_path, epoch_row)
    throughput = measured_throughput(path)
    assert "measured in" in throughput.source and "1 finished trials" in throughput.source
    # Same shape: 15 s of overhead (35 - 20) + the measured 20 s of training.
    assert throughput.seconds(row) == pytest.approx(35.0)
    assert BENCHMARKED.seconds(row) != pytest.approx(35.0)


def test_plan_uses_a_previous_sweeps_throughput(tmp_path, epoch_row, capsys):
    path, _ = _previous_sweep(tmp_path, epoch_row)
    assert main(["plan", str(tmp_path / "s.yaml"), "--measured", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"estimate (measured in {path} (1 finished trials))" in out
    assert "per trial: 35 s" in out


# --- storage -------------------------------------------------------------------------------


def test_storage_root_is_the_experiment_dir_or_a_folder_of_the_uri(tmp_path):
    assert storage_root("experiments", tmp_path / "x") == str(tmp_path / "x")
    assert storage_root("s3://bucket/sweeps/", Path("experiments/x_2")) == "s3://bucket/sweeps/x_2"


def test_plan_times_trials_with_the_latest_run_of_the_same_spec(
    tmp_path, epoch_row, capsys, monkeypatch
):
    path, _ = _previous_sweep(tmp_path, epoch_row)
    monkeypatch.chdir(tmp_path)  # storage_path: experiments, relative to where plan runs
    assert main(["plan", str(tmp_path / "s.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"estimate (measured in {path} (1 finished trials))" in out
    assert "per trial: 35 s" in out
