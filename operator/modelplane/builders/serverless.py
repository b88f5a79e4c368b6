"""Serverless: one platform-owned backend per (model, serving shape), shared by every tenant.

A tenant is a `tier: Serverless` ModelDeployment in any namespace. Tenants asking for the same
weights served the same way (engine, precision, context length, task, GPU kind and count) share
one backend Deployment + Service in the operator's namespace. The backend is owned by no tenant
object: it is removed when the last tenant goes. Each tenant gets its own endpoint (a Service in
its namespace pointing at the backend), served name and aliases, and its own status.

Gated weights: a pod cannot reference a Secret in another namespace, so the operator mirrors
the one key a tenant's `model.credentialsSecretRef` names into a Secret next to the backend
(`<backend>-credentials`, labelled with the backend, removed by the backend sweep), and the
backend's pods reference that. When several tenants give one, the oldest tenant's is used
(`credential_candidates`); the mirror's annotations and an Event on that tenant say whose.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelplane.api.v1alpha1 import ModelDeployment, SecretRef
from modelplane.builders.common import BuildContext, labels
from modelplane.builders.resolve import Resolved

LABEL_BACKEND = "modelplane.io/backend"
LABEL_TIER = "modelplane.io/tier"
#: Replica bounds of a shared backend: scale to zero when idle, a platform-wide ceiling
#: (tenants cannot set replicas; the autoscaler scales the backend within these bounds).
BACKEND_MIN_REPLICAS = 0
BACKEND_MAX_REPLICAS = 4
#: Per-replica load target of a backend for tenants that set none in spec.autoscaling.
BACKEND_LOAD_TARGETS = {"concurrentRequests": 32.0}
#: The key of the mirrored credentials Secret (whatever key the tenant's Secret used).
CREDENTIALS_KEY = "token"
ANNOTATION_CREDENTIALS_FROM = "modelplane.io/credentials-from"


@dataclass(frozen=True)
class BackendCredentials:
    """The tenant Secret key a backend downloads gated weights with (read by the adapters)."""

    tenant: ModelDeployment
    secret: str
    key: str
    value: str = field(repr=False)  # base64, as in the Secret's data; never logged

    @property
    def source(self) -> str:
        return f"{self.tenant.metadata.namespace}/{self.tenant.metadata.name}"


def credentials_secret_name(backend: str) -> str:
    return f"{backend}-credentials"


def credential_candidates(tenants: Sequence[ModelDeployment]) -> list[ModelDeployment]:
    """Tenants that give a credentialsSecretRef, the oldest first (creationTimestamp, then
    namespace/name): which tenant's Secret a backend uses is deterministic, and stays the same
    while that tenant exists."""

    def age(md: ModelDeployment) -> tuple[str, str, str]:
        created = str((md.metadata.model_extra or {}).get("creationTimestamp") or "~")
        return created, md.metadata.namespace or "", md.metadata.name

    return sorted(
        (t for t in tenants if t.spec.model is not None and t.spec.model.credentials_secret_ref),
        key=age,
    )


def tenant_names(tenants: Sequence[ModelDeployment]) -> tuple[str, ...]:
    """Every served name and alias of a backend's tenants."""
    names: set[str] = set()
    for md in tenants:
        if md.spec.model is not None:
            names.add(md.spec.model.served_name or md.metadata.name)
            names.update(md.spec.model.aliases)
    return tuple(sorted(names))


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


def backend(
    r: Resolved, namespace: str, names: tuple[str, ...], *, credentials: bool = False
) -> Resolved:
    """The shared backend's own resolution: platform name, namespace, every tenant's names;
    with `credentials`, its pods read the mirrored credentials Secret."""
    served = r.catalog.id if r.catalog else backend_name(r)
    aliases = tuple(sorted({n for n in names if n != served}))
    name = backend_name(r)
    return dataclasses.replace(
        r,
        name=name,
        namespace=namespace,
        served_name=served,
        aliases=aliases,
        credentials=(
            SecretRef(name=credentials_secret_name(name), key=CREDENTIALS_KEY)
            if credentials
            else None
        ),
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


def build_credentials_secret(b: Resolved, creds: BackendCredentials) -> dict[str, Any]:
    """The mirror of one tenant Secret key, next to the backend (only that key)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": credentials_secret_name(b.name),
            "namespace": b.namespace,
            "labels": {**backend_labels(b), "app.kubernetes.io/component": "credentials"},
            "annotations": {
                ANNOTATION_CREDENTIALS_FROM: f"{creds.source}: Secret {creds.secret}, "
                f"key {creds.key}",
            },
        },
        "type": "Opaque",
        "data": {CREDENTIALS_KEY: creds.value},
    }
