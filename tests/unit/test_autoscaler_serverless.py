"""Shared Serverless backends are autoscaled, to zero and back, for all their tenants at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelplane.adapters.autoscaler import (
    AutoscalerLoop,
    PodState,
    Scrape,
    Target,
    backend_policy,
)
from modelplane.api.demand import ANNOTATION_PENDING_REQUESTS, ANNOTATION_PENDING_REQUESTS_AT
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.autoscaling.policy import MetricSample
from modelplane.builders.serverless import BACKEND_MAX_REPLICAS
from modelplane.commands import default_classes
from modelplane.reconcile.core import (
    AutoscalerView,
    DeploymentView,
    Observed,
    compute_status,
    plan,
)

OPS = "modelplane-system"
BACKEND = "sls-llama-v3p1-8b-instruct-abc"
EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z


def tenant(
    namespace: str,
    name: str,
    autoscaling: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    backend: str | None = f"{OPS}/{BACKEND}",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": "Serverless", "model": {"catalog": "llama-v3p1-8b-instruct"}}
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    body: dict[str, Any] = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"u-{namespace}-{name}",
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": spec,
    }
    if backend is not None:
        body["status"] = {"backend": backend}
    return body


@dataclass
class FakeCluster:
    mds: list[dict[str, Any]]
    replicas: dict[tuple[str, str], int]
    pod_list: dict[tuple[str, str], list[PodState]] = field(default_factory=dict)
    scaled: list[tuple[str, str, int]] = field(default_factory=list)

    def model_deployments(self) -> list[dict[str, Any]]:
        return self.mds

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        return self.replicas.get((namespace, name))

    def pods(self, namespace: str, name: str) -> list[PodState]:
        n = self.replicas.get((namespace, name), 0)
        return list(self.pod_list.get((namespace, name), ready_pods(n)))

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append((namespace, name, replicas))
        self.replicas[(namespace, name)] = replicas

    def set_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> None:
        pass


def ready_pods(n: int) -> list[PodState]:
    return [PodState(f"{BACKEND}-{i}", f"10.0.1.{i}", True, True, float(i)) for i in range(n)]


@dataclass
class Engines:
    concurrency: float = 0.0
    targets: list[Target] = field(default_factory=list)

    def collect(self, target: Target, ready: Sequence[PodState], now: float) -> Scrape:
        self.targets.append(target)
        sample = MetricSample(now, len(ready), concurrent_requests=self.concurrency)
        return Scrape(sample, {p.name: self.concurrency / max(len(ready), 1) for p in ready})


@dataclass
class Reporter:
    decisions: dict[str, AutoscalerView] = field(default_factory=dict)
    triggers: list[tuple[str, str]] = field(default_factory=list)

    def trigger(self, namespace: str, name: str) -> None:
        self.triggers.append((namespace, name))


class Env:
    def __init__(self, mds: list[dict[str, Any]], replicas: int = 1) -> None:
        self.cluster = FakeCluster(mds, {(OPS, BACKEND): replicas})
        self.engines, self.reporter = Engines(), Reporter()
        self.mono, self.epoch = 100.0, EPOCH
        self.loop = AutoscalerLoop(
            self.cluster,
            self.engines,
            self.reporter,
            interval=5.0,
            clock=lambda: self.mono,
            epoch=lambda: self.epoch,
            wall=lambda: "2026-01-01T00:00:00Z",
        )

    def rounds(self, seconds: float, every: float = 5.0) -> None:
        for _ in range(round(seconds / every)):
            self.mono += every
            self.epoch += every
            self.loop.run_once()


WINDOWS = {"scaleUpWindow": "10s", "scaleDownWindow": "1m"}


def test_one_target_per_backend_deployment_in_the_operator_namespace() -> None:
    env = Env([tenant("team-a", "chat"), tenant("team-b", "assistant")])
    env.engines.concurrency = 10.0
    env.rounds(20)
    assert set(env.engines.targets) == {Target(OPS, BACKEND)}
    assert len(env.engines.targets) == 4  # one scrape per round, not one per tenant
    # Each tenant gets the backend's decision (status.autoscaler via the reconciler).
    assert set(env.reporter.decisions) == {"team-a/chat", "team-b/assistant"}
    assert {("team-a", "chat"), ("team-b", "assistant")} <= set(env.reporter.triggers)


def test_backend_scales_up_within_the_platform_ceiling_on_the_strictest_target() -> None:
    env = Env(
        [
            tenant("team-a", "chat", {**WINDOWS, "loadTargets": {"concurrentRequests": 8}}),
            tenant("team-b", "assistant"),  # no targets: the backend default (32 per replica)
        ]
    )
    env.engines.concurrency = 20.0  # 20 / 8 -> 3 replicas (32 alone would keep 1)
    env.rounds(15)
    assert env.cluster.scaled == [(OPS, BACKEND, 3)]
    env.engines.concurrency = 400.0  # 50 replicas asked for: capped by the platform
    env.rounds(15)
    assert env.cluster.scaled[-1] == (OPS, BACKEND, BACKEND_MAX_REPLICAS)
    assert env.reporter.decisions["team-b/assistant"].reason == "AtMax"


def test_backend_goes_to_zero_only_after_every_tenants_window() -> None:
    env = Env(
        [
            tenant("team-a", "chat", {**WINDOWS, "scaleToZeroWindow": "5m"}),
            tenant("team-b", "assistant", {**WINDOWS, "scaleToZeroWindow": "10m"}),
        ]
    )
    env.rounds(595)  # idle for 9 m 55 s: team-b's 10 m window keeps the backend up
    assert env.cluster.scaled == []
    env.rounds(10)
    assert env.cluster.scaled == [(OPS, BACKEND, 0)]
    for key in ("team-a/chat", "team-b/assistant"):
        view = env.reporter.decisions[key]
        assert view.reason == "ScaleToZero" and view.desired_replicas == 0


def test_demand_on_any_tenant_wakes_the_backend_at_zero() -> None:
    env = Env([tenant("team-a", "chat"), tenant("team-b", "assistant")], replicas=0)
    env.rounds(30)
    assert env.cluster.scaled == []
    env.cluster.mds[1] = tenant(
        "team-b",
        "assistant",
        annotations={
            ANNOTATION_PENDING_REQUESTS: "3",
            ANNOTATION_PENDING_REQUESTS_AT: "2026-01-01T00:00:30Z",
        },
    )
    env.rounds(5)
    assert env.cluster.scaled == [(OPS, BACKEND, 1)]
    view = env.reporter.decisions["team-a/chat"]
    assert view.reason == "ScaleFromZero" and "3 held at the gateway" in view.explanation


def test_tenants_without_a_backend_yet_and_removed_backends() -> None:
    env = Env([tenant("team-a", "chat", backend=None)])
    env.rounds(20)
    assert env.engines.targets == [] and env.reporter.decisions == {}
    env.cluster.mds = [tenant("team-a", "chat")]
    env.rounds(5)
    assert "team-a/chat" in env.reporter.decisions and env.loop._states
    env.cluster.mds = []  # the last tenant went: the backend's state goes too
    env.rounds(5)
    assert env.reporter.decisions == {} and env.loop._states == {}


def test_backend_policy_combines_the_tenants() -> None:
    def md(autoscaling: dict[str, Any] | None) -> ModelDeployment:
        return ModelDeployment.model_validate(tenant("ns", "x", autoscaling))

    default = backend_policy([md(None)])
    assert (default.min_replicas, default.max_replicas) == (0, BACKEND_MAX_REPLICAS)
    assert (default.scale_up_window, default.scale_down_window) == (30.0, 600.0)
    assert default.scale_to_zero_window == 3600.0 and default.targets == {
        "concurrent_requests": 32.0
    }
    p = backend_policy(
        [
            md({"scaleUpWindow": "10s", "scaleDownWindow": "5m", "scaleToZeroWindow": "5m"}),
            md(
                {
                    "scaleUpWindow": "1m",
                    "scaleDownWindow": "20m",
                    "loadTargets": {"concurrentRequests": 64, "tokensGeneratedPerSecond": 900},
                }
            ),
        ]
    )
    assert (p.scale_up_window, p.scale_down_window) == (10.0, 1200.0)
    assert p.scale_to_zero_window == 3600.0  # the second tenant's default 1h is the longest
    assert p.targets == {"concurrent_requests": 32.0, "tokens_generated_per_second": 900.0}


def test_tenant_status_reports_the_backend_autoscaler_and_scale_to_zero() -> None:
    md = ModelDeployment.model_validate(tenant("team-a", "chat"))
    view = AutoscalerView(0, "1 -> 0: no traffic for 1h", "ScaleToZero", "2026-01-01T00:00:00Z")
    obs = Observed(
        md,
        default_classes(),
        DeploymentView(exists=True, replicas=0),
        {},
        (),
        {},
        "2026-01-01T00:00:05Z",
        autoscaler=view,
    )
    p = plan(obs)
    assert p.backend is not None and p.scale_to is None  # the reconciler keeps the 0
    assert p.decision == f"shared backend {p.backend.name}: 1 -> 0: no traffic for 1h"
    status, _ = compute_status(obs, p)
    assert status["phase"] == "ScaledToZero"
    assert status["autoscaler"]["reason"] == "ScaleToZero"
