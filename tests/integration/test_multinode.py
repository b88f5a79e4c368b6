"""Multi-node replicas on the real LeaderWorkerSet controller of the local cluster.

`cluster up` runs LWS (built from its Go module at the pin in tools/versions.env) with its CRDs
and admission webhooks; these tests create LeaderWorkerSets and watch what the real controller,
the real StatefulSet controller and the scheduler do with them on simulated GPU nodes.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane.catalog import accelerators as acc
from modelplane_testbed.localcluster import LocalCluster
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

GROUP = "leaderworkerset.x-k8s.io"
NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
H100 = next(a for a in acc.DEFAULT_ACCELERATORS if "H100" in a.gpu_product)


def _pod_template(gpus: int) -> dict[str, Any]:
    return {
        "spec": {
            "nodeSelector": {acc.LABEL_GPU_PRODUCT: H100.gpu_product},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {
                    "name": "server",
                    "image": "example.invalid/server:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        }
    }


def _lws(name: str, *, size: int, replicas: int = 1, gpus: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "workerTemplate": _pod_template(gpus),
            },
        },
    }


def _pods(api: Any, ns: str, name: str) -> list[Any]:
    v1 = client.CoreV1Api(api)
    return list(v1.list_namespaced_pod(ns, label_selector=f"{NAME_LABEL}={name}").items)


def _ready(p: Any) -> bool:
    if p.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))


def test_lws_controller_runs_with_its_webhooks(cluster: LocalCluster, api: Any) -> None:
    st = cluster.state()
    assert st is not None and any(p.name == "lws" and p.alive() for p in st.processes)
    ext = client.ApiextensionsV1Api(api)
    assert ext.read_custom_resource_definition(f"leaderworkersets.{GROUP}").spec.group == GROUP
    adm = client.AdmissionregistrationV1Api(api)
    mutating = adm.read_mutating_webhook_configuration("lws-mutating-webhook-configuration")
    pod_hook = next(w for w in mutating.webhooks if w.name == "mpod.kb.io")
    # Upstream's kustomize patch narrows the pod webhook to LWS pods: others never wait on it.
    assert pod_hook.object_selector.match_expressions[0].key == NAME_LABEL
    assert pod_hook.client_config.url.startswith("https://127.0.0.1:")
    assert pod_hook.failure_policy == "Fail"


def test_invalid_leaderworkerset_is_rejected_by_the_lws_webhook(api: Any, namespace: str) -> None:
    body = _lws("bad", size=2)
    body["spec"]["replicas"] = -1
    with pytest.raises(ApiException) as e:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, "v1", namespace, "leaderworkersets", body
        )
    assert e.value.status in (400, 422)


def test_one_group_gets_a_leader_and_a_worker_on_two_h100_nodes(api: Any, namespace: str) -> None:
    """Size 2, 8 GPUs a pod: one group = leader + 1 worker, each alone on an 8-GPU H100 node,
    labelled by the LWS pod webhook; deleting the worker recreates the whole group."""
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(
        GROUP, "v1", namespace, "leaderworkersets", _lws("big", size=2)
    )

    def group_ready() -> list[Any] | None:
        pods = _pods(api, namespace, "big")
        return pods if len(pods) == 2 and all(_ready(p) for p in pods) else None

    pods = wait_for(group_ready, timeout=90, what="leader and worker Ready")
    by_worker = {p.metadata.labels[WORKER_INDEX]: p for p in pods}
    assert set(by_worker) == {"0", "1"}  # worker-index 0 is the leader
    assert {p.metadata.labels[GROUP_INDEX] for p in pods} == {"0"}
    leader, worker = by_worker["0"], by_worker["1"]
    assert leader.metadata.name == "big-0" and worker.metadata.name == "big-0-1"
    assert leader.spec.node_name != worker.spec.node_name
    v1 = client.CoreV1Api(api)
    for p in pods:
        node = v1.read_node(p.spec.node_name)
        assert node.metadata.labels[acc.LABEL_GPU_PRODUCT] == H100.gpu_product
    # The worker knows its leader (LWS_LEADER_ADDRESS, injected by the webhook).
    env = {e.name: e.value for e in worker.spec.containers[0].env or []}
    assert env["LWS_LEADER_ADDRESS"].startswith("big-0.big.")

    # Restart as a group: the worker's deletion makes LWS recreate the leader too.
    old = {p.metadata.name: p.metadata.uid for p in pods}
    v1.delete_namespaced_pod(worker.metadata.name, namespace, grace_period_seconds=0)

    def group_recreated() -> list[Any] | None:
        now = group_ready()
        if now is None:
            return None
        return now if all(old.get(p.metadata.name) != p.metadata.uid for p in now) else None

    wait_for(group_recreated, timeout=180, what="leader and worker recreated, Ready")

    def lws_ready() -> bool:
        lws = co.get_namespaced_custom_object(GROUP, "v1", namespace, "leaderworkersets", "big")
        return bool(lws.get("status", {}).get("readyReplicas") == 1)

    wait_for(lws_ready, timeout=60, what="LeaderWorkerSet status readyReplicas 1")
