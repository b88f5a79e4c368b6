"""GPU node labels, taints and AcceleratorClasses, all derived from the operator's catalog.

Nothing here restates a label name, taint or GPU figure: it all comes from
`modelplane.catalog.accelerators`, so what Pulumi puts on nodes cannot drift from what the
operator schedules against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelplane.catalog.accelerators import (
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    LABEL_ACCELERATOR_CLASS,
    LABEL_INSTANCE_TYPE,
    Accelerator,
    InstanceShape,
)

ACCELERATOR_CLASS_API_VERSION = "modelplane.io/v1alpha1"
ACCELERATOR_CLASS_KIND = "AcceleratorClass"

#: Karpenter's well-known GPU labels (karpenter.k8s.aws/v1).
KARPENTER_GPU_NAME = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"
KARPENTER_GPU_MANUFACTURER = "karpenter.k8s.aws/instance-gpu-manufacturer"
KARPENTER_CAPACITY_TYPE = "karpenter.sh/capacity-type"
KARPENTER_DISCOVERY_TAG = "karpenter.sh/discovery"
ARCH_LABEL = "kubernetes.io/arch"

#: GKE's accelerator type names (guest accelerator `type`, label cloud.google.com/gke-accelerator).
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GKE_ACCELERATOR_TYPES: dict[str, str] = {
    "nvidia-h100-80gb": "nvidia-h100-80gb",
    "nvidia-h200-141gb": "nvidia-h200-141gb",
    "nvidia-a100-80gb": "nvidia-a100-80gb",
    "nvidia-a100-40gb": "nvidia-tesla-a100",
    "nvidia-l4-24gb": "nvidia-l4",
}
#: Kubernetes taint effect -> GKE node pool API enum.
GKE_TAINT_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}

MANAGED_BY = {"app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/part-of": "modelplane"}


def gpu_taint() -> dict[str, str]:
    """The taint every GPU node carries (Kubernetes shape)."""
    return {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}


def gpu_toleration() -> dict[str, str]:
    """What GPU workloads and GPU DaemonSets tolerate: the key, whatever its value."""
    return {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}


def gke_gpu_taint() -> dict[str, str]:
    """`gpu_taint()` in the GKE node pool API's spelling."""
    return {
        "key": GPU_TAINT_KEY,
        "value": GPU_TAINT_VALUE,
        "effect": GKE_TAINT_EFFECTS[GPU_TAINT_EFFECT],
    }


def gke_node_labels(acc: Accelerator, shape: InstanceShape) -> dict[str, str]:
    """GFD-style labels for a GKE node pool of `shape`.

    The instance-type label is left to the kubelet: on GKE it holds the GCP machine type, and
    GKE refuses node pool labels under kubernetes.io.
    """
    labels = acc.node_labels(shape)
    del labels[LABEL_INSTANCE_TYPE]
    return labels


def karpenter_requirements(
    acc: Accelerator, instance_types: Sequence[str], capacity_types: Sequence[str]
) -> list[dict[str, Any]]:
    """NodePool requirements that select exactly this accelerator's offered shapes."""
    return [
        {"key": KARPENTER_GPU_MANUFACTURER, "operator": "In", "values": ["nvidia"]},
        {"key": KARPENTER_GPU_NAME, "operator": "In", "values": list(acc.karpenter_values)},
        {"key": KARPENTER_GPU_MEMORY, "operator": "In", "values": [str(acc.memory_mib)]},
        {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": list(instance_types)},
        {"key": KARPENTER_CAPACITY_TYPE, "operator": "In", "values": list(capacity_types)},
        {"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]},
    ]


@dataclass(frozen=True)
class NodeClassRef:
    group: str
    kind: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"group": self.group, "kind": self.kind, "name": self.name}


def accelerator_class_spec(
    acc: Accelerator,
    *,
    shapes: Sequence[InstanceShape],
    instance_types: Sequence[str],
    karpenter: tuple[NodeClassRef, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The spec of the AcceleratorClass for `acc`.

    `karpenter` is (node class, capacity types) where the operator provisions capacity with
    Karpenter NodePools; without it the class describes pre-provisioned (static) pools.
    `instance_types` are the cloud's names for `shapes` (EC2 instance or GCP machine types).
    """
    spec: dict[str, Any] = {
        "displayName": acc.display_name,
        "gpuProduct": acc.gpu_product,
        "gpuFamily": acc.gpu_family,
        "gpuMemoryGiB": acc.memory_gib,
        "gpuMemoryMiB": acc.memory_mib,
        "gpusPerNode": max(s.gpus for s in shapes),
        "pricePerGPUHour": str(acc.price_per_gpu_hour),
        "instanceTypes": list(instance_types),
        "nodeSelector": {LABEL_ACCELERATOR_CLASS: acc.name},
        "tolerations": [gpu_toleration()],
    }
    if karpenter is not None:
        ref, capacity_types = karpenter
        spec["provisioning"] = {
            "karpenter": {
                "nodeClassRef": ref.as_dict(),
                "requirements": karpenter_requirements(
                    acc, [s.name for s in shapes], capacity_types
                ),
            }
        }
    return spec
