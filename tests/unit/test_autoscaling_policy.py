"""Autoscaling policy: pure decisions with an injected clock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from modelplane.autoscaling.policy import (
    AutoscalingPolicy,
    MetricHistory,
    MetricSample,
    Reason,
    decide,
    parse_duration,
    recommendations,
)


def sample(t: float, ready: int = 1, **kw: float) -> MetricSample:
    return MetricSample(timestamp=t, ready_replicas=ready, **kw)


def feed(history: MetricHistory, start: float, stop: float, step: float, **kw: Any) -> None:
    t = start
    while t <= stop + 1e-9:
        history.add(sample(t, **kw))
        t += step


POLICY = AutoscalingPolicy(min_replicas=1, max_replicas=10, concurrent_requests=16)


def test_highest_target_wins_and_explanation_names_it() -> None:
    policy = AutoscalingPolicy(
        min_replicas=1, max_replicas=10, concurrent_requests=16, tokens_generated_per_second=1000
    )
    h = MetricHistory()
    feed(h, 0, 40, 5, concurrent_requests=29.0, tokens_generated_per_second=3500.0)
    d = decide(h, current_replicas=1, ready_replicas=1, policy=policy, now=40)
    assert d.recommendations == {"concurrent_requests": 2, "tokens_generated_per_second": 4}
    assert d.desired_replicas == 4
    assert d.reason == Reason.SCALE_UP
    assert d.winning_target == "tokens_generated_per_second"
    assert "tokensGeneratedPerSecond 3500.0/1000 per replica -> 4 replicas" in d.explanation
    assert "scale-up window 30s" in d.explanation


def test_explanation_format_for_concurrency() -> None:
    h = MetricHistory()
    feed(h, 0, 30, 5, concurrent_requests=29.0)
    d = decide(h, 1, 1, POLICY, now=30)
    assert (
        d.explanation
        == "concurrentRequests 29.0/16 per replica -> 2 replicas (scale-up window 30s)"
    )
    assert d.winning_target_api == "concurrentRequests"


def test_scale_up_waits_for_the_up_window() -> None:
    h = MetricHistory()
    feed(h, 0, 100, 5, concurrent_requests=10.0)
    feed(h, 105, 125, 5, concurrent_requests=40.0)  # 20 s of high load
    d = decide(h, 1, 1, POLICY, now=125)
    assert d.desired_replicas == 1
    assert d.reason == Reason.STABILIZING
    feed(h, 130, 135, 5, concurrent_requests=40.0)  # now 30 s
    d = decide(h, 1, 1, POLICY, now=135)
    assert (d.desired_replicas, d.reason) == (3, Reason.SCALE_UP)


def test_short_spike_does_not_scale_up() -> None:
    h = MetricHistory()
    feed(h, 0, 100, 5, concurrent_requests=10.0)
    h.add(sample(105, concurrent_requests=200.0))
    feed(h, 110, 140, 5, concurrent_requests=10.0)
    for now in (105, 110, 140):
        assert decide(h, 1, 1, POLICY, now=now).desired_replicas == 1


def test_fast_path_when_queueing_is_severe() -> None:
    h = MetricHistory()
    feed(h, 0, 100, 5, concurrent_requests=10.0)
    h.add(sample(105, ready=2, concurrent_requests=90.0, queue_depth=40.0))
    d = decide(h, 2, 2, POLICY, now=105)
    assert d.fast_path
    assert (d.desired_replicas, d.reason) == (6, Reason.SCALE_UP)
    assert "fast path" in d.explanation
    no_fast = AutoscalingPolicy(
        min_replicas=1, max_replicas=10, concurrent_requests=16, fast_path_queue_per_replica=None
    )
    assert decide(h, 2, 2, no_fast, now=105).desired_replicas == 2


def test_scale_down_waits_for_the_down_window_and_uses_its_peak() -> None:
    h = MetricHistory()
    feed(h, 0, 600, 5, ready=4, concurrent_requests=60.0)  # needs 4
    feed(h, 605, 900, 5, ready=4, concurrent_requests=20.0)  # needs 2
    d = decide(h, 4, 4, POLICY, now=900)
    assert (d.desired_replicas, d.reason) == (4, Reason.STABILIZING)
    feed(h, 905, 1205, 5, ready=4, concurrent_requests=20.0)
    d = decide(h, 4, 4, POLICY, now=1205)
    assert (d.desired_replicas, d.reason) == (2, Reason.SCALE_DOWN)


def test_scale_down_needs_a_full_window_of_history() -> None:
    h = MetricHistory()
    feed(h, 0, 120, 5, ready=4, concurrent_requests=1.0)
    d = decide(h, 4, 4, POLICY, now=120)
    assert (d.desired_replicas, d.reason) == (4, Reason.STABILIZING)


def test_no_flapping_on_oscillating_load() -> None:
    """Load alternating every 20 s between 1 and 3 replicas' worth: one scale-up, then
    it stays at the peak level; no reversals."""
    h = MetricHistory()
    current = 1
    changes: list[int] = []
    for i in range(0, 4000, 5):
        high = (i // 20) % 2 == 0 and i >= 200
        h.add(sample(float(i), ready=current, concurrent_requests=45.0 if high else 10.0))
        d = decide(h, current, current, POLICY, now=float(i))
        if d.desired_replicas != current:
            changes.append(d.desired_replicas - current)
            current = d.desired_replicas
    directions = [1 if c > 0 else -1 for c in changes]
    reversals = sum(1 for a, b in itertools.pairwise(directions) if a != b)
    assert reversals == 0
    assert current == 1  # the high phases never lasted 30 s...


def test_oscillation_with_sustained_peaks_settles_at_peak() -> None:
    h = MetricHistory()
    current = 1
    events = 0
    for i in range(0, 4000, 5):
        high = (i // 60) % 2 == 0  # 60 s high, 60 s low
        h.add(sample(float(i), ready=current, concurrent_requests=45.0 if high else 10.0))
        d = decide(h, current, current, POLICY, now=float(i))
        if d.desired_replicas != current:
            events += 1
            current = d.desired_replicas
    assert current == 3
    assert events == 1


def test_scale_to_zero_after_window_only_with_min_zero() -> None:
    policy = AutoscalingPolicy(
        min_replicas=0, max_replicas=4, concurrent_requests=16, scale_to_zero_window=900
    )
    h = MetricHistory()
    feed(h, 0, 100, 5, concurrent_requests=5.0)
    feed(h, 105, 990, 5)  # idle from t=105 (last traffic at 100)
    assert decide(h, 1, 1, policy, now=990).desired_replicas == 1
    feed(h, 995, 1000, 5)
    d = decide(h, 1, 1, policy, now=1000)
    assert (d.desired_replicas, d.reason) == (0, Reason.SCALE_TO_ZERO)
    # same idle history, min 1: never zero
    pinned = AutoscalingPolicy(min_replicas=1, max_replicas=4, concurrent_requests=16)
    assert decide(h, 1, 1, pinned, now=1000).desired_replicas == 1


def test_default_scale_to_zero_window_is_an_hour() -> None:
    policy = AutoscalingPolicy(min_replicas=0, max_replicas=4, concurrent_requests=16)
    assert policy.effective_scale_to_zero_window == 3600
    h = MetricHistory(max_age=policy.history_seconds)
    h.add(sample(0, concurrent_requests=1.0))
    feed(h, 5, 3595, 5)
    assert decide(h, 1, 1, policy, now=3595).desired_replicas == 1
    feed(h, 3600, 3600, 5)
    assert decide(h, 1, 1, policy, now=3600).desired_replicas == 0


def test_scale_from_zero_on_first_request() -> None:
    policy = AutoscalingPolicy(min_replicas=0, max_replicas=4, concurrent_requests=16)
    h = MetricHistory()
    feed(h, 0, 100, 5, ready=0)
    assert decide(h, 0, 0, policy, now=100).desired_replicas == 0
    h.add(sample(105, ready=0, concurrent_requests=1.0, queue_depth=1.0))
    d = decide(h, 0, 0, policy, now=105)
    assert (d.desired_replicas, d.reason) == (1, Reason.SCALE_FROM_ZERO)


def test_max_and_min_clamps() -> None:
    policy = AutoscalingPolicy(min_replicas=2, max_replicas=3, concurrent_requests=16)
    h = MetricHistory()
    feed(h, 0, 60, 5, ready=2, concurrent_requests=500.0)
    d = decide(h, 2, 2, policy, now=60)
    assert (d.desired_replicas, d.reason) == (3, Reason.AT_MAX)
    assert "capped at max 3" in d.explanation
    h2 = MetricHistory()
    feed(h2, 0, 700, 5, ready=2, concurrent_requests=0.0)
    d = decide(h2, 2, 2, policy, now=700)
    assert d.desired_replicas == 2
    assert d.reason == Reason.AT_MIN


def test_kv_cache_target_uses_average_times_ready() -> None:
    policy = AutoscalingPolicy(min_replicas=1, max_replicas=10, kv_cache_utilization=0.5)
    s = sample(0, ready=3, kv_cache_utilization=0.9)
    assert recommendations(s, policy) == {"kv_cache_utilization": 6}


def test_no_metrics_keeps_current() -> None:
    d = decide(MetricHistory(), 3, 3, POLICY, now=0)
    assert (d.desired_replicas, d.reason) == (3, Reason.NO_METRICS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 0, "scale_to_zero_window": 60.0}, "at least 5m"),
        ({"min_replicas": 1, "scale_to_zero_window": 600.0}, "only applies when min_replicas is 0"),
        ({"concurrent_requests": 0.0}, "concurrentRequests is 0.0; use a number above 0"),
        ({"concurrent_requests": 16.0, "kv_cache_utilization": 80.0}, "fraction in (0, 1]"),
        ({"min_replicas": 3, "max_replicas": 2, "concurrent_requests": 1.0}, "raise max_replicas"),
        ({"max_replicas": 4}, "no load target is set"),
        ({"concurrent_requests": 1.0, "scale_up_window": -1.0}, "scale_up_window"),
    ],
)
def test_invalid_policies_raise_fix_it_messages(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match="invalid autoscaling policy") as err:
        AutoscalingPolicy(**kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_from_spec_reads_the_crd_fields() -> None:
    p = AutoscalingPolicy.from_spec(
        {
            "scaleUpWindow": "45s",
            "scaleDownWindow": "10m",
            "scaleToZeroWindow": "1h",
            "loadTargets": {"concurrentRequests": 16, "kvCacheUtilization": 0.8},
        },
        min_replicas=0,
        max_replicas=4,
    )
    assert (p.scale_up_window, p.scale_down_window, p.scale_to_zero_window) == (45, 600, 3600)
    assert p.targets == {"concurrent_requests": 16.0, "kv_cache_utilization": 0.8}
    with pytest.raises(ValueError, match="unknown load target 'gpuUtil'"):
        AutoscalingPolicy.from_spec({"loadTargets": {"gpuUtil": 1}}, max_replicas=2)
    assert (
        AutoscalingPolicy.from_spec({"loadTargets": {"queueDepth": 2}}, min_replicas=0).max_replicas
        == 1
    )


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1h30m") == 5400
    assert parse_duration(12) == 12
    with pytest.raises(ValueError, match="like '30s'"):
        parse_duration("soon")


def test_history_rejects_out_of_order_and_trims() -> None:
    h = MetricHistory(max_age=60)
    feed(h, 0, 200, 10, concurrent_requests=1.0)
    assert len(h) == 7  # 140..200
    assert h.last_traffic == 200
    with pytest.raises(ValueError, match="time order"):
        h.add(sample(100))


BIG = AutoscalingPolicy(min_replicas=1, max_replicas=400, concurrent_requests=16)


def test_a_backlog_is_sized_by_arrival_over_completion_rate_not_one_for_one() -> None:
    """A minute of backlog at 1 ready replica: 3,000 requests in flight would be "188
    replicas" one for one; the fleet that keeps up with arrivals is ~6 (60 req/s arriving,
    10 completing per ready replica), and that is what the fast path asks for."""
    h = MetricHistory()
    feed(h, 0, 55, 5, ready=1, concurrent_requests=10.0, requests_per_second=10.0)
    h.add(sample(60, ready=1, concurrent_requests=260.0, queue_depth=4.0, requests_per_second=10))
    h.add(sample(65, ready=1, concurrent_requests=510.0, queue_depth=254, requests_per_second=10))
    d = decide(h, 1, 1, BIG, now=65)
    assert d.fast_path
    assert d.desired_replicas == 6  # ceil(1 x (10 + 250/5) / 10)
    # without a previous sample (no rates known) the count is read one for one, as before
    lone = MetricHistory()
    lone.add(sample(65, ready=1, concurrent_requests=510.0, queue_depth=254))
    assert decide(lone, 1, 1, BIG, now=65).desired_replicas == 32


def test_after_a_fast_path_burst_the_window_holds_its_peak_for_the_whole_window() -> None:
    h = MetricHistory()
    feed(h, 0, 600, 5, ready=2, concurrent_requests=20.0, requests_per_second=4.0)  # needs 2
    h.add(sample(605, ready=2, concurrent_requests=140.0, queue_depth=100, requests_per_second=4))
    burst = decide(h, 2, 2, BIG, now=605)
    assert burst.fast_path and burst.desired_replicas == 9  # ceil(2 x (4 + 24) / 4) = 14 > 9
    current = burst.desired_replicas
    # the burst is over at once: low load, no queue, for the next 10 minutes
    for t in range(610, 1205, 5):
        h.add(sample(t, ready=current, concurrent_requests=20.0, requests_per_second=4.0))
        d = decide(h, current, current, BIG, now=float(t))
        assert d.desired_replicas == current, (t, d)
    h.add(sample(1210, ready=current, concurrent_requests=20.0, requests_per_second=4.0))
    d = decide(h, current, current, BIG, now=1210.0)
    assert (d.desired_replicas, d.reason) == (2, Reason.SCALE_DOWN)


def _independent_recs(h: MetricHistory, now: float, seconds: float) -> list[int]:
    samples = list(h)
    out = []
    for i, s in enumerate(samples):
        if now - seconds - 1e-9 <= s.timestamp <= now + 1e-9:
            prev = samples[i - 1] if i > 0 else None
            out.append(max(recommendations(s, BIG, prev).values()))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_property_no_drop_below_the_peak_of_the_down_window(seed: int) -> None:
    """Random load histories (steady phases, one-sample bursts with queues, silences):
    every scale-down happens only with a full window of history and never below the
    highest recommendation of the window; every scale-up is backed by the up window or
    the fast path."""
    import random

    rng = random.Random(seed)
    h = MetricHistory(max_age=BIG.history_seconds + 10)
    current = rng.randint(1, 40)
    level = rng.uniform(0, 400)
    for t in range(0, 2400, 5):
        if rng.random() < 0.03:
            level = rng.choice([0.0, rng.uniform(0, 100), rng.uniform(100, 2000)])
        conc = max(0.0, level * rng.uniform(0.7, 1.3))
        queue = 0.0
        if rng.random() < 0.05:  # a burst: a queue at the gateway
            queue = rng.uniform(0, 3000)
            conc += queue
        rps = 0.0 if conc == 0 else rng.uniform(0.5, 3.0) * current
        h.add(
            sample(
                float(t),
                ready=current,
                concurrent_requests=conc,
                queue_depth=queue,
                requests_per_second=rps,
            )
        )
        d = decide(h, current, current, BIG, now=float(t))
        if d.desired_replicas < current:
            assert h.covers(float(t), BIG.scale_down_window)
            peak = max(_independent_recs(h, float(t), BIG.scale_down_window))
            assert d.desired_replicas >= min(current, max(peak, 1)), (t, d)
        elif d.desired_replicas > current and not d.fast_path:
            assert d.desired_replicas <= max(
                min(_independent_recs(h, float(t), BIG.scale_up_window)), current
            ), (t, d)
        current = d.desired_replicas


MULTI = AutoscalingPolicy(
    min_replicas=1,
    max_replicas=400,
    concurrent_requests=64,
    prompt_tokens_per_second=3000,
    tokens_generated_per_second=4000,
    kv_cache_utilization=0.8,
    scale_up_quantile=0.5,
)


def _window(h: MetricHistory, policy: AutoscalingPolicy, now: float, seconds: float) -> list[int]:
    samples = list(h)
    out = []
    for i, s in enumerate(samples):
        if now - seconds - 1e-9 <= s.timestamp <= now + 1e-9:
            prev = samples[i - 1] if i > 0 else None
            out.append(max(recommendations(s, policy, prev).values(), default=0))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_property_token_targets_never_drop_below_the_down_window(seed: int) -> None:
    """Random histories of every signal (token rates, KV use, queues, silences, ready
    replicas lagging the count): a drop happens only with a full down window and never
    below its highest recommendation; a scale-up off the fast path never exceeds the up
    window's statistic (its lower median here)."""
    import random

    from modelplane.autoscaling.policy import up_statistic

    rng = random.Random(1000 + seed)
    h = MetricHistory(max_age=MULTI.history_seconds + 10)
    current = ready = rng.randint(1, 30)
    level = rng.uniform(0, 50_000)
    for t in range(0, 2400, 5):
        if rng.random() < 0.04:
            level = rng.choice([0.0, rng.uniform(0, 5_000), rng.uniform(5_000, 200_000)])
        prompt = max(0.0, level * rng.uniform(0.5, 1.5))
        if rng.random() < 0.05:  # a burst of long prompts
            prompt += rng.uniform(0, 500_000)
        queue = rng.uniform(0, 2000) if rng.random() < 0.05 else 0.0
        ready = min(current, ready + rng.randint(0, 3))
        h.add(
            sample(
                float(t),
                ready=ready,
                concurrent_requests=prompt / 1000 + queue,
                queue_depth=queue,
                requests_per_second=prompt / 1200,
                prompt_tokens_per_second=prompt,
                tokens_generated_per_second=prompt * rng.uniform(0.05, 2.0),
                kv_cache_utilization=min(1.0, prompt / 200_000 / max(ready, 1)),
            )
        )
        d = decide(h, current, ready, MULTI, now=float(t))
        if d.desired_replicas < current:
            assert h.covers(float(t), MULTI.scale_down_window)
            peak = max(_window(h, MULTI, float(t), MULTI.scale_down_window))
            assert d.desired_replicas >= min(current, max(peak, 1)), (t, d)
        elif d.desired_replicas > current and not d.fast_path:
            up = up_statistic(_window(h, MULTI, float(t), MULTI.scale_up_window), 0.5)
            assert d.desired_replicas <= max(up, current), (t, d)
        current = d.desired_replicas
        ready = min(ready, current)


def test_up_statistic_is_a_quantile_of_the_window() -> None:
    from modelplane.autoscaling.policy import up_statistic

    assert up_statistic([5, 1, 9, 3], 0.0) == 1
    assert up_statistic([5, 1, 9, 3], 0.5) == 3  # lower median
    assert up_statistic([5, 1, 9, 3], 1.0) == 9
    assert up_statistic([], 0.5) == 0
    with pytest.raises(ValueError, match="scale_up_quantile"):
        AutoscalingPolicy(min_replicas=1, max_replicas=2, queue_depth=1, scale_up_quantile=1.5)


def test_forecast_starts_a_cold_start_ahead_of_a_rising_load() -> None:
    """A load rising steadily: the up window's median still fits the fleet, the trend a
    cold start ahead does not, so the forecast scales up early; the same load falling
    forecasts nothing."""
    from modelplane.autoscaling.policy import forecast

    policy = AutoscalingPolicy(
        min_replicas=1,
        max_replicas=100,
        prompt_tokens_per_second=1000,
        scale_up_quantile=0.5,
        forecast_horizon=180,
        forecast_window=300,
    )
    rising = MetricHistory(max_age=policy.history_seconds + 10)
    for t in range(0, 305, 5):
        rising.add(sample(float(t), ready=4, prompt_tokens_per_second=1000 + 10.0 * t))
    d = decide(rising, 4, 4, policy, now=300)
    # 4000 tokens/s now, +10/s: 5800 in 180 s -> 6 replicas
    assert (d.desired_replicas, d.reason) == (6, Reason.SCALE_UP)
    assert "forecast 3m ahead" in d.explanation
    assert forecast([(0.0, 4), (100.0, 3), (200.0, 2)], 200.0, policy) == 0
    assert forecast([(150.0, 1), (200.0, 2)], 200.0, policy) == 0  # too little history
    off = AutoscalingPolicy(min_replicas=1, max_replicas=100, prompt_tokens_per_second=1000)
    assert decide(rising, 4, 4, off, now=300).desired_replicas == 4


def test_rate_targets_read_demand_not_output_while_requests_queue() -> None:
    """A saturated fleet completes 10 req/s while 15 arrive: its measured prompt rate is
    its output; the demand is that rate x 15/10."""
    policy = AutoscalingPolicy(min_replicas=1, max_replicas=100, prompt_tokens_per_second=1000)
    prev = sample(0.0, ready=2, concurrent_requests=500, queue_depth=100, requests_per_second=10)
    now = sample(
        5.0,
        ready=2,
        concurrent_requests=525,
        queue_depth=125,
        requests_per_second=10,
        prompt_tokens_per_second=4000,
    )
    assert recommendations(now, policy, prev) == {"prompt_tokens_per_second": 6}
    assert recommendations(now, policy) == {"prompt_tokens_per_second": 4}
