"""Deterministic fleet simulator for comparing autoscaling policies (pure Python, no I/O).

Replica model (one vLLM server, continuous batching with chunked prefill):

- A decode iteration over ``b`` running sequences takes ``step_base_s + step_per_seq_s*b``
  seconds and gives every running sequence one token, so TPOT grows with the batch.
- Prefill is packed into iterations of at most ``max_num_batched_tokens`` tokens
  (prompt chunks plus the ``b`` decode tokens); an iteration carrying ``p`` prompt tokens
  costs an extra ``prefill_s_per_token*p``, which is why heavy prompt traffic also slows
  the running sequences down (as in vLLM).
- A replica admits at most ``max_num_seqs`` requests; KV-cache blocks are reserved for
  prompt + output when a prefill starts and freed at completion
  (``kv_cache_usage`` = reserved / capacity).

Calibration (see the constants below):

- ``LLAMA3_8B_H100`` (BF16, 1x H100 80GB): 8 ms per output token at batch 1 and about
  13 ms at batch ~100, ~21 ms at 256; prefill 0.035 ms/token (~28k tokens/s, about 45%
  MFU at 16 GFLOP/token). On ShareGPT-shaped requests (~220 prompt / ~200 output
  tokens) it saturates at roughly 36 req/s (checked by ``tests/unit/
  test_autoscaling_sim.py``). These are the figures the issue quotes for vLLM on H100 and
  match the order of magnitude of vLLM's published v0.6.0 H100 benchmarks
  (blog.vllm.ai, 2024-09-05, Llama 3 8B on 1x H100, ShareGPT).
- ``LLAMA3_70B_4xH100`` (BF16, tensor parallel 4): an estimate from first principles, not a
  measurement. Decode is memory-bound: 140 GB of weights over 4 x 3.35 TB/s is 10.4 ms per
  iteration at best; with ~65% achieved bandwidth and all-reduce overhead, 17 ms at
  batch 1; each running sequence of ~1.3k context adds ~0.42 GB of KV reads (0.03 ms)
  plus overhead -> 0.05 ms per sequence. Prefill: 140 GFLOP/token on 4 x 989 TFLOPS at
  ~45% MFU -> 0.08 ms/token (~12.5k tokens/s). This lands in the 20-35 ms TPOT range
  reported for Llama-3-70B TP4 on H100 at moderate load (vLLM v0.6.0 blog, same source).

Cold start (``ColdStartModel``): node provisioning (90 s for a new GPU node, 0 on a warm
node) + image pull (size / bandwidth, 0 when pre-pulled) + weight load (weights GB /
bandwidth) + engine warm-up (CUDA graphs, compile cache).

The fleet simulation is event-driven over request arrivals and 1 s ticks; replicas are
advanced lazily and exactly between events (decode phases are continuous, prefill
iterations discrete). Requests go to the ready replica with the fewest outstanding
requests; when every ready replica holds ``max_num_seqs`` (or none is ready) they wait in
a gateway queue, which the controllers see as queued requests.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "LLAMA3_8B_H100",
    "LLAMA3_70B_4XH100",
    "TPOT_SLO_S",
    "TTFT_SLO_FLOOR_S",
    "ColdStartBreakdown",
    "ColdStartModel",
    "Controller",
    "FleetTick",
    "ReplicaModel",
    "Request",
    "SimResult",
    "SteadyState",
    "meets_slo",
    "simulate",
    "slo_attainment",
]

TPOT_SLO_S = 0.040
TTFT_SLO_FLOOR_S = 0.450


@dataclass(frozen=True, slots=True)
class SteadyState:
    """Analytic steady state of one replica at a given request rate."""

    tpot_s: float
    batch: float
    prefill_busy: float
    saturated: bool


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """Performance model of one model-server replica."""

    name: str
    gpus: int
    step_base_s: float
    step_per_seq_s: float
    prefill_s_per_token: float
    kv_capacity_tokens: int
    weights_gb: float
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192

    def decode_step_s(self, batch: int | float) -> float:
        """Time of one decode iteration (= TPOT without prefill interference)."""
        return self.step_base_s + self.step_per_seq_s * batch

    def prefill_s(self, prompt_tokens: int) -> float:
        """Prefill compute time of a prompt on an otherwise idle replica."""
        return self.prefill_s_per_token * prompt_tokens + self.step_base_s

    def steady_state(self, rate: float, mean_prompt: float, mean_output: float) -> SteadyState:
        """Fixed point of Little's law for a replica receiving ``rate`` req/s.

        Each request costs one prefill iteration (prompt compute + one decode step) and
        ``mean_output - 1`` decode iterations. Used by the oracle to size the fleet and
        by tests to check the calibration.
        """
        if rate <= 0:
            return SteadyState(self.decode_step_s(1), 0.0, 0.0, False)
        batch = 1.0
        tpot = self.decode_step_s(1)
        prefill_busy = 0.0
        for _ in range(200):
            step = self.decode_step_s(batch)
            prefill_busy = rate * (self.prefill_s_per_token * mean_prompt + step)
            if prefill_busy >= 1.0:
                return SteadyState(math.inf, float(self.max_num_seqs), prefill_busy, True)
            # Iterations per second: one per prefill plus decode-only ones in the rest.
            iters = rate + (1.0 - prefill_busy) / step
            tpot = 1.0 / iters
            new_batch = rate * max(mean_output - 1.0, 0.0) * tpot
            if new_batch > self.max_num_seqs:
                return SteadyState(tpot, float(self.max_num_seqs), prefill_busy, True)
            if abs(new_batch - batch) < 1e-6:
                batch = new_batch
                break
            batch = 0.5 * batch + 0.5 * new_batch
        return SteadyState(tpot, batch, prefill_busy, False)


LLAMA3_8B_H100 = ReplicaModel(
    name="llama-3-8b / 1xH100",
    gpus=1,
    step_base_s=0.0079,
    step_per_seq_s=0.000052,
    prefill_s_per_token=0.000035,
    kv_capacity_tokens=430_000,  # (80 GB * 0.9 - 16 GB) / 128 KiB per token
    weights_gb=16.0,
)

LLAMA3_70B_4XH100 = ReplicaModel(
    name="llama-3-70b / 4xH100 (TP4)",
    gpus=4,
    step_base_s=0.017,
    step_per_seq_s=0.00005,
    prefill_s_per_token=0.00008,
    kv_capacity_tokens=460_000,  # (4 * 80 GB * 0.9 - 140 GB) / 320 KiB per token
    weights_gb=140.0,
)


@dataclass(frozen=True, slots=True)
class ColdStartBreakdown:
    node_s: float
    image_s: float
    weights_s: float
    warmup_s: float

    @property
    def total_s(self) -> float:
        return self.node_s + self.image_s + self.weights_s + self.warmup_s


@dataclass(frozen=True, slots=True)
class ColdStartModel:
    """Time from "replica wanted" to "replica ready"."""

    node_provision_s: float = 90.0
    image_gb: float = 10.0
    image_pull_gb_per_s: float = 0.5
    weight_load_gb_per_s: float = 2.0
    #: Weights already on the node's local NVMe (NodeLocal preload): read, not downloaded.
    local_weight_load_gb_per_s: float = 6.0
    engine_warmup_s: float = 30.0

    def breakdown(
        self,
        weights_gb: float,
        *,
        warm_node: bool = False,
        image_cached: bool = False,
        weights_cached: bool = False,
    ) -> ColdStartBreakdown:
        bw = self.local_weight_load_gb_per_s if weights_cached else self.weight_load_gb_per_s
        return ColdStartBreakdown(
            node_s=0.0 if warm_node else self.node_provision_s,
            image_s=0.0 if image_cached else self.image_gb / self.image_pull_gb_per_s,
            weights_s=weights_gb / bw,
            warmup_s=self.engine_warmup_s,
        )

    def seconds(
        self,
        weights_gb: float,
        *,
        warm_node: bool = False,
        image_cached: bool = False,
        weights_cached: bool = False,
    ) -> float:
        return self.breakdown(
            weights_gb,
            warm_node=warm_node,
            image_cached=image_cached,
            weights_cached=weights_cached,
        ).total_s


class Request:
    """One request of a trace, and what happened to it."""

    __slots__ = (
        "arrival",
        "d0",
        "dispatched",
        "finish",
        "first_token",
        "output_tokens",
        "prefill_left",
        "prompt_tokens",
    )

    def __init__(self, arrival: float, prompt_tokens: int, output_tokens: int) -> None:
        self.arrival = arrival
        self.prompt_tokens = max(1, prompt_tokens)
        self.output_tokens = max(1, output_tokens)
        self.dispatched = math.nan
        self.first_token = math.nan
        self.finish = math.nan
        self.prefill_left = self.prompt_tokens
        self.d0 = 0.0

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def tpot(self) -> float:
        if self.output_tokens <= 1:
            return 0.0
        return (self.finish - self.first_token) / (self.output_tokens - 1)


class _Replica:
    __slots__ = (
        "clock",
        "counter",
        "created",
        "draining",
        "gen_done",
        "heap",
        "kv_reserved",
        "model",
        "prefill_q",
        "prompt_done",
        "ready_at",
        "seq",
        "success",
        "sum_d0",
    )

    def __init__(self, model: ReplicaModel, created: float, ready_at: float) -> None:
        self.model = model
        self.created = created
        self.ready_at = ready_at
        self.draining = False
        self.clock = ready_at
        self.counter = 0.0  # decode iterations done (virtual token clock)
        self.heap: list[tuple[float, int, Request]] = []
        self.prefill_q: deque[Request] = deque()
        self.kv_reserved = 0
        self.seq = 0
        self.sum_d0 = 0.0
        self.gen_done = 0.0
        self.prompt_done = 0.0
        self.success = 0

    @property
    def outstanding(self) -> int:
        return len(self.heap) + len(self.prefill_q)

    def generation_total(self) -> float:
        return self.gen_done + len(self.heap) * self.counter - self.sum_d0

    def _finish(self, req: Request, t: float) -> None:
        req.finish = t
        self.kv_reserved -= req.prompt_tokens + req.output_tokens
        self.success += 1

    def _decode_until(self, end: float) -> None:
        m = self.model
        while self.clock < end and self.heap:
            step = m.decode_step_s(len(self.heap))
            target = self.heap[0][0]
            need = (target - self.counter) * step
            if self.clock + need <= end:
                self.clock += max(need, 0.0)
                self.counter = max(self.counter, target)
                _, _, req = heapq.heappop(self.heap)
                self.sum_d0 -= req.d0
                self.gen_done += req.output_tokens - 1
                self._finish(req, self.clock)
            else:
                self.counter += (end - self.clock) / step
                self.clock = end
        self.clock = max(self.clock, end)

    def advance(self, end: float) -> None:
        """Simulate this replica up to time ``end``."""
        m = self.model
        while self.clock < end:
            q = self.prefill_q
            if q and q[0].dispatched <= self.clock:
                head = q[0]
                if head.prefill_left == head.prompt_tokens and (
                    self.kv_reserved + head.prompt_tokens + head.output_tokens
                    > m.kv_capacity_tokens
                ):
                    if not self.heap:  # cannot ever fit: serve anyway
                        pass
                    else:
                        self._decode_until(min(end, self.clock + m.decode_step_s(len(self.heap))))
                        continue
                b = len(self.heap)
                budget = max(1, m.max_num_batched_tokens - b)
                tokens = 0
                done: list[Request] = []
                for req in q:
                    if req.dispatched > self.clock or tokens >= budget:
                        break
                    if req.prefill_left == req.prompt_tokens:
                        need_kv = req.prompt_tokens + req.output_tokens
                        if self.kv_reserved + need_kv > m.kv_capacity_tokens and (
                            self.heap or done or tokens
                        ):
                            break
                        self.kv_reserved += need_kv
                    take = min(req.prefill_left, budget - tokens)
                    req.prefill_left -= take
                    tokens += take
                    if req.prefill_left == 0:
                        done.append(req)
                    else:
                        break
                self.clock += m.decode_step_s(b) + m.prefill_s_per_token * tokens
                self.counter += 1.0
                for _ in done:
                    q.popleft()
                for req in done:
                    req.first_token = self.clock
                    self.prompt_done += req.prompt_tokens
                    if req.output_tokens <= 1:
                        self.gen_done += 1
                        self._finish(req, self.clock)
                    else:
                        self.gen_done += 1
                        req.d0 = self.counter
                        self.sum_d0 += req.d0
                        self.seq += 1
                        heapq.heappush(
                            self.heap, (self.counter + req.output_tokens - 1, self.seq, req)
                        )
                # completions reached by this iteration
                while self.heap and self.heap[0][0] <= self.counter + 1e-9:
                    _, _, req = heapq.heappop(self.heap)
                    self.sum_d0 -= req.d0
                    self.gen_done += req.output_tokens - 1
                    self._finish(req, self.clock)
            else:
                nxt = end
                if q:
                    nxt = min(end, max(q[0].dispatched, self.clock))
                if self.heap:
                    self._decode_until(nxt)
                else:
                    self.clock = nxt

    def admit(self, req: Request, t: float) -> None:
        req.dispatched = t
        self.prefill_q.append(req)


@dataclass(frozen=True, slots=True)
class FleetTick:
    """What a controller can observe once per second (fleet totals)."""

    t: float
    current: int  # replicas asked for (starting + ready), excluding draining ones
    ready: int
    running: int
    waiting: int  # waiting inside replicas
    gateway_queue: int
    concurrency_avg: float  # time-averaged in-flight requests over the last second
    arrivals_total: int
    success_total: int
    prompt_tokens_total: float
    generation_tokens_total: float
    kv_cache_usage_avg: float


class Controller(Protocol):
    """An autoscaling algorithm under test."""

    name: str
    sync_s: float

    def observe(self, tick: FleetTick) -> None: ...

    def desired(self, now: float, current: int, ready: int) -> int: ...


@dataclass(slots=True)
class SimResult:
    name: str
    requests: list[Request]
    gpu_seconds: float
    cold_starts: int
    scale_events: int
    reversals: int
    replica_timeline: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0


def meets_slo(req: Request, model: ReplicaModel) -> bool:
    """TTFT <= max(450 ms, 3x isolated prefill) and TPOT <= 40 ms."""
    if math.isnan(req.finish):
        return False
    ttft_slo = max(TTFT_SLO_FLOOR_S, 3.0 * model.prefill_s(req.prompt_tokens))
    return req.ttft <= ttft_slo and req.tpot <= TPOT_SLO_S


def slo_attainment(result: SimResult, model: ReplicaModel) -> float:
    reqs = result.requests
    if not reqs:
        return 1.0
    return sum(1 for r in reqs if meets_slo(r, model)) / len(reqs)


def simulate(
    trace: Sequence[tuple[float, int, int]],
    controller: Controller,
    model: ReplicaModel,
    cold_start_s: float,
    *,
    initial_replicas: int,
    horizon_s: float | None = None,
    drain_s: float = 900.0,
    warmup_s: float = 60.0,
    on_tick: Callable[[FleetTick], None] | None = None,
) -> SimResult:
    """Replay ``trace`` ((arrival s, prompt tokens, output tokens), sorted) against a
    fleet driven by ``controller``. Initial replicas are ready at t=0; every later
    replica takes ``cold_start_s``. Controllers observe from t=0 but first decide at
    ``warmup_s`` (so nobody scales on the empty fleet of t=0). GPU time counts from the scale-up decision until a
    replica is removed (drained), up to ``horizon_s`` (default: last arrival)."""
    requests = [Request(a, p, o) for a, p, o in trace]
    horizon = horizon_s if horizon_s is not None else (requests[-1].arrival if requests else 0.0)
    end_all = horizon + drain_s
    replicas: list[_Replica] = [_Replica(model, 0.0, 0.0) for _ in range(initial_replicas)]
    retired: list[_Replica] = []
    retired_at: list[float] = []
    gateway: deque[Request] = deque()
    cold_starts = 0
    scale_events = 0
    reversals = 0
    last_dir = 0
    timeline: list[tuple[float, int, int]] = []
    arrivals = 0
    inflight_area = 0.0
    last_event_t = 0.0
    finished_before = 0
    retired_prompt = 0.0
    retired_gen = 0.0
    next_sync = warmup_s

    def ready_list(t: float) -> list[_Replica]:
        return [r for r in replicas if not r.draining and r.ready_at <= t]

    def dispatch(t: float) -> None:
        if not gateway:
            return
        ready = ready_list(t)
        if not ready:
            return
        for r in ready:
            r.advance(t)
        while gateway:
            best = min(ready, key=lambda r: r.outstanding)
            if best.outstanding >= model.max_num_seqs:
                return
            best.admit(gateway.popleft(), t)

    def finished_count() -> int:
        n = finished_before
        for r in replicas:
            n += r.success
        return n

    def tick(t: float) -> None:
        nonlocal next_sync, scale_events, reversals, last_dir, cold_starts
        nonlocal inflight_area, last_event_t, finished_before, retired_prompt, retired_gen
        for r in replicas:
            r.advance(t)
        # retire drained replicas
        for r in list(replicas):
            if r.draining and r.outstanding == 0:
                replicas.remove(r)
                retired.append(r)
                retired_at.append(t)
                finished_before += r.success
                retired_prompt += r.prompt_done
                retired_gen += r.gen_done
        dispatch(t)
        done = finished_count()
        inflight = arrivals - done
        inflight_area += inflight * (t - last_event_t)
        last_event_t = t
        ready = ready_list(t)
        active = [r for r in replicas if not r.draining]
        tk = FleetTick(
            t=t,
            current=len(active),
            ready=len(ready),
            running=sum(len(r.heap) for r in ready),
            waiting=sum(len(r.prefill_q) for r in ready),
            gateway_queue=len(gateway),
            concurrency_avg=inflight_area,
            arrivals_total=arrivals,
            success_total=done,
            prompt_tokens_total=sum(r.prompt_done for r in replicas) + retired_prompt,
            generation_tokens_total=sum(r.generation_total() for r in replicas) + retired_gen,
            kv_cache_usage_avg=(
                sum(r.kv_reserved for r in ready) / (len(ready) * model.kv_capacity_tokens)
                if ready
                else 0.0
            ),
        )
        inflight_area = 0.0
        controller.observe(tk)
        if on_tick is not None:
            on_tick(tk)
        if t + 1e-9 < next_sync or t > horizon:
            return
        next_sync = t + controller.sync_s
        want = max(0, controller.desired(t, len(active), len(ready)))
        have = len(active)
        if want == have:
            timeline.append((t, have, len(ready)))
            return
        direction = 1 if want > have else -1
        scale_events += 1
        if last_dir and direction != last_dir:
            reversals += 1
        last_dir = direction
        if want > have:
            for _ in range(want - have):
                replicas.append(_Replica(model, t, t + cold_start_s))
                cold_starts += 1
        else:
            drop = have - want
            starting = sorted(
                (r for r in active if r.ready_at > t), key=lambda r: r.created, reverse=True
            )
            for r in starting[:drop]:
                r.draining = True
            drop -= min(drop, len(starting))
            if drop:
                serving = sorted(
                    (r for r in active if r.ready_at <= t), key=lambda r: r.outstanding
                )
                for r in serving[:drop]:
                    r.draining = True
            for r in replicas:
                if r.draining and r.ready_at > t:
                    # a replica still starting is cancelled at once
                    r.ready_at = t
        timeline.append((t, want, len(ready)))

    t_tick = 0.0
    i = 0
    n = len(requests)
    while True:
        next_arrival = requests[i].arrival if i < n else math.inf
        if t_tick <= next_arrival:
            if t_tick > end_all:
                break
            tick(t_tick)
            idle = i >= n and not gateway and all(r.outstanding == 0 for r in replicas)
            if idle and t_tick >= horizon:
                break
            t_tick += 1.0
            continue
        req = requests[i]
        i += 1
        t = req.arrival
        done = finished_count()
        inflight_area += (arrivals - done) * (t - last_event_t)
        last_event_t = t
        arrivals += 1
        gateway.append(req)
        dispatch(t)

    gpu_s = 0.0
    for r, t_end in zip(retired, retired_at, strict=True):
        gpu_s += (min(t_end, horizon) - min(r.created, horizon)) * model.gpus
    for r in replicas:
        gpu_s += (horizon - min(r.created, horizon)) * model.gpus
    return SimResult(
        name=controller.name,
        requests=requests,
        gpu_seconds=gpu_s,
        cold_starts=cold_starts,
        scale_events=scale_events,
        reversals=reversals,
        replica_timeline=timeline,
    )
