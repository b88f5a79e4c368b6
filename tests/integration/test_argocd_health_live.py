"""The Argo CD health check judged against real ModelDeployment objects captured from the local
cluster while the operator drives them through their states."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client

from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import wait_for
from tests.unit.test_argocd_health import health

pytestmark = pytest.mark.integration


def _md(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return factories.md(name, ns, factories.spec(factories.EMBEDDINGS) | spec)


def test_health_verdicts_on_captured_objects(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    custom = client.CustomObjectsApi(api)

    def get(name: str) -> dict[str, Any]:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments", name
        )
        return obj

    def phase_is(name: str, *phases: str) -> dict[str, Any] | None:
        obj = get(name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    docs = [
        _md(namespace, "healthy", replicas={"min": 1, "max": 1}),
        _md(namespace, "zero", replicas={"min": 0, "max": 0}),
        _md(namespace, "no-class", accelerator={"class": "nvidia-b300", "count": 1}),
        _md(
            namespace,
            "too-big",
            model={"catalog": "llama-v3p1-405b-instruct"},
            accelerator={"class": "nvidia-l4-24gb", "count": 4},
        ),
        _md(
            namespace,
            "starved",
            model={"catalog": "llama-v3p1-8b-instruct"},
            engine={"maxContextLength": 8192},
            accelerator={"class": "nvidia-h200-141gb", "count": 8},
            replicas={"min": 4, "max": 4},
        ),
    ]
    captured: dict[str, dict[str, Any]] = {}
    # Static capacity, so the starved one stays short of GPUs.
    with run_operator([namespace]):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        captured["healthy"] = wait_for(
            lambda: phase_is("healthy", "Ready"), timeout=90, what="Ready"
        )
        captured["zero"] = wait_for(
            lambda: phase_is("zero", "ScaledToZero"), timeout=90, what="zero"
        )
        captured["no-class"] = wait_for(
            lambda: phase_is("no-class", "Failed"), timeout=60, what="Failed"
        )
        captured["too-big"] = wait_for(
            lambda: phase_is("too-big", "Failed"), timeout=60, what="Failed"
        )
        captured["starved"] = wait_for(
            lambda: phase_is("starved", "Provisioning", "Degraded"), timeout=60, what="starved"
        )
    # The operator is stopped: a spec change now leaves observedGeneration behind.
    docs[0]["spec"]["engine"] = {"maxContextLength": 4096}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(docs[0]))
    captured["stale"] = get("healthy")
    assert (
        captured["stale"]["metadata"]["generation"]
        > captured["stale"]["status"]["observedGeneration"]
    )
    # Brand new, never reconciled: no status at all.
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_md(namespace, "fresh")))
    captured["fresh"] = get("fresh")

    expected = {
        "healthy": "Healthy",
        "zero": "Suspended",
        "no-class": "Degraded",
        "too-big": "Degraded",
        "starved": "Progressing",
        "stale": "Progressing",
        "fresh": "Progressing",
    }
    verdicts = {name: health(obj)["status"] for name, obj in captured.items()}
    assert verdicts == expected
