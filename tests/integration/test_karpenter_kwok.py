"""Karpenter itself (KWOK cloud provider) provisions simulated GPU nodes for the product's NodePool.

The NodePool is the product's own (`build_nodepool`) for an AcceleratorClass shaped like the
chart's default H100 class, except that its `nodeClassRef` names a KWOKNodeClass: Karpenter
schedules the GPU pod the kube-scheduler could not place, launches a NodeClaim, the KWOK
provider creates the Node, KWOK plays its kubelet, and the pod lands there. Once the node is
empty, WhenEmpty consolidation removes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane.api.v1alpha1 import AcceleratorClassSpec
from modelplane.builders.objects import build_nodepool
from modelplane.catalog import accelerators as acc
from modelplane.chartvalues import default_accelerator_class
from modelplane_testbed.karpenter import (
    AWS_GPU_MEMORY,
    AWS_GPU_NAME,
    KarpenterKwok,
    node_class_ref,
)
from modelplane_testbed.localcluster import LocalCluster, load_layout
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

KARPENTER = ("karpenter.sh", "v1")
NODEPOOL_LABEL = "karpenter.sh/nodepool"


@pytest.fixture(scope="module")
def karpenter(cluster: LocalCluster) -> Iterator[KarpenterKwok]:
    kk = KarpenterKwok(cluster).start()
    try:
        yield kk
    finally:
        kk.stop()


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}


def _nodeclaims(custom: client.CustomObjectsApi, pool: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom.list_cluster_custom_object(
        *KARPENTER, "nodeclaims", label_selector=f"{NODEPOOL_LABEL}={pool}"
    )["items"]
    return items


def _pool_nodes(core: client.CoreV1Api, pool: str) -> list[Any]:
    return list(core.list_node(label_selector=f"{NODEPOOL_LABEL}={pool}").items)


def test_product_nodepool_provisions_a_gpu_node_and_consolidates_it(
    cluster: LocalCluster, karpenter: KarpenterKwok, namespace: str, api: Any
) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    h100 = acc.accelerator("nvidia-h100-80gb")
    shape = h100.shapes[0]
    # A class of its own, so the pod fits none of the cluster's static H100 nodes.
    cls = f"kk-h100-{uuid.uuid4().hex[:6]}"
    default = default_accelerator_class(h100)
    spec = {
        **default["spec"],
        "nodeSelector": {acc.LABEL_ACCELERATOR_CLASS: cls},
        "provisioning": {
            "karpenter": {**default["provisioning"]["karpenter"], "nodeClassRef": node_class_ref()}
        },
    }
    custom.create_cluster_custom_object(
        "modelplane.io",
        "v1alpha1",
        "acceleratorclasses",
        {"apiVersion": "modelplane.io/v1alpha1", "kind": "AcceleratorClass",
         "metadata": {"name": cls}, "spec": spec},
    )  # fmt: skip
    stored = custom.get_cluster_custom_object(
        "modelplane.io", "v1alpha1", "acceleratorclasses", cls
    )
    nodepool = build_nodepool(cls, AcceleratorClassSpec.model_validate(stored["spec"]))
    assert nodepool is not None
    pool = nodepool["metadata"]["name"]
    try:
        custom.create_cluster_custom_object(*KARPENTER, "nodepools", nodepool)
        wait_for(
            lambda: _conditions(custom.get_cluster_custom_object(*KARPENTER, "nodepools", pool))
            .get("Ready") == "True",
            timeout=60,
            what=f"NodePool {pool} Ready (Karpenter accepts its KWOKNodeClass)",
        )  # fmt: skip

        # A model server's GPU needs: a whole node of the class, the class's selector/tolerations.
        tol = [
            {"key": t["key"], "operator": t["operator"], "effect": t["effect"]}
            for t in spec["tolerations"]
        ]
        pod = {
            "metadata": {"name": "server"},
            "spec": {
                "nodeSelector": spec["nodeSelector"],
                "tolerations": tol,
                "containers": [
                    {
                        "name": "engine",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {
                            "requests": {"cpu": "4", "memory": "64Gi"},
                            "limits": {acc.GPU_RESOURCE: str(shape.gpus)},
                        },
                    }
                ],
            },
        }
        core.create_namespaced_pod(namespace, pod)

        claims = wait_for(
            lambda: _nodeclaims(custom, pool), timeout=60, what=f"a NodeClaim of {pool}"
        )
        assert len(claims) == 1
        claim = claims[0]["metadata"]["name"]
        claim_obj = wait_for(
            lambda: (
                c
                if _conditions(c := custom.get_cluster_custom_object(*KARPENTER, "nodeclaims", claim))
                .get("Initialized") == "True"
                else None
            ),
            timeout=90,
            what=f"NodeClaim {claim} Launched, Registered and Initialized",
        )  # fmt: skip
        node_name = claim_obj["status"]["nodeName"]
        node = core.read_node(node_name)
        labels = node.metadata.labels
        assert labels[acc.LABEL_INSTANCE_TYPE] == shape.name
        assert labels[acc.LABEL_ACCELERATOR_CLASS] == cls  # the NodePool template's label
        assert labels[NODEPOOL_LABEL] == pool
        assert labels["karpenter.sh/capacity-type"] == "on-demand"
        assert labels[AWS_GPU_NAME] == "h100"
        assert labels[AWS_GPU_MEMORY] == str(h100.memory_mib)
        assert labels[acc.LABEL_GPU_PRODUCT] == h100.gpu_product
        assert labels[acc.LABEL_GPU_COUNT] == str(shape.gpus)
        assert labels[acc.LABEL_ZONE] in load_layout().zones
        assert node.status.allocatable[acc.GPU_RESOURCE] == str(shape.gpus)
        assert claim_obj["status"]["allocatable"][acc.GPU_RESOURCE] == str(shape.gpus)
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
        assert (acc.GPU_TAINT_KEY, acc.GPU_TAINT_VALUE, acc.GPU_TAINT_EFFECT) in taints
        assert not any(t[0] == "karpenter.sh/unregistered" for t in taints)

        def running() -> bool:
            p = core.read_namespaced_pod("server", namespace)
            return p.spec.node_name == node_name and p.status.phase == "Running"

        wait_for(running, timeout=60, what=f"the pod running on {node_name}")

        # Empty node: WhenEmpty consolidation removes it (the product waits 10m; here 1s).
        core.delete_namespaced_pod("server", namespace, grace_period_seconds=0)
        custom.patch_cluster_custom_object(
            *KARPENTER, "nodepools", pool, {"spec": {"disruption": {"consolidateAfter": "1s"}}}
        )
        wait_for(
            lambda: not _pool_nodes(core, pool) and not _nodeclaims(custom, pool),
            timeout=120,
            interval=1,
            what=f"the empty node {node_name} consolidated away",
        )
    finally:
        try:
            custom.delete_cluster_custom_object(*KARPENTER, "nodepools", pool)
        except ApiException as e:
            if e.status != 404:
                raise
        custom.delete_cluster_custom_object("modelplane.io", "v1alpha1", "acceleratorclasses", cls)
        # Leave the session's cluster with its static nodes only.
        wait_for(
            lambda: not _pool_nodes(core, pool),
            timeout=120,
            interval=1,
            what=f"the nodes of {pool} gone",
        )
