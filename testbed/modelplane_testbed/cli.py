"""The `modelplane-testbed` command line: the world beneath modelplane on one machine.

modelplane-testbed cluster build|up|down|status   the local GPU cluster
modelplane-testbed demo [--keep]                  local cluster + operator (chart defaults) +
                                                  engine emulator + examples, until Ready
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cluster(args: argparse.Namespace) -> int:
    from modelplane_testbed import localcluster as lc

    if args.action == "build":
        bins = lc.ensure()
        print(json.dumps({k: str(v) for k, v in bins.__dict__.items()}, indent=2))
        return 0
    layout = None
    if args.action == "up":
        layout = lc.load_layout(Path(args.nodes) if args.nodes else None)
        if args.node:
            layout = layout.with_overrides(args.node)
    cluster = lc.LocalCluster(args.name, layout=layout)
    if args.action == "up":
        crd_dirs = [Path(d) for d in args.crds]
        cluster.up(crd_dirs=crd_dirs, timeout=args.timeout)
        print(f"export KUBECONFIG={cluster.kubeconfig}")
    elif args.action == "down":
        cluster.down()
    else:
        info = cluster.status()
        print(json.dumps(info, indent=2))
        return 0 if info.get("running") else 3
    return 0


def _add_cluster(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cluster", help="the local GPU cluster (real control plane, KWOK nodes)")
    p.add_argument("action", choices=["build", "up", "down", "status"])
    p.add_argument("--name", default="modelplane", help="cluster name (default: modelplane)")
    p.add_argument("--nodes", help="node layout YAML (default: the packaged nodes.yaml)")
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="TYPE=COUNT",
        help="override a node count, e.g. p5.48xlarge=4 or system=1 (repeatable)",
    )
    p.add_argument(
        "--crds", action="append", default=[], metavar="DIR", help="also apply the CRDs in DIR"
    )
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    p.set_defaults(fn=_cluster)


# --------------------------------------------------------------------------- demo
def _demo(args: argparse.Namespace) -> int:
    """Local cluster -> chart (defaults) -> operator -> emulator -> examples -> until Ready."""
    from modelplane_testbed.localcluster import LocalCluster, load_layout
    from modelplane_testbed.platform import Platform

    cluster = LocalCluster(args.name, layout=load_layout())
    cluster.up(crd_dirs=[REPO / "crds"])
    platform = Platform(cluster, detached=args.keep).start()
    print("engine emulator and node provisioner running in the cluster", file=sys.stderr)
    rel = platform.install()
    print(f"chart installed: release {rel.release} in {rel.namespace} (defaults)", file=sys.stderr)
    op = platform.operator(rel, []).start()
    print(f"operator running (pid {op.proc.pid}); logs in {cluster.log_dir}", file=sys.stderr)
    try:
        examples = Path(args.examples)
        print(cluster.kubectl("apply", "-f", str(examples)), file=sys.stderr)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            out = cluster.kubectl("get", "mdep", "-A")
            lines = out.strip().splitlines()[1:]
            ready = [ln for ln in lines if " Ready " in ln]
            print(
                f"\n[{time.strftime('%H:%M:%S')}] {len(ready)}/{len(lines)} Ready\n{out}",
                file=sys.stderr,
            )
            if lines and len(ready) == len(lines):
                print(cluster.kubectl("get", "mdep", "-A", "-o", "wide"))
                print(
                    cluster.kubectl(
                        "get", "pods", "-A", "-l", "modelplane.io/deployment", "-o", "wide"
                    )
                )
                return 0
            time.sleep(3)
        print("timed out waiting for every example to become Ready", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            op.stop()
            platform.stop()
            cluster.down()
        else:
            print(
                f"cluster kept, with the operator and the emulator: export "
                f"KUBECONFIG={cluster.kubeconfig}\n(stop it all with: modelplane-testbed "
                f"cluster down --name {args.name})",
                file=sys.stderr,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelplane-testbed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_cluster(sub)
    p = sub.add_parser(
        "demo", help="local cluster + operator + examples/, until every example is Ready"
    )
    p.add_argument("--name", default="modelplane")
    p.add_argument("--examples", default=str(REPO / "examples"))
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    p.set_defaults(fn=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # user-facing errors: one clear line, not a traceback
        from modelplane_testbed.localcluster import BuildError, ClusterError, NodeConfigError

        if isinstance(e, BuildError | ClusterError | NodeConfigError | FileNotFoundError):
            print(f"modelplane-testbed: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
