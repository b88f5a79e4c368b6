"""The model-server pod: a base plus named patches, each pure and checked on its own."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelplane.builders import pod as pods
from modelplane.builders import preload
from modelplane.builders.engine import NODE_CACHE_MOUNT
from modelplane.builders.resolve import Resolved, resolve
from modelplane.commands import default_classes
from modelplane_testbed.factories import model_deployment, spec

USER_ENV = [{"name": "MY_FLAG", "value": "1"}, {"name": "MY_KEY", "secretKeyRef": {"name": "s"}}]
CREDENTIALS = {"catalog": "llama-v3p1-8b-instruct", "credentialsSecretRef": {"name": "hf"}}


def resolved(**fields: Any) -> Resolved:
    return resolve(model_deployment(spec_=spec(**fields)), default_classes())


def server(pod: dict[str, Any]) -> dict[str, Any]:
    return pods.server_container(pod)


def env_names(pod: dict[str, Any]) -> list[str]:
    return [e["name"] for e in server(pod)["env"]]


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def mount(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in server(pod)["volumeMounts"] if m["name"] == name)


def test_the_base_has_placement_hardening_gpus_and_the_users_env_but_no_engine() -> None:
    r = resolved(model=CREDENTIALS, engine={"maxContextLength": 8192, "env": USER_ENV})
    pod = pods.base_pod(r)
    c = server(pod)
    assert c["command"] == c["args"] == c["ports"] == []
    assert c["startupProbe"] == c["readinessProbe"] == c["livenessProbe"] == {}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(r.gpu_count)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["nodeSelector"] and pod["spec"]["tolerations"]
    # The credentials by reference, then the user's env last.
    assert env_names(pod) == [r.engine.hf_token_env, "MY_FLAG", "MY_KEY"]
    assert c["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert c["env"][2]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "MY_KEY"}
    assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]


def test_the_engine_patch_fills_the_command_line_probes_caches_and_metrics() -> None:
    r = resolved(engine={"maxContextLength": 8192, "env": USER_ENV})
    pod = pods.patch_engine(pods.base_pod(r), r)
    c = server(pod)
    assert c["command"] == list(r.engine.command)
    assert "--max-model-len" in c["args"] and "8192" in c["args"]
    assert c["ports"] == [{"name": "http", "containerPort": r.engine.port, "protocol": "TCP"}]
    assert c["startupProbe"]["httpGet"]["path"] == r.engine.health_path
    # The engine's cache locations go first; the user's env stays last.
    assert env_names(pod) == [r.engine.cache_env, "VLLM_CACHE_ROOT", "HOME", "MY_FLAG", "MY_KEY"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(r.engine.port)
    assert r.engine.dev_shm_gib
    assert volume(pod, "dshm")["emptyDir"]["medium"] == "Memory"
    assert mount(pod, "dshm")["mountPath"] == "/dev/shm"


@pytest.mark.parametrize(
    ("uri", "source", "path"),
    [
        (
            "pvc://weights/mistral-7b",
            {"persistentVolumeClaim": {"claimName": "weights"}},
            "/models/weights",
        ),
        (
            "oci://registry.example/merged:v1",
            {"image": {"reference": "registry.example/merged:v1"}},
            "/models/oci",
        ),
    ],
)
def test_the_weights_patch_mounts_the_users_volume_read_only(
    uri: str, source: dict[str, Any], path: str
) -> None:
    r = resolved(
        model={"uri": uri},
        engine={"maxContextLength": 8192},
        accelerator={"class": "nvidia-l40s-48gb", "count": 1},
    )
    pod = pods.patch_weights(pods.base_pod(r), r)
    kind, fields = next(iter(source.items()))
    assert fields.items() <= volume(pod, "weights")[kind].items()
    assert mount(pod, "weights") == {"name": "weights", "mountPath": path, "readOnly": True}
    hub = resolved()
    assert pods.patch_weights(pods.base_pod(hub), hub) == pods.base_pod(hub)


def test_the_adapters_patch_turns_on_runtime_lora_before_the_users_env() -> None:
    r = resolved(engine={"maxContextLength": 8192, "lora": {}, "env": USER_ENV})
    pod = pods.patch_adapters(pods.base_pod(r), r)
    lora_env = sorted(r.engine.runtime_lora_env)
    assert lora_env and env_names(pod) == [*lora_env, "MY_FLAG", "MY_KEY"]
    plain = resolved()
    assert pods.patch_adapters(pods.base_pod(plain), plain) == pods.base_pod(plain)


def test_the_node_cache_patch_reads_the_nodes_cache_offline_and_downloads_when_cold() -> None:
    r = resolved(
        model=CREDENTIALS,
        engine={"maxContextLength": 8192, "env": USER_ENV},
        preload={"mode": "NodeLocal"},
    )
    pod = pods.patch_node_cache(pods.base_pod(r), r)
    assert pod["spec"]["affinity"] == preload.node_local_affinity(r)
    assert env_names(pod) == [r.engine.hf_token_env, "HF_HUB_OFFLINE", "MY_FLAG", "MY_KEY"]
    assert volume(pod, "node-cache")["hostPath"]["path"] == preload.cache_dir(r)
    assert mount(pod, "node-cache") == {
        "name": "node-cache",
        "mountPath": NODE_CACHE_MOUNT,
        "readOnly": True,
    }
    (init,) = pod["spec"]["initContainers"]
    assert init["name"] == "node-cache"
    # The init container may download: it has the token and the user's env, never offline.
    assert [e["name"] for e in init["env"]] == [r.engine.hf_token_env, "MY_FLAG", "MY_KEY"]
    assert init["securityContext"] == server(pod)["securityContext"]


def test_the_node_cache_patch_stays_online_for_runtime_adapters() -> None:
    r = resolved(engine={"maxContextLength": 8192, "lora": {}}, preload={"mode": "NodeLocal"})
    pod = pods.patch_node_cache(pods.base_pod(r), r)
    assert "HF_HUB_OFFLINE" not in env_names(pod)
    assert pod["spec"]["initContainers"][0]["name"] == "node-cache"


def test_the_node_cache_patch_only_prefers_cached_nodes_for_streamed_weights() -> None:
    r = resolved(
        model={"uri": "s3://bucket/llama"},
        engine={"maxContextLength": 8192},
        accelerator={"class": "nvidia-l40s-48gb", "count": 1},
        preload={"mode": "NodeLocal"},
    )
    pod = pods.patch_node_cache(pods.base_pod(r), r)
    assert pod["spec"]["affinity"] == preload.node_local_affinity(r)
    assert "initContainers" not in pod["spec"]
    assert pod["spec"]["volumes"] == pods.base_pod(r)["spec"]["volumes"]
    plain = resolved()
    assert pods.patch_node_cache(pods.base_pod(plain), plain) == pods.base_pod(plain)


def test_the_shared_volume_patch_mounts_the_claim_and_waits_for_the_marker() -> None:
    r = resolved(preload={"mode": "SharedVolume"})
    pod = pods.patch_shared_volume(pods.base_pod(r), r)
    claim = volume(pod, "weights")["persistentVolumeClaim"]
    assert claim == {"claimName": preload.claim_name(r), "readOnly": True}
    assert mount(pod, "weights")["mountPath"] == preload.SHARED_MOUNT
    (wait,) = pod["spec"]["initContainers"]
    assert wait["name"] == "wait-for-weights"
    assert preload.COMPLETE_MARKER in wait["command"][2]
    plain = resolved()
    assert pods.patch_shared_volume(pods.base_pod(plain), plain) == pods.base_pod(plain)


@pytest.mark.parametrize("patch", pods.PATCHES, ids=lambda p: p.__name__)
def test_every_patch_is_pure(patch: pods.Patch) -> None:
    r = resolved(
        model=CREDENTIALS,
        engine={"maxContextLength": 8192, "lora": {}, "env": USER_ENV},
        preload={"mode": "NodeLocal"},
    )
    before = pods.base_pod(r)
    kept = copy.deepcopy(before)
    after = patch(before, r)
    assert before == kept, f"{patch.__name__} changed its input"
    assert patch(kept, r) == after, f"{patch.__name__} is not deterministic"


def test_the_server_pod_is_the_base_through_every_patch_in_order() -> None:
    order = (
        pods.patch_engine,
        pods.patch_weights,
        pods.patch_adapters,
        pods.patch_node_cache,
        pods.patch_shared_volume,
    )
    assert order == pods.PATCHES
    r = resolved(preload={"mode": "SharedVolume"})
    pod = pods.base_pod(r)
    for patch in order:
        pod = patch(pod, r)
    assert pods.server_pod(r) == pod
