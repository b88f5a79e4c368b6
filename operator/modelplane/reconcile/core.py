"""Decide, then act: from the observed world to a plan (children to apply, scale, status).

Everything here is pure. `Observed` is the world the adapters gathered; `plan()` turns it into a
`Plan`; `compute_status()` is the one function that produces a ModelDeployment's status, with an
injected clock. The adapters carry the plan out, skipping every write whose result is already
in place, so a resync with nothing changed makes no write request at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from modelplane.api.enums import CapacityProvider, FailureReason, Phase, PreloadMode, Tier
from modelplane.api.names import name_problem
from modelplane.api.usage import status_usage
from modelplane.api.v1alpha1 import API_VERSION, AcceleratorClassSpec, ModelDeployment
from modelplane.builders import serverless
from modelplane.builders.objects import (
    ANNOTATION_SPEC_HASH,
    BuildContext,
    build_deployment,
    build_pdb,
    build_service,
    endpoint_url,
    nodepool_name,
    owner_reference,
    selector_string,
)
from modelplane.builders.preload import (
    PreloadView,
    build_fill_job,
    build_shared_volume_claim,
    build_warm_pool,
)
from modelplane.builders.resolve import Resolved, ResolveError, resolve, resolve_fine_tuned


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
    children_hashes: dict[str, str | None]  # "Service", "PodDisruptionBudget" -> applied hash
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
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) to remove
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


def _hashed(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the content hash that lets a resync skip an unchanged object."""
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = content_hash(obj)
    return obj


def _stamp(obj: dict[str, Any], md: ModelDeployment) -> dict[str, Any]:
    """Owner reference + content hash (children a ModelDeployment owns)."""
    assert md.metadata.uid is not None
    obj["metadata"]["ownerReferences"] = [
        owner_reference("ModelDeployment", md.metadata.name, md.metadata.uid, API_VERSION)
    ]
    return _hashed(obj)


def desired_replicas(r: Resolved, current: int, exists: bool) -> tuple[int, str]:
    """Replica count without load metrics: pinned wins, else keep the current count in bounds."""
    if r.pinned_replicas is not None:
        return (
            r.pinned_replicas,
            f"pinned at {r.pinned_replicas} by spec.replicas.pinned (kubectl scale)",
        )
    start = current if exists else max(r.min_replicas, 1)
    want = min(max(start, r.min_replicas), r.max_replicas)
    if want != start:
        return want, f"kept within replicas [{r.min_replicas}, {r.max_replicas}]: {start} -> {want}"
    return want, f"holding {want} (bounds [{r.min_replicas}, {r.max_replicas}])"


def plan(obs: Observed) -> Plan:
    md = obs.md
    own_servers = True
    bad_name = name_problem(md.metadata.name)
    if bad_name is not None:  # stored before the CRD rejected such names
        return Plan(
            resolved=None,
            error=ResolveError(
                FailureReason.INVALID_NAME.value, f"{md.metadata.name!r}: {bad_name}"
            ),
        )
    try:
        if md.spec.tier == Tier.FINE_TUNED:
            r, own_servers = resolve_fine_tuned(md, obs.classes, obs.base)
        else:
            r = resolve(md, obs.classes)
    except ResolveError as e:
        return Plan(resolved=None, error=e, fine_tuned=md.spec.tier == Tier.FINE_TUNED)
    if obs.lora_demand and not r.lora:
        # FineTuned dependents load adapters into this object's servers at runtime.
        r = dataclasses.replace(r, lora=True, max_loras=max(8, obs.lora_demand), max_lora_rank=64)
    p = Plan(resolved=r, error=None, fine_tuned=md.spec.tier == Tier.FINE_TUNED)
    if not own_servers:
        p.has_servers = False
        p.desired_replicas = obs.deployment.replicas if obs.deployment.exists else 0
        p.decision = f"replicas follow the base {r.name}"
        return p
    if r.tier == Tier.SERVERLESS:
        return _plan_serverless(obs, r, p)
    dep = _stamp(build_deployment(r, obs.ctx), md)
    children = (
        ("Service", build_service(r, obs.ctx)),
        ("PodDisruptionBudget", build_pdb(r, obs.ctx)),
        ("WarmPool", build_warm_pool(r, r.warm_nodes, obs.ctx)),
    )
    volume: tuple[tuple[str, dict[str, Any]], ...] = ()
    if r.preload_mode == PreloadMode.SHARED_VOLUME:
        claim = build_shared_volume_claim(r, obs.ctx)
        # The filled volume outlives the ModelDeployment unless retainCache is false.
        claim = _hashed(claim) if r.retain_cache else _stamp(claim, md)
        volume = (("WeightsClaim", claim), ("FillJob", _stamp(build_fill_job(r, obs.ctx), md)))
    nodepool = None
    if obs.ctx.capacity_provider == CapacityProvider.KARPENTER:
        acc = obs.classes[r.accelerator_class]
        if acc.provisioning and acc.provisioning.karpenter:
            nodepool = nodepool_name(r.accelerator_class)
    # Nothing is written while any object at one of our names is someone else's.
    conflicts = [_where(dep)] if obs.deployment.exists and not obs.deployment.owned else []
    conflicts += [_where(o) for k, o in (*volume, *children) if o is not None and k in obs.foreign]
    if obs.preload is not None:
        conflicts += [("Job", r.namespace, j) for j in obs.preload.foreign_jobs]
    if nodepool is not None and f"NodePool/{nodepool}" in obs.foreign:
        conflicts.append(("NodePool", None, nodepool))
    if conflicts:
        p.error, p.resolved = child_conflict(conflicts), None
        return p
    if dep["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != obs.deployment.applied_hash:
        p.apply.append(dep)
    for kind, vol in volume:
        have = obs.children_hashes.get(kind)
        if kind == "FillJob":  # a Job's template is immutable: create once
            if have is None:
                p.apply.append(vol)
        elif vol["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != have:
            p.apply.append(vol)
    for kind, obj in children:
        have = obs.children_hashes.get(kind)
        if obj is None:
            if have is not None and kind not in obs.foreign:
                p.delete.append((kind, f"{r.name}-warm" if kind == "WarmPool" else r.name))
            continue
        obj = _stamp(obj, md)
        if obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != have:
            p.apply.append(obj)
    want, why = desired_replicas(r, obs.deployment.replicas, obs.deployment.exists)
    if obs.autoscaler is not None and r.pinned_replicas is None:
        why = obs.autoscaler.explanation
    p.desired_replicas, p.decision = want, why
    current = obs.deployment.replicas if obs.deployment.exists else 1  # apps/v1 default
    if want != current:
        p.scale_to = want
    p.nodepool = nodepool
    return p


def _where(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


def child_conflict(objects: list[tuple[str, str | None, str]]) -> ResolveError:
    """ChildConflict: objects at our children's names that someone else made, left untouched."""
    parts = []
    for kind, ns, name in objects:
        where = f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
        if name.startswith(("weights-", "fill-", "cache-")):
            fix = f"delete or rename that {kind} (its name derives from the model's URI)"
        elif name.startswith("sls-"):
            fix = f"delete or rename that {kind} (a shared Serverless backend's name)"
        elif kind == "NodePool":
            fix = f"delete or rename that {kind} (one per AcceleratorClass)"
        else:
            fix = f"rename the ModelDeployment, or delete or rename that {kind}"
        parts.append(f"{where} already exists and was not created by modelplane for it: {fix}")
    return ResolveError(
        FailureReason.CHILD_CONFLICT.value,
        "; ".join(parts) + ". modelplane leaves objects it did not create untouched",
    )


def _plan_serverless(obs: Observed, r: Resolved, p: Plan) -> Plan:
    """A tenant: the shared backend (owned by no tenant) and the tenant's own endpoint."""
    names = obs.tenant_names or (r.served_name, *r.aliases)
    creds = obs.backend_credentials
    b = serverless.backend(r, obs.ctx.operator_namespace, names, credentials=creds is not None)
    p.backend, p.credentials = b, creds
    dep = _hashed(serverless.label_backend(build_deployment(b, obs.ctx), b))
    children: list[tuple[str, dict[str, Any] | None]] = [
        # First, so the backend's pods find it: a Secret cannot be read across namespaces.
        (
            "CredentialsSecret",
            None if creds is None else serverless.build_credentials_secret(b, creds),
        ),
        ("Service", serverless.label_backend(build_service(b, obs.ctx), b)),
        ("PodDisruptionBudget", _labelled(build_pdb(b, obs.ctx), b)),
        ("TenantService", _stamp(serverless.build_tenant_service(r, b, obs.ctx), obs.md)),
    ]
    conflicts = [_where(dep)] if obs.deployment.exists and not obs.deployment.owned else []
    conflicts += [_where(o) for k, o in children if o is not None and k in obs.foreign]
    if conflicts:
        p.error, p.resolved = child_conflict(conflicts), None
        return p
    for kind, obj in children:
        have = obs.children_hashes.get(kind)
        if obj is None:
            continue  # a mirror no tenant asks for any more goes with the backend sweep
        if kind != "TenantService":
            obj = _hashed(obj)
        if obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != have:
            p.apply.append(obj)
    if dep["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != obs.deployment.applied_hash:
        p.apply.insert(1 if p.apply and p.apply[0]["kind"] == "Secret" else 0, dep)
    want, why = desired_replicas(b, obs.deployment.replicas, obs.deployment.exists)
    if obs.autoscaler is not None:  # the autoscaler scales the backend for all its tenants
        why = obs.autoscaler.explanation
    p.desired_replicas, p.decision = want, f"shared backend {b.name}: {why}"
    current = obs.deployment.replicas if obs.deployment.exists else 1
    if want != current:
        p.scale_to = want
    return p


def _labelled(obj: dict[str, Any] | None, b: Resolved) -> dict[str, Any] | None:
    return None if obj is None else serverless.label_backend(obj, b)


# --------------------------------------------------------------------------- status
def _condition(
    prev: dict[str, dict[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    gen: int,
    now: str,
) -> dict[str, Any]:
    old = prev.get(ctype)
    changed = old is None or old.get("status") != status
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),  # type: ignore[union-attr]
    }


def compute_status(obs: Observed, p: Plan) -> tuple[dict[str, Any], list[Event]]:
    """The whole status of a ModelDeployment, and the Events its transitions deserve."""
    md, now = obs.md, obs.now
    gen = md.metadata.generation or 0
    prev_conds = {c["type"]: c for c in obs.previous_status.get("conditions", []) if "type" in c}
    prev_phase = obs.previous_status.get("phase")

    def cond(t: str, s: str, reason: str, msg: str) -> dict[str, Any]:
        return _condition(prev_conds, t, s, reason, msg, gen, now)

    status: dict[str, Any] = {"observedGeneration": gen}
    if p.error is not None or p.resolved is None:
        e = p.error or ResolveError("Unknown", "could not resolve")
        status |= {
            "phase": Phase.FAILED.value,
            "replicas": obs.deployment.status_replicas,
            "readyReplicas": obs.deployment.ready_replicas,
            "desiredReplicas": 0,
            "ready": f"{obs.deployment.ready_replicas}/0",
            "model": _model_label(md),
            "conditions": [
                cond("Ready", "False", e.reason, e.message),
                cond(
                    "Progressing",
                    "False",
                    e.reason,
                    "fix the spec; nothing is rolled out meanwhile",
                ),
            ],
        }
        failed: list[Event] = (
            []
            if prev_phase == Phase.FAILED.value
            and prev_conds.get("Ready", {}).get("reason") == e.reason
            else [Event("Warning", e.reason, e.message)]
        )
        return status, failed

    r = p.resolved
    pods = [x for x in obs.pods if not x.terminating]
    pending_capacity = [x for x in pods if not x.scheduled and x.unschedulable_message]
    initializing = [x for x in pods if x.scheduled and not x.ready]
    ready = sum(1 for x in pods if x.ready)
    desired = p.desired_replicas
    dep = obs.deployment
    rolled_out = (
        dep.exists
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas >= desired
        and dep.status_replicas == dep.updated_replicas
        and not p.apply
    )
    min_ready = max(min(r.min_replicas, desired), 1) if desired > 0 else 0

    if desired == 0:
        phase, ready_cond = (
            Phase.SCALED_TO_ZERO,
            ("True", "ScaledToZero", "no replicas: scaled to zero"),
        )
    elif ready >= desired and rolled_out:
        phase, ready_cond = (
            Phase.READY,
            ("True", "AllReplicasReady", f"{ready}/{desired} replicas ready"),
        )
    elif ready >= min_ready:
        phase = (
            Phase.UPDATING
            if not rolled_out
            else Phase.DEGRADED
            if pending_capacity
            else Phase.UPDATING
        )
        ready_cond = ("True", "MinimumReplicasReady", f"{ready}/{desired} replicas ready")
    elif pending_capacity:
        phase = Phase.PROVISIONING
        ready_cond = (
            "False",
            "InsufficientCapacity",
            f"{ready}/{desired} ready; waiting for {r.accelerator_class} capacity",
        )
    elif initializing:
        phase, ready_cond = (
            Phase.LOADING,
            ("False", "Loading", f"{ready}/{desired} ready; {len(initializing)} loading weights"),
        )
    else:
        phase, ready_cond = (
            Phase.PENDING,
            ("False", "Pending", f"{ready}/{desired} ready; creating model servers"),
        )

    if pending_capacity:
        msg = pending_capacity[0].unschedulable_message or "no node with free GPUs"
        cap = cond(
            "CapacityAvailable",
            "False",
            "InsufficientCapacity",
            f"{len(pending_capacity)} replica(s) need {r.gpu_count} x {r.accelerator_class}: {msg}",
        )
    else:
        cap = cond(
            "CapacityAvailable",
            "True",
            "Scheduled",
            f"all replicas placed on {r.accelerator_class} nodes",
        )
    if ready > 0:
        weights = cond(
            "WeightsReady",
            "True",
            "Loaded",
            f"weights of {r.model_label} loaded on {ready} replica(s)",
        )
    elif desired == 0:
        weights = cond("WeightsReady", "Unknown", "ScaledToZero", "no replica running")
    else:
        weights = cond("WeightsReady", "False", "Loading", f"loading {r.model_label}")
    progressing = (
        cond("Progressing", "False", "Stable", "rollout complete")
        if rolled_out and ready >= desired
        else cond(
            "Progressing",
            "True",
            "RollingOut",
            f"{dep.updated_replicas}/{desired} replicas updated, {ready} ready",
        )
    )
    gpu_hourly = Decimal(r.accelerator.price_per_gpu_hour) * r.gpu_count * dep.status_replicas
    if p.backend is not None:
        gpu_hourly = Decimal(0)  # tenants of a shared backend pay per token, not per GPU-hour
    status |= {
        "phase": phase.value,
        "replicas": dep.status_replicas,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "ready": f"{ready}/{desired}",
        "selector": selector_string(p.backend or r),
        "model": r.model_label,
        "replicaStats": {
            "pendingCapacity": len(pending_capacity),
            "downloadingWeights": 0,
            "initializing": len(initializing),
            "ready": ready,
        },
        "endpoint": {
            "url": endpoint_url(r, obs.ctx),
            "model": r.served_name,
            "aliases": list(r.aliases),
        },
        "accelerator": {
            "class": r.accelerator_class,
            "count": r.gpu_count,
            **({"nodePool": p.nodepool} if p.nodepool else {}),
        },
        "cost": {"gpuHourly": f"{gpu_hourly:.2f}", "currency": "USD"},
        "autoscaler": {
            "desiredReplicas": desired,
            "lastDecision": p.decision,
            **(
                {"reason": obs.autoscaler.reason, "lastScaleTime": obs.autoscaler.time}
                if obs.autoscaler is not None and r.pinned_replicas is None
                else {}
            ),
            **(
                {"lastScaleTime": now}
                if p.scale_to is not None
                else (
                    {"lastScaleTime": obs.previous_status["autoscaler"]["lastScaleTime"]}
                    if obs.previous_status.get("autoscaler", {}).get("lastScaleTime")
                    else {}
                )
            ),
        },
        "conditions": [cond("Ready", *ready_cond), cap, weights, progressing],
    }
    if r.preload_mode != PreloadMode.NONE:
        pv = obs.preload or PreloadView()
        status["preload"] = {
            "mode": r.preload_mode.value,
            "cachedNodes": pv.cached_nodes,
            "classNodes": pv.class_nodes,
            "downloading": pv.downloading,
            "warmNodes": r.warm_nodes,
            **({"message": pv.message} if pv.message else {}),
        }
        if pv.cached_nodes and ready > 0:
            status["conditions"][2] = cond(
                "WeightsReady",
                "True",
                "Preloaded",
                f"weights cached on {pv.cached_nodes}/{pv.class_nodes} {r.accelerator_class} nodes",
            )
    if p.fine_tuned:
        _fine_tuned_status(status, obs, p, cond)
    if p.backend is not None:
        status["backend"] = f"{p.backend.namespace}/{p.backend.name}"
        status["usage"] = status_usage(
            obs.md.metadata.annotations, obs.previous_status.get("usage"), now
        )
    events: list[Event] = []
    if prev_phase != phase.value:
        warn = phase in (Phase.DEGRADED, Phase.FAILED) or ready_cond[1] == "InsufficientCapacity"
        events.append(
            Event(
                "Warning" if warn else "Normal",
                phase.value,
                f"{ready_cond[2]} ({r.sizing_explanation})"
                if phase == Phase.READY and prev_phase is None
                else ready_cond[2],
            )
        )
    if p.scale_to is not None:
        events.append(Event("Normal", "Scaled", f"replicas -> {p.scale_to}: {p.decision}"))
    return status, events


def _fine_tuned_status(status: dict[str, Any], obs: Observed, p: Plan, cond: Any) -> None:
    """Adapters decide readiness once the servers they load into are up."""
    md = obs.md
    r = p.resolved
    assert r is not None
    views = {a.name: a for a in (obs.adapters or ())}
    rows = []
    for a in md.spec.adapters:
        v = views.get(a.name)
        row: dict[str, Any] = {
            "name": a.name,
            "loadedReplicas": v.loaded_replicas if v else 0,
            "totalReplicas": v.total_replicas if v else 0,
        }
        if v is not None and v.reason:
            row |= {"reason": v.reason, "message": v.message or ""}
        rows.append(row)
    status["adapters"] = rows
    served = [f"{md.metadata.name}--{a.name}" for a in md.spec.adapters]
    if served:
        status["endpoint"] = {
            "url": endpoint_url(r, obs.ctx),
            "model": served[0],
            "aliases": served[1:],
        }
    if not p.has_servers:
        status["cost"] = {"gpuHourly": "0.00", "currency": "USD"}  # the base pays for its GPUs
    if status.get("phase") not in (Phase.READY.value, Phase.UPDATING.value):
        return
    failed = [x for x in rows if x.get("reason")]
    loaded = all(x["totalReplicas"] > 0 and x["loadedReplicas"] == x["totalReplicas"] for x in rows)
    conds = [c for c in status["conditions"] if c["type"] != "Ready"]
    if failed:
        status["phase"] = Phase.DEGRADED.value
        msg = f"adapter {failed[0]['name']}: {failed[0]['message']}"
        ready = cond("Ready", "False", "AdapterLoadFailed", msg)
    elif loaded:
        ready = cond(
            "Ready", "True", "AllAdaptersLoaded", f"{len(rows)} adapter(s) on every replica"
        )
    else:
        status["phase"] = Phase.LOADING.value
        ready = cond("Ready", "False", "AdaptersLoading", "loading adapters into the replicas")
    status["conditions"] = [ready, *conds]


def _model_label(md: ModelDeployment) -> str | None:
    m = md.spec.model
    if m is None:
        base = md.spec.base
        return (base.deployment or base.catalog) if base else None
    return m.catalog or m.uri


def status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing `new` would change anything (timestamps of unchanged conditions kept)."""
    return old != new


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` (keys no longer reported are removed)."""
    patch: dict[str, Any] = dict(new)
    for k in old:
        if k not in new:
            patch[k] = None
    return patch
