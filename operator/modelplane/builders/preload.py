"""Preloading: weights on the nodes before serving pods land, and warm nodes kept provisioned.

* NodeLocal: one cache Job per node of the model's accelerator class downloads the weights to
  the node's local disk (`/var/lib/modelplane/cache/<key>`); the node then carries the label
  `cache.modelplane.io/<key>=ready` and an annotation recording what, how big and when. The key
  is a hash of (uri, revision): identical weights are cached once per node, whoever asks. The
  Job writes `COMPLETE_MARKER` last. Serving pods *prefer* cached nodes (never require them:
  the pod template must not change when a node becomes warm) and mount the node's directory
  read-only; the engine loads from it when the marker is there, else the pod downloads the
  weights itself (`pod.node_cache_init_container`). The Job runs the engine image, so the
  image is pre-pulled on the node as a side effect.
* SharedVolume: a ReadOnlyMany claim filled once by a Job; serving pods mount it read-only.
* warmNodes: N placeholder pods of the model's shape at a negative priority keep N nodes of the
  class provisioned; a real model-server pod preempts one and starts on a warm node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from modelplane.api.enums import PreloadMode
from modelplane.builders.common import (
    CACHE_MOUNT,
    LABEL_DEPLOYMENT,
    BuildContext,
    credentials_env,
    labels,
    node_selector,
)
from modelplane.builders.resolve import Resolved
from modelplane.catalog.accelerators import GPU_RESOURCE, LABEL_ACCELERATOR_CLASS
from modelplane.catalog.sizing import GB_PER_GIB, weights_gib

CACHE_ROOT = "/var/lib/modelplane/cache"
CACHE_LABEL_PREFIX = "cache.modelplane.io/"
LABEL_CACHE_KEY = "modelplane.io/cache-key"
LABEL_CACHE_NODE = "modelplane.io/cache-node"
LABEL_WARM_POOL = "modelplane.io/warm-pool"
PLACEHOLDER_IMAGE = "registry.k8s.io/pause:3.10"
#: Where SharedVolume replicas mount the filled claim (read-only).
SHARED_MOUNT = "/models/shared"
#: Written last by a cache or fill Job: the weights beside it are complete.
COMPLETE_MARKER = ".modelplane-complete"


@dataclass(frozen=True)
class PreloadView:
    """What the preload loop found for one ModelDeployment."""

    cached_nodes: int = 0
    class_nodes: int = 0
    downloading: int = 0
    message: str | None = None
    #: Cache Jobs at our names that modelplane did not create (left alone: a ChildConflict).
    foreign_jobs: tuple[str, ...] = ()


def cache_key(r: Resolved) -> str:
    return hashlib.sha256(f"{r.uri}|{r.revision or ''}".encode()).hexdigest()[:12]


def cache_label(r: Resolved) -> str:
    return CACHE_LABEL_PREFIX + cache_key(r)


def weights_gb(r: Resolved) -> float:
    if r.catalog is not None and r.precision is not None:
        return weights_gib(r.catalog, r.precision) * GB_PER_GIB
    return 10.0


def cache_dir(r: Resolved) -> str:
    """The node directory a cache Job fills (and a serving pod reads, read-only)."""
    return f"{CACHE_ROOT}/{cache_key(r)}"


def node_local_affinity(r: Resolved) -> dict[str, Any]:
    """Prefer nodes holding the weights, always: a node becoming warm never changes the pod
    template (which would roll every Ready replica), and a pod on a cold node still starts,
    downloading the weights itself."""
    term = {"matchExpressions": [{"key": cache_label(r), "operator": "In", "values": ["ready"]}]}
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": term}]
        }
    }


def job_name(key: str, node: str) -> str:
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    return f"cache-{key}-{digest}"


def build_cache_job(r: Resolved, node: str, ctx: BuildContext) -> dict[str, Any]:
    """Download the weights onto one node's local disk (retained after the Job is gone)."""
    key = cache_key(r)
    meta_labels = {**_cache_labels(r), LABEL_CACHE_KEY: key}
    pod_annotations: dict[str, str] = {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(key, node),
            "namespace": r.namespace,
            "labels": {**meta_labels, LABEL_CACHE_NODE: node},
        },
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": meta_labels, "annotations": pod_annotations},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "nodeName": node,
                    "automountServiceAccountToken": False,
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_download_container(r)],
                    "volumes": [
                        {
                            "name": "cache",
                            "hostPath": {
                                "path": cache_dir(r),
                                "type": "DirectoryOrCreate",
                            },
                        },
                        {"name": "hf", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def _download_container(r: Resolved) -> dict[str, Any]:
    """The cache Job's container: the Hub snapshot into the node's cache directory, the
    complete marker last (object-store weights are streamed by the engine instead)."""
    rest = r.uri.partition("://")[2]
    script = (
        "import sys; from huggingface_hub import snapshot_download; "
        "snapshot_download(sys.argv[1], revision=sys.argv[2] or None, local_dir=sys.argv[3])"
        # Written last: serving pods use the directory only once this marker is there.
        f"; open(sys.argv[3] + '/{COMPLETE_MARKER}', 'w').close()"
        if r.scheme == "hf"
        else "import sys; print('object-store weights are streamed at start-up:', sys.argv[1])"
    )
    return {
        "name": "download",
        "image": r.image,
        "command": ["python3", "-c", script],
        "args": [rest, r.revision or "", cache_dir(r)],
        "env": [{"name": "HF_HOME", "value": f"{CACHE_MOUNT}/hf"}, *credentials_env(r)],
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "4Gi"},
        },
        "volumeMounts": [
            {"name": "cache", "mountPath": cache_dir(r)},
            {"name": "hf", "mountPath": CACHE_MOUNT},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def claim_name(r: Resolved) -> str:
    return f"weights-{cache_key(r)}"


def build_shared_volume_claim(r: Resolved, ctx: BuildContext) -> dict[str, Any]:
    """The claim the weights are filled into once, then mounted read-only by every replica."""
    size = max(int(weights_gb(r) / GB_PER_GIB * 1.2) + 1, 1)
    spec: dict[str, Any] = {
        # ReadOnlyMany for the replicas; the fill Job writes it once from a single node.
        "accessModes": ["ReadOnlyMany", "ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{size}Gi"}},
    }
    if ctx.shared_volume_storage_class:
        spec["storageClassName"] = ctx.shared_volume_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(r),
            "namespace": r.namespace,
            "labels": {**_cache_labels(r), LABEL_CACHE_KEY: cache_key(r)},
        },
        "spec": spec,
    }


def _cache_labels(r: Resolved) -> dict[str, str]:
    """Labels of cache objects: no modelplane.io/deployment (they are not replicas)."""
    return {k: v for k, v in labels(r, component="weight-cache").items() if k != LABEL_DEPLOYMENT}


def build_fill_job(r: Resolved, ctx: BuildContext) -> dict[str, Any]:
    """Fill the shared claim once; the marker file tells replicas the weights are complete."""
    job = build_cache_job(r, "shared", ctx)
    key = cache_key(r)
    job["metadata"]["name"] = f"fill-{key}"
    job["metadata"]["labels"].pop(LABEL_CACHE_NODE, None)
    pod = job["spec"]["template"]["spec"]
    del pod["nodeName"]
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    c = pod["containers"][0]
    c["args"] = [*c["args"][:2], SHARED_MOUNT]
    if r.scheme != "hf":  # the hf download writes the marker itself
        c["command"] = [
            "python3",
            "-c",
            c["command"][2] + f"; open(sys.argv[3] + '/{COMPLETE_MARKER}', 'w').close()",
        ]
    c["volumeMounts"] = [
        {"name": "weights", "mountPath": SHARED_MOUNT},
        {"name": "hf", "mountPath": CACHE_MOUNT},
    ]
    pod["volumes"] = [
        {"name": "weights", "persistentVolumeClaim": {"claimName": claim_name(r)}},
        {"name": "hf", "emptyDir": {}},
    ]
    return job


def build_warm_pool(r: Resolved, n: int, ctx: BuildContext) -> dict[str, Any] | None:
    """N placeholder pods of the model's GPU shape at negative priority (preempted by real pods)."""
    if n <= 0:
        return None
    sel = {LABEL_WARM_POOL: r.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{r.name}-warm",
            "namespace": r.namespace,
            "labels": {**labels(r, component="warm-pool"), **sel},
        },
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": {
                    "labels": {
                        **sel,
                        "app.kubernetes.io/managed-by": "modelplane",
                        # Capacity providers provision for placeholders as for model servers.
                        LABEL_ACCELERATOR_CLASS: r.accelerator_class,
                    }
                },
                "spec": {
                    "priorityClassName": ctx.placeholder_priority_class,
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "nodeSelector": node_selector(r),
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_placeholder_container(r)],
                },
            },
        },
    }


def _placeholder_container(r: Resolved) -> dict[str, Any]:
    """A paused container holding the model's GPUs (and almost nothing else)."""
    gpus = str(r.gpu_count)
    return {
        "name": "placeholder",
        "image": PLACEHOLDER_IMAGE,
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi", GPU_RESOURCE: gpus},
            "limits": {"memory": "64Mi", GPU_RESOURCE: gpus},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }


def wants_node_local(mode: PreloadMode | None) -> bool:
    return mode == PreloadMode.NODE_LOCAL


def wants_shared_volume(mode: PreloadMode | None) -> bool:
    return mode == PreloadMode.SHARED_VOLUME
