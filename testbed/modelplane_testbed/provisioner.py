"""The local cluster's node autoscaler: a stand-in for a cloud's GPU capacity.

It plays what a cluster autoscaler (or Karpenter) does on a real cluster, from what the product
created: for GPU pods the scheduler marked Unschedulable (model servers and warm-node
placeholders carry their AcceleratorClass label), it creates KWOK-managed GPU Nodes of that
class after a provisioning delay (the cold-start model's node boot, scaled), and removes nodes it
created once they have been idle for a while. Nodes carry the same labels and taint as real GPU
capacity (`modelplane_testbed.localcluster.nodes.kwok_node`).

    python -m modelplane_testbed.provisioner --kubeconfig K [--delay S] [--idle S] [--max-nodes N]
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane.api.v1alpha1 import AcceleratorClassSpec
from modelplane.catalog import accelerators as acc
from modelplane.catalog.accelerators import LABEL_ACCELERATOR_CLASS, LABEL_ZONE
from modelplane_testbed.localcluster.nodes import kwok_node

log = logging.getLogger("modelplane.capacity")

LABEL_PROVISIONED_BY = "modelplane.io/provisioned-by"


@dataclass
class NodeProvisioner:
    core: client.CoreV1Api
    classes: Callable[[], dict[str, AcceleratorClassSpec]]
    default_delay: float = 5.0
    idle_seconds: float = 120.0
    #: Nodes of one class this provisioner may have at once (a cloud quota).
    max_nodes: int = 16
    clock: Callable[[], float] = time.monotonic
    #: class -> times at which requested nodes become available
    inflight: dict[str, list[float]] = field(default_factory=dict)
    idle_since: dict[str, float] = field(default_factory=dict)
    created: int = 0
    removed: int = 0
    _seq: int = 0

    def tick(self) -> None:
        now = self.clock()
        classes = self.classes()
        # Model servers and warm-node placeholders both carry their accelerator class.
        pods = self.core.list_pod_for_all_namespaces(label_selector=LABEL_ACCELERATOR_CLASS).items
        waiting: dict[str, list[int]] = {}
        busy_nodes: set[str] = set()
        for p in pods:
            if p.spec.node_name:
                busy_nodes.add(p.spec.node_name)
                continue
            if p.metadata.deletion_timestamp is not None:
                continue
            conds = {c.type: c for c in ((p.status.conditions if p.status else None) or [])}
            sched = conds.get("PodScheduled")
            if sched is None or sched.status != "False" or sched.reason != "Unschedulable":
                continue
            cls = (p.metadata.labels or {}).get(LABEL_ACCELERATOR_CLASS)
            if not cls or cls not in classes:
                continue
            gpus = 0
            for c in p.spec.containers:
                lim = (c.resources.limits if c.resources else None) or {}
                gpus += int(lim.get(acc.GPU_RESOURCE, 0))
            if gpus:
                waiting.setdefault(cls, []).append(gpus)

        nodes = self.core.list_node(label_selector=LABEL_PROVISIONED_BY).items
        zones = self._zones()
        for cls, gpu_list in waiting.items():
            spec = classes[cls]
            per_node = max(spec.gpus_per_node // max(gpu_list), 1)
            need = math.ceil(len(gpu_list) / per_node)
            flying = self.inflight.setdefault(cls, [])
            mine = [
                n for n in nodes if (n.metadata.labels or {}).get(LABEL_ACCELERATOR_CLASS) == cls
            ]
            cap, delay = self.max_nodes, self.default_delay
            while len(flying) < need and len(mine) + len(flying) < cap:
                flying.append(now + delay)
                log.info("provisioner: requested a %s node (ready in %.0fs)", cls, delay)
        for cls, due in list(self.inflight.items()):
            ready = [t for t in due if t <= now]
            self.inflight[cls] = [t for t in due if t > now]
            for _ in ready:
                self._create(cls, classes.get(cls), zones)

        for n in nodes:
            name = n.metadata.name
            if name in busy_nodes:
                self.idle_since.pop(name, None)
                continue
            since = self.idle_since.setdefault(name, now)
            if now - since >= self.idle_seconds:
                try:
                    self.core.delete_node(name)
                    self.removed += 1
                    log.info("provisioner: removed idle node %s", name)
                except ApiException as e:
                    if e.status != 404:
                        raise
                self.idle_since.pop(name, None)

    def _zones(self) -> list[str]:
        zs = sorted(
            {(n.metadata.labels or {}).get(LABEL_ZONE, "") for n in self.core.list_node().items}
            - {""}
        )
        return zs or ["local-1a"]

    def _create(self, cls: str, spec: AcceleratorClassSpec | None, zones: list[str]) -> None:
        if spec is None:
            return
        a: acc.Accelerator | None = None
        shape: acc.InstanceShape | None = None
        for t in spec.instance_types:
            try:
                a, shape = acc.shape(t)
                if shape.gpus == spec.gpus_per_node:
                    break
            except KeyError:
                continue
        if a is None or shape is None or shape.gpus != spec.gpus_per_node:
            # A class we have no instance table for: shape it from the class itself.
            shape = acc.InstanceShape(
                spec.instance_types[0] if spec.instance_types else cls,
                spec.gpus_per_node,
                8 * spec.gpus_per_node,
                64 * spec.gpus_per_node,
            )
            a = acc.Accelerator(
                name=cls,
                display_name=spec.display_name,
                gpu_product=spec.gpu_product,
                gpu_family=spec.gpu_family or "unknown",
                memory_gib=spec.gpu_memory_gi_b,
                memory_mib=spec.gpu_memory_mi_b or spec.gpu_memory_gi_b * 1024,
                price_per_gpu_hour=Decimal(spec.price_per_gpu_hour),
                shapes=(shape,),
            )
        self._seq += 1
        name = f"sim-{cls}-{int(time.time()) % 100000}-{self._seq}"
        zone = zones[self._seq % len(zones)]
        node = kwok_node(
            name,
            a,
            shape,
            zone=zone,
            region=zone.rsplit("-", 1)[0] if "-" in zone else zone,
            extra_labels={
                LABEL_PROVISIONED_BY: "simulated",
                LABEL_ACCELERATOR_CLASS: cls,
                **spec.node_selector,
            },
        )
        self.core.create_node(node)
        self.created += 1
        log.info("simulated provider: created node %s (%s in %s)", name, cls, zone)


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes import config

    from modelplane_testbed.localcluster.cluster import _die_with_parent

    p = argparse.ArgumentParser(prog="python -m modelplane_testbed.provisioner")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--delay", type=float, default=4.5, help="seconds a new node takes to boot")
    p.add_argument("--idle", type=float, default=120.0, help="remove a node idle this long")
    p.add_argument("--max-nodes", type=int, default=16, help="nodes per class at most")
    p.add_argument("--tick", type=float, default=1.0)
    args = p.parse_args(argv)
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def classes() -> dict[str, AcceleratorClassSpec]:
        items = custom.list_cluster_custom_object(
            "modelplane.io", "v1alpha1", "acceleratorclasses"
        )["items"]
        return {
            i["metadata"]["name"]: AcceleratorClassSpec.model_validate(i["spec"]) for i in items
        }

    sim = NodeProvisioner(
        core=core,
        classes=classes,
        default_delay=args.delay,
        idle_seconds=args.idle,
        max_nodes=args.max_nodes,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(args.tick):
        try:
            sim.tick()
        except Exception:
            log.exception("provisioner tick failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
