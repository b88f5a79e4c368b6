"""Every Kubernetes API permission the operator uses, in one place.

The Helm chart's RBAC is rendered from this table's twin in `charts/modelplane/templates/`, and
a test fails when the two differ (a wildcard, a verb the operator never uses, or one missing).

Secrets: model servers get secret *references* only, with one exception. A shared Serverless
backend lives in the operator's namespace and a pod cannot reference a Secret in another
namespace, so the operator reads the one Secret a tenant's `model.credentialsSecretRef` names
(`get` by name: never `list` or `watch`, so it never learns what else a namespace holds) and
mirrors that key next to the backend. Writing Secrets is granted only in the operator's own
namespace (`operator_namespace`: a Role there, in every install mode).
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.api.enums import CapacityProvider


@dataclass(frozen=True)
class Permission:
    group: str  # "" for the core group
    resource: str
    verbs: tuple[str, ...]
    namespaced: bool
    why: str
    provider: CapacityProvider | None = None  # only with this capacity provider
    #: Granted only in the operator's (release) namespace, never cluster-wide.
    operator_namespace: bool = False


READ = ("get", "list", "watch")
LIST_WATCH = ("list", "watch")

# Server-side apply creates a missing object with a PATCH request that the apiserver also
# authorizes as "create", so applied children need both verbs.
PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "modelplane.io",
        "modeldeployments",
        (*READ, "patch"),
        True,
        "watch ModelDeployments; kopf records handler progress in annotations",
    ),
    Permission(
        "modelplane.io", "modeldeployments/status", ("patch",), True, "the single status writer"
    ),
    Permission(
        "modelplane.io",
        "acceleratorclasses",
        ("list",),
        False,
        "resolve the GPU kind, price and node placement",
    ),
    Permission(
        "apps",
        "deployments",
        (*READ, "create", "patch", "delete"),
        True,
        "model-server Deployments: read, server-side apply; watched so status follows rollouts; "
        "a shared Serverless backend is deleted when its last tenant goes",
    ),
    Permission(
        "apps",
        "deployments/scale",
        ("patch",),
        True,
        "replicas change only through /scale (bounds, pinning, the autoscaler)",
    ),
    Permission(
        "",
        "services",
        ("get", "create", "patch", "delete"),
        True,
        "the OpenAI-compatible endpoint (a Serverless backend's goes with it)",
    ),
    Permission(
        "policy",
        "poddisruptionbudgets",
        ("get", "create", "patch", "delete"),
        True,
        "a disruption budget while more than one replica is possible",
    ),
    Permission("", "pods", LIST_WATCH, True, "replica states for status; metrics scraping"),
    Permission(
        "",
        "pods",
        ("patch",),
        True,
        "autoscaler: mark the idle Ready pods a scale-down removes (pod-deletion-cost)",
    ),
    Permission("", "events", ("create",), True, "Events on phase transitions"),
    Permission(
        "",
        "secrets",
        ("get",),
        True,
        "Serverless: read, by name, the Secret a tenant's model.credentialsSecretRef names (only "
        "those: never list or watch) to mirror its one key next to the shared backend, whose "
        "pods cannot reference a Secret in the tenant's namespace; and read that mirror",
    ),
    Permission(
        "coordination.k8s.io",
        "leases",
        ("get", "create", "update"),
        True,
        "leader election between operator replicas: the one Lease, in the operator's namespace",
        operator_namespace=True,
    ),
    Permission(
        "",
        "secrets",
        ("create", "patch", "delete"),
        True,
        "Serverless: the backend's mirrored credentials Secret, in the operator's namespace only "
        "(applied with the backend, deleted by the backend sweep)",
        operator_namespace=True,
    ),
    Permission(
        "",
        "nodes",
        ("list", "patch"),
        False,
        "NodeLocal preload: find the accelerator class's nodes, label the ones holding cached weights",
    ),
    Permission(
        "batch",
        "jobs",
        ("get", "list", "create", "patch"),
        True,
        "preload: a cache Job per node (NodeLocal) or one fill Job (SharedVolume)",
    ),
    Permission(
        "",
        "persistentvolumeclaims",
        ("get", "create", "patch"),
        True,
        "SharedVolume preload: the claim the weights are filled into once",
    ),
    Permission(
        "karpenter.sh",
        "nodepools",
        ("list", "create", "patch", "delete"),
        False,
        "one shared NodePool per AcceleratorClass in use",
        CapacityProvider.KARPENTER,
    ),
)


def required(
    provider: CapacityProvider, *, operator_namespace: bool = False
) -> dict[tuple[str, str, bool], set[str]]:
    """(group, resource, namespaced) -> verbs the operator needs with `provider`: everywhere it
    works, or (`operator_namespace`) in addition, only in its own namespace."""
    out: dict[tuple[str, str, bool], set[str]] = {}
    for p in PERMISSIONS:
        if p.operator_namespace != operator_namespace:
            continue
        if p.provider is None or p.provider == provider:
            out.setdefault((p.group, p.resource, p.namespaced), set()).update(p.verbs)
    return out


#: What `modelplane gateway` needs, and nothing else: it reads ModelDeployments, Ready
#: model-server pods and ApiKeys (salted hashes; never Secrets or ConfigMaps), and writes only
#: the demand annotations on ModelDeployments. Cluster-wide: a ClusterRole; namespaced: a Role in
#: each watched namespace and the release namespace (shared Serverless backends' pods).
GATEWAY_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "modelplane.io",
        "modeldeployments",
        ("get", "list", "patch"),
        True,
        "the routing table (served names, aliases, adapters, Serverless backends); get and "
        "patch: the demand annotations (modelplane.io/pending-requests, the sum over gateway "
        "replicas) while requests are held, and the usage ledger's totals "
        "(modelplane.io/usage) that status.usage reports",
    ),
    Permission("modelplane.io", "apikeys", ("list",), True, "API keys: salted hashes only"),
    Permission("", "pods", ("list",), True, "Ready model-server pods: where requests go"),
)


def gateway_required() -> dict[tuple[str, str, bool], set[str]]:
    """(group, resource, namespaced) -> verbs the gateway needs."""
    out: dict[tuple[str, str, bool], set[str]] = {}
    for p in GATEWAY_PERMISSIONS:
        out.setdefault((p.group, p.resource, p.namespaced), set()).update(p.verbs)
    return out
