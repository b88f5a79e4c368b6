"""The OnDemand tier end to end on the local GPU cluster, with the operator as a real process."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import REPO, audit_writes, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "modelplane.io", "v1alpha1", "modeldeployments"


@pytest.fixture(scope="module", autouse=True)
def accelerator_classes(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())


def examples(ns: str) -> list[dict[str, Any]]:
    docs = []
    for f in sorted((REPO / "examples").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") == "ModelDeployment":
                d["metadata"]["namespace"] = ns
                docs.append(d)
    return docs


def apply(cluster: LocalCluster, *docs: dict[str, Any]) -> str:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def get_md(api: Any, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return obj


def phase(api: Any, ns: str, name: str) -> str | None:
    return (get_md(api, ns, name).get("status") or {}).get("phase")


def condition(md: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (md.get("status") or {}).get("conditions", []):
        if c["type"] == ctype:
            return dict(c)
    return {}


def all_ready(api: Any, ns: str, names: list[str]) -> bool:
    return all(phase(api, ns, n) == "Ready" for n in names)


def test_examples_reach_ready_on_the_right_accelerators(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    docs = examples(namespace)
    ondemand = [d for d in docs if d["spec"]["tier"] == "OnDemand"]
    assert len(ondemand) >= 5 and {d["spec"]["tier"] for d in docs} == {
        "OnDemand",
        "Serverless",
        "FineTuned",
    }
    every = [d["metadata"]["name"] for d in docs]
    names = [d["metadata"]["name"] for d in ondemand]
    with run_operator([namespace]) as op:
        apply(cluster, *docs)
        wait_for(lambda: all_ready(api, namespace, every), timeout=180, what="every example Ready")
        table = cluster.kubectl("get", "mdep", "-n", namespace)
        header = table.splitlines()[0].split()
        assert header == ["NAME", "TIER", "MODEL", "ACCEL", "READY", "PHASE", "ENDPOINT", "AGE"]
        core = client.CoreV1Api(api)
        for name in names:
            md = get_md(api, namespace, name)
            st = md["status"]
            assert st["observedGeneration"] == md["metadata"]["generation"]
            assert condition(md, "Ready")["status"] == "True"
            assert st["endpoint"]["url"] == f"http://{name}.{namespace}.svc.cluster.local:8000/v1"
            assert st["ready"] == "1/1"
            cls = st["accelerator"]["class"]
            product = cluster.kubectl("get", "accel", cls, "-o", "jsonpath={.spec.gpuProduct}")
            pods = core.list_namespaced_pod(
                namespace, label_selector=f"modelplane.io/deployment={name}"
            ).items
            assert len(pods) == 1
            node = core.read_node(pods[0].spec.node_name)
            assert node.metadata.labels["nvidia.com/gpu.product"] == product
            gpus = pods[0].spec.containers[0].resources.limits["nvidia.com/gpu"]
            assert gpus == str(st["accelerator"]["count"])
            assert float(st["cost"]["gpuHourly"]) > 0
        # Events on transitions, posted by the operator itself.
        events = core.list_namespaced_event(namespace, field_selector="reason=Ready").items
        assert {e.involved_object.name for e in events} >= set(names)
        assert op.metric("modelplane_reconciles_total", result="ok") >= len(names)


def _md(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return factories.md(name, ns, factories.spec(replicas={"min": 1, "max": 2}) | spec)


def test_spec_change_rolls_and_idle_resync_makes_no_writes(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    apps = client.AppsV1Api(api)
    md = _md(namespace, "roll")
    with run_operator([namespace]) as op:
        apply(cluster, md)
        wait_for(lambda: phase(api, namespace, "roll") == "Ready", timeout=90, what="Ready")
        dep = apps.read_namespaced_deployment("roll", namespace)
        gen0 = dep.metadata.generation
        assert "--max-model-len" in dep.spec.template.spec.containers[0].args

        # Idle: several resyncs (3 s each) happen, and none of them writes anything. The
        # apiserver's audit log attributes every mutating request to its user.
        time.sleep(4)
        before_api = len(audit_writes(cluster, op.user))
        before_ops = op.metric("modelplane_reconciles_total", result="ok")
        time.sleep(10)
        after = audit_writes(cluster, op.user)
        after_ops = op.metric("modelplane_reconciles_total", result="ok")
        assert after_ops - before_ops >= 2, "the resync timer did not run"
        assert before_api > 0, "the audit log saw none of the operator's writes"
        # (Writes elsewhere — sweeping a shared backend an earlier test's tenants left in the
        # operator's namespace — are not this ModelDeployment's.)
        extra = [
            (e["verb"], e["objectRef"].get("resource"))
            for e in after[before_api:]
            if e["objectRef"].get("namespace") in (namespace, None)
        ]
        assert not extra, f"idle resync made write requests: {extra}"

        # Context length change -> new pod template -> rollout -> Ready again.
        md["spec"]["engine"]["maxContextLength"] = 16384
        apply(cluster, md)

        def rolled() -> bool:
            d = apps.read_namespaced_deployment("roll", namespace)
            args = d.spec.template.spec.containers[0].args
            return (
                d.metadata.generation > gen0 and args[args.index("--max-model-len") + 1] == "16384"
            )

        wait_for(rolled, timeout=60, what="Deployment rolled to the new context length")
        wait_for(
            lambda: phase(api, namespace, "roll") == "Ready", timeout=90, what="Ready after rollout"
        )
        got = get_md(api, namespace, "roll")
        assert got["status"]["observedGeneration"] == got["metadata"]["generation"] == 2

        # Image change rolls too.
        md["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.32.0"
        apply(cluster, md)
        wait_for(
            lambda: (
                apps.read_namespaced_deployment("roll", namespace)
                .spec.template.spec.containers[0]
                .image
                == "vllm/vllm-openai:v0.32.0"
            ),
            timeout=60,
            what="image rolled",
        )
        # The operator never writes the spec: the user's manifest still diffs clean.
        path = cluster.dir / f"{namespace}-roll.yaml"
        path.write_text(yaml.safe_dump(md))
        wait_for(
            lambda: phase(api, namespace, "roll") == "Ready", timeout=90, what="Ready after image"
        )
        diff = cluster.kubectl("diff", "-f", str(path), check=False)
        assert diff == ""


def test_delete_removes_children(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    with run_operator([namespace]):
        apply(cluster, _md(namespace, "gone", replicas={"min": 2, "max": 2}))
        wait_for(lambda: phase(api, namespace, "gone") == "Ready", timeout=90, what="Ready")
        assert client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("gone", namespace)
        cluster.kubectl("delete", "mdep", "gone", "-n", namespace, "--wait=true")

        def collected() -> bool:
            deps = apps.list_namespaced_deployment(namespace).items
            svcs = core.list_namespaced_service(namespace).items
            pods = core.list_namespaced_pod(
                namespace, label_selector="modelplane.io/deployment=gone"
            ).items
            return not deps and not svcs and not pods

        wait_for(collected, timeout=120, what="children garbage-collected")


def test_nodepool_shared_and_removed_with_last_user(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    """With the karpenter provider: one NodePool per class in use, validated by Karpenter's CRD."""
    custom = client.CustomObjectsApi(api)

    def pools() -> set[str]:
        items = custom.list_cluster_custom_object("karpenter.sh", "v1", "nodepools")["items"]
        return {i["metadata"]["name"] for i in items}

    a10g = {"class": "nvidia-a10g-24gb", "count": 1}
    with run_operator([namespace], "karpenter"):
        apply(
            cluster,
            _md(
                namespace,
                "emb-a",
                model={"catalog": "nomic-embed-text-v1p5"},
                engine={},
                accelerator=a10g,
            ),
            _md(
                namespace,
                "emb-b",
                model={"catalog": "nomic-embed-text-v1p5"},
                engine={},
                accelerator=a10g,
            ),
        )
        wait_for(
            lambda: "modelplane-nvidia-a10g-24gb" in pools(), timeout=60, what="NodePool created"
        )
        np = custom.get_cluster_custom_object(
            "karpenter.sh", "v1", "nodepools", "modelplane-nvidia-a10g-24gb"
        )
        assert np["spec"]["template"]["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
        assert np["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"
        md = get_md(api, namespace, "emb-a")
        assert md["status"]["accelerator"]["nodePool"] == "modelplane-nvidia-a10g-24gb"
        cluster.kubectl("delete", "mdep", "emb-a", "-n", namespace)
        time.sleep(5)
        assert "modelplane-nvidia-a10g-24gb" in pools(), "removed while emb-b still uses it"
        cluster.kubectl("delete", "mdep", "emb-b", "-n", namespace)
        wait_for(
            lambda: "modelplane-nvidia-a10g-24gb" not in pools(),
            timeout=60,
            what="NodePool removed",
        )


def test_operator_only_conditions_and_nothing_else_changes(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    apps = client.AppsV1Api(api)
    with run_operator([namespace]):
        apply(
            cluster,
            _md(namespace, "no-class", accelerator={"class": "nvidia-b300", "count": 1}),
            _md(
                namespace,
                "too-big",
                model={"catalog": "llama-v3p1-405b-instruct"},
                engine={"maxContextLength": 8192},
                accelerator={"class": "nvidia-l4-24gb", "count": 4},
            ),
        )

        def failed(name: str) -> dict[str, Any] | None:
            md = get_md(api, namespace, name)
            return md if (md.get("status") or {}).get("phase") == "Failed" else None

        md = wait_for(lambda: failed("no-class"), timeout=60, what="no-class Failed")
        ready = condition(md, "Ready")
        assert ready["reason"] == "NoAcceleratorClass"
        assert "nvidia-b300" in ready["message"] and "nvidia-h100-80gb" in ready["message"]
        md = wait_for(lambda: failed("too-big"), timeout=60, what="too-big Failed")
        ready = condition(md, "Ready")
        assert ready["reason"] == "ModelTooLarge", ready
        assert "GiB" in ready["message"]
        assert not apps.list_namespaced_deployment(namespace).items

        def warnings() -> set[str]:
            core = client.CoreV1Api(api)
            items = core.list_namespaced_event(namespace, field_selector="type=Warning").items
            return {e.reason for e in items}

        wait_for(
            lambda: warnings() >= {"NoAcceleratorClass", "ModelTooLarge"},
            timeout=30,
            what="Warning events",
        )


def test_capacity_condition_when_gpus_cannot_be_had(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    """Static capacity: a pod no node can hold -> CapacityAvailable=False/InsufficientCapacity."""
    with run_operator([namespace]):
        apply(
            cluster,
            _md(
                namespace,
                "starved",
                accelerator={"class": "nvidia-h200-141gb", "count": 8},
                replicas={"min": 3, "max": 3},
            ),
        )

        def starved() -> dict[str, Any] | None:
            md = get_md(api, namespace, "starved")
            cap = condition(md, "CapacityAvailable")
            return md if cap.get("reason") == "InsufficientCapacity" else None

        md = wait_for(starved, timeout=60, what="InsufficientCapacity")
        assert condition(md, "CapacityAvailable")["status"] == "False"
        assert md["status"]["replicaStats"]["pendingCapacity"] >= 2
        assert "nvidia.com/gpu" in condition(md, "CapacityAvailable")["message"]


def test_restart_mid_reconcile_converges_without_duplicates(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    names = [f"r{i}" for i in range(6)]
    op = run_operator([namespace]).start()
    try:
        apply(
            cluster,
            *(
                _md(namespace, n, model={"catalog": "nomic-embed-text-v1p5"}, engine={})
                for n in names
            ),
        )
        # Kill it as soon as it has started writing children, mid-way through the batch.
        wait_for(
            lambda: apps.list_namespaced_deployment(namespace).items,
            timeout=30,
            interval=0.05,
            what="first child",
        )
        op.kill()
    finally:
        op.stop()
    with run_operator([namespace]):
        wait_for(
            lambda: all_ready(api, namespace, names), timeout=120, what="all Ready after restart"
        )
    deps = apps.list_namespaced_deployment(namespace).items
    svcs = core.list_namespaced_service(namespace).items
    assert sorted(d.metadata.name for d in deps) == names
    assert sorted(s.metadata.name for s in svcs) == names
    for d in deps:
        assert len(d.metadata.owner_references) == 1
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"modelplane.io/deployment={d.metadata.name}"
        ).items
        assert len([p for p in pods if p.metadata.deletion_timestamp is None]) == 1


def test_operator_never_adopts_a_strangers_deployment(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    apps = client.AppsV1Api(api)
    stranger = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "taken"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "taken"}},
            "template": {
                "metadata": {"labels": {"app": "taken"}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/x"}]},
            },
        },
    }
    apps.create_namespaced_deployment(namespace, stranger)
    with run_operator([namespace]):
        apply(cluster, _md(namespace, "taken"))
        md = wait_for(
            lambda: (
                (get_md(api, namespace, "taken").get("status") or {}).get("phase") == "Failed"
                and get_md(api, namespace, "taken")
            ),
            timeout=60,
            what="conflict reported",
        )
        assert condition(md, "Ready")["reason"] == "ChildConflict"
    dep = apps.read_namespaced_deployment("taken", namespace)
    assert dep.spec.template.spec.containers[0].image == "example.invalid/x"
    assert not dep.metadata.owner_references


def test_strangers_service_and_pdb_are_left_alone_and_reported(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    """A Service and a PodDisruptionBudget someone else made under the ModelDeployment's name:
    the operator writes neither (no takeover, no owner reference, so deleting the
    ModelDeployment cannot garbage-collect them) and reports ChildConflict naming both."""
    core, policy, apps = client.CoreV1Api(api), client.PolicyV1Api(api), client.AppsV1Api(api)
    name = "shared-name"
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": name, "labels": {"team": "other"}},
            "spec": {"selector": {"app": "other"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "other"}}},
        },
    )

    def untouched() -> None:
        svc = core.read_namespaced_service(name, namespace)
        assert not svc.metadata.owner_references
        assert svc.spec.selector == {"app": "other"}
        assert [(p.port, p.target_port) for p in svc.spec.ports] == [(80, 8080)]
        assert svc.metadata.labels == {"team": "other"}
        assert "modelplane.io/applied-hash" not in (svc.metadata.annotations or {})
        pdb = policy.read_namespaced_pod_disruption_budget(name, namespace)
        assert not pdb.metadata.owner_references
        assert pdb.spec.selector.match_labels == {"app": "other"}
        assert pdb.spec.min_available == 1 and pdb.spec.max_unavailable is None

    with run_operator([namespace]):
        apply(cluster, _md(namespace, name, replicas={"min": 2, "max": 2}))

        def conflicted() -> dict[str, Any] | None:
            md = get_md(api, namespace, name)
            return md if condition(md, "Ready").get("reason") == "ChildConflict" else None

        md = wait_for(conflicted, timeout=60, what="ChildConflict reported")
        ready = condition(md, "Ready")
        assert ready["status"] == "False" and md["status"]["phase"] == "Failed"
        assert f"Service {namespace}/{name}" in ready["message"]
        assert f"PodDisruptionBudget {namespace}/{name}" in ready["message"]
        assert "rename" in ready["message"] and "delete" in ready["message"]
        time.sleep(3)  # a resync or two later: still nothing written
        untouched()
        assert not apps.list_namespaced_deployment(namespace).items
        cluster.kubectl("delete", "mdep", name, "-n", namespace, "--wait=true")
        time.sleep(3)
    untouched()  # deleting the ModelDeployment collected nothing of theirs
