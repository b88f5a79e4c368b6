"""kopf wiring: the only module that imports kopf. Handlers parse, delegate, map errors.

* create/update/resume of a ModelDeployment and a periodic resync -> one level-based `reconcile`;
* events of the children (Deployments, pods) -> a debounced re-reconcile of their owner, so
  status follows the model servers without waiting for the resync;
* delete -> nothing to do per object (owner references garbage-collect the children); the
  shared NodePools are swept for classes no longer in use.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pydantic import ValidationError

from modelplane.adapters.autoscaler import start_autoscaler
from modelplane.adapters.kube import Kube, WriteRejectedError
from modelplane.adapters.lora import HttpEngine, LoraLoop
from modelplane.adapters.preload import PreloadLoop
from modelplane.api.enums import CapacityProvider, FailureReason
from modelplane.api.v1alpha1 import GROUP, VERSION, ModelDeployment
from modelplane.builders.objects import LABEL_DEPLOYMENT, BuildContext
from modelplane.builders.preload import PreloadView
from modelplane.builders.resolve import ResolveError
from modelplane.builders.serverless import LABEL_BACKEND
from modelplane.reconcile.core import AdapterView, AutoscalerView, Plan, compute_status, plan
from modelplane.settings import OperatorSettings
from modelplane.wiring import leader

log = logging.getLogger("modelplane.operator")

RECONCILES = Counter("modelplane_reconciles_total", "Reconciles of ModelDeployments", ["result"])
WRITES = Counter("modelplane_api_writes_total", "Write requests the reconciler made", ["what"])
DURATION = Histogram("modelplane_reconcile_duration_seconds", "Time per reconcile")
BY_PHASE = Gauge("modelplane_modeldeployments", "ModelDeployments by phase", ["phase"])
PHASES = (
    "Pending",
    "Provisioning",
    "Loading",
    "Ready",
    "ScaledToZero",
    "Updating",
    "Degraded",
    "Failed",
)


@dataclass
class Runtime:
    """Everything handlers need, built once at start-up and kept in kopf's memo."""

    settings: OperatorSettings
    kube: Kube
    ctx: BuildContext
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    #: Serverless backend name -> "namespace/name" of the tenants last seen using it.
    backend_tenants: dict[str, set[str]] = field(default_factory=dict)
    #: FineTuned "namespace/name" -> per-adapter load state, written by the LoRA loop.
    adapters: dict[str, tuple[AdapterView, ...]] = field(default_factory=dict)
    #: NodeLocal preload view per "namespace/name", written by the preload loop.
    preload: dict[str, PreloadView] = field(default_factory=dict)
    #: (namespace, deployment) pairs the LoRA loop loaded adapters into last round.
    lora_targets: set[tuple[str, str]] = field(default_factory=set)
    #: Latest autoscaler decision per "namespace/name", written by the autoscaler loop.
    decisions: dict[str, AutoscalerView] = field(default_factory=dict)
    #: "namespace/name" -> (uid, generation, error) of a write the apiserver refused for good:
    #: not tried again until the spec changes (a new generation).
    rejected: dict[str, tuple[str | None, int, ResolveError]] = field(default_factory=dict)

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        with self.guard:
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def trigger(self, namespace: str, name: str, delay: float = 0.5) -> None:
        with self.guard:
            self.pending.setdefault(f"{namespace}/{name}", time.monotonic() + delay)

    def count_phase(self, key: str, phase: str | None) -> None:
        with self.guard:
            if phase is None:
                self.phases.pop(key, None)
            else:
                self.phases[key] = phase
            counts = {p: 0 for p in PHASES}
            for ph in self.phases.values():
                counts[ph] = counts.get(ph, 0) + 1
        for ph, n in counts.items():
            BY_PHASE.labels(ph).set(n)


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    """One level-based pass over one ModelDeployment: observe, plan, act, report."""
    try:
        md = ModelDeployment.model_validate(body)
    except ValidationError as e:  # the CRD schema makes this rare (e.g. an older schema)
        raise kopf.PermanentError(f"spec does not match the API: {e.errors()[0]['msg']}") from e
    key = f"{md.metadata.namespace}/{md.metadata.name}"
    started = time.perf_counter()
    with rt.locked(key):
        try:
            obs = rt.kube.observe(
                md,
                dict(body.get("status") or {}),
                rt.ctx,
                rt.decisions.get(key),
                rt.adapters.get(key),
                rt.preload.get(key),
            )
            p = plan(obs)
            writes, p = _carry_out(rt, key, md, p)
            status, events = compute_status(obs, p)
            if rt.kube.write_status(md, obs.previous_status, status):
                writes += 1
                WRITES.labels("status").inc()
            for ev in events:
                rt.kube.post_event(md, ev)
            if rt.settings.capacity_provider == CapacityProvider.KARPENTER:
                writes += rt.kube.sync_nodepools(obs.classes)
            if p.backend is not None:
                with rt.guard:
                    rt.backend_tenants.setdefault(p.backend.name, set()).add(key)
            if md.spec.base is not None and md.spec.base.deployment:
                # The base enables LoRA for its FineTuned dependents: let it see this one.
                rt.trigger(md.metadata.namespace or "default", md.spec.base.deployment)
        except ApiException as e:
            RECONCILES.labels("error").inc()
            if e.status == 409:  # written since we read it: re-read and recompute right away
                rt.trigger(md.metadata.namespace or "default", md.metadata.name, delay=0)
            if e.status in (404, 409):  # gone meanwhile, or a concurrent writer: retry soon
                raise kopf.TemporaryError(f"{e.status} {e.reason}; retrying", delay=2) from e
            raise kopf.TemporaryError(f"API error {e.status} {e.reason}", delay=10) from e
        finally:
            DURATION.observe(time.perf_counter() - started)
    if p.apply or p.delete or p.scale_to is not None:
        WRITES.labels("children").inc(len(p.apply) + len(p.delete) + (p.scale_to is not None))
    RECONCILES.labels("ok").inc()
    rt.count_phase(key, status.get("phase"))
    log.debug("reconciled %s: phase=%s writes=%d", key, status.get("phase"), writes)


def _carry_out(rt: Runtime, key: str, md: ModelDeployment, p: Plan) -> tuple[int, Plan]:
    """Carry out the plan unless the apiserver refused it for this generation already. A
    refused write (4xx) fails the plan with the apiserver's message: Ready=False, reason
    WriteRejected, and no retry until the spec changes."""
    version = (md.metadata.uid, md.metadata.generation or 0)
    with rt.guard:
        known = rt.rejected.get(key)
    if known is not None and known[:2] == version:
        return 0, dataclasses.replace(
            p, resolved=None, error=known[2], apply=[], delete=[], scale_to=None
        )
    try:
        writes = rt.kube.carry_out(md, p)
    except WriteRejectedError as e:
        error = ResolveError(
            FailureReason.WRITE_REJECTED.value,
            f"{e}. Change the spec so the object it derives is valid; modelplane retries when "
            "the spec changes",
        )
        log.warning("%s: %s", key, error.message)
        with rt.guard:
            rt.rejected[key] = (*version, error)
        return e.writes, dataclasses.replace(
            p, resolved=None, error=error, apply=[], delete=[], scale_to=None
        )
    with rt.guard:
        rt.rejected.pop(key, None)
    return writes, p


def _runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


def _worker(rt: Runtime) -> None:
    """Re-reconcile owners of changed children, at most once per debounce interval. Survives
    any error (an apiserver restart surfaces as urllib3 errors, not ApiExceptions)."""
    while not rt.stop.wait(0.2):
        try:
            work_due(rt)
        except Exception:
            log.exception("worker round failed; continuing")


def work_due(rt: Runtime) -> None:
    """Reconcile every ModelDeployment whose trigger is due; one failing does not stop the rest."""
    now = time.monotonic()
    with rt.guard:
        due = [k for k, t in rt.pending.items() if t <= now]
        for k in due:
            rt.pending.pop(k)
    for key in due:
        ns, name = key.split("/", 1)
        try:
            body = rt.kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, "modeldeployments", name
            )
        except ApiException as e:
            if e.status == 404:
                rt.count_phase(key, None)
                continue
            log.warning("could not read %s: %s; retrying", key, e.reason)
            rt.trigger(ns, name, delay=5)
            continue
        except Exception as e:  # e.g. urllib3 MaxRetryError while the apiserver restarts
            log.warning("could not read %s: %s; retrying", key, e)
            rt.trigger(ns, name, delay=5)
            continue
        if body["metadata"].get("deletionTimestamp"):
            continue
        try:
            reconcile(rt, body)
        except (kopf.TemporaryError, kopf.PermanentError) as e:
            log.info("reconcile of %s deferred: %s", key, e)
            rt.trigger(ns, name, delay=5)
        except Exception:
            log.exception("reconcile of %s failed", key)
            rt.trigger(ns, name, delay=10)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    s = OperatorSettings()
    logging.getLogger("modelplane").setLevel(s.log_level)
    # Handler progress and the diff base live in annotations under our own prefix, not kopf's.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # We post our own Events on phase transitions; kopf's per-handler chatter stays in logs.
    settings.posting.level = logging.ERROR
    # Re-establish watches every few minutes so a silently dropped connection cannot stall us.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60
    # No kopf peering: replicas elect a leader on a Lease before kopf starts (wiring/leader.py).
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.execution.max_workers = 8
    # Leader election: every write of this client first checks we still hold the Lease.
    kube = Kube(leader.fence(_api_client()))
    rt = Runtime(
        settings=s,
        kube=kube,
        ctx=BuildContext(
            capacity_provider=s.capacity_provider,
            cluster_domain=s.cluster_domain,
            operator_namespace=s.operator_namespace,
            placeholder_priority_class=s.placeholder_priority_class,
            shared_volume_storage_class=s.shared_volume_storage_class,
        ),
    )
    memo["runtime"] = rt
    if s.metrics_port:
        start_http_server(s.metrics_port, addr=s.metrics_host)
    threading.Thread(target=_worker, args=(rt,), name="modelplane-worker", daemon=True).start()
    threading.Thread(target=_resync_loop, args=(rt,), name="modelplane-resync", daemon=True).start()
    pre = PreloadLoop(kube, rt, rt.ctx, s.namespaces)
    threading.Thread(
        target=pre.run, args=(rt.stop,), name="modelplane-preload", daemon=True
    ).start()
    # FineTuned adapters: each Ready pod's engine API, at the pod's address.
    lora = LoraLoop(kube, HttpEngine(), rt, s.namespaces)
    threading.Thread(target=lora.run, args=(rt.stop,), name="modelplane-lora", daemon=True).start()
    start_autoscaler(
        rt,
        kube,
        s.namespaces,
        metrics_source=s.metrics_source,
        interval_seconds=s.autoscaler_interval_seconds,
    )  # daemon thread
    log.info(
        "modelplane operator started: provider=%s resync=%ss",
        s.capacity_provider.value,
        s.resync_interval_seconds,
    )


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get("runtime")
    if rt is not None:
        rt.stop.set()


@kopf.on.resume(GROUP, VERSION, "modeldeployments")
@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    leader.check()  # a replica that lost the Lease exits before kopf writes its annotations
    reconcile(_runtime(memo), dict(body))


def _resync_loop(rt: Runtime) -> None:
    """Level-based resync: every interval, queue a reconcile of every ModelDeployment.

    A loop with one list request rather than a kopf timer per object: kopf guards timers with a
    finalizer, and a finalizer would block deleting a ModelDeployment while the operator is down
    (Argo CD and Flux prunes would hang); owner references already make deletion safe. Any
    error is logged and retried after 1, 2, 4 ... seconds (at most the interval): the loop
    never dies, also not of a connection error while the apiserver restarts.
    """
    interval = rt.settings.resync_interval_seconds
    failures = 0
    while not rt.stop.wait(interval if not failures else min(interval, 2.0 ** (failures - 1))):
        try:
            resync_once(rt)
        except Exception as e:
            failures += 1
            log.warning("resync failed (%s: %s); retrying", type(e).__name__, e)
        else:
            failures = 0


def resync_once(rt: Runtime) -> None:
    for it in rt.kube.model_deployment_bodies(rt.settings.namespaces):
        meta = it["metadata"]
        if not meta.get("deletionTimestamp"):
            rt.trigger(meta["namespace"], meta["name"], delay=0)
    if rt.settings.capacity_provider == CapacityProvider.KARPENTER:
        rt.kube.sync_nodepools(rt.kube.accelerator_classes())
    rt.kube.sweep_backends(rt.settings.operator_namespace)


@kopf.on.event(GROUP, VERSION, "modeldeployments")
def on_md_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Deletion needs no handler per object (owner references collect the children, and no
    finalizer ever blocks it); only the shared NodePools are swept for classes left unused."""
    if event.get("type") != "DELETED":
        return
    rt = _runtime(memo)
    meta = event["object"]["metadata"]
    rt.count_phase(f"{meta['namespace']}/{meta['name']}", None)
    if rt.settings.capacity_provider == CapacityProvider.KARPENTER:
        rt.kube.sync_nodepools(rt.kube.accelerator_classes())
    if (event["object"].get("spec") or {}).get("tier") == "Serverless":
        rt.kube.sweep_backends(rt.settings.operator_namespace)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "modelplane"})
@kopf.on.event("", "v1", "pods", labels={LABEL_DEPLOYMENT: kopf.PRESENT})
def on_child(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    rt = _runtime(memo)
    labels = body.get("metadata", {}).get("labels") or {}
    owner = labels.get(LABEL_DEPLOYMENT)
    ns = body.get("metadata", {}).get("namespace")
    if owner and ns:
        rt.trigger(ns, owner)
    backend = labels.get(LABEL_BACKEND)
    if backend:  # a shared Serverless backend changed: every tenant's status follows it
        with rt.guard:
            tenants = list(rt.backend_tenants.get(backend, ()))
        for key in tenants:
            tns, tname = key.split("/", 1)
            rt.trigger(tns, tname)
