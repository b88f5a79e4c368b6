"""Who serves which OpenAI `model` name: pure, from ModelDeployments and Ready pods.

* OnDemand: `spec.model.servedName` (default `metadata.name`) and `spec.model.aliases` -> the
  deployment's own model-server pods (`modelplane.io/deployment=<name>`).
* Serverless: the tenant's names -> the shared backend's pods (`status.backend` =
  `namespace/name`, pods labelled `modelplane.io/backend=<name>`). The backend serves every
  tenant's names, so `model` is passed on unchanged.
* FineTuned: `<name>--<adapter>` -> the base's pods (`spec.base.deployment`, or its own servers
  on a catalog base); the LoRA loop loads every adapter into every Ready replica of the base.

A name belongs to the namespace of its ModelDeployment: a key of another namespace never sees
it. Demand (held requests) is published on the ModelDeployment whose replicas are missing: the
deployment itself, a FineTuned object's base, a Serverless tenant (the autoscaler wakes the
backend from any tenant's demand).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplane.api.enums import Tier

SEPARATOR = "--"  # FineTuned adapters are served as <ModelDeployment>--<adapter>
ENGINE_PORT = 8000


@dataclass(frozen=True)
class PodGroup:
    """A set of model-server pods: `namespace` and one label (key, value) selecting them."""

    namespace: str
    label: str
    value: str


@dataclass(frozen=True)
class Route:
    namespace: str  # the tenant namespace that owns the name
    name: str  # the `model` a client sends
    deployment: str  # the ModelDeployment the name belongs to
    tier: str
    pods: PodGroup | None  # None: not servable yet (a Serverless tenant with no backend)
    demand_on: str  # ModelDeployment (same namespace) that gets the demand annotations
    model: str = ""  # catalog id (what prices key on), or the uri; "" when unknown


@dataclass
class Table:
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    #: ready endpoints ("ip:port") per pod group
    endpoints: dict[PodGroup, list[str]] = field(default_factory=dict)

    def lookup(self, namespace: str, model: str) -> Route | None:
        return self.routes.get((namespace, model))

    def names(self, namespace: str) -> list[str]:
        return sorted(n for ns, n in self.routes if ns == namespace)

    def closest(self, namespace: str, model: str, n: int = 3) -> list[str]:
        return difflib.get_close_matches(model, self.names(namespace), n=n, cutoff=0.4)

    def ready(self, route: Route) -> list[str]:
        return [] if route.pods is None else self.endpoints.get(route.pods, [])


def _names(md: Mapping[str, Any]) -> list[str]:
    meta, spec = md.get("metadata") or {}, md.get("spec") or {}
    model = spec.get("model") or {}
    return [model.get("servedName") or meta["name"], *(model.get("aliases") or [])]


def build_routes(mds: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Route]:
    """Routes of every ModelDeployment (plain dicts as the API returns them). On a name clash
    within a namespace the oldest object wins (creationTimestamp, then name)."""
    out: dict[tuple[str, str], Route] = {}

    def key(md: Mapping[str, Any]) -> tuple[str, str]:
        meta = md.get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("name")))

    for md in sorted(mds, key=key):
        meta, spec, status = md["metadata"], md.get("spec") or {}, md.get("status") or {}
        ns, name, tier = meta.get("namespace") or "default", meta["name"], spec.get("tier")
        routes: list[Route] = []
        src = spec.get("model") or {}
        catalog = str(
            src.get("catalog")
            or (spec.get("base") or {}).get("catalog")
            or status.get("model")
            or ""
        )
        if tier == Tier.SERVERLESS.value:
            backend = status.get("backend") or ""
            bns, _, bname = backend.partition("/")
            group = PodGroup(bns, "modelplane.io/backend", bname) if bname else None
            routes = [Route(ns, n, name, tier, group, name, catalog) for n in _names(md)]
        elif tier == Tier.FINE_TUNED.value:
            base = (spec.get("base") or {}).get("deployment") or name
            group = PodGroup(ns, "modelplane.io/deployment", base)
            routes = [
                Route(ns, f"{name}{SEPARATOR}{a['name']}", name, tier, group, base, catalog)
                for a in spec.get("adapters") or []
            ]
        else:
            group = PodGroup(ns, "modelplane.io/deployment", name)
            routes = [Route(ns, n, name, str(tier), group, name, catalog) for n in _names(md)]
        for r in routes:
            out.setdefault((r.namespace, r.name), r)
    return out


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """A pod that can take requests: Ready, an address, not terminating."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def group_endpoints(
    groups: Iterable[PodGroup], pods: Iterable[Mapping[str, Any]], port: int = ENGINE_PORT
) -> dict[PodGroup, list[str]]:
    """Ready endpoints of each group among `pods` (model-server pods, plain dicts)."""
    wanted = set(groups)
    out: dict[PodGroup, list[str]] = {g: [] for g in wanted}
    for pod in pods:
        if not pod_ready(pod):
            continue
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        for label in ("modelplane.io/deployment", "modelplane.io/backend"):
            g = PodGroup(meta.get("namespace") or "", label, labels.get(label, ""))
            if g in wanted:
                out[g].append(f"{pod['status']['podIP']}:{port}")
    for eps in out.values():
        eps.sort()
    return out


def build_table(
    mds: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], port: int = ENGINE_PORT
) -> Table:
    routes = build_routes(mds)
    groups = {r.pods for r in routes.values() if r.pods is not None}
    return Table(routes, group_endpoints(groups, pods, port))


# --------------------------------------------------------------------------- demand of replicas
REPLICA_ANNOTATION_PREFIX = "gateway.modelplane.io/pending."
#: A replica's count older than this no longer adds to the total (its replica stopped).
REPLICA_FRESH_SECONDS = 30.0


def replica_key(replica: str) -> str:
    """The annotation one gateway replica keeps its own count in (`count@epoch`)."""
    import hashlib

    return REPLICA_ANNOTATION_PREFIX + hashlib.sha256(replica.encode()).hexdigest()[:16]


def demand_annotations(
    current: Mapping[str, str], replica: str, count: int, now: float
) -> tuple[int, dict[str, str | None]]:
    """(total, annotation changes) when `replica` now holds `count` requests: its own
    per-replica annotation is set (removed at 0), stale ones of other replicas are removed, and
    the total of the fresh ones is what `modelplane.io/pending-requests` must say. Several gateway
    replicas thus publish their sum, and one that drains never hides another's requests."""
    mine = replica_key(replica)
    changes: dict[str, str | None] = {mine: f"{count}@{now:.0f}" if count else None}
    total = count
    for k, v in current.items():
        if not k.startswith(REPLICA_ANNOTATION_PREFIX) or k == mine:
            continue
        n, _, at = v.partition("@")
        try:
            fresh = now - float(at) <= REPLICA_FRESH_SECONDS and int(n) > 0
        except ValueError:
            fresh = False
        if fresh:
            total += int(n)
        else:
            changes[k] = None
    return total, changes
