"""The workload suite of the autoscaling benchmark: traces of different shapes.

Every trace is a sorted list of ``(arrival s, prompt tokens, output tokens)``. The public
trace is read from a CSV with the Azure LLM inference trace's columns (``--trace``); every
synthetic family is seeded and drawn from the distributions documented on its function, so
a run is reproducible bit for bit. Nothing here is fitted to the policy: the families exist
to be shapes the policy was not developed on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

Trace = list[tuple[float, int, int]]

__all__ = [
    "Trace",
    "bursty",
    "decode_heavy",
    "diurnal",
    "load_csv",
    "prefill_heavy",
    "ramp_in",
    "superpose",
]


def load_csv(path: Path, window_s: float | None = None) -> Trace:
    """Read an Azure-style CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``) as seconds
    since the first request. Rows may be unsorted; ``window_s`` keeps only the start."""
    rows: Trace = []
    stamps: list[tuple[float, int, int]] = []
    with path.open(encoding="utf-8") as fh:
        header = [h.strip() for h in fh.readline().strip().split(",")]
        if header[:3] != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise SystemExit(f"{path}: unexpected header {header}")
        for line in fh:
            if not line.strip():
                continue
            ts, ctx, gen = line.strip().split(",")[:3]
            ts = ts.strip()
            # up to 7 fractional digits: keep microseconds for fromisoformat
            head, _, frac = ts.partition(".")
            if frac:
                digits = "".join(ch for ch in frac if ch.isdigit())
                tz = frac[len(digits) :]
                ts = f"{head}.{digits[:6]}{tz}"
            stamps.append((datetime.fromisoformat(ts).timestamp(), int(ctx), int(gen)))
    stamps.sort()
    if not stamps:
        return rows
    t0 = stamps[0][0]
    for stamp, ctx, gen in stamps:
        t = stamp - t0
        if window_s is not None and t > window_s:
            break
        rows.append((t, ctx, gen))
    return rows


def superpose(trace: Trace, copies: int, seed: int = 1) -> Trace:
    """``copies`` copies of the trace, each shifted circularly by a seeded random offset:
    ``copies`` times the load with the same shape (arrival pattern and size mix)."""
    if copies <= 1 or not trace:
        return list(trace)
    rng = random.Random(seed)
    dur = trace[-1][0] + 1e-3
    out: Trace = list(trace)
    for _ in range(copies - 1):
        off = rng.uniform(0.0, dur)
        out.extend(((t + off) % dur, p, o) for t, p, o in trace)
    out.sort()
    return out


def ramp_in(trace: Trace, ramp_s: float, seed: int = 3) -> Trace:
    """Thin the first ``ramp_s`` seconds: keep a request at time t with probability
    ``t / ramp_s``, so the load grows linearly from zero to the trace's own level (no
    policy starts sized for traffic it has not seen)."""
    rng = random.Random(seed)
    return [r for r in trace if r[0] >= ramp_s or rng.random() * ramp_s < r[0]]


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(median * math.exp(rng.gauss(0.0, sigma))))))


def _poisson(
    rate_fn: Callable[[float], float],
    duration: float,
    peak: float,
    size: Callable[[random.Random], tuple[int, int]],
    seed: int,
) -> Trace:
    """Non-homogeneous Poisson arrivals by thinning."""
    rng = random.Random(seed)
    out: Trace = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            return out
        if rng.random() * peak <= rate_fn(t):
            p, o = size(rng)
            out.append((t, p, o))


def _resample(sizes: Sequence[tuple[int, int]]) -> Callable[[random.Random], tuple[int, int]]:
    return lambda rng: sizes[rng.randrange(len(sizes))]


def prefill_heavy(duration: float = 3600.0, scale: float = 1.0, seed: int = 21) -> Trace:
    """Long prompts, short outputs, second-scale bursts and silences.

    Prompts lognormal (median 2,000 tokens, sigma 0.5, 64-8,000); outputs lognormal
    (median 30, sigma 0.6, 1-300). Alternating ON periods (exponential, mean 150 s) and
    silences (exponential, mean 120 s). In an ON period: Poisson background at
    ``2 * scale`` req/s plus bursts (Poisson epochs, one per 25 s on average) of
    ``round(60 * scale * U(0.5, 1.5))`` requests spread uniformly over one second.
    """
    rng = random.Random(seed)

    def size(r: random.Random) -> tuple[int, int]:
        return _lognormal(r, 2000, 0.5, 64, 8000), _lognormal(r, 30, 0.6, 1, 300)

    out: Trace = []
    t = 0.0
    on = True
    while t < duration:
        length = rng.expovariate(1 / 150.0) if on else rng.expovariate(1 / 120.0)
        end = min(duration, t + length)
        if on:
            x = t
            while True:
                x += rng.expovariate(2.0 * scale)
                if x >= end:
                    break
                out.append((x, *size(rng)))
            x = t
            while True:
                x += rng.expovariate(1 / 25.0)
                if x >= end:
                    break
                for _ in range(round(60 * scale * rng.uniform(0.5, 1.5))):
                    out.append((x + rng.random(), *size(rng)))
        t = end
        on = not on
    out.sort()
    return [r for r in out if r[0] < duration]


def decode_heavy(duration: float = 3600.0, scale: float = 1.0, seed: int = 31) -> Trace:
    """Short prompts, long outputs (chat/agents writing code).

    Prompts lognormal (median 300, sigma 0.7, 16-4,000); outputs lognormal (median 600,
    sigma 0.6, 16-4,000). Poisson at ``scale * r(t)`` req/s where r rises linearly from
    1 to 3 req/s over the first half and falls back over the second, with a +50% ripple
    of period 10 min.
    """

    def size(r: random.Random) -> tuple[int, int]:
        return _lognormal(r, 300, 0.7, 16, 4000), _lognormal(r, 600, 0.6, 16, 4000)

    def rate(x: float) -> float:
        tri = 1.0 + 2.0 * (1.0 - abs(2.0 * x / duration - 1.0))
        return scale * tri * (1.0 + 0.25 * (1.0 + math.sin(2 * math.pi * x / 600.0)))

    return _poisson(rate, duration, scale * 3.0 * 1.5, size, seed)


def bursty(
    sizes: Sequence[tuple[int, int]], duration: float = 3600.0, scale: float = 1.0, seed: int = 7
) -> Trace:
    """Poisson at ``2 * scale`` req/s with 3-6 min bursts to 3x every 10-14 min and 20 s
    spikes to 4x in between; sizes resampled from ``sizes``."""
    rng = random.Random(seed)
    base = 2.0 * scale
    bursts: list[tuple[float, float, float]] = []
    t = 300.0
    while t < duration:
        length = rng.uniform(180, 360)
        bursts.append((t, t + length, 3.0))
        spike = t + length + rng.uniform(200, 300)
        bursts.append((spike, spike + 20.0, 4.0))
        t += rng.uniform(600, 840)

    def rate(x: float) -> float:
        mult = 1.0
        for a, b, m in bursts:
            if a <= x < b:
                mult = max(mult, m)
        return base * mult

    return _poisson(rate, duration, base * 4.0, _resample(sizes), seed + 1)


def diurnal(
    sizes: Sequence[tuple[int, int]],
    duration: float = 3 * 3600.0,
    scale: float = 1.0,
    seed: int = 11,
) -> Trace:
    """A day compressed into ``duration``: Poisson on a cosine from ``0.3 * scale`` req/s
    (night) to ``8 * scale`` (peak); sizes resampled from ``sizes``."""
    lo, hi = 0.3 * scale, 8.0 * scale

    def rate(x: float) -> float:
        return lo + (hi - lo) * (1.0 - math.cos(2.0 * math.pi * x / duration)) / 2.0

    return _poisson(rate, duration, hi, _resample(sizes), seed)
