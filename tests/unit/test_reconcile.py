"""The pure reconcile core: plan decisions and the one status function (injected clock)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.commands import default_classes
from modelplane.reconcile.core import (
    DeploymentView,
    Observed,
    PodView,
    compute_status,
    plan,
    status_changed,
    status_patch,
)
from modelplane_testbed import factories

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def md(**spec: Any) -> ModelDeployment:
    base = factories.spec(replicas={"min": 1, "max": 3}) | spec
    return factories.model_deployment("m", "ns", base, generation=2)


def observe(
    m: ModelDeployment,
    dep: DeploymentView,
    pods: tuple[PodView, ...] = (),
    prev: dict[str, Any] | None = None,
    now: str = NOW,
) -> Observed:
    return Observed(
        m,
        default_classes(),
        dep,
        {"Service": None, "PodDisruptionBudget": None},
        pods,
        prev or {},
        now,
    )


def ready_pod(i: int) -> PodView:
    return PodView(f"p{i}", "Running", ready=True, scheduled=True, node="n")


def test_new_deployment_creates_children_and_reports_pending() -> None:
    obs = observe(md(), DeploymentView(exists=False))
    p = plan(obs)
    assert [o["kind"] for o in p.apply] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert p.scale_to is None  # the apps/v1 default of 1 is already within [1, 3]
    status, events = compute_status(obs, p)
    assert status["phase"] == "Pending" and status["observedGeneration"] == 2
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "CapacityAvailable",
        "WeightsReady",
        "Progressing",
    }
    assert events and events[0].reason == "Pending"


def test_unchanged_children_are_not_reapplied() -> None:
    first = plan(observe(md(), DeploymentView(exists=False)))
    hashes = {
        o["kind"]: o["metadata"]["annotations"]["modelplane.io/applied-hash"] for o in first.apply
    }
    dep = DeploymentView(exists=True, replicas=1, applied_hash=hashes["Deployment"])
    obs = Observed(
        md(),
        default_classes(),
        dep,
        {"Service": hashes["Service"], "PodDisruptionBudget": hashes["PodDisruptionBudget"]},
        (),
        {},
        NOW,
    )
    assert plan(obs).apply == []


def test_spec_change_changes_the_deployment_hash() -> None:
    a = plan(observe(md(), DeploymentView(exists=False))).apply[0]
    b = plan(observe(md(engine={"maxContextLength": 16384}), DeploymentView(exists=False))).apply[0]
    key = "modelplane.io/applied-hash"
    assert a["metadata"]["annotations"][key] != b["metadata"]["annotations"][key]


def test_ready_when_all_replicas_ready_and_rolled_out() -> None:
    dep = DeploymentView(
        exists=True,
        replicas=2,
        status_replicas=2,
        ready_replicas=2,
        updated_replicas=2,
        observed_generation=1,
        generation=1,
        applied_hash="x",
    )
    obs = observe(md(), dep, (ready_pod(1), ready_pod(2)))
    p = plan(obs)
    p.apply = []
    status, _ = compute_status(obs, p)
    assert status["phase"] == "Ready" and status["ready"] == "2/2"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "AllReplicasReady"
    assert status["cost"]["gpuHourly"] != "0.00"


def test_unschedulable_pods_mean_insufficient_capacity() -> None:
    pending = PodView(
        "p",
        "Pending",
        ready=False,
        scheduled=False,
        unschedulable_message="0/16 nodes are available: 16 Insufficient nvidia.com/gpu.",
    )
    obs = observe(md(), DeploymentView(exists=True, replicas=1, status_replicas=1), (pending,))
    status, events = compute_status(obs, plan(obs))
    cap = next(c for c in status["conditions"] if c["type"] == "CapacityAvailable")
    assert cap["status"] == "False" and cap["reason"] == "InsufficientCapacity"
    assert "Insufficient nvidia.com/gpu" in cap["message"]
    assert status["phase"] == "Provisioning" and status["replicaStats"]["pendingCapacity"] == 1
    assert events[0].type == "Warning"


def test_transition_time_kept_when_condition_status_unchanged() -> None:
    obs = observe(md(), DeploymentView(exists=False))
    s1, _ = compute_status(obs, plan(obs))
    obs2 = observe(md(), DeploymentView(exists=False), prev=s1, now=LATER)
    s2, events = compute_status(obs2, plan(obs2))
    assert s1 == s2 and not status_changed(s1, s2)
    assert events == []  # no transition, no event


def test_bounds_and_pinning_drive_scale() -> None:
    dep = DeploymentView(exists=True, replicas=5, applied_hash="x")
    assert plan(observe(md(), dep)).scale_to == 3
    pinned = plan(observe(md(replicas={"min": 1, "max": 4, "pinned": 2}), dep))
    assert pinned.scale_to == 2 and "pinned" in pinned.decision


def test_max_zero_scales_to_zero() -> None:
    obs = observe(
        md(replicas={"min": 0, "max": 0}), DeploymentView(exists=True, replicas=1, applied_hash="x")
    )
    p = plan(obs)
    assert p.scale_to == 0
    status, _ = compute_status(obs, p)
    assert status["phase"] == "ScaledToZero"


def test_unresolvable_spec_fails_with_reason_and_makes_no_children() -> None:
    obs = observe(md(accelerator={"class": "nvidia-b300"}), DeploymentView(exists=False))
    p = plan(obs)
    assert p.apply == [] and p.error is not None and p.error.reason == "NoAcceleratorClass"
    status, events = compute_status(obs, p)
    assert status["phase"] == "Failed"
    assert events[0].type == "Warning" and "nvidia-b300" in events[0].message


def test_model_too_large_for_explicit_choice() -> None:
    obs = observe(
        md(
            model={"catalog": "llama-v3p1-405b-instruct"},
            accelerator={"class": "nvidia-a10g-24gb", "count": 1},
        ),
        DeploymentView(exists=False),
    )
    p = plan(obs)
    assert p.error is not None and p.error.reason in ("ModelTooLarge", "PrecisionUnsupported")


def test_status_patch_removes_keys_no_longer_reported() -> None:
    assert status_patch({"endpoint": {"url": "x"}, "phase": "Ready"}, {"phase": "Failed"}) == {
        "phase": "Failed",
        "endpoint": None,
    }


def serverless_md(name: str = "t", ns: str = "a", **engine: Any) -> ModelDeployment:
    spec = factories.spec(
        tier="Serverless",
        model={"catalog": "llama-v3p1-8b-instruct", "servedName": f"{name}-llama"},
        engine={"maxContextLength": 8192, **engine},
    )
    return factories.model_deployment(name, ns, spec, uid=f"u-{name}")


def test_serverless_tenants_of_one_shape_share_a_backend_in_the_operator_namespace() -> None:
    from modelplane.builders.objects import BuildContext

    ctx = BuildContext(operator_namespace="mp-system")
    plans = []
    for m in (serverless_md("t1", "a"), serverless_md("t2", "b")):
        obs = Observed(
            m,
            default_classes(),
            DeploymentView(exists=False),
            {},
            (),
            {},
            NOW,
            ctx,
            tenant_names=("t1-llama", "t2-llama"),
        )
        plans.append(plan(obs))
    b1, b2 = (p.backend for p in plans)
    assert b1 is not None and b2 is not None and b1.name == b2.name
    dep = next(o for o in plans[0].apply if o["kind"] == "Deployment")
    assert dep["metadata"]["namespace"] == "mp-system" and "ownerReferences" not in dep["metadata"]
    assert dep["metadata"]["labels"]["modelplane.io/backend"] == b1.name
    tenant_svc = next(
        o for o in plans[0].apply if o["kind"] == "Service" and o["spec"]["type"] == "ExternalName"
    )
    assert (
        tenant_svc["metadata"]["namespace"] == "a"
        and tenant_svc["metadata"]["ownerReferences"][0]["name"] == "t1"
    )
    other = plan(
        Observed(
            serverless_md("t3", "c", maxContextLength=4096),
            default_classes(),
            DeploymentView(exists=False),
            {},
            (),
            {},
            NOW,
            ctx,
        )
    )
    assert other.backend is not None and other.backend.name != b1.name  # another serving shape


def test_serverless_needs_a_catalog_model() -> None:
    m = ModelDeployment.model_validate(
        {
            "metadata": {"name": "x", "namespace": "a", "uid": "u", "generation": 1},
            "spec": {"tier": "Serverless", "model": {"uri": "hf://org/custom"}},
        }
    )
    p = plan(observe(m, DeploymentView(exists=False)))
    assert p.error is not None and p.error.reason == "CatalogModelRequired"


# --------------------------------------------------------------------------- child conflicts
def _conflict_obs(m: ModelDeployment, foreign: frozenset[str], **kw: Any) -> Observed:
    return Observed(
        m, default_classes(), DeploymentView(exists=False), {}, (), {}, NOW, foreign=foreign, **kw
    )


def _assert_conflict(obs: Observed, kind: str, name: str) -> None:
    p = plan(obs)
    assert p.apply == [] and p.delete == [] and p.scale_to is None, "a stranger's object touched"
    assert p.error is not None and p.error.reason == "ChildConflict"
    assert f"{kind} {name}" in p.error.message or f"{kind} " in p.error.message
    assert name in p.error.message and kind in p.error.message
    assert "rename" in p.error.message and "delete" in p.error.message
    status, events = compute_status(obs, p)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ChildConflict"
    assert status["phase"] == "Failed" and events[0].reason == "ChildConflict"


FOREIGN_CASES = [
    ("Service", {}, "Service", "ns/m"),
    ("PodDisruptionBudget", {}, "PodDisruptionBudget", "ns/m"),
    ("WarmPool", {"preload": {"mode": "NodeLocal", "warmNodes": 1}}, "Deployment", "ns/m-warm"),
    ("WeightsClaim", {"preload": {"mode": "SharedVolume"}}, "PersistentVolumeClaim", "weights-"),
    ("FillJob", {"preload": {"mode": "SharedVolume"}}, "Job", "ns/fill-"),
]


@pytest.mark.parametrize(
    ("key", "spec", "kind", "name"), FOREIGN_CASES, ids=[c[0] for c in FOREIGN_CASES]
)
def test_a_child_the_operator_did_not_create_is_a_conflict_and_left_alone(
    key: str, spec: dict[str, Any], kind: str, name: str
) -> None:
    _assert_conflict(_conflict_obs(md(**spec), frozenset({key})), kind, name)


def test_a_strangers_deployment_is_a_conflict_naming_it() -> None:
    obs = observe(md(), DeploymentView(exists=True, replicas=4, owned=False))
    _assert_conflict(obs, "Deployment", "ns/m")


def test_a_strangers_object_we_no_longer_want_is_not_deleted() -> None:
    # max 1 -> no PDB wanted; a PDB of the same name that is not ours stays, without a conflict.
    obs = Observed(
        md(replicas={"min": 1, "max": 1}),
        default_classes(),
        DeploymentView(exists=False),
        {"PodDisruptionBudget": None},
        (),
        {},
        NOW,
        foreign=frozenset({"PodDisruptionBudget", "WarmPool"}),
    )
    p = plan(obs)
    assert p.error is None and p.delete == []
    assert "PodDisruptionBudget" not in [o["kind"] for o in p.apply]


def test_a_strangers_cache_job_is_a_conflict() -> None:
    from modelplane.builders.preload import PreloadView

    m = md(preload={"mode": "NodeLocal"})
    obs = _conflict_obs(
        m, frozenset(), preload=PreloadView(0, 2, 0, None, foreign_jobs=("cache-abc-123",))
    )
    _assert_conflict(obs, "Job", "ns/cache-abc-123")


@pytest.mark.parametrize("key", ["Service", "PodDisruptionBudget", "TenantService"])
def test_serverless_children_of_strangers_are_conflicts(key: str) -> None:
    from modelplane.builders.objects import BuildContext

    obs = Observed(
        serverless_md("t1", "a"),
        default_classes(),
        DeploymentView(exists=False),
        {},
        (),
        {},
        NOW,
        BuildContext(operator_namespace="mp-system"),
        foreign=frozenset({key}),
    )
    p = plan(obs)
    assert p.apply == [] and p.error is not None and p.error.reason == "ChildConflict"
    where = "a/t1" if key == "TenantService" else "mp-system/sls-"
    assert where in p.error.message and "delete" in p.error.message


def test_a_strangers_nodepool_is_a_conflict() -> None:
    from modelplane.api.enums import CapacityProvider
    from modelplane.api.v1alpha1 import AcceleratorClassSpec
    from modelplane.builders.objects import BuildContext

    classes = {
        n: AcceleratorClassSpec.model_validate(
            {
                **c.model_dump(by_alias=True, exclude_none=True),
                "provisioning": {
                    "karpenter": {
                        "nodeClassRef": {
                            "group": "karpenter.k8s.aws",
                            "kind": "EC2NodeClass",
                            "name": "gpu",
                        }
                    }
                },
            }
        )
        for n, c in default_classes().items()
    }
    m = md(accelerator={"class": "nvidia-l4-24gb", "count": 1})
    ctx = BuildContext(capacity_provider=CapacityProvider.KARPENTER)
    obs = Observed(
        m,
        classes,
        DeploymentView(exists=False),
        {},
        (),
        {},
        NOW,
        ctx,
        foreign=frozenset({"NodePool/modelplane-nvidia-l4-24gb"}),
    )
    _assert_conflict(obs, "NodePool", "modelplane-nvidia-l4-24gb")
    ok = plan(dataclasses.replace(obs, foreign=frozenset()))
    assert ok.error is None and ok.nodepool == "modelplane-nvidia-l4-24gb"


# --------------------------------------------------------------------------- drift (issue #15)
def test_a_hand_edited_deployment_is_applied_again_though_its_hash_matches() -> None:
    from modelplane.reconcile.core import plan
    from modelplane.reconcile.model import containers_of

    m = md()
    first = plan(observe(m, DeploymentView(exists=False)))
    dep = next(o for o in first.apply if o["kind"] == "Deployment")
    applied = dep["metadata"]["annotations"]["modelplane.io/applied-hash"]
    mine = containers_of(dep)
    edited = (dataclasses.replace(mine[0], image="x:1"), *mine[1:])

    def kinds(containers: Any) -> list[str]:
        view = DeploymentView(exists=True, replicas=1, applied_hash=applied, containers=containers)
        obs = dataclasses.replace(
            observe(m, view),
            children_hashes={
                o["kind"]: o["metadata"]["annotations"]["modelplane.io/applied-hash"]
                for o in first.apply
            },
        )
        return [o["kind"] for o in plan(obs).apply]

    assert kinds(mine) == [] and kinds(None) == []
    assert kinds(edited) == ["Deployment"]
