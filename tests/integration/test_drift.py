"""Hand edits to a child are undone (issue #15): the plan compared the desired hash with the
`modelplane.io/applied-hash` annotation only, never with the live object."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION = "modelplane.io", "v1alpha1"


@pytest.fixture(scope="module", autouse=True)
def accelerator_classes(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())


def _md(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "drift", "namespace": ns},
        "spec": {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-8b-instruct"},
            "engine": {"maxContextLength": 8192},
            "replicas": {"min": 1, "max": 1},
        },
    }


def _service_exists(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service("drift", ns)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def test_hand_edits_to_the_model_server_and_a_deleted_service_are_undone(
    cluster: LocalCluster, api: Any, namespace: str, run_operator: Any
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    with run_operator([namespace]):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_md(namespace)))
        wait_for(
            lambda: (
                _service_exists(core, namespace)
                and apps.read_namespaced_deployment("drift", namespace) is not None
            ),
            timeout=180,
            what="children created",
        )
        container = apps.read_namespaced_deployment("drift", namespace).spec.template.spec
        image, args = container.containers[0].image, list(container.containers[0].args)
        edit = [
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x:1"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": ["-h"]},
        ]
        cluster.kubectl(
            "patch", "deployment", "drift", "-n", namespace, "--type=json", "-p", json.dumps(edit)
        )
        live = apps.read_namespaced_deployment("drift", namespace).spec.template.spec.containers
        assert live[0].image == "x:1", "the hand edit did not land"
        wait_for(
            lambda: (
                apps.read_namespaced_deployment("drift", namespace)
                .spec.template.spec.containers[0]
                .image
                == image
            ),
            timeout=180,
            what="the image restored",
        )
        restored = apps.read_namespaced_deployment("drift", namespace).spec.template.spec
        assert list(restored.containers[0].args) == args
        cluster.kubectl("delete", "service", "drift", "-n", namespace)
        wait_for(lambda: _service_exists(core, namespace), timeout=180, what="Service recreated")
