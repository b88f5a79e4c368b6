"""Autoscaling benchmark: replay traces against modelplane's policy and baselines.

Run from the repository root::

    uv run python -m benchmarks.autoscaling.run            # full run, writes the doc
    uv run python -m benchmarks.autoscaling.run --quick    # smoke run (~seconds)

Traces:

- ``conv``: the Azure LLM inference trace 2023 (conversation service), the whole hour as
  recorded (no time scaling), read from ``../shared/data/azure-llm-inference-2023/conv.csv``
  next to the repository (``--trace`` overrides).
- ``bursty`` (seeded): 1 h, Poisson at 2 req/s with 3-6 min bursts to 3x every ~12 min
  and 20 s spikes to 4x in between.
- ``diurnal`` (seeded): a day compressed into 3 h (time-scaled x8): Poisson with a
  rate following a cosine from 0.3 req/s (night) to 8 req/s (peak).

Synthetic traces draw prompt/output lengths from the conv trace. Every policy sees the
same trace, replica model (Llama-3-70B on 4x H100), cold-start model, min 1 / max 16
replicas, and starts with the replicas the oracle needs at t=0, already warm.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from modelplane.autoscaling.policy import AutoscalingPolicy
from modelplane_testbed.baselines import (
    HpaController,
    KpaController,
    OracleController,
    PolicyController,
    StaticController,
)
from modelplane_testbed.simulator import (
    LLAMA3_70B_4XH100,
    ColdStartModel,
    Controller,
    ReplicaModel,
    SimResult,
    simulate,
    slo_attainment,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = REPO_ROOT / ".." / "shared" / "data" / "azure-llm-inference-2023" / "conv.csv"
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"

Trace = list[tuple[float, int, int]]

MODEL: ReplicaModel = LLAMA3_70B_4XH100
COLD_START = ColdStartModel()
MIN_REPLICAS = 1
MAX_REPLICAS = 16
HPA_KPA_TARGET = 16.0

# modelplane's policy as benchmarked: Fireworks default windows and the same per-replica
# concurrency target the HPA and KPA baselines get, so the comparison is about the
# algorithms, not the targets.
OUR_POLICY = AutoscalingPolicy(
    min_replicas=MIN_REPLICAS,
    max_replicas=MAX_REPLICAS,
    scale_up_window=30.0,
    scale_down_window=600.0,
    concurrent_requests=HPA_KPA_TARGET,
)


def load_conv(path: Path, window_s: float | None = None) -> Trace:
    """Read conv.csv as (seconds since first request, prompt tokens, output tokens)."""
    rows: Trace = []
    t0: float | None = None
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        if header[:3] != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise SystemExit(f"{path}: unexpected header {header}")
        for line in fh:
            ts, ctx, gen = line.strip().split(",")
            # 7 fractional digits: keep microseconds for fromisoformat
            stamp = datetime.fromisoformat(ts[:26]).timestamp()
            if t0 is None:
                t0 = stamp
            t = stamp - t0
            if window_s is not None and t > window_s:
                break
            rows.append((t, int(ctx), int(gen)))
    rows.sort()
    return rows


def _poisson(
    rate_fn: object, duration: float, peak: float, sizes: Sequence[tuple[int, int]], seed: int
) -> Trace:
    """Non-homogeneous Poisson arrivals by thinning; sizes resampled from ``sizes``."""
    assert callable(rate_fn)
    rng = random.Random(seed)
    out: Trace = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            return out
        if rng.random() * peak <= rate_fn(t):
            p, o = sizes[rng.randrange(len(sizes))]
            out.append((t, p, o))


def bursty_trace(sizes: Sequence[tuple[int, int]], duration: float, seed: int = 7) -> Trace:
    rng = random.Random(seed)
    base = 2.0
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

    return _poisson(rate, duration, base * 4.0, sizes, seed + 1)


def diurnal_trace(sizes: Sequence[tuple[int, int]], duration: float, seed: int = 11) -> Trace:
    lo, hi = 0.3, 8.0

    def rate(x: float) -> float:
        return lo + (hi - lo) * (1.0 - math.cos(2.0 * math.pi * x / duration)) / 2.0

    return _poisson(rate, duration, hi, sizes, seed)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    attainment: float
    gpu_hours: float
    cold_starts: int
    scale_events: int
    reversals: int


ORACLE_GRID = [(f, b) for f in (0.9, 0.8, 0.7, 0.6) for b in (0.8, 0.7, 0.6, 0.5, 0.4)]


def tuned_oracle(trace: Trace, cold: float, slo_goal: float = 0.99) -> OracleController:
    """The cheapest perfect-foresight schedule (over a grid of sizing margins) whose
    replay meets ``slo_goal``; if none does, the one with the best attainment."""
    best: tuple[float, float, OracleController] | None = None
    for tpot_fraction, busy in ORACLE_GRID:
        o = OracleController(
            trace,
            MODEL,
            cold,
            min_replicas=MIN_REPLICAS,
            max_replicas=MAX_REPLICAS,
            tpot_fraction=tpot_fraction,
            max_prefill_busy=busy,
        )
        res = simulate(trace, o, MODEL, cold, initial_replicas=o.initial(), horizon_s=trace[-1][0])
        att = slo_attainment(res, MODEL)
        # rank: meeting the goal first, then fewer GPU-hours (or higher attainment)
        key = (0.0, res.gpu_hours) if att >= slo_goal else (1.0, -att)
        if best is None or key < (best[0], best[1]):
            best = (key[0], key[1], o)
    assert best is not None
    return best[2]


def run_trace(trace: Trace) -> list[Row]:
    cold = COLD_START.seconds(MODEL.weights_gb)
    oracle = tuned_oracle(trace, cold)
    initial = oracle.initial()
    horizon = trace[-1][0]
    controllers: list[Controller] = [
        PolicyController(OUR_POLICY),
        StaticController(max(MIN_REPLICAS, min(MAX_REPLICAS, oracle.peak()))),
        HpaController(target=HPA_KPA_TARGET, min_replicas=MIN_REPLICAS, max_replicas=MAX_REPLICAS),
        KpaController(target=HPA_KPA_TARGET, min_replicas=MIN_REPLICAS, max_replicas=MAX_REPLICAS),
        KpaController(
            target=HPA_KPA_TARGET,
            target_utilization=1.0,
            min_replicas=MIN_REPLICAS,
            max_replicas=MAX_REPLICAS,
            name="kpa-util100",
        ),
        oracle,
    ]
    rows: list[Row] = []
    for c in controllers:
        start = initial if not isinstance(c, StaticController) else c.replicas
        res: SimResult = simulate(trace, c, MODEL, cold, initial_replicas=start, horizon_s=horizon)
        rows.append(
            Row(
                name=c.name,
                attainment=slo_attainment(res, MODEL),
                gpu_hours=res.gpu_hours,
                cold_starts=res.cold_starts,
                scale_events=res.scale_events,
                reversals=res.reversals,
            )
        )
    return rows


def _by(rows: Sequence[Row], name: str) -> Row:
    return next(r for r in rows if r.name == name)


def table(title: str, trace: Trace, rows: Sequence[Row]) -> str:
    oracle, kpa = _by(rows, "oracle"), _by(rows, "kpa")
    dur = trace[-1][0] if trace else 0.0
    lines = [
        f"### {title} ({len(trace)} requests, {dur / 60:.0f} min)",
        "",
        "| policy | SLO attainment | GPU-hours | GPU-h / oracle | GPU-h / KPA | "
        "SLO / KPA | cold starts | scale events | reversals |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {100 * r.attainment:.2f}% | {r.gpu_hours:.1f} | "
            f"{r.gpu_hours / oracle.gpu_hours:.2f} | {r.gpu_hours / kpa.gpu_hours:.2f} | "
            f"{r.attainment / kpa.attainment:.3f} | {r.cold_starts} | {r.scale_events} | "
            f"{r.reversals} |"
        )
    return "\n".join(lines)


def run(trace_path: Path, quick: bool) -> dict[str, tuple[Trace, list[Row]]]:
    conv = load_conv(trace_path, window_s=1200.0 if quick else None)
    sizes = [(p, o) for _, p, o in conv]
    traces = {
        "conv": conv,
        "bursty": bursty_trace(sizes, 1200.0 if quick else 3600.0),
        "diurnal": diurnal_trace(sizes, 5400.0 if quick else 3 * 3600.0),
    }
    return {name: (tr, run_trace(tr)) for name, tr in traces.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="path to conv.csv")
    ap.add_argument("--quick", action="store_true", help="short smoke run; no doc written")
    ap.add_argument("--no-write", action="store_true", help="do not write the doc")
    args = ap.parse_args(argv)
    trace_path: Path = args.trace.resolve()
    if not trace_path.is_file():
        print(f"trace not found: {trace_path} (use --trace PATH)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = run(trace_path, args.quick)
    elapsed = time.perf_counter() - t0
    titles = {
        "conv": "Azure conv trace (2023-11-16)",
        "bursty": "Synthetic bursty (seed 7)",
        "diurnal": "Synthetic diurnal (seed 11, one compressed day)",
    }
    out = "\n\n".join(table(titles[k], tr, rows) for k, (tr, rows) in results.items())
    print(out)
    print(f"\n(simulated in {elapsed:.0f} s)")
    if not args.quick and not args.no_write:
        from benchmarks.report import write_section

        write_section(
            "autoscaling", render_doc(out).replace("\n# ", "\n## ", 1).replace("# ", "## ", 1)
        )
        print(f"wrote {DOC_PATH.relative_to(REPO_ROOT)}")
    return 0


def render_doc(tables: str) -> str:
    return DOC_TEMPLATE.replace("{{TABLES}}", tables)


DOC_TEMPLATE = """# Autoscaling benchmark

Reproduce (pure Python, ~15 s on one core; the results below are deterministic):

```sh
uv run python -m benchmarks.autoscaling.run          # writes this file
uv run python -m benchmarks.autoscaling.run --quick  # smoke run, prints only
```

The conv trace is read from `../shared/data/azure-llm-inference-2023/conv.csv` next to
the repository (`--trace PATH` to override): the whole hour (19,366 requests, 58 min),
real time, no scaling. The synthetic traces are seeded: *bursty* (1 h, Poisson 2 req/s
with 3-6 min bursts to 3x and 20 s spikes to 4x) and *diurnal* (a day compressed into
3 h, rate on a cosine between 0.3 and 8 req/s); both draw prompt/output lengths from the
conv trace.

## Setup (identical for every policy)

- Replica: Llama-3-70B BF16 on 4x H100 (TP4), `modelplane_testbed.simulator.
  LLAMA3_70B_4XH100`: 17 ms per decode iteration + 0.05 ms per running sequence,
  prefill 0.08 ms/token, chunked prefill with 8192-token iterations, 256 sequences max.
  (Estimated from memory bandwidth and FLOPs; see the module docstring. The 8B model in
  the same module is calibrated to ~36 req/s saturation and 8-13 ms TPOT.)
- Cold start for every new replica: 90 s node + 20 s image pull (10 GB at 0.5 GB/s) +
  70 s weights (140 GB at 2 GB/s) + 30 s engine warm-up = **210 s**. GPU time is billed
  from the scale-up decision until a replica is drained and removed.
- Routing to the ready replica with the fewest outstanding requests; a gateway queue when
  all are full or none is ready. Replicas min 1, max 16. Every policy starts with the
  replicas the oracle wants at t=0, warm; nobody decides before t=60 s.
- SLO per request: TTFT <= max(450 ms, 3x its isolated prefill time) **and** mean TPOT
  <= 40 ms. Attainment = share of requests meeting both.

## Policies

- **modelplane**: `policy.decide` with the Fireworks defaults (30 s up window = min
  recommendation over 30 s, with a fast path when >= 4 requests per ready replica wait;
  10 min down window = max recommendation over 10 min; scale-to-zero unused since
  min is 1), load target `concurrentRequests: 16` (the same target as HPA and KPA);
  scrape every 5 s (instantaneous gauges, counter rates between scrapes), decide every 5 s.
- **static-peak**: the oracle's peak replica count for the whole run.
- **hpa**: Kubernetes HPA v2 on a Pods metric (in-flight requests per pod, target 16):
  15 s sync, 10% tolerance, unready pods counted as 0 on scale-up and missing pods as
  at-target on scale-down, 300 s scale-down stabilization (max of recommendations),
  default rate limits (up max(+100%, +4 pods)/15 s).
- **kpa**: Knative KPA with target concurrency 16 and Knative's default target
  utilization 70% (so 11.2 per pod), 60 s stable / 6 s panic windows over per-second
  concurrency averages (activator-buffered requests included), panic at 200%, no
  scale-down while panicking, max scale-up rate 1000x, max scale-down rate 2x, 2 s tick.
  **kpa-util100** is the same with 100% utilization (an equal per-pod target).
- **oracle**: perfect foresight. For each 30 s bucket it sizes the fleet from the replica
  model's analytic steady state (smallest n with TPOT <= f x 40 ms and prefill busy <= b)
  and asks at t for the largest need in [t, t + cold start + 30 s]. (f, b) is chosen per
  trace as the cheapest pair on a grid whose replay reaches 99% attainment, i.e. the
  oracle is the cheapest foresight schedule meeting the 99% SLO, not an unreachable bound.

Scale events count changes of the desired replica count; reversals count changes of
direction between consecutive events.

## Results

{{TABLES}}

## Reading the numbers

- conv (the target trace): modelplane reaches >= 99% attainment at about the oracle's
  GPU-hours and under 0.9x the KPA's, with no cold start at all; the KPA's 60 s window
  scales down between the trace's minute-scale fluctuations and pays 210 s cold starts
  back. Margins are thin: 99.02% against the 99% goal and 0.88x against 0.9x. Note that
  on this trace modelplane never changed the count: it kept the 3 replicas it started
  with, because the 10 min down window always held a minute that needed 3. So here it is
  right-sized static capacity, and what it shows is that it did not flap. static-peak
  uses the oracle's peak of 4 replicas.
- diurnal: about half the GPU-hours of static peak provisioning. Attainment is slightly
  below HPA/KPA (about 0.5 points): the 30 s up window adds 30 s to every 210 s cold
  start on the morning ramp.
- bursty: 3-6 minute bursts are shorter than cold start + windows, so every reactive
  policy (modelplane, HPA, KPA) misses them; only foresight or static peak capacity
  meets the SLO there. modelplane does it with far fewer cold starts and scale events
  than the KPA and fewer GPU-hours than HPA; warm nodes / pre-pulled images (shorter cold
  starts) are the lever for this shape, not the policy.
- Ratios, not timings, are the result: the simulator is a model (see
  `operator/modelplane/autoscaling/simulator.py`), not a measurement of real GPUs.
"""


if __name__ == "__main__":
    raise SystemExit(main())
