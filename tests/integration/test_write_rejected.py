"""A write the apiserver refuses (4xx) fails the ModelDeployment with the apiserver's own
message and is not retried until the spec changes (issue #15: 43 retries of `API error 400`,
the reason never reached the user)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS, accelerator_class_spec
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import audit_writes, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "modelplane.io", "v1alpha1", "modeldeployments"
BROKEN = "broken-node-selector"


@pytest.fixture
def broken_class(cluster: LocalCluster) -> Any:
    """An AcceleratorClass the schema accepts whose nodeSelector value is no label value (as
    `nvidia-smi` prints the product): every Deployment on it is invalid."""
    good = DEFAULT_ACCELERATORS[0]
    spec = accelerator_class_spec(good) | {"nodeSelector": {"nvidia.com/gpu.product": "A100 80GB"}}
    doc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorClass"}
    doc |= {"metadata": {"name": BROKEN}, "spec": spec}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    yield good.name
    cluster.kubectl("delete", "acceleratorclass", BROKEN, "--ignore-not-found")


def _md(ns: str, accelerator: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "rejected", "namespace": ns},
        "spec": {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-8b-instruct"},
            "engine": {"maxContextLength": 8192},
            "accelerator": {"class": accelerator},
            "replicas": {"min": 1, "max": 1},
        },
    }


def _ready(api: Any, ns: str) -> dict[str, Any]:
    md = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "rejected"
    )
    conds = (md.get("status") or {}).get("conditions", [])
    return next((dict(c) for c in conds if c["type"] == "Ready"), {})


def test_a_rejected_write_fails_with_the_apiservers_message_until_the_spec_changes(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any, broken_class: str
) -> None:
    def deployment_writes(user: str) -> int:
        return sum(
            1
            for e in audit_writes(cluster, user)
            if e["objectRef"].get("resource") == "deployments"
            and e["objectRef"].get("namespace") == namespace
            and e["objectRef"].get("name") == "rejected"
        )

    with run_operator([namespace]) as op:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_md(namespace, BROKEN)))
        wait_for(
            lambda: _ready(api, namespace).get("reason") == "WriteRejected",
            timeout=180,
            what="Ready=False, WriteRejected",
        )
        ready = _ready(api, namespace)
        assert ready["status"] == "False"
        assert "Deployment" in ready["message"] and "nodeSelector" in ready["message"], ready
        assert "A100 80GB" in ready["message"], "the apiserver's own message is quoted"
        # Several resyncs (5 s each) pass: none of them tries the refused write again.
        before = deployment_writes(op.user)
        reconciles = op.metric("modelplane_reconciles_total", result="ok")
        wait_for(
            lambda: op.metric("modelplane_reconciles_total", result="ok") >= reconciles + 2,
            timeout=180,
            what="two resyncs",
        )
        assert before >= 1 and deployment_writes(op.user) == before, "the refused write retried"
        # A new spec is tried again at once, and this one is valid.
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_md(namespace, broken_class)))
        wait_for(
            lambda: _ready(api, namespace).get("reason") not in (None, "WriteRejected"),
            timeout=180,
            what="the new spec applied",
        )
        apps = client.AppsV1Api(api)
        assert apps.read_namespaced_deployment("rejected", namespace).metadata.name == "rejected"
