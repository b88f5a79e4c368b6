"""Bad input is rejected by the real apiserver (OpenAPI + CEL) with a message that says what to fix."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane_testbed.localcluster import LocalCluster

pytestmark = pytest.mark.integration

GOOD: dict[str, Any] = {
    "apiVersion": "modelplane.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "probe"},
    "spec": {
        "tier": "OnDemand",
        "model": {"catalog": "llama-v3p1-8b-instruct"},
        "engine": {"maxContextLength": 8192},
        "accelerator": {"class": "nvidia-l4-24gb", "count": 4},
        "replicas": {"min": 1, "max": 2},
    },
}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        keys = path.split(".")
        cur = spec
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        if value is _DELETE:
            cur.pop(keys[-1], None)
        else:
            cur[keys[-1]] = value

    return mutate


_DELETE = object()

BAD: list[tuple[str, list[Callable[[dict[str, Any]], None]], str]] = [
    ("negative-gpu-count", [_set("accelerator.count", -1)], "greater than or equal to 1"),
    ("negative-min-replicas", [_set("replicas.min", -2)], "greater than or equal to 0"),
    (
        "min-above-max",
        [_set("replicas", {"min": 3, "max": 1})],
        "replicas.min must be <= replicas.max",
    ),
    (
        "unknown-tier",
        [_set("tier", "Dedicated")],
        'supported values: "Serverless", "OnDemand", "FineTuned"',
    ),
    (
        "unknown-task",
        [_set("task", "Reranking")],
        'supported values: "Chat", "Completion", "Embedding", "Transcription"',
    ),
    ("unknown-engine", [_set("engine.type", "TGI")], 'supported values: "VLLM", "SGLang", "TEI"'),
    (
        "gpus-not-divisible",
        [_set("engine.tensorParallelSize", 3)],
        "must be a multiple of engine.tensorParallelSize",
    ),
    (
        "scale-to-zero-below-5m",
        [_set("replicas", {"min": 0, "max": 2}), _set("autoscaling.scaleToZeroWindow", "2m")],
        "scaleToZeroWindow must be at least 5m",
    ),
    (
        "scale-to-zero-with-min",
        [_set("autoscaling.scaleToZeroWindow", "1h")],
        "only applies with replicas.min 0",
    ),
    (
        "scale-down-window-too-short",
        [_set("autoscaling.scaleDownWindow", "10s")],
        "scaleDownWindow must be at least 30s",
    ),
    (
        "bad-duration",
        [_set("autoscaling.scaleUpWindow", "30 seconds")],
        "must be a duration such as 30s",
    ),
    (
        "non-positive-target",
        [_set("autoscaling.loadTargets", {"concurrentRequests": 0})],
        "should be greater than 0",
    ),
    (
        "kv-target-above-one",
        [_set("autoscaling.loadTargets", {"kvCacheUtilization": 1.5})],
        "less than or equal to 1",
    ),
    (
        "token-in-env",
        [_set("engine.env", [{"name": "HF_TOKEN", "value": "hf_abc"}])],
        "do not put credentials in the spec",
    ),
    (
        "token-in-args",
        [_set("engine.args", ["--hf-token=hf_abcdefghijklmnopqrstuvwxyz0123456789"])],
        "do not put tokens in engine.args",
    ),
    (
        "finetuned-without-adapters",
        [_set("tier", "FineTuned"), _set("base", {"catalog": "llama-v3p1-8b-instruct"})],
        "needs spec.base",
    ),
    (
        "serverless-choosing-gpus",
        [_set("tier", "Serverless")],
        "Serverless deployments run on shared, platform-managed GPUs",
    ),
    ("no-model-source", [_set("model", {"revision": "abc"})], "set model.catalog"),
    (
        "bad-uri-scheme",
        [_set("model", {"uri": "http://example.com/model"})],
        "must be a URI starting with hf://",
    ),
    (
        "draft-without-model",
        [_set("engine.speculativeDecoding", {"mode": "DraftModel"})],
        "needs draftModel",
    ),
    (
        "tei-for-chat",
        [_set("engine.type", "TEI"), _set("task", "Chat")],
        "TEI serves only task Embedding",
    ),
    (
        "adapters-on-ondemand",
        [_set("adapters", [{"name": "a", "uri": "hf://x/y"}])],
        "only for tier FineTuned",
    ),
    ("unknown-field", [_set("gpus", 8)], 'unknown field "spec.gpus"'),
]


@pytest.mark.parametrize(("case", "mutations", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_a_fix_it_message(
    cluster: LocalCluster,
    namespace: str,
    case: str,
    mutations: list[Callable[[dict[str, Any]], None]],
    message: str,
) -> None:
    doc = copy.deepcopy(GOOD)
    doc["metadata"]["namespace"] = namespace
    for m in mutations:
        m(doc["spec"])
    out = cluster.kubectl(
        "apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    err = cluster_err(cluster, doc)
    assert message in err, f"{case}: {err}"
    assert out == ""  # nothing was created
    assert cluster.kubectl("get", "mdep", "-n", namespace, "-o", "name") == ""


def cluster_err(cluster: LocalCluster, doc: dict[str, Any]) -> str:
    api = cluster.api()
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "modelplane.io",
            "v1alpha1",
            doc["metadata"]["namespace"],
            "modeldeployments",
            doc,
            field_validation="Strict",
        )
    assert exc.value.status in (400, 422), exc.value.body
    return str(json.loads(exc.value.body)["message"])


def test_the_good_baseline_is_accepted(cluster: LocalCluster, namespace: str) -> None:
    doc = copy.deepcopy(GOOD)
    doc["metadata"]["namespace"] = namespace
    assert "created" in cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def test_tier_is_immutable(cluster: LocalCluster, namespace: str) -> None:
    doc = copy.deepcopy(GOOD)
    doc["metadata"]["namespace"] = namespace
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    doc["spec"]["tier"] = "Serverless"
    del doc["spec"]["accelerator"], doc["spec"]["replicas"]
    out = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out == ""
    spec = yaml.safe_load(cluster.kubectl("get", "mdep", "probe", "-n", namespace, "-o", "yaml"))[
        "spec"
    ]
    assert spec["tier"] == "OnDemand"
    with pytest.raises(Exception, match="tier is immutable"):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


LONGEST = "m" + "-x" * 31  # 63 characters
BAD_NAMES = [
    ("64-characters", LONGEST + "y", "metadata.name must be at most 63 characters"),
    ("255-characters-a-valid-cr-name", "m" * 250, "metadata.name must be at most 63 characters"),
    ("leading-digit", "8b-chat", "Kubernetes before 1.36 (this release supports 1.30 and later)"),
    ("dotted", "llama.chat", "rejects Service names that start with a digit or contain '.'"),
]


@pytest.mark.parametrize(("case", "name", "message"), BAD_NAMES, ids=[b[0] for b in BAD_NAMES])
def test_names_a_service_could_not_carry_are_rejected(
    cluster: LocalCluster, namespace: str, case: str, name: str, message: str
) -> None:
    doc = copy.deepcopy(GOOD)
    doc["metadata"] = {"name": name, "namespace": namespace}
    err = cluster_err(cluster, doc)
    assert message in err, f"{case}: {err}"
    assert cluster.kubectl("get", "mdep", "-n", namespace, "-o", "name") == ""


def test_the_longest_allowed_name_is_accepted(cluster: LocalCluster, namespace: str) -> None:
    assert len(LONGEST) == 63
    doc = copy.deepcopy(GOOD)
    doc["metadata"] = {"name": LONGEST, "namespace": namespace}
    assert "created" in cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
