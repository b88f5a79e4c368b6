"""Pure builders: the desired children of a resolved ModelDeployment, as plain dicts.

`build_<child>(r, ctx) -> dict | None` (None means "this child should not exist"). No I/O, no
clock, no randomness: the same input gives byte-identical output, which the golden-file tests
in tests/data/builders/ pin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelplane.api.enums import (
    CapacityProvider,
    EngineType,
    Precision,
    PreloadMode,
    SpeculativeMode,
    Task,
)
from modelplane.api.v1alpha1 import AcceleratorClassSpec
from modelplane.builders.resolve import Resolved
from modelplane.catalog.accelerators import (
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    LABEL_ACCELERATOR_CLASS,
    LABEL_GPU_PRODUCT,
)

FIELD_MANAGER = "modelplane"
AUTOSCALER_FIELD_MANAGER = "modelplane-autoscaler"
LABEL_DEPLOYMENT = "modelplane.io/deployment"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_SPEC_HASH = "modelplane.io/applied-hash"
COMPONENT_SERVER = "model-server"

#: Seconds a pod keeps receiving no new traffic before the engine is told to stop.
PRESTOP_SLEEP = 15
#: Longest stream we let finish on shutdown (the engine's drain timeout).
DRAIN_SECONDS = 300
GRACE_SECONDS = PRESTOP_SLEEP + DRAIN_SECONDS + 15
#: NGram speculation window (vLLM's prompt_lookup_min / prompt_lookup_max).
NGRAM_LOOKUP_MIN = 2
NGRAM_LOOKUP_MAX = 4
CACHE_MOUNT = "/var/cache/modelplane"
#: NodeLocal preload: where the server pod mounts its node's cache directory (read-only) ...
NODE_CACHE_MOUNT = "/models/node-cache"
#: ... and the one path the engine loads the weights from: a link to that directory when the
#: cache Job has filled it, else the pod's own download (see `node_cache_init_container`).
NODE_LOCAL_MODEL = f"{CACHE_MOUNT}/model"


@dataclass(frozen=True)
class BuildContext:
    """Cluster-level inputs of the builders (from operator settings)."""

    capacity_provider: CapacityProvider = CapacityProvider.STATIC
    cluster_domain: str = "cluster.local"
    #: Where platform-owned objects (shared Serverless backends) live.
    operator_namespace: str = "modelplane-system"
    #: PriorityClass of warm-node placeholder pods.
    placeholder_priority_class: str = "modelplane-placeholder"
    #: StorageClass of SharedVolume claims ("" = the cluster's default).
    shared_volume_storage_class: str = ""


def labels(r: Resolved, component: str = COMPONENT_SERVER) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelplane-model",
        "app.kubernetes.io/instance": r.name,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/managed-by": "modelplane",
        "app.kubernetes.io/part-of": "modelplane",
        LABEL_DEPLOYMENT: r.name,
    }


def selector(r: Resolved) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: r.name, LABEL_COMPONENT: COMPONENT_SERVER}


def selector_string(r: Resolved) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(r).items())


def owner_reference(kind: str, name: str, uid: str, api_version: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def endpoint_url(r: Resolved, ctx: BuildContext) -> str:
    return f"http://{r.name}.{r.namespace}.svc.{ctx.cluster_domain}:8000/v1"


# --------------------------------------------------------------------------- engine arguments
def reads_node_cache(r: Resolved) -> bool:
    """NodeLocal preload of Hugging Face weights: the server reads what the cache Job wrote.
    (Object-store weights are streamed at start-up and never cached on nodes.)"""
    return r.preload_mode == PreloadMode.NODE_LOCAL and r.scheme == "hf"


def model_argument(r: Resolved) -> str:
    """How the engine is told where the weights are."""
    if reads_node_cache(r):
        return NODE_LOCAL_MODEL
    if r.preload_mode == PreloadMode.SHARED_VOLUME and r.scheme == "hf":
        return "/models/shared"  # filled once by the fill Job, mounted read-only
    scheme, _, rest = r.uri.partition("://")
    if scheme == "hf":
        return rest
    if scheme in ("s3", "gs"):
        return r.uri  # streamed by vLLM's runai_streamer load format
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return f"/models/{claim}/{path}".rstrip("/")
    if scheme == "oci":
        return "/models/oci"
    return r.uri


def served_names(r: Resolved) -> list[str]:
    """What ``--served-model-name`` gets: every name on engines that take several; the primary
    name on engines that take one (SGLang, TEI). Those serve whatever ``model`` a request
    names, so aliases and Serverless tenant names need no engine flag: they resolve at the
    endpoint (the tenant Service, a gateway) in front of the engine."""
    names = [r.served_name, *(a for a in r.aliases if a != r.served_name)]
    limit = r.engine.max_served_names
    return names if limit is None else names[:limit]


def engine_args(r: Resolved) -> list[str]:
    """The container args of the model server, engine by engine (passthrough args last).

    Every flag and value comes from the engine's contract (``catalog.engines``): the contract
    test renders a matrix of specs and checks each against the engine's released source."""
    p = r.engine
    args: list[str] = []
    model = model_argument(r)
    if p.model_flag:
        args += [p.model_flag, model]
    else:
        args.append(model)
    args += [p.host_flag, p.host, p.port_flag, str(p.port)]
    args += [p.served_model_name_flag, *served_names(r)]
    if r.revision and p.revision_flag and not reads_node_cache(r):  # pinned at download
        args += [p.revision_flag, r.revision]
    if p.download_dir_flag:
        args += [p.download_dir_flag, f"{CACHE_MOUNT}/weights"]
    if p.tensor_parallel_flag and r.tensor_parallel > 1:
        args += [p.tensor_parallel_flag, str(r.tensor_parallel)]
    if p.pipeline_parallel_flag and r.pipeline_parallel > 1:
        args += [p.pipeline_parallel_flag, str(r.pipeline_parallel)]
    if r.context_length and p.max_model_len_flag:
        args += [p.max_model_len_flag, str(r.context_length)]
    if r.precision is not None:
        args += _precision_args(r, r.precision)
    if r.gpu_memory_utilization and p.gpu_memory_utilization_flag:
        args += [p.gpu_memory_utilization_flag, str(r.gpu_memory_utilization)]
    if r.scheme in ("s3", "gs") and p.engine == EngineType.VLLM:
        args += ["--load-format", "runai_streamer"]
    if r.catalog and r.catalog.trust_remote_code and p.trust_remote_code_flag:
        args.append(p.trust_remote_code_flag)
    if r.task == Task.EMBEDDING:
        args += list(p.embedding_args)
        if p.pooling_flag and r.catalog and r.catalog.pooling:
            args += [p.pooling_flag, r.catalog.pooling]
    if r.tool_calling and r.tool_parser and p.tool_call_parser_flag:
        args += [*p.tool_choice_args, p.tool_call_parser_flag, r.tool_parser]
    if r.structured_outputs is True:
        args += list(p.structured_outputs_on)
    elif r.structured_outputs is False and p.structured_outputs_off is not None:
        args += list(p.structured_outputs_off)
    if r.speculative_mode != SpeculativeMode.DISABLED and p.speculative_config_flag:
        cfg: dict[str, Any] = {
            "method": p.speculative_methods[r.speculative_mode],
            "num_speculative_tokens": r.speculative_tokens,
        }
        if r.speculative_mode == SpeculativeMode.DRAFT_MODEL and r.draft_model:
            cfg["model"] = (
                r.draft_model.partition("://")[2]
                if r.draft_model.startswith("hf://")
                else r.draft_model
            )
        if r.speculative_mode == SpeculativeMode.NGRAM:
            # Both ends of the n-gram window: with only the maximum, vLLM sets the minimum to it.
            cfg["prompt_lookup_min"] = NGRAM_LOOKUP_MIN
            cfg["prompt_lookup_max"] = NGRAM_LOOKUP_MAX
        args += [p.speculative_config_flag, json.dumps(cfg, sort_keys=True, separators=(",", ":"))]
    if r.catalog and r.catalog.vision and p.mm_limits_flag and r.catalog.mm_limits_json:
        args += [p.mm_limits_flag, r.catalog.mm_limits_json]
    if r.lora and p.lora_enable_args:
        args += list(p.lora_enable_args)
        if p.max_loras_flag:
            args += [p.max_loras_flag, str(r.max_loras)]
        if p.max_lora_rank_flag:
            args += [p.max_lora_rank_flag, str(r.max_lora_rank)]
        args += list(p.lora_runtime_args)
    if p.shutdown_timeout_flag:
        args += [p.shutdown_timeout_flag, str(DRAIN_SECONDS)]
    args += list(p.metrics_enable_args)
    args += list(r.extra_args)
    return args


def _needs_the_hub(r: Resolved) -> bool:
    """Whether the running server fetches from the Hub: LoRA adapters loaded at runtime by
    repo id, or a draft model given as hf://."""
    draft_hf = r.speculative_mode == SpeculativeMode.DRAFT_MODEL and (
        r.draft_model or ""
    ).startswith("hf://")
    return r.lora or draft_hf


def _precision_args(r: Resolved, precision: Precision) -> list[str]:
    p = r.engine
    if precision in p.dtype_values and p.dtype_flag:
        return [p.dtype_flag, p.dtype_values[precision]]
    if r.catalog is None or r.catalog.needs_online_quantization(precision):
        q = p.online_quantization.get(precision)
        if q and p.quantization_flag:
            return [p.quantization_flag, q]
    method = r.catalog.checkpoint_quantization if r.catalog else None
    if method in p.deprecated_quantization and p.allow_deprecated_quantization_flag:
        # The engine detects the checkpoint's method and stops on a deprecated one unless told.
        return [p.allow_deprecated_quantization_flag]
    return []


# --------------------------------------------------------------------------- children
def _tolerations(acc: AcceleratorClassSpec) -> list[dict[str, Any]]:
    tols = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}]
    for t in acc.tolerations:
        entry = t.model_dump(by_alias=True, exclude_none=True)
        if entry not in tols:
            tols.append(entry)
    return tols


def node_selector(r: Resolved) -> dict[str, str]:
    return dict(r.accelerator.node_selector) or {LABEL_GPU_PRODUCT: r.accelerator.gpu_product}


def node_cache_init_container(r: Resolved, env: list[dict[str, Any]]) -> dict[str, Any]:
    """NodeLocal: point the engine's model path at the node's cache, or download on a cold node.

    The node's cache directory is mounted read-only (hostPath, DirectoryOrCreate: a node whose
    cache Job has not finished yet gets an empty directory instead of a pod stuck on a failed
    mount). The cache Job writes `COMPLETE_MARKER` last; when it is there, the model path
    becomes a link to the cached snapshot and nothing is downloaded. Otherwise this pod
    downloads the same snapshot itself into its own volume, as the Job would, and still starts.
    """
    from modelplane.builders import preload

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


def build_deployment(r: Resolved, ctx: BuildContext) -> dict[str, Any]:
    """The model-server Deployment. `spec.replicas` is left to the autoscaler (/scale).

    Nothing the cluster learns later (which nodes hold cached weights, load) is an input: the
    pod template changes only when the spec does, so no event of the world rolls the replicas."""
    from modelplane.builders import preload

    p = r.engine
    env: list[dict[str, Any]] = [
        {"name": p.cache_env, "value": f"{CACHE_MOUNT}/hf"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_MOUNT}/vllm"},
        {"name": "HOME", "value": f"{CACHE_MOUNT}/home"},
    ]
    if r.credentials is not None:
        env.append(
            {
                "name": p.hf_token_env,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": r.credentials.name,
                        "key": r.credentials.key or "token",
                    }
                },
            }
        )
    if r.lora:
        env += [{"name": k, "value": v} for k, v in sorted(p.runtime_lora_env.items())]
    if reads_node_cache(r) and not _needs_the_hub(r):
        # The weights are on local disk before the engine starts (cache or init container).
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    for name, value, ref in r.env:
        if ref is not None:
            env.append(
                {
                    "name": name,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key or name}},
                }
            )
        else:
            env.append({"name": name, "value": value or ""})
    probe = {"httpGet": {"path": p.health_path, "port": "http"}}
    # Startup budget grows with the weights to load (about 1 GiB/s from a cold cache).
    big = r.catalog is not None and r.catalog.arch.params_billion >= 100
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
    ]
    if p.dev_shm_gib:
        shm = p.dev_shm_gib * max(r.tensor_parallel, 1)
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm}Gi"}})
    scheme, _, rest = r.uri.partition("://")
    if scheme == "pvc":
        claim = rest.partition("/")[0]
        mounts.append({"name": "weights", "mountPath": f"/models/{claim}", "readOnly": True})
        volumes.append(
            {"name": "weights", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    elif scheme == "oci":
        mounts.append({"name": "weights", "mountPath": "/models/oci", "readOnly": True})
        volumes.append(
            {"name": "weights", "image": {"reference": rest, "pullPolicy": "IfNotPresent"}}
        )
    container: dict[str, Any] = {
        "name": "server",
        "image": r.image,
        "command": list(p.command),
        "args": engine_args(r),
        "ports": [{"name": "http", "containerPort": p.port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {
                "cpu": str(2 * r.gpu_count),
                "memory": f"{12 * r.gpu_count}Gi",
                GPU_RESOURCE: str(r.gpu_count),
            },
            "limits": {"memory": f"{12 * r.gpu_count}Gi", GPU_RESOURCE: str(r.gpu_count)},
        },
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 360 if big else 180},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP}}},
        "volumeMounts": mounts,
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
    pod_labels = {**labels(r), LABEL_ACCELERATOR_CLASS: r.accelerator_class}
    init: list[dict[str, Any]] = []
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": {"fsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": node_selector(r),
        "tolerations": _tolerations(r.accelerator),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": selector(r)},
            },
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(r)},
            },
        ],
        "containers": [container],
        "volumes": volumes,
    }
    if init:
        pod_spec["initContainers"] = init
    annotations: dict[str, str] = {
        # Never evict a loading or serving model to consolidate nodes.
        "karpenter.sh/do-not-disrupt": "true",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(p.port),
        "prometheus.io/path": p.metrics_path,
    }
    if preload.wants_node_local(r.preload_mode):
        pod_spec["affinity"] = preload.node_local_affinity(r)
    if reads_node_cache(r):
        # The node's cache for these weights, read-only, where the engine loads them from.
        container["volumeMounts"].append(
            {"name": "node-cache", "mountPath": NODE_CACHE_MOUNT, "readOnly": True}
        )
        pod_spec["volumes"].append(
            {
                "name": "node-cache",
                "hostPath": {"path": preload.cache_dir(r), "type": "DirectoryOrCreate"},
            }
        )
        init_env = [json.loads(json.dumps(e)) for e in env if e["name"] != "HF_HUB_OFFLINE"]
        pod_spec.setdefault("initContainers", []).append(
            {
                **node_cache_init_container(r, init_env),
                "securityContext": json.loads(json.dumps(container["securityContext"])),
            }
        )
    if preload.wants_shared_volume(r.preload_mode):
        container["volumeMounts"].append(
            {"name": "weights", "mountPath": preload.SHARED_MOUNT, "readOnly": True}
        )
        pod_spec["volumes"].append(
            {
                "name": "weights",
                "persistentVolumeClaim": {"claimName": preload.claim_name(r), "readOnly": True},
            }
        )
        # Wait until the fill Job has written the complete marker.
        marker = f"{preload.SHARED_MOUNT}/{preload.COMPLETE_MARKER}"
        pod_spec.setdefault("initContainers", []).append(
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
                "securityContext": container["securityContext"],
            }
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": labels(r)},
        "spec": {
            "selector": {"matchLabels": selector(r)},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 3600,
            # One extra replica during a rollout, never one fewer: a model must keep serving.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def build_service(r: Resolved, ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": labels(r)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(r),
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pdb(r: Resolved, ctx: BuildContext) -> dict[str, Any] | None:
    """At most one replica down at a time, once there can be more than one."""
    if r.max_replicas <= 1 and (r.pinned_replicas or 0) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": labels(r)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(r)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def nodepool_name(accelerator_class: str) -> str:
    return f"modelplane-{accelerator_class}"


def build_nodepool(name: str, acc: AcceleratorClassSpec) -> dict[str, Any] | None:
    """A Karpenter NodePool for one AcceleratorClass (cluster-scoped, shared by its users)."""
    karp = acc.provisioning.karpenter if acc.provisioning else None
    if karp is None:
        return None
    reqs = [r.model_dump(by_alias=True) for r in karp.requirements]
    if acc.instance_types and not any(r["key"] == "node.kubernetes.io/instance-type" for r in reqs):
        reqs.append(
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": list(acc.instance_types),
            }
        )
    reqs.append({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]})
    spec: dict[str, Any] = {
        "template": {
            "metadata": {
                "labels": {
                    LABEL_ACCELERATOR_CLASS: name,
                    "app.kubernetes.io/managed-by": "modelplane",
                }
            },
            "spec": {
                "nodeClassRef": karp.node_class_ref.model_dump(by_alias=True),
                "requirements": reqs,
                "taints": [{"key": GPU_TAINT_KEY, "value": "present", "effect": GPU_TAINT_EFFECT}],
                "expireAfter": "720h",
                "terminationGracePeriod": f"{GRACE_SECONDS}s",
            },
        },
        # Consolidate only empty nodes: never evict a loading or serving model.
        "disruption": {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "10m",
            "budgets": [{"nodes": "1"}],
        },
        "weight": 50,
    }
    if karp.gpu_limit:
        spec["limits"] = {GPU_RESOURCE: str(karp.gpu_limit)}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {
            "name": nodepool_name(name),
            "labels": {"app.kubernetes.io/managed-by": "modelplane", LABEL_ACCELERATOR_CLASS: name},
        },
        "spec": spec,
    }
