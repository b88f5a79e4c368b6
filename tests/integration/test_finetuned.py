"""FineTuned: LoRA adapters loaded into every Ready replica of a base through the engine's
runtime API at each pod's address (the engine emulator serves vLLM's routes there), including replicas added later."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def base_md(ns: str) -> dict[str, Any]:
    spec = factories.spec(
        accelerator={"class": "nvidia-h100-80gb", "count": 1},
        replicas={"min": 1, "max": 4, "pinned": 2},
    )
    return factories.md("base", ns, spec)


def tuned_md(ns: str, adapters: list[tuple[str, str]]) -> dict[str, Any]:
    spec = {
        "tier": "FineTuned",
        "base": {"deployment": "base"},
        "adapters": [{"name": n, "uri": u} for n, u in adapters],
    }
    return factories.md("tuned", ns, spec)


ADAPTERS = [
    ("sql", "hf://example-org/llama3-8b-sql-lora"),
    ("support", "hf://example-org/llama3-8b-support-lora"),
    ("code", "hf://example-org/llama3-8b-code-lora"),
]


def test_adapters_follow_replicas_and_spec(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    custom = client.CustomObjectsApi(api)

    def status(name: str) -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments", name
        )
        st: dict[str, Any] = obj.get("status") or {}
        return st

    def loaded() -> dict[str, set[str]]:
        """Adapters each Ready base pod really serves, asked from its engine at its address."""
        out = {}
        pods = core.list_namespaced_pod(
            namespace, label_selector="modelplane.io/deployment=base"
        ).items
        for p in pods:
            if p.metadata.deletion_timestamp or not any(
                c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])
            ):
                continue
            code, raw = cluster.http(p.status.pod_ip, 8000, "/v1/models")
            if code != 200:
                continue  # the engine of a just-Ready pod is not up yet
            models = json.loads(raw)["data"]

            out[p.metadata.name] = {m["id"] for m in models if m.get("parent")}
        return out

    def everywhere(names: set[str], replicas: int) -> bool:
        got = loaded()
        return len(got) == replicas and all(v == names for v in got.values())

    op = run_operator([namespace])
    with op:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump_all([base_md(namespace), tuned_md(namespace, ADAPTERS)]),
        )
        all3 = {f"tuned--{n}" for n, _ in ADAPTERS}
        wait_for(lambda: everywhere(all3, 2), timeout=120, what="3 adapters on both replicas")
        wait_for(lambda: status("tuned").get("phase") == "Ready", timeout=60, what="tuned Ready")
        st = status("tuned")
        assert {a["name"]: (a["loadedReplicas"], a["totalReplicas"]) for a in st["adapters"]} == {
            "sql": (2, 2),
            "support": (2, 2),
            "code": (2, 2),
        }
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "AllAdaptersLoaded"
        assert st["endpoint"]["model"] == "tuned--sql"
        args = (
            apps.read_namespaced_deployment("base", namespace).spec.template.spec.containers[0].args
        )
        assert "--enable-lora" in args  # the base enabled LoRA for its dependents

        # Scale the base out: the new replica gets every adapter, no restart of the others.
        before = set(loaded())
        cluster.kubectl("scale", "mdep", "base", "-n", namespace, "--replicas=3")
        wait_for(lambda: everywhere(all3, 3), timeout=120, what="adapters on the third replica")
        assert before < set(loaded())
        wait_for(
            lambda: {a["totalReplicas"] for a in status("tuned").get("adapters", [])} == {3},
            timeout=60,
            what="status counts 3 replicas",
        )

        # Remove one adapter: unloaded everywhere.
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tuned_md(namespace, ADAPTERS[:2])))
        two = {"tuned--sql", "tuned--support"}
        wait_for(lambda: everywhere(two, 3), timeout=60, what="code adapter unloaded everywhere")

        # A bad adapter: AdapterLoadFailed with a message, while the base keeps serving.
        bad = [*ADAPTERS[:2], ("broken", "hf://example-org/does-not-exist")]
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tuned_md(namespace, bad)))

        def failed() -> dict[str, Any] | None:
            st = status("tuned")
            ready = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
            return st if ready.get("reason") == "AdapterLoadFailed" else None

        st = wait_for(failed, timeout=60, what="AdapterLoadFailed")
        broken = next(a for a in st["adapters"] if a["name"] == "broken")
        assert broken["reason"] == "AdapterLoadFailed" and "does-not-exist" in broken["message"]
        assert st["phase"] == "Degraded"
        assert status("base")["phase"] == "Ready"
        assert everywhere(two, 3)  # the good adapters stay loaded
