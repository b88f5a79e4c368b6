"""What the background loops need from the operator and from the cluster, as protocols: the
operator's Runtime and `Kube` implement them, unit tests pass fakes."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from modelplane.api.v1alpha1 import AcceleratorClassSpec, ModelDeployment
from modelplane.builders.preload import PreloadView
from modelplane.reconcile.core import AdapterView


class LoopRuntime(Protocol):
    """Where a loop leaves its results: shared state under `guard`, and a re-reconcile."""

    @property
    def guard(self) -> AbstractContextManager[Any]: ...

    def trigger(self, namespace: str, name: str, delay: float = 0.5) -> None: ...


class LoraRuntime(LoopRuntime, Protocol):
    #: FineTuned "namespace/name" -> per-adapter load state.
    adapters: dict[str, tuple[AdapterView, ...]]
    #: (namespace, deployment) pairs adapters were loaded into last round.
    lora_targets: set[tuple[str, str]]


class PreloadRuntime(LoopRuntime, Protocol):
    #: NodeLocal preload view per "namespace/name".
    preload: dict[str, PreloadView]


class ModelDeploymentReader(Protocol):
    def model_deployments(self, namespaces: Sequence[str] = ()) -> list[ModelDeployment]:
        """Live ModelDeployments in `namespaces` (all when empty)."""
        ...


class LoraCluster(ModelDeploymentReader, Protocol):
    def server_pods(self, namespace: str, deployment: str) -> list[Any]:
        """The model-server pods of a Deployment (Kubernetes pod objects)."""
        ...


class PreloadCluster(ModelDeploymentReader, Protocol):
    def accelerator_classes(self) -> dict[str, AcceleratorClassSpec]: ...

    def nodes(self) -> list[Any]:
        """Nodes not being deleted."""
        ...

    def cache_jobs(self, namespaces: Sequence[str] = ()) -> list[Any]:
        """Jobs labelled with a cache key, in `namespaces` (all when empty)."""
        ...

    def job(self, namespace: str, name: str) -> Any | None:
        """The Job called `name`, or None."""
        ...

    def apply(self, obj: dict[str, Any]) -> None: ...

    def patch_node(self, name: str, patch: dict[str, Any]) -> None: ...
