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

Which pods go on scale-down. The ReplicaSet controller picks the pods to delete in this
order (``ActivePodsWithRanks`` in kube-controller-manager): unscheduled before scheduled,
``Pending`` before ``Running``, not Ready before Ready, and only then the lower
``controller.kubernetes.io/pod-deletion-cost``. A deletion cost therefore cannot protect a
pod that is pending on a node or still loading weights; the ReplicaSet always removes those
first. Since such a pod has already paid for its node and most of its cold start and is
about to serve, the loop never removes one: while any scheduled pod is not Ready, a
scale-down only goes as far as the unscheduled pods (which have no node and cost nothing to
drop) and the rest waits until the starting pods are Ready. Among Ready pods, the ones with
the fewest requests in flight are marked with a low deletion cost just before the scale
request, so the idle ones are removed and busy ones keep their requests.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from modelplane.adapters.kube import Kube, now_rfc3339
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
    FleetCollector,
    HttpPodScraper,
    PrometheusError,
    PrometheusSource,
)
from modelplane.autoscaling.policy import (
    DEFAULT_SCALE_TO_ZERO_WINDOW_S,
    AutoscalingPolicy,
    MetricHistory,
    MetricSample,
    Reason,
    decide,
)
from modelplane.builders.objects import LABEL_DEPLOYMENT
from modelplane.builders.resolve import engine_type_of
from modelplane.builders.serverless import (
    BACKEND_LOAD_TARGETS,
    BACKEND_MAX_REPLICAS,
    BACKEND_MIN_REPLICAS,
)
from modelplane.catalog.engines import engine_profile
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

ENV_METRICS_SOURCE = "MODELPLANE_METRICS_SOURCE"
ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: Deletion cost of the Ready pods chosen for removal (others carry none, i.e. 0).
VICTIM_DELETION_COST = -1000
#: Keys of shared Serverless backends in the loop's state (tenants' keys are namespace/name).
BACKEND_KEY_PREFIX = "backend:"


# --------------------------------------------------------------------------- observations
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


# --------------------------------------------------------------------------- the cluster
class ClusterAPI(Protocol):
    """What the loop reads and writes (a fake in unit tests, ``KubeCluster`` otherwise)."""

    def model_deployments(self) -> list[dict[str, Any]]: ...

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        """``spec.replicas`` of the Deployment, None when it does not exist (yet)."""
        ...

    def pods(self, namespace: str, name: str) -> list[PodState]:
        """Non-terminating model-server pods of the Deployment."""
        ...

    def scale(self, namespace: str, name: str, replicas: int) -> None: ...

    def set_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> None:
        """Set (or with None remove) the pod's deletion-cost annotation."""
        ...


@dataclass
class KubeCluster:
    kube: Kube
    namespaces: Sequence[str] = ()

    def model_deployments(self) -> list[dict[str, Any]]:
        return self.kube.model_deployment_bodies(self.namespaces)

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        try:
            d = self.kube.apps.read_namespaced_deployment(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        labels = d.metadata.labels or {}
        if labels.get(LABEL_DEPLOYMENT) != name or labels.get("app.kubernetes.io/managed-by") != (
            "modelplane"
        ):
            return None  # not our model server (a ChildConflict): never scaled
        return int(d.spec.replicas) if d.spec.replicas is not None else 1

    def pods(self, namespace: str, name: str) -> list[PodState]:
        items = self.kube.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_DEPLOYMENT}={name}"
        ).items
        out: list[PodState] = []
        for p in items:
            if p.metadata.deletion_timestamp is not None:
                continue
            conds = (p.status.conditions if p.status else None) or []
            created = p.metadata.creation_timestamp
            out.append(
                PodState(
                    name=p.metadata.name,
                    ip=p.status.pod_ip if p.status else None,
                    scheduled=bool(p.spec.node_name),
                    ready=any(c.type == "Ready" and c.status == "True" for c in conds),
                    created=created.timestamp() if created is not None else 0.0,
                    deletion_cost=(p.metadata.annotations or {}).get(ANNOTATION_DELETION_COST),
                )
            )
        return out

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.kube.scale(namespace, name, replicas)

    def set_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> None:
        value = None if cost is None else str(cost)
        body = {"metadata": {"annotations": {ANNOTATION_DELETION_COST: value}}}
        try:
            client.CoreV1Api(self.kube.api).patch_namespaced_pod(pod, namespace, body)
        except ApiException as e:
            if e.status != 404:  # already gone: nothing to protect
                raise


class Reporter(Protocol):
    """Where decisions go: the operator's Runtime (``decisions`` + ``trigger``)."""

    decisions: dict[str, AutoscalerView]

    def trigger(self, namespace: str, name: str) -> None: ...


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
        in ``report``. ``pending``: requests held at the gateway (``api.demand``)."""
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
            desired, text, reason, victims = self._scale_down_plan(
                target, pods, ready, scrape, current, desired, text, reason
            )
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

    def _scale_down_plan(
        self,
        target: Target,
        pods: Sequence[PodState],
        ready: Sequence[PodState],
        scrape: Scrape,
        current: int,
        desired: int,
        text: str,
        reason: str,
    ) -> tuple[int, str, str, tuple[str, ...]]:
        """Limit a scale-down so no starting pod is removed; mark the Ready pods to remove."""
        # The ReplicaSet keeps `desired` of the existing pods and deletes the rest in the order
        # unscheduled, pending, not Ready, Ready (by deletion cost): as long as a scheduled pod
        # is still starting, keep at least every scheduled pod.
        unscheduled = [p for p in pods if not p.scheduled]
        starting = [p for p in pods if p.scheduled and not p.ready]
        if starting:
            floor = min(max(len(pods) - len(unscheduled), desired), current)
            if floor > desired:
                text = (
                    f"{text}; holding {floor}: {len(starting)} replica(s) pending on a node or "
                    "loading weights are never removed"
                )
                desired = floor
                if desired == current:
                    reason = Reason.STABILIZING.value
            return desired, text, reason, ()  # only unscheduled pods go: no marking needed
        remove = len(pods) - desired - len(unscheduled)
        if remove <= 0:
            return desired, text, reason, ()
        # Fewest requests in flight first; among equals the newest (coldest caches).
        order = sorted(ready, key=lambda p: (scrape.in_flight.get(p.name, 0.0), -p.created, p.name))
        victims = tuple(p.name for p in order[:remove])
        for p in ready:
            want = str(VICTIM_DELETION_COST) if p.name in victims else None
            if p.deletion_cost != want:
                self.cluster.set_deletion_cost(
                    target.namespace, p.name, VICTIM_DELETION_COST if want is not None else None
                )
        return desired, text, reason, victims


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
