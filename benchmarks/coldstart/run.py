"""Cold start, measured on the local GPU cluster: scale-up with and without preloading.

    uv run python -m benchmarks.coldstart.run [--repeats 3]

Starts its own local cluster, the chart with its defaults and the operator as its pod, and the
test bed beneath: the cold-start model (`modelplane_testbed.simulator.ColdStartModel`: node
boot, image pull, weight download at a given bandwidth, engine warm-up) is enacted from what the
product created — the node provisioner boots a node after the modelled time, and the engine
emulator derives each model-server pod's start-up from the pod as created and its node: the
weights load from local disk only when the pod really mounts its node's cache for those weights
and the node's cache label says it is filled (a cache hit, decided per pod and node). Times are
scaled by the platform's time scale. The benchmark measures the time from a scale-up (replicas
1 -> 2) to two Ready replicas:

* cold: no free node, so boot + image + remote weights + warm-up;
* warm: `preload: {mode: NodeLocal, warmNodes: 1}`: a placeholder keeps a node provisioned and
  the weights are on its disk, so only local weight load + warm-up remain;

and compares the measured ratio with the ratio the model predicts. Results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.report import write_section
from modelplane.api.enums import Precision
from modelplane.catalog.models import get_model
from modelplane.catalog.sizing import GB_PER_GIB, weights_gib
from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster, load_layout
from modelplane_testbed.platform import Platform, accelerator_classes_yaml
from modelplane_testbed.simulator import ColdStartModel

REPO = Path(__file__).resolve().parents[2]
SCALE = 0.05


def md(ns: str, name: str, preload: dict[str, Any] | None) -> dict[str, Any]:
    spec = factories.spec(
        factories.LLAMA_70B_FP8,
        accelerator={"class": "nvidia-h200-141gb", "count": 8},
        replicas={"min": 1, "max": 2, "pinned": 1},
    )
    if preload:
        spec["preload"] = preload
    return factories.md(name, ns, spec)


def ready(cluster: LocalCluster, ns: str, name: str) -> int:
    pods = json.loads(
        cluster.kubectl(
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            f"modelplane.io/deployment={name},app.kubernetes.io/component=model-server",
            "-o",
            "json",
        )
    )["items"]
    return sum(
        1
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    )


def wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def newest_pod(cluster: LocalCluster, ns: str, name: str) -> str:
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", ns, "-l", f"modelplane.io/deployment={name}", "-o", "json"
        )
    )["items"]
    newest = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
    return str(newest["metadata"]["name"])


def measure(
    cluster: LocalCluster,
    control: Any,
    ns: str,
    name: str,
    preload: dict[str, Any] | None,
    hits: list[bool],
) -> float:
    doc = md(ns, name, preload)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    wait(lambda: ready(cluster, ns, name) == 1, 180, f"{name}: 1 Ready")
    if preload:

        def warm() -> bool:
            st = json.loads(cluster.kubectl("get", "mdep", name, "-n", ns, "-o", "json")).get(
                "status", {}
            )
            pre = st.get("preload", {})
            return (
                pre.get("classNodes", 0) >= 2
                and pre.get("cachedNodes") == pre.get("classNodes")
                and ready(cluster, ns, name) == 1
            )

        wait(warm, 180, f"{name}: cache warm")
        time.sleep(2)  # let the rollout to cached nodes settle
        wait(lambda: ready(cluster, ns, name) == 1, 60, f"{name}: settled")
    doc["spec"]["replicas"]["pinned"] = 2
    t0 = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    wait(lambda: ready(cluster, ns, name) == 2, 180, f"{name}: 2 Ready")
    took = time.monotonic() - t0
    # What the engine saw: did the new replica load its weights from its node's cache?
    hits.append(bool(control.get(f"/pods/{ns}/{newest_pod(cluster, ns, name)}")["cacheHit"]))
    cluster.kubectl("delete", "mdep", name, "-n", ns, "--wait=true")
    wait(lambda: ready(cluster, ns, name) == 0, 60, f"{name}: gone")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    layout = load_layout().with_overrides(
        ["system=1", "p5e.48xlarge=1"]
        + [
            f"{t}=0"
            for t in (
                "p5.48xlarge",
                "p4de.24xlarge",
                "p4d.24xlarge",
                "g6e.12xlarge",
                "g6.12xlarge",
                "g6.xlarge",
                "g5.xlarge",
            )
        ]
    )
    root = Path(tempfile.mkdtemp(prefix="modelplane-coldstart-"))
    cluster = LocalCluster("coldstart", state_root=root, layout=layout, die_with_parent=True)
    colds: list[float] = []
    warms: list[float] = []
    cold_hits: list[bool] = []
    warm_hits: list[bool] = []
    try:
        cluster.up(crd_dirs=[REPO / "crds"], timeout=300)
        cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
        ns = "bench"
        cluster.kubectl("create", "namespace", ns)
        platform = Platform(cluster, time_scale=SCALE, idle_seconds=3).start()
        rel = platform.install()
        op = platform.operator(rel, [ns], {"logLevel": "INFO"})
        control = platform.control()
        with op:
            for i in range(args.repeats):
                # Cold first: the class has one node, so the second replica needs a new one.
                wait(
                    lambda: (
                        int(
                            cluster.kubectl(
                                "get", "nodes", "-l", "modelplane.io/provisioned-by", "--no-headers"
                            ).count("\n")
                        )
                        == 0
                    ),
                    120,
                    "idle nodes removed",
                )
                colds.append(measure(cluster, control, ns, f"cold-{i}", None, cold_hits))
                warms.append(
                    measure(
                        cluster,
                        control,
                        ns,
                        f"warm-{i}",
                        {"mode": "NodeLocal", "warmNodes": 1},
                        warm_hits,
                    )
                )
                print(f"run {i}: cold {colds[-1]:.2f}s warm {warms[-1]:.2f}s", file=sys.stderr)
    finally:
        cluster.down()
    m = ColdStartModel()
    gb = weights_gib(get_model("llama-v3p3-70b-instruct"), Precision.FP8) * GB_PER_GIB
    cold_model = m.breakdown(gb)
    warm_model = m.breakdown(gb, warm_node=True, image_cached=True, weights_cached=True)
    predicted = cold_model.total_s / warm_model.total_s
    cold_med, warm_med = statistics.median(colds), statistics.median(warms)
    measured = cold_med / warm_med
    text = "\n".join(
        [
            "## Cold start: scale-up with and without preloading (local cluster)",
            "",
            f"Command: `uv run python -m benchmarks.coldstart.run --repeats {args.repeats}` — Llama 3.3 70B FP8 "
            f"({gb:.0f} GB of weights) on 8 x H200 per replica; the cold-start model's times scaled by {SCALE} on the cluster.",
            "",
            "| path | model (unscaled) | model x scale | measured on the cluster (median) |",
            "|---|---|---|---|",
            f"| cold: new node + image pull + remote weights + warm-up | {cold_model.total_s:.0f} s "
            f"(node {cold_model.node_s:.0f} + image {cold_model.image_s:.0f} + weights {cold_model.weights_s:.0f} + warm-up {cold_model.warmup_s:.0f}) "
            f"| {cold_model.total_s * SCALE:.2f} s | {cold_med:.2f} s |",
            f"| warm node + NodeLocal cache: local weights + warm-up | {warm_model.total_s:.0f} s "
            f"(weights {warm_model.weights_s:.0f} + warm-up {warm_model.warmup_s:.0f}) | {warm_model.total_s * SCALE:.2f} s | {warm_med:.2f} s |",
            f"| **ratio cold / warm** | **{predicted:.2f}** | | **{measured:.2f}** |",
            "",
            f"Runs (cold, warm): {', '.join(f'({c:.2f}, {w:.2f})' for c, w in zip(colds, warms, strict=True))}. "
            f"Cache hits of the new replica, as the engine emulator saw its mounts and node: cold "
            f"{sum(cold_hits)}/{len(cold_hits)}, warm {sum(warm_hits)}/{len(warm_hits)}.",
            "",
            "What is modelled and what is measured: the durations of node boot, image pull, weight "
            "load (remote or local) and engine warm-up are the cold-start model's, enacted by the "
            "test bed. Whether the new replica gets a warm node and its weights from that node's "
            "cache is the product's doing and is measured: the operator's placement (preferred "
            "cached nodes, the placeholder it keeps), the pod template it renders (the read-only "
            "node-cache mount) and the cache Jobs it ran decide which path the emulator takes. The "
            "measured times also include the control plane's own latency (scheduling, preemption "
            "of the placeholder, readiness probing, the provisioner's 1 s tick).",
        ]
    )
    print(text)
    write_section("coldstart", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
