"""Sensitivity of modelplane's policy to its main parameters, across the workload suite.

Each variant changes one or two settings of the benchmark's modelplane policy and is
replayed on every family (same setup as ``benchmarks.autoscaling.run``: from ``min``,
ramp-in, gateway queue, same scoring). Run from the repository root::

    uv run python -m benchmarks.autoscaling.sensitivity                 # the doc's table
    uv run python -m benchmarks.autoscaling.sensitivity --only bursty   # some families

A default is justified only by the whole row (every family and the aggregate), never by
one column.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.autoscaling import run, workloads
from modelplane.autoscaling.policy import AutoscalingPolicy
from modelplane_testbed.baselines import PolicyController

#: variant name -> changes to ``run.policy_settings()`` (``None`` unsets a target)
_PREFILL = run.prefill_capacity(run.MODEL)
_DECODE = run.decode_capacity(run.MODEL)

VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "chosen: tokens 25% / 50% + up median + forecast 180 s": {},
    "last session: concurrency 16 + up minimum + no forecast": {
        "prompt_tokens_per_second": None,
        "tokens_generated_per_second": None,
        "concurrent_requests": 16.0,
        "scale_up_quantile": 0.0,
        "forecast_horizon": 0.0,
    },
    "prompt target 15% of prefill capacity": {"prompt_tokens_per_second": 0.15 * _PREFILL},
    "prompt target 35%": {"prompt_tokens_per_second": 0.35 * _PREFILL},
    "decode target 30% of full-batch throughput": {"tokens_generated_per_second": 0.3 * _DECODE},
    "decode target 70%": {"tokens_generated_per_second": 0.7 * _DECODE},
    "+ concurrency 64": {"concurrent_requests": 64.0},
    "up minimum (quantile 0)": {"scale_up_quantile": 0.0},
    "no forecast": {"forecast_horizon": 0.0},
    "forecast 300 s": {"forecast_horizon": 300.0},
    "forecast + 1 sd standby": {"forecast_sigmas": 1.0},
    "fast path off": {"fast_path_queue_per_replica": None},
}


def policy_for(changes: Mapping[str, Any]) -> AutoscalingPolicy:
    return AutoscalingPolicy(**{**run.policy_settings(), **changes})


def measure(
    variants: Mapping[str, Mapping[str, Any]], only: set[str]
) -> tuple[list[str], dict[str, list[tuple[float, float, int]]]]:
    """Per variant, per family: (attainment, GPU-hours, scored requests)."""
    score_from = run.WARMUP_S + run.COLD_START.seconds(run.MODEL.weights_gb)
    families: list[str] = []
    out: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
    for name, _, trace in run.suite(run.DEFAULT_TRACE, False):
        if only and name not in only:
            continue
        families.append(name)
        ramped = workloads.ramp_in(trace, run.RAMP_S)
        for v, changes in variants.items():
            res = run._sim(ramped, PolicyController(policy_for(changes)), ramped[-1][0])
            att, _, n = run._score(res, score_from)
            out[v].append((att, res.gpu_hours, n))
            print(f"{v:28s} {name:14s} {100 * att:6.2f}% {res.gpu_hours:7.1f} GPU-h", flush=True)
    return families, out


def table(families: Sequence[str], out: Mapping[str, list[tuple[float, float, int]]]) -> str:
    head = "| variant | " + " | ".join(families) + " | aggregate |"
    lines = [head, "|---|" + "---:|" * (len(families) + 1)]
    for v, cells in out.items():
        n = sum(c[2] for c in cells)
        agg_att = sum(c[0] * c[2] for c in cells) / max(n, 1)
        agg_gpu = sum(c[1] for c in cells)
        row = [f"{100 * a:.1f}% / {g:.1f}" for a, g, _ in cells]
        lines.append(f"| {v} | " + " | ".join(row) + f" | {100 * agg_att:.2f}% / {agg_gpu:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--only", default="", help="comma-separated family names to run")
    ap.add_argument("--variants", default="", help="comma-separated variant names to run")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    pick = {x.strip() for x in args.variants.split(",") if x.strip()}
    unknown = pick - set(VARIANTS)
    if unknown:
        print(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    variants = {k: v for k, v in VARIANTS.items() if not pick or k in pick}
    t0 = time.perf_counter()
    families, out = measure(variants, only)
    text = table(families, out)
    print()
    print(text)
    print(f"\n(simulated in {time.perf_counter() - t0:.0f} s)")
    if args.write:
        write(text, " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


def write(text: str, args: str) -> None:
    """The table as the ``autoscaling-sensitivity`` section of docs/benchmarks.md."""
    from benchmarks.report import write_section

    write_section(
        "autoscaling-sensitivity",
        "### Autoscaling: sensitivity of the policy's parameters\n\n"
        "Reproduce:\n\n```sh\n"
        f"uv run python -m benchmarks.autoscaling.sensitivity {args}\n```\n\n"
        "Each cell is modelplane's SLO attainment / GPU-hours on that family, the first row "
        "being the benchmark's settings and every other row changing one of them (same setup "
        "as the autoscaling benchmark above). The aggregate pools attainment over the scored "
        "requests and sums GPU-hours.\n\n" + text,
    )


if __name__ == "__main__":
    raise SystemExit(main())
