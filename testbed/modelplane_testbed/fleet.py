"""A simulated vLLM engine fleet for the local cluster (KWOK pods run no containers).

The fleet watches model-server pods (label ``modelplane.io/deployment``) and gives every Ready
pod a simulated replica built on ``simulator``'s replica model (continuous batching, prefill
interference, KV-cache reservation), so capacity and latency behave as in the autoscaling
benchmarks. It generates load for each ModelDeployment, routes requests to the deployment's
ready replicas (fewest outstanding requests first; a gateway queue holds what no replica can
take), and serves what a real engine would expose:

- ``GET  /metrics/<ns>/<pod>``: Prometheus text with vLLM's metric names
  (``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``,
  ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
  ``vllm:request_success_total``; labels ``model_name`` and ``engine``);
- ``POST /pods/<ns>/<pod>/v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``,
  ``POST /pods/<ns>/<pod>/v1/unload_lora_adapter`` ``{"lora_name"}`` and
  ``GET /pods/<ns>/<pod>/v1/models``: vLLM's runtime LoRA API (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``).
  A ``lora_path`` containing ``does-not-exist`` fails with 404, as an adapter that cannot be
  downloaded does.

Load is controlled at runtime:

- ``PUT /load/<ns>/<name>`` ``{"requestsPerSecond": 20, "promptTokens": 220, "outputTokens": 200}``
  (Poisson arrivals; omitted fields keep their value), ``GET`` reads it back with the gateway
  queue and counters, ``DELETE`` stops it; ``GET /load`` lists every deployment;
- ``--rate-file F`` (YAML or JSON, re-read when it changes): ``{"ns/name": {...}}`` for a
  constant load, or ``{"ns/name": [{"at": 0, "requestsPerSecond": 5}, {"at": 60, ...}]}`` for
  steps at seconds since the fleet started;
- ``--trace conv.csv --trace-deployment ns/name``: replay the Azure LLM inference trace
  (``TIMESTAMP,ContextTokens,GeneratedTokens``) or a ``seconds,prompt,output`` CSV, optionally
  sped up with ``--trace-speed``.

Time is real time, advanced in fixed ticks (``--tick``, default 0.5 s). The process binds
127.0.0.1 only, prints ``FLEET_URL=http://127.0.0.1:<port>`` on stdout once it serves, and
exits on SIGTERM/SIGINT, when its parent dies (``PR_SET_PDEATHSIG`` plus a ``getppid`` check)
or after ``--ttl`` seconds.

Run it with::

    python -m modelplane_testbed.fleet --kubeconfig K --port 0 [--namespace NS] ...

This module is tooling for the local cluster, not part of the operator: the Kubernetes client
is only imported by the pod watcher.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

# The fleet reuses the benchmark simulator's replica implementation so that a simulated pod
# behaves exactly like a replica in the offline benchmarks (same model, same code).
from modelplane_testbed.simulator import (
    LLAMA3_8B_H100,
    LLAMA3_70B_4XH100,
    ReplicaModel,
    Request,
    _Replica,
)

__all__ = [
    "LABEL_DEPLOYMENT",
    "REPLICA_MODELS",
    "Fleet",
    "FleetError",
    "LoadSpec",
    "PodInfo",
    "load_trace",
    "main",
    "pod_info",
    "serve",
]

log = logging.getLogger("modelplane.fleet")

LABEL_DEPLOYMENT = "modelplane.io/deployment"
REPLICA_MODELS: Mapping[str, ReplicaModel] = {
    "llama3-8b-h100": LLAMA3_8B_H100,
    "llama3-70b-4xh100": LLAMA3_70B_4XH100,
}
NOT_FOUND_MARKER = "does-not-exist"

Key = tuple[str, str]  # (namespace, name)


class FleetError(Exception):
    """A request the fleet refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind

    def body(self) -> dict[str, Any]:
        # vLLM's ErrorResponse shape
        return {"object": "error", "message": str(self), "type": self.kind, "code": self.status}


# --------------------------------------------------------------------------- load
@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Open-loop load for one deployment: Poisson arrivals of fixed mean size.

    Each request's prompt and output lengths are drawn uniformly in [0.5, 1.5] x the mean,
    so completions do not arrive in lock-step.
    """

    requests_per_second: float = 0.0
    prompt_tokens: int = 220
    output_tokens: int = 200

    _FIELDS = (
        ("requestsPerSecond", "requests_per_second"),
        ("promptTokens", "prompt_tokens"),
        ("outputTokens", "output_tokens"),
    )

    def updated(self, data: Mapping[str, Any]) -> LoadSpec:
        """This spec with the camelCase fields of ``data`` applied (others kept)."""
        if not isinstance(data, Mapping):
            raise FleetError(400, "the load must be a JSON object")
        known = {api for api, _ in self._FIELDS} | {"at"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FleetError(
                400,
                f"unknown load field(s) {unknown}; use requestsPerSecond, promptTokens, "
                "outputTokens",
            )
        out = self
        for api, name in self._FIELDS:
            if api not in data:
                continue
            value = data[api]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FleetError(400, f"{api} must be a number, got {value!r}")
            if name == "requests_per_second":
                if not (value >= 0 and math.isfinite(value)):
                    raise FleetError(400, f"{api} must be 0 or more, got {value!r}")
                out = replace(out, requests_per_second=float(value))
            else:
                if not value >= 1:
                    raise FleetError(400, f"{api} must be at least 1, got {value!r}")
                out = replace(out, **{name: int(value)})
        return out

    def to_json(self) -> dict[str, Any]:
        return {api: getattr(self, name) for api, name in self._FIELDS}


def load_trace(path: Path) -> list[tuple[float, int, int]]:
    """Read a request trace as (seconds since the first request, prompt, output), sorted.

    Accepts the Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``) or
    a plain ``seconds,prompt_tokens,output_tokens`` CSV (a header line is optional).
    """
    rows: list[tuple[float, int, int]] = []
    t0: float | None = None
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = [p.strip() for p in line.strip().split(",")]
            if len(parts) < 3 or not parts[0]:
                continue
            try:
                prompt, output = int(parts[1]), int(parts[2])
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise ValueError(f"{path}:{lineno}: expected time,prompt,output") from None
            try:
                stamp = float(parts[0])
            except ValueError:
                stamp = datetime.fromisoformat(parts[0][:26]).timestamp()
            t0 = stamp if t0 is None else t0
            rows.append((stamp - t0, prompt, output))
    rows.sort()
    return rows


# --------------------------------------------------------------------------- pods
@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the fleet needs to know about one model-server pod."""

    namespace: str
    name: str
    deployment: str
    model_name: str
    ready: bool
    terminating: bool = False


def _served_name(args: Sequence[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--served-model-name" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--served-model-name="):
            return a.split("=", 1)[1].split(",")[0]
    return None


def pod_info(pod: Any) -> PodInfo | None:
    """A kubernetes client V1Pod -> PodInfo (None when it is not a model-server pod)."""
    meta = pod.metadata
    owner = (meta.labels or {}).get(LABEL_DEPLOYMENT)
    if not owner:
        return None
    conds = (pod.status.conditions if pod.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conds)
    served = None
    for c in pod.spec.containers or []:
        served = _served_name(list(c.args or []) + list(c.command or []))
        if served:
            break
    return PodInfo(
        namespace=meta.namespace,
        name=meta.name,
        deployment=owner,
        model_name=served or owner,
        ready=ready,
        terminating=meta.deletion_timestamp is not None,
    )


@dataclass
class _SimPod:
    info: PodInfo
    replica: _Replica | None = None
    draining: bool = False
    adapters: dict[str, str] = field(default_factory=dict)


@dataclass
class _Traffic:
    load: LoadSpec = field(default_factory=LoadSpec)
    next_arrival: float | None = None
    gateway: deque[Request] = field(default_factory=deque)
    arrivals: int = 0
    dropped: int = 0
    lost: int = 0  # in flight on a pod that disappeared


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------- the fleet
class Fleet:
    """Simulated replicas, load generation and routing (thread-safe; no I/O).

    ``clock`` is a monotonic clock in seconds; fleet time starts at 0 when the fleet is built.
    Call ``tick()`` periodically: it generates the arrivals since the previous tick, routes
    them, and advances every replica to now.
    """

    def __init__(
        self,
        model: ReplicaModel = LLAMA3_8B_H100,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        max_gateway_queue: int = 10_000,
    ) -> None:
        self.model = model
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._pods: dict[Key, _SimPod] = {}
        self._traffic: dict[Key, _Traffic] = {}
        self.max_gateway_queue = max_gateway_queue
        self._trace: list[tuple[float, int, int]] = []
        self._trace_key: Key | None = None
        self._trace_pos = 0
        self._trace_start = 0.0
        self._trace_speed = 1.0
        self._schedule: dict[Key, list[tuple[float, LoadSpec]]] = {}
        self._schedule_applied: dict[Key, int] = {}

    def now(self) -> float:
        return self._clock() - self._t0

    # ------------------------------------------------------------------ pods
    def observe_pod(self, info: PodInfo) -> None:
        """A pod was added or changed: Ready pods get a replica, others stop taking requests."""
        with self._lock:
            key = (info.namespace, info.name)
            pod = self._pods.get(key)
            if pod is None:
                pod = self._pods[key] = _SimPod(info)
            pod.info = info
            serving = info.ready and not info.terminating
            if serving:
                if pod.replica is None:
                    t = self.now()
                    pod.replica = _Replica(self.model, t, t)
                    pod.adapters.clear()  # a fresh engine process has no adapters
                    log.info("pod %s/%s ready: replica started", *key)
                pod.draining = False
            elif pod.replica is not None and not pod.draining:
                pod.draining = True
                log.info("pod %s/%s not serving: draining", *key)

    def remove_pod(self, namespace: str, name: str) -> None:
        """The pod object is gone: whatever it still had in flight is lost."""
        with self._lock:
            pod = self._pods.pop((namespace, name), None)
            if pod is not None and pod.replica is not None:
                lost = pod.replica.outstanding
                if lost:
                    self._traffic_for((namespace, pod.info.deployment)).lost += lost

    def sync_pods(self, infos: Iterable[PodInfo], namespace: str | None = None) -> None:
        """A full listing (of ``namespace``, or of every namespace when None)."""
        with self._lock:
            seen = set()
            for info in infos:
                seen.add((info.namespace, info.name))
                self.observe_pod(info)
            for key in list(self._pods):
                if key not in seen and (namespace is None or key[0] == namespace):
                    self.remove_pod(*key)

    def pods(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "namespace": p.info.namespace,
                    "name": p.info.name,
                    "deployment": p.info.deployment,
                    "modelName": p.info.model_name,
                    "serving": p.replica is not None and not p.draining,
                    "outstanding": p.replica.outstanding if p.replica else 0,
                    "adapters": sorted(p.adapters),
                }
                for p in sorted(self._pods.values(), key=lambda p: (p.info.namespace, p.info.name))
            ]

    # ------------------------------------------------------------------ load
    def _traffic_for(self, key: Key) -> _Traffic:
        tr = self._traffic.get(key)
        if tr is None:
            tr = self._traffic[key] = _Traffic()
        return tr

    def set_load(self, namespace: str, name: str, data: Mapping[str, Any]) -> LoadSpec:
        with self._lock:
            tr = self._traffic_for((namespace, name))
            new = tr.load.updated(data)
            if new.requests_per_second != tr.load.requests_per_second:
                tr.next_arrival = None  # redraw from now at the new rate
            tr.load = new
            return new

    def stop_load(self, namespace: str, name: str) -> None:
        self.set_load(namespace, name, {"requestsPerSecond": 0})

    def load_status(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            key = (namespace, name)
            tr = self._traffic_for(key)
            replicas = self._serving(key)
            return {
                **tr.load.to_json(),
                "gatewayQueue": len(tr.gateway),
                "readyReplicas": len(replicas),
                "outstanding": sum(r.outstanding for r in replicas),
                "arrivals": tr.arrivals,
                "completed": sum(
                    p.replica.success
                    for p in self._pods.values()
                    if p.replica is not None and (p.info.namespace, p.info.deployment) == key
                ),
                "dropped": tr.dropped,
                "lost": tr.lost,
            }

    def loads(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {f"{ns}/{n}": self.load_status(ns, n) for ns, n in sorted(self._traffic)}

    def set_schedule(self, schedule: Mapping[str, Any]) -> None:
        """Load steps per ``"ns/name"`` (see the module doc); replaces the previous schedule."""
        parsed: dict[Key, list[tuple[float, LoadSpec]]] = {}
        for target, steps in schedule.items():
            ns, sep, name = str(target).partition("/")
            if not sep or not ns or not name:
                raise FleetError(400, f"schedule key {target!r} must be 'namespace/name'")
            rows = [steps] if isinstance(steps, Mapping) else list(steps or [])
            out: list[tuple[float, LoadSpec]] = []
            spec = LoadSpec()
            for row in rows:
                if not isinstance(row, Mapping):
                    raise FleetError(400, f"schedule step of {target} must be an object")
                at = float(row.get("at", 0.0))
                spec = spec.updated(row)
                out.append((at, spec))
            out.sort(key=lambda s: s[0])
            parsed[(ns, name)] = out
        with self._lock:
            self._schedule = parsed
            self._schedule_applied = {}

    def replay(
        self,
        namespace: str,
        name: str,
        trace: Sequence[tuple[float, int, int]],
        speed: float = 1.0,
    ) -> None:
        """Send ``trace`` to a deployment, starting now, ``speed`` times faster than recorded."""
        if speed <= 0:
            raise ValueError("trace speed must be above 0")
        with self._lock:
            self._trace = sorted(trace)
            self._trace_key = (namespace, name)
            self._trace_pos = 0
            self._trace_start = self.now()
            self._trace_speed = speed

    # ------------------------------------------------------------------ simulation
    def _serving(self, key: Key) -> list[_Replica]:
        ns, deployment = key
        return [
            p.replica
            for p in self._pods.values()
            if p.replica is not None
            and not p.draining
            and p.info.namespace == ns
            and p.info.deployment == deployment
        ]

    def _dispatch(self, key: Key, t: float) -> None:
        tr = self._traffic_for(key)
        if not tr.gateway:
            return
        ready = self._serving(key)
        if not ready:
            return
        for r in ready:
            r.advance(t)
        while tr.gateway:
            best = min(ready, key=lambda r: r.outstanding)
            if best.outstanding >= self.model.max_num_seqs:
                return
            best.admit(tr.gateway.popleft(), t)

    def _arrive(self, key: Key, t: float, prompt: int, output: int) -> None:
        tr = self._traffic_for(key)
        tr.arrivals += 1
        if len(tr.gateway) >= self.max_gateway_queue:
            tr.dropped += 1
            return
        tr.gateway.append(Request(t, prompt, output))
        self._dispatch(key, t)

    def submit(self, namespace: str, name: str, prompt_tokens: int, output_tokens: int) -> None:
        """One request now (e.g. from a test)."""
        with self._lock:
            self._arrive((namespace, name), self.now(), prompt_tokens, output_tokens)

    def _size(self, mean: int) -> int:
        return max(1, round(mean * self._rng.uniform(0.5, 1.5)))

    def _apply_schedule(self, now: float) -> None:
        for key, steps in self._schedule.items():
            idx = -1
            for i, (at, _) in enumerate(steps):
                if at <= now:
                    idx = i
            if idx >= 0 and self._schedule_applied.get(key) != idx:
                self._schedule_applied[key] = idx
                self.set_load(key[0], key[1], steps[idx][1].to_json())

    def tick(self) -> None:
        """Generate and route the arrivals since the last tick; advance replicas to now."""
        with self._lock:
            now = self.now()
            self._apply_schedule(now)
            arrivals: list[tuple[float, Key, int, int]] = []
            for key, tr in self._traffic.items():
                rate = tr.load.requests_per_second
                if rate <= 0:
                    tr.next_arrival = None
                    continue
                t = tr.next_arrival
                if t is None:
                    t = now + self._rng.expovariate(rate)
                while t <= now:
                    arrivals.append(
                        (
                            t,
                            key,
                            self._size(tr.load.prompt_tokens),
                            self._size(tr.load.output_tokens),
                        )
                    )
                    t += self._rng.expovariate(rate)
                tr.next_arrival = t
            if self._trace_key is not None:
                while self._trace_pos < len(self._trace):
                    at, prompt, output = self._trace[self._trace_pos]
                    t = self._trace_start + at / self._trace_speed
                    if t > now:
                        break
                    arrivals.append((t, self._trace_key, prompt, output))
                    self._trace_pos += 1
            arrivals.sort(key=lambda a: a[0])
            for t, key, prompt, output in arrivals:
                self._arrive(key, t, prompt, output)
            for key in list(self._traffic):
                self._dispatch(key, now)
            for pod in list(self._pods.values()):
                r = pod.replica
                if r is None:
                    continue
                r.advance(now)
                if pod.draining and r.outstanding == 0:
                    pod.replica = None
                    pod.draining = False
                    pod.adapters.clear()

    # ------------------------------------------------------------------ engine endpoints
    def _pod(self, namespace: str, name: str) -> _SimPod:
        pod = self._pods.get((namespace, name))
        if pod is None:
            raise FleetError(404, f"no model-server pod {namespace}/{name}", "NotFoundError")
        if pod.replica is None or pod.draining:
            raise FleetError(503, f"pod {namespace}/{name} is not serving", "ServiceUnavailable")
        return pod

    def metrics_text(self, namespace: str, name: str) -> str:
        """The pod's ``/metrics`` payload, with vLLM's names and labels."""
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None or pod.replica is None:
                raise FleetError(404, f"no serving model-server pod {namespace}/{name}")
            r = pod.replica
            labels = f'engine="0",model_name="{_esc(pod.info.model_name)}"'
            kv = r.kv_reserved / self.model.kv_capacity_tokens
            gauges = (
                (
                    "vllm:num_requests_running",
                    "Number of requests in model execution batches.",
                    len(r.heap),
                ),
                (
                    "vllm:num_requests_waiting",
                    "Number of requests waiting to be processed.",
                    len(r.prefill_q),
                ),
                ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv),
            )
            counters = (
                ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", r.prompt_done),
                (
                    "vllm:generation_tokens_total",
                    "Number of generation tokens processed.",
                    r.generation_total(),
                ),
            )
        lines: list[str] = []
        for name_, help_, value in gauges:
            lines += [f"# HELP {name_} {help_}", f"# TYPE {name_} gauge"]
            lines.append(f"{name_}{{{labels}}} {float(value)!r}")
        for name_, help_, value in counters:
            lines += [f"# HELP {name_} {help_}", f"# TYPE {name_} counter"]
            lines.append(f"{name_}{{{labels}}} {float(value)!r}")
        name_ = "vllm:request_success_total"
        lines += [
            f"# HELP {name_} Count of successfully processed requests.",
            f"# TYPE {name_} counter",
            f'{name_}{{{labels},finished_reason="length"}} {float(r.success)!r}',
            f'{name_}{{{labels},finished_reason="stop"}} 0.0',
        ]
        return "\n".join(lines) + "\n"

    def load_lora(self, namespace: str, name: str, body: Mapping[str, Any]) -> str:
        lora_name, lora_path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(lora_name, str) or not lora_name:
            raise FleetError(400, "lora_name is required")
        if not isinstance(lora_path, str) or not lora_path:
            raise FleetError(400, "lora_path is required")
        with self._lock:
            pod = self._pod(namespace, name)
            if lora_name in pod.adapters or lora_name == pod.info.model_name:
                raise FleetError(
                    400,
                    f"The lora adapter '{lora_name}' has already been loaded. If you want to "
                    "load the adapter in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            if NOT_FOUND_MARKER in lora_path:
                raise FleetError(
                    404,
                    f"Loading lora {lora_name} failed: No adapter found for {lora_path}",
                    "NotFoundError",
                )
            pod.adapters[lora_name] = lora_path
        return f"Success: LoRA adapter '{lora_name}' added successfully."

    def unload_lora(self, namespace: str, name: str, body: Mapping[str, Any]) -> str:
        lora_name = body.get("lora_name")
        if not isinstance(lora_name, str) or not lora_name:
            raise FleetError(400, "lora_name is required")
        with self._lock:
            pod = self._pod(namespace, name)
            if pod.adapters.pop(lora_name, None) is None:
                raise FleetError(
                    404, f"The lora adapter '{lora_name}' cannot be found.", "NotFoundError"
                )
        return f"Success: LoRA adapter '{lora_name}' removed successfully."

    def models(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            pod = self._pod(namespace, name)
            base = pod.info.model_name
            created = int(time.time())
            data: list[dict[str, Any]] = [
                {
                    "id": base,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": base,
                    "parent": None,
                    "max_model_len": None,
                }
            ]
            for lora, path in sorted(pod.adapters.items()):
                data.append(
                    {
                        "id": lora,
                        "object": "model",
                        "created": created,
                        "owned_by": "vllm",
                        "root": path,
                        "parent": base,
                        "max_model_len": None,
                    }
                )
        return {"object": "list", "data": data}


# --------------------------------------------------------------------------- HTTP
def _make_handler(fleet: Fleet) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "modelplane-fleet/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            if isinstance(body, str) and content_type != "application/json":
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return {}
            try:
                return json.loads(raw)
            except json.JSONDecodeError as e:
                raise FleetError(400, f"body is not JSON: {e}") from e

        def _route(self, method: str) -> None:
            parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/")]
            try:
                self._dispatch(method, parts)
            except FleetError as e:
                self._send(e.status, e.body())
            except Exception as e:  # report, keep serving
                log.exception("error serving %s %s", method, self.path)
                self._send(500, FleetError(500, str(e), "InternalServerError").body())

        def _dispatch(self, method: str, parts: list[str]) -> None:
            match method, parts:
                case "GET", ["healthz"]:
                    self._send(200, "ok\n", "text/plain")
                case "GET", ["metrics", ns, pod]:
                    text = fleet.metrics_text(ns, pod)
                    self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
                case "GET", ["load"]:
                    self._send(200, fleet.loads())
                case "GET", ["load", ns, name]:
                    self._send(200, fleet.load_status(ns, name))
                case "PUT" | "POST", ["load", ns, name]:
                    body = self._json_body()
                    fleet.set_load(ns, name, body)
                    self._send(200, fleet.load_status(ns, name))
                case "DELETE", ["load", ns, name]:
                    fleet.stop_load(ns, name)
                    self._send(200, fleet.load_status(ns, name))
                case "GET", ["pods"]:
                    self._send(200, fleet.pods())
                case "POST", ["pods", ns, pod, "v1", "load_lora_adapter"]:
                    self._send(200, fleet.load_lora(ns, pod, self._json_body()), "text/plain")
                case "POST", ["pods", ns, pod, "v1", "unload_lora_adapter"]:
                    self._send(200, fleet.unload_lora(ns, pod, self._json_body()), "text/plain")
                case "GET", ["pods", ns, pod, "v1", "models"]:
                    self._send(200, fleet.models(ns, pod))
                case _:
                    raise FleetError(404, f"no route {method} {self.path}", "NotFoundError")

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


def serve(fleet: Fleet, port: int = 0) -> ThreadingHTTPServer:
    """Bind 127.0.0.1:``port`` (0: any free port) and serve in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(fleet))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fleet-http", daemon=True).start()
    return server


# --------------------------------------------------------------------------- pod watcher
def _watch_pods(
    fleet: Fleet, api_client: Any, namespace: str | None, stop: threading.Event
) -> None:
    """List + watch model-server pods into the fleet; relist after every watch timeout."""
    from kubernetes import client, watch
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    lister: Callable[..., Any]
    if namespace:

        def lister(**kw: Any) -> Any:
            return core.list_namespaced_pod(namespace, **kw)
    else:
        lister = core.list_pod_for_all_namespaces
    while not stop.is_set():
        try:
            listing = lister(label_selector=LABEL_DEPLOYMENT)
            infos = [i for i in (pod_info(p) for p in listing.items) if i is not None]
            fleet.sync_pods(infos, namespace)
            w = watch.Watch()
            for ev in w.stream(
                lister,
                label_selector=LABEL_DEPLOYMENT,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=30,
            ):
                if stop.is_set():
                    w.stop()
                    break
                obj = ev["object"]
                if ev["type"] == "DELETED":
                    fleet.remove_pod(obj.metadata.namespace, obj.metadata.name)
                elif ev["type"] in ("ADDED", "MODIFIED"):
                    info = pod_info(obj)
                    if info is not None:
                        fleet.observe_pod(info)
        except ApiException as e:
            if e.status != 410:  # 410 Gone: resource version too old, just relist
                log.warning("pod watch failed: %s %s", e.status, e.reason)
                stop.wait(1.0)
        except Exception:
            log.exception("pod watch failed")
            stop.wait(1.0)


# --------------------------------------------------------------------------- process
def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent exits (Linux); the tick loop also polls."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m modelplane_testbed.fleet",
        description="Simulated vLLM engines for the model-server pods of a (local) cluster.",
    )
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to watch")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="only pods of this namespace (repeatable; default: all namespaces)",
    )
    p.add_argument(
        "--replica-model",
        choices=sorted(REPLICA_MODELS),
        default="llama3-8b-h100",
        help="performance model of every simulated replica",
    )
    p.add_argument("--rate-file", type=Path, help="load schedule (YAML/JSON), re-read on change")
    p.add_argument("--trace", type=Path, help="request trace CSV to replay")
    p.add_argument("--trace-deployment", metavar="NS/NAME", help="the trace's target deployment")
    p.add_argument("--trace-speed", type=float, default=1.0, help="replay this many times faster")
    p.add_argument("--tick", type=float, default=0.5, help="simulation tick in seconds")
    p.add_argument("--ttl", type=float, default=0.0, help="exit after this many seconds (0: never)")
    p.add_argument("--seed", type=int, help="random seed of the load generator")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.trace and not args.trace_deployment:
        p.error("--trace needs --trace-deployment NS/NAME")
    if args.trace_deployment and "/" not in args.trace_deployment:
        p.error("--trace-deployment must be NS/NAME")
    if args.tick <= 0:
        p.error("--tick must be above 0")
    return args


def _read_schedule(path: Path) -> Mapping[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of 'namespace/name' to a load")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    parent = os.getppid()
    _die_with_parent()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(args.kubeconfig))
    fleet = Fleet(REPLICA_MODELS[args.replica_model], seed=args.seed)
    schedule_mtime: float | None = None
    if args.rate_file:
        schedule_mtime = args.rate_file.stat().st_mtime
        fleet.set_schedule(_read_schedule(args.rate_file))
    if args.trace:
        ns, name = args.trace_deployment.split("/", 1)
        fleet.replay(ns, name, load_trace(args.trace), args.trace_speed)
    for ns in args.namespace or [None]:
        threading.Thread(
            target=_watch_pods,
            args=(fleet, api_client, ns, stop),
            name=f"fleet-watch-{ns or 'all'}",
            daemon=True,
        ).start()
    server = serve(fleet, args.port)
    print(f"FLEET_URL=http://127.0.0.1:{server.server_address[1]}", flush=True)
    started = time.monotonic()
    try:
        while not stop.wait(args.tick):
            if os.getppid() != parent:
                log.info("parent exited; stopping")
                break
            if args.ttl and time.monotonic() - started >= args.ttl:
                log.info("ttl of %ss reached; stopping", args.ttl)
                break
            if args.rate_file:
                try:
                    mtime = args.rate_file.stat().st_mtime
                    if mtime != schedule_mtime:
                        schedule_mtime = mtime
                        fleet.set_schedule(_read_schedule(args.rate_file))
                        log.info("reloaded %s", args.rate_file)
                except (OSError, ValueError, FleetError) as e:
                    log.warning("could not read %s: %s", args.rate_file, e)
            fleet.tick()
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
