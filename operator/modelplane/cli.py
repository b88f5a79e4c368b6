"""The `modelplane` command line.

modelplane cluster build|up|down|status   the local GPU cluster
modelplane run                            the operator
modelplane render -f md.yaml              what the operator would apply, offline
modelplane crds                           the CRDs, generated from the API types
modelplane demo                           local cluster + operator + examples, until Ready
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _cluster(args: argparse.Namespace) -> int:
    from modelplane import localcluster as lc

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelplane", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_cluster(sub)
    from modelplane import commands

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # user-facing errors: one clear line, not a traceback
        from modelplane.localcluster import BuildError, ClusterError, NodeConfigError

        if isinstance(e, BuildError | ClusterError | NodeConfigError | FileNotFoundError):
            print(f"modelplane: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
