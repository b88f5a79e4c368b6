"""The autoscaler's view of the cluster: what it reads and the two writes it makes
(``/scale`` and a pod's deletion cost), as a port (``ClusterAPI``) and its Kubernetes
implementation (``KubeCluster``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane.adapters.kube import Kube
from modelplane.adapters.metric_sources import PodState
from modelplane.builders.objects import LABEL_DEPLOYMENT
from modelplane.reconcile.core import AutoscalerView

ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


class ClusterAPI(Protocol):
    """What the loop reads and writes (a fake in unit tests, ``KubeCluster`` otherwise)."""

    def model_deployments(self) -> list[dict[str, Any]]: ...

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        """``spec.replicas`` of the Deployment, None when it does not exist (yet)."""
        ...

    def pods(self, namespace: str, name: str) -> list[PodState]:
        """Non-terminating model-server pods of the Deployment."""
        ...

    def scale(self, namespace: str, name: str, replicas: int) -> None: ...

    def set_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> None:
        """Set (or with None remove) the pod's deletion-cost annotation."""
        ...


@dataclass
class KubeCluster:
    kube: Kube
    namespaces: Sequence[str] = ()

    def model_deployments(self) -> list[dict[str, Any]]:
        return self.kube.model_deployment_bodies(self.namespaces)

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        try:
            d = self.kube.apps.read_namespaced_deployment(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        labels = d.metadata.labels or {}
        if labels.get(LABEL_DEPLOYMENT) != name or labels.get("app.kubernetes.io/managed-by") != (
            "modelplane"
        ):
            return None  # not our model server (a ChildConflict): never scaled
        return int(d.spec.replicas) if d.spec.replicas is not None else 1

    def pods(self, namespace: str, name: str) -> list[PodState]:
        items = self.kube.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_DEPLOYMENT}={name}"
        ).items
        out: list[PodState] = []
        for p in items:
            if p.metadata.deletion_timestamp is not None:
                continue
            conds = (p.status.conditions if p.status else None) or []
            created = p.metadata.creation_timestamp
            out.append(
                PodState(
                    name=p.metadata.name,
                    ip=p.status.pod_ip if p.status else None,
                    scheduled=bool(p.spec.node_name),
                    ready=any(c.type == "Ready" and c.status == "True" for c in conds),
                    created=created.timestamp() if created is not None else 0.0,
                    deletion_cost=(p.metadata.annotations or {}).get(ANNOTATION_DELETION_COST),
                )
            )
        return out

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.kube.scale(namespace, name, replicas)

    def set_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> None:
        value = None if cost is None else str(cost)
        body = {"metadata": {"annotations": {ANNOTATION_DELETION_COST: value}}}
        try:
            client.CoreV1Api(self.kube.api).patch_namespaced_pod(pod, namespace, body)
        except ApiException as e:
            if e.status != 404:  # already gone: nothing to protect
                raise


class Reporter(Protocol):
    """Where decisions go: the operator's Runtime (``decisions`` + ``trigger``)."""

    decisions: dict[str, AutoscalerView]

    def trigger(self, namespace: str, name: str) -> None: ...
