"""Controller-scale baseline: N ModelDeployments converging on the local GPU cluster.

    uv run python -m benchmarks.controller.run [--count 200]

Starts its own local cluster (enough simulated H100 nodes for one GPU per ModelDeployment),
runs the operator as a real process with its own identity, applies N ModelDeployments in one
`kubectl apply`, and measures: time until all are Ready, the operator's write requests (from
the apiserver's audit log) per reconcile, write requests made by idle resyncs (should be 0),
and the operator's peak RSS. Results are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from benchmarks.report import write_section
from modelplane_testbed.harness import audit_writes
from modelplane_testbed.localcluster import LocalCluster, load_layout
from modelplane_testbed.platform import Platform, accelerator_classes_yaml

REPO = Path(__file__).resolve().parents[2]


def manifests(ns: str, n: int) -> str:
    docs = [
        {
            "apiVersion": "modelplane.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": f"m{i:03d}", "namespace": ns},
            "spec": {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p1-8b-instruct"},
                "engine": {"maxContextLength": 8192},
                "accelerator": {"class": "nvidia-h100-80gb", "count": 1},
                "replicas": {"min": 1, "max": 1},
            },
        }
        for i in range(n)
    ]
    return yaml.safe_dump_all(docs)


def ready_count(cluster: LocalCluster, ns: str) -> int:
    items = json.loads(cluster.kubectl("get", "mdep", "-n", ns, "-o", "json"))["items"]
    return sum(1 for i in items if (i.get("status") or {}).get("phase") == "Ready")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args(argv)
    n = args.count
    nodes = (n + 7) // 8 + 1
    layout = load_layout().with_overrides(
        ["system=1", f"p5.48xlarge={nodes}"]
        + [f"{t}=0" for t in ("p5e.48xlarge", "p4de.24xlarge", "p4d.24xlarge", "g6e.12xlarge")]
        + [f"{t}=0" for t in ("g6.12xlarge", "g6.xlarge", "g5.xlarge")]
    )
    root = Path(tempfile.mkdtemp(prefix="modelplane-bench-"))
    cluster = LocalCluster("bench", state_root=root, layout=layout, die_with_parent=True)
    try:
        cluster.up(crd_dirs=[REPO / "crds"], timeout=300)
        cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
        ns = "bench"
        cluster.kubectl("create", "namespace", ns)
        platform = Platform(cluster).start()
        rel = platform.install()
        op = platform.operator(rel, [ns], {"logLevel": "INFO", "resyncIntervalSeconds": "30"})
        with op:
            time.sleep(3)
            t0 = time.monotonic()
            cluster.kubectl("apply", "-f", "-", input=manifests(ns, n))
            converged = None
            while time.monotonic() - t0 < args.timeout:
                if ready_count(cluster, ns) == n:
                    converged = time.monotonic() - t0
                    break
                time.sleep(1)
            if converged is None:
                print(f"did not converge in {args.timeout}s", file=sys.stderr)
                return 1
            time.sleep(5)  # let trailing status updates land
            writes = audit_writes(cluster, op.user)
            reconciles = op.metric("modelplane_reconciles_total", result="ok")
            kinds = Counter(
                f"{e['verb']} {e['objectRef'].get('resource')}"
                + (f"/{e['objectRef']['subresource']}" if e["objectRef"].get("subresource") else "")
                for e in writes
            )
            # A full resync round with nothing changed.
            before = len(writes)
            time.sleep(35)
            idle = len(audit_writes(cluster, op.user)) - before
            idle_reconciles = op.metric("modelplane_reconciles_total", result="ok") - reconciles
            rss = op.peak_rss_mib()
    finally:
        cluster.down()
    per_md = len(writes[:before]) / n
    lines = [
        "## Controller scale (baseline)",
        "",
        f"Command: `uv run python -m benchmarks.controller.run --count {n}` "
        "(2 cores, local cluster, static capacity, operator as a separate process).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| ModelDeployments | {n} |",
        f"| time from `kubectl apply` to all Ready | {converged:.1f} s |",
        f"| operator write requests until converged | {before} ({per_md:.2f} per ModelDeployment) |",
        f"| reconciles until converged | {reconciles:.0f} |",
        f"| write requests per reconcile | {before / max(reconciles, 1):.2f} |",
        f"| idle resync: reconciles / write requests | {idle_reconciles:.0f} / {idle} |",
        f"| operator peak RSS | {rss:.0f} MiB |",
        "",
        "Write requests by kind (from the apiserver's audit log, operator identity only):",
        "",
        *(f"- `{k}`: {v}" for k, v in sorted(kinds.items())),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("controller", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
