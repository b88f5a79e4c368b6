"""Where the autoscaler's load numbers come from: each Ready pod's engine, or Prometheus.

``MODELPLANE_METRICS_SOURCE``: ``pods`` or ``pods:<port>`` (scrape each Ready pod's engine at
``http://<podIP>:8000/metrics``; the operator needs network access to the pods), or
``prometheus:<url>`` (the Prometheus HTTP API).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from modelplane.api.enums import EngineType
from modelplane.autoscaling.metrics import (
    FleetCollector,
    HttpPodScraper,
    PrometheusSource,
)
from modelplane.autoscaling.policy import MetricSample
from modelplane.catalog.engines import engine_profile

log = logging.getLogger("modelplane.autoscaler")

ENV_METRICS_SOURCE = "MODELPLANE_METRICS_SOURCE"


@dataclass(frozen=True, slots=True)
class Target:
    """One autoscaled ModelDeployment (its Deployment has the same name)."""

    namespace: str
    name: str
    #: Whose metric names its pods expose (the engine's contract).
    engine: EngineType = EngineType.VLLM

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PodState:
    """One non-terminating model-server pod."""

    name: str
    ip: str | None
    scheduled: bool
    ready: bool
    created: float = 0.0  # creation time, seconds since the epoch
    deletion_cost: str | None = None


@dataclass(frozen=True, slots=True)
class Scrape:
    """A fleet sample, and requests in flight (running + waiting) per Ready pod when known."""

    sample: MetricSample
    in_flight: Mapping[str, float] = field(default_factory=dict)


class NoMetricsError(RuntimeError):
    """Ready pods exist but none of them could be scraped: no decision this round."""


class MetricsSource(Protocol):
    def collect(self, target: Target, ready: Sequence[PodState], now: float) -> Scrape:
        """Fleet-level load of ``target``'s Ready pods at ``now`` (monotonic seconds)."""
        ...


@dataclass
class PodMetricsSource:
    """Scrape each Ready pod's engine at ``http://<podIP>:<port>/metrics`` (the operator needs
    network access to the pods)."""

    port: int = 8000
    timeout: float = 2.0
    _collectors: dict[str, FleetCollector] = field(default_factory=dict)

    def _text(self, target: Target, pod: PodState) -> str:
        if not pod.ip:
            raise ValueError("pod has no IP yet")
        return HttpPodScraper(port=self.port, timeout=self.timeout).scrape(pod.ip)

    def collect(self, target: Target, ready: Sequence[PodState], now: float) -> Scrape:
        texts: dict[str, str] = {}
        for pod in ready:
            try:
                texts[pod.name] = self._text(target, pod)
            except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
                log.debug("scrape of %s/%s failed: %s", target.namespace, pod.name, e)
        if ready and not texts:
            raise NoMetricsError(f"none of the {len(ready)} ready pod(s) answered /metrics")
        names = engine_profile(target.engine).metrics
        collector = self._collectors.get(target.key)
        if collector is None or collector.names != names:
            collector = self._collectors[target.key] = FleetCollector(names=names)
        sample = collector.observe(texts, now)
        for pod_name, err in collector.errors.items():
            log.debug("metrics of %s/%s unreadable: %s", target.namespace, pod_name, err)
        in_flight = {p: s.running + s.waiting for p, s in collector.snapshots.items()}
        return Scrape(sample, in_flight)


@dataclass
class PrometheusMetricsSource:
    """Fleet samples from Prometheus. ``selector`` is a PromQL matcher body with
    ``{namespace}`` and ``{name}`` placeholders; the default matches the pods of the
    Deployment by name as the usual pod scrape configs label them."""

    base_url: str
    selector: str = 'namespace="{namespace}",pod=~"{name}-[a-z0-9]+-[a-z0-9]+"'
    rate_window: str = "1m"
    timeout: float = 5.0

    def collect(self, target: Target, ready: Sequence[PodState], now: float) -> Scrape:
        sel = self.selector.format(namespace=target.namespace, name=target.name)
        src = PrometheusSource(
            self.base_url,
            sel,
            self.rate_window,
            self.timeout,
            names=engine_profile(target.engine).metrics,
        )
        # Prometheus wants wall-clock time; the history runs on the loop's monotonic clock.
        return Scrape(replace(src.fleet_sample(time.time()), timestamp=now))


def metrics_source_from_setting(value: str) -> MetricsSource:
    """``pods`` | ``pods:<port>`` | ``prometheus:<url>``."""
    value = value.strip()
    kind, _, rest = value.partition(":")
    if kind == "pods" and (not rest or rest.isdigit()):
        return PodMetricsSource(port=int(rest) if rest else 8000)
    if kind == "prometheus" and rest:
        return PrometheusMetricsSource(base_url=rest)
    raise ValueError(f"{ENV_METRICS_SOURCE}={value!r}: use pods, pods:<port> or prometheus:<url>")
