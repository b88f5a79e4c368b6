"""A ModelDeployment's status from what was observed and planned, in small pure functions.

`compute_status` assembles: the phase and the Ready condition (`decide_phase`), the other
conditions (`capacity_condition`, `weights_condition`, `progressing_condition`), the cost
(`gpu_hourly_cost`), the autoscaler report, the tier's extras (preload, adapters, backend)
and the Events the transition deserves (`transition_events`). The clock is `Observed.now`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from modelplane.api.enums import Phase, PreloadMode
from modelplane.api.refs import BackendRef
from modelplane.api.usage import status_usage
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders.objects import endpoint_url, selector_string
from modelplane.builders.preload import PreloadView
from modelplane.builders.resolve import Resolved, ResolveError
from modelplane.reconcile.model import Event, Observed, Plan, PodView

#: A condition's (status, reason, message).
CondValue = tuple[str, str, str]


@dataclass(frozen=True)
class Conditions:
    """Builds `metav1.Condition`s, keeping the transition time of an unchanged status."""

    previous: dict[str, dict[str, Any]]
    generation: int
    now: str

    @classmethod
    def of(cls, obs: Observed) -> Conditions:
        prev = obs.previous_status.get("conditions", [])
        return cls(
            {c["type"]: c for c in prev if "type" in c},
            obs.md.metadata.generation or 0,
            obs.now,
        )

    def __call__(self, ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
        old = self.previous.get(ctype)
        changed = old is None or old.get("status") != status
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": self.generation,
            "lastTransitionTime": self.now if changed else old.get("lastTransitionTime", self.now),  # type: ignore[union-attr]
        }


@dataclass(frozen=True)
class Servers:
    """The model servers as status sees them."""

    desired: int
    ready: int
    pending_capacity: tuple[PodView, ...]  # unschedulable for want of capacity
    initializing: int  # scheduled, not Ready yet
    rolled_out: bool
    min_ready: int  # fewest Ready replicas that still serve


def servers_of(obs: Observed, planned: Plan, r: Resolved) -> Servers:
    pods = [x for x in obs.pods if not x.terminating]
    desired, dep = planned.desired_replicas, obs.deployment
    rolled_out = (
        dep.exists
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas >= desired
        and dep.status_replicas == dep.updated_replicas
        and not planned.apply
    )
    return Servers(
        desired=desired,
        ready=sum(1 for x in pods if x.ready),
        pending_capacity=tuple(x for x in pods if not x.scheduled and x.unschedulable_message),
        initializing=sum(1 for x in pods if x.scheduled and not x.ready),
        rolled_out=rolled_out,
        min_ready=max(min(r.min_replicas, desired), 1) if desired > 0 else 0,
    )


def decide_phase(f: Servers, accelerator_class: str) -> tuple[Phase, CondValue]:
    """The phase, and the Ready condition that explains it."""
    ready, desired = f.ready, f.desired
    if desired == 0:
        return Phase.SCALED_TO_ZERO, ("True", "ScaledToZero", "no replicas: scaled to zero")
    if ready >= desired and f.rolled_out:
        return Phase.READY, ("True", "AllReplicasReady", f"{ready}/{desired} replicas ready")
    if ready >= f.min_ready:
        phase = Phase.DEGRADED if f.rolled_out and f.pending_capacity else Phase.UPDATING
        return phase, ("True", "MinimumReplicasReady", f"{ready}/{desired} replicas ready")
    if f.pending_capacity:
        return Phase.PROVISIONING, (
            "False",
            "InsufficientCapacity",
            f"{ready}/{desired} ready; waiting for {accelerator_class} capacity",
        )
    if f.initializing:
        return Phase.LOADING, (
            "False",
            "Loading",
            f"{ready}/{desired} ready; {f.initializing} loading weights",
        )
    return Phase.PENDING, ("False", "Pending", f"{ready}/{desired} ready; creating model servers")


def capacity_condition(f: Servers, r: Resolved) -> CondValue:
    if f.pending_capacity:
        msg = f.pending_capacity[0].unschedulable_message or "no node with free GPUs"
        return (
            "False",
            "InsufficientCapacity",
            f"{len(f.pending_capacity)} replica(s) need {r.gpu_count} x {r.accelerator_class}: "
            f"{msg}",
        )
    return "True", "Scheduled", f"all replicas placed on {r.accelerator_class} nodes"


def weights_condition(f: Servers, r: Resolved, preload: PreloadView | None) -> CondValue:
    """WeightsReady; with a preload mode, cached weights on Ready replicas say Preloaded."""
    if f.ready > 0 and r.preload_mode != PreloadMode.NONE:
        pv = preload or PreloadView()
        if pv.cached_nodes:
            return (
                "True",
                "Preloaded",
                f"weights cached on {pv.cached_nodes}/{pv.class_nodes} {r.accelerator_class} nodes",
            )
    if f.ready > 0:
        return "True", "Loaded", f"weights of {r.model_label} loaded on {f.ready} replica(s)"
    if f.desired == 0:
        return "Unknown", "ScaledToZero", "no replica running"
    return "False", "Loading", f"loading {r.model_label}"


def progressing_condition(f: Servers, updated_replicas: int) -> CondValue:
    if f.rolled_out and f.ready >= f.desired:
        return "False", "Stable", "rollout complete"
    return (
        "True",
        "RollingOut",
        f"{updated_replicas}/{f.desired} replicas updated, {f.ready} ready",
    )


def gpu_hourly_cost(r: Resolved, replicas: int, *, shared_backend: bool) -> Decimal:
    """USD per hour of the GPUs under `replicas` running replicas; tenants of a shared backend
    pay per token, not per GPU-hour."""
    if shared_backend:
        return Decimal(0)
    return Decimal(r.accelerator.price_per_gpu_hour) * r.gpu_count * replicas


def autoscaler_status(obs: Observed, planned: Plan, r: Resolved) -> dict[str, Any]:
    out: dict[str, Any] = {
        "desiredReplicas": planned.desired_replicas,
        "lastDecision": planned.decision,
    }
    if obs.autoscaler is not None and r.pinned_replicas is None:
        out |= {"reason": obs.autoscaler.reason, "lastScaleTime": obs.autoscaler.time}
    if planned.scale_to is not None:
        out["lastScaleTime"] = obs.now
    elif obs.previous_status.get("autoscaler", {}).get("lastScaleTime"):
        out["lastScaleTime"] = obs.previous_status["autoscaler"]["lastScaleTime"]
    return out


def preload_status(r: Resolved, preload: PreloadView | None) -> dict[str, Any]:
    pv = preload or PreloadView()
    return {
        "mode": r.preload_mode.value,
        "cachedNodes": pv.cached_nodes,
        "classNodes": pv.class_nodes,
        "downloading": pv.downloading,
        "warmNodes": r.warm_nodes,
        **({"message": pv.message} if pv.message else {}),
    }


def transition_events(
    prev_phase: str | None, phase: Phase, ready: CondValue, planned: Plan, r: Resolved
) -> list[Event]:
    """An Event on a phase change (Warning when it is bad news), one per scale request."""
    events: list[Event] = []
    if prev_phase != phase.value:
        warn = phase in (Phase.DEGRADED, Phase.FAILED) or ready[1] == "InsufficientCapacity"
        first_ready = phase == Phase.READY and prev_phase is None
        events.append(
            Event(
                "Warning" if warn else "Normal",
                phase.value,
                f"{ready[2]} ({r.sizing_explanation})" if first_ready else ready[2],
            )
        )
    if planned.scale_to is not None:
        events.append(
            Event("Normal", "Scaled", f"replicas -> {planned.scale_to}: {planned.decision}")
        )
    return events


def failed_status(
    obs: Observed, e: ResolveError, cond: Conditions
) -> tuple[dict[str, Any], list[Event]]:
    """Status of a spec that cannot be served; one Warning per new reason."""
    dep = obs.deployment
    status = {
        "observedGeneration": cond.generation,
        "phase": Phase.FAILED.value,
        "replicas": dep.status_replicas,
        "readyReplicas": dep.ready_replicas,
        "desiredReplicas": 0,
        "ready": f"{dep.ready_replicas}/0",
        "model": _model_label(obs.md),
        "conditions": [
            cond("Ready", "False", e.reason, e.message),
            cond("Progressing", "False", e.reason, "fix the spec; nothing is rolled out meanwhile"),
        ],
    }
    repeated = (
        obs.previous_status.get("phase") == Phase.FAILED.value
        and cond.previous.get("Ready", {}).get("reason") == e.reason
    )
    return status, [] if repeated else [Event("Warning", e.reason, e.message)]


def compute_status(obs: Observed, planned: Plan) -> tuple[dict[str, Any], list[Event]]:
    """The whole status of a ModelDeployment, and the Events its transitions deserve."""
    cond = Conditions.of(obs)
    if planned.error is not None or planned.resolved is None:
        return failed_status(
            obs, planned.error or ResolveError("Unknown", "could not resolve"), cond
        )
    r = planned.resolved
    f = servers_of(obs, planned, r)
    dep = obs.deployment
    phase, ready = decide_phase(f, r.accelerator_class)
    shared = planned.backend is not None
    cost = gpu_hourly_cost(r, dep.status_replicas, shared_backend=shared)
    status: dict[str, Any] = {
        "observedGeneration": cond.generation,
        "phase": phase.value,
        "replicas": dep.status_replicas,
        "readyReplicas": f.ready,
        "desiredReplicas": f.desired,
        "ready": f"{f.ready}/{f.desired}",
        "selector": selector_string(planned.backend or r),
        "model": r.model_label,
        "replicaStats": {
            "pendingCapacity": len(f.pending_capacity),
            "downloadingWeights": 0,
            "initializing": f.initializing,
            "ready": f.ready,
        },
        "endpoint": {
            "url": endpoint_url(r, obs.ctx),
            "model": r.served_name,
            "aliases": list(r.aliases),
        },
        "accelerator": {
            "class": r.accelerator_class,
            "count": r.gpu_count,
            **({"nodePool": planned.nodepool} if planned.nodepool else {}),
        },
        "cost": {"gpuHourly": f"{cost:.2f}", "currency": "USD"},
        "autoscaler": autoscaler_status(obs, planned, r),
        "conditions": [
            cond("Ready", *ready),
            cond("CapacityAvailable", *capacity_condition(f, r)),
            cond("WeightsReady", *weights_condition(f, r, obs.preload)),
            cond("Progressing", *progressing_condition(f, dep.updated_replicas)),
        ],
    }
    if r.preload_mode != PreloadMode.NONE:
        status["preload"] = preload_status(r, obs.preload)
    if planned.fine_tuned:
        fine_tuned_status(status, obs, planned, cond)
    if planned.backend is not None:
        status["backend"] = str(BackendRef(planned.backend.namespace, planned.backend.name))
        status["usage"] = status_usage(
            obs.md.metadata.annotations, obs.previous_status.get("usage"), obs.now
        )
    prev_phase = obs.previous_status.get("phase")
    return status, transition_events(prev_phase, phase, ready, planned, r)


def fine_tuned_status(
    status: dict[str, Any],
    obs: Observed,
    planned: Plan,
    cond: Callable[[str, str, str, str], dict[str, Any]],
) -> None:
    """Adapters decide readiness once the servers they load into are up."""
    md = obs.md
    r = planned.resolved
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
    if not planned.has_servers:
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
