"""Decide, then act: from the observed world to a plan (children to apply, scale, status).

Everything here is pure. `Observed` is the world the adapters gathered (`model`); `plan()`
turns it into a `Plan` with one planner per tier over one shared child diff (`planning`,
`children`); `compute_status()` produces a ModelDeployment's status from small functions with
an injected clock (`status`). The adapters carry the plan out, skipping every write whose
result is already in place, so a resync with nothing changed makes no write request at all.
This module is the package's front door: it re-exports what the adapters and tests use.
"""

from __future__ import annotations

from modelplane.reconcile.children import Child, ChildDiff, ChildKind, diff_children
from modelplane.reconcile.model import (
    AdapterView,
    AutoscalerView,
    DeploymentView,
    Event,
    Observed,
    Plan,
    PodView,
    content_hash,
)
from modelplane.reconcile.planning import child_conflict, desired_replicas, plan
from modelplane.reconcile.status import compute_status, status_changed, status_patch

__all__ = [
    "AdapterView",
    "AutoscalerView",
    "Child",
    "ChildDiff",
    "ChildKind",
    "DeploymentView",
    "Event",
    "Observed",
    "Plan",
    "PodView",
    "child_conflict",
    "compute_status",
    "content_hash",
    "desired_replicas",
    "diff_children",
    "plan",
    "status_changed",
    "status_patch",
]
