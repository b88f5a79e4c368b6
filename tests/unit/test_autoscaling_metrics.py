"""vLLM /metrics parsing, counter rates and the Prometheus API source (loopback only)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from modelplane.autoscaling.metrics import (
    FleetCollector,
    HttpPodScraper,
    PrometheusError,
    PrometheusSource,
    counter_increase,
    parse_vllm_metrics,
    pod_load,
)

VLLM_PAYLOAD = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama-70b"} 12.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama-70b"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama-70b"} 0.42
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="llama-70b"} 120000.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="llama-70b"} 45000.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="llama-70b"} 180.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="llama-70b"} 20.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="llama-70b"} 0.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="llama-70b"} 150.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="llama-70b"} 200.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="llama-70b"} 200.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="llama-70b"} 14.2
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
"""


def payload(running: float, gen: float, success: float, prompt: float = 0.0) -> str:
    return (
        f'vllm:num_requests_running{{model_name="m"}} {running}\n'
        f'vllm:num_requests_waiting{{model_name="m"}} 1\n'
        f'vllm:kv_cache_usage_perc{{model_name="m"}} {running / 100}\n'
        f'vllm:generation_tokens_total{{model_name="m"}} {gen}\n'
        f'vllm:prompt_tokens_total{{model_name="m"}} {prompt}\n'
        f'vllm:request_success_total{{finished_reason="stop",model_name="m"}} {success}\n'
    )


def test_parse_real_looking_vllm_payload() -> None:
    snap = parse_vllm_metrics(VLLM_PAYLOAD, timestamp=10.0)
    assert snap.running == 12
    assert snap.waiting == 3
    assert snap.kv_cache_usage == pytest.approx(0.42)
    assert snap.prompt_tokens_total == 120000
    assert snap.generation_tokens_total == 45000
    assert snap.request_success_total == 200  # summed over finished_reason


def test_model_name_filter_and_missing_gauges() -> None:
    assert parse_vllm_metrics(VLLM_PAYLOAD, 0.0, model_name="llama-70b").running == 12
    with pytest.raises(ValueError, match="model_name='other'"):
        parse_vllm_metrics(VLLM_PAYLOAD, 0.0, model_name="other")
    with pytest.raises(ValueError, match=r"vllm:num_requests_running .* /metrics endpoint"):
        parse_vllm_metrics("up 1\n", 0.0)


def test_old_kv_cache_metric_is_a_fallback() -> None:
    text = (
        "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.3\n"
    )
    assert parse_vllm_metrics(text, 0.0).kv_cache_usage == pytest.approx(0.3)


def test_counter_reset_counts_the_new_value() -> None:
    assert counter_increase(100.0, 130.0) == 30.0
    assert counter_increase(100.0, 7.0) == 7.0  # server restarted
    before = parse_vllm_metrics(payload(4, gen=50_000, success=900), 0.0)
    after = parse_vllm_metrics(payload(4, gen=1_000, success=10), 10.0)
    load = pod_load(before, after)
    assert load.tokens_generated_per_second == pytest.approx(100.0)
    assert load.requests_per_second == pytest.approx(1.0)


def test_fleet_collector_sums_rates_and_averages_kv() -> None:
    c = FleetCollector()
    first = c.observe({"a": payload(10, 0, 0), "b": payload(30, 0, 0)}, now=0.0)
    assert first.requests_per_second == 0.0  # no previous scrape yet
    s = c.observe(
        {"a": payload(10, 500, 5, prompt=2000), "b": payload(30, 1500, 15, prompt=0)}, now=5.0
    )
    assert s.ready_replicas == 2
    assert s.concurrent_requests == 42  # running 40 + waiting 2
    assert s.queue_depth == 2
    assert s.tokens_generated_per_second == pytest.approx(400.0)
    assert s.requests_per_second == pytest.approx(4.0)
    assert s.prompt_tokens_per_second == pytest.approx(400.0)
    assert s.kv_cache_utilization == pytest.approx(0.2)


class _Handler(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, object]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        parsed = urllib.parse.urlparse(self.path)
        if parsed.path == "/metrics":
            body = VLLM_PAYLOAD.encode()
            ctype = "text/plain; version=0.0.4"
        else:
            q = urllib.parse.parse_qs(parsed.query)["query"][0]
            self.seen.append(q)
            answer = next(
                (v for k, v in self.answers.items() if q.startswith(k)),
                {"status": "success", "data": {"resultType": "vector", "result": []}},
            )
            body = json.dumps(answer).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _vector(*values: float) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": f"p{i}"}, "value": [0, str(v)]} for i, v in enumerate(values)
            ],
        },
    }


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_prometheus_source_against_loopback_server(server: HTTPServer) -> None:
    _Handler.seen = []
    _Handler.answers = {
        "count(vllm:num_requests_running": _vector(1, 1),
        "sum(vllm:num_requests_running": _vector(20),
        "sum(vllm:num_requests_waiting": _vector(4),
        "avg(vllm:kv_cache_usage_perc": _vector(0.5),
        "sum(rate(vllm:request_success_total": _vector(3.5),
        "sum(rate(vllm:generation_tokens_total": _vector(700),
        "sum(rate(vllm:prompt_tokens_total": _vector(4000),
    }
    host, port = server.server_address[0], server.server_address[1]
    src = PrometheusSource(f"http://{host!s}:{port}", selector='model_name="llama-70b"')
    s = src.fleet_sample(now=1000.0)
    assert s.ready_replicas == 2
    assert s.concurrent_requests == 24
    assert s.queue_depth == 4
    assert s.kv_cache_utilization == 0.5
    assert s.requests_per_second == 3.5
    assert s.tokens_generated_per_second == 700
    assert s.prompt_tokens_per_second == 4000
    assert 'sum(rate(vllm:generation_tokens_total{model_name="llama-70b"}[1m]))' in _Handler.seen


def test_prometheus_error_is_reported(server: HTTPServer) -> None:
    _Handler.answers = {"bad": {"status": "error", "error": "parse error at char 4"}}
    host, port = server.server_address[0], server.server_address[1]
    src = PrometheusSource(f"http://{host!s}:{port}/")
    with pytest.raises(PrometheusError, match="parse error at char 4"):
        src.query("bad(")


def test_http_pod_scraper_and_collector_on_loopback(server: HTTPServer) -> None:
    port = server.server_address[1]
    scraper = HttpPodScraper(port=port, timeout=5)
    text = scraper.scrape("127.0.0.1")
    assert "vllm:num_requests_running" in text
    c = FleetCollector(model_name="llama-70b")
    s = c.collect(scraper, {"pod-a": "127.0.0.1"}, now=1.0)
    assert (s.ready_replicas, s.concurrent_requests) == (1, 15)
