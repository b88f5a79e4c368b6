"""Controllers for the simulator: modelplane's policy and the baselines it is judged by.

- ``PolicyController``: ``policy.decide`` fed the way the operator feeds it: a scrape every
  ``scrape_s`` (instantaneous gauges, counter rates between scrapes), decision every
  ``sync_s``.
- ``HpaController``: Kubernetes HorizontalPodAutoscaler (autoscaling/v2) on a Pods metric
  (in-flight requests per pod, from the pods' own /metrics plus, by default, the requests
  held at the gateway, the same information modelplane's policy gets): every 15 s,
  ``desired = ceil(current * avg / target)`` with 10% tolerance; for scale-up, pods still
  starting count as 0 load, for scale-down pods without metrics count as at target
  (k8s ``replica_calculator.go``); scale-down stabilization = max recommendation of the
  last 300 s; default behavior rate limits (up: max(+100%, +4 pods) per 15 s; down: 100%
  per 15 s). HPA cannot go to zero; min is at least 1.
- ``KpaController``: Knative Serving's KPA (``pkg/autoscaler/scaling/autoscaler.go``):
  every 2 s, average concurrency over a 60 s stable and 6 s panic window (per-second
  buckets, including requests buffered by the activator); target value = target
  concurrency x target utilization (70% default); ``dspc = ceil(stable/target value)``,
  ``dppc = ceil(panic/target value)``, both clamped to
  ``[floor(ready/max-scale-down-rate 2), ceil(ready * max-scale-up-rate 1000)]``; panic
  mode starts when ``panic/target value / ready >= 2.0`` (200%), lasts until the
  threshold has not been crossed for a stable window, and never scales down while
  panicking; scale to zero after the stable window is empty plus a 30 s grace period.
- ``OracleController``: knows the whole future load. For every 30 s bucket it sizes the
  fleet with the replica model's analytic steady state (smallest n with TPOT at most 80% of
  the SLO and prefill busy at most 70%), and asks at time t for the largest need in
  [t, t + cold start + one bucket], so capacity is ready exactly when needed and released
  as soon as it is not.
- ``StaticController``: a fixed replica count (provisioned for the peak).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelplane.autoscaling.metrics import counter_increase
from modelplane.autoscaling.policy import (
    AutoscalingPolicy,
    Decision,
    MetricHistory,
    MetricSample,
    decide,
)
from modelplane_testbed.simulator import (
    TPOT_SLO_S,
    TTFT_SLO_FLOOR_S,
    FleetTick,
    ReplicaModel,
)

__all__ = [
    "BurstAwareOracle",
    "HpaController",
    "KpaController",
    "OracleController",
    "PolicyController",
    "StaticController",
    "lower_bound_gpu_seconds",
    "oracle_requirements",
]


class PolicyController:
    """modelplane's policy (``decide``) driven by periodic scrapes."""

    def __init__(
        self,
        policy: AutoscalingPolicy,
        *,
        scrape_s: float = 5.0,
        sync_s: float = 5.0,
        name: str = "modelplane",
    ) -> None:
        self.name = name
        self.policy = policy
        self.sync_s = sync_s
        self.scrape_s = scrape_s
        self.history = MetricHistory(max_age=policy.history_seconds + 2 * scrape_s)
        self._prev: FleetTick | None = None
        self.decisions: list[tuple[float, Decision]] = []

    def observe(self, tick: FleetTick) -> None:
        prev = self._prev
        if prev is not None and tick.t - prev.t < self.scrape_s - 1e-9:
            return
        dt = 0.0 if prev is None else tick.t - prev.t
        rps = gen = prompt = 0.0
        if prev is not None and dt > 0:
            rps = counter_increase(prev.success_total, tick.success_total) / dt
            gen = counter_increase(prev.generation_tokens_total, tick.generation_tokens_total) / dt
            prompt = counter_increase(prev.prompt_tokens_total, tick.prompt_tokens_total) / dt
        waiting = tick.waiting + tick.gateway_queue
        self.history.add(
            MetricSample(
                timestamp=tick.t,
                ready_replicas=tick.ready,
                concurrent_requests=tick.running + waiting,
                requests_per_second=rps,
                tokens_generated_per_second=gen,
                prompt_tokens_per_second=prompt,
                kv_cache_utilization=tick.kv_cache_usage_avg,
                queue_depth=waiting,
            )
        )
        self._prev = tick

    def desired(self, now: float, current: int, ready: int) -> int:
        d = decide(self.history, current, ready, self.policy, now)
        self.decisions.append((now, d))
        return d.desired_replicas


@dataclass(slots=True)
class HpaController:
    target: float = 16.0
    min_replicas: int = 1
    max_replicas: int = 16
    tolerance: float = 0.1
    sync_s: float = 15.0
    scale_down_stabilization_s: float = 300.0
    name: str = "hpa"
    #: count requests held at the gateway (the queue modelplane's policy sees) in the metric
    see_gateway_queue: bool = True
    _latest: FleetTick | None = None
    _recs: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, tick: FleetTick) -> None:
        self._latest = tick

    def _raw(self, current: int, ready: int) -> int:
        tk = self._latest
        if tk is None or ready == 0:
            return current
        total = float(tk.running + tk.waiting)  # pods' own gauges
        if self.see_gateway_queue:
            total += tk.gateway_queue
        ratio = (total / ready) / self.target
        missing = max(current - ready, 0)
        if ratio > 1.0:
            new_ratio = total / (self.target * (ready + missing))
            if new_ratio < 1.0 or abs(new_ratio - 1.0) <= self.tolerance:
                return current
            return math.ceil(new_ratio * (ready + missing))
        if missing:
            new_ratio = (total + self.target * missing) / (self.target * (ready + missing))
            if new_ratio > 1.0 or abs(new_ratio - 1.0) <= self.tolerance:
                return current
            return math.ceil(new_ratio * (ready + missing))
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(ratio * ready)

    def desired(self, now: float, current: int, ready: int) -> int:
        raw = max(self.min_replicas, min(self.max_replicas, self._raw(current, ready)))
        self._recs.append((now, raw))
        while self._recs and self._recs[0][0] < now - self.scale_down_stabilization_s:
            self._recs.popleft()
        want = raw
        if raw < current:
            want = min(current, max(r for _, r in self._recs))
        if want > current:  # default scale-up policies: max(100%, 4 pods) per 15 s
            want = min(want, max(2 * current, current + 4))
        return max(self.min_replicas, min(self.max_replicas, want))


@dataclass(slots=True)
class KpaController:
    target: float = 16.0
    target_utilization: float = 0.7
    min_replicas: int = 1
    max_replicas: int = 16
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0
    sync_s: float = 2.0
    name: str = "kpa"
    _buckets: deque[tuple[float, float]] = field(default_factory=deque)
    _panic_time: float | None = None
    _max_panic_pods: int = 0
    _zero_since: float | None = None

    def observe(self, tick: FleetTick) -> None:
        self._buckets.append((tick.t, tick.concurrency_avg))
        while self._buckets and self._buckets[0][0] <= tick.t - self.stable_window_s:
            self._buckets.popleft()

    def _avg(self, now: float, window: float) -> float:
        vals = [v for t, v in self._buckets if t > now - window]
        return sum(vals) / len(vals) if vals else 0.0

    def desired(self, now: float, current: int, ready: int) -> int:
        stable = self._avg(now, self.stable_window_s)
        panic = self._avg(now, self.panic_window_s)
        tv = self.target * self.target_utilization
        ready_count = max(1, ready)
        max_up = math.ceil(self.max_scale_up_rate * ready_count)
        max_down = math.floor(ready_count / self.max_scale_down_rate)
        dspc = math.ceil(stable / tv - 1e-9)
        dppc = panic / tv
        stable_pods = int(min(max(dspc, max_down), max_up))
        panic_pods = int(min(max(math.ceil(dppc - 1e-9), max_down), max_up))
        over = dppc / ready_count >= self.panic_threshold
        if over:
            self._panic_time = now
        elif self._panic_time is not None and self._panic_time + self.stable_window_s < now:
            self._panic_time = None
            self._max_panic_pods = 0
        want = stable_pods
        if self._panic_time is not None:
            want = max(want, panic_pods)
            if want > self._max_panic_pods:
                self._max_panic_pods = want
            else:
                want = self._max_panic_pods
        if stable == 0 and panic == 0 and want == 0:
            # scale to zero only after the grace period
            if self._zero_since is None:
                self._zero_since = now
            if now - self._zero_since < self.scale_to_zero_grace_s:
                want = max(current, 1) if current else 0
        else:
            self._zero_since = None
        return max(self.min_replicas, min(self.max_replicas, want))


def oracle_requirements(
    trace: Sequence[tuple[float, int, int]],
    model: ReplicaModel,
    *,
    bucket_s: float = 30.0,
    tpot_fraction: float = 0.8,
    max_prefill_busy: float = 0.7,
    max_replicas: int = 64,
) -> list[int]:
    """Replicas needed per bucket, from the replica model's analytic steady state."""
    if not trace:
        return []
    n_buckets = int(trace[-1][0] // bucket_s) + 1
    counts = [0] * n_buckets
    prompt = [0.0] * n_buckets
    out_tok = [0.0] * n_buckets
    for a, p, o in trace:
        k = int(a // bucket_s)
        counts[k] += 1
        prompt[k] += p
        out_tok[k] += o
    need: list[int] = []
    for k in range(n_buckets):
        if counts[k] == 0:
            need.append(0)
            continue
        rate = counts[k] / bucket_s
        mp, mo = prompt[k] / counts[k], out_tok[k] / counts[k]
        n = 1
        while n < max_replicas:
            ss = model.steady_state(rate / n, mp, mo)
            if (
                not ss.saturated
                and ss.tpot_s <= tpot_fraction * TPOT_SLO_S
                and ss.prefill_busy <= max_prefill_busy
            ):
                break
            n += 1
        need.append(n)
    return need


class OracleController:
    """Perfect foresight: provisions ahead by the cold-start time."""

    def __init__(
        self,
        trace: Sequence[tuple[float, int, int]],
        model: ReplicaModel,
        cold_start_s: float,
        *,
        min_replicas: int = 1,
        max_replicas: int = 16,
        bucket_s: float = 30.0,
        tpot_fraction: float = 0.8,
        max_prefill_busy: float = 0.7,
        name: str = "oracle",
    ) -> None:
        self.name = name
        self.sync_s = 1.0
        self.bucket_s = bucket_s
        self.cold_start_s = cold_start_s
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.tpot_fraction = tpot_fraction
        self.max_prefill_busy = max_prefill_busy
        self.need = oracle_requirements(
            trace,
            model,
            bucket_s=bucket_s,
            tpot_fraction=tpot_fraction,
            max_prefill_busy=max_prefill_busy,
            max_replicas=max(64, max_replicas),
        )

    def required_at(self, t: float) -> int:
        k = int(t // self.bucket_s)
        return self.need[k] if 0 <= k < len(self.need) else 0

    def initial(self) -> int:
        """Replicas to start with (warm) so that t=0 is covered."""
        return self.desired(0.0, 0, 0)

    def peak(self) -> int:
        return max(self.need, default=0)

    def observe(self, tick: FleetTick) -> None:
        return None

    def desired(self, now: float, current: int, ready: int) -> int:
        k0 = int(now // self.bucket_s)
        k1 = int((now + self.cold_start_s) // self.bucket_s) + 1
        want = max(self.need[k0 : k1 + 1], default=0)
        return max(self.min_replicas, min(self.max_replicas, want))


@dataclass(slots=True)
class StaticController:
    replicas: int
    name: str = "static-peak"
    sync_s: float = 60.0

    def observe(self, tick: FleetTick) -> None:
        return None

    def desired(self, now: float, current: int, ready: int) -> int:
        return self.replicas


def _ttft_slo(model: ReplicaModel, prompt_tokens: int) -> float:
    return max(TTFT_SLO_FLOOR_S, 3.0 * model.prefill_s(prompt_tokens))


def lower_bound_gpu_seconds(
    trace: Sequence[tuple[float, int, int]],
    model: ReplicaModel,
    *,
    horizon_s: float,
    min_replicas: int,
    score_from_s: float = 0.0,
    slo_goal: float = 0.99,
    interval_s: float = 60.0,
) -> float:
    """GPU-seconds no schedule can go below while meeting ``slo_goal`` of the requests
    arriving at or after ``score_from_s`` (a provable bound on the replica model).

    - Work of a request (replica-seconds it needs on a ready replica, whatever the
      batching): its prompt's prefill compute ``prefill_s_per_token * p`` plus, per
      further output token, the cheapest share of a decode iteration,
      ``step_base_s / max_num_seqs + step_per_seq_s`` (a full batch).
    - Deadline: a request meeting the SLO is done by arrival + its TTFT SLO + 40 ms per
      further output token (mean TPOT <= 40 ms).
    - Cut ``[0, horizon]`` into intervals of ``interval_s``. Work of the requests that
      arrive and are due inside interval k must be done inside it, by ready replicas, and
      at least ``min_replicas`` are kept all the time, so ready replica-seconds in it are
      at least ``max(min_replicas * length, work_k)``. Billed time is at least ready time.
    - Up to ``(1 - slo_goal)`` of the scored requests may miss: the bound subtracts the
      work of that many of the heaviest ones (``max(a, b - u) >= max(a, b) - u``).

    Loose where the model's capacity is not work-limited (TPOT with prefill interference,
    integrality of replicas, cold starts are not counted), but never above any schedule.
    """
    per_token = model.step_base_s / model.max_num_seqs + model.step_per_seq_s
    n_int = max(1, math.ceil(horizon_s / interval_s))
    work_k = [0.0] * n_int
    works: list[float] = []
    for a, p, o in trace:
        if a < score_from_s or a > horizon_s:
            continue
        p, o = max(1, p), max(1, o)
        w = model.prefill_s_per_token * p + per_token * (o - 1)
        works.append(w)
        due = a + _ttft_slo(model, p) + TPOT_SLO_S * (o - 1)
        k = int(a // interval_s)
        if k < n_int and due <= min((k + 1) * interval_s, horizon_s):
            work_k[k] += w
    total = 0.0
    for k in range(n_int):
        length = min((k + 1) * interval_s, horizon_s) - k * interval_s
        total += max(min_replicas * length, work_k[k])
    may_miss = len(works) - math.ceil(slo_goal * len(works) - 1e-9)
    dropped = sum(sorted(works, reverse=True)[:may_miss]) if may_miss > 0 else 0.0
    return max(min_replicas * horizon_s, total - dropped) * model.gpus


def burst_requirements(
    trace: Sequence[tuple[float, int, int]], model: ReplicaModel, *, bucket_s: float = 30.0
) -> list[int]:
    """Replicas per bucket so that the prefill work arriving in any one second of it can
    be done within those requests' TTFT SLO: ``ceil(sum of prefill times / median SLO)``."""
    if not trace:
        return []
    n_buckets = int(trace[-1][0] // bucket_s) + 1
    per_second: dict[int, list[tuple[float, float]]] = {}
    for a, p, _ in trace:
        per_second.setdefault(int(a), []).append((model.prefill_s(p), _ttft_slo(model, p)))
    need = [0] * n_buckets
    for sec, items in per_second.items():
        work = sum(w for w, _ in items)
        slos = sorted(s for _, s in items)
        n = math.ceil(work / slos[len(slos) // 2] - 1e-9)
        k = int(sec // bucket_s)
        if k < n_buckets:
            need[k] = max(need[k], n)
    return need


class BurstAwareOracle(OracleController):
    """Perfect foresight sized per 30 s bucket as ``ceil(margin x max(steady-state need,
    burst need))`` (``oracle_requirements`` and ``burst_requirements``), asked for a cold
    start ahead. ``benchmarks.autoscaling`` picks the smallest margin whose replay meets
    the SLO goal, so the oracle is a feasible schedule (or says it is not)."""

    def __init__(
        self,
        trace: Sequence[tuple[float, int, int]],
        model: ReplicaModel,
        cold_start_s: float,
        *,
        margin: float = 1.0,
        min_replicas: int = 1,
        max_replicas: int = 16,
        name: str = "oracle",
    ) -> None:
        super().__init__(
            trace,
            model,
            cold_start_s,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            name=name,
        )
        self.margin = margin
        burst = burst_requirements(trace, model, bucket_s=self.bucket_s)
        self.need = [
            math.ceil(margin * max(a, b) - 1e-9) for a, b in zip(self.need, burst, strict=True)
        ]
