"""The children a ModelDeployment's reconcile writes: a closed set of kinds, and the one diff
that decides which of them to apply and which to remove."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelplane.builders.objects import ANNOTATION_SPEC_HASH


class ChildKind(StrEnum):
    """Every role an object written by the reconciler plays. Several roles share a Kubernetes
    kind (a WarmPool is a Deployment); `resource` says which."""

    DEPLOYMENT = "Deployment"
    SERVICE = "Service"
    TENANT_SERVICE = "TenantService"
    POD_DISRUPTION_BUDGET = "PodDisruptionBudget"
    WARM_POOL = "WarmPool"
    WEIGHTS_CLAIM = "WeightsClaim"
    FILL_JOB = "FillJob"
    CREDENTIALS_SECRET = "CredentialsSecret"
    NODE_POOL = "NodePool"

    @property
    def resource(self) -> tuple[str, str]:
        """(apiVersion, kind) of the Kubernetes object playing this role."""
        return _RESOURCES[self]


_RESOURCES: dict[ChildKind, tuple[str, str]] = {
    ChildKind.DEPLOYMENT: ("apps/v1", "Deployment"),
    ChildKind.SERVICE: ("v1", "Service"),
    ChildKind.TENANT_SERVICE: ("v1", "Service"),
    ChildKind.POD_DISRUPTION_BUDGET: ("policy/v1", "PodDisruptionBudget"),
    ChildKind.WARM_POOL: ("apps/v1", "Deployment"),
    ChildKind.WEIGHTS_CLAIM: ("v1", "PersistentVolumeClaim"),
    ChildKind.FILL_JOB: ("batch/v1", "Job"),
    ChildKind.CREDENTIALS_SECRET: ("v1", "Secret"),
    ChildKind.NODE_POOL: ("karpenter.sh/v1", "NodePool"),
}


@dataclass(frozen=True)
class Child:
    """One child as the plan wants it: `obj` (stamped with its content hash), or None when it
    should not exist."""

    kind: ChildKind
    name: str
    obj: dict[str, Any] | None
    #: Remove the live object when `obj` is None (else leave it, e.g. to a sweep).
    remove_unwanted: bool = True
    #: Create once, never update (a Job's template is immutable).
    immutable: bool = False


@dataclass(frozen=True)
class ChildDiff:
    apply: list[dict[str, Any]]
    delete: list[tuple[ChildKind, str]]


def applied_hash(obj: Mapping[str, Any]) -> str | None:
    hash_: str | None = (obj["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    return hash_


def diff_children(
    children: Sequence[Child],
    have: Mapping[str, str | None],
    foreign: Collection[str],
    drifted: Collection[str] = (),
) -> ChildDiff:
    """What to write so the live children match `children`, in their order. `have` holds the
    applied hash of each live child by kind (None or missing: absent); children in `foreign`
    are someone else's and never removed; children in `drifted` were edited by hand since
    they were applied and are applied again even though their hash matches."""
    apply: list[dict[str, Any]] = []
    delete: list[tuple[ChildKind, str]] = []
    for child in children:
        live = have.get(child.kind)
        if child.obj is None:
            if child.remove_unwanted and live is not None and child.kind not in foreign:
                delete.append((child.kind, child.name))
        elif child.immutable:
            if live is None:
                apply.append(child.obj)
        elif applied_hash(child.obj) != live or child.kind in drifted:
            apply.append(child.obj)
    return ChildDiff(apply, delete)
