"""The reconcile core's small parts, each on its own: the child diff, the planners per tier and
the status functions (phase, conditions, cost, events)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from modelplane.api.enums import Phase
from modelplane.builders.resolve import resolve
from modelplane.commands import default_classes
from modelplane.reconcile.children import Child, ChildKind, diff_children
from modelplane.reconcile.core import DeploymentView, Plan, PodView
from modelplane.reconcile.planning import plan_on_demand, plan_serverless, replica_decision
from modelplane.reconcile.status import (
    Conditions,
    Servers,
    capacity_condition,
    decide_phase,
    gpu_hourly_cost,
    progressing_condition,
    transition_events,
    weights_condition,
)
from tests.unit.test_reconcile import NOW, md, observe, serverless_md


def _obj(kind: str, name: str, hash_: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name, "annotations": {"modelplane.io/applied-hash": hash_}},
    }


# --------------------------------------------------------------------------- the child diff
def test_diff_applies_changed_and_new_children_in_order_and_skips_unchanged() -> None:
    children = [
        Child(ChildKind.DEPLOYMENT, "m", _obj("Deployment", "m", "h1")),
        Child(ChildKind.SERVICE, "m", _obj("Service", "m", "h2")),
        Child(ChildKind.POD_DISRUPTION_BUDGET, "m", _obj("PodDisruptionBudget", "m", "h3")),
    ]
    diff = diff_children(children, {"Deployment": "old", "Service": "h2"}, frozenset())
    assert [o["kind"] for o in diff.apply] == ["Deployment", "PodDisruptionBudget"]
    assert diff.delete == []


def test_diff_removes_unwanted_children_but_never_a_strangers_or_a_kept_one() -> None:
    children = [
        Child(ChildKind.SERVICE, "m", None),
        Child(ChildKind.WARM_POOL, "m-warm", None),
        Child(ChildKind.POD_DISRUPTION_BUDGET, "m", None, remove_unwanted=False),
        Child(ChildKind.CREDENTIALS_SECRET, "s", None),  # absent: nothing to remove
    ]
    have = {"Service": "h", "WarmPool": "h", "PodDisruptionBudget": "h"}
    diff = diff_children(children, have, frozenset({"WarmPool"}))
    assert diff.apply == [] and diff.delete == [(ChildKind.SERVICE, "m")]


def test_diff_creates_an_immutable_child_once() -> None:
    job = [Child(ChildKind.FILL_JOB, "fill-x", _obj("Job", "fill-x", "new"), immutable=True)]
    assert diff_children(job, {}, frozenset()).apply == [job[0].obj]
    assert diff_children(job, {"FillJob": "old"}, frozenset()).apply == []


def test_every_child_kind_names_its_resource() -> None:
    assert {k: k.resource for k in ChildKind}[ChildKind.WARM_POOL] == ("apps/v1", "Deployment")
    assert ChildKind.NODE_POOL.resource == ("karpenter.sh/v1", "NodePool")
    assert all(len(k.resource) == 2 for k in ChildKind)


# --------------------------------------------------------------------------- planners
def test_replica_decision_reports_a_scale_only_when_the_count_changes() -> None:
    m = md(replicas={"min": 2, "max": 3})
    r = resolve(m, default_classes())
    at_one = observe(m, DeploymentView(exists=True, replicas=1))
    assert replica_decision(at_one, r)[0::2] == (2, 2)
    at_two = observe(m, DeploymentView(exists=True, replicas=2))
    assert replica_decision(at_two, r)[0::2] == (2, None)


def test_on_demand_planner_owns_its_children() -> None:
    m = md()
    obs = observe(m, DeploymentView(exists=False))
    p = plan_on_demand(obs, resolve(m, default_classes()))
    assert [o["kind"] for o in p.apply] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in p.apply)


def test_serverless_planner_writes_the_backend_unowned_and_the_tenant_service_owned() -> None:
    m = serverless_md()
    obs = observe(m, DeploymentView(exists=False))
    p = plan_serverless(obs, resolve(m, default_classes()))
    assert p.backend is not None and p.decision.startswith(f"shared backend {p.backend.name}:")
    kinds = [(o["kind"], "ownerReferences" in o["metadata"]) for o in p.apply]
    assert kinds[0] == ("Deployment", False)
    assert ("Service", True) in kinds and ("Service", False) in kinds


# --------------------------------------------------------------------------- status parts
def _servers(**kw: Any) -> Servers:
    base: dict[str, Any] = {
        "desired": 2,
        "ready": 0,
        "pending_capacity": (),
        "initializing": 0,
        "rolled_out": False,
        "min_ready": 1,
    }
    return Servers(**(base | kw))


UNSCHEDULABLE = PodView("p", "Pending", ready=False, scheduled=False, unschedulable_message="x")


@pytest.mark.parametrize(
    ("kw", "phase", "reason"),
    [
        ({"desired": 0, "min_ready": 0}, Phase.SCALED_TO_ZERO, "ScaledToZero"),
        ({"ready": 2, "rolled_out": True}, Phase.READY, "AllReplicasReady"),
        ({"ready": 1}, Phase.UPDATING, "MinimumReplicasReady"),
        (
            {"ready": 1, "rolled_out": True, "pending_capacity": (UNSCHEDULABLE,)},
            Phase.DEGRADED,
            "MinimumReplicasReady",
        ),
        ({"pending_capacity": (UNSCHEDULABLE,)}, Phase.PROVISIONING, "InsufficientCapacity"),
        ({"initializing": 2}, Phase.LOADING, "Loading"),
        ({}, Phase.PENDING, "Pending"),
    ],
)
def test_decide_phase(kw: dict[str, Any], phase: Phase, reason: str) -> None:
    got, ready = decide_phase(_servers(**kw), "a100")
    assert (got, ready[1]) == (phase, reason)


def test_capacity_weights_and_progressing_conditions() -> None:
    r = resolve(md(), default_classes())
    short = _servers(pending_capacity=(UNSCHEDULABLE,))
    assert capacity_condition(short, r)[:2] == ("False", "InsufficientCapacity")
    assert capacity_condition(_servers(), r)[:2] == ("True", "Scheduled")
    assert weights_condition(_servers(ready=1), r, None)[1] == "Loaded"
    assert weights_condition(_servers(desired=0), r, None)[:2] == ("Unknown", "ScaledToZero")
    assert weights_condition(_servers(), r, None)[:2] == ("False", "Loading")
    done = _servers(ready=2, rolled_out=True)
    assert progressing_condition(done, 2)[1] == "Stable"
    assert progressing_condition(_servers(ready=2), 1) == (
        "True",
        "RollingOut",
        "1/2 replicas updated, 2 ready",
    )


def test_conditions_keep_the_transition_time_of_an_unchanged_status() -> None:
    prev = {"Ready": {"type": "Ready", "status": "True", "lastTransitionTime": "t0"}}
    cond = Conditions(prev, 3, NOW)
    assert cond("Ready", "True", "R", "m")["lastTransitionTime"] == "t0"
    assert cond("Ready", "False", "R", "m")["lastTransitionTime"] == NOW
    assert cond("Other", "True", "R", "m")["observedGeneration"] == 3


def test_gpu_hourly_cost_counts_running_replicas_and_nothing_for_shared_backends() -> None:
    r = resolve(md(), default_classes())
    per_replica = Decimal(r.accelerator.price_per_gpu_hour) * r.gpu_count
    assert per_replica > 0
    assert gpu_hourly_cost(r, 3, shared_backend=False) == 3 * per_replica
    assert gpu_hourly_cost(r, 3, shared_backend=True) == 0


def test_transition_events() -> None:
    r = resolve(md(), default_classes())
    ready = ("True", "AllReplicasReady", "2/2 replicas ready")
    quiet = Plan(resolved=r, error=None)
    first = transition_events(None, Phase.READY, ready, quiet, r)
    assert [(e.type, e.reason) for e in first] == [("Normal", "Ready")]
    assert r.sizing_explanation in first[0].message
    assert transition_events("Ready", Phase.READY, ready, quiet, r) == []
    short = ("False", "InsufficientCapacity", "0/2 ready")
    assert transition_events("Pending", Phase.PROVISIONING, short, quiet, r)[0].type == "Warning"
    scaled = Plan(resolved=r, error=None, scale_to=3, decision="why")
    assert [e.reason for e in transition_events("Ready", Phase.READY, ready, scaled, r)] == [
        "Scaled"
    ]
