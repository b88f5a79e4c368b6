"""Chaos: the operator and the control plane killed, frozen and restarted under load.

After each scenario every ModelDeployment converges (Ready at its generation) with exactly its
own children: one Deployment and one Service each (owned by it), one live pod per replica, no
duplicate and no orphan. Each test bounds its own run time with the timeouts of its waits.

Leader election is checked from the apiserver's audit log: both replicas run with the chart's
ServiceAccount, and each tells its requests apart by its User-Agent (``modelplane/<identity>``
for the reconciler's client, ``modelplane-lease/<identity>`` for the Lease).
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed.harness import MUTATING, OperatorProcess, audit_events
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import ChartRelease
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "modelplane.io", "v1alpha1", "modeldeployments"
#: The chart's defaults (values.yaml leaderElection).
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0


def _md(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "tier": "OnDemand",
            "model": {"catalog": "nomic-embed-text-v1p5"},
            "replicas": {"min": 1, "max": 1},
        },
    }


def apply(cluster: LocalCluster, ns: str, names: list[str]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([_md(ns, n) for n in names]))


def converged(api: Any, ns: str, names: list[str]) -> bool:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)[
        "items"
    ]
    done = {
        o["metadata"]["name"]
        for o in items
        if (o.get("status") or {}).get("phase") == "Ready"
        and o["status"].get("observedGeneration") == o["metadata"]["generation"]
    }
    return done >= set(names)


def assert_exact_children(api: Any, ns: str, names: list[str]) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    uids = {
        o["metadata"]["name"]: o["metadata"]["uid"]
        for o in client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL
        )["items"]
    }
    deps = apps.list_namespaced_deployment(ns).items
    assert sorted(d.metadata.name for d in deps) == sorted(names)
    assert sorted(s.metadata.name for s in core.list_namespaced_service(ns).items) == sorted(names)
    for d in deps:
        (owner,) = d.metadata.owner_references
        assert owner.uid == uids[d.metadata.name], d.metadata.name
        pods = core.list_namespaced_pod(
            ns, label_selector=f"modelplane.io/deployment={d.metadata.name}"
        ).items
        assert len([p for p in pods if p.metadata.deletion_timestamp is None]) == 1
    assert not client.BatchV1Api(api).list_namespaced_job(ns).items


def ready_pods(api: Any, ns: str) -> dict[str, str]:
    """name -> uid of the model-server pods that are Ready."""
    out = {}
    for p in client.CoreV1Api(api).list_namespaced_pod(ns).items:
        conds = {c.type: c.status for c in p.status.conditions or []}
        if conds.get("Ready") == "True":
            out[p.metadata.name] = p.metadata.uid
    return out


def lease_holder(api: Any, op: OperatorProcess, rel: ChartRelease) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            op.env["MODELPLANE_LEASE_NAME"], rel.namespace
        )
    except client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "")


def _ts(ev: dict[str, Any], key: str = "requestReceivedTimestamp") -> datetime:
    return datetime.fromisoformat(ev[key])


def writes_by(events: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("userAgent") == agent and e.get("verb") in MUTATING]


def start_pair(run_operator: Any, api: Any, ns: str, rel: ChartRelease) -> tuple[Any, Any, str]:
    """A leader, then a standby: (leader, standby, the leader's identity)."""
    a = run_operator([ns]).start()
    holder = wait_for(
        lambda: (h := lease_holder(api, a, rel)) and a.proc.poll() is None and _mine(a, h),
        timeout=300,  # a cold Python start on a loaded 2-core machine took over 180 s once
        what="the first operator to hold the Lease",
        interval=0.2,
    )
    b = run_operator([ns]).start()
    wait_for(
        lambda: "waiting for the leader Lease" in b.log(), timeout=300, what="the standby to wait"
    )
    return a, b, holder


def _mine(op: OperatorProcess, holder: str) -> str | None:
    return holder if f"{holder} acquired the leader Lease" in op.log() else None


# ---------------------------------------------------------------------------- the operator
def test_operator_kill_9_mid_apply_converges_without_duplicates(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    # 12 objects: well inside the test bed's A10G capacity (2 nodes plus at most 16 provisioned,
    # other tests' lingering pods included), so "converged" measures the operator, not capacity.
    names = [f"k{i:02d}" for i in range(12)]
    apps = client.AppsV1Api(api)
    op = run_operator([namespace]).start()
    apply(cluster, namespace, names)
    # Mid-apply: some children written, not all.
    wait_for(
        lambda: len(apps.list_namespaced_deployment(namespace).items) >= 2,
        timeout=240,
        interval=0.05,
        what="the first children",
    )
    op.kill()
    written = len(apps.list_namespaced_deployment(namespace).items)
    assert written < len(names), "killed too late to be mid-apply"
    run_operator([namespace]).start()  # waits out the dead one's Lease, then converges
    wait_for(lambda: converged(api, namespace, names), timeout=420, what="all Ready after kill -9")
    assert_exact_children(api, namespace, names)


def test_leader_killed_mid_apply_standby_takes_over_without_double_writes(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
) -> None:
    rel = releases["default"]
    names = [f"f{i:02d}" for i in range(12)]
    apps = client.AppsV1Api(api)
    a, b, old = start_pair(run_operator, api, namespace, rel)
    apply(cluster, namespace, names)
    wait_for(
        lambda: len(apps.list_namespaced_deployment(namespace).items) >= 3,
        timeout=240,
        interval=0.05,
        what="the leader's first children",
    )
    a.kill()
    new = wait_for(
        lambda: (h := lease_holder(api, b, rel)) != old and _mine(b, h),
        timeout=LEASE_DURATION * 4,
        what="the standby to take the Lease over",
        interval=0.2,
    )
    wait_for(
        lambda: converged(api, namespace, names), timeout=420, what="all Ready after the failover"
    )
    assert_exact_children(api, namespace, names)

    events = audit_events(cluster, rel.user)
    old_writes = writes_by(events, f"modelplane/{old}")
    new_writes = writes_by(events, f"modelplane/{new}")
    assert old_writes and new_writes
    takeover = next(
        e
        for e in writes_by(events, f"modelplane-lease/{new}")
        if e["objectRef"]["resource"] == "leases"
    )
    old_renews = [
        e
        for e in writes_by(events, f"modelplane-lease/{old}")
        if e["objectRef"]["resource"] == "leases" and e["responseStatus"]["code"] < 300
    ]
    # The standby wrote nothing before it held the Lease ...
    assert min(_ts(e) for e in new_writes) >= _ts(takeover)
    # ... and the old leader nothing after the new one's first write.
    assert max(_ts(e, "stageTimestamp") for e in old_writes) < min(_ts(e) for e in new_writes)
    # Safety: the standby waited the full lease duration after the old leader's last renew
    # (both stamped by the apiserver; the standby times it on its own clock from its read).
    last_renew = max(_ts(e) for e in old_renews)
    assert (_ts(takeover) - last_renew).total_seconds() >= LEASE_DURATION - 0.5
    # Liveness, without a wall clock: it took over at its first attempt after the expiry,
    # i.e. it read the Lease at most lease/retry + 2 times between that renew and taking over.
    polls = [
        e
        for e in audit_events(cluster, rel.user)
        if e.get("userAgent") == f"modelplane-lease/{new}"
        and e["verb"] == "get"
        and last_renew < _ts(e) < _ts(takeover)
    ]
    assert len(polls) <= LEASE_DURATION / RETRY_PERIOD + 2
    print(
        f"failover: takeover {(_ts(takeover) - last_renew).total_seconds():.1f}s after the "
        f"last renew, {len(polls)} polls; old leader {len(old_writes)} writes, new "
        f"{len(new_writes)}"
    )


def test_frozen_leader_is_fenced_after_the_standby_takes_over(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
) -> None:
    """SIGSTOP the leader mid-apply (a long GC pause, a frozen VM), let the standby take over,
    then thaw it: it must not write again, and exits to restart as a standby."""
    rel = releases["default"]
    names = [f"z{i:02d}" for i in range(10)]
    apps = client.AppsV1Api(api)
    a, b, old = start_pair(run_operator, api, namespace, rel)
    apply(cluster, namespace, names)
    wait_for(
        lambda: apps.list_namespaced_deployment(namespace).items,
        timeout=240,
        interval=0.05,
        what="the leader's first child",
    )
    a.signal(signal.SIGSTOP)
    new = wait_for(
        lambda: (h := lease_holder(api, b, rel)) != old and _mine(b, h),
        timeout=LEASE_DURATION * 4,
        what="the standby to take the Lease over",
        interval=0.2,
    )
    a.signal(signal.SIGCONT)
    code = wait_for(lambda: a.proc.poll(), timeout=60, what="the thawed leader to exit")
    assert code == 1
    assert "leader Lease lost" in a.log()
    wait_for(
        lambda: converged(api, namespace, names), timeout=420, what="all Ready after the failover"
    )
    assert_exact_children(api, namespace, names)
    events = audit_events(cluster, rel.user)
    new_writes = writes_by(events, f"modelplane/{new}")
    old_writes = writes_by(events, f"modelplane/{old}")
    assert new_writes
    if old_writes:
        assert max(_ts(e, "stageTimestamp") for e in old_writes) < min(_ts(e) for e in new_writes)
    assert lease_holder(api, b, rel) == new


# ---------------------------------------------------------------------------- the control plane
@pytest.mark.parametrize("process", ["apiserver", "etcd"])
def test_control_plane_restart_converges_and_keeps_ready_pods(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
    process: str,
) -> None:
    """kube-apiserver (SIGTERM) or etcd (SIGKILL) restarted under two replicas: afterwards one
    leads, new and changed objects converge, and no Ready model server was restarted."""
    rel = releases["default"]
    names = [f"{process[:3]}{i}" for i in range(6)]
    start_pair(run_operator, api, namespace, rel)
    apply(cluster, namespace, names)
    wait_for(
        lambda: converged(api, namespace, names), timeout=420, what="all Ready before the restart"
    )
    before = ready_pods(api, namespace)
    assert len(before) == len(names)
    cluster.restart(process, down_seconds=3, kill=process == "etcd")
    more = [*names, f"{process[:3]}-after"]
    wait_for(
        lambda: _try(lambda: apply(cluster, namespace, more)),
        timeout=60,
        what="an apply after the restart",
    )
    wait_for(
        lambda: converged(api, namespace, more), timeout=420, what="all Ready after the restart"
    )
    assert_exact_children(api, namespace, more)
    after = ready_pods(api, namespace)
    assert {k: v for k, v in after.items() if k in before} == before


def _try(fn: Any) -> bool:
    try:
        fn()
    except Exception:
        time.sleep(1)
        return False
    return True
