"""Cluster capacity: which trials fit a cluster, and when each may start (no Ray at import).

A cluster is the nodes it has now plus the node types its autoscaler may add, each node a dict
of Ray resources. It is read from a cluster-launcher file (``cluster.yaml``: the head now, every
worker type up to its ``max_workers``), a KubeRay manifest (worker groups up to
``maxReplicas``), or a live cluster (its nodes now). A trial needs a gang: its driver's bundle
plus one bundle per Ray Train worker. Bundles are placed first-fit on nodes that are up, and
otherwise on a new node of the first type that holds them, as the autoscaler would add one.

``Admission`` starts a trial when its whole gang fits beside the running ones in that model;
``simulate`` runs the same policy over estimated trial times for ``plan``.
"""

from __future__ import annotations

import heapq
import json
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contract.config import TrialConfig, describe_resources
from orchestrator.errors import UserError
from orchestrator.spec import SweepSpec

__all__ = [
    "AUTOSCALER_CONFIG",
    "CONNECT_TIMEOUT_S",
    "DRIVER_NODE_RESOURCE",
    "DRIVER_RESOURCES",
    "HEAD_DRIVER_UNITS",
    "Admission",
    "Capacity",
    "ClusterError",
    "Gang",
    "NodeType",
    "Schedule",
    "check_placeable",
    "check_reachable",
    "cluster_now",
    "gangs_that_fit",
    "load_cluster_file",
    "probe",
    "simulate",
    "start_order",
    "sweep_capacity",
    "trial_gang",
    "unplaceable",
]

# Only the head declares this resource and every trial driver requests a sliver of it, so the
# drivers run next to the Tune driver and never on (preemptible, spot) GPU workers.
DRIVER_NODE_RESOURCE = "trial_driver"
# What the head declares: one unit, i.e. room for 1 / 0.001 = 1000 trial drivers.
HEAD_DRIVER_UNITS = 1
# What a Tune trial reserves for its driver, in Tune's resource-dict form: no CPU (the trainer's
# workers hold the trial's CPUs and GPUs; a whole CPU per driver starves them on small machines).
DRIVER_RESOURCES: dict[str, float] = {"cpu": 0, DRIVER_NODE_RESOURCE: 0.001}
# How long joining a cluster may take to answer a TCP connection (check_reachable).
CONNECT_TIMEOUT_S = 10.0
# Where `ray up` leaves the autoscaler's config on the head node.
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")

Resources = dict[str, float]
Gang = list[Resources]  # the bundles one trial holds at once
_EPS = 1e-9  # float slack: 1000 drivers x 0.001 must fit in 1 unit


class ClusterError(UserError):
    """A cluster description that cannot be read, or trials that a cluster can never place."""


@dataclass(frozen=True)
class NodeType:
    """Nodes the autoscaler may add: their resources and how many at most."""

    name: str
    resources: Resources
    max_count: int


@dataclass(frozen=True)
class Capacity:
    """The nodes a cluster has now and the nodes its autoscaler may add."""

    source: str
    nodes: tuple[tuple[str, Resources], ...] = ()
    node_types: tuple[NodeType, ...] = ()
    max_added: int | None = None  # the autoscaler's cap on added nodes over all types

    def describe(self) -> str:
        """E.g. ``cluster.yaml: head + up to 8 gpu1-spot, 2 gpu4-spot``."""
        now = Counter(name for name, _ in self.nodes)
        parts = [", ".join(f"{n} x {name}" if n > 1 else name for name, n in now.items())]
        if self.node_types:
            grow = ", ".join(f"{t.max_count} {t.name}" for t in self.node_types if t.max_count)
            cap = f" (at most {self.max_added} in all)" if self.max_added is not None else ""
            parts.append(f"up to {grow}{cap}")
        return f"{self.source}: " + " + ".join(p for p in parts if p)

    def total(self, kind: str) -> float:
        """Units of resource ``kind`` at full scale: the nodes up, plus the most the autoscaler
        can add within each type's maximum and the cap on added nodes."""
        slots = sorted(
            (t.resources.get(kind, 0.0) for t in self.node_types for _ in range(t.max_count)),
            reverse=True,
        )
        added = slots if self.max_added is None else slots[: self.max_added]
        return sum(r.get(kind, 0.0) for _, r in self.nodes) + sum(added)


def _ray_name(key: str) -> str:
    return {"cpu": "CPU", "gpu": "GPU"}.get(key, key)


def trial_gang(trial: TrialConfig) -> Gang:
    """The bundles a trial holds at once: its driver's, then one per Ray Train worker."""
    driver = {_ray_name(k): v for k, v in DRIVER_RESOURCES.items() if v > 0}
    worker = {k: v for k, v in trial.compute.worker_resources().items() if v > 0}
    return [driver] + [dict(worker) for _ in range(trial.compute.num_workers)]


def _fits(need: Resources, free: Resources) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in need.items())


@dataclass
class _Node:
    """One node of the packing model: what is free on it, and how many bundles it holds."""

    type: str
    free: Resources
    added: bool  # added by the autoscaler (in the model): it goes again once idle
    bundles: int = 0


class _Packing:
    """Free resources of the nodes up, plus nodes added (as the autoscaler would) on demand."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.nodes = [_Node(name, dict(r), added=False) for name, r in capacity.nodes]
        self.added: Counter[str] = Counter()

    def _place(self, bundle: Resources) -> _Node | None:
        node = next((n for n in self.nodes if _fits(bundle, n.free)), None)
        node = node or self._add_node(bundle)
        if node is not None:
            for k, v in bundle.items():
                node.free[k] = node.free.get(k, 0.0) - v
            node.bundles += 1
        return node

    def _add_node(self, bundle: Resources) -> _Node | None:
        cap = self.capacity.max_added
        if cap is not None and sum(self.added.values()) >= cap:
            return None
        for node_type in self.capacity.node_types:
            if self.added[node_type.name] < node_type.max_count and _fits(
                bundle, node_type.resources
            ):
                self.added[node_type.name] += 1
                self.nodes.append(_Node(node_type.name, dict(node_type.resources), added=True))
                return self.nodes[-1]
        return None

    def place_gang(self, gang: Gang) -> list[tuple[_Node, Resources]] | None:
        """Place every bundle or none (a placement group is all or nothing)."""
        placed: list[tuple[_Node, Resources]] = []
        # Largest bundles first: first-fit decreasing wastes less room.
        for bundle in sorted(gang, key=lambda b: sorted(b.values(), reverse=True), reverse=True):
            node = self._place(bundle)
            if node is None:
                self.release(placed)
                return None
            placed.append((node, bundle))
        return placed

    def release(self, placed: list[tuple[_Node, Resources]]) -> None:
        """Give the bundles' resources back; an added node left idle goes, as the autoscaler's
        idle timeout would take it, so its type's count is free again."""
        for node, bundle in placed:
            for k, v in bundle.items():
                node.free[k] += v
            node.bundles -= 1
            if node.added and not node.bundles:
                self.nodes.remove(node)
                self.added[node.type] -= 1


def gangs_that_fit(gang: Gang, capacity: Capacity, limit: int) -> int:
    """How many copies of ``gang`` the cluster holds at once (counting up to ``limit``)."""
    packing = _Packing(capacity)
    count = 0
    while count < limit and packing.place_gang(gang) is not None:
        count += 1
    return count


class Admission:
    """Gang-aware admission: a trial starts only when its whole gang fits beside the gangs of
    the trials running now, on the cluster at its autoscaled maximum (the packing model above).

    A waiting trial holds nothing, and a started one holds all it needs, so no mix of trial
    shapes can deadlock. ``max_running`` is the spec's optional extra cap on trials at once.
    """

    def __init__(self, capacity: Capacity, max_running: int | None = None) -> None:
        self.max_running = max_running
        self._packing = _Packing(capacity)
        self._running: dict[str, list[tuple[_Node, Resources]]] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    def try_start(self, key: str, gang: Gang) -> bool:
        """Reserve ``gang`` for trial ``key`` if it fits now; False (nothing held) if not."""
        if self.max_running is not None and len(self._running) >= self.max_running:
            return False
        placed = self._packing.place_gang(gang)
        if placed is None:
            return False
        self._running[key] = placed
        return True

    def finish(self, key: str) -> None:
        """Trial ``key`` ended (or was never started here): free its gang."""
        placed = self._running.pop(key, None)
        if placed is not None:
            self._packing.release(placed)

    def start_next(self, waiting: Sequence[tuple[str, Gang]]) -> int | None:
        """Start the first waiting trial, in the order given, whose gang fits now: its index.

        Backfilling: a trial further down starts when the ones before it do not fit. Trials of
        the same shape as one that did not fit are skipped (they cannot fit either).
        """
        did_not_fit: set[tuple] = set()
        for i, (key, gang) in enumerate(waiting):
            shape = tuple(tuple(sorted(bundle.items())) for bundle in gang)
            if shape in did_not_fit:
                continue
            if self.try_start(key, gang):
                return i
            if self.max_running is not None and self.running >= self.max_running:
                return None
            did_not_fit.add(shape)
        return None


def start_order(gangs: Sequence[Gang], seconds: Sequence[float | None]) -> list[int]:
    """The order in which waiting trials are offered a start: longest estimated time first,
    then the largest gang (the trials that would otherwise make the sweep's tail), then as
    given. An unknown time counts as the shortest."""

    def key(i: int) -> tuple[float, int]:
        return (-(seconds[i] or 0.0), -len(gangs[i]))

    return sorted(range(len(gangs)), key=key)


@dataclass(frozen=True)
class Schedule:
    """What a sweep is expected to take under gang-aware admission (``simulate``)."""

    makespan_s: float
    busy: float  # sum of (units of ``kind`` a trial holds x its seconds)
    units: float  # units of ``kind`` on the cluster at full scale
    kind: str  # the resource utilisation is counted in, e.g. "GPU"

    @property
    def utilisation(self) -> float:
        """busy / (units x makespan): the share of the cluster's slots that trials held."""
        return self.busy / (self.units * self.makespan_s) if self.makespan_s else 0.0


def simulate(
    capacity: Capacity,
    trials: Sequence[tuple[Gang, float]],
    *,
    max_running: int | None = None,
    kind: str = "GPU",
    running: Sequence[tuple[Gang, float]] = (),
) -> Schedule:
    """List scheduling of ``(gang, seconds)`` trials under ``Admission``, as a sweep runs them:
    at the start and whenever a trial ends, every waiting trial (in ``start_order``) whose gang
    fits starts. Every gang must fit the empty cluster (check ``unplaceable`` first).

    ``running``: trials already under way, ``(gang, seconds left)``, holding their gangs from
    the start (a running sweep's ETA); one that this model of the cluster cannot place beside
    the others runs all the same."""
    gangs = [gang for gang, _ in trials]
    order = start_order(gangs, [s for _, s in trials])
    admission = Admission(capacity, max_running)
    waiting = [(str(i), gangs[i]) for i in order]
    ends: list[tuple[float, str]] = []  # (end time, key) of the running trials, a heap
    now = busy = 0.0
    for i, (gang, seconds) in enumerate(running):
        key = f"running-{i}"
        admission.try_start(key, gang)
        heapq.heappush(ends, (seconds, key))
        busy += seconds * sum(b.get(kind, 0.0) for b in gang)
    while waiting or ends:
        while (index := admission.start_next(waiting)) is not None:
            key, gang = waiting.pop(index)
            seconds = trials[int(key)][1]
            heapq.heappush(ends, (now + seconds, key))
            busy += seconds * sum(b.get(kind, 0.0) for b in gang)
        if not ends:
            raise ClusterError(f"a gang never fits {capacity.describe()}: {waiting[0][1]}")
        now, key = heapq.heappop(ends)
        admission.finish(key)
    return Schedule(now, busy, capacity.total(kind), kind)


def _why_unplaceable(trial: TrialConfig, capacity: Capacity) -> str:
    driver, *workers = trial_gang(trial)
    if not gangs_that_fit([driver], capacity, 1):
        return (
            f"no node offers the {DRIVER_NODE_RESOURCE!r} resource that trial drivers need "
            f"(declare it on the head: ray start --head "
            f"--resources='{{\"{DRIVER_NODE_RESOURCE}\": {HEAD_DRIVER_UNITS}}}')"
        )
    worker = workers[0]
    if not gangs_that_fit([worker], capacity, 1):
        return f"a worker needs {describe_resources(worker)} on one node, and no node has that much"
    fit = gangs_that_fit([worker], capacity, len(workers))
    total = trial.compute.trial_resources()
    return (
        f"{len(workers)} workers need {describe_resources(total)} at once, and only {fit} "
        "such workers fit; "
        f"lower compute.num_workers or the per-worker resources, or allow more nodes"
    )


def unplaceable(trials: list[TrialConfig], capacity: Capacity) -> dict[str, str]:
    """Label -> reason, for each trial whose gang the cluster can never place."""
    problems = {}
    for trial in trials:
        if trial.label() not in problems and not gangs_that_fit(trial_gang(trial), capacity, 1):
            problems[trial.label()] = _why_unplaceable(trial, capacity)
    return problems


def check_placeable(spec: SweepSpec, capacity: Capacity) -> None:
    """ClusterError naming the trials the cluster can never place, if any."""
    problems = unplaceable(spec.trials, capacity)
    if problems:
        label, reason = next(iter(problems.items()))
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ClusterError(
            f"{len(problems)} trial(s) can never be placed on {capacity.describe()}: "
            f"{label}: {reason}{more}"
        )


def _resources(raw: Any, where: str) -> Resources:
    if not isinstance(raw, dict) or not raw:
        raise ClusterError(
            f"{where}: list the node's resources (e.g. {{CPU: 8, GPU: 1}}); the plan cannot "
            f"look up what an instance type has"
        )
    return {str(k): float(v) for k, v in raw.items()}


def _launcher_capacity(doc: dict[str, Any], path: Path) -> Capacity:
    types = doc.get("available_node_types") or {}
    head = doc.get("head_node_type")
    if head not in types:
        raise ClusterError(f"{path}: head_node_type {head!r} is not in available_node_types")
    workers = tuple(
        NodeType(
            name,
            _resources(spec.get("resources"), f"{path}: available_node_types.{name}.resources"),
            int(spec.get("max_workers", 0)),
        )
        for name, spec in types.items()
        if name != head
    )
    head_resources = _resources(
        types[head].get("resources"), f"{path}: available_node_types.{head}.resources"
    )
    return Capacity(
        source=path.name,
        nodes=((head, head_resources),),
        node_types=workers,
        max_added=doc.get("max_workers", 2),  # the cluster launcher's default
    )


def _k8s_quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _kuberay_resources(group: dict[str, Any], where: str) -> Resources:
    """A group's Ray resources: rayStartParams first, else the container's limits."""
    params = group.get("rayStartParams") or {}
    containers = group.get("template", {}).get("spec", {}).get("containers") or [{}]
    limits = containers[0].get("resources", {}).get("limits", {})
    resources: Resources = {}
    cpu = params.get("num-cpus", limits.get("cpu"))
    gpu = params.get("num-gpus", limits.get("nvidia.com/gpu"))
    if cpu is not None:
        resources["CPU"] = _k8s_quantity(cpu)
    if gpu is not None:
        resources["GPU"] = _k8s_quantity(gpu)
    if "resources" in params:
        # KubeRay passes the value to `ray start --resources` as written: a quoted JSON string.
        custom = json.loads(params["resources"])
        resources |= json.loads(custom) if isinstance(custom, str) else custom
    return _resources(resources, where)


def _kuberay_capacity(doc: dict[str, Any], path: Path) -> Capacity:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    head = ("head", _kuberay_resources(spec["headGroupSpec"], f"{path}: headGroupSpec"))
    fixed, grow = [], []
    for group in spec.get("workerGroupSpecs") or []:
        name = group["groupName"]
        resources = _kuberay_resources(group, f"{path}: workerGroupSpecs.{name}")
        if autoscaling:
            grow.append(NodeType(name, resources, int(group.get("maxReplicas", 0))))
        else:
            fixed += [(name, resources)] * int(group.get("replicas", 0))
    return Capacity(source=path.name, nodes=(head, *fixed), node_types=tuple(grow))


def load_cluster_file(path: str | Path) -> Capacity:
    """Read a cluster-launcher YAML or a KubeRay RayCluster/RayJob manifest."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClusterError(f"{path}: no such cluster file")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except yaml.YAMLError as err:
        raise ClusterError(f"{path}: malformed YAML: {str(err).splitlines()[0]}") from None
    for doc in docs:
        if doc.get("kind") in ("RayCluster", "RayJob"):
            return _kuberay_capacity(doc, path)
        if "available_node_types" in doc:
            return _launcher_capacity(doc, path)
    raise ClusterError(
        f"{path}: neither a cluster-launcher file (available_node_types) nor a KubeRay "
        "RayCluster/RayJob manifest"
    )


def cluster_now() -> Capacity:
    """The alive nodes of the Ray cluster this process is connected to (``ray.init`` done)."""
    import ray

    alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    named = [(("head" if "node:__internal_head__" in r else "worker"), dict(r)) for r in alive]
    # The head first, as in a cluster file (by name only: two workers' dicts do not compare).
    nodes = sorted(named, key=lambda node: node[0] != "head")
    address = ray.get_runtime_context().gcs_address
    return Capacity(source=f"cluster at {address} now", nodes=tuple(nodes))


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, in one line and within ``timeout_s``, a cluster address that nothing answers
    at: ``ray.init`` retries an unreachable one for minutes, printing GCS warnings.

    ``host:port`` is the head's GCS, ``ray://host:port`` its Ray Client server, ``auto`` the
    cluster this machine started last (``ray start``) or ``$RAY_ADDRESS``; ``local`` starts one.
    """
    where = f"Ray cluster address {address!r} (--address or $RAY_ADDRESS)"
    if address == "local":
        return
    if address.startswith(("http://", "https://")):
        raise ClusterError(
            f"{where} is an HTTP address (the dashboard and Jobs API, for `ray job submit`); "
            "to join a cluster give its GCS address host:6379, ray://host:10001, or auto"
        )
    if address == "auto":
        # Ray's own lookup: $RAY_ADDRESS, else the address `ray start` wrote in its temp dir.
        from ray._private.services import canonicalize_bootstrap_address

        try:
            address = canonicalize_bootstrap_address("auto") or "local"
        except (ConnectionError, ValueError) as err:
            raise ClusterError(f"{where}: {str(err).splitlines()[0]}") from None
        if address == "local":
            return
    inner = address.removeprefix("ray://")
    host, _, port = inner.rpartition(":")
    if address.startswith("ray://") and not port.isdigit():
        host, port = inner, "10001"  # Ray Client's default port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"{where} is not host:port, ray://host:port, auto or local")
    reason = _no_tcp(host, int(port), timeout_s)
    if not reason and inner == address:  # Ray Client bounds its own attempts (about 35 s)
        reason = _no_gcs(f"{host}:{port}", timeout_s)
    if reason:
        raise ClusterError(
            f"cannot reach the {where} at {host}:{port}: {reason}; is the cluster up, and the "
            "address right?"
        )


def _no_tcp(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing accepts a TCP connection at host:port, or None."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout_s).close()
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as err:
        return err.strerror or str(err) or type(err).__name__
    return None


# A method of the GCS's own gRPC service (Ray internal; tests/orchestrator/test_cluster.py
# checks that the installed Ray has it). A bare TCP or HTTP/2 answer proves nothing: proxies
# and firewalls accept connections to any address, and ray.init then waits for minutes.
GCS_PROBE_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"


def _no_gcs(target: str, timeout_s: float) -> str | None:
    """Why no Ray GCS answers at ``target`` (host:port), or None when one does."""
    import grpc

    channel = grpc.insecure_channel(target)
    try:
        channel.unary_unary(GCS_PROBE_METHOD)(b"", timeout=timeout_s)
    except grpc.RpcError as err:
        code = err.code()
        # A GCS with token authentication (Ray's default) refuses the probe: it is there.
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return None
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no answer within {timeout_s:g} s"
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return "something answers there, but not a Ray GCS (another service's port?)"
        return (err.details() or code.name).splitlines()[0]
    finally:
        channel.close()
    return None


def probe(address: str) -> Capacity:
    """Connect to the cluster at ``address`` just long enough to read its nodes."""
    import ray

    check_reachable(address)
    ray.init(address=address, log_to_driver=False, logging_level="error")
    try:
        return cluster_now()
    finally:
        ray.shutdown()


def sweep_capacity(cluster_file: str | Path | None, *, on_cluster: bool) -> Capacity:
    """What a sweep may fill: the cluster file at full scale; on a cluster without one, the
    autoscaler config that `ray up` leaves on the head; else the nodes as they are now."""
    if cluster_file is None and on_cluster and AUTOSCALER_CONFIG.expanduser().is_file():
        cluster_file = AUTOSCALER_CONFIG
    return load_cluster_file(cluster_file) if cluster_file else cluster_now()
