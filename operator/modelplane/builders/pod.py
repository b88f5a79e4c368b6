"""The model-server pod, built as a base plus named patches.

`server_pod(r)` is `base_pod(r)` passed through `PATCHES` in order. Each patch is a pure
function `(pod, r) -> pod` that returns a new pod template and changes only what its concern
needs (a patch that does not apply returns an equal copy):

* `patch_engine`: the engine's command line, port, probes, cache locations, shared memory and
  metrics annotations;
* `patch_weights`: weights the user brought in a volume (a PVC or an OCI image, e.g. merged
  fine-tuned weights served as `model.uri`);
* `patch_adapters`: runtime LoRA loading (FineTuned and `engine.lora`);
* `patch_node_cache`: NodeLocal preload (prefer cached nodes, read the node's cache or
  download on a cold node);
* `patch_shared_volume`: SharedVolume preload (mount the filled claim, wait for its marker).

Environment order is part of the contract: the engine's cache locations, the credentials, the
patches' variables, then the user's `engine.env` last (the last duplicate wins in a container,
so the user can override any of ours). Patches add theirs with `_add_env`, before the user's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from modelplane.builders import preload
from modelplane.builders.common import (
    CACHE_MOUNT,
    credentials_env,
    gpu_tolerations,
    labels,
    node_selector,
    selector,
)
from modelplane.builders.engine import (
    DRAIN_SECONDS,
    NODE_CACHE_MOUNT,
    NODE_LOCAL_MODEL,
    engine_args,
    needs_the_hub,
    reads_node_cache,
)
from modelplane.builders.resolve import Resolved
from modelplane.catalog.accelerators import GPU_RESOURCE, LABEL_ACCELERATOR_CLASS

Pod = dict[str, Any]
Patch = Callable[[Pod, Resolved], Pod]

#: Seconds a pod keeps receiving no new traffic before the engine is told to stop.
PRESTOP_SLEEP = 15
GRACE_SECONDS = PRESTOP_SLEEP + DRAIN_SECONDS + 15


def server_pod(r: Resolved) -> Pod:
    """The model server's pod template (metadata and spec)."""
    pod = base_pod(r)
    for patch in PATCHES:
        pod = patch(pod, r)
    return pod


def base_pod(r: Resolved) -> Pod:
    """What every model-server pod has, whatever it serves: placement on the accelerator
    class, hardening, GPU resources, graceful drain, a writable cache and /tmp, the
    credentials and the user's env. The engine's parts are empty until `patch_engine`."""
    spread = [
        ("topology.kubernetes.io/zone", "DoNotSchedule"),
        ("kubernetes.io/hostname", "ScheduleAnyway"),
    ]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": {"fsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": node_selector(r),
        "tolerations": gpu_tolerations(r.accelerator),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": selector(r)},
            }
            for key, when in spread
        ],
        "containers": [_base_container(r)],
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
        ],
    }
    return {
        "metadata": {
            "labels": {**labels(r), LABEL_ACCELERATOR_CLASS: r.accelerator_class},
            # Never evict a loading or serving model to consolidate nodes.
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
        },
        "spec": spec,
    }


def _base_container(r: Resolved) -> dict[str, Any]:
    """The server container without its engine: hardened, GPUs, drain, caches, env."""
    return {
        "name": "server",
        "image": r.image,
        "command": [],
        "args": [],
        "ports": [],
        "env": [*credentials_env(r), *_user_env(r)],
        "resources": _gpu_resources(r.gpu_count),
        "startupProbe": {},
        "readinessProbe": {},
        "livenessProbe": {},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP}}},
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 2000,  # the vLLM image's built-in user
            "runAsGroup": 0,
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def patch_engine(pod: Pod, r: Resolved) -> Pod:
    """The engine: command line, port, health probes, cache locations, /dev/shm, metrics."""
    pod = copy.deepcopy(pod)
    p = r.engine
    c = server_container(pod)
    c["command"] = list(p.command)
    c["args"] = engine_args(r)
    c["ports"] = [{"name": "http", "containerPort": p.port, "protocol": "TCP"}]
    c["env"][:0] = [
        {"name": p.cache_env, "value": f"{CACHE_MOUNT}/hf"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_MOUNT}/vllm"},
        {"name": "HOME", "value": f"{CACHE_MOUNT}/home"},
    ]
    probe = {"httpGet": {"path": p.health_path, "port": "http"}}
    # Startup budget grows with the weights to load (about 1 GiB/s from a cold cache).
    big = r.catalog is not None and r.catalog.arch.params_billion >= 100
    c["startupProbe"] = {**probe, "periodSeconds": 10, "failureThreshold": 360 if big else 180}
    c["readinessProbe"] = {**probe, "periodSeconds": 5, "failureThreshold": 3}
    c["livenessProbe"] = {**probe, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5}
    if p.dev_shm_gib:
        shm = p.dev_shm_gib * max(r.tensor_parallel, 1)
        c["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
        pod["spec"]["volumes"].append(
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm}Gi"}}
        )
    pod["metadata"]["annotations"].update(
        {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(p.port),
            "prometheus.io/path": p.metrics_path,
        }
    )
    return pod


def patch_weights(pod: Pod, r: Resolved) -> Pod:
    """Weights in a volume of the user's: a PVC (`pvc://claim/path`) or an OCI image
    (`oci://ref`, an image volume), mounted read-only where `model_argument` points."""
    pod = copy.deepcopy(pod)
    scheme, _, rest = r.uri.partition("://")
    if scheme == "pvc":
        claim = rest.partition("/")[0]
        mount = f"/models/{claim}"
        volume: dict[str, Any] = {"claimName": claim, "readOnly": True}
        _add_volume(pod, {"name": "weights", "persistentVolumeClaim": volume}, mount)
    elif scheme == "oci":
        volume = {"reference": rest, "pullPolicy": "IfNotPresent"}
        _add_volume(pod, {"name": "weights", "image": volume}, "/models/oci")
    return pod


def patch_adapters(pod: Pod, r: Resolved) -> Pod:
    """Runtime LoRA loading: the engine's environment switches for it (args: `engine_args`)."""
    pod = copy.deepcopy(pod)
    if r.lora:
        env = [{"name": k, "value": v} for k, v in sorted(r.engine.runtime_lora_env.items())]
        _add_env(pod, r, env)
    return pod


def patch_node_cache(pod: Pod, r: Resolved) -> Pod:
    """NodeLocal preload: prefer nodes holding the weights; with Hub weights, mount the
    node's cache read-only and link or download the weights before the engine starts."""
    pod = copy.deepcopy(pod)
    if preload.wants_node_local(r.preload_mode):
        pod["spec"]["affinity"] = preload.node_local_affinity(r)
    if not reads_node_cache(r):
        return pod
    c = server_container(pod)
    if not needs_the_hub(r):
        # The weights are on local disk before the engine starts (cache or init container).
        _add_env(pod, r, [{"name": "HF_HUB_OFFLINE", "value": "1"}])
    # The node's cache for these weights, read-only, where the engine loads them from.
    node_cache = {"path": preload.cache_dir(r), "type": "DirectoryOrCreate"}
    _add_volume(pod, {"name": "node-cache", "hostPath": node_cache}, NODE_CACHE_MOUNT)
    init_env = [json.loads(json.dumps(e)) for e in c["env"] if e["name"] != "HF_HUB_OFFLINE"]
    pod["spec"].setdefault("initContainers", []).append(
        {
            **node_cache_init_container(r, init_env),
            "securityContext": json.loads(json.dumps(c["securityContext"])),
        }
    )
    return pod


def patch_shared_volume(pod: Pod, r: Resolved) -> Pod:
    """SharedVolume preload: the filled claim read-only, and an init container that waits
    until the fill Job has written the complete marker."""
    pod = copy.deepcopy(pod)
    if not preload.wants_shared_volume(r.preload_mode):
        return pod
    claim = {"claimName": preload.claim_name(r), "readOnly": True}
    _add_volume(pod, {"name": "weights", "persistentVolumeClaim": claim}, preload.SHARED_MOUNT)
    marker = f"{preload.SHARED_MOUNT}/{preload.COMPLETE_MARKER}"
    pod["spec"].setdefault("initContainers", []).append(
        {
            "name": "wait-for-weights",
            "image": r.image,
            "command": [
                "python3",
                "-c",
                f"import os, time\nwhile not os.path.exists({marker!r}): time.sleep(5)",
            ],
            "volumeMounts": [
                {"name": "weights", "mountPath": preload.SHARED_MOUNT, "readOnly": True}
            ],
            "securityContext": server_container(pod)["securityContext"],
        }
    )
    return pod


#: The patches `server_pod` applies, in order (multi-node replicas will add theirs here).
PATCHES: tuple[Patch, ...] = (
    patch_engine,
    patch_weights,
    patch_adapters,
    patch_node_cache,
    patch_shared_volume,
)


def node_cache_init_container(r: Resolved, env: list[dict[str, Any]]) -> dict[str, Any]:
    """NodeLocal: point the engine's model path at the node's cache, or download on a cold node.

    The node's cache directory is mounted read-only (hostPath, DirectoryOrCreate: a node whose
    cache Job has not finished yet gets an empty directory instead of a pod stuck on a failed
    mount). The cache Job writes `COMPLETE_MARKER` last; when it is there, the model path
    becomes a link to the cached snapshot and nothing is downloaded. Otherwise this pod
    downloads the same snapshot itself into its own volume, as the Job would, and still starts.
    """
    return {
        "name": "node-cache",
        "image": r.image,
        "command": ["python3", "-c", NODE_CACHE_SCRIPT],
        "args": [
            NODE_CACHE_MOUNT,
            NODE_LOCAL_MODEL,
            preload.COMPLETE_MARKER,
            r.uri.partition("://")[2],
            r.revision or "",
        ],
        "env": env,
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "node-cache", "mountPath": NODE_CACHE_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    }


NODE_CACHE_SCRIPT = """\
import os, sys
cache, model, marker, repo, revision = sys.argv[1:6]
if os.path.islink(model):
    sys.exit(0)  # linked on an earlier start of this pod
if os.path.exists(os.path.join(cache, marker)) and not os.path.exists(model):
    os.symlink(cache, model)
    print("weights: the node's cache", cache)
    sys.exit(0)
print("weights: the node's cache is not filled yet; downloading", repo, "into the pod")
from huggingface_hub import snapshot_download
snapshot_download(repo, revision=revision or None, local_dir=model)
"""


def server_container(pod: Pod) -> dict[str, Any]:
    """The model server's container of a pod template built here."""
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def _gpu_resources(gpus: int) -> dict[str, Any]:
    return {
        "requests": {"cpu": str(2 * gpus), "memory": f"{12 * gpus}Gi", GPU_RESOURCE: str(gpus)},
        "limits": {"memory": f"{12 * gpus}Gi", GPU_RESOURCE: str(gpus)},
    }


def _user_env(r: Resolved) -> list[dict[str, Any]]:
    """The spec's `engine.env`: values, or Secret keys by reference."""
    env: list[dict[str, Any]] = []
    for name, value, ref in r.env:
        if ref is not None:
            key = {"name": ref.name, "key": ref.key or name}
            env.append({"name": name, "valueFrom": {"secretKeyRef": key}})
        else:
            env.append({"name": name, "value": value or ""})
    return env


def _add_env(pod: Pod, r: Resolved, entries: list[dict[str, Any]]) -> None:
    """Add the platform's variables to the server, before the user's (which stay last)."""
    env = server_container(pod)["env"]
    at = len(env) - len(r.env)
    env[at:at] = entries


def _add_volume(pod: Pod, volume: dict[str, Any], mount_path: str) -> None:
    """A read-only volume of the server, mounted at `mount_path`."""
    server_container(pod)["volumeMounts"].append(
        {"name": volume["name"], "mountPath": mount_path, "readOnly": True}
    )
    pod["spec"]["volumes"].append(volume)
