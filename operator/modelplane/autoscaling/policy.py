"""Autoscaling policy: a pure function from metric history to a replica count.

Field names and defaults follow Fireworks AI's deployment autoscaling
(``scaleUpWindow`` 30s, ``scaleDownWindow`` 10m, ``scaleToZeroWindow`` 1h and at least
5m, ``replicas.min`` 0, load targets per replica where the highest replica count wins).

How a decision is made (``decide``):

1. For every sample in the history and every configured load target, the *recommendation*
   is ``ceil(fleet value / per-replica target)``. The target that asks for the most
   replicas wins for that sample. Each sample's recommendation is computed once (with the
   sample before it) and steps 2 and 3 read the same list, so the fast path neither
   bypasses nor rewrites what the down window holds. While requests wait, the
   request-count targets are capped at the fleet that keeps up with arrivals
   (``ready x arrival rate / completion rate``): a backlog is not demand (see
   ``recommendations``).
2. Scale up uses the **minimum** recommendation over the last ``scale_up_window``: the
   load must have asked for more replicas during the whole window, so a two-second spike
   does not start a four-minute cold start. Fast path: when requests are queueing
   severely (``queue_depth`` per ready replica at or above
   ``fast_path_queue_per_replica``) the latest recommendation is used at once.
3. Scale down uses the **maximum** recommendation over ``scale_down_window`` (the same
   rule as the Kubernetes HPA's scale-down stabilization), and only once the history
   covers the whole window.
4. With ``min_replicas == 0`` the deployment goes to zero only after no traffic at all for
   ``scale_to_zero_window``; otherwise a running deployment keeps at least one replica.
5. From zero, any request (in flight, queued at the gateway, or a non-zero request rate)
   scales up at once, without waiting for a window.
6. The result is clamped to ``[min_replicas, max_replicas]``.

Because up needs the load to stay high for the up window and down needs it to stay low
for the (longer) down window, a load that oscillates faster than the windows keeps the
replica count at the level of its peaks instead of flapping.

Fleet-level samples (``MetricSample``) are **sums** across ready replicas for every
signal except ``kv_cache_utilization``, which is the **average** across ready replicas
(0-1); its recommendation is ``ceil(ready_replicas * average / target)``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelplane.api.durations import parse_duration as api_duration

__all__ = [
    "TARGET_NAMES",
    "AutoscalingPolicy",
    "Decision",
    "MetricHistory",
    "MetricSample",
    "Reason",
    "decide",
    "parse_duration",
    "recommendations",
    "validate_policy",
]

MIN_SCALE_TO_ZERO_WINDOW_S = 300.0
DEFAULT_FAST_PATH_QUEUE = 4.0
DEFAULT_SCALE_TO_ZERO_WINDOW_S = 3600.0
DEFAULT_SCALE_UP_QUANTILE = 0.0
DEFAULT_FORECAST_HORIZON_S = 0.0
DEFAULT_FORECAST_WINDOW_S = 300.0
DEFAULT_FORECAST_SIGMAS = 0.0
_EPS = 1e-9

# Python field name -> API (camelCase) name, in reporting order.
TARGET_NAMES: Mapping[str, str] = {
    "concurrent_requests": "concurrentRequests",
    "requests_per_second": "requestsPerSecond",
    "tokens_generated_per_second": "tokensGeneratedPerSecond",
    "prompt_tokens_per_second": "promptTokensPerSecond",
    "kv_cache_utilization": "kvCacheUtilization",
    "queue_depth": "queueDepth",
}
_API_TO_FIELD = {v: k for k, v in TARGET_NAMES.items()}


class Reason(StrEnum):
    """Structured reason of a decision (CamelCase, usable as a condition reason)."""

    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    SCALE_TO_ZERO = "ScaleToZero"
    SCALE_FROM_ZERO = "ScaleFromZero"
    HOLD = "Hold"
    AT_MAX = "AtMax"
    AT_MIN = "AtMin"
    STABILIZING = "Stabilizing"
    NO_METRICS = "NoMetrics"


def parse_duration(value: str | float | int) -> float:
    """Parse ``"30s"``, ``"10m"``, ``"1h"``, ``"1h30m"`` (the API's grammar) or seconds."""
    if isinstance(value, bool):
        raise ValueError(f"duration must be like '30s', '10m' or '1h', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        return api_duration(value.strip())
    except ValueError:
        raise ValueError(f"duration must be like '30s', '10m' or '1h', got {value!r}") from None


def _fmt_s(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class AutoscalingPolicy:
    """Autoscaling settings of one deployment. Invalid values raise ``ValueError``.

    Load targets are per replica and optional; at least one is required unless
    ``min_replicas == max_replicas``. ``scale_to_zero_window`` may only be set when
    ``min_replicas == 0`` (``None`` means the 1h default then).
    """

    min_replicas: int = 0
    max_replicas: int = 1
    scale_up_window: float = 30.0
    scale_down_window: float = 600.0
    scale_to_zero_window: float | None = None
    concurrent_requests: float | None = None
    requests_per_second: float | None = None
    tokens_generated_per_second: float | None = None
    prompt_tokens_per_second: float | None = None
    kv_cache_utilization: float | None = None
    queue_depth: float | None = None
    fast_path_queue_per_replica: float | None = DEFAULT_FAST_PATH_QUEUE
    scale_up_quantile: float = DEFAULT_SCALE_UP_QUANTILE
    forecast_horizon: float = DEFAULT_FORECAST_HORIZON_S
    forecast_window: float = DEFAULT_FORECAST_WINDOW_S
    forecast_sigmas: float = DEFAULT_FORECAST_SIGMAS

    def __post_init__(self) -> None:
        problems = validate_policy(self)
        if problems:
            raise ValueError("invalid autoscaling policy: " + "; ".join(problems))

    @property
    def effective_scale_to_zero_window(self) -> float | None:
        """Seconds of zero traffic before going to zero, or None when min > 0."""
        if self.min_replicas > 0:
            return None
        if self.scale_to_zero_window is None:
            return DEFAULT_SCALE_TO_ZERO_WINDOW_S
        return self.scale_to_zero_window

    @property
    def targets(self) -> dict[str, float]:
        """Configured load targets, by field name."""
        out: dict[str, float] = {}
        for name in TARGET_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        return out

    @property
    def history_seconds(self) -> float:
        """How much history ``decide`` looks at."""
        return max(self.scale_up_window, self.scale_down_window, self.forecast_window)

    @classmethod
    def from_spec(
        cls,
        autoscaling: Mapping[str, Any] | None,
        *,
        min_replicas: int = 0,
        max_replicas: int | None = None,
    ) -> AutoscalingPolicy:
        """Build from the CRD's camelCase ``spec.autoscaling`` plus ``spec.replicas``.

        ``max_replicas`` defaults to ``max(min_replicas, 1)`` as in Fireworks.
        """
        spec = dict(autoscaling or {})
        kwargs: dict[str, Any] = {
            "min_replicas": min_replicas,
            "max_replicas": max(min_replicas, 1) if max_replicas is None else max_replicas,
        }
        for api, name in (
            ("scaleUpWindow", "scale_up_window"),
            ("scaleDownWindow", "scale_down_window"),
            ("scaleToZeroWindow", "scale_to_zero_window"),
        ):
            if spec.get(api) is not None:
                kwargs[name] = parse_duration(spec[api])
        for api, value in dict(spec.get("loadTargets") or {}).items():
            if api not in _API_TO_FIELD:
                known = ", ".join(TARGET_NAMES.values())
                raise ValueError(f"unknown load target {api!r}; known targets: {known}")
            kwargs[_API_TO_FIELD[api]] = float(value)
        return cls(**kwargs)


def validate_policy(policy: AutoscalingPolicy) -> list[str]:
    """Return human fix-it messages for every problem (empty when valid)."""
    p = policy
    problems: list[str] = []
    if p.min_replicas < 0:
        problems.append(f"min_replicas is {p.min_replicas}; set it to 0 or more")
    if p.max_replicas < max(p.min_replicas, 1):
        problems.append(
            f"max_replicas ({p.max_replicas}) must be at least max(min_replicas, 1) = "
            f"{max(p.min_replicas, 1)}; raise max_replicas or lower min_replicas"
        )
    for name in ("scale_up_window", "scale_down_window"):
        value = getattr(p, name)
        if value < 0 or math.isnan(value):
            problems.append(f"{name} is {value}s; use 0s or more (e.g. '30s')")
    if p.scale_to_zero_window is not None:
        if p.min_replicas > 0:
            problems.append(
                "scale_to_zero_window only applies when min_replicas is 0 "
                f"(min_replicas is {p.min_replicas}); remove it or set min_replicas to 0"
            )
        elif not p.scale_to_zero_window >= MIN_SCALE_TO_ZERO_WINDOW_S:
            problems.append(
                f"scale_to_zero_window is {p.scale_to_zero_window:g}s; it must be at least "
                f"{_fmt_s(MIN_SCALE_TO_ZERO_WINDOW_S)} (e.g. '5m' or '1h')"
            )
    for name in TARGET_NAMES:
        value = getattr(p, name)
        if value is None:
            continue
        if not value > 0 or math.isinf(value):
            problems.append(f"load target {TARGET_NAMES[name]} is {value}; use a number above 0")
        elif name == "kv_cache_utilization" and value > 1:
            problems.append(
                f"load target kvCacheUtilization is {value}; it is a fraction in (0, 1], "
                "e.g. 0.8 for 80%"
            )
    if p.fast_path_queue_per_replica is not None and not p.fast_path_queue_per_replica > 0:
        problems.append("fast_path_queue_per_replica must be above 0, or None to disable it")
    if not 0 <= p.scale_up_quantile <= 1:
        problems.append(
            f"scale_up_quantile is {p.scale_up_quantile}; use a fraction in [0, 1] "
            "(0: the minimum of the up window, 0.5: its median)"
        )
    for name in ("forecast_horizon", "forecast_window", "forecast_sigmas"):
        value = getattr(p, name)
        if not 0 <= value < math.inf:
            problems.append(f"{name} is {value}; use a finite number, 0 or more")
    if not p.targets and p.min_replicas != p.max_replicas:
        problems.append(
            "no load target is set; set at least one (e.g. concurrent_requests=16) "
            "or pin min_replicas == max_replicas"
        )
    return problems


@dataclass(frozen=True, slots=True)
class MetricSample:
    """Fleet-level load at one instant.

    Sums across ready replicas: ``concurrent_requests`` (running + waiting, including
    requests held at the gateway when no replica can take them), ``requests_per_second``,
    ``tokens_generated_per_second``, ``prompt_tokens_per_second``, ``queue_depth``
    (waiting). Average across ready replicas: ``kv_cache_utilization`` (0-1).
    """

    timestamp: float
    ready_replicas: int
    concurrent_requests: float = 0.0
    requests_per_second: float = 0.0
    tokens_generated_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    kv_cache_utilization: float = 0.0
    queue_depth: float = 0.0

    @property
    def has_traffic(self) -> bool:
        return (
            self.concurrent_requests > 0
            or self.queue_depth > 0
            or self.requests_per_second > 0
            or self.tokens_generated_per_second > 0
            or self.prompt_tokens_per_second > 0
        )


@dataclass(slots=True)
class MetricHistory:
    """Timestamped fleet samples, oldest first, trimmed to ``max_age`` seconds.

    Remembers when traffic was last seen even after those samples are trimmed, so the
    scale-to-zero window can be longer than the kept history.
    """

    max_age: float = 3600.0
    _samples: deque[MetricSample] = field(default_factory=deque)
    first_timestamp: float | None = None
    last_traffic: float | None = None

    def add(self, sample: MetricSample) -> None:
        if self._samples and sample.timestamp < self._samples[-1].timestamp:
            raise ValueError(
                f"samples must be added in time order: {sample.timestamp} is before "
                f"{self._samples[-1].timestamp}"
            )
        self._samples.append(sample)
        if self.first_timestamp is None:
            self.first_timestamp = sample.timestamp
        if sample.has_traffic:
            self.last_traffic = sample.timestamp
        cutoff = sample.timestamp - self.max_age
        while self._samples and self._samples[0].timestamp < cutoff:
            self._samples.popleft()

    def extend(self, samples: Iterable[MetricSample]) -> None:
        for s in samples:
            self.add(s)

    @property
    def latest(self) -> MetricSample | None:
        return self._samples[-1] if self._samples else None

    def window(self, now: float, seconds: float) -> list[MetricSample]:
        """Samples with ``now - seconds <= timestamp <= now``."""
        lo = now - seconds - _EPS
        out: list[MetricSample] = []
        for s in reversed(self._samples):
            if s.timestamp > now + _EPS:
                continue
            if s.timestamp < lo:
                break
            out.append(s)
        out.reverse()
        return out

    def covers(self, now: float, seconds: float) -> bool:
        """True when the history reaches back at least ``seconds`` before ``now``."""
        return self.first_timestamp is not None and self.first_timestamp <= now - seconds + _EPS

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[MetricSample]:
        return iter(self._samples)


def _per_target_values(sample: MetricSample, policy: AutoscalingPolicy) -> dict[str, float]:
    """Fleet demand in the unit of each target (kv: average x ready replicas)."""
    out: dict[str, float] = {}
    for name in policy.targets:
        if name == "kv_cache_utilization":
            if sample.ready_replicas <= 0:
                continue
            out[name] = sample.kv_cache_utilization * sample.ready_replicas
        else:
            out[name] = float(getattr(sample, name))
    return out


def recommendations(
    sample: MetricSample, policy: AutoscalingPolicy, previous: MetricSample | None = None
) -> dict[str, int]:
    """Replicas each configured target asks for at this sample.

    With the ``previous`` sample, the request-count targets (``concurrentRequests``,
    ``queueDepth``) do not count a backlog one for one: while requests queue severely (as
    many per ready replica as trigger the fast path, 4 by default), the backlog
    is a symptom of missing capacity, not a measure of it (a minute of backlog at 50 req/s
    is 3,000 requests, "188 replicas" at 16 per replica, when 20 would serve the load).
    The recommendation is then at most the fleet that completes requests as fast as they
    arrive, ``ready x arrival rate / completion rate`` (at least ``ready + 1`` while the
    backlog grows), the arrival rate being the completion rate plus the growth of the
    in-flight count between the two samples. (Requests being served at saturation are a
    backlog too: a saturated replica runs its 256 sequences slowly.) The rate targets
    (requests and tokens per second) read the opposite way: a saturated fleet's measured
    rates are its output, capped by its capacity, so they are scaled up by the same
    ``arrival rate / completion rate`` to give the demand. Once the backlog is gone, the
    targets size the fleet as usual.
    """
    out: dict[str, int] = {}
    severe = policy.fast_path_queue_per_replica or DEFAULT_FAST_PATH_QUEUE
    cap = None
    ratio = 1.0
    if sample.queue_depth >= severe * max(sample.ready_replicas, 1):
        backlog = _backlog(sample, previous)
        if backlog is not None:
            cap, ratio = backlog
    for name, demand in _per_target_values(sample, policy).items():
        if name in _RATE_TARGETS:
            demand *= ratio  # served rate x arrivals / completions: the demand, not the output
        rec = max(0, math.ceil(demand / policy.targets[name] - 1e-6))
        if cap is not None and name in ("concurrent_requests", "queue_depth"):
            rec = min(rec, cap)
        out[name] = rec
    return out


_RATE_TARGETS = frozenset(
    {"requests_per_second", "tokens_generated_per_second", "prompt_tokens_per_second"}
)


def _backlog(sample: MetricSample, previous: MetricSample | None) -> tuple[int, float] | None:
    """While requests wait: (replicas whose completion rate matches the arrival rate,
    arrival rate / completion rate)."""
    if previous is None or sample.queue_depth <= 0 or sample.ready_replicas <= 0:
        return None
    dt = sample.timestamp - previous.timestamp
    if dt <= 0 or sample.requests_per_second <= 0:
        return None
    growth = (sample.concurrent_requests - previous.concurrent_requests) / dt
    ratio = (sample.requests_per_second + max(growth, 0.0)) / sample.requests_per_second
    # replicas that became ready since the previous sample completed nothing yet
    serving = min(sample.ready_replicas, max(previous.ready_replicas, 1))
    need = math.ceil(serving * ratio - 1e-6)
    # at least one more replica than ready while a backlog grows
    return max(need, sample.ready_replicas + (1 if growth > 0 else 0)), ratio


def _history_recs(samples: list[MetricSample], policy: AutoscalingPolicy) -> list[int]:
    """Winning recommendation of every sample, each read with the sample before it."""
    out: list[int] = []
    prev: MetricSample | None = None
    for s in samples:
        out.append(_best(recommendations(s, policy, prev))[1])
        prev = s
    return out


def _best(recs: Mapping[str, int]) -> tuple[str | None, int]:
    """Highest recommendation; ties go to the first target in TARGET_NAMES order."""
    best_name: str | None = None
    best = 0
    for name in TARGET_NAMES:
        if name in recs and (best_name is None or recs[name] > best):
            best_name, best = name, recs[name]
    return best_name, best


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``decide`` wants and why."""

    desired_replicas: int
    reason: Reason
    winning_target: str | None
    recommendations: Mapping[str, int]
    explanation: str
    fast_path: bool = False

    @property
    def winning_target_api(self) -> str | None:
        """Winning target in API spelling, e.g. ``concurrentRequests``."""
        return None if self.winning_target is None else TARGET_NAMES[self.winning_target]


def _describe(
    sample: MetricSample, policy: AutoscalingPolicy, name: str | None, replicas: int
) -> str:
    if name is None:
        return f"no load signal -> {replicas} replicas"
    value = _per_target_values(sample, policy)[name]
    target = policy.targets[name]
    unit = "replicas" if replicas != 1 else "replica"
    if name == "kv_cache_utilization":
        return (
            f"{TARGET_NAMES[name]} {sample.kv_cache_utilization:.2f} avg x "
            f"{sample.ready_replicas} ready / {target:g} per replica -> {replicas} {unit}"
        )
    return f"{TARGET_NAMES[name]} {value:.1f}/{target:g} per replica -> {replicas} {unit}"


@dataclass(frozen=True, slots=True)
class _Context:
    """What one decision reads: the latest recommendations and the windows' extremes."""

    latest: MetricSample
    recs_now: Mapping[str, int]
    winner: str | None
    raw: int
    up_floor: int
    ahead: int
    down_ceiling: int
    now_text: str


def _window_recs(
    history: MetricHistory, policy: AutoscalingPolicy, now: float, raw: int
) -> list[tuple[MetricSample, int]]:
    """(sample, recommendation) over the longer window, each read with the sample before it,
    so the up window, the fast path and the down window all read the same history."""
    kept = list(history)
    span = policy.history_seconds
    idx = [i for i, s in enumerate(kept) if now - span - _EPS <= s.timestamp <= now + _EPS]
    if not idx:
        return [(kept[-1], raw)]
    i0, i1 = idx[0], idx[-1] + 1
    recs = _history_recs(kept[max(i0 - 1, 0) : i1], policy)
    return list(zip(kept[i0:i1], recs[1 if i0 > 0 else 0 :], strict=True))


def up_statistic(recs: list[int], quantile: float) -> int:
    """The recommendation the up window acts on: the ``quantile`` of the window's
    recommendations (0: the minimum, the load asked for it during the whole window; 0.5:
    the lower median, it asked during at least half of it)."""
    if not recs:
        return 0
    ordered = sorted(recs)
    return ordered[min(len(ordered) - 1, int(quantile * (len(ordered) - 1)))]


def forecast(points: list[tuple[float, int]], now: float, policy: AutoscalingPolicy) -> int:
    """Replicas the load will ask for ``forecast_horizon`` from now (0 when off or falling).

    A least-squares line through the recommendations of the last ``forecast_window``
    (at least half of it must be history), read at ``now + forecast_horizon``, plus
    ``forecast_sigmas`` times the residuals' standard deviation (a standby margin sized
    from how far the load strays from its trend). Only a rising trend counts: a cold
    start is started early for load that is coming, never held for load that left.
    """
    if policy.forecast_horizon <= 0 or policy.forecast_window <= 0:
        return 0
    pts = [(t, r) for t, r in points if t >= now - policy.forecast_window - _EPS]
    if len(pts) < 3 or now - pts[0][0] < policy.forecast_window / 2:
        return 0
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mr = sum(r for _, r in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    slope = sum((t - mt) * (r - mr) for t, r in pts) / var if var > 0 else 0.0
    if slope <= 0:
        return 0
    resid = [r - (mr + slope * (t - mt)) for t, r in pts]
    sigma = math.sqrt(sum(e * e for e in resid) / max(n - 2, 1))
    ahead = mr + slope * (now + policy.forecast_horizon - mt) + policy.forecast_sigmas * sigma
    return max(0, math.ceil(ahead - 1e-6))


def _context(history: MetricHistory, policy: AutoscalingPolicy, now: float) -> _Context:
    kept = list(history)
    latest = kept[-1]
    recs_now = recommendations(latest, policy, kept[-2] if len(kept) >= 2 else None)
    winner, raw = _best(recs_now)
    by_age = _window_recs(history, policy, now, raw)
    up_lo = now - policy.scale_up_window - _EPS
    down_lo = now - policy.scale_down_window - _EPS
    up = [r for s, r in by_age if s.timestamp >= up_lo] or [raw]
    down_ceiling = max((r for s, r in by_age if s.timestamp >= down_lo), default=raw)
    ahead = forecast([(s.timestamp, r) for s, r in by_age], now, policy)
    up_floor = max(up_statistic(up, policy.scale_up_quantile), ahead)
    now_text = _describe(latest, policy, winner, raw)
    return _Context(latest, recs_now, winner, raw, up_floor, ahead, down_ceiling, now_text)


def _clamp(
    ctx: _Context,
    policy: AutoscalingPolicy,
    current: int,
    desired: int,
    reason: Reason,
    text: str,
    fast: bool = False,
) -> Decision:
    lo, hi = max(policy.min_replicas, 0), policy.max_replicas
    if desired > hi:
        text = f"{text}; capped at max {hi}"
        return Decision(hi, Reason.AT_MAX, ctx.winner, ctx.recs_now, text, fast)
    if desired < lo:
        if current == lo:
            reason = Reason.AT_MIN
        text = f"{text}; floored at min {lo}"
        return Decision(lo, reason, ctx.winner, ctx.recs_now, text, fast)
    return Decision(desired, reason, ctx.winner, ctx.recs_now, text, fast)


def _hold(ctx: _Context, current: int, reason: Reason, text: str) -> Decision:
    return Decision(current, reason, ctx.winner, ctx.recs_now, text)


def _scale_up(
    ctx: _Context, policy: AutoscalingPolicy, current: int, ready: int
) -> Decision | None:
    """Scale up on the up window's statistic, or at once on the fast path."""
    fpq = policy.fast_path_queue_per_replica
    fast = fpq is not None and ctx.latest.queue_depth >= fpq * max(ready, 1) and ctx.raw > current
    target = ctx.raw if fast else ctx.up_floor
    if target <= current:
        return None
    if fast:
        why = f"fast path: queue {ctx.latest.queue_depth:g} >= {fpq:g}/ready replica"
    elif ctx.ahead >= target:
        why = f"forecast {_fmt_s(policy.forecast_horizon)} ahead"
    else:
        why = f"scale-up window {_fmt_s(policy.scale_up_window)}"
    text = _describe(ctx.latest, policy, ctx.winner, target) + f" ({why})"
    return _clamp(ctx, policy, current, target, Reason.SCALE_UP, text, fast)


def _scale_to_zero(
    ctx: _Context, history: MetricHistory, policy: AutoscalingPolicy, now: float
) -> Decision | None:
    """Zero only with min 0, after zero traffic for the whole scale-to-zero window."""
    stz = policy.effective_scale_to_zero_window
    if stz is None or policy.min_replicas > 0:
        return None
    last = history.last_traffic
    quiet_since = last if last is not None else history.first_timestamp
    if quiet_since is None or now - quiet_since < stz - _EPS or not history.covers(now, stz):
        return None
    text = (
        f"no traffic for {_fmt_s(now - quiet_since)} "
        f"(scale-to-zero window {_fmt_s(stz)}) -> 0 replicas"
    )
    return Decision(0, Reason.SCALE_TO_ZERO, ctx.winner, ctx.recs_now, text)


def _scale_down(
    ctx: _Context, history: MetricHistory, policy: AutoscalingPolicy, current: int, now: float
) -> Decision | None:
    """Down to the highest recommendation of the down window, once it is all history."""
    target = max(ctx.down_ceiling, policy.min_replicas, 1)
    if target >= current:
        return None
    window = _fmt_s(policy.scale_down_window)
    if not history.covers(now, policy.scale_down_window):
        text = f"{ctx.now_text}; waiting for {window} of history before scaling down from {current}"
        return _hold(ctx, min(current, policy.max_replicas), Reason.STABILIZING, text)
    text = (
        f"{ctx.now_text}; peak over scale-down window {window} needs {target} -> {target} replicas"
    )
    return _clamp(ctx, policy, current, target, Reason.SCALE_DOWN, text)


def _steady(ctx: _Context, policy: AutoscalingPolicy, current: int) -> Decision:
    """Neither window moves the count: say why it holds."""
    lo, hi = max(policy.min_replicas, 0), policy.max_replicas
    raw = ctx.raw
    if raw > current:
        reason = Reason.STABILIZING if current < hi else Reason.AT_MAX
        text = (
            f"{ctx.now_text}; not sustained over scale-up window "
            f"{_fmt_s(policy.scale_up_window)}, keeping {current}"
        )
        return _hold(ctx, min(current, hi), reason, text)
    if max(raw, lo, 1) < current:
        text = (
            f"{ctx.now_text}; scale-down window {_fmt_s(policy.scale_down_window)} "
            f"still needs {current}"
        )
        return _hold(ctx, current, Reason.STABILIZING, text)
    if current > hi:
        return _clamp(ctx, policy, current, current, Reason.AT_MAX, ctx.now_text)
    if current < lo:
        return _clamp(ctx, policy, current, lo, Reason.SCALE_UP, f"{ctx.now_text}; below min {lo}")
    reason = Reason.AT_MIN if raw < current == lo else Reason.HOLD
    return _hold(ctx, current, reason, f"{ctx.now_text}; holding")


def decide(
    history: MetricHistory,
    current_replicas: int,
    ready_replicas: int,
    policy: AutoscalingPolicy,
    now: float,
) -> Decision:
    """Desired replica count for the deployment at time ``now`` (pure, no I/O).

    ``current_replicas`` counts every replica asked for (ready or still starting), so a
    scale-up in progress is not repeated while its replicas load.
    """
    if history.latest is None:
        desired = min(max(current_replicas, policy.min_replicas, 0), policy.max_replicas)
        text = f"no metrics yet; keeping {desired} replicas"
        return Decision(desired, Reason.NO_METRICS, None, {}, text)
    ctx = _context(history, policy, now)
    cur = current_replicas
    if cur == 0:  # from zero: any sign of a request wakes the deployment up at once
        if ctx.latest.has_traffic:
            text = f"request arrived at zero; {ctx.now_text}"
            return _clamp(ctx, policy, cur, max(1, ctx.raw), Reason.SCALE_FROM_ZERO, text)
        return _clamp(ctx, policy, cur, 0, Reason.HOLD, "no traffic; staying at zero")
    return (
        _scale_up(ctx, policy, cur, ready_replicas)
        or _scale_to_zero(ctx, history, policy, now)
        or _scale_down(ctx, history, policy, cur, now)
        or _steady(ctx, policy, cur)
    )
