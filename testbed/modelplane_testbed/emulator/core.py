"""The emulator's state: pods and their engines, replica models, load, gateway queues (no I/O).

Every model-server pod the product created gets an emulated engine once it is on a node with an
address: its start-up (``pods.derive_startup``) runs on the emulator's clock, scaled by
``time_scale``; then a replica of ``simulator``'s performance model (continuous batching,
prefill interference, KV-cache reservation) serves it, at real time. The load generator sends
Poisson arrivals per ModelDeployment; requests go to the deployment's Ready pods (fewest
outstanding first) and wait in a gateway queue when none can take them. Cache-fill Job pods
finish after their modelled download.

Thread-safe: every public method takes the lock. I/O (HTTP servers, the Kubernetes API) lives in
``http`` and ``kube``; they read this state and report what they observe.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelplane_testbed.emulator.pods import (
    LABEL_CACHE_KEY,
    LABEL_DEPLOYMENT,
    Engine,
    ServerSpec,
    SpecError,
    StartupPlan,
    derive_startup,
    download_plan,
    server_spec,
)
from modelplane_testbed.simulator import (
    LLAMA3_8B_H100,
    LLAMA3_70B_4XH100,
    ColdStartModel,
    ReplicaModel,
    Request,
    _Replica,
)

__all__ = [
    "NOT_FOUND_MARKER",
    "REPLICA_MODELS",
    "ControlError",
    "Emulator",
    "EngineError",
    "LoadSpec",
    "load_trace",
    "rfc3339",
]

log = logging.getLogger("modelplane.emulator")

REPLICA_MODELS: Mapping[str, ReplicaModel] = {
    "llama3-8b-h100": LLAMA3_8B_H100,
    "llama3-70b-4xh100": LLAMA3_70B_4XH100,
}
#: A lora_path containing this fails to load (404), as an adapter that cannot be downloaded.
NOT_FOUND_MARKER = "does-not-exist"
#: Served weights above this (GB) get the 70B/4xH100 replica model, below the 8B/1xH100 one.
LARGE_MODEL_GB = 40.0

Key = tuple[str, str]  # (namespace, name)


def rfc3339(wall: float | None = None) -> str:
    t = datetime.fromtimestamp(time.time() if wall is None else wall, UTC)
    return t.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class ControlError(Exception):
    """A control-API request refused; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str, response: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.response = response  # the decoded body, on the client side

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "code": self.status}


class EngineError(Exception):
    """An engine answer other than success: the HTTP layer renders it in the engine's shape."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


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
            raise ControlError(400, "the load must be a JSON object")
        known = {api for api, _ in self._FIELDS} | {"at"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ControlError(
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
                raise ControlError(400, f"{api} must be a number, got {value!r}")
            if name == "requests_per_second":
                if not (value >= 0 and math.isfinite(value)):
                    raise ControlError(400, f"{api} must be 0 or more, got {value!r}")
                out = replace(out, requests_per_second=float(value))
            else:
                if not value >= 1:
                    raise ControlError(400, f"{api} must be at least 1, got {value!r}")
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


@dataclass
class _Traffic:
    load: LoadSpec = field(default_factory=LoadSpec)
    next_arrival: float | None = None
    gateway: deque[Request] = field(default_factory=deque)
    proxied_waiting: int = 0  # client requests held by the stand-in gateway (control socket)
    arrivals: int = 0
    dropped: int = 0
    lost: int = 0  # in flight on a pod that disappeared


# --------------------------------------------------------------------------- pods
def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = _meta(obj).get("labels") or {}
    return labels


def _condition(pod: Mapping[str, Any], kind: str) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return bool(c.get("status") == "True")
    return False


@dataclass
class _Pod:
    namespace: str
    name: str
    uid: str
    deployment: str
    obj: Mapping[str, Any]
    spec: ServerSpec | None
    error: str | None
    node: str | None = None
    ip: str | None = None
    phase: str = "Pending"
    api_ready: bool = False
    terminating: bool = False
    plan: StartupPlan | None = None
    model: ReplicaModel = LLAMA3_8B_H100
    started: float | None = None  # emulator clock when the container started
    started_wall: float | None = None
    ready_at: float | None = None  # emulator clock when /health turns 200
    replica: _Replica | None = None
    adapters: dict[str, str] = field(default_factory=dict)
    requests: int = 0  # HTTP inference requests received (TEI's te_request_* count these)
    successes: int = 0
    failures: int = 0

    @property
    def key(self) -> Key:
        return self.namespace, self.name


@dataclass
class _CacheJob:
    namespace: str
    name: str
    uid: str
    cache_key: str
    node: str | None
    hf_id: str | None
    gb: float
    image: str
    obj: Mapping[str, Any] = field(default_factory=dict)
    started: float | None = None
    done_at: float | None = None
    download_s: float = 0.0
    image_s: float = 0.0
    completed: bool = False  # the emulator reported it Succeeded

    @property
    def key(self) -> Key:
        return self.namespace, self.name


# --------------------------------------------------------------------------- the emulator
class Emulator:
    """Emulated engines, replica models, load generation and gateway queues (no I/O).

    ``clock`` is monotonic seconds. ``time_scale`` multiplies modelled start-up and download
    times (0.05: a 60 s start-up takes 3 s); serving and load run at real time, since the
    gateway, autoscaler and clients measure real seconds. ``replica_model`` forces one
    performance model for every pod (default: by served weights, 8B/1xH100 or 70B/4xH100).
    """

    def __init__(
        self,
        *,
        time_scale: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        seed: int | None = None,
        replica_model: ReplicaModel | None = None,
        cold_start: ColdStartModel | None = None,
        max_gateway_queue: int = 10_000,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be 0 or more")
        self.time_scale = time_scale
        self.cold_start = cold_start or ColdStartModel()
        self.replica_model = replica_model
        self.max_gateway_queue = max_gateway_queue
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._pods: dict[Key, _Pod] = {}
        self._jobs: dict[Key, _CacheJob] = {}
        self._nodes: dict[str, Mapping[str, Any]] = {}
        #: (node, image) -> emulator clock when the image is (or will be) on the node
        self._images: dict[tuple[str, str], float] = {}
        self._traffic: dict[Key, _Traffic] = {}
        self._trace: list[tuple[float, int, int]] = []
        self._trace_key: Key | None = None
        self._trace_pos = 0
        self._trace_start = 0.0
        self._trace_speed = 1.0
        self._schedule: dict[Key, list[tuple[float, LoadSpec]]] = {}
        self._schedule_applied: dict[Key, int] = {}
        #: ModelDeployment -> the deployment whose pods serve it (a Serverless tenant is served by
        #: its shared backend, named in the tenant's ``status.backend``), as a gateway routes.
        self._routes: dict[Key, Key] = {}

    def now(self) -> float:
        return self._clock() - self._t0

    def _wall_at(self, t: float) -> float:
        return self._wall() - (self.now() - t)

    # ------------------------------------------------------------------ nodes
    def observe_node(self, node: Mapping[str, Any]) -> None:
        with self._lock:
            name = str(_meta(node).get("name"))
            self._nodes[name] = node
            for p in self._pods.values():
                if p.node == name:
                    self._maybe_start(p)

    def remove_node(self, name: str) -> None:
        with self._lock:
            self._nodes.pop(name, None)
            for k in [k for k in self._images if k[0] == name]:
                del self._images[k]

    def sync_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            seen = set()
            for n in nodes:
                seen.add(str(_meta(n).get("name")))
                self.observe_node(n)
            for name in list(self._nodes):
                if name not in seen:
                    self.remove_node(name)

    # ------------------------------------------------------------------ pods
    def observe_pod(self, pod: Mapping[str, Any]) -> None:
        """A pod was added or changed (a dict as the API serves it, camelCase keys)."""
        labels = _labels(pod)
        if LABEL_DEPLOYMENT in labels:
            self._observe_server(pod)
        elif LABEL_CACHE_KEY in labels:
            self._observe_job(pod)

    def _observe_server(self, pod: Mapping[str, Any]) -> None:
        meta = _meta(pod)
        key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
        uid = str(meta.get("uid") or "")
        status = pod.get("status") or {}
        with self._lock:
            p = self._pods.get(key)
            if p is None or p.uid != uid:
                if p is not None:
                    self._forget(p)
                try:
                    spec, error = server_spec(pod), None
                except SpecError as e:
                    spec, error = None, str(e)
                    log.warning("pod %s/%s: %s", *key, e)
                p = self._pods[key] = _Pod(
                    key[0], key[1], uid, str(_labels(pod)[LABEL_DEPLOYMENT]), pod, spec, error
                )
            p.obj = pod
            p.node = (pod.get("spec") or {}).get("nodeName") or None
            p.ip = status.get("podIP") or None
            p.phase = str(status.get("phase") or "Pending")
            p.api_ready = _condition(pod, "Ready")
            p.terminating = meta.get("deletionTimestamp") is not None
            self._maybe_start(p)

    def _maybe_start(self, p: _Pod) -> None:
        """Start the engine once the container runs on a node the emulator knows (its labels
        decide the start-up; a pod seen before its node waits for the node)."""
        if (
            p.started is None
            and p.spec is not None
            and p.node in self._nodes
            and p.ip
            and p.phase == "Running"
            and not p.terminating
        ):
            self._start(p)

    def _start(self, p: _Pod) -> None:
        """The container started on its node: plan the engine's start-up."""
        assert p.spec is not None and p.node is not None
        now = self.now()
        node = self._nodes.get(p.node)
        img_key = (p.node, p.spec.image)
        have = self._images.get(img_key)
        scale = self.time_scale
        wait: float | None = None
        if have is not None:
            wait = max(0.0, have - now) / scale if scale > 0 else 0.0
        plan = derive_startup(
            p.spec, p.obj, node, image_wait_s=wait, time_scale=scale, cold=self.cold_start
        )
        if have is None:
            self._images[img_key] = now + plan.breakdown.image_s * scale
        p.plan = plan
        p.started = now
        p.started_wall = self._wall()
        p.ready_at = now + plan.scaled_s
        if self.replica_model is not None:
            p.model = self.replica_model
        else:
            p.model = LLAMA3_70B_4XH100 if plan.served_gb > LARGE_MODEL_GB else LLAMA3_8B_H100
        log.info(
            "pod %s/%s on %s: %s %s, start-up %.0fs modelled (%.1fs here), cache %s",
            p.namespace,
            p.name,
            p.node,
            p.spec.engine.value,
            p.spec.model,
            plan.total_s,
            plan.scaled_s,
            "hit" if plan.cache.hit else "miss",
        )

    def _up(self, p: _Pod, now: float) -> bool:
        """Is the engine process serving (start-up done)? Starts its replica when it is."""
        if p.ready_at is None or now < p.ready_at or p.spec is None:
            return False
        if p.replica is None:
            p.replica = _Replica(p.model, p.ready_at, p.ready_at)
            p.adapters = dict(p.spec.static_adapters)
        return True

    def _forget(self, p: _Pod) -> None:
        if p.replica is not None and p.replica.outstanding:
            self._traffic_for((p.namespace, p.deployment)).lost += p.replica.outstanding

    def _observe_job(self, pod: Mapping[str, Any]) -> None:
        meta = _meta(pod)
        key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
        status = pod.get("status") or {}
        with self._lock:
            j = self._jobs.get(key)
            uid = str(meta.get("uid") or "")
            if j is None or j.uid != uid:
                hf, gb, image = download_plan(pod)
                j = self._jobs[key] = _CacheJob(
                    key[0], key[1], uid, str(_labels(pod)[LABEL_CACHE_KEY]), None, hf, gb, image
                )
            j.obj = pod
            j.node = (pod.get("spec") or {}).get("nodeName") or None
            phase = status.get("phase")
            if phase in ("Succeeded", "Failed"):
                j.completed = True
            if (
                j.started is None
                and j.node
                and phase == "Running"
                and meta.get("deletionTimestamp") is None
            ):
                now = self.now()
                scale = self.time_scale
                img_key = (j.node, j.image)
                have = self._images.get(img_key)
                if have is None:
                    j.image_s = self.cold_start.image_gb / self.cold_start.image_pull_gb_per_s
                    # The Job runs the engine image: it is on the node afterwards.
                    self._images[img_key] = now + j.image_s * scale
                else:
                    j.image_s = max(0.0, have - now) / scale if scale > 0 else 0.0
                j.download_s = j.gb / self.cold_start.weight_load_gb_per_s
                j.started = now
                j.done_at = now + (j.image_s + j.download_s) * scale
                log.info(
                    "cache Job pod %s/%s on %s: %.1f GB of %s, %.0fs modelled",
                    *key,
                    j.node,
                    j.gb,
                    j.hf_id or "?",
                    j.image_s + j.download_s,
                )

    def remove_pod(self, namespace: str, name: str) -> None:
        """The pod object is gone: whatever it still had in flight is lost."""
        with self._lock:
            p = self._pods.pop((namespace, name), None)
            if p is not None:
                self._forget(p)
            self._jobs.pop((namespace, name), None)

    def sync_pods(
        self, pods: Iterable[Mapping[str, Any]], namespace: str | None = None, label: str = ""
    ) -> None:
        """A full listing of the pods carrying ``label`` (in ``namespace``, or everywhere)."""
        with self._lock:
            seen = set()
            for pod in pods:
                meta = _meta(pod)
                seen.add((str(meta.get("namespace") or "default"), str(meta.get("name"))))
                self.observe_pod(pod)
            tables: list[dict[Key, Any]] = []
            if label in ("", LABEL_DEPLOYMENT):
                tables.append(self._pods)
            if label in ("", LABEL_CACHE_KEY):
                tables.append(self._jobs)
            for table in tables:
                for key in list(table):
                    if key not in seen and (namespace is None or key[0] == namespace):
                        self.remove_pod(*key)

    # ------------------------------------------------------------------ records
    def _pod_record(self, p: _Pod, now: float) -> dict[str, Any]:
        up = self._up(p, now)
        spec = p.spec
        plan = p.plan
        rec: dict[str, Any] = {
            "namespace": p.namespace,
            "name": p.name,
            "uid": p.uid,
            "deployment": p.deployment,
            "node": p.node,
            "podIP": p.ip,
            "phase": p.phase,
            "error": p.error,
            "apiReady": p.api_ready,
            "terminating": p.terminating,
            "healthy": up,
            "serving": up and p.api_ready and not p.terminating,
            "outstanding": p.replica.outstanding if p.replica else 0,
            "adapters": sorted(p.adapters),
            "replicaModel": p.model.name if plan else None,
        }
        if spec is not None:
            rec.update(
                engine=spec.engine.value,
                image=spec.image,
                model=spec.model,
                hfId=spec.hf_id,
                servedNames=list(spec.served_names),
                port=spec.port,
                reachable=spec.reachable,
                lora=spec.lora,
                runtimeLora=spec.runtime_lora,
                embedding=spec.embedding,
                transcription=spec.transcription,
                warnings=list(spec.warnings),
            )
        if plan is not None:
            assert p.started is not None and p.ready_at is not None
            rec.update(
                catalogModel=plan.catalog_id,
                weightsGB=round(plan.served_gb, 2),
                checkpointGB=round(plan.checkpoint_gb, 2),
                cacheHit=plan.cache.hit,
                cache=plan.cache.to_json(),
                imageCached=plan.image_cached,
                startup=plan.to_json(),
                startedAt=rfc3339(p.started_wall),
                readyAt=rfc3339(self._wall_at(p.ready_at)) if up else None,
                readyInS=round(max(0.0, p.ready_at - now), 3),
            )
            if spec is not None and spec.startup_probe is not None:
                budget = spec.startup_probe.budget_s
                rec["startupProbeBudgetS"] = budget
                rec["exceedsStartupProbe"] = plan.total_s > budget
        return rec

    def pods(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [self._pod_record(p, now) for _, p in sorted(self._pods.items())]

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            p = self._pods.get((namespace, name))
            if p is None:
                raise ControlError(404, f"no model-server pod {namespace}/{name}")
            return self._pod_record(p, self.now())

    def cache_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [
                {
                    "namespace": j.namespace,
                    "name": j.name,
                    "cacheKey": j.cache_key,
                    "node": j.node,
                    "hfId": j.hf_id,
                    "gb": round(j.gb, 2),
                    "imagePullS": round(j.image_s, 3),
                    "downloadS": round(j.download_s, 3),
                    "doneInS": round(max(0.0, j.done_at - now), 3) if j.done_at else None,
                    "completed": j.completed,
                }
                for _, j in sorted(self._jobs.items())
            ]

    def due_jobs(self) -> list[tuple[str, str, Mapping[str, Any]]]:
        """Cache Job pods whose download is done and that are not reported Succeeded yet."""
        with self._lock:
            now = self.now()
            return [
                (j.namespace, j.name, j.obj)
                for j in self._jobs.values()
                if not j.completed and j.done_at is not None and j.done_at <= now
            ]

    def job_completed(self, namespace: str, name: str) -> None:
        with self._lock:
            j = self._jobs.get((namespace, name))
            if j is not None:
                j.completed = True

    # ------------------------------------------------------------------ for the I/O layers
    def listeners(self) -> dict[Key, tuple[str, int]]:
        """(pod IP, port) each emulated engine listens on: started, reachable pods."""
        with self._lock:
            return {
                k: (p.ip, p.spec.port)
                for k, p in self._pods.items()
                if p.spec is not None and p.ip and p.started is not None and p.spec.reachable
            }

    def probe_targets(self) -> list[tuple[Key, str, str, Any, bool, Mapping[str, Any]]]:
        """(key, uid, pod IP, readiness probe, Ready in the API, pod) of running servers."""
        with self._lock:
            return [
                (k, p.uid, p.ip, p.spec.readiness, p.api_ready, p.obj)
                for k, p in sorted(self._pods.items())
                if p.spec is not None and p.ip and p.phase == "Running" and not p.terminating
            ]

    def engine(self, namespace: str, name: str) -> tuple[ServerSpec, bool]:
        """The pod's spec and whether its engine is up (start-up done)."""
        with self._lock:
            p = self._pods.get((namespace, name))
            if p is None or p.spec is None:
                raise EngineError(404, f"no emulated engine for {namespace}/{name}", "NotFound")
            return p.spec, self._up(p, self.now())

    # ------------------------------------------------------------------ engine behaviour
    def _serving_pod(self, key: Key) -> _Pod:
        p = self._pods.get(key)
        if p is None or p.spec is None:
            raise EngineError(503, "engine is gone", "ServiceUnavailable")
        if not self._up(p, self.now()):
            raise EngineError(503, "engine is starting", "ServiceUnavailable")
        return p

    def served_model(self, key: Key, requested: str | None) -> str | None:
        """The adapter a request for ``requested`` runs with (None: the base); 404 if unknown."""
        with self._lock:
            p = self._serving_pod(key)
            assert p.spec is not None
            if not requested or requested in p.spec.served_names:
                return None
            if requested in p.adapters:
                return requested
            if p.spec.engine == Engine.SGLANG:
                # SGLang serves whatever `model` names; `<name>:<adapter>` selects an adapter.
                _, sep, adapter = requested.partition(":")
                if sep and adapter in p.adapters:
                    return adapter
                if sep and adapter:
                    raise EngineError(400, f"LoRA adapter '{adapter}' is not loaded")
                return None
            if p.spec.engine == Engine.TEI:
                return None  # TEI serves its one model whatever the request names
            raise EngineError(404, f"The model `{requested}` does not exist.", "NotFoundError")

    def admit(self, key: Key, prompt_tokens: int, output_tokens: int) -> Request:
        """A request sent to the pod's address: it runs on the pod's replica model."""
        with self._lock:
            p = self._serving_pod(key)
            assert p.replica is not None
            now = self.now()
            p.replica.advance(now)
            req = Request(now, prompt_tokens, output_tokens)
            p.replica.admit(req, now)
            return req

    def progress(self, key: Key, req: Request) -> tuple[int, bool]:
        """(tokens generated so far, finished) of an admitted request, advanced to now."""
        with self._lock:
            p = self._pods.get(key)
            r = p.replica if p is not None else None
            if r is None:
                raise EngineError(503, "engine is gone", "ServiceUnavailable")
            r.advance(self.now())
            if not math.isnan(req.finish):
                return req.output_tokens, True
            if math.isnan(req.first_token):
                return 0, False
            return min(req.output_tokens, 1 + int(r.counter - req.d0)), False

    def record_request(self, key: Key, ok: bool) -> None:
        """One HTTP inference request answered (``ok``) or refused."""
        with self._lock:
            p = self._pods.get(key)
            if p is not None:
                p.requests += 1
                if ok:
                    p.successes += 1
                else:
                    p.failures += 1

    def models(self, key: Key) -> list[tuple[str, str, str | None]]:
        """(id, root, parent) of the base names and the loaded adapters."""
        with self._lock:
            p = self._serving_pod(key)
            assert p.spec is not None
            out: list[tuple[str, str, str | None]] = [
                (n, p.spec.model, None) for n in p.spec.served_names
            ]
            out += [(a, path, p.spec.base_name) for a, path in sorted(p.adapters.items())]
            return out

    def load_lora(self, key: Key, body: Mapping[str, Any]) -> str:
        lora_name, lora_path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(lora_name, str) or not lora_name:
            raise EngineError(400, "lora_name is required")
        if not isinstance(lora_path, str) or not lora_path:
            raise EngineError(400, "lora_path is required")
        with self._lock:
            p = self._serving_pod(key)
            assert p.spec is not None
            if not p.spec.lora:
                raise EngineError(
                    400,
                    "LoRA is not enabled; start the server with --enable-lora",
                    "BadRequestError",
                )
            if lora_name in p.adapters or lora_name in p.spec.served_names:
                raise EngineError(
                    400,
                    f"The lora adapter '{lora_name}' has already been loaded. If you want to "
                    "load the adapter in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            if NOT_FOUND_MARKER in lora_path:
                raise EngineError(
                    404,
                    f"Loading lora {lora_name} failed: No adapter found for {lora_path}",
                    "NotFoundError",
                )
            p.adapters[lora_name] = lora_path
            return lora_name

    def unload_lora(self, key: Key, body: Mapping[str, Any]) -> str:
        lora_name = body.get("lora_name")
        if not isinstance(lora_name, str) or not lora_name:
            raise EngineError(400, "lora_name is required")
        with self._lock:
            p = self._serving_pod(key)
            assert p.spec is not None
            if not p.spec.lora:
                raise EngineError(400, "LoRA is not enabled; start the server with --enable-lora")
            if p.adapters.pop(lora_name, None) is None:
                raise EngineError(
                    404, f"The lora adapter '{lora_name}' cannot be found.", "NotFoundError"
                )
            return lora_name

    def adapters(self, key: Key) -> dict[str, str]:
        with self._lock:
            return dict(self._serving_pod(key).adapters)

    def metrics_text(self, key: Key) -> str:
        """The pod's ``/metrics`` payload with its engine's names and labels."""
        with self._lock:
            p = self._pods.get(key)
            if p is None or p.spec is None:
                raise EngineError(404, "no such engine", "NotFound")
            if not self._up(p, self.now()):
                raise EngineError(503, "engine is starting", "ServiceUnavailable")
            r = p.replica
            assert r is not None
            r.advance(self.now())
            if p.spec.engine == Engine.VLLM:
                return _vllm_metrics(p, r)
            if p.spec.engine == Engine.SGLANG:
                return _sglang_metrics(p, r)
            return _tei_metrics(p, r)

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

    def set_routes(self, routes: Mapping[Key, Key]) -> None:
        """Where each ModelDeployment's requests go when its own pods are not the servers."""
        with self._lock:
            self._routes = dict(routes)

    def _serving(self, key: Key) -> list[_Pod]:
        """Pods of deployment ``key`` a gateway would route to: Ready in the API, engine up."""
        ns, deployment = self._routes.get(key, key)
        now = self.now()
        return [
            p
            for p in self._pods.values()
            if p.namespace == ns
            and p.deployment == deployment
            and p.api_ready
            and not p.terminating
            and self._up(p, now)
        ]

    def load_status(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            key = (namespace, name)
            tr = self._traffic_for(key)
            serving = self._serving(key)
            mine = [
                p
                for p in self._pods.values()
                if p.replica is not None and (p.namespace, p.deployment) == key
            ]
            return {
                **tr.load.to_json(),
                "gatewayQueue": len(tr.gateway) + tr.proxied_waiting,
                "readyReplicas": len(serving),
                "outstanding": sum(p.replica.outstanding for p in mine if p.replica),
                "arrivals": tr.arrivals,
                "completed": sum(p.replica.success for p in mine if p.replica),
                "dropped": tr.dropped,
                "lost": tr.lost,
            }

    def loads(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {f"{ns}/{n}": self.load_status(ns, n) for ns, n in sorted(self._traffic)}

    def pending(self) -> dict[Key, int]:
        """Requests waiting at the gateway, per ModelDeployment (the demand signal)."""
        with self._lock:
            return {k: len(tr.gateway) + tr.proxied_waiting for k, tr in self._traffic.items()}

    def set_schedule(self, schedule: Mapping[str, Any]) -> None:
        """Load steps per ``"ns/name"``; replaces the previous schedule."""
        parsed: dict[Key, list[tuple[float, LoadSpec]]] = {}
        for target, steps in schedule.items():
            ns, sep, name = str(target).partition("/")
            if not sep or not ns or not name:
                raise ControlError(400, f"schedule key {target!r} must be 'namespace/name'")
            rows = [steps] if isinstance(steps, Mapping) else list(steps or [])
            out: list[tuple[float, LoadSpec]] = []
            spec = LoadSpec()
            for row in rows:
                if not isinstance(row, Mapping):
                    raise ControlError(400, f"schedule step of {target} must be an object")
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

    def submit(
        self, namespace: str, name: str, prompt_tokens: int, output_tokens: int, count: int = 1
    ) -> None:
        """``count`` generated requests now (they queue at the gateway when nothing serves)."""
        with self._lock:
            for _ in range(count):
                self._arrive((namespace, name), self.now(), prompt_tokens, output_tokens)

    # ------------------------------------------------------------------ stand-in gateway
    def gateway_hold(self, namespace: str, name: str, delta: int) -> None:
        """A client request starts (+1) or stops (-1) waiting at the stand-in gateway."""
        with self._lock:
            tr = self._traffic_for((namespace, name))
            tr.proxied_waiting = max(0, tr.proxied_waiting + delta)

    def gateway_pick(self, namespace: str, name: str) -> tuple[str, int] | None:
        """The address of the deployment's Ready pod with the fewest requests, if any."""
        with self._lock:
            serving = [p for p in self._serving((namespace, name)) if p.ip and p.spec]
            if not serving:
                return None
            best = min(serving, key=lambda p: p.replica.outstanding if p.replica else 0)
            assert best.ip is not None and best.spec is not None
            return best.ip, best.spec.port

    # ------------------------------------------------------------------ simulation
    def _dispatch(self, key: Key, t: float) -> None:
        tr = self._traffic_for(key)
        if not tr.gateway:
            return
        ready = [p.replica for p in self._serving(key) if p.replica is not None]
        if not ready:
            return
        for r in ready:
            r.advance(t)
        while tr.gateway:
            best = min(ready, key=lambda r: r.outstanding)
            if best.outstanding >= best.model.max_num_seqs:
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
        """Generate and route the arrivals since the last tick; advance every engine to now."""
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
            for p in self._pods.values():
                if self._up(p, now) and p.replica is not None:
                    p.replica.advance(now)


# --------------------------------------------------------------------------- /metrics
def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_: str, rows: Sequence[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines += [
        f"{name}{{{labels}}} {float(v)!r}" if labels else f"{name} {float(v)!r}"
        for labels, v in rows
    ]
    return lines


def _vllm_metrics(p: _Pod, r: _Replica) -> str:
    assert p.spec is not None
    labels = f'engine="0",model_name="{_esc(p.spec.base_name)}"'
    kv = r.kv_reserved / r.model.kv_capacity_tokens
    lines: list[str] = []
    lines += _family(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        [(labels, len(r.heap))],
    )
    lines += _family(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        [(labels, len(r.prefill_q))],
    )
    lines += _family(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        [(labels, kv)],
    )
    lines += _family(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        [(labels, r.prompt_done)],
    )
    lines += _family(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        [(labels, r.generation_total())],
    )
    lines += _family(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        [
            (f'{labels},finished_reason="length"', r.success),
            (f'{labels},finished_reason="stop"', 0),
        ],
    )
    if p.spec.lora:
        running = ",".join(sorted(p.adapters))
        lines += _family(
            "vllm:lora_requests_info",
            "gauge",
            "Running stats on lora requests.",
            [
                (
                    f'max_lora="{p.spec.max_loras}",running_lora_adapters="{_esc(running)}",'
                    'waiting_lora_adapters=""',
                    time.time(),
                )
            ],
        )
    return "\n".join(lines) + "\n"


def _sglang_metrics(p: _Pod, r: _Replica) -> str:
    assert p.spec is not None
    labels = f'model_name="{_esc(p.spec.base_name)}"'
    running = len(r.heap)
    throughput = running / r.model.decode_step_s(running) if running else 0.0
    lines: list[str] = []
    lines += _family(
        "sglang:num_running_reqs", "gauge", "The number of running requests.", [(labels, running)]
    )
    lines += _family(
        "sglang:num_queue_reqs",
        "gauge",
        "The number of requests in the waiting queue.",
        [(labels, len(r.prefill_q))],
    )
    lines += _family(
        "sglang:token_usage",
        "gauge",
        "The token usage.",
        [(labels, r.kv_reserved / r.model.kv_capacity_tokens)],
    )
    lines += _family("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.", [(labels, 0)])
    lines += _family(
        "sglang:gen_throughput",
        "gauge",
        "The generation throughput (token/s).",
        [(labels, throughput)],
    )
    lines += _family(
        "sglang:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        [(labels, r.prompt_done)],
    )
    lines += _family(
        "sglang:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        [(labels, r.generation_total())],
    )
    lines += _family(
        "sglang:num_requests_total",
        "counter",
        "Number of requests processed.",
        [(f'{labels},is_streaming="false"', r.success)],
    )
    return "\n".join(lines) + "\n"


def _tei_metrics(p: _Pod, r: _Replica) -> str:
    """TEI's router metrics (metrics-exporter-prometheus: counters keep their names)."""
    single = 'method="single"'
    lines: list[str] = []
    lines += _family(
        "te_request_count", "counter", "Total number of requests", [(single, p.requests)]
    )
    lines += _family(
        "te_request_success",
        "counter",
        "Total number of successful requests",
        [(single, p.successes)],
    )
    lines += _family(
        "te_request_failure", "counter", "Total number of failed requests", [(single, p.failures)]
    )
    # TEI has no gauge of the batch being run; this model counts a request as queued until
    # its batch is done.
    lines += _family("te_queue_size", "gauge", "Queue size", [("", len(r.prefill_q) + len(r.heap))])
    return "\n".join(lines) + "\n"
