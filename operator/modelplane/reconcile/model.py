"""What the reconciler works on: the observed world (`Observed`) and the decision (`Plan`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from modelplane.api.v1alpha1 import API_VERSION, AcceleratorClassSpec, ModelDeployment
from modelplane.builders import serverless
from modelplane.builders.objects import ANNOTATION_SPEC_HASH, BuildContext, owner_reference
from modelplane.builders.preload import PreloadView
from modelplane.builders.resolve import Resolved, ResolveError
from modelplane.reconcile.children import ChildKind


@dataclass(frozen=True)
class PodView:
    """What status needs to know about one model-server pod."""

    name: str
    phase: str
    ready: bool
    scheduled: bool
    unschedulable_message: str | None = None
    node: str | None = None
    terminating: bool = False


@dataclass(frozen=True)
class ContainerView:
    """The fields of a model-server container that modelplane owns and a hand edit changes
    without touching the applied-hash annotation: image, command, args, literal env values."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # (name, value) of entries without valueFrom


def containers_of(obj: dict[str, Any]) -> tuple[ContainerView, ...]:
    """The `ContainerView`s of a Deployment as built (camelCase dict)."""
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return tuple(
        ContainerView(
            name=c["name"],
            image=c.get("image", ""),
            command=tuple(c.get("command") or ()),
            args=tuple(c.get("args") or ()),
            env=tuple(
                (e["name"], e.get("value") or "")
                for e in c.get("env") or ()
                if "valueFrom" not in e
            ),
        )
        for c in spec.get("containers") or ()
    )


@dataclass(frozen=True)
class DeploymentView:
    exists: bool
    replicas: int = 0  # spec.replicas
    status_replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    observed_generation: int = 0
    generation: int = 0
    applied_hash: str | None = None
    owned: bool = True  # carries our ownerReference (we never adopt a stranger's object)
    #: The live containers (None: not looked at); differing from the desired ones is drift.
    containers: tuple[ContainerView, ...] | None = None


@dataclass(frozen=True)
class AutoscalerView:
    """The latest decision of the autoscaler loop for one ModelDeployment (it scales via /scale;
    the reconciler only reports it, keeping status single-writer)."""

    desired_replicas: int
    explanation: str
    reason: str
    time: str  # RFC 3339


@dataclass(frozen=True)
class AdapterView:
    """Where one LoRA adapter of a FineTuned object is loaded (from the adapter loop)."""

    name: str
    served_name: str
    loaded_replicas: int
    total_replicas: int
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Observed:
    md: ModelDeployment
    classes: dict[str, AcceleratorClassSpec]
    deployment: DeploymentView
    children_hashes: dict[str, str | None]  # ChildKind -> applied hash (None: absent)
    pods: tuple[PodView, ...]
    previous_status: dict[str, Any]
    now: str  # RFC 3339, injected
    ctx: BuildContext = field(default_factory=BuildContext)
    autoscaler: AutoscalerView | None = None
    #: Serverless: every tenant's served name and aliases for this tenant's backend (the
    #: `deployment`, `children_hashes` and `pods` above are then the backend's).
    tenant_names: tuple[str, ...] = ()
    #: FineTuned on a base ModelDeployment: that base (None when missing).
    base: ModelDeployment | None = None
    #: FineTuned: the adapter loop's latest view of each adapter.
    adapters: tuple[AdapterView, ...] | None = None
    #: A base: adapters its FineTuned dependents want loaded at runtime (enables LoRA).
    lora_demand: int = 0
    #: NodeLocal preload: the preload loop's latest view (None: not looked at yet).
    preload: PreloadView | None = None
    #: Objects at the names of our children that this ModelDeployment did not create (keys as
    #: in `children_hashes`; NodePools as "NodePool/<name>"). Never written, never deleted.
    foreign: frozenset[str] = frozenset()
    #: Serverless: the tenant Secret key the backend downloads gated weights with (the oldest
    #: tenant's that could be read; None: no tenant of the backend gives credentials).
    backend_credentials: serverless.BackendCredentials | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    resolved: Resolved | None
    error: ResolveError | None
    apply: list[dict[str, Any]] = field(default_factory=list)  # changed children only
    delete: list[tuple[ChildKind, str]] = field(default_factory=list)  # (kind, name) to remove
    scale_to: int | None = None  # set Deployment replicas via /scale
    desired_replicas: int = 0
    decision: str = ""
    nodepool: str | None = None
    backend: Resolved | None = None  # Serverless: the shared backend this tenant uses
    fine_tuned: bool = False  # FineTuned: report adapters
    has_servers: bool = True  # False: FineTuned adapters on another object's servers
    #: Serverless: whose credentials the backend's mirrored Secret holds.
    credentials: serverless.BackendCredentials | None = None


def content_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]


def hashed(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the content hash that lets a resync skip an unchanged object."""
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = content_hash(obj)
    return obj


def owned_by(obj: dict[str, Any], md: ModelDeployment) -> dict[str, Any]:
    """Owner reference + content hash (children a ModelDeployment owns)."""
    assert md.metadata.uid is not None
    obj["metadata"]["ownerReferences"] = [
        owner_reference("ModelDeployment", md.metadata.name, md.metadata.uid, API_VERSION)
    ]
    return hashed(obj)
