"""Leader election on a coordination.k8s.io/v1 Lease, and fencing of the operator's writes.

Several operator replicas run; exactly one (the holder of the Lease) reconciles and runs the
autoscaler, LoRA, preload and resync loops. The others wait, serving only their health probe.

The rules follow client-go's leaderelection package:

* a candidate takes the Lease when nobody holds it, or when the record it observed has not
  changed for the record's ``leaseDurationSeconds`` measured on the candidate's **own** clock
  from the moment it first saw that record (so clock skew between machines does not matter);
* the holder renews every ``retry_period``; each successful renew is timed from the moment
  the request was *sent*;
* **fencing**: the holder may write only while ``now < last renew sent + renew_deadline``, and
  ``renew_deadline < lease_duration``, so it stops writing before any candidate can take over.
  Every mutating request of the operator's API client is checked (``fence``); when the deadline
  passes without a renew, or another holder is seen, the process exits at once (a restarted
  container comes back as a candidate).

The election logic (``Elector``) is pure: the Lease store and the clock are injected, and the
unit tests drive it with a fake store and a fake clock. ``KubeLeaseStore`` is the thin port.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

log = logging.getLogger("modelplane.leader")

#: HTTP methods that change state; the fence checks leadership before each.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" when released
    duration_s: float
    transitions: int
    version: str  # the object's resourceVersion: opaque, changes on every write
    acquired_at: str = ""  # the Lease's acquireTime as written (kept across renews)


class LeaseConflictError(Exception):
    """The Lease was written by someone else since it was read (or created meanwhile)."""


class NotLeaderError(RuntimeError):
    """A write was attempted by a replica that does not (or no longer) hold the Lease."""


class LeaseStore(Protocol):
    def get(self) -> LeaseRecord | None: ...

    def create(self, holder: str, duration_s: float) -> LeaseRecord: ...

    def update(
        self, prev: LeaseRecord, holder: str, duration_s: float, transitions: int, acquired: bool
    ) -> LeaseRecord: ...


class Elector:
    """Acquire, renew and release one Lease; answer "may I write now?"."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "leader election needs 0 < retryPeriod < renewDeadline < leaseDuration "
                f"(got {retry_period}, {renew_deadline}, {lease_duration}); "
                "fix the chart's leaderElection values"
            )
        self.store = store
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        #: Clock reading when the last successful acquire/renew request was sent.
        self._renewed_at: float | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ queries
    def is_leader(self) -> bool:
        with self._lock:
            return self._renewed_at is not None and self.clock() < (
                self._renewed_at + self.renew_deadline
            )

    def deadline(self) -> float | None:
        """Clock reading after which this replica must not write (None: not the leader)."""
        with self._lock:
            return None if self._renewed_at is None else self._renewed_at + self.renew_deadline

    def ensure_leader(self) -> None:
        if not self.is_leader():
            raise NotLeaderError(
                f"{self.identity} does not hold the leader Lease (lost or never acquired); "
                "refusing to write"
            )

    def observed_holder(self) -> str:
        return self._observed.holder if self._observed else ""

    # ------------------------------------------------------------------ transitions
    def try_acquire_or_renew(self) -> bool:
        """One round: take the Lease if free or expired, renew it if ours. True when we hold it."""
        sent = self.clock()
        mine = self._observed
        if mine is not None and mine.holder == self.identity and self.is_leader():
            # Renew straight from the record we wrote: one request, not a read and a write (a
            # conflict means someone else wrote it; the read below then tells who).
            try:
                new = self.store.update(
                    mine, self.identity, self.lease_duration, mine.transitions, False
                )
            except Exception as e:
                log.info("leader Lease renew failed (%s); re-reading it", e)
            else:
                with self._lock:
                    self._observed, self._observed_at = new, sent
                    self._renewed_at = sent
                return True
        try:
            rec = self.store.get()
            if rec is None:
                new = self.store.create(self.identity, self.lease_duration)
            else:
                if self._observed is None or rec.version != self._observed.version:
                    self._observed, self._observed_at = rec, sent
                if rec.holder and rec.holder != self.identity:
                    with self._lock:
                        self._renewed_at = None  # someone else holds it: stop writing at once
                    if sent < self._observed_at + rec.duration_s:
                        return False
                    log.info(
                        "leader Lease of %s expired (unchanged for %.0fs): taking over",
                        rec.holder,
                        rec.duration_s,
                    )
                acquired = rec.holder != self.identity
                new = self.store.update(
                    rec,
                    self.identity,
                    self.lease_duration,
                    rec.transitions + (1 if acquired else 0),
                    acquired,
                )
        except LeaseConflictError:
            return self.is_leader()
        except Exception as e:  # network errors, apiserver down: keep the old deadline
            log.warning("leader Lease request failed: %s", e)
            return self.is_leader()
        with self._lock:
            was = self._renewed_at is not None
            self._observed, self._observed_at = new, sent
            self._renewed_at = sent
        if not was:
            log.info("%s acquired the leader Lease", self.identity)
        return True

    def release(self) -> None:
        """Give the Lease up (graceful shutdown) so a standby takes over at once."""
        with self._lock:
            held = self._renewed_at is not None
            self._renewed_at = None
        if not held:
            return
        try:
            rec = self.store.get()
            if rec is not None and rec.holder == self.identity:
                self.store.update(rec, "", 1.0, rec.transitions, False)
                log.info("%s released the leader Lease", self.identity)
        except Exception as e:
            log.warning("could not release the leader Lease: %s", e)

    # ------------------------------------------------------------------ loops
    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            stop.wait(self.retry_period * (1 + 0.2 * random.random()))
        return False

    def keep_renewing(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew every ``retry_period``; call ``on_lost`` the moment writing is no longer safe."""
        while not stop.is_set():
            self.try_acquire_or_renew()
            deadline = self.deadline()
            now = self.clock()
            if deadline is None or now >= deadline:
                if not stop.is_set():
                    on_lost()
                return
            stop.wait(max(0.0, min(self.retry_period, deadline - now)))


# ---------------------------------------------------------------------- the Kubernetes port
def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaseStore:
    """The Lease as a coordination.k8s.io/v1 object (optimistic concurrency on resourceVersion)."""

    def __init__(self, api: Any, namespace: str, name: str, timeout: float) -> None:
        from kubernetes import client

        self.coord = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout

    @staticmethod
    def _record(body: dict[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity") or "",
            duration_s=float(spec.get("leaseDurationSeconds") or 15),
            transitions=int(spec.get("leaseTransitions") or 0),
            version=str(body["metadata"]["resourceVersion"]),
            acquired_at=spec.get("acquireTime") or "",
        )

    def get(self) -> LeaseRecord | None:
        import json

        from kubernetes.client.rest import ApiException

        try:
            raw = self.coord.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._record(json.loads(raw.data))

    def _body(self, holder: str, duration_s: float, transitions: int, acquired_at: str) -> Any:
        now = _now_micro()
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, round(duration_s)),
                "leaseTransitions": transitions,
                "acquireTime": acquired_at or now,
                "renewTime": now,
            },
        }

    def _call(self, fn: Callable[..., Any], *args: Any, conflicts: tuple[int, ...]) -> LeaseRecord:
        import json

        from kubernetes.client.rest import ApiException

        try:
            raw = fn(*args, _preload_content=False, _request_timeout=self.timeout)
        except ApiException as e:
            if e.status in conflicts:
                raise LeaseConflictError(f"{e.status} {e.reason}") from e
            raise
        return self._record(json.loads(raw.data))

    def create(self, holder: str, duration_s: float) -> LeaseRecord:
        body = self._body(holder, duration_s, 0, "")
        return self._call(
            self.coord.create_namespaced_lease, self.namespace, body, conflicts=(409,)
        )

    def update(
        self, prev: LeaseRecord, holder: str, duration_s: float, transitions: int, acquired: bool
    ) -> LeaseRecord:
        """A replace guarded by the resourceVersion read: a concurrent writer gets 409."""
        body = self._body(holder, duration_s, transitions, "" if acquired else prev.acquired_at)
        body["metadata"]["resourceVersion"] = prev.version
        return self._call(
            self.coord.replace_namespaced_lease,
            self.name,
            self.namespace,
            body,
            conflicts=(404, 409, 422),
        )


# ---------------------------------------------------------------------- process wiring
_current: Elector | None = None
_stop = threading.Event()


def identity() -> str:
    """Unique per process: the pod name (the hostname in a pod) and a random suffix."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:10]}"


def api_client() -> Any:
    """A client of its own for the Lease (never fenced: renewing is how we keep writing)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    # No transparent retries: a renew that times out must be retried by the elector itself,
    # within its deadline, not by urllib3 three times over.
    cfg.retries = False
    return client.ApiClient(cfg)


def current() -> Elector | None:
    return _current


def fence(
    api: Any, elector: Elector | None = None, on_lost: Callable[[], None] | None = None
) -> Any:
    """Check leadership before every mutating request of ``api`` (a kubernetes ApiClient): a
    replica that no longer holds the Lease exits at once instead of writing. Without leader
    election (a single replica) the client is returned unchanged."""
    elector = elector or _current
    if elector is None:
        return api
    lost = on_lost or _lost
    api.user_agent = f"modelplane/{elector.identity}"  # the audit log tells replicas apart
    original = api.call_api

    def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() in WRITE_METHODS and not elector.is_leader():
            lost()
            elector.ensure_leader()  # raises (reached only when on_lost returns)
        return original(method, url, *args, **kwargs)

    api.call_api = call_api
    return api


def check() -> None:
    """Exit at once if this replica elected itself but no longer holds the Lease: called before
    a kopf handler runs, since kopf writes its own annotations after a handler returns."""
    if _current is not None and not _current.is_leader():
        _lost()


def _lost() -> None:
    log.error(
        "leader Lease lost (not renewed within the renew deadline, or taken over): "
        "exiting so that this replica restarts as a standby"
    )
    logging.shutdown()
    os._exit(1)


def elect(
    api: Any,
    *,
    namespace: str,
    name: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    on_lost: Callable[[], None] = _lost,
) -> Elector | None:
    """Block until this process leads, then keep renewing in a daemon thread. None if stopped
    (a signal) before it led."""
    global _current
    me = identity()
    api.user_agent = f"modelplane-lease/{me}"  # the audit log tells the replicas apart
    elector = Elector(
        KubeLeaseStore(api, namespace, name, timeout=max(retry_period, renew_deadline / 3)),
        me,
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
    )
    log.info("%s waiting for the leader Lease %s/%s", elector.identity, namespace, name)
    if not elector.acquire(_stop):
        return None
    _current = elector
    threading.Thread(
        target=elector.keep_renewing, args=(_stop, on_lost), name="modelplane-lease", daemon=True
    ).start()
    return elector


def resign() -> None:
    """Stop renewing and release the Lease (graceful shutdown)."""
    _stop.set()
    if _current is not None:
        _current.release()


@contextmanager
def standby_health(host: str, port: int) -> Iterator[None]:
    """While waiting for the Lease, answer the chart's /healthz probes (kopf serves them once
    it runs), so a standby is neither restarted by its startup probe nor counted unavailable."""
    if not port:
        yield
        return

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz"
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(b'{"leader": false}')

        def log_message(self, *args: Any) -> None:
            return

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
