"""Serverless: tenants in different namespaces share one platform-owned backend."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import ChartRelease, accelerator_classes_yaml
from tests.helpers import put_load, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def second_namespace(api: Any) -> Iterator[str]:
    name = f"serverless-b-{uuid.uuid4().hex[:6]}"
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": name}})
    yield name
    v1.delete_namespace(name)


def tenant(ns: str, name: str, served: str, **model: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "tier": "Serverless",
            "model": {"catalog": "llama-v3p1-8b-instruct", "servedName": served, **model},
            "engine": {"maxContextLength": 8192},
        },
    }


def test_two_namespaces_share_one_backend_until_the_last_tenant_goes(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    second_namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    opns = releases["default"].namespace
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def backends() -> list[Any]:
        items = apps.list_namespaced_deployment(opns, label_selector="modelplane.io/backend").items
        return list(items)

    def md(ns: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", ns, "modeldeployments", name
        )
        return obj

    a = tenant(namespace, "chat", "team-a-llama", aliases=["gpt-4o-mini"])
    b = tenant(second_namespace, "assistant", "team-b-llama")
    with run_operator([namespace, second_namespace]):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([a, b]))
        for ns, name in ((namespace, "chat"), (second_namespace, "assistant")):
            wait_for(
                lambda ns=ns, name=name: (md(ns, name).get("status") or {}).get("phase") == "Ready",
                timeout=120,
                what=f"{ns}/{name} Ready",
            )
        shared = backends()
        assert len(shared) == 1, [d.metadata.name for d in shared]
        backend = shared[0]
        assert not backend.metadata.owner_references  # platform-owned, no tenant owns it
        args = backend.spec.template.spec.containers[0].args
        served = args[args.index("--served-model-name") + 1 :]
        assert {"team-a-llama", "team-b-llama", "gpt-4o-mini"} <= set(served)

        st_a, st_b = md(namespace, "chat")["status"], md(second_namespace, "assistant")["status"]
        assert st_a["backend"] == st_b["backend"] == f"{opns}/{backend.metadata.name}"
        assert st_a["endpoint"]["url"] == f"http://chat.{namespace}.svc.cluster.local:8000/v1"
        assert st_a["endpoint"]["model"] == "team-a-llama"
        assert st_b["endpoint"]["model"] == "team-b-llama"
        assert set(st_a["usage"]) >= {"requests", "promptTokens", "generatedTokens"}
        assert st_a["cost"]["gpuHourly"] == "0.00"
        svc = core.read_namespaced_service("chat", namespace)
        assert svc.spec.type == "ExternalName"
        assert svc.spec.external_name == f"{backend.metadata.name}.{opns}.svc.cluster.local"

        # One tenant leaves: the backend stays for the other.
        cluster.kubectl("delete", "mdep", "chat", "-n", namespace)
        for _ in range(3):
            wait_for(lambda: len(backends()) == 1, timeout=10, what="backend kept")
        # The remaining tenant is (or returns to) Ready on the same backend; it may read Updating
        # for as long as the backend rolls out a change of its served names.
        wait_for(
            lambda: (md(second_namespace, "assistant").get("status") or {}).get("phase") == "Ready",
            timeout=120,
            what="remaining tenant Ready on the kept backend",
        )
        assert [d.metadata.name for d in backends()] == [backend.metadata.name]

        # The last tenant leaves: the backend goes.
        cluster.kubectl("delete", "mdep", "assistant", "-n", second_namespace)
        wait_for(lambda: not backends(), timeout=60, what="backend removed")
        svcs = core.list_namespaced_service(opns, label_selector="modelplane.io/backend").items
        assert not svcs


def test_serverless_tenant_cannot_pick_gpus_or_replicas(
    cluster: LocalCluster, namespace: str
) -> None:
    doc = tenant(namespace, "greedy", "x")
    doc["spec"]["accelerator"] = {"class": "nvidia-h100-80gb", "count": 8}
    out = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out == ""
    with pytest.raises(Exception, match="shared, platform-managed GPUs"):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def test_gated_backend_starts_with_tenant_credentials_scales_with_load_and_to_zero(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
    control: Any,
) -> None:
    """A gated model: the shared backend (in the operator's namespace) gets the tenant's token
    through a mirrored Secret; it is autoscaled on its engines' metrics (scraped at the pods'
    addresses), goes to zero after the window, and wakes on the requests a gateway holds."""
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    opns = releases["default"].namespace
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    cluster.kubectl(
        "create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=token=hf_gated"
    )
    doc = tenant(namespace, "gated", "team-gated", credentialsSecretRef={"name": "hf-token"})
    doc["spec"]["autoscaling"] = {
        "scaleUpWindow": "10s",
        "scaleDownWindow": "30s",
        "scaleToZeroWindow": "5m",
        "loadTargets": {"concurrentRequests": 16},
    }

    def status() -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments", "gated"
        )
        st: dict[str, Any] = obj.get("status") or {}
        return st

    def backend() -> Any:
        name = status()["backend"].split("/", 1)[1]
        return apps.read_namespaced_deployment(name, opns)

    with run_operator([namespace], values={"autoscalerIntervalSeconds": "2"}):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        wait_for(lambda: status().get("phase") == "Ready", timeout=120, what="tenant Ready")
        dep = backend()
        env = {e.name: e for e in dep.spec.template.spec.containers[0].env}
        ref = env["HF_TOKEN"].value_from.secret_key_ref
        mirrored = core.read_namespaced_secret(ref.name, opns)
        assert base64.b64decode(mirrored.data[ref.key]).decode() == "hf_gated"
        source = mirrored.metadata.annotations["modelplane.io/credentials-from"]
        assert source.startswith(f"{namespace}/gated: Secret hf-token"), source

        # Load: the backend scales out on its engines' own metrics.
        put_load(control, namespace, "gated", 22.0)
        wait_for(lambda: backend().spec.replicas >= 2, timeout=120, what="backend scaled out")
        # Quiet for the window: the backend goes to zero.
        put_load(control, namespace, "gated", 0.0)
        wait_for(
            lambda: backend().spec.replicas == 0,
            timeout=480,
            interval=3,
            what="backend at zero after the 5 min window",
        )
        # A request at the gateway: held, published as demand, and the backend wakes.
        put_load(control, namespace, "gated", 2.0)
        wait_for(
            lambda: (backend().status.ready_replicas or 0) >= 1,
            timeout=120,
            what="backend back from zero",
        )
        served = control.get(f"/load/{namespace}/gated")
        assert served["completed"] > 0 or served["readyReplicas"] >= 1, served
