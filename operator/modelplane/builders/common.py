"""What every builder shares: names, labels, selectors, the build context, node placement.

The leaf of `builders`: it imports nothing else from the package, so `pod`, `preload`,
`serverless` and `objects` can all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelplane.api.enums import CapacityProvider
from modelplane.api.v1alpha1 import AcceleratorClassSpec
from modelplane.builders.resolve import Resolved
from modelplane.catalog.accelerators import GPU_TAINT_EFFECT, GPU_TAINT_KEY, LABEL_GPU_PRODUCT

FIELD_MANAGER = "modelplane"
AUTOSCALER_FIELD_MANAGER = "modelplane-autoscaler"
LABEL_DEPLOYMENT = "modelplane.io/deployment"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_SPEC_HASH = "modelplane.io/applied-hash"
COMPONENT_SERVER = "model-server"
#: The server's writable cache (an emptyDir): the engine's Hub cache, compile caches, HOME.
CACHE_MOUNT = "/var/cache/modelplane"


@dataclass(frozen=True)
class BuildContext:
    """Cluster-level inputs of the builders (from operator settings)."""

    capacity_provider: CapacityProvider = CapacityProvider.STATIC
    cluster_domain: str = "cluster.local"
    #: Where platform-owned objects (shared Serverless backends) live.
    operator_namespace: str = "modelplane-system"
    #: PriorityClass of warm-node placeholder pods.
    placeholder_priority_class: str = "modelplane-placeholder"
    #: StorageClass of SharedVolume claims ("" = the cluster's default).
    shared_volume_storage_class: str = ""


def labels(r: Resolved, component: str = COMPONENT_SERVER) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelplane-model",
        "app.kubernetes.io/instance": r.name,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/managed-by": "modelplane",
        "app.kubernetes.io/part-of": "modelplane",
        LABEL_DEPLOYMENT: r.name,
    }


def selector(r: Resolved) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: r.name, LABEL_COMPONENT: COMPONENT_SERVER}


def selector_string(r: Resolved) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(r).items())


def owner_reference(kind: str, name: str, uid: str, api_version: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def node_selector(r: Resolved) -> dict[str, str]:
    return dict(r.accelerator.node_selector) or {LABEL_GPU_PRODUCT: r.accelerator.gpu_product}


def gpu_tolerations(acc: AcceleratorClassSpec) -> list[dict[str, Any]]:
    """The GPU taint's toleration, then the class's own (without repeating it)."""
    tols = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}]
    for t in acc.tolerations:
        entry = t.model_dump(by_alias=True, exclude_none=True)
        if entry not in tols:
            tols.append(entry)
    return tols


def credentials_env(r: Resolved) -> list[dict[str, Any]]:
    """The Hub token from the spec's credentials Secret (by reference), if it names one."""
    if r.credentials is None:
        return []
    ref = {"name": r.credentials.name, "key": r.credentials.key or "token"}
    return [{"name": r.engine.hf_token_env, "valueFrom": {"secretKeyRef": ref}}]
