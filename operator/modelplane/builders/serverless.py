"""Serverless: one platform-owned backend per (model, serving shape), shared by every tenant.

A tenant is a `tier: Serverless` ModelDeployment in any namespace. Tenants asking for the same
weights served the same way (engine, precision, context length, task, GPU kind and count) share
one backend Deployment + Service in the operator's namespace. The backend is owned by no tenant
object: it is removed when the last tenant goes. Each tenant gets its own endpoint (a Service in
its namespace pointing at the backend), served name and aliases, and its own status.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from modelplane.builders.objects import BuildContext, labels
from modelplane.builders.resolve import Resolved

LABEL_BACKEND = "modelplane.io/backend"
LABEL_TIER = "modelplane.io/tier"
#: Replica bounds of a shared backend: scale to zero when idle, a platform-wide ceiling
#: (tenants cannot set replicas; the autoscaler scales the backend within these bounds).
BACKEND_MIN_REPLICAS = 0
BACKEND_MAX_REPLICAS = 4
#: Per-replica load target of a backend for tenants that set none in spec.autoscaling.
BACKEND_LOAD_TARGETS = {"concurrentRequests": 32.0}


def shape_key(r: Resolved) -> str:
    """What makes two tenants share a backend."""
    parts = [
        r.uri,
        r.revision or "",
        r.engine.engine.value,
        r.precision.value if r.precision else "",
        str(r.context_length or ""),
        r.task.value,
        r.accelerator_class,
        str(r.gpu_count),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]


def backend_name(r: Resolved) -> str:
    slug = (r.catalog.id if r.catalog else "model").replace(".", "-")[:40].strip("-")
    return f"sls-{slug}-{shape_key(r)}"


def backend(r: Resolved, namespace: str, tenant_names: tuple[str, ...]) -> Resolved:
    """The shared backend's own resolution: platform name, namespace, every tenant's names."""
    served = r.catalog.id if r.catalog else backend_name(r)
    aliases = tuple(sorted({n for n in tenant_names if n != served}))
    return dataclasses.replace(
        r,
        name=backend_name(r),
        namespace=namespace,
        served_name=served,
        aliases=aliases,
        credentials=None,
        min_replicas=BACKEND_MIN_REPLICAS,
        max_replicas=BACKEND_MAX_REPLICAS,
        pinned_replicas=None,
        extra_args=(),
        env=(),
    )


def backend_labels(b: Resolved) -> dict[str, str]:
    return {**labels(b), LABEL_BACKEND: b.name, LABEL_TIER: "Serverless"}


def label_backend(obj: dict[str, Any], b: Resolved) -> dict[str, Any]:
    """Mark a built child as part of the shared backend (selector labels stay unchanged)."""
    obj["metadata"]["labels"] = {**obj["metadata"]["labels"], **backend_labels(b)}
    if obj["kind"] == "Deployment":
        tpl = obj["spec"]["template"]["metadata"]
        tpl["labels"] = {**tpl["labels"], LABEL_BACKEND: b.name, LABEL_TIER: "Serverless"}
    return obj


def build_tenant_service(r: Resolved, b: Resolved, ctx: BuildContext) -> dict[str, Any]:
    """The tenant's endpoint: a Service in its namespace that resolves to the shared backend."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": r.name,
            "namespace": r.namespace,
            "labels": {**labels(r, component="endpoint"), LABEL_BACKEND: b.name},
        },
        "spec": {
            "type": "ExternalName",
            "externalName": f"{b.name}.{b.namespace}.svc.{ctx.cluster_domain}",
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        },
    }
