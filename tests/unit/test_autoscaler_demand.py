"""Gateway demand (api.demand): held requests published on the ModelDeployment wake it at zero."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelplane.adapters.autoscaler import AutoscalerLoop, PodState, Scrape, Target
from modelplane.api.demand import (
    ANNOTATION_PENDING_REQUESTS,
    ANNOTATION_PENDING_REQUESTS_AT,
    freshness_limit,
    gateway_demand,
)
from modelplane.autoscaling.policy import MetricSample
from modelplane.reconcile.core import AutoscalerView
from modelplane_testbed import factories

NS = "team-a"
EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z
AT = "2026-01-01T00:00:00Z"


def demand(pending: str | None, at: str | None = AT) -> dict[str, str]:
    out = {}
    if pending is not None:
        out[ANNOTATION_PENDING_REQUESTS] = pending
    if at is not None:
        out[ANNOTATION_PENDING_REQUESTS_AT] = at
    return out


def test_the_contract_parses_fresh_counts_and_says_why_it_ignores_others() -> None:
    limit = freshness_limit(5.0)
    assert limit == 30.0 and freshness_limit(20.0) == 60.0  # 3 intervals, at least 30 s
    assert gateway_demand({}, EPOCH, limit).pending == 0
    assert gateway_demand(demand("0", None), EPOCH, limit).ignored is None
    assert gateway_demand(demand("7"), EPOCH + 29, limit).pending == 7
    assert gateway_demand(demand("7", "2026-01-01T00:00:00+00:00"), EPOCH, limit).pending == 7
    for published, at, why in (
        (demand("7"), EPOCH + 31, "31s old (older than 30s)"),
        (demand("7", None), EPOCH, "pending-requests-at is missing"),
        (demand("many"), EPOCH, "not a non-negative integer"),
        (demand("-1"), EPOCH, "not a non-negative integer"),
        (demand("7", "yesterday"), EPOCH, "not an RFC 3339 UTC time"),
        (demand("7", "2026-01-01T01:00:00+01:00"), EPOCH, "not an RFC 3339 UTC time"),
        (demand("7", "2026-01-01T01:00:00Z"), EPOCH, "in the future"),
    ):
        got = gateway_demand(published, at, limit)
        assert got.pending == 0 and got.ignored is not None and why in got.ignored, published


def md(name: str = "chat", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec = factories.spec(
        factories.LLAMA_8B,
        replicas={"min": 0, "max": 4},
        autoscaling={
            "scaleUpWindow": "10s",
            "scaleDownWindow": "30s",
            "scaleToZeroWindow": "5m",
            "loadTargets": {"concurrentRequests": 4},
        },
    )
    return factories.md(name, NS, spec, uid="u1", generation=1, annotations=annotations or {})


@dataclass
class FakeCluster:
    mds: list[dict[str, Any]]
    replicas: dict[str, int]
    pod_list: dict[str, list[PodState]] = field(default_factory=dict)
    scaled: list[tuple[str, int]] = field(default_factory=list)

    def model_deployments(self) -> list[dict[str, Any]]:
        return self.mds

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        return self.replicas.get(name)

    def pods(self, namespace: str, name: str) -> list[PodState]:
        return list(self.pod_list.get(name, []))

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append((name, replicas))
        self.replicas[name] = replicas

    def set_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> None:
        pass


@dataclass
class IdleEngines:
    """Every Ready pod idle: only the gateway's held requests are demand."""

    concurrency: float = 0.0

    def collect(self, target: Target, ready: Sequence[PodState], now: float) -> Scrape:
        return Scrape(MetricSample(now, len(ready), concurrent_requests=self.concurrency))


@dataclass
class Reporter:
    decisions: dict[str, AutoscalerView] = field(default_factory=dict)
    triggers: list[tuple[str, str]] = field(default_factory=list)

    def trigger(self, namespace: str, name: str) -> None:
        self.triggers.append((namespace, name))


class Clocks:
    def __init__(self) -> None:
        self.mono, self.epoch = 100.0, EPOCH

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.epoch += seconds


def loop_for(
    cluster: FakeCluster, interval: float = 5.0
) -> tuple[AutoscalerLoop, Clocks, Reporter]:
    clocks, reporter = Clocks(), Reporter()
    loop = AutoscalerLoop(
        cluster,
        IdleEngines(),
        reporter,
        interval=interval,
        clock=lambda: clocks.mono,
        epoch=lambda: clocks.epoch,
        wall=lambda: AT,
    )
    return loop, clocks, reporter


def test_fresh_pending_requests_wake_a_deployment_at_zero() -> None:
    cluster = FakeCluster([md()], {"chat": 0})
    loop, clocks, reporter = loop_for(cluster)
    for _ in range(10):
        clocks.tick(5)
        loop.run_once()
    assert cluster.scaled == []  # nothing held: stays at zero
    cluster.mds = [md(annotations=demand("6", "2026-01-01T00:00:45Z"))]
    clocks.tick(5)
    loop.run_once()
    assert cluster.scaled == [("chat", 2)]  # 6 held / 4 per replica, at once (from zero)
    view = reporter.decisions[f"{NS}/chat"]
    assert view.reason == "ScaleFromZero" and "6 held at the gateway" in view.explanation
    assert (NS, "chat") in reporter.triggers


def test_stale_pending_requests_are_ignored_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster([md(annotations=demand("6"))], {"chat": 0})
    loop, clocks, _ = loop_for(cluster)
    clocks.tick(31)  # the gateway stopped publishing 31 s ago (limit: 30 s at a 5 s interval)
    with caplog.at_level(logging.WARNING, logger="modelplane.autoscaler"):
        for _ in range(5):
            clocks.tick(5)
            loop.run_once()
    assert cluster.scaled == []
    ignored = [r.getMessage() for r in caplog.records if "gateway demand" in r.getMessage()]
    assert len(ignored) == 1 and f"{NS}/chat" in ignored[0] and "older than 30s" in ignored[0]


def test_freshness_follows_the_interval() -> None:
    cluster = FakeCluster([md(annotations=demand("1"))], {"chat": 0})
    loop, clocks, _ = loop_for(cluster, interval=20.0)
    clocks.tick(45)  # 45 s old counts at a 20 s interval (3 x 20 s = 60 s)
    loop.run_once()
    assert cluster.scaled == [("chat", 1)]


def test_held_requests_add_to_the_load_of_a_running_deployment() -> None:
    pods = [PodState("chat-0", "10.0.0.1", scheduled=True, ready=True)]
    cluster = FakeCluster([md()], {"chat": 1}, {"chat": pods})
    loop, clocks, reporter = loop_for(cluster)
    for _ in range(4):
        clocks.tick(5)
        stamp = f"2026-01-01T00:00:{int(clocks.epoch - EPOCH):02d}Z"
        cluster.mds = [md(annotations=demand("16", stamp))]  # the gateway republishes
        loop.run_once()
    # 16 held / 4 per replica -> 4, fast path (queue >= 4 per ready replica).
    assert cluster.scaled == [("chat", 4)]
    assert "16 held at the gateway" in reporter.decisions[f"{NS}/chat"].explanation
