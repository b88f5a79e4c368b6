"""The emulator's side of the Kubernetes API: watches in, kubelet-like and gateway-like writes out.

- ``watch_pods`` / ``watch_nodes``: list + watch into the ``Emulator`` (dicts as the API serves
  them), relisting after every watch timeout or ``410 Gone``;
- ``ReadinessProber``: the kubelet's readiness prober for model-server pods. It probes each
  running pod's ``readinessProbe`` (``httpGet`` path/port at the pod IP, ``tcpSocket``) every
  ``period`` seconds, applies the probe's success/failure thresholds, and patches the pod's
  status when the verdict flips: the ``Ready`` and ``ContainersReady`` conditions and
  ``containerStatuses[].ready`` (the KWOK stages leave model-server pods not Ready);
- ``DemandPublisher``: what a gateway publishes while requests wait for a ModelDeployment
  (typically at zero replicas): annotations ``modelplane.io/pending-requests`` (an integer) and
  ``modelplane.io/pending-requests-at`` (RFC 3339, UTC), at most once per ``min_interval``
  while the count changes, every ``refresh_interval`` while it stays positive (freshness),
  and ``"0"`` once drained;
- ``complete_cache_jobs``: cache-fill Job pods whose modelled download is done are patched
  ``Succeeded`` (the KWOK stages leave pods labelled ``modelplane.io/cache-key`` running).

``KubeWriter`` is what the writers need; ``ApiWriter`` implements it with the kubernetes client,
tests pass a fake.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelplane_testbed.emulator.core import Emulator, Key, rfc3339
from modelplane_testbed.emulator.pods import Probe

__all__ = [
    "ANNOTATION_PENDING",
    "ANNOTATION_PENDING_AT",
    "ApiWriter",
    "DemandPublisher",
    "KubeWriter",
    "ReadinessProber",
    "complete_cache_jobs",
    "probe",
    "ready_patch",
    "watch_nodes",
    "watch_pods",
]

log = logging.getLogger("modelplane.emulator.kube")

ANNOTATION_PENDING = "modelplane.io/pending-requests"
ANNOTATION_PENDING_AT = "modelplane.io/pending-requests-at"
GROUP, VERSION, PLURAL = "modelplane.io", "v1alpha1", "modeldeployments"


class KubeWriter(Protocol):
    def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Strategic-merge patch of the pod's status subresource."""

    def patch_model_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """JSON merge patch of a ModelDeployment (metadata only)."""


class NotFoundError(Exception):
    """The object to patch does not exist."""


class ApiWriter:
    """``KubeWriter`` over a kubernetes ``ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.patch_namespaced_pod_status(
                name,
                namespace,
                dict(patch),
                _content_type="application/strategic-merge-patch+json",
            )
        except ApiException as e:
            if e.status == 404:
                raise NotFoundError(f"pod {namespace}/{name}") from None
            raise

    def patch_model_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                dict(patch),
                _content_type="application/merge-patch+json",
            )
        except ApiException as e:
            if e.status == 404:
                raise NotFoundError(f"ModelDeployment {namespace}/{name}") from None
            raise


# --------------------------------------------------------------------------- readiness
def probe(ip: str, p: Probe, timeout: float | None = None) -> bool:
    """Run a readiness probe against ``ip`` once (the kubelet's rules: 200-399 is success)."""
    t = p.timeout_s if timeout is None else timeout
    if p.kind == "none":
        return True
    if p.kind == "tcp":
        try:
            with socket.create_connection((ip, p.port), timeout=t):
                return True
        except OSError:
            return False
    try:
        with urllib.request.urlopen(f"http://{ip}:{p.port}{p.path}", timeout=t) as r:
            return 200 <= int(r.status) < 400
    except urllib.error.HTTPError as e:
        return 200 <= e.code < 400
    except OSError:
        return False


def ready_patch(pod: Mapping[str, Any], container: str, ready: bool, now: str) -> dict[str, Any]:
    """The status patch a kubelet makes when ``container``'s readiness becomes ``ready``."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    current = {c.get("name"): dict(c) for c in status.get("containerStatuses") or []}
    statuses = []
    for c in spec.get("containers") or []:
        name = c.get("name")
        st = current.get(name) or {
            "name": name,
            "image": c.get("image"),
            "imageID": "",
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": status.get("startTime") or now}},
        }
        if name == container:
            st["ready"] = ready
        else:
            st.setdefault("ready", True)
        statuses.append(st)
    all_ready = all(s.get("ready") for s in statuses)
    unready = [s["name"] for s in statuses if not s.get("ready")]
    conds = []
    for kind in ("Ready", "ContainersReady"):
        cond: dict[str, Any] = {
            "type": kind,
            "status": "True" if all_ready else "False",
            "lastTransitionTime": now,
            "lastProbeTime": None,
            "reason": None if all_ready else "ContainersNotReady",
            "message": None if all_ready else f"containers with unready status: {unready}",
        }
        conds.append(cond)
    return {"status": {"conditions": conds, "containerStatuses": statuses}}


@dataclass
class _ProbeState:
    uid: str
    verdict: bool = False  # the kubelet starts a container not ready
    successes: int = 0
    failures: int = 0
    reported: bool | None = None
    reported_at: float = 0.0


class ReadinessProber:
    """Probes every running model-server pod and reports flips of readiness to the API."""

    #: Re-assert a verdict the API does not show after this long (someone else wrote it).
    REASSERT_S = 5.0

    def __init__(
        self,
        emulator: Emulator,
        writer: KubeWriter,
        *,
        clock: Callable[[], float] = time.monotonic,
        check: Callable[[str, Probe], bool] = probe,
    ) -> None:
        self.emulator = emulator
        self.writer = writer
        self.clock = clock
        self.check = check
        self._state: dict[Key, _ProbeState] = {}

    def probe_once(self) -> int:
        """One round over every target; returns the number of patches made."""
        patches = 0
        seen = set()
        now = self.clock()
        for key, uid, ip, p, api_ready, pod in self.emulator.probe_targets():
            seen.add(key)
            st = self._state.get(key)
            if st is None or st.uid != uid:
                # What the API shows now counts as reported (KWOK starts it not Ready).
                st = self._state[key] = _ProbeState(uid, reported=api_ready, reported_at=now)
            ok = self.check(ip, p)
            if ok:
                st.successes += 1
                st.failures = 0
                if not st.verdict and st.successes >= max(1, p.success_threshold):
                    st.verdict = True
            else:
                st.failures += 1
                st.successes = 0
                if st.verdict and st.failures >= max(1, p.failure_threshold):
                    st.verdict = False
            stale = st.verdict != api_ready and now - st.reported_at >= self.REASSERT_S
            if st.reported == st.verdict and not stale:
                continue
            spec, _ = self.emulator.engine(*key)
            body = ready_patch(pod, spec.container, st.verdict, rfc3339())
            try:
                self.writer.patch_pod_status(key[0], key[1], body)
            except NotFoundError:
                continue
            except Exception as e:
                log.warning("readiness patch of %s/%s failed: %s", *key, e)
                continue
            st.reported, st.reported_at = st.verdict, now
            patches += 1
            log.info("pod %s/%s is %s", *key, "Ready" if st.verdict else "not Ready")
        for key in [k for k in self._state if k not in seen]:
            del self._state[key]
        return patches

    def run(self, stop: threading.Event, period: float = 0.5) -> None:
        while not stop.wait(period):
            try:
                self.probe_once()
            except Exception:
                log.exception("readiness round failed")


# --------------------------------------------------------------------------- demand
@dataclass
class _Published:
    value: int = 0
    at: float = -1e18  # clock of the last patch
    wall: str | None = None
    error: str | None = None


class DemandPublisher:
    """Publishes gateway queues as ModelDeployment annotations, like a real gateway would.

    A changed count is published at most once per ``min_interval``; an unchanged positive
    count is re-published every ``refresh_interval`` so that it stays fresh (the autoscaler
    ignores a count older than its freshness limit, 30 s at least: a gateway that stopped
    publishing must not keep replicas up).
    """

    def __init__(
        self,
        emulator: Emulator,
        writer: KubeWriter,
        *,
        min_interval: float = 1.0,
        refresh_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.emulator = emulator
        self.writer = writer
        self.min_interval = min_interval
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.wall = wall
        self._state: dict[Key, _Published] = {}
        self._lock = threading.Lock()

    def publish_once(self) -> int:
        """Patch every ModelDeployment whose pending count changed (rate-limited)."""
        patches = 0
        now = self.clock()
        for key, pending in sorted(self.emulator.pending().items()):
            with self._lock:
                st = self._state.setdefault(key, _Published())
                age = now - st.at
                if age < self.min_interval:
                    continue
                if pending == st.value and (pending == 0 or age < self.refresh_interval):
                    continue
            stamp = rfc3339(self.wall())
            body = {
                "metadata": {
                    "annotations": {ANNOTATION_PENDING: str(pending), ANNOTATION_PENDING_AT: stamp}
                }
            }
            error = None
            try:
                self.writer.patch_model_deployment(key[0], key[1], body)
                patches += 1
            except NotFoundError as e:
                error = f"{e} not found"  # nothing to tell; retried when the count changes
            except Exception as e:
                log.warning("demand patch of %s/%s failed: %s", *key, e)
                with self._lock:
                    st.error = str(e)
                continue
            with self._lock:
                st.value, st.at, st.wall, st.error = pending, now, stamp, error
        return patches

    def status(self) -> dict[str, Any]:
        pending = self.emulator.pending()
        with self._lock:
            keys = sorted(set(pending) | set(self._state))
            return {
                f"{ns}/{name}": {
                    "pending": pending.get((ns, name), 0),
                    "published": self._state[(ns, name)].value if (ns, name) in self._state else 0,
                    "publishedAt": self._state[(ns, name)].wall
                    if (ns, name) in self._state
                    else None,
                    "error": self._state[(ns, name)].error if (ns, name) in self._state else None,
                }
                for ns, name in keys
            }


# --------------------------------------------------------------------------- cache Jobs
def complete_cache_jobs(emulator: Emulator, writer: KubeWriter) -> int:
    """Report the cache-fill Job pods whose download is done as Succeeded."""
    done = 0
    for ns, name, pod in emulator.due_jobs():
        now = rfc3339()
        status = pod.get("status") or {}
        started = status.get("startTime") or now
        statuses = [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": started,
                        "finishedAt": now,
                    }
                },
            }
            for c in (pod.get("spec") or {}).get("containers") or []
        ]
        conds = [
            {"type": kind, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
            for kind in ("Ready", "ContainersReady")
        ]
        body = {
            "status": {"phase": "Succeeded", "conditions": conds, "containerStatuses": statuses}
        }
        try:
            writer.patch_pod_status(ns, name, body)
        except NotFoundError:
            pass
        except Exception as e:
            log.warning("completing cache Job pod %s/%s failed: %s", ns, name, e)
            continue
        emulator.job_completed(ns, name)
        done += 1
        log.info("cache Job pod %s/%s succeeded", ns, name)
    return done


# --------------------------------------------------------------------------- watches
def _to_dict(api_client: Any, obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = api_client.sanitize_for_serialization(obj)
    return out


def watch_pods(
    emulator: Emulator,
    api_client: Any,
    namespace: str | None,
    label: str,
    stop: threading.Event,
    on_change: Callable[[], None] = lambda: None,
) -> None:
    """List + watch the pods carrying ``label`` into the emulator until ``stop``."""
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
            listing = lister(label_selector=label)
            emulator.sync_pods(
                [_to_dict(api_client, p) for p in listing.items], namespace, label=label
            )
            on_change()
            w = watch.Watch()
            for ev in w.stream(
                lister,
                label_selector=label,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=30,
            ):
                if stop.is_set():
                    w.stop()
                    break
                obj = ev["object"]
                if ev["type"] == "DELETED":
                    emulator.remove_pod(obj.metadata.namespace, obj.metadata.name)
                elif ev["type"] in ("ADDED", "MODIFIED"):
                    emulator.observe_pod(_to_dict(api_client, obj))
                on_change()
        except ApiException as e:
            if e.status != 410:  # 410 Gone: resource version too old, just relist
                log.warning("pod watch failed: %s %s", e.status, e.reason)
                stop.wait(1.0)
        except Exception as e:
            log.warning("pod watch failed: %s", e)
            stop.wait(1.0)


def watch_nodes(
    emulator: Emulator,
    api_client: Any,
    stop: threading.Event,
    synced: threading.Event | None = None,
) -> None:
    """List + watch nodes (their labels say which weights a node caches); ``synced`` is set
    after the first full listing."""
    from kubernetes import client, watch
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    while not stop.is_set():
        try:
            listing = core.list_node()
            emulator.sync_nodes([_to_dict(api_client, n) for n in listing.items])
            if synced is not None:
                synced.set()
            w = watch.Watch()
            for ev in w.stream(
                core.list_node,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=30,
            ):
                if stop.is_set():
                    w.stop()
                    break
                obj = ev["object"]
                if ev["type"] == "DELETED":
                    emulator.remove_node(obj.metadata.name)
                elif ev["type"] in ("ADDED", "MODIFIED"):
                    emulator.observe_node(_to_dict(api_client, obj))
        except ApiException as e:
            if e.status != 410:
                log.warning("node watch failed: %s %s", e.status, e.reason)
                stop.wait(1.0)
        except Exception as e:
            log.warning("node watch failed: %s", e)
            stop.wait(1.0)
