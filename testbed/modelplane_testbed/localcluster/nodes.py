"""Which simulated nodes the local cluster gets: a small YAML file or `TYPE=COUNT` flags."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelplane.catalog import accelerators as acc
from modelplane.catalog.accelerators import (
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    LABEL_INSTANCE_TYPE,
    LABEL_REGION,
    LABEL_ZONE,
    Accelerator,
    InstanceShape,
)


class NodeConfigError(ValueError):
    """The node layout is not valid; the message says what to change."""


class GpuNodes(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    instance_type: str = Field(alias="instanceType")
    count: int = Field(ge=0, le=500)

    @field_validator("instance_type")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            acc.shape(v)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        return v


class SystemNodes(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    count: int = Field(default=2, ge=0, le=50)
    cpu: int = Field(default=8, ge=1)
    memory_gib: int = Field(default=32, ge=1, alias="memoryGiB")


class NodeLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = "local-1"
    zones: list[str] = Field(
        default_factory=lambda: ["local-1a", "local-1b", "local-1c"], min_length=1
    )
    system: SystemNodes = Field(default_factory=SystemNodes)
    gpu: list[GpuNodes] = Field(default_factory=list)

    def with_overrides(self, overrides: list[str]) -> NodeLayout:
        """Apply `TYPE=COUNT` flags (`system=N` sets the CPU-only node count)."""
        counts = {g.instance_type: g.count for g in self.gpu}
        system = self.system.model_copy()
        for item in overrides:
            m = re.fullmatch(r"\s*([A-Za-z0-9.\-]+)\s*=\s*(\d+)\s*", item)
            if not m:
                raise NodeConfigError(
                    f"bad --node value {item!r}: write INSTANCE_TYPE=COUNT, e.g. p5.48xlarge=2"
                )
            name, n = m.group(1), int(m.group(2))
            if name == "system":
                system = system.model_copy(update={"count": n})
            else:
                counts[name] = n
        try:
            return NodeLayout(
                region=self.region,
                zones=self.zones,
                system=system,
                gpu=[GpuNodes(instance_type=t, count=c) for t, c in counts.items()],
            )
        except ValidationError as e:
            raise NodeConfigError(_explain(e)) from None

    def manifests(self) -> list[dict[str, Any]]:
        """Node objects, named `<role>-<instance-type>-<i>`, spread round-robin over zones."""
        out: list[dict[str, Any]] = []
        z = 0
        for i in range(self.system.count):
            out.append(
                kwok_node(
                    f"system-{i}",
                    None,
                    None,
                    zone=self.zones[z % len(self.zones)],
                    region=self.region,
                    system_cpu=self.system.cpu,
                    system_memory_gib=self.system.memory_gib,
                )
            )
            z += 1
        for g in self.gpu:
            a, s = acc.shape(g.instance_type)
            for i in range(g.count):
                name = f"gpu-{s.name.replace('.', '-')}-{i}"
                zone = self.zones[z % len(self.zones)]
                z += 1
                out.append(kwok_node(name, a, s, zone=zone, region=self.region))
        return out


def _explain(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "invalid node layout: " + "; ".join(parts)


def load_layout(path: Path | None = None) -> NodeLayout:
    """Read a layout file, or the packaged default when `path` is None."""
    if path is None:
        text = resources.files("modelplane_testbed.localcluster").joinpath("nodes.yaml").read_text()
        where = "the default nodes.yaml"
    else:
        try:
            text = path.read_text()
        except OSError as e:
            raise NodeConfigError(f"cannot read node layout {path}: {e.strerror}") from None
        where = str(path)
    data = yaml.safe_load(text) or {}
    try:
        return NodeLayout.model_validate(data)
    except ValidationError as e:
        raise NodeConfigError(f"{where}: {_explain(e)}") from None


#: Annotation that hands a Node to the KWOK controller (it plays the kubelet for it).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def kwok_node(
    name: str,
    acc: Accelerator | None,
    shape: InstanceShape | None,
    *,
    zone: str,
    region: str,
    extra_labels: dict[str, str] | None = None,
    system_cpu: int = 8,
    system_memory_gib: int = 32,
) -> dict[str, object]:
    """A KWOK-managed Node shaped like a real instance (status is accepted on create).

    With `acc`/`shape` it is a GPU node: `nvidia.com/gpu` capacity, GFD labels, instance type and
    the `nvidia.com/gpu=present:NoSchedule` taint. Without, a CPU-only system node.
    """
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        LABEL_ZONE: zone,
        LABEL_REGION: region,
    }
    spec: dict[str, object] = {}
    if acc is not None and shape is not None:
        labels |= acc.node_labels(shape)
        cpu, mem_gib = shape.vcpu, shape.memory_gib
        extra = {GPU_RESOURCE: str(shape.gpus)}
        spec["taints"] = [
            {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}
        ]
    else:
        labels |= {LABEL_INSTANCE_TYPE: "m7i.2xlarge", "modelplane.io/node-role": "system"}
        cpu, mem_gib, extra = system_cpu, system_memory_gib, {}
    labels |= extra_labels or {}
    resources = {
        "cpu": str(cpu),
        "memory": f"{mem_gib}Gi",
        "pods": "110",
        "ephemeral-storage": "2000Gi",
        **extra,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
        "spec": spec,
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }
