"""From the observed world to a `Plan`: one planner per tier over one shared child diff.

`plan()` checks the name, resolves the spec and hands over to the tier's planner:

* `plan_on_demand`: the object's own model servers and their children;
* `plan_serverless`: a tenant of a shared backend (owned by no tenant) plus its own endpoint;
* `plan_fine_tuned`: adapters on a base's servers (nothing to write), or on servers of its own
  (planned as OnDemand).

Every planner lists its children in the order they are written (`Child`), refuses to write
while any of them is someone else's (ChildConflict), and lets `diff_children` pick the
changed ones; replicas come from `replica_decision`. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from modelplane.api.enums import CapacityProvider, FailureReason, PreloadMode, Tier
from modelplane.api.names import name_problem
from modelplane.builders import serverless
from modelplane.builders.objects import (
    build_deployment,
    build_pdb,
    build_service,
    nodepool_name,
)
from modelplane.builders.preload import (
    build_fill_job,
    build_shared_volume_claim,
    build_warm_pool,
)
from modelplane.builders.resolve import Resolved, ResolveError, resolve, resolve_fine_tuned
from modelplane.reconcile.children import Child, ChildKind, diff_children
from modelplane.reconcile.model import Observed, Plan, containers_of, hashed, owned_by

Where = tuple[str, str | None, str]  # kind, namespace (None: cluster-scoped), name


def desired_replicas(r: Resolved, current: int, exists: bool) -> tuple[int, str]:
    """Replica count without load metrics: pinned wins, else keep the current count in bounds."""
    if r.pinned_replicas is not None:
        return (
            r.pinned_replicas,
            f"pinned at {r.pinned_replicas} by spec.replicas.pinned (kubectl scale)",
        )
    start = current if exists else max(r.min_replicas, 1)
    want = min(max(start, r.min_replicas), r.max_replicas)
    if want != start:
        return want, f"kept within replicas [{r.min_replicas}, {r.max_replicas}]: {start} -> {want}"
    return want, f"holding {want} (bounds [{r.min_replicas}, {r.max_replicas}])"


def replica_decision(obs: Observed, r: Resolved) -> tuple[int, str, int | None]:
    """(replicas wanted, why, the count to /scale to or None when already there). The
    autoscaler loop's explanation wins unless the count is pinned."""
    want, why = desired_replicas(r, obs.deployment.replicas, obs.deployment.exists)
    if obs.autoscaler is not None and r.pinned_replicas is None:
        why = obs.autoscaler.explanation
    current = obs.deployment.replicas if obs.deployment.exists else 1  # apps/v1 default
    return want, why, (want if want != current else None)


def plan(obs: Observed) -> Plan:
    md = obs.md
    bad_name = name_problem(md.metadata.name)
    if bad_name is not None:  # stored before the CRD rejected such names
        return Plan(
            resolved=None,
            error=ResolveError(
                FailureReason.INVALID_NAME.value, f"{md.metadata.name!r}: {bad_name}"
            ),
        )
    if md.spec.tier == Tier.FINE_TUNED:
        return plan_fine_tuned(obs)
    try:
        r = _with_lora_demand(resolve(md, obs.classes), obs)
    except ResolveError as e:
        return Plan(resolved=None, error=e)
    if r.tier == Tier.SERVERLESS:
        return plan_serverless(obs, r)
    return plan_on_demand(obs, r)


def _with_lora_demand(r: Resolved, obs: Observed) -> Resolved:
    """FineTuned dependents load adapters into this object's servers at runtime."""
    if obs.lora_demand and not r.lora:
        return dataclasses.replace(
            r, lora=True, max_loras=max(8, obs.lora_demand), max_lora_rank=64
        )
    return r


def plan_fine_tuned(obs: Observed) -> Plan:
    """Adapters on a base ModelDeployment's servers (this object writes nothing), or on
    servers of its own (planned as OnDemand)."""
    try:
        r, own_servers = resolve_fine_tuned(obs.md, obs.classes, obs.base)
    except ResolveError as e:
        return Plan(resolved=None, error=e, fine_tuned=True)
    r = _with_lora_demand(r, obs)
    if own_servers:
        return plan_on_demand(obs, r, fine_tuned=True)
    return Plan(
        resolved=r,
        error=None,
        fine_tuned=True,
        has_servers=False,
        desired_replicas=obs.deployment.replicas if obs.deployment.exists else 0,
        decision=f"replicas follow the base {r.name}",
    )


def plan_on_demand(obs: Observed, r: Resolved, *, fine_tuned: bool = False) -> Plan:
    """The object's own model servers: Deployment, shared weights volume, Service, PDB, warm
    pool; and the NodePool of its class under Karpenter (applied by the NodePool sync)."""
    children = on_demand_children(obs, r)
    nodepool = _nodepool(obs, r)
    conflicts = _conflicts(obs, children)
    if obs.preload is not None:
        conflicts += [("Job", r.namespace, j) for j in obs.preload.foreign_jobs]
    if nodepool is not None and f"NodePool/{nodepool}" in obs.foreign:
        conflicts.append(("NodePool", None, nodepool))
    if conflicts:
        return Plan(resolved=None, error=child_conflict(conflicts), fine_tuned=fine_tuned)
    diff = diff_children(children, _live_hashes(obs), obs.foreign, _drifted(obs, children))
    want, why, scale_to = replica_decision(obs, r)
    return Plan(
        resolved=r,
        error=None,
        apply=diff.apply,
        delete=diff.delete,
        scale_to=scale_to,
        desired_replicas=want,
        decision=why,
        nodepool=nodepool,
        fine_tuned=fine_tuned,
    )


def on_demand_children(obs: Observed, r: Resolved) -> list[Child]:
    """An OnDemand object's children, in the order they are written."""
    md, ctx = obs.md, obs.ctx
    out = [Child(ChildKind.DEPLOYMENT, r.name, owned_by(build_deployment(r, ctx), md))]
    if r.preload_mode == PreloadMode.SHARED_VOLUME:
        claim = build_shared_volume_claim(r, ctx)
        # The filled volume outlives the ModelDeployment unless retainCache is false.
        claim = hashed(claim) if r.retain_cache else owned_by(claim, md)
        job = owned_by(build_fill_job(r, ctx), md)
        out += [
            Child(ChildKind.WEIGHTS_CLAIM, claim["metadata"]["name"], claim),
            Child(ChildKind.FILL_JOB, job["metadata"]["name"], job, immutable=True),
        ]
    service, pdb = build_service(r, ctx), build_pdb(r, ctx)
    warm = build_warm_pool(r, r.warm_nodes, ctx)
    out += [
        Child(ChildKind.SERVICE, r.name, None if service is None else owned_by(service, md)),
        Child(ChildKind.POD_DISRUPTION_BUDGET, r.name, None if pdb is None else owned_by(pdb, md)),
        Child(ChildKind.WARM_POOL, f"{r.name}-warm", None if warm is None else owned_by(warm, md)),
    ]
    return out


def _nodepool(obs: Observed, r: Resolved) -> str | None:
    if obs.ctx.capacity_provider != CapacityProvider.KARPENTER:
        return None
    acc = obs.classes[r.accelerator_class]
    if acc.provisioning and acc.provisioning.karpenter:
        return nodepool_name(r.accelerator_class)
    return None


def plan_serverless(obs: Observed, r: Resolved) -> Plan:
    """A tenant: the shared backend (owned by no tenant) and the tenant's own endpoint."""
    names = obs.tenant_names or (r.served_name, *r.aliases)
    creds = obs.backend_credentials
    b = serverless.backend(r, obs.ctx.operator_namespace, names, credentials=creds is not None)
    children = serverless_children(obs, r, b)
    conflicts = _conflicts(obs, children)
    if conflicts:
        return Plan(resolved=None, error=child_conflict(conflicts), backend=b, credentials=creds)
    diff = diff_children(children, _live_hashes(obs), obs.foreign, _drifted(obs, children))
    # the autoscaler scales the backend for all its tenants
    want, why, scale_to = replica_decision(obs, b)
    return Plan(
        resolved=r,
        error=None,
        apply=diff.apply,
        delete=diff.delete,
        scale_to=scale_to,
        desired_replicas=want,
        decision=f"shared backend {b.name}: {why}",
        backend=b,
        credentials=creds,
    )


def serverless_children(obs: Observed, r: Resolved, b: Resolved) -> list[Child]:
    """A tenant's children, in the order they are written: the backend's (labelled, owned by
    no tenant, removed by the backend sweep) and the tenant's own Service."""
    creds, ctx = obs.backend_credentials, obs.ctx
    secret = None if creds is None else serverless.build_credentials_secret(b, creds)
    pdb = build_pdb(b, ctx)
    tenant = owned_by(serverless.build_tenant_service(r, b, ctx), obs.md)
    return [
        # First, so the backend's pods find it: a Secret cannot be read across namespaces.
        Child(
            ChildKind.CREDENTIALS_SECRET,
            serverless.credentials_secret_name(b.name),
            None if secret is None else hashed(secret),
            remove_unwanted=False,  # a mirror no tenant asks for any more goes with the sweep
        ),
        Child(
            ChildKind.DEPLOYMENT,
            b.name,
            hashed(serverless.label_backend(build_deployment(b, ctx), b)),
        ),
        Child(
            ChildKind.SERVICE,
            b.name,
            hashed(serverless.label_backend(build_service(b, ctx), b)),
        ),
        Child(
            ChildKind.POD_DISRUPTION_BUDGET,
            b.name,
            None if pdb is None else hashed(serverless.label_backend(pdb, b)),
            remove_unwanted=False,
        ),
        Child(ChildKind.TENANT_SERVICE, r.name, tenant),
    ]


def _drifted(obs: Observed, children: list[Child]) -> set[ChildKind]:
    """The Deployment, when its live containers differ from the desired ones (a hand edit
    leaves the applied-hash annotation as it was)."""
    live = obs.deployment.containers
    if live is None or not obs.deployment.exists:
        return set()
    dep = next(c.obj for c in children if c.kind == ChildKind.DEPLOYMENT)
    return {ChildKind.DEPLOYMENT} if dep is not None and containers_of(dep) != live else set()


def _live_hashes(obs: Observed) -> dict[str, str | None]:
    return {**obs.children_hashes, ChildKind.DEPLOYMENT: obs.deployment.applied_hash}


def _conflicts(obs: Observed, children: list[Child]) -> list[Where]:
    """Children at whose names someone else's object stands (the Deployment first)."""
    out: list[Where] = []
    for c in children:
        if c.kind == ChildKind.DEPLOYMENT and obs.deployment.exists and not obs.deployment.owned:
            assert c.obj is not None
            out.insert(0, _where(c.obj))
        elif c.kind != ChildKind.DEPLOYMENT and c.obj is not None and c.kind in obs.foreign:
            out.append(_where(c.obj))
    return out


def _where(obj: dict[str, Any]) -> Where:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


def child_conflict(objects: list[Where]) -> ResolveError:
    """ChildConflict: objects at our children's names that someone else made, left untouched."""
    parts = []
    for kind, ns, name in objects:
        where = f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
        if name.startswith(("weights-", "fill-", "cache-")):
            fix = f"delete or rename that {kind} (its name derives from the model's URI)"
        elif name.startswith("sls-"):
            fix = f"delete or rename that {kind} (a shared Serverless backend's name)"
        elif kind == "NodePool":
            fix = f"delete or rename that {kind} (one per AcceleratorClass)"
        else:
            fix = f"rename the ModelDeployment, or delete or rename that {kind}"
        parts.append(f"{where} already exists and was not created by modelplane for it: {fix}")
    return ResolveError(
        FailureReason.CHILD_CONFLICT.value,
        "; ".join(parts) + ". modelplane leaves objects it did not create untouched",
    )
