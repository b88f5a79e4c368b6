"""Metric sources for the autoscaler: engine ``/metrics`` scrapes and the Prometheus API.

Parsing is pure (text in, numbers out); HTTP lives in ``HttpPodScraper`` and
``PrometheusSource`` only. Both produce the fleet-level ``MetricSample`` that
``policy.decide`` consumes. Which series to read is the engine's contract
(``catalog.engines.EngineProfile.metrics``: vLLM, SGLang and TEI name them differently, and
TEI has no running-requests gauge, KV cache or token counters); ``parse_engine_metrics`` reads
any engine's, ``parse_vllm_metrics`` is its vLLM form.

vLLM metric names (v1 engine, labels ``model_name`` and ``engine``):

- ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` (gauges)
- ``vllm:kv_cache_usage_perc`` (gauge, 0-1; ``vllm:gpu_cache_usage_perc`` before 0.10 is
  read as a fallback)
- ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
  ``vllm:request_success_total`` (counters; success has a ``finished_reason`` label and
  is summed over it)
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from modelplane.autoscaling.policy import MetricSample
from modelplane.catalog.engines import VLLM, EngineMetrics

__all__ = [
    "RUNNING",
    "WAITING",
    "FleetCollector",
    "HttpPodScraper",
    "PodLoad",
    "PodScraper",
    "PrometheusError",
    "PrometheusSource",
    "VllmSnapshot",
    "aggregate",
    "counter_increase",
    "parse_engine_metrics",
    "parse_prometheus_text",
    "parse_vllm_metrics",
    "pod_load",
]

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"

Labels = tuple[tuple[str, str], ...]


def parse_prometheus_text(text: str) -> dict[str, list[tuple[Labels, float]]]:
    """Parse Prometheus text exposition format: sample name -> [(labels, value)].

    Sample names keep their suffixes (``_total``, ``_bucket``...), so counters are found
    under the name that appears on the wire.
    """
    out: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted(s.labels.items()))
            out.setdefault(s.name, []).append((labels, float(s.value)))
    return out


def _total(
    parsed: Mapping[str, list[tuple[Labels, float]]],
    name: str | None,
    model_name: str | None,
    label: str | None = "model_name",
) -> float | None:
    rows = parsed.get(name) if name else None
    if rows is None:
        return None
    total = 0.0
    seen = False
    for labels, value in rows:
        if model_name is not None and label and dict(labels).get(label) != model_name:
            continue
        total += value
        seen = True
    return total if seen else None


@dataclass(frozen=True, slots=True)
class VllmSnapshot:
    """One scrape of one engine server (counters are cumulative; any engine, despite the
    name kept for its first one)."""

    timestamp: float
    running: float
    waiting: float
    kv_cache_usage: float
    prompt_tokens_total: float
    generation_tokens_total: float
    request_success_total: float


EngineSnapshot = VllmSnapshot


def parse_engine_metrics(
    text: str, timestamp: float, names: EngineMetrics, model_name: str | None = None
) -> VllmSnapshot:
    """Read the autoscaling signals named by ``names`` (an engine's contract) from a
    ``/metrics`` payload. Values are summed across label sets; ``model_name`` restricts to
    one served model where the engine labels one. Raises ``ValueError`` when the payload is
    not Prometheus text or lacks the engine's request gauges (wrong port or engine)."""
    try:
        parsed = parse_prometheus_text(text)
    except Exception as e:  # the parser raises bare ValueErrors, and worse on garbage
        raise ValueError(f"not Prometheus text: {e}") from None
    label = names.model_label
    running = (
        _total(parsed, names.running_requests, model_name, label) if names.running_requests else 0.0
    )
    waiting = _total(parsed, names.waiting_requests, model_name, label)
    if running is None or waiting is None:
        wanted = " / ".join(n for n in (names.running_requests, names.waiting_requests) if n)
        raise ValueError(
            f"no {wanted} in the scrape; is this the engine's /metrics endpoint"
            + (f" serving {label}={model_name!r}" if model_name and label else "")
            + "?"
        )
    kv = _total(parsed, names.kv_cache_usage, model_name, label)
    if kv is None and names.kv_cache_usage == KV_USAGE:
        kv = _total(parsed, KV_USAGE_OLD, model_name, label)
    return VllmSnapshot(
        timestamp=timestamp,
        running=running,
        waiting=waiting,
        kv_cache_usage=kv or 0.0,
        prompt_tokens_total=_total(parsed, names.prompt_tokens_total, model_name, label) or 0.0,
        generation_tokens_total=_total(parsed, names.generation_tokens_total, model_name, label)
        or 0.0,
        request_success_total=_total(parsed, names.requests_total, model_name, label) or 0.0,
    )


def parse_vllm_metrics(text: str, timestamp: float, model_name: str | None = None) -> VllmSnapshot:
    """Read the autoscaling signals from a vLLM ``/metrics`` payload.

    Values are summed across label sets (e.g. ``finished_reason``); ``model_name``
    restricts to one served model. Raises ``ValueError`` when the payload has no vLLM
    request gauges (wrong port, or not a vLLM server).
    """
    return parse_engine_metrics(text, timestamp, VLLM.metrics, model_name)


def counter_increase(previous: float, current: float) -> float:
    """Increase of a counter between two reads; a drop means the process restarted,
    so (as Prometheus' ``rate`` does) the whole current value counts as the increase."""
    if current < previous:
        return current
    return current - previous


@dataclass(frozen=True, slots=True)
class PodLoad:
    """Gauges and counter rates of one replica between two scrapes."""

    running: float
    waiting: float
    kv_cache_usage: float
    requests_per_second: float
    tokens_generated_per_second: float
    prompt_tokens_per_second: float


def pod_load(previous: VllmSnapshot | None, current: VllmSnapshot) -> PodLoad:
    """Gauges from ``current``; rates from the counter increase since ``previous``
    (zero rates on the first scrape of a pod)."""
    dt = 0.0 if previous is None else current.timestamp - previous.timestamp
    if previous is None or dt <= 0:
        rps = gen = prompt = 0.0
    else:
        rps = counter_increase(previous.request_success_total, current.request_success_total) / dt
        gen = (
            counter_increase(previous.generation_tokens_total, current.generation_tokens_total) / dt
        )
        prompt = counter_increase(previous.prompt_tokens_total, current.prompt_tokens_total) / dt
    return PodLoad(
        running=current.running,
        waiting=current.waiting,
        kv_cache_usage=current.kv_cache_usage,
        requests_per_second=rps,
        tokens_generated_per_second=gen,
        prompt_tokens_per_second=prompt,
    )


def aggregate(
    loads: Mapping[str, PodLoad], timestamp: float, gateway_queue: float = 0.0
) -> MetricSample:
    """Fleet sample: sums across ready replicas, except KV usage (average).

    ``gateway_queue`` counts requests held in front of the replicas (e.g. while scaled to
    zero); they add to both ``concurrent_requests`` and ``queue_depth``.
    """
    n = len(loads)
    values = list(loads.values())
    waiting = sum(p.waiting for p in values) + gateway_queue
    return MetricSample(
        timestamp=timestamp,
        ready_replicas=n,
        concurrent_requests=sum(p.running for p in values) + waiting,
        requests_per_second=sum(p.requests_per_second for p in values),
        tokens_generated_per_second=sum(p.tokens_generated_per_second for p in values),
        prompt_tokens_per_second=sum(p.prompt_tokens_per_second for p in values),
        kv_cache_utilization=(sum(p.kv_cache_usage for p in values) / n) if n else 0.0,
        queue_depth=waiting,
    )


class PodScraper(Protocol):
    """Fetches the raw ``/metrics`` text of one pod (I/O only; parsing is separate)."""

    def scrape(self, address: str) -> str: ...


@dataclass(frozen=True, slots=True)
class HttpPodScraper:
    """Scrape ``http://<address>:<port>/metrics`` with urllib."""

    port: int = 8000
    path: str = "/metrics"
    timeout: float = 2.0

    def scrape(self, address: str) -> str:
        host = f"[{address}]" if ":" in address and not address.startswith("[") else address
        url = f"http://{host}:{self.port}{self.path}"
        with urllib.request.urlopen(url, timeout=self.timeout) as resp:
            body: bytes = resp.read()
        return body.decode("utf-8")


@dataclass(slots=True)
class FleetCollector:
    """Turns successive per-pod scrapes into fleet samples (keeps the previous scrape
    of each pod to compute counter rates). Pods missing from a round are forgotten."""

    model_name: str | None = None
    names: EngineMetrics = VLLM.metrics
    _previous: dict[str, VllmSnapshot] = field(default_factory=dict)
    #: Pods whose last payload could not be read, and why (they count as not ready).
    errors: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, VllmSnapshot] = field(default_factory=dict)

    def observe(
        self, scrapes: Mapping[str, str], now: float, gateway_queue: float = 0.0
    ) -> MetricSample:
        """Fleet sample of the pods whose payload parses; a pod whose payload does not is
        skipped (recorded in ``errors``). ValueError when there were scrapes and none parsed."""
        loads: dict[str, PodLoad] = {}
        current: dict[str, VllmSnapshot] = {}
        self.errors = {}
        for pod, text in scrapes.items():
            try:
                snap = parse_engine_metrics(text, now, self.names, self.model_name)
            except ValueError as e:
                self.errors[pod] = str(e)
                continue
            current[pod] = snap
            loads[pod] = pod_load(self._previous.get(pod), snap)
        self._previous = current
        self.snapshots = current
        if scrapes and not current:
            first = next(iter(self.errors.items()))
            raise ValueError(
                f"no readable /metrics from {len(scrapes)} pod(s): {first[0]}: {first[1]}"
            )
        return aggregate(loads, now, gateway_queue)

    def collect(
        self, scraper: PodScraper, addresses: Mapping[str, str], now: float
    ) -> MetricSample:
        """Scrape every ready pod (name -> address) and aggregate; failing pods are
        skipped (they count as not ready)."""
        texts: dict[str, str] = {}
        for pod, address in addresses.items():
            try:
                texts[pod] = scraper.scrape(address)
            except OSError:
                continue
        return self.observe(texts, now)


class PrometheusError(RuntimeError):
    """The Prometheus API answered with an error or an unexpected shape."""


@dataclass(frozen=True, slots=True)
class PrometheusSource:
    """Fleet samples from a Prometheus server's ``/api/v1/query``.

    ``selector`` is a PromQL label matcher body selecting one deployment's pods, e.g.
    ``namespace="team-a",model_name="llama-70b"``. Rates use ``rate_window``.
    """

    base_url: str
    selector: str = ""
    rate_window: str = "1m"
    timeout: float = 5.0
    names: EngineMetrics = VLLM.metrics

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """Run an instant query; returns ``[(labels, value)]`` of the vector result."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = self.base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=self.timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
        if not isinstance(body, dict) or body.get("status") != "success":
            err = body.get("error") if isinstance(body, dict) else body
            raise PrometheusError(f"Prometheus query {promql!r} failed: {err}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(
                f"expected a vector result for {promql!r}, got {data.get('resultType')!r}"
            )
        out: list[tuple[dict[str, str], float]] = []
        for row in data.get("result", []):
            out.append((dict(row.get("metric", {})), float(row["value"][1])))
        return out

    def scalar(self, promql: str, at: float | None = None) -> float:
        """Sum of an instant query's values (0 when the vector is empty)."""
        return sum(v for _, v in self.query(promql, at))

    def _m(self, name: str) -> str:
        return f"{name}{{{self.selector}}}"

    def fleet_sample(self, now: float, gateway_queue: float = 0.0) -> MetricSample:
        """Query the fleet-level signals at ``now`` (sums, and average KV usage)."""
        w = self.rate_window
        n = self.names

        def rate(name: str | None) -> float:
            return self.scalar(f"sum(rate({self._m(name)}[{w}]))", now) if name else 0.0

        ready = int(self.scalar(f"count({self._m(n.running_requests or n.waiting_requests)})", now))
        running = (
            self.scalar(f"sum({self._m(n.running_requests)})", now) if n.running_requests else 0.0
        )
        waiting = self.scalar(f"sum({self._m(n.waiting_requests)})", now) + gateway_queue
        kv = self.scalar(f"avg({self._m(n.kv_cache_usage)})", now) if n.kv_cache_usage else 0.0
        return MetricSample(
            timestamp=now,
            ready_replicas=ready,
            concurrent_requests=running + waiting,
            requests_per_second=rate(n.requests_total),
            tokens_generated_per_second=rate(n.generation_tokens_total),
            prompt_tokens_per_second=rate(n.prompt_tokens_total),
            kv_cache_utilization=kv,
            queue_depth=waiting,
        )
