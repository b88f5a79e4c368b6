"""Karpenter itself as the local cluster's node provisioner, with its KWOK cloud provider.

`sigs.k8s.io/karpenter` ships a cloud provider for its own tests (`kwok/`): it "launches" a
NodeClaim by creating a Node object that the cluster's KWOK controller then plays the kubelet
for. So the real Karpenter scheduler, NodeClaim lifecycle, limits and consolidation act on the
product's real NodePools, and only the instances are simulated:

* the instance types are modelplane's GPU catalog (`instance_types`): every shape of
  `modelplane.catalog.accelerators` with its `nvidia.com/gpu` count and, per zone, an on-demand
  offering carrying the labels a real GPU node of that shape has (AWS Karpenter's
  `karpenter.k8s.aws/instance-gpu-*`, NVIDIA GFD's `nvidia.com/gpu.*`), so NodePool
  requirements and AcceleratorClass node selectors on them resolve as on a real cluster;
* NodePools must name a `KWOKNodeClass` (group `karpenter.kwok.sh`) in `nodeClassRef`; Karpenter
  ignores NodePools of node classes its provider does not support (an `EC2NodeClass`).

    kk = KarpenterKwok(cluster).start()   # CRD + KWOKNodeClass "default" + the controller
    ...                                    # NodePools with nodeClassRef = node_class_ref()
    kk.stop()

The binary is built on demand by `tools/build.sh karpenter-kwok` (cached like the other tools).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane.catalog import accelerators as acc
from modelplane.catalog.accelerators import (
    GPU_RESOURCE,
    LABEL_ACCELERATOR_CLASS,
    LABEL_INSTANCE_TYPE,
    LABEL_REGION,
    LABEL_ZONE,
    Accelerator,
)
from modelplane_testbed.localcluster import binaries
from modelplane_testbed.localcluster.cluster import ClusterError, LocalCluster, listening_sockets
from modelplane_testbed.localcluster.nodes import load_layout

TOOL = "karpenter-kwok"
NODE_CLASS_GROUP = "karpenter.kwok.sh"
NODE_CLASS_KIND = "KWOKNodeClass"
NODE_CLASS_CRD = "kwoknodeclasses.karpenter.kwok.sh"
CAPACITY_TYPE = "karpenter.sh/capacity-type"
#: Labels AWS Karpenter puts on GPU instances (the product's NodePool requirements use them).
AWS_GPU_NAME = "karpenter.k8s.aws/instance-gpu-name"
AWS_GPU_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"
AWS_GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"
AWS_GPU_MANUFACTURER = "karpenter.k8s.aws/instance-gpu-manufacturer"


@dataclass(frozen=True)
class KarpenterKwokBinaries:
    binary: Path
    crds: Path
    version: str


def ensure_built(*, build: bool = True) -> KarpenterKwokBinaries:
    """The cached `karpenter-kwok` binary and KWOKNodeClass CRD; built first when missing
    (a cold build compiles Karpenter and its client libraries: minutes)."""
    version = binaries.versions()["KARPENTER_VERSION"]
    d = binaries.cache_dir() / "bin" / f"{TOOL}-{version}"
    if not (d / ".complete").exists():
        if not build:
            raise binaries.BuildError(f"{TOOL} not built: run `tools/build.sh {TOOL}` first.")
        script = binaries.repo_root() / "tools" / "build.sh"
        proc = subprocess.run(["bash", str(script), TOOL], stdout=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise binaries.BuildError(f"tools/build.sh {TOOL} failed (exit {proc.returncode}).")
    return KarpenterKwokBinaries(d / TOOL, d / "crds", version)


def node_class_ref(name: str = "default") -> dict[str, str]:
    """The `nodeClassRef` of a NodePool (or an AcceleratorClass) provisioning through it."""
    return {"group": NODE_CLASS_GROUP, "kind": NODE_CLASS_KIND, "name": name}


def kwok_node_class(name: str = "default", registration_delay: str | None = None) -> dict[str, Any]:
    """A KWOKNodeClass; `registration_delay` (e.g. "30s") models the instance's boot time."""
    spec = {"nodeRegistrationDelay": registration_delay} if registration_delay else {}
    return {
        "apiVersion": f"{NODE_CLASS_GROUP}/v1alpha1",
        "kind": NODE_CLASS_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def gpu_offering_labels(a: Accelerator, shape: acc.InstanceShape) -> dict[str, str]:
    """Labels a real node of this shape carries that Karpenter must know before launching it:
    GFD's `nvidia.com/gpu.*` and AWS Karpenter's instance-gpu labels. Instance type and
    AcceleratorClass label are left out: the first is the instance type's own requirement, the
    second comes from the NodePool template."""
    labels = {
        k: v
        for k, v in a.node_labels(shape).items()
        if k not in (LABEL_ACCELERATOR_CLASS, LABEL_INSTANCE_TYPE)
    }
    labels |= {
        AWS_GPU_MANUFACTURER: "nvidia",
        AWS_GPU_COUNT: str(shape.gpus),
        AWS_GPU_MEMORY: str(a.memory_mib),
    }
    if a.karpenter_values:
        labels[AWS_GPU_NAME] = a.karpenter_values[0]
    return labels


def instance_types(
    zones: list[str], region: str, accelerators: tuple[Accelerator, ...] | None = None
) -> list[dict[str, Any]]:
    """The KWOK provider's instance-types file (`INSTANCE_TYPES_FILE_PATH`) for modelplane's GPU
    catalog: one instance type per shape, one on-demand offering per zone.

    The provider turns every single-valued `In` requirement of the chosen offering into a node
    label and makes its keys well-known to the scheduler, so the GPU labels live there.
    """
    out: list[dict[str, Any]] = []
    for a in accelerators or acc.DEFAULT_ACCELERATORS:
        for shape in a.shapes:
            labels = gpu_offering_labels(a, shape)
            price = float(a.price_per_gpu_hour) * shape.gpus
            offerings = []
            for z in zones:
                reqs = {CAPACITY_TYPE: "on-demand", LABEL_ZONE: z, LABEL_REGION: region, **labels}
                offerings.append(
                    {
                        "Price": price,
                        "Available": True,
                        "Requirements": [
                            {"key": k, "operator": "In", "values": [v]} for k, v in reqs.items()
                        ],
                    }
                )
            out.append(
                {
                    "name": shape.name,
                    "offerings": offerings,
                    "architecture": "amd64",
                    "operatingSystems": ["linux"],
                    "resources": {
                        "cpu": str(shape.vcpu),
                        "memory": f"{shape.memory_gib}Gi",
                        "ephemeral-storage": "2000Gi",
                        "pods": "110",
                        GPU_RESOURCE: str(shape.gpus),
                    },
                }
            )
    return out


class KarpenterKwok:
    """Karpenter with the KWOK provider, running inside the cluster's network namespace."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        node_class: str = "default",
        registration_delay: str | None = None,
        batch_idle: str = "1s",
        batch_max: str = "3s",
        log_level: str = "info",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.node_class = node_class
        self.registration_delay = registration_delay
        self.batch_idle, self.batch_max = batch_idle, batch_max
        self.log_level = log_level
        self.extra_env = extra_env or {}
        self.dir = cluster.dir / TOOL
        self.log_path = cluster.log_dir / f"{TOOL}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0

    def start(self, *, timeout: float = 90.0, build: bool = True) -> KarpenterKwok:
        bins = ensure_built(build=build)
        c = self.cluster
        c.apply_dir(bins.crds)
        c.kubectl("wait", "--for=condition=Established", f"crd/{NODE_CLASS_CRD}", "--timeout=60s")
        c.kubectl(
            "apply", "--server-side", "--field-manager=modelplane-testbed", "-f", "-",
            input=json.dumps(kwok_node_class(self.node_class, self.registration_delay)),
        )  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        layout = c.layout or load_layout()
        types = self.dir / "instance-types.json"
        types.write_text(json.dumps(instance_types(layout.zones, layout.region), indent=1))
        env = {
            **os.environ,
            # Its own identity (audit log user "karpenter"), with the rights of an admin.
            "KUBECONFIG": str(c.client_kubeconfig("karpenter", ["system:masters"])),
            "DISABLE_LEADER_ELECTION": "true",
            # Port 0: the kernel picks free ones inside the namespace, where ports free on the
            # host may be taken (the control plane's client connections); found in /proc below.
            "METRICS_PORT": "0",
            "HEALTH_PROBE_PORT": "0",
            "LOG_LEVEL": self.log_level,
            "INSTANCE_TYPES_FILE_PATH": str(types),
            "BATCH_IDLE_DURATION": self.batch_idle,
            "BATCH_MAX_DURATION": self.batch_max,
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.proc = c.popen_inside(
                [str(bins.binary)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        c.track(TOOL, self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ClusterError(f"{TOOL} exited ({self.proc.returncode}): {self.log_tail()}")
            if self._ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise ClusterError(f"{TOOL} not ready after {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.5)
        c.log(f"{TOOL} v{bins.version} ready (log {self.log_path})")
        return self

    def _ready(self) -> bool:
        """/readyz answers 200 on one of its listening ports (the health probe's; the metrics
        server answers 404 there)."""
        assert self.proc is not None
        for _, port in listening_sockets(self.proc.pid):
            try:
                code, _ = self.cluster.http("127.0.0.1", port, "/readyz", timeout=2)
            except OSError:
                continue
            if code == 200:
                self.health_port = port
                return True
        return False

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is not None:
            self.cluster.untrack(p.pid)
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        self.cluster.untrack(p.pid)

    def __enter__(self) -> KarpenterKwok:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Print the instance-types file for the default node layout's zones (for a look, or for
    running `karpenter-kwok` by hand with INSTANCE_TYPES_FILE_PATH)."""
    layout = load_layout()
    print(json.dumps(instance_types(layout.zones, layout.region), indent=1))


if __name__ == "__main__":
    main()
