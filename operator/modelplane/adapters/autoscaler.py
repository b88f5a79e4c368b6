"""The autoscaler loop: metrics in, ``/scale`` out.

Every ``interval`` seconds, for each OnDemand ModelDeployment with ``spec.autoscaling`` (and
no ``spec.replicas.pinned``), and for each shared Serverless backend (one target per backend
Deployment in the operator's namespace, its tenants grouped by their ``status.backend``, the
policy from ``backend_policy``), the loop scrapes the Ready model-server pods through a
``MetricsSource``, appends the fleet sample to that deployment's ``MetricHistory``, asks the
pure policy (``autoscaling.policy.decide``) for a replica count, and, when it differs from
the Deployment's ``spec.replicas``, changes it through the ``/scale`` subresource under the
field manager ``modelplane-autoscaler``. It never writes the ModelDeployment: the decision is
handed to the reconciler (``decisions[key]`` + ``trigger``), which reports it in
``status.autoscaler`` as the single status writer.

Requests a gateway holds for want of a replica reach the policy through the ModelDeployment's
``modelplane.io/pending-requests`` / ``-at`` annotations (``api.demand``): a fresh count is
queued demand, which is what wakes a deployment at zero replicas.

The parts: ``metric_sources`` (where load numbers come from), ``autoscaler_cluster`` (the
cluster port and its Kubernetes implementation), ``scale_down`` (the pure choice of which pods
a scale-down removes) and this thin loop, which strings them together.

Settings (fields of ``modelplane.settings.OperatorSettings``):

- ``MODELPLANE_AUTOSCALER_INTERVAL_SECONDS`` (default 5): period of the loop;
- ``MODELPLANE_METRICS_SOURCE`` (default ``pods``): ``pods`` or ``pods:<port>`` (scrape each
  Ready pod's engine at ``http://<podIP>:8000/metrics``; the operator needs network access to
  the pods), or ``prometheus:<url>`` (the Prometheus HTTP API).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from modelplane.adapters.autoscaler_cluster import (
    ANNOTATION_DELETION_COST,
    ClusterAPI,
    KubeCluster,
    Reporter,
)
from modelplane.adapters.kube import Kube, now_rfc3339
from modelplane.adapters.metric_sources import (
    ENV_METRICS_SOURCE,
    MetricsSource,
    NoMetricsError,
    PodMetricsSource,
    PodState,
    PrometheusMetricsSource,
    Scrape,
    Target,
    metrics_source_from_setting,
)
from modelplane.adapters.scale_down import VICTIM_DELETION_COST, choose_scale_down
from modelplane.api.demand import (
    ANNOTATION_PENDING_REQUESTS,
    ANNOTATION_PENDING_REQUESTS_AT,
    freshness_limit,
    gateway_demand,
)
from modelplane.api.durations import parse_duration
from modelplane.api.enums import EngineType, Tier
from modelplane.api.refs import BackendRef
from modelplane.api.v1alpha1 import Autoscaling, ModelDeployment, Replicas
from modelplane.autoscaling.metrics import (
    PrometheusError,
)
from modelplane.autoscaling.policy import (
    DEFAULT_SCALE_TO_ZERO_WINDOW_S,
    AutoscalingPolicy,
    MetricHistory,
    Reason,
    decide,
)
from modelplane.builders.resolve import engine_type_of
from modelplane.builders.serverless import (
    BACKEND_LOAD_TARGETS,
    BACKEND_MAX_REPLICAS,
    BACKEND_MIN_REPLICAS,
)
from modelplane.reconcile.core import AutoscalerView

__all__ = [
    "ANNOTATION_DELETION_COST",
    "ENV_METRICS_SOURCE",
    "VICTIM_DELETION_COST",
    "AutoscalerLoop",
    "ClusterAPI",
    "KubeCluster",
    "MetricsSource",
    "NoMetricsError",
    "Outcome",
    "PodMetricsSource",
    "PodState",
    "PrometheusMetricsSource",
    "Reporter",
    "Scrape",
    "Target",
    "metrics_source_from_setting",
    "start_autoscaler",
]

log = logging.getLogger("modelplane.autoscaler")

#: Keys of shared Serverless backends in the loop's state (tenants' keys are namespace/name).
BACKEND_KEY_PREFIX = "backend:"


# --------------------------------------------------------------------------- the loop
@dataclass(frozen=True, slots=True)
class Outcome:
    """What one step did for one deployment (for logs and tests)."""

    key: str
    current: int
    desired: int
    reason: str
    explanation: str
    scaled: bool
    victims: tuple[str, ...] = ()


@dataclass
class _State:
    uid: str | None
    history: MetricHistory


def _policy(md: ModelDeployment) -> AutoscalingPolicy:
    a = md.spec.autoscaling
    assert a is not None
    reps = md.spec.replicas or Replicas()
    spec: dict[str, Any] = {
        "scaleUpWindow": parse_duration(a.scale_up_window),
        "scaleDownWindow": parse_duration(a.scale_down_window),
    }
    if a.scale_to_zero_window is not None:
        spec["scaleToZeroWindow"] = parse_duration(a.scale_to_zero_window)
    if a.load_targets is not None:
        spec["loadTargets"] = a.load_targets.model_dump(by_alias=True, exclude_none=True)
    return AutoscalingPolicy.from_spec(spec, min_replicas=reps.min, max_replicas=reps.effective_max)


def backend_policy(tenants: Sequence[ModelDeployment]) -> AutoscalingPolicy:
    """The policy of a shared Serverless backend, from its tenants' ``spec.autoscaling``.

    Tenants cannot set replicas (a CRD rule), so the bounds are the platform's: from 0 (every
    tenant allows scale to zero) to ``BACKEND_MAX_REPLICAS``. A tenant without
    ``spec.autoscaling`` counts with the API's defaults. Windows: the shortest scale-up window
    (the most eager tenant adds capacity), the longest scale-down and scale-to-zero windows
    (capacity stays while any tenant wants it kept). Load targets: each target any tenant sets,
    at the lowest per-replica value asked for; a tenant setting none counts with
    ``BACKEND_LOAD_TARGETS``. The highest replica count across targets wins, as for OnDemand.
    """
    ups: list[float] = []
    downs: list[float] = []
    zeros: list[float] = []
    targets: dict[str, float] = {}
    for md in tenants:
        a = md.spec.autoscaling or Autoscaling()
        ups.append(parse_duration(a.scale_up_window))
        downs.append(parse_duration(a.scale_down_window))
        zeros.append(
            parse_duration(a.scale_to_zero_window)
            if a.scale_to_zero_window is not None
            else DEFAULT_SCALE_TO_ZERO_WINDOW_S
        )
        own = a.load_targets.model_dump(by_alias=True, exclude_none=True) if a.load_targets else {}
        for name, value in (own or BACKEND_LOAD_TARGETS).items():
            targets[name] = min(float(value), targets.get(name, float("inf")))
    spec: dict[str, Any] = {
        "scaleUpWindow": min(ups),
        "scaleDownWindow": max(downs),
        "scaleToZeroWindow": max(zeros),
        "loadTargets": targets,
    }
    return AutoscalingPolicy.from_spec(
        spec, min_replicas=BACKEND_MIN_REPLICAS, max_replicas=BACKEND_MAX_REPLICAS
    )


class AutoscalerLoop:
    """Periodic autoscaling of every eligible ModelDeployment (see the module doc)."""

    def __init__(
        self,
        cluster: ClusterAPI,
        source: MetricsSource,
        reporter: Reporter,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = now_rfc3339,
        epoch: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.source = source
        self.reporter = reporter
        self.interval = interval
        self.clock = clock
        self.wall = wall
        #: Wall-clock seconds, to age the demand gateways publish (``api.demand``).
        self.epoch = epoch
        self._states: dict[str, _State] = {}
        self._warned: dict[str, str] = {}
        self._ignored: dict[str, tuple[str | None, str | None]] = {}

    def run(self, stop: threading.Event) -> None:
        """Step every ``interval`` seconds until ``stop`` is set."""
        log.info(
            "autoscaler loop started: every %ss via %s", self.interval, type(self.source).__name__
        )
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("autoscaler round failed")
            stop.wait(self.interval)

    def run_once(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        seen: set[str] = set()
        backends: dict[BackendRef, list[ModelDeployment]] = {}
        for body in self.cluster.model_deployments():
            meta = body.get("metadata") or {}
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            seen.add(key)
            if meta.get("deletionTimestamp"):
                continue
            if (body.get("spec") or {}).get("tier") == Tier.SERVERLESS.value:
                self._tenant(key, body, backends)
                continue
            try:
                out = self.step(body)
            except (ApiException, OSError, NoMetricsError, PrometheusError, ValueError) as e:
                log.warning("autoscaling %s skipped this round: %s", key, e)
                continue
            if out is not None:
                outcomes.append(out)
        for backend, tenants in sorted(backends.items()):
            seen.add(BACKEND_KEY_PREFIX + str(backend))
            try:
                out = self.step_backend(backend, tenants)
            except (ApiException, OSError, NoMetricsError, PrometheusError, ValueError) as e:
                log.warning("autoscaling Serverless backend %s skipped this round: %s", backend, e)
                continue
            if out is not None:
                outcomes.append(out)
        for key in (set(self._states) | set(self.reporter.decisions)) - seen:  # deleted
            self._forget(key)
        return outcomes

    def _tenant(
        self, key: str, body: dict[str, Any], backends: dict[BackendRef, list[ModelDeployment]]
    ) -> None:
        """Group a Serverless tenant under the backend the reconciler placed it on
        (``status.backend``, "namespace/name"); tenants are scaled together, as their backend."""
        backend = BackendRef.parse((body.get("status") or {}).get("backend"))
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError:
            md = None
        if md is None or backend is None:
            self.reporter.decisions.pop(key, None)  # no backend (yet): nothing to report
            return
        backends.setdefault(backend, []).append(md)

    def step_backend(
        self, backend: BackendRef, tenants: Sequence[ModelDeployment]
    ) -> Outcome | None:
        """One decision for a shared Serverless backend and its tenants."""
        key = BACKEND_KEY_PREFIX + str(backend)
        try:
            policy = backend_policy(tenants)
        except ValueError as e:
            self._warn_once(key, str(e))
            self._states.pop(key, None)
            return None
        self._warned.pop(key, None)
        report = [Target(t.metadata.namespace or "default", t.metadata.name) for t in tenants]
        engine = engine_type_of(tenants[0]) if tenants else EngineType.VLLM
        return self._autoscale(
            key,
            Target(backend.namespace, backend.name, engine),
            None,
            policy,
            self._demand(tenants),
            report,
        )

    def _forget(self, key: str) -> None:
        self._states.pop(key, None)
        self.reporter.decisions.pop(key, None)

    def _warn_once(self, key: str, message: str) -> None:
        if self._warned.get(key) != message:
            self._warned[key] = message
            log.warning("not autoscaling %s: %s", key, message)

    def step(self, body: dict[str, Any]) -> Outcome | None:
        """One decision for one ModelDeployment; None when it is not autoscaled."""
        try:
            md = ModelDeployment.model_validate(body)
        except ValidationError:
            return None
        target = Target(md.metadata.namespace or "default", md.metadata.name, engine_type_of(md))
        key = target.key
        reps = md.spec.replicas or Replicas()
        if md.spec.tier != Tier.ON_DEMAND or md.spec.autoscaling is None:
            self._forget(key)
            return None
        if reps.pinned is not None:  # `kubectl scale mdep`: the user owns the count
            self._forget(key)
            return None
        try:
            policy = _policy(md)
        except ValueError as e:
            self._warn_once(key, str(e))
            self._forget(key)
            return None
        self._warned.pop(key, None)
        return self._autoscale(key, target, md.metadata.uid, policy, self._demand([md]), [target])

    def _demand(self, mds: Sequence[ModelDeployment]) -> int:
        """Requests gateways hold for `mds` (fresh counts only; stale ones are logged once)."""
        now, limit = self.epoch(), freshness_limit(self.interval)
        total = 0
        for md in mds:
            key = f"{md.metadata.namespace}/{md.metadata.name}"
            ann = md.metadata.annotations
            demand = gateway_demand(ann, now, limit)
            total += demand.pending
            if demand.ignored is None:
                self._ignored.pop(key, None)
                continue
            published = (
                ann.get(ANNOTATION_PENDING_REQUESTS),
                ann.get(ANNOTATION_PENDING_REQUESTS_AT),
            )
            if self._ignored.get(key) != published:
                self._ignored[key] = published
                log.warning("ignoring the gateway demand on %s: %s", key, demand.ignored)
        return total

    def _autoscale(
        self,
        key: str,
        target: Target,
        uid: str | None,
        policy: AutoscalingPolicy,
        pending: int,
        report: Sequence[Target],
    ) -> Outcome | None:
        """Scrape, decide and scale ``target``'s Deployment; report to the ModelDeployments
        in ``report``. ``pending``: requests held at the gateway (``api.demand``).
        Long because one decision reads the metric source, the pending demand and the policy, then
        writes /scale and records the outcome for status; the write and its record stay together."""
        current = self.cluster.deployment_replicas(target.namespace, target.name)
        if current is None:
            return None  # the reconciler has not created the Deployment yet
        pods = self.cluster.pods(target.namespace, target.name)
        ready = [p for p in pods if p.ready]
        now = self.clock()
        state = self._states.get(key)
        if state is None or state.uid != uid:
            state = self._states[key] = _State(uid, MetricHistory())
        scrape = self.source.collect(target, ready, now)
        if pending:
            # Held in front of the replicas: queued requests, as the engines' own waiting ones.
            scrape = Scrape(
                replace(
                    scrape.sample,
                    concurrent_requests=scrape.sample.concurrent_requests + pending,
                    queue_depth=scrape.sample.queue_depth + pending,
                ),
                scrape.in_flight,
            )
        state.history.max_age = max(policy.history_seconds, 10 * self.interval)
        state.history.add(scrape.sample)

        decision = decide(state.history, current, len(ready), policy, now)
        desired, reason, text = (
            decision.desired_replicas,
            decision.reason.value,
            decision.explanation,
        )
        if pending:
            text = f"{text} ({pending} held at the gateway)"
        victims: tuple[str, ...] = ()
        if desired < current:
            down = choose_scale_down(pods, scrape.in_flight, current, desired)
            desired, victims = down.desired, down.victims
            if down.held_because:
                text = f"{text}; {down.held_because}"
                if desired == current:
                    reason = Reason.STABILIZING.value
            for pod, cost in down.marks:  # before the scale request: the ReplicaSet reads them
                self.cluster.set_deletion_cost(target.namespace, pod, cost)
        scaled = desired != current
        if scaled:
            text = f"{current} -> {desired}: {text}"
            self.cluster.scale(target.namespace, target.name, desired)
            log.info("scaled %s %s", key, text)
        for t in report:
            prev = self.reporter.decisions.get(t.key)
            if scaled or prev is None or prev.desired_replicas != desired:
                self.reporter.decisions[t.key] = AutoscalerView(desired, text, reason, self.wall())
                self.reporter.trigger(t.namespace, t.name)
        return Outcome(key, current, desired, reason, text, scaled, victims)


def start_autoscaler(
    rt: Any,
    kube: Kube,
    namespaces: Sequence[str] = (),
    *,
    metrics_source: str = "pods",
    interval_seconds: float = 5.0,
) -> threading.Thread:
    """Start the loop in a daemon thread.

    ``rt`` is the operator's Runtime: ``decisions``, ``trigger`` and the ``stop`` event.
    """
    source = metrics_source_from_setting(metrics_source)
    loop = AutoscalerLoop(
        KubeCluster(kube, tuple(namespaces)), source, rt, interval=interval_seconds
    )
    thread = threading.Thread(
        target=loop.run, args=(rt.stop,), name="modelplane-autoscaler", daemon=True
    )
    thread.start()
    return thread
