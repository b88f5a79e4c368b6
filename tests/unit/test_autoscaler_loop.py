"""The autoscaler loop with fakes for the cluster and the metrics source (injected clocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelplane.adapters.autoscaler import (
    ANNOTATION_DELETION_COST,
    VICTIM_DELETION_COST,
    AutoscalerLoop,
    NoMetricsError,
    PodMetricsSource,
    PodState,
    PrometheusMetricsSource,
    Scrape,
    Target,
    metrics_source_from_setting,
)
from modelplane.autoscaling.policy import MetricSample
from modelplane.reconcile.core import AutoscalerView
from modelplane_testbed import factories

NS = "team-a"


def md(
    name: str = "chat",
    *,
    replicas: dict[str, Any] | None = None,
    autoscaling: dict[str, Any] | None = None,
    tier: str = "OnDemand",
    uid: str = "u1",
) -> dict[str, Any]:
    spec = factories.spec(factories.LLAMA_8B, tier=tier)
    spec["replicas"] = replicas if replicas is not None else {"min": 1, "max": 4}
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return factories.md(name, NS, spec, uid=uid, generation=1)


AUTOSCALING = {
    "scaleUpWindow": "10s",
    "scaleDownWindow": "30s",
    "loadTargets": {"concurrentRequests": 16},
}


@dataclass
class FakeCluster:
    mds: list[dict[str, Any]] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    pod_list: dict[str, list[PodState]] = field(default_factory=dict)
    scaled: list[tuple[str, int]] = field(default_factory=list)
    costs: list[tuple[str, int | None]] = field(default_factory=list)

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
        self.costs.append((pod, cost))


@dataclass
class FakeSource:
    """Fleet-level concurrency as set by the test; in-flight per pod when given."""

    concurrency: float = 0.0
    in_flight: dict[str, float] = field(default_factory=dict)
    fail: bool = False
    calls: int = 0

    def collect(self, target: Target, ready: Sequence[PodState], now: float) -> Scrape:
        self.calls += 1
        if self.fail:
            raise NoMetricsError("down")
        sample = MetricSample(
            timestamp=now,
            ready_replicas=len(ready),
            concurrent_requests=self.concurrency,
            requests_per_second=self.concurrency / 2,
        )
        return Scrape(sample, dict(self.in_flight))


@dataclass
class FakeReporter:
    decisions: dict[str, AutoscalerView] = field(default_factory=dict)
    triggers: list[tuple[str, str]] = field(default_factory=list)

    def trigger(self, namespace: str, name: str) -> None:
        self.triggers.append((namespace, name))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def ready_pods(n: int, prefix: str = "chat") -> list[PodState]:
    return [
        PodState(f"{prefix}-{i}", f"10.0.0.{i}", scheduled=True, ready=True, created=float(i))
        for i in range(n)
    ]


@dataclass
class Env:
    cluster: FakeCluster
    source: FakeSource
    reporter: FakeReporter
    clock: Clock
    loop: AutoscalerLoop

    def rounds(self, seconds: float, every: float = 2.0) -> None:
        for _ in range(round(seconds / every)):
            self.clock.t += every
            self.loop.run_once()


@pytest.fixture
def env() -> Env:
    cluster = FakeCluster(
        mds=[md(autoscaling=AUTOSCALING)], replicas={"chat": 1}, pod_list={"chat": ready_pods(1)}
    )
    source, reporter, clock = FakeSource(), FakeReporter(), Clock()
    loop = AutoscalerLoop(
        cluster, source, reporter, interval=2.0, clock=clock, wall=lambda: "2025-01-01T00:00:00Z"
    )
    return Env(cluster, source, reporter, clock, loop)


def test_scales_up_after_the_up_window_and_reports(env: Env) -> None:
    env.source.concurrency = 10.0
    env.rounds(20)
    env.source.concurrency = 50.0  # 50 / 16 per replica -> 4
    env.rounds(8)
    assert env.cluster.scaled == []  # not sustained over the 10 s window yet
    env.rounds(4)
    assert env.cluster.scaled == [("chat", 4)]
    view = env.reporter.decisions[f"{NS}/chat"]
    assert view.desired_replicas == 4 and view.reason == "ScaleUp"
    assert view.explanation.startswith("1 -> 4: concurrentRequests 50.0/16 per replica")
    assert view.time == "2025-01-01T00:00:00Z"
    assert (NS, "chat") in env.reporter.triggers


def test_no_write_when_the_decision_matches_the_deployment(env: Env) -> None:
    env.source.concurrency = 10.0  # one replica is right
    env.rounds(60)
    assert env.cluster.scaled == [] and env.cluster.costs == []
    # One view for the first decision; no status churn afterwards.
    assert len(env.reporter.triggers) == 1
    assert env.reporter.decisions[f"{NS}/chat"].desired_replicas == 1


def test_pinned_replicas_pause_the_autoscaler(env: Env) -> None:
    env.reporter.decisions[f"{NS}/chat"] = AutoscalerView(3, "old", "ScaleUp", "t")
    env.cluster.mds = [md(autoscaling=AUTOSCALING, replicas={"min": 1, "max": 4, "pinned": 2})]
    env.source.concurrency = 200.0
    env.rounds(30)
    assert env.cluster.scaled == [] and env.source.calls == 0
    assert f"{NS}/chat" not in env.reporter.decisions


def test_deployments_without_autoscaling_or_not_on_demand_are_skipped(env: Env) -> None:
    env.cluster.mds = [
        md("plain"),
        md("serverless", tier="Serverless", replicas={}, autoscaling=AUTOSCALING),
    ]
    del env.cluster.mds[1]["spec"]["replicas"]
    env.cluster.replicas = {"plain": 1, "serverless": 1}
    env.source.concurrency = 200.0
    env.rounds(30)
    assert env.cluster.scaled == [] and env.source.calls == 0


def test_scale_down_marks_the_idlest_ready_pods(env: Env) -> None:
    env.cluster.replicas["chat"] = 4
    pods = ready_pods(4)
    pods[3] = PodState("chat-3", "10.0.0.3", True, True, 3.0, deletion_cost="5")  # stale mark
    env.cluster.pod_list["chat"] = pods
    env.source.concurrency = 20.0  # -> 2 replicas
    env.source.in_flight = {"chat-0": 9.0, "chat-1": 0.0, "chat-2": 1.0, "chat-3": 10.0}
    env.rounds(28)
    assert env.cluster.scaled == []  # the 30 s down window is not covered yet
    env.rounds(4)
    assert env.cluster.scaled == [("chat", 2)]
    assert sorted(env.cluster.costs, key=str) == sorted(
        [("chat-1", VICTIM_DELETION_COST), ("chat-2", VICTIM_DELETION_COST), ("chat-3", None)],
        key=str,
    )
    view = env.reporter.decisions[f"{NS}/chat"]
    assert view.reason == "ScaleDown" and view.explanation.startswith("4 -> 2: ")
    assert ANNOTATION_DELETION_COST == "controller.kubernetes.io/pod-deletion-cost"


def test_scale_down_never_removes_pods_starting_on_a_node(env: Env) -> None:
    env.cluster.replicas["chat"] = 4
    env.cluster.pod_list["chat"] = [
        *ready_pods(2),
        PodState("chat-loading", "10.0.0.8", scheduled=True, ready=False, created=8.0),
        PodState("chat-unscheduled", None, scheduled=False, ready=False, created=9.0),
    ]
    env.source.concurrency = 1.0  # -> 1 replica
    env.rounds(40)
    # The ReplicaSet removes the unscheduled pod first, then would take the loading one:
    # only the unscheduled one may go while a pod is still loading.
    assert env.cluster.scaled == [("chat", 3)]
    assert env.cluster.costs == []
    view = env.reporter.decisions[f"{NS}/chat"]
    assert "never removed" in view.explanation
    # Once the loading pod is Ready (and the unscheduled one gone), the rest goes.
    env.cluster.pod_list["chat"] = ready_pods(3)
    env.rounds(2)
    assert env.cluster.scaled[-1] == ("chat", 1)
    assert {p for p, c in env.cluster.costs if c == VICTIM_DELETION_COST} == {"chat-1", "chat-2"}


def test_scale_to_zero_after_the_window_without_traffic() -> None:
    # scaleToZeroWindow is at least 5 min (CRD rule), too long for the integration test:
    # shown here with an injected clock instead.
    cluster = FakeCluster(
        mds=[
            md(
                replicas={"min": 0, "max": 4},
                autoscaling={**AUTOSCALING, "scaleToZeroWindow": "5m"},
            )
        ],
        replicas={"chat": 1},
        pod_list={"chat": ready_pods(1)},
    )
    source, reporter, clock = FakeSource(concurrency=3.0), FakeReporter(), Clock()
    loop = AutoscalerLoop(cluster, source, reporter, interval=5.0, clock=clock)
    for _ in range(12):  # a minute of traffic
        clock.t += 5
        loop.run_once()
    source.concurrency = 0.0
    for _ in range(59):  # 4 min 55 s of silence
        clock.t += 5
        loop.run_once()
    assert cluster.scaled == []
    clock.t += 5
    loop.run_once()
    assert cluster.scaled == [("chat", 0)]
    view = reporter.decisions[f"{NS}/chat"]
    assert view.reason == "ScaleToZero" and "no traffic for 5m" in view.explanation
    # A request at zero (e.g. held at the gateway) wakes it up at once.
    cluster.pod_list["chat"] = []
    source.concurrency = 1.0
    clock.t += 5
    loop.run_once()
    assert cluster.scaled[-1] == ("chat", 1)
    assert reporter.decisions[f"{NS}/chat"].reason == "ScaleFromZero"


def test_missing_metrics_skip_the_round_without_scaling(env: Env) -> None:
    env.source.fail = True
    env.cluster.replicas["chat"] = 3
    env.rounds(60)
    assert env.cluster.scaled == [] and env.reporter.decisions == {}


def test_nothing_happens_until_the_deployment_exists(env: Env) -> None:
    env.cluster.replicas = {}
    env.source.concurrency = 100.0
    env.rounds(20)
    assert env.source.calls == 0  # nothing to scale until the reconciler created it
    env.cluster.replicas = {"chat": 1}
    env.rounds(2)
    assert env.cluster.scaled == [("chat", 4)]


def test_settings_and_sources_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from modelplane.settings import OperatorSettings

    s = OperatorSettings()
    # The chart's default: scrape the pods (no setting turns autoscaling off).
    assert (s.autoscaler_interval_seconds, s.metrics_source) == (5.0, "pods")
    monkeypatch.setenv("MODELPLANE_AUTOSCALER_INTERVAL_SECONDS", "2.5")
    monkeypatch.setenv("MODELPLANE_METRICS_SOURCE", "prometheus:http://127.0.0.1:9")
    s = OperatorSettings()
    assert (s.autoscaler_interval_seconds, s.metrics_source) == (
        2.5,
        "prometheus:http://127.0.0.1:9",
    )
    monkeypatch.setenv("MODELPLANE_AUTOSCALER_INTERVAL_SECONDS", "0")
    with pytest.raises(ValidationError, match="greater than 0"):
        OperatorSettings()
    monkeypatch.delenv("MODELPLANE_AUTOSCALER_INTERVAL_SECONDS")
    for gone in ("", "fleet:http://127.0.0.1:9"):
        monkeypatch.setenv("MODELPLANE_METRICS_SOURCE", gone)
        with pytest.raises(ValidationError):
            OperatorSettings()
    pods = metrics_source_from_setting("pods")
    assert isinstance(pods, PodMetricsSource) and pods.port == 8000
    pods = metrics_source_from_setting("pods:9000")
    assert isinstance(pods, PodMetricsSource) and pods.port == 9000
    prom = metrics_source_from_setting("prometheus:http://127.0.0.1:9090")
    assert isinstance(prom, PrometheusMetricsSource)
    for bad in ("", "fleet:http://127.0.0.1:9", "statsd:x", "pods:x"):
        with pytest.raises(ValueError, match="use pods, pods:<port> or prometheus:<url>"):
            metrics_source_from_setting(bad)


VLLM_TEXT = """\
vllm:num_requests_running{{model_name="m"}} {running}
vllm:num_requests_waiting{{model_name="m"}} {waiting}
vllm:kv_cache_usage_perc{{model_name="m"}} 0.25
vllm:request_success_total{{model_name="m",finished_reason="stop"}} {done}
"""


def test_pod_source_scrapes_each_ready_pod_at_its_address() -> None:
    import http.server
    import threading

    done = [0]

    class Engine(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.path == "/metrics"
            done[0] += 10
            body = VLLM_TEXT.format(running=3, waiting=2, done=done[0]).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = PodMetricsSource(port=server.server_address[1])
        target = Target(NS, "chat")
        pods = [PodState("chat-0", "127.0.0.1", True, True), PodState("chat-1", None, True, True)]
        first = source.collect(target, pods, 10.0)
        second = source.collect(target, pods, 12.0)
        # The pod without an IP yet is skipped; the other one is the fleet.
        assert second.sample.ready_replicas == 1 and set(second.in_flight) == {"chat-0"}
        assert second.sample.concurrent_requests == 5 and second.sample.queue_depth == 2
        assert first.sample.requests_per_second == 0 and second.sample.requests_per_second == 5
        with pytest.raises(NoMetricsError):  # Ready pods, none answering: no decision
            source.collect(target, [PodState("ghost", None, True, True)], 14.0)
        # No Ready pod (scaled to zero): an empty sample, not an error.
        assert source.collect(target, [], 16.0).sample.ready_replicas == 0
    finally:
        server.shutdown()
        server.server_close()


def test_a_deleted_deployment_is_forgotten(env: Env) -> None:
    env.source.concurrency = 10.0
    env.rounds(4)
    assert f"{NS}/chat" in env.reporter.decisions
    env.cluster.mds = []
    env.rounds(2)
    assert env.reporter.decisions == {}
