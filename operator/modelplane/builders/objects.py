"""Pure builders: the desired children of a resolved ModelDeployment, as plain dicts.

`build_<child>(r, ctx) -> dict | None` (None means "this child should not exist"). No I/O, no
clock, no randomness: the same input gives byte-identical output, which the golden-file tests
in tests/data/builders/ pin. The server pod itself is built in `pod` (a base plus patches);
names and labels shared by every builder are in `common`, the engine's args in `engine`.
"""

from __future__ import annotations

from typing import Any

from modelplane.api.v1alpha1 import AcceleratorClassSpec
from modelplane.builders.common import (
    ANNOTATION_SPEC_HASH,
    AUTOSCALER_FIELD_MANAGER,
    CACHE_MOUNT,
    COMPONENT_SERVER,
    FIELD_MANAGER,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    BuildContext,
    labels,
    node_selector,
    owner_reference,
    selector,
    selector_string,
)
from modelplane.builders.engine import (
    DRAIN_SECONDS,
    NGRAM_LOOKUP_MAX,
    NGRAM_LOOKUP_MIN,
    NODE_CACHE_MOUNT,
    NODE_LOCAL_MODEL,
    engine_args,
    model_argument,
    reads_node_cache,
    served_names,
)
from modelplane.builders.pod import (
    GRACE_SECONDS,
    NODE_CACHE_SCRIPT,
    PRESTOP_SLEEP,
    node_cache_init_container,
    server_pod,
)
from modelplane.builders.resolve import Resolved
from modelplane.catalog.accelerators import (
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    LABEL_ACCELERATOR_CLASS,
)

#: Names other layers import from here (defined in `common`, `engine` and `pod`).
__all__ = [
    "ANNOTATION_SPEC_HASH",
    "AUTOSCALER_FIELD_MANAGER",
    "CACHE_MOUNT",
    "COMPONENT_SERVER",
    "DRAIN_SECONDS",
    "FIELD_MANAGER",
    "GRACE_SECONDS",
    "LABEL_COMPONENT",
    "LABEL_DEPLOYMENT",
    "NGRAM_LOOKUP_MAX",
    "NGRAM_LOOKUP_MIN",
    "NODE_CACHE_MOUNT",
    "NODE_CACHE_SCRIPT",
    "NODE_LOCAL_MODEL",
    "PRESTOP_SLEEP",
    "BuildContext",
    "build_deployment",
    "build_nodepool",
    "build_pdb",
    "build_service",
    "endpoint_url",
    "engine_args",
    "labels",
    "model_argument",
    "node_cache_init_container",
    "node_selector",
    "nodepool_name",
    "owner_reference",
    "reads_node_cache",
    "selector",
    "selector_string",
    "served_names",
]


def endpoint_url(r: Resolved, ctx: BuildContext) -> str:
    return f"http://{r.name}.{r.namespace}.svc.{ctx.cluster_domain}:8000/v1"


def build_deployment(r: Resolved, ctx: BuildContext) -> dict[str, Any]:
    """The model-server Deployment. `spec.replicas` is left to the autoscaler (/scale).

    Nothing the cluster learns later (which nodes hold cached weights, load) is an input: the
    pod template changes only when the spec does, so no event of the world rolls the replicas."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": labels(r)},
        "spec": {
            "selector": {"matchLabels": selector(r)},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 3600,
            # One extra replica during a rollout, never one fewer: a model must keep serving.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": server_pod(r),
        },
    }


def build_service(r: Resolved, ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": labels(r)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(r),
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pdb(r: Resolved, ctx: BuildContext) -> dict[str, Any] | None:
    """At most one replica down at a time, once there can be more than one."""
    if r.max_replicas <= 1 and (r.pinned_replicas or 0) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": labels(r)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(r)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def nodepool_name(accelerator_class: str) -> str:
    return f"modelplane-{accelerator_class}"


def build_nodepool(name: str, acc: AcceleratorClassSpec) -> dict[str, Any] | None:
    """A Karpenter NodePool for one AcceleratorClass (cluster-scoped, shared by its users)."""
    karp = acc.provisioning.karpenter if acc.provisioning else None
    if karp is None:
        return None
    reqs = [r.model_dump(by_alias=True) for r in karp.requirements]
    if acc.instance_types and not any(r["key"] == "node.kubernetes.io/instance-type" for r in reqs):
        reqs.append(
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": list(acc.instance_types),
            }
        )
    reqs.append({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]})
    spec: dict[str, Any] = {
        "template": {
            "metadata": {
                "labels": {
                    LABEL_ACCELERATOR_CLASS: name,
                    "app.kubernetes.io/managed-by": "modelplane",
                }
            },
            "spec": {
                "nodeClassRef": karp.node_class_ref.model_dump(by_alias=True),
                "requirements": reqs,
                "taints": [{"key": GPU_TAINT_KEY, "value": "present", "effect": GPU_TAINT_EFFECT}],
                "expireAfter": "720h",
                "terminationGracePeriod": f"{GRACE_SECONDS}s",
            },
        },
        # Consolidate only empty nodes: never evict a loading or serving model.
        "disruption": {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "10m",
            "budgets": [{"nodes": "1"}],
        },
        "weight": 50,
    }
    if karp.gpu_limit:
        spec["limits"] = {GPU_RESOURCE: str(karp.gpu_limit)}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {
            "name": nodepool_name(name),
            "labels": {"app.kubernetes.io/managed-by": "modelplane", LABEL_ACCELERATOR_CLASS: name},
        },
        "spec": spec,
    }
