"""Every Kubernetes API permission the operator uses, in one place.

The Helm chart's RBAC is rendered from this table's twin in `charts/modelplane/templates/`, and
a test fails when the two differ (a wildcard, a verb the operator never uses, or one missing).
Secrets are deliberately absent: the operator only ever passes secret *references* to pods.
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


READ = ("get", "list", "watch")
OWN = ("get", "list", "watch", "create", "patch", "delete")

PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "modelplane.io",
        "modeldeployments",
        (*READ, "patch"),
        True,
        "watch ModelDeployments; kopf records handler progress in annotations",
    ),
    Permission(
        "modelplane.io",
        "modeldeployments/status",
        ("get", "patch"),
        True,
        "the single status writer",
    ),
    Permission(
        "modelplane.io",
        "acceleratorclasses",
        READ,
        False,
        "resolve the GPU kind, price and node placement",
    ),
    Permission("apps", "deployments", OWN, True, "model-server Deployments (server-side apply)"),
    Permission(
        "apps",
        "deployments/scale",
        ("get", "patch"),
        True,
        "the autoscaler changes replicas only through /scale",
    ),
    Permission("", "services", OWN, True, "the OpenAI-compatible endpoint"),
    Permission("policy", "poddisruptionbudgets", OWN, True, "disruption budgets for replicas > 1"),
    Permission("", "pods", READ, True, "replica states for status, metrics scraping"),
    Permission("", "events", ("create", "patch"), True, "Events on phase transitions"),
    Permission("", "nodes", READ, False, "capacity: which GPU nodes exist and are free"),
    Permission(
        "",
        "nodes",
        ("create", "delete"),
        False,
        "simulated provider: create and remove KWOK GPU nodes",
        CapacityProvider.SIMULATED,
    ),
    Permission(
        "karpenter.sh",
        "nodepools",
        OWN,
        False,
        "one shared NodePool per AcceleratorClass in use",
        CapacityProvider.KARPENTER,
    ),
)


def required(provider: CapacityProvider) -> dict[tuple[str, str, bool], set[str]]:
    """(group, resource, namespaced) -> verbs the operator needs with `provider`."""
    out: dict[tuple[str, str, bool], set[str]] = {}
    for p in PERMISSIONS:
        if p.provider is None or p.provider == provider:
            out.setdefault((p.group, p.resource, p.namespaced), set()).update(p.verbs)
    return out
