"""Preloading on the local cluster: weights cached once per node, warm nodes kept provisioned,
serving pods reading their node's cache (as the engine emulator sees the mounts), and a warm
scale-up faster than a cold one."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

CLASS = "nvidia-h200-141gb"


def md(ns: str, name: str, pinned: int, preload: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = factories.spec(
        factories.LLAMA_70B_FP8,
        accelerator={"class": CLASS, "count": 8},
        replicas={"min": 1, "max": 3, "pinned": pinned},
    )
    if preload:
        spec["preload"] = preload
    return factories.md(name, ns, spec)


def ready_pods(core: Any, ns: str, name: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=f"modelplane.io/deployment={name}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def scale_up_seconds(cluster: LocalCluster, core: Any, ns: str, doc: dict[str, Any]) -> float:
    doc["spec"]["replicas"]["pinned"] = 2
    start = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    wait_for(
        lambda: len(ready_pods(core, ns, doc["metadata"]["name"])) == 2,
        timeout=120,
        interval=0.2,
        what="2 Ready",
    )
    return time.monotonic() - start


def test_warm_scale_up_reads_the_node_cache_and_warming_restarts_nothing(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any, control: Any
) -> None:
    """NodeLocal: the server pod mounts its node's cache read-only and the engine (emulated,
    judging from the pod and node as created) loads from it; the first node becoming warm does
    not touch the Ready replica; a warm scale-up beats a cold one."""
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    custom = client.CustomObjectsApi(api)

    def status(name: str) -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments", name
        )
        st: dict[str, Any] = obj.get("status") or {}
        return st

    def emulated(pod: Any) -> dict[str, Any]:
        out: dict[str, Any] = control.get(f"/pods/{namespace}/{pod.metadata.name}")
        return out

    with run_operator([namespace]):
        # Cold: the second replica needs a new node, the image, the weights and a warm-up.
        cold = md(namespace, "cold", 1)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(cold))
        wait_for(
            lambda: len(ready_pods(core, namespace, "cold")) == 1, timeout=120, what="cold 1 Ready"
        )
        cold_s = scale_up_seconds(cluster, core, namespace, cold)
        assert not any(emulated(p)["cacheHit"] for p in ready_pods(core, namespace, "cold"))
        cluster.kubectl("delete", "mdep", "cold", "-n", namespace, "--wait=true")
        wait_for(lambda: not ready_pods(core, namespace, "cold"), timeout=60, what="cold gone")

        # Warm: weights cached on every node of the class, one placeholder-held node ready.
        warm = md(namespace, "warm", 1, {"mode": "NodeLocal", "warmNodes": 1})
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(warm))
        first = wait_for(
            lambda: ready_pods(core, namespace, "warm"), timeout=120, what="first warm replica"
        )[0]
        template_before = apps.read_namespaced_deployment("warm", namespace).spec.template

        def all_cached() -> dict[str, Any] | None:
            st = status("warm")
            pre = st.get("preload") or {}
            ok = pre.get("classNodes", 0) >= 2 and pre.get("cachedNodes") == pre.get("classNodes")
            return st if ok and st.get("phase") == "Ready" else None

        st = wait_for(all_cached, timeout=180, what="weights cached on every class node")
        weights = next(c for c in st["conditions"] if c["type"] == "WeightsReady")
        assert weights["reason"] == "Preloaded"
        placeholders = core.list_namespaced_pod(
            namespace, label_selector="modelplane.io/warm-pool=warm"
        ).items
        assert [p for p in placeholders if p.spec.node_name], "no warm node held by a placeholder"
        # Nodes becoming warm changed nothing the Ready replica runs from: same pod, same
        # template, one ReplicaSet.
        dep = apps.read_namespaced_deployment("warm", namespace)
        assert dep.spec.template == template_before
        assert [p.metadata.uid for p in ready_pods(core, namespace, "warm")] == [first.metadata.uid]
        rs = apps.list_namespaced_replica_set(
            namespace, label_selector="modelplane.io/deployment=warm"
        ).items
        assert len(rs) == 1
        # The server mounts its node's cache for these weights read-only.
        (node_cache,) = [v for v in dep.spec.template.spec.volumes if v.host_path is not None]
        assert node_cache.host_path.path.startswith("/var/lib/modelplane/cache/")
        key = node_cache.host_path.path.rsplit("/", 1)[1]
        mounts = dep.spec.template.spec.containers[0].volume_mounts
        assert [m.read_only for m in mounts if m.name == node_cache.name] == [True]

        warm_s = scale_up_seconds(cluster, core, namespace, warm)
        newest = max(
            ready_pods(core, namespace, "warm"), key=lambda p: p.metadata.creation_timestamp
        )
        node = core.read_node(newest.spec.node_name)
        assert node.metadata.labels.get(f"cache.modelplane.io/{key}") == "ready"
        seen = emulated(newest)
        assert seen["cacheHit"] is True, seen

        # Identical (uri, revision): one cache Job per node, whoever asked.
        jobs = (
            client.BatchV1Api(api)
            .list_namespaced_job(namespace, label_selector=f"modelplane.io/cache-key={key}")
            .items
        )
        nodes = [j.metadata.labels["modelplane.io/cache-node"] for j in jobs]
        assert len(nodes) == len(set(nodes))
        record = json.loads(node.metadata.annotations[f"cache.modelplane.io/{key}"])
        assert record["uri"] == "hf://meta-llama/Llama-3.3-70B-Instruct" and record["sizeGiB"] > 60
        # A warm scale-up skips node boot, image pull and the remote weight download.
        assert warm_s < cold_s, (warm_s, cold_s)
        print(f"\ncold scale-up {cold_s:.1f}s, warm {warm_s:.1f}s, ratio {cold_s / warm_s:.2f}")


def static_pv(name: str) -> dict[str, Any]:
    """A pre-provisioned volume (the local cluster has no storage provisioner)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "500Gi"},
            "accessModes": ["ReadOnlyMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": f"/var/lib/modelplane-test/{name}"},
        },
    }


def test_shared_volume_filled_once_mounted_read_only_and_retained(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    core = client.CoreV1Api(api)
    pv = f"pv-{namespace}"[:60]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(static_pv(pv)))
    doc = md(namespace, "shared", 2, {"mode": "SharedVolume"})
    doc["spec"]["accelerator"] = {"class": "nvidia-h100-80gb", "count": 2}
    try:
        with run_operator([namespace]):
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
            custom = client.CustomObjectsApi(api)

            def filled() -> dict[str, Any] | None:
                obj = custom.get_namespaced_custom_object(
                    "modelplane.io", "v1alpha1", namespace, "modeldeployments", "shared"
                )
                st: dict[str, Any] = obj.get("status") or {}
                ok = (st.get("preload") or {}).get("cachedNodes") == 1 and st.get(
                    "phase"
                ) == "Ready"
                return st if ok else None

            try:
                wait_for(filled, timeout=90, what="volume filled and Ready")
            except AssertionError:
                obj = custom.get_namespaced_custom_object(
                    "modelplane.io", "v1alpha1", namespace, "modeldeployments", "shared"
                )
                print("STATUS", json.dumps(obj.get("status")))
                print(
                    "PVC", cluster.kubectl("get", "pvc,pv,job,pods", "-n", namespace, "-o", "wide")
                )
                raise
            claims = core.list_namespaced_persistent_volume_claim(namespace).items
            assert len(claims) == 1 and claims[0].status.phase == "Bound"
            assert claims[0].spec.access_modes[0] == "ReadOnlyMany"
            jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
            assert [j.metadata.name for j in jobs] == [
                f"fill-{claims[0].metadata.name.split('-', 1)[1]}"
            ]
            assert jobs[0].status.succeeded == 1
            pods = ready_pods(core, namespace, "shared")
            assert len(pods) == 2
            for p in pods:
                mount = next(m for m in p.spec.containers[0].volume_mounts if m.name == "weights")
                assert mount.read_only and mount.mount_path == "/models/shared"
                assert p.spec.containers[0].args[0] == "/models/shared"
            cluster.kubectl("delete", "mdep", "shared", "-n", namespace, "--wait=true")
            wait_for(
                lambda: not ready_pods(core, namespace, "shared"), timeout=60, what="pods gone"
            )
            # retainCache (default true): the filled volume stays for the next deployment.
            assert core.read_namespaced_persistent_volume_claim(claims[0].metadata.name, namespace)
    finally:
        cluster.kubectl("delete", "pvc", "--all", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
