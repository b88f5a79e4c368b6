"""Multi-node replicas: a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) instead of a Deployment.

One replica is one LWS *group*: a leader pod and ``nodes - 1`` worker pods, created together,
restarted together (``RecreateGroupOnPodRestart``: any pod of a group restarting or being
deleted recreates the whole group) and scaled as a unit (``spec.replicas`` counts groups, and
the LWS ``/scale`` subresource does too). Each pod takes one whole node of the replica's class
(tensor parallel inside it); the pods of a group are the pipeline stages.

The pod is the single-node pod the Deployment builder makes, so preloading, node caches, probes,
tolerations and the class's node selector are the same; this module only turns it into the two
templates:

* **leader** (``worker-index`` 0): the engine's API server, with the multi-node flags for rank 0.
  It keeps the probes and is the only pod that serves HTTP: the Service selects leaders only
  (`LEADER_SELECTOR` added to the Deployment's selector).
* **workers**: the same engine in its headless/worker role, joining the leader at
  ``$(LWS_LEADER_ADDRESS)`` (the group's leader's DNS name, injected with ``LWS_WORKER_INDEX`` and
  ``LWS_GROUP_SIZE`` by the LWS pod webhook); no HTTP probes, no port.

Engine flags (checked against the engines' own argument definitions, vLLM 0.33.0 and SGLang
0.5.23 as recorded by the engine contract test):

* vLLM, multiprocessing executor across nodes: ``--distributed-executor-backend mp --nnodes N
  --node-rank R --master-addr <leader> --master-port P``, workers add ``--headless``;
* SGLang: ``--nnodes N --node-rank R --dist-init-addr <leader>:P``.

Where the class asks for it, ``exclusive-topology`` keeps a whole group inside one topology
domain (one zone or placement group) and alone there.
"""

from __future__ import annotations

import copy
from typing import Any

from modelplane.api.enums import EngineType

__all__ = [
    "API_VERSION",
    "DIST_PORT",
    "EXCLUSIVE_TOPOLOGY",
    "KIND",
    "LEADER_SELECTOR",
    "build_leaderworkerset",
    "multinode_args",
]

API_VERSION = "leaderworkerset.x-k8s.io/v1"
KIND = "LeaderWorkerSet"
EXCLUSIVE_TOPOLOGY = "leaderworkerset.sigs.k8s.io/exclusive-topology"
#: LWS labels every leader pod with worker-index 0: added to the Service's selector.
LEADER_SELECTOR = {"leaderworkerset.sigs.k8s.io/worker-index": "0"}
#: The rendezvous port on the leader (torch.distributed / the engine's own store).
DIST_PORT = 29500

_LEADER = "$(LWS_LEADER_ADDRESS)"
_RANK = "$(LWS_WORKER_INDEX)"


def multinode_args(engine: EngineType, nodes: int, *, leader: bool) -> list[str]:
    """The engine flags that make `nodes` pods one server (rank from LWS's environment)."""
    rank = "0" if leader else _RANK
    if engine == EngineType.VLLM:
        args = [
            "--distributed-executor-backend=mp",
            f"--nnodes={nodes}",
            f"--node-rank={rank}",
            f"--master-addr={_LEADER}",
            f"--master-port={DIST_PORT}",
        ]
        return args if leader else [*args, "--headless"]
    if engine == EngineType.SGLANG:
        return [
            f"--nnodes={nodes}",
            f"--node-rank={rank}",
            f"--dist-init-addr={_LEADER}:{DIST_PORT}",
        ]
    raise ValueError(
        f"engine {engine.value} has no multi-node launch; serve this model with vllm or sglang"
    )


def _server(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec.get("containers") or []
    if not containers:
        raise ValueError("the pod template has no container to launch across nodes")
    server: dict[str, Any] = containers[0]
    return server


def build_leaderworkerset(
    deployment: dict[str, Any],
    *,
    engine: EngineType,
    nodes: int,
    exclusive_topology_key: str | None = None,
) -> dict[str, Any]:
    """The LeaderWorkerSet serving `deployment`'s pod on `nodes` nodes per replica."""
    if nodes < 2:
        raise ValueError("a LeaderWorkerSet replica spans 2 or more nodes; use the Deployment")
    meta = copy.deepcopy(deployment["metadata"])
    spec = deployment["spec"]
    template = copy.deepcopy(spec["template"])

    leader = copy.deepcopy(template)
    lc = _server(leader["spec"])
    lc["args"] = [*(lc.get("args") or []), *multinode_args(engine, nodes, leader=True)]
    lc.setdefault("ports", []).append({"name": "dist", "containerPort": DIST_PORT})

    worker = copy.deepcopy(template)
    wc = _server(worker["spec"])
    wc["args"] = [*(wc.get("args") or []), *multinode_args(engine, nodes, leader=False)]
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        wc.pop(probe, None)  # a worker serves no HTTP; the group's health is its leader's
    wc.pop("ports", None)

    if exclusive_topology_key:
        meta.setdefault("annotations", {})[EXCLUSIVE_TOPOLOGY] = exclusive_topology_key
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": {
            "replicas": spec.get("replicas", 1),
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "leaderWorkerTemplate": {
                "size": nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": leader,
                "workerTemplate": worker,
            },
        },
    }
