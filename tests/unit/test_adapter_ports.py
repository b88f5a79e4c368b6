"""The LoRA and preload loops against fakes of their ports (no cluster, no engine)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from modelplane.adapters.lora import EngineError, LoraLoop
from modelplane.adapters.ports import LoraCluster, LoraRuntime
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.catalog.engines import EngineProfile
from modelplane.reconcile.core import AdapterView


def tuned(name: str = "ft") -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": "u"},
            "spec": {
                "tier": "FineTuned",
                "base": {"catalog": "llama-v3p1-8b-instruct"},
                "adapters": [{"name": "sql", "uri": "hf://org/sql-lora"}],
                "engine": {"maxContextLength": 8192},
                "replicas": {"min": 1, "max": 1},
            },
        }
    )


def ready_pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[], node_name="n1"),
        status=client.V1PodStatus(
            phase="Running", conditions=[client.V1PodCondition(type="Ready", status="True")]
        ),
    )


@dataclass
class FakeCluster:
    mds: list[ModelDeployment]
    pods: dict[tuple[str, str], list[Any]]

    def model_deployments(self, namespaces: Sequence[str] = ()) -> list[ModelDeployment]:
        return self.mds

    def server_pods(self, namespace: str, deployment: str) -> list[Any]:
        return self.pods.get((namespace, deployment), [])


@dataclass
class FakeEngine:
    have: dict[str, set[str]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)  # pods whose load fails

    def loaded(self, namespace: str, pod: Any, engine: EngineProfile) -> set[str]:
        return set(self.have.get(pod.metadata.name, set()))

    def load(self, namespace: str, pod: Any, name: str, path: str, engine: EngineProfile) -> None:
        if pod.metadata.name in self.refuse:
            raise EngineError(400, "rank too large")
        self.have.setdefault(pod.metadata.name, set()).add(name)

    def unload(self, namespace: str, pod: Any, name: str, engine: EngineProfile) -> None:
        self.have[pod.metadata.name].discard(name)


@dataclass
class FakeRuntime:
    guard: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, tuple[AdapterView, ...]] = field(default_factory=dict)
    lora_targets: set[tuple[str, str]] = field(default_factory=set)
    triggered: list[tuple[str, str]] = field(default_factory=list)

    def trigger(self, namespace: str, name: str, delay: float = 0.5) -> None:
        self.triggered.append((namespace, name))


def test_adapters_are_loaded_into_every_ready_pod_and_reported_once() -> None:
    cluster = FakeCluster([tuned()], {("ns", "ft"): [ready_pod("a"), ready_pod("b")]})
    engine, rt = FakeEngine(have={"b": {"old--gone"}}), FakeRuntime()
    ports: tuple[LoraCluster, LoraRuntime] = (cluster, rt)
    loop = LoraLoop(ports[0], engine, ports[1])
    loop.round()
    assert engine.have == {"a": {"ft--sql"}, "b": {"ft--sql"}}  # a stranger's adapter unloaded
    assert rt.adapters["ns/ft"] == (AdapterView("sql", "ft--sql", 2, 2),)
    assert rt.triggered == [("ns", "ft")]
    loop.round()
    assert rt.triggered == [("ns", "ft")], "an unchanged view triggers no reconcile"


def test_a_failed_load_is_reported_with_the_engines_message() -> None:
    cluster = FakeCluster([tuned()], {("ns", "ft"): [ready_pod("a")]})
    rt = FakeRuntime()
    LoraLoop(cluster, FakeEngine(refuse={"a"}), rt).round()
    (view,) = rt.adapters["ns/ft"]
    assert view.loaded_replicas == 0 and view.reason == "AdapterLoadFailed"
    assert view.message == "a: HTTP 400: rank too large"
