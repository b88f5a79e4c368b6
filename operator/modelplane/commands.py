"""Subcommands: run, gateway, keys, usage, render, crds."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- run
def _run(args: argparse.Namespace) -> int:
    import kopf

    from modelplane.settings import OperatorSettings

    if args.provider:
        os.environ["MODELPLANE_CAPACITY_PROVIDER"] = args.provider
    s = OperatorSettings()
    import logging

    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from modelplane.wiring import (
        leader,
        operator,  # noqa: F401  (registers the handlers)
    )

    if s.leader_election:  # block as a standby until this replica holds the Lease
        with leader.standby_health(s.health_host, s.health_port):
            elected = leader.elect(
                leader.api_client(),
                namespace=s.operator_namespace,
                name=s.lease_name,
                lease_duration=s.lease_duration_seconds,
                renew_deadline=s.renew_deadline_seconds,
                retry_period=s.retry_period_seconds,
            )
        if elected is None:
            return 0
    liveness = f"http://{s.health_host}:{s.health_port}/healthz" if s.health_port else None
    try:
        kopf.run(
            standalone=True,
            clusterwide=not s.namespaces,
            namespaces=s.namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        leader.resign()
    return 0


# --------------------------------------------------------------------------- gateway
def _gateway(args: argparse.Namespace) -> int:
    from modelplane.gateway.main import run

    return run()


def _keys_create(args: argparse.Namespace) -> int:
    from modelplane.gateway.keys import create
    from modelplane.gateway.kube import api_client

    limits = {
        k: v
        for k, v in (
            ("requestsPerMinute", args.requests_per_minute),
            ("tokensPerMinute", args.tokens_per_minute),
        )
        if v
    }
    kid, key = create(api_client(), args.namespace, args.expires, args.description, limits)
    print(
        f"created key {kid} in namespace {args.namespace} (ApiKey mpk-{kid}); "
        "it is shown only now:",
        file=sys.stderr,
    )
    print(key)
    return 0


def _usage(args: argparse.Namespace) -> int:
    from modelplane.gateway.ledger import open_ledger
    from modelplane.gateway.usage_report import run

    url = args.ledger or os.environ.get("MODELPLANE_GATEWAY_LEDGER_URL", "")
    if not url:
        raise SystemExit(
            "modelplane: usage: say which ledger: --ledger postgresql://... or sqlite:///path "
            "(or set MODELPLANE_GATEWAY_LEDGER_URL as the gateway has it)"
        )
    sys.stdout.write(run(open_ledger(url), args.hours, args.namespace))
    return 0


# --------------------------------------------------------------------------- crds
def _crds(args: argparse.Namespace) -> int:
    from modelplane.api import crdgen

    out = Path(args.write) if args.write else None
    docs = []
    for fname, crd in crdgen.all_crds().items():
        text = crdgen.render(crd)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / fname).write_text(text)
            print(f"wrote {out / fname}", file=sys.stderr)
        docs.append(text)
    if out is None:
        sys.stdout.write("---\n".join(docs))
    return 0


# --------------------------------------------------------------------------- render
def default_classes() -> dict[str, Any]:
    """AcceleratorClass specs built from the catalog defaults (for offline rendering)."""
    from modelplane.api.v1alpha1 import AcceleratorClassSpec
    from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS, accelerator_class_spec

    return {
        a.name: AcceleratorClassSpec.model_validate(accelerator_class_spec(a))
        for a in DEFAULT_ACCELERATORS
    }


def render_documents(docs: list[dict[str, Any]], provider: str) -> list[dict[str, Any]]:
    from modelplane.api.enums import CapacityProvider
    from modelplane.api.v1alpha1 import ModelDeployment
    from modelplane.builders.objects import BuildContext, build_nodepool
    from modelplane.reconcile.core import DeploymentView, Observed, compute_status, plan

    classes = default_classes()
    ctx = BuildContext(capacity_provider=CapacityProvider(provider))
    out: list[dict[str, Any]] = []
    pools: set[str] = set()
    mds = []
    for doc in docs:
        if not doc or doc.get("kind") != "ModelDeployment":
            continue
        doc.setdefault("metadata", {}).setdefault("namespace", "default")
        doc["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
        doc["metadata"].setdefault("generation", 1)
        mds.append(ModelDeployment.model_validate(doc))
    by_name = {(m.metadata.namespace, m.metadata.name): m for m in mds}
    for md in mds:
        ref = md.spec.base
        base = (
            by_name.get((md.metadata.namespace, ref.deployment)) if ref and ref.deployment else None
        )
        demand = sum(
            len(m.spec.adapters)
            for m in mds
            if m.spec.base is not None
            and m.spec.base.deployment == md.metadata.name
            and m.metadata.namespace == md.metadata.namespace
        )
        obs = Observed(
            md, classes, DeploymentView(exists=False), {}, (), {}, "1970-01-01T00:00:00Z", ctx,
            base=base, lora_demand=demand,
        )  # fmt: skip
        p = plan(obs)
        if p.error is not None:
            raise SystemExit(f"modelplane: {md.metadata.name}: {p.error.reason}: {p.error.message}")
        for obj in p.apply:
            if p.scale_to is not None and obj["kind"] == "Deployment":
                obj["spec"]["replicas"] = p.scale_to
            out.append(obj)
        if p.nodepool and p.resolved and p.resolved.accelerator_class not in pools:
            pools.add(p.resolved.accelerator_class)
            np = build_nodepool(p.resolved.accelerator_class, classes[p.resolved.accelerator_class])
            if np:
                out.append(np)
        status, _ = compute_status(obs, p)
        print(
            f"# {md.metadata.name}: {status.get('accelerator')} cost/replica/h="
            f"{p.resolved.hourly_cost_per_replica if p.resolved else '?'}; "
            f"{p.resolved.sizing_explanation if p.resolved else ''}",
            file=sys.stderr,
        )
    return out


def _render(args: argparse.Namespace) -> int:
    docs: list[dict[str, Any]] = []
    for f in args.file:
        paths = sorted(Path(f).glob("*.yaml")) if Path(f).is_dir() else [Path(f)]
        for pth in paths:
            docs += [d for d in yaml.safe_load_all(pth.read_text()) if d]
    objs = render_documents(docs, args.provider)
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the operator (settings from MODELPLANE_* env vars)")
    p.add_argument("--provider", choices=["karpenter", "static"], help="GPU capacity provider")
    p.set_defaults(fn=_run)

    p = sub.add_parser(
        "gateway", help="run the OpenAI-compatible gateway (settings from MODELPLANE_GATEWAY_*)"
    )
    p.set_defaults(fn=_gateway)

    p = sub.add_parser("keys", help="API keys of a tenant namespace")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="create an API key; prints it once")
    k.add_argument("-n", "--namespace", required=True, help="the tenant namespace")
    k.add_argument("--expires", help="RFC 3339 UTC expiry, e.g. 2027-01-01T00:00:00Z")
    k.add_argument("--description", help="what the key is for (who holds it)")
    k.add_argument("--requests-per-minute", type=int, help="rate limit of this key")
    k.add_argument("--tokens-per-minute", type=int, help="token rate limit of this key")
    k.set_defaults(fn=_keys_create)

    p = sub.add_parser("usage", help="spend per namespace and model from the usage ledger")
    p.add_argument("--ledger", help="ledger URL (default: $MODELPLANE_GATEWAY_LEDGER_URL)")
    p.add_argument("--hours", type=float, default=24.0, help="window, hours back (default 24)")
    p.add_argument("-n", "--namespace", help="only this tenant namespace")
    p.set_defaults(fn=_usage)

    p = sub.add_parser("crds", help="print (or --write DIR) the CRDs generated from the API types")
    p.add_argument("--write", metavar="DIR")
    p.set_defaults(fn=_crds)

    p = sub.add_parser(
        "render", help="what the operator would apply for ModelDeployment files, offline"
    )
    p.add_argument(
        "-f", "--file", action="append", required=True, help="file or directory (repeatable)"
    )
    p.add_argument("--provider", default="karpenter", choices=["karpenter", "static"])
    p.set_defaults(fn=_render)
