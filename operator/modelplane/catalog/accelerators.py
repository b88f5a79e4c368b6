"""GPU kinds and the instance shapes that carry them.

One table feeds three consumers that must agree: the default AcceleratorClasses the chart and the
operator ship, the GPU nodes of the local test bed, and the node labels/taints that
`infra/` puts on real GPU capacity. Figures come from AWS/GCP instance documentation (GPU memory
in MiB as the cloud reports it, vCPU, memory) and the seed's per-GPU-hour price table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

#: The extended resource the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
#: Taint every GPU node carries; model servers tolerate the key with operator Exists.
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"
#: GPU feature discovery labels (NVIDIA GFD convention).
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_FAMILY = "nvidia.com/gpu.family"
#: The label modelplane puts on GPU capacity it provisions or expects, naming the class.
LABEL_ACCELERATOR_CLASS = "modelplane.io/accelerator-class"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"


@dataclass(frozen=True)
class InstanceShape:
    """A machine type carrying GPUs of one kind (AWS naming; GCP equivalent alongside)."""

    name: str
    gpus: int
    vcpu: int
    memory_gib: int
    gcp_equivalent: str | None = None


@dataclass(frozen=True)
class Accelerator:
    """One GPU kind: the data behind a default AcceleratorClass."""

    name: str  # AcceleratorClass name, e.g. nvidia-h100-80gb
    display_name: str
    gpu_product: str  # value of nvidia.com/gpu.product (NVML name, sanitised by GFD)
    gpu_family: str  # value of nvidia.com/gpu.family
    memory_gib: int  # marketing size per GPU, used for sizing (80 for H100 80GB)
    memory_mib: int  # per-GPU memory as the cloud reports it (nvidia.com/gpu.memory on nodes)
    price_per_gpu_hour: Decimal  # USD, on-demand list price order of magnitude
    shapes: tuple[InstanceShape, ...]  # smallest first
    karpenter_values: tuple[str, ...] = field(default=())  # karpenter.k8s.aws/instance-gpu-name

    @property
    def max_gpus_per_node(self) -> int:
        return max(s.gpus for s in self.shapes)

    def node_labels(self, shape: InstanceShape) -> dict[str, str]:
        """Labels a node of this accelerator and shape carries (GFD + well-known)."""
        return {
            LABEL_GPU_PRODUCT: self.gpu_product,
            LABEL_GPU_MEMORY: str(self.memory_mib),
            LABEL_GPU_COUNT: str(shape.gpus),
            LABEL_GPU_FAMILY: self.gpu_family,
            LABEL_INSTANCE_TYPE: shape.name,
            LABEL_ACCELERATOR_CLASS: self.name,
        }


DEFAULT_ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator(
        name="nvidia-h100-80gb",
        display_name="NVIDIA H100 80GB",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpu_family="hopper",
        memory_gib=80,
        memory_mib=81920,
        price_per_gpu_hour=Decimal("5.00"),
        shapes=(InstanceShape("p5.48xlarge", 8, 192, 2048, "a3-highgpu-8g"),),
        karpenter_values=("h100",),
    ),
    Accelerator(
        name="nvidia-h200-141gb",
        display_name="NVIDIA H200 141GB",
        gpu_product="NVIDIA-H200",
        gpu_family="hopper",
        memory_gib=141,
        memory_mib=144384,
        price_per_gpu_hour=Decimal("6.50"),
        shapes=(InstanceShape("p5e.48xlarge", 8, 192, 2048, "a3-ultragpu-8g"),),
        karpenter_values=("h200",),
    ),
    Accelerator(
        name="nvidia-a100-80gb",
        display_name="NVIDIA A100 80GB",
        gpu_product="NVIDIA-A100-SXM4-80GB",
        gpu_family="ampere",
        memory_gib=80,
        memory_mib=81920,
        price_per_gpu_hour=Decimal("3.50"),
        shapes=(InstanceShape("p4de.24xlarge", 8, 96, 1152, "a2-ultragpu-8g"),),
        karpenter_values=("a100",),
    ),
    Accelerator(
        name="nvidia-a100-40gb",
        display_name="NVIDIA A100 40GB",
        gpu_product="NVIDIA-A100-SXM4-40GB",
        gpu_family="ampere",
        memory_gib=40,
        memory_mib=40960,
        price_per_gpu_hour=Decimal("2.50"),
        shapes=(InstanceShape("p4d.24xlarge", 8, 96, 1152, "a2-highgpu-8g"),),
        karpenter_values=("a100",),
    ),
    Accelerator(
        name="nvidia-l40s-48gb",
        display_name="NVIDIA L40S 48GB",
        gpu_product="NVIDIA-L40S",
        gpu_family="ada-lovelace",
        memory_gib=48,
        memory_mib=45776,
        price_per_gpu_hour=Decimal("1.90"),
        shapes=(InstanceShape("g6e.12xlarge", 4, 48, 384, None),),
        karpenter_values=("l40s",),
    ),
    Accelerator(
        name="nvidia-l4-24gb",
        display_name="NVIDIA L4 24GB",
        gpu_product="NVIDIA-L4",
        gpu_family="ada-lovelace",
        memory_gib=24,
        memory_mib=22888,
        price_per_gpu_hour=Decimal("0.85"),
        shapes=(
            InstanceShape("g6.xlarge", 1, 4, 16, "g2-standard-4"),
            InstanceShape("g6.12xlarge", 4, 48, 192, "g2-standard-48"),
        ),
        karpenter_values=("l4",),
    ),
    Accelerator(
        name="nvidia-a10g-24gb",
        display_name="NVIDIA A10G 24GB",
        gpu_product="NVIDIA-A10G",
        gpu_family="ampere",
        memory_gib=24,
        memory_mib=22888,
        price_per_gpu_hour=Decimal("0.80"),
        shapes=(InstanceShape("g5.xlarge", 1, 4, 16, None),),
        karpenter_values=("a10g",),
    ),
)

ACCELERATORS_BY_NAME: dict[str, Accelerator] = {a.name: a for a in DEFAULT_ACCELERATORS}


def accelerator(name: str) -> Accelerator:
    """The default accelerator called `name`; KeyError lists the known ones."""
    try:
        return ACCELERATORS_BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(ACCELERATORS_BY_NAME))
        raise KeyError(f"unknown accelerator {name!r}; known: {known}") from None


def shape(name: str) -> tuple[Accelerator, InstanceShape]:
    """The accelerator and shape of an instance type name (e.g. p5.48xlarge)."""
    for acc in DEFAULT_ACCELERATORS:
        for s in acc.shapes:
            if s.name == name:
                return acc, s
    known = ", ".join(s.name for a in DEFAULT_ACCELERATORS for s in a.shapes)
    raise KeyError(f"unknown GPU instance type {name!r}; known: {known}")


def accelerator_class_spec(
    a: Accelerator,
    *,
    node_class: str = "gpu",
) -> dict[str, object]:
    """The spec of the default AcceleratorClass for `a` (as the chart and demo install it)."""
    prov: dict[str, object] = {
        "karpenter": {
            "nodeClassRef": {
                "group": "karpenter.k8s.aws",
                "kind": "EC2NodeClass",
                "name": node_class,
            },
            "requirements": [
                {
                    "key": "karpenter.k8s.aws/instance-gpu-name",
                    "operator": "In",
                    "values": list(a.karpenter_values),
                },
                {
                    "key": "karpenter.k8s.aws/instance-gpu-memory",
                    "operator": "In",
                    "values": [str(a.memory_mib)],
                },
            ],
        }
    }
    return {
        "displayName": a.display_name,
        "gpuProduct": a.gpu_product,
        "gpuFamily": a.gpu_family,
        "gpuMemoryGiB": a.memory_gib,
        "gpuMemoryMiB": a.memory_mib,
        "gpusPerNode": a.max_gpus_per_node,
        "pricePerGPUHour": f"{a.price_per_gpu_hour:.2f}",
        "instanceTypes": [s.name for s in a.shapes],
        "nodeSelector": {LABEL_GPU_PRODUCT: a.gpu_product},
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}],
        "provisioning": prov,
    }
