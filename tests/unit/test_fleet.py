"""The simulated engine fleet: vLLM metrics, load -> running/waiting, routing, LoRA API, process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane_testbed.fleet import Fleet, FleetError, LoadSpec, PodInfo, load_trace, serve
from modelplane.autoscaling.metrics import FleetCollector, parse_vllm_metrics
from modelplane_testbed.simulator import LLAMA3_8B_H100

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pod(name: str, deployment: str = "chat", ready: bool = True, **kw: Any) -> PodInfo:
    return PodInfo("ns", name, deployment, model_name=deployment, ready=ready, **kw)


def run(fleet: Fleet, clock: Clock, seconds: float, tick: float = 0.5) -> None:
    for _ in range(round(seconds / tick)):
        clock.t += tick
        fleet.tick()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fleet(clock: Clock) -> Fleet:
    return Fleet(LLAMA3_8B_H100, clock=clock, seed=3)


def test_metrics_use_vllm_names_and_parse(fleet: Fleet, clock: Clock) -> None:
    fleet.observe_pod(pod("chat-a"))
    fleet.set_load("ns", "chat", {"requestsPerSecond": 10})
    run(fleet, clock, 5)
    text = fleet.metrics_text("ns", "chat-a")
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:request_success_total",
    ):
        assert f'{name}{{engine="0",model_name="chat"' in text
    snap = parse_vllm_metrics(text, clock.t, model_name="chat")
    assert snap.running > 0 and 0 < snap.kv_cache_usage < 1
    assert snap.request_success_total > 0 and snap.generation_tokens_total > 0
    assert snap.prompt_tokens_total > 0
    with pytest.raises(ValueError, match="no vllm"):
        parse_vllm_metrics(text, clock.t, model_name="other")


def test_load_gives_littles_law_concurrency_and_rates(fleet: Fleet, clock: Clock) -> None:
    fleet.observe_pod(pod("chat-a"))
    fleet.set_load(
        "ns", "chat", {"requestsPerSecond": 10, "promptTokens": 220, "outputTokens": 200}
    )
    run(fleet, clock, 20)
    collector = FleetCollector()
    samples = []
    for _ in range(40):
        run(fleet, clock, 1)
        samples.append(collector.observe({"a": fleet.metrics_text("ns", "chat-a")}, clock.t))
    later = samples[1:]
    concurrency = sum(s.concurrent_requests for s in later) / len(later)
    rps = sum(s.requests_per_second for s in later) / len(later)
    gen = sum(s.tokens_generated_per_second for s in later) / len(later)
    # Little's law: 10 req/s x ~200 tokens x ~9 ms per token ~ 18 in flight.
    assert 12 < concurrency < 30
    assert 8 < rps < 12
    assert 1600 < gen < 2400
    assert all(s.queue_depth < 5 for s in later)  # far below saturation: nothing queues


def test_overload_queues_and_more_replicas_absorb_it(fleet: Fleet, clock: Clock) -> None:
    fleet.observe_pod(pod("chat-a"))
    # ~36 req/s saturates one replica (simulator calibration); 60 req/s must queue.
    fleet.set_load("ns", "chat", {"requestsPerSecond": 60})
    run(fleet, clock, 20)
    snap = parse_vllm_metrics(fleet.metrics_text("ns", "chat-a"), clock.t)
    status = fleet.load_status("ns", "chat")
    assert snap.waiting + status["gatewayQueue"] > 50
    for name in ("chat-b", "chat-c", "chat-d"):
        fleet.observe_pod(pod(name))
    run(fleet, clock, 60)
    queued = fleet.load_status("ns", "chat")["gatewayQueue"]
    per_pod = [
        parse_vllm_metrics(fleet.metrics_text("ns", n), clock.t)
        for n in ("chat-a", "chat-b", "chat-c", "chat-d")
    ]
    assert queued == 0
    assert all(s.waiting < 5 for s in per_pod)
    running = [s.running for s in per_pod]
    assert min(running) > 0.4 * max(running)  # fewest-outstanding routing spreads the load


def test_no_ready_replica_holds_requests_at_the_gateway(fleet: Fleet, clock: Clock) -> None:
    fleet.observe_pod(pod("chat-a", ready=False))
    fleet.set_load("ns", "chat", {"requestsPerSecond": 4})
    run(fleet, clock, 5)
    st = fleet.load_status("ns", "chat")
    assert st["gatewayQueue"] > 5 and st["readyReplicas"] == 0
    with pytest.raises(FleetError) as e:
        fleet.metrics_text("ns", "chat-a")
    assert e.value.status == 404
    fleet.observe_pod(pod("chat-a", ready=True))
    run(fleet, clock, 1)
    assert fleet.load_status("ns", "chat")["gatewayQueue"] == 0


def test_terminating_pod_drains_and_then_stops_serving(fleet: Fleet, clock: Clock) -> None:
    fleet.observe_pod(pod("chat-a"))
    fleet.observe_pod(pod("chat-b"))
    fleet.set_load("ns", "chat", {"requestsPerSecond": 10})
    run(fleet, clock, 5)
    fleet.observe_pod(pod("chat-b", terminating=True))
    before = fleet.load_status("ns", "chat")["arrivals"]
    run(fleet, clock, 10)
    assert fleet.load_status("ns", "chat")["arrivals"] > before
    with pytest.raises(FleetError):
        fleet.metrics_text("ns", "chat-b")  # drained: no replica any more
    fleet.remove_pod("ns", "chat-b")
    assert [p["name"] for p in fleet.pods()] == ["chat-a"]
    fleet.sync_pods([], namespace="other")
    assert len(fleet.pods()) == 1
    fleet.sync_pods([], namespace="ns")
    assert fleet.pods() == []


def test_load_spec_validation() -> None:
    spec = LoadSpec().updated({"requestsPerSecond": 3})
    assert spec == LoadSpec(3.0, 220, 200)
    assert spec.updated({"outputTokens": 50}).to_json() == {
        "requestsPerSecond": 3.0,
        "promptTokens": 220,
        "outputTokens": 50,
    }
    for bad in ({"requestsPerSecond": -1}, {"promptTokens": 0}, {"rps": 1}, {"outputTokens": "x"}):
        with pytest.raises(FleetError):
            LoadSpec().updated(bad)


def test_schedule_steps_apply_at_their_time(fleet: Fleet, clock: Clock) -> None:
    fleet.set_schedule(
        {"ns/chat": [{"at": 0, "requestsPerSecond": 2}, {"at": 10, "requestsPerSecond": 20}]}
    )
    run(fleet, clock, 1)
    assert fleet.load_status("ns", "chat")["requestsPerSecond"] == 2
    run(fleet, clock, 10)
    assert fleet.load_status("ns", "chat")["requestsPerSecond"] == 20
    with pytest.raises(FleetError):
        fleet.set_schedule({"chat": {"requestsPerSecond": 1}})


def test_trace_replay_and_azure_format(fleet: Fleet, clock: Clock, tmp_path: Path) -> None:
    trace = tmp_path / "conv.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:48.6805900,100,10\n"
        "2023-11-16 18:15:56.6805900,200,20\n"
    )
    rows = load_trace(trace)
    assert rows[0] == (0.0, 374, 44) and rows[1][0] == pytest.approx(2.0)
    assert rows[2][0] == pytest.approx(10.0)
    fleet.observe_pod(pod("chat-a"))
    fleet.replay("ns", "chat", rows, speed=2.0)  # 10 s of trace in 5 s
    run(fleet, clock, 2)
    assert fleet.load_status("ns", "chat")["arrivals"] == 2
    run(fleet, clock, 4)
    assert fleet.load_status("ns", "chat")["arrivals"] == 3


# --------------------------------------------------------------------------- HTTP
@pytest.fixture
def served(fleet: Fleet) -> Iterator[str]:
    server = serve(fleet, 0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def call(method: str, url: str, body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_load_and_metrics(fleet: Fleet, clock: Clock, served: str) -> None:
    fleet.observe_pod(pod("chat-a"))
    code, body = call("PUT", f"{served}/load/ns/chat", {"requestsPerSecond": 5})
    assert code == 200 and json.loads(body)["requestsPerSecond"] == 5
    code, body = call("PUT", f"{served}/load/ns/chat", {"rps": 5})
    assert code == 400 and "unknown load field" in json.loads(body)["message"]
    run(fleet, clock, 5)
    code, text = call("GET", f"{served}/metrics/ns/chat-a")
    assert code == 200 and parse_vllm_metrics(text, 0).request_success_total > 0
    assert call("GET", f"{served}/metrics/ns/nope")[0] == 404
    code, body = call("GET", f"{served}/load")
    assert json.loads(body)["ns/chat"]["arrivals"] > 0
    assert call("DELETE", f"{served}/load/ns/chat")[0] == 200
    assert fleet.load_status("ns", "chat")["requestsPerSecond"] == 0
    assert call("GET", f"{served}/nothing")[0] == 404


def test_lora_runtime_api(fleet: Fleet, served: str) -> None:
    fleet.observe_pod(pod("chat-a"))
    base = f"{served}/pods/ns/chat-a/v1"
    code, text = call(
        "POST", f"{base}/load_lora_adapter", {"lora_name": "sql", "lora_path": "s3://b/sql"}
    )
    assert code == 200 and "added successfully" in text
    code, body = call(
        "POST", f"{base}/load_lora_adapter", {"lora_name": "sql", "lora_path": "s3://b/sql"}
    )
    assert code == 400 and "already been loaded" in json.loads(body)["message"]
    code, body = call(
        "POST",
        f"{base}/load_lora_adapter",
        {"lora_name": "bad", "lora_path": "s3://b/does-not-exist/x"},
    )
    assert code == 404 and json.loads(body)["type"] == "NotFoundError"
    assert call("POST", f"{base}/load_lora_adapter", {"lora_name": "x"})[0] == 400
    code, body = call("GET", f"{base}/models")
    models = json.loads(body)["data"]
    assert [(m["id"], m["parent"], m["root"]) for m in models] == [
        ("chat", None, "chat"),
        ("sql", "chat", "s3://b/sql"),
    ]
    code, text = call("POST", f"{base}/unload_lora_adapter", {"lora_name": "sql"})
    assert code == 200 and "removed successfully" in text
    assert call("POST", f"{base}/unload_lora_adapter", {"lora_name": "sql"})[0] == 404
    assert [m["id"] for m in json.loads(call("GET", f"{base}/models")[1])["data"]] == ["chat"]
    assert call("GET", f"{served}/pods/ns/ghost/v1/models")[0] == 404
    fleet.observe_pod(pod("chat-b", ready=False))
    assert call("GET", f"{served}/pods/ns/chat-b/v1/models")[0] == 503


def test_adapters_are_gone_after_an_engine_restart(fleet: Fleet, clock: Clock) -> None:
    fleet.observe_pod(pod("chat-a"))
    fleet.load_lora("ns", "chat-a", {"lora_name": "sql", "lora_path": "s3://b/sql"})
    fleet.observe_pod(pod("chat-a", ready=False))
    run(fleet, clock, 1)
    fleet.observe_pod(pod("chat-a", ready=True))
    assert [m["id"] for m in fleet.models("ns", "chat-a")["data"]] == ["chat"]


# --------------------------------------------------------------------------- process
def test_process_serves_on_loopback_and_exits_after_ttl(tmp_path: Path) -> None:
    # A kubeconfig pointing at a closed loopback port: the watcher just retries.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {}}]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane_testbed.fleet",
            "--kubeconfig",
            str(kubeconfig),
            "--ttl",
            "3",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("FLEET_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        assert call("GET", f"{url}/healthz") == (200, "ok\n")
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
