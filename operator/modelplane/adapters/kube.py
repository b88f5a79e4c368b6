"""Kubernetes I/O for the reconciler: observe the world, carry out a plan.

Writes are server-side apply with field manager `modelplane` (children), the `/scale`
subresource with field manager `modelplane-autoscaler` (replicas), and a JSON merge patch of
the `/status` subresource (the single status writer). Each is skipped when its result is
already in place, so an idle resync makes only read requests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from modelplane.api.enums import CapacityProvider, PreloadMode, Tier
from modelplane.api.v1alpha1 import GROUP, VERSION, AcceleratorClassSpec, ModelDeployment
from modelplane.builders import serverless
from modelplane.builders.objects import (
    ANNOTATION_SPEC_HASH,
    AUTOSCALER_FIELD_MANAGER,
    COMPONENT_SERVER,
    FIELD_MANAGER,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    build_nodepool,
)
from modelplane.builders.preload import LABEL_CACHE_KEY, PreloadView, cache_key
from modelplane.builders.resolve import ResolveError, resolve
from modelplane.reconcile.core import (
    AdapterView,
    AutoscalerView,
    ChildKind,
    DeploymentView,
    Event,
    Observed,
    Plan,
    PodView,
    content_hash,
    status_changed,
    status_patch,
)
from modelplane.reconcile.model import containers_of

log = logging.getLogger("modelplane.adapters")

MANAGED_BY = "app.kubernetes.io/managed-by"


class WriteRejectedError(Exception):
    """The apiserver refused a write for good (a 4xx other than 404 Not Found, 409 Conflict
    and 429 Too Many Requests): retrying the same object cannot succeed."""

    def __init__(self, what: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"the apiserver rejected {what} ({status} {reason}): {message}")
        self.what, self.status, self.reason, self.message = what, status, reason, message
        self.writes = 0  # write requests made before and including the refused one


def rejected(e: ApiException, what: str) -> WriteRejectedError | None:
    """The `WriteRejectedError` an ApiException from writing `what` is, or None (retry it)."""
    status = int(e.status or 0)
    if not 400 <= status < 500 or status in (404, 409, 429):
        return None
    message = str(e.reason or "")
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        message = json.loads(e.body or "{}").get("message") or message
    return WriteRejectedError(what, status, str(e.reason or ""), message)


def owner_is(uid: str | None) -> Callable[[Any], bool]:
    """An object is ours when it carries this ModelDeployment's owner reference."""
    return lambda obj: (
        uid is not None and any(o.uid == uid for o in (obj.metadata.owner_references or []))
    )


def labelled(key: str, value: str) -> Callable[[Any], bool]:
    """Objects shared by design (cache, backends) are ours when modelplane labelled them so."""

    def ours(obj: Any) -> bool:
        labels = obj.metadata.labels or {}
        return labels.get(key) == value and labels.get(MANAGED_BY) == "modelplane"

    return ours


def _anything(obj: Any) -> bool:
    return True


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Kube:
    """One API connection, shared by all handlers (built at operator start-up)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.dyn = DynamicClient(api)

    # ------------------------------------------------------------------ observe
    def accelerator_classes(self) -> dict[str, AcceleratorClassSpec]:
        items = self.custom.list_cluster_custom_object(GROUP, VERSION, "acceleratorclasses")[
            "items"
        ]
        out = {}
        for it in items:
            try:
                out[it["metadata"]["name"]] = AcceleratorClassSpec.model_validate(it["spec"])
            except ValueError as e:  # a class the schema allowed but we cannot use
                log.warning("ignoring AcceleratorClass %s: %s", it["metadata"]["name"], e)
        return out

    def model_deployment_bodies(self, namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
        """ModelDeployment objects as the API returns them, in `namespaces` (all when empty)."""
        if not namespaces:
            items: list[dict[str, Any]] = self.custom.list_cluster_custom_object(
                GROUP, VERSION, "modeldeployments"
            )["items"]
            return items
        out: list[dict[str, Any]] = []
        for ns in namespaces:
            out += self.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "modeldeployments"
            )["items"]
        return out

    def model_deployments(self, namespaces: Sequence[str] = ()) -> list[ModelDeployment]:
        """Live ModelDeployments in `namespaces` (all when empty); unparsable ones skipped."""
        out = []
        for it in self.model_deployment_bodies(namespaces):
            if it["metadata"].get("deletionTimestamp"):
                continue
            try:
                out.append(ModelDeployment.model_validate(it))
            except ValueError as e:
                log.warning("skipping %s: %s", it["metadata"].get("name"), e)
        return out

    def server_pods(self, namespace: str, deployment: str) -> list[Any]:
        """The pods of a Deployment's model servers (and warm pool), by label."""
        items: list[Any] = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_DEPLOYMENT}={deployment}"
        ).items
        return items

    def nodes(self) -> list[Any]:
        """Nodes not being deleted."""
        return [n for n in self.core.list_node().items if n.metadata.deletion_timestamp is None]

    def cache_jobs(self, namespaces: Sequence[str] = ()) -> list[Any]:
        """Jobs labelled with a cache key, in `namespaces` (all when empty)."""
        batch = client.BatchV1Api(self.api)
        if not namespaces:
            found: list[Any] = batch.list_job_for_all_namespaces(
                label_selector=LABEL_CACHE_KEY
            ).items
            return found
        out: list[Any] = []
        for ns in namespaces:
            out += batch.list_namespaced_job(ns, label_selector=LABEL_CACHE_KEY).items
        return out

    def job(self, namespace: str, name: str) -> Any | None:
        """The Job called `name`, or None."""
        try:
            return client.BatchV1Api(self.api).read_namespaced_job(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        self.core.patch_node(name, patch)

    def _annotation_hash(self, obj: Any) -> str | None:
        ann = obj.metadata.annotations or {}
        return ann.get(ANNOTATION_SPEC_HASH)

    def observe(
        self,
        md: ModelDeployment,
        raw_status: dict[str, Any],
        ctx: Any,
        autoscaler: AutoscalerView | None = None,
        adapters: tuple[AdapterView, ...] | None = None,
        preload: PreloadView | None = None,
    ) -> Observed:
        """Gather everything `plan` and `compute_status` need about one ModelDeployment.
        Long because it assembles every read of one reconcile (classes, serving Deployment, pods,
        siblings, children) into one Observed; the parts are helpers already."""
        ns, name = md.metadata.namespace or "default", md.metadata.name
        classes = self.accelerator_classes()
        siblings = self._siblings(ns)
        serving = self._serving(md, ctx, classes, siblings)
        hashes: dict[str, str | None] = {}
        foreign: set[str] = set()

        def child(kind: ChildKind, reader: Any, name: str, namespace: str, ours: Any) -> None:
            hashes[kind] = self._child(reader, name, namespace, ours, foreign, kind)

        if serving.role == "backend":
            backend = labelled(serverless.LABEL_BACKEND, serving.name)
            secret = serverless.credentials_secret_name(serving.name)
            read_secret = self.core.read_namespaced_secret
            child(ChildKind.CREDENTIALS_SECRET, read_secret, secret, serving.namespace, backend)
            tenant = owner_is(md.metadata.uid)
            child(ChildKind.TENANT_SERVICE, self.core.read_namespaced_service, name, ns, tenant)
        dep = self._deployment_view(serving, md.metadata.uid)
        ours = serving.ours(md.metadata.uid)
        read_pdb = client.PolicyV1Api(self.api).read_namespaced_pod_disruption_budget
        read_service = self.core.read_namespaced_service
        child(ChildKind.SERVICE, read_service, serving.name, serving.namespace, ours)
        child(ChildKind.POD_DISRUPTION_BUDGET, read_pdb, serving.name, serving.namespace, ours)
        if md.spec.preload is not None:
            mine = owner_is(md.metadata.uid)
            read_deployment = self.apps.read_namespaced_deployment
            child(ChildKind.WARM_POOL, read_deployment, f"{name}-warm", ns, mine)
            if md.spec.preload.mode == PreloadMode.SHARED_VOLUME:
                preload = self._shared_volume(md, classes, hashes, foreign)
        if ctx.capacity_provider == CapacityProvider.KARPENTER:
            foreign |= self._foreign_nodepools()
        pods = self.core.list_namespaced_pod(
            serving.namespace,
            label_selector=f"{LABEL_DEPLOYMENT}={serving.name},{LABEL_COMPONENT}={COMPONENT_SERVER}",
        ).items
        return Observed(
            md=md,
            classes=classes,
            deployment=dep,
            children_hashes=hashes,
            pods=tuple(pod_view(p) for p in pods),
            previous_status=raw_status,
            now=now_rfc3339(),
            ctx=ctx,
            autoscaler=autoscaler,
            tenant_names=serving.tenant_names,
            base=serving.base,
            adapters=adapters,
            lora_demand=_lora_demand(name, siblings),
            preload=preload,
            foreign=frozenset(foreign),
            backend_credentials=serving.credentials,
        )

    def _siblings(self, namespace: str) -> list[ModelDeployment]:
        """Live ModelDeployments of a namespace."""
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments"
        )["items"]
        return [
            ModelDeployment.model_validate(it)
            for it in items
            if not it["metadata"].get("deletionTimestamp")
        ]

    def _serving(
        self,
        md: ModelDeployment,
        ctx: Any,
        classes: dict[str, AcceleratorClassSpec],
        siblings: Sequence[ModelDeployment],
    ) -> Serving:
        """Which Deployment serves `md`: its own, the shared backend (Serverless), or its
        base's (FineTuned adapters loaded into a base ModelDeployment)."""
        ns, name = md.metadata.namespace or "default", md.metadata.name
        ref = md.spec.base
        if md.spec.tier == Tier.FINE_TUNED and ref is not None and ref.deployment:
            base = next((m for m in siblings if m.metadata.name == ref.deployment), None)
            return Serving(ns, ref.deployment, "base", base=base)
        if md.spec.tier != Tier.SERVERLESS:
            return Serving(ns, name, "owner")
        try:
            r = resolve(md, classes)
        except ResolveError:
            return Serving(ns, name, "owner")
        target = serverless.backend_name(r)
        tenants = [t for t, b in self._serverless_tenants(classes) if b == target]
        return Serving(
            ctx.operator_namespace,
            target,
            "backend",
            tenant_names=serverless.tenant_names(tenants),
            credentials=self._backend_credentials(target, tenants),
        )

    def _deployment_view(self, serving: Serving, uid: str | None) -> DeploymentView:
        try:
            d = self.apps.read_namespaced_deployment(serving.name, serving.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return DeploymentView(exists=False)
        if serving.role == "owner":
            owned = any(o.uid == uid for o in (d.metadata.owner_references or []))
        elif serving.role == "base":
            owned = True  # the base's servers; this object never writes them
        else:
            owned = (d.metadata.labels or {}).get(serverless.LABEL_BACKEND) == serving.name
        st = d.status
        return DeploymentView(
            exists=True,
            replicas=d.spec.replicas if d.spec.replicas is not None else 1,
            status_replicas=(st.replicas or 0) if st else 0,
            ready_replicas=(st.ready_replicas or 0) if st else 0,
            updated_replicas=(st.updated_replicas or 0) if st else 0,
            observed_generation=(st.observed_generation or 0) if st else 0,
            generation=d.metadata.generation or 0,
            applied_hash=self._annotation_hash(d) if owned else None,
            owned=owned,
            containers=containers_of(self.api.sanitize_for_serialization(d))
            if owned and serving.role != "base"
            else None,
        )

    def _shared_volume(
        self,
        md: ModelDeployment,
        classes: dict[str, AcceleratorClassSpec],
        hashes: dict[str, str | None],
        foreign: set[str],
    ) -> PreloadView | None:
        """The SharedVolume claim and its fill Job: hashes, and whether the weights are in."""
        try:
            r = resolve(md, classes)
        except ResolveError:
            return None
        ns = md.metadata.namespace or "default"
        key = cache_key(r)
        # Shared by every ModelDeployment of the same weights: ours when labelled with the key.
        ours = labelled(LABEL_CACHE_KEY, key)
        hashes["WeightsClaim"] = self._child(
            self.core.read_namespaced_persistent_volume_claim,
            f"weights-{key}",
            ns,
            ours,
            foreign,
            "WeightsClaim",
        )
        try:
            job = client.BatchV1Api(self.api).read_namespaced_job(f"fill-{key}", ns)
        except ApiException as e:
            if e.status != 404:
                raise
            hashes["FillJob"] = None
            return PreloadView(0, 1, 0, "creating the fill Job")
        if not ours(job):
            foreign.add("FillJob")
            hashes["FillJob"] = None
            return PreloadView(0, 1, 0, None)
        hashes["FillJob"] = self._annotation_hash(job) or "unowned"
        done = (job.status.succeeded or 0) > 0
        failed = (job.status.failed or 0) > (job.spec.backoff_limit or 0)
        msg = f"fill Job {job.metadata.name} failed" if failed else None
        return PreloadView(1 if done else 0, 1, 0 if done else 1, msg)

    def _child(
        self,
        reader: Any,
        name: str,
        namespace: str,
        ours: Callable[[Any], bool],
        foreign: set[str],
        key: str,
    ) -> str | None:
        """The applied hash of one child (None: absent). An object at that name that is not
        ours goes into `foreign` instead: the plan then writes nothing and reports it."""
        try:
            obj = reader(name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return None
        if not ours(obj):
            foreign.add(key)
            return None
        return self._annotation_hash(obj) or "unowned"

    def _foreign_nodepools(self) -> set[str]:
        """NodePools modelplane did not create ("NodePool/<name>"): never applied over."""
        res = self.dyn.resources.get(api_version="karpenter.sh/v1", kind="NodePool")
        items = self.dyn.get(res, label_selector=f"{MANAGED_BY}!=modelplane").to_dict()["items"]
        return {f"NodePool/{i['metadata']['name']}" for i in items}

    def _serverless_tenants(
        self, classes: dict[str, AcceleratorClassSpec]
    ) -> list[tuple[ModelDeployment, str]]:
        """Every live Serverless ModelDeployment with the backend it resolves to."""
        out = []
        items = self.custom.list_cluster_custom_object(GROUP, VERSION, "modeldeployments")["items"]
        for it in items:
            if (it.get("spec") or {}).get("tier") != Tier.SERVERLESS.value:
                continue
            if it["metadata"].get("deletionTimestamp"):
                continue
            try:
                md = ModelDeployment.model_validate(it)
                out.append((md, serverless.backend_name(resolve(md, classes))))
            except (ValueError, ResolveError):
                continue
        return out

    def _backend_credentials(
        self, backend: str, tenants: Sequence[ModelDeployment]
    ) -> serverless.BackendCredentials | None:
        """The one Secret key of the oldest tenant that gives readable credentials. Reads
        only the Secrets tenants reference, by name (no list, no watch)."""
        for md in serverless.credential_candidates(tenants):
            assert md.spec.model is not None and md.spec.model.credentials_secret_ref is not None
            ref = md.spec.model.credentials_secret_ref
            ns, key = md.metadata.namespace or "default", ref.key or "token"
            try:
                secret = self.core.read_namespaced_secret(ref.name, ns)
            except ApiException as e:
                if e.status not in (403, 404):
                    raise
                log.warning(
                    "Serverless backend %s: cannot read Secret %s/%s of tenant %s/%s (%s %s)",
                    backend, ns, ref.name, ns, md.metadata.name, e.status, e.reason,
                )  # fmt: skip
                continue
            value = (secret.data or {}).get(key)
            if not value:
                log.warning(
                    "Serverless backend %s: Secret %s/%s has no key %r", backend, ns, ref.name, key
                )
                continue
            return serverless.BackendCredentials(md, ref.name, key, value)
        return None

    def sweep_backends(self, operator_namespace: str) -> int:
        """Remove shared Serverless backends that no tenant resolves to any more, and mirrored
        credentials no tenant of a backend asks for any more."""
        classes = self.accelerator_classes()
        tenants = self._serverless_tenants(classes)
        wanted = {b for _, b in tenants}
        with_credentials = {b for md, b in tenants if serverless.credential_candidates([md])}
        deps = self.apps.list_namespaced_deployment(
            operator_namespace, label_selector=serverless.LABEL_BACKEND
        ).items
        readers = {
            ChildKind.SERVICE: self.core.read_namespaced_service,
            ChildKind.POD_DISRUPTION_BUDGET: client.PolicyV1Api(
                self.api
            ).read_namespaced_pod_disruption_budget,
        }
        writes = 0
        secrets = self.core.read_namespaced_secret
        for d in deps:
            name = d.metadata.name
            mirror = serverless.credentials_secret_name(name)
            ours = labelled(serverless.LABEL_BACKEND, name)
            stale = name in wanted and name not in with_credentials
            if stale and self._child(secrets, mirror, operator_namespace, ours, set(), ""):
                log.info("removing %s/%s: no tenant gives credentials", operator_namespace, mirror)
                self.delete(ChildKind.CREDENTIALS_SECRET, mirror, operator_namespace)
                writes += 1
            if name in wanted:
                continue
            log.info("removing Serverless backend %s/%s: no tenant left", operator_namespace, name)
            self.delete(ChildKind.DEPLOYMENT, name, operator_namespace)
            writes += 1
            for kind, reader in readers.items():
                # Only the backend's own: never a stranger's object of the same name.
                if self._child(reader, name, operator_namespace, ours, set(), kind) is not None:
                    self.delete(kind, name, operator_namespace)
                    writes += 1
            if self._child(secrets, mirror, operator_namespace, ours, set(), "") is not None:
                self.delete(ChildKind.CREDENTIALS_SECRET, mirror, operator_namespace)
                writes += 1
        return writes

    # ------------------------------------------------------------------ act
    def apply(self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER) -> None:
        res = self.dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        self.dyn.server_side_apply(
            res,
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=field_manager,
            force_conflicts=True,
        )

    def delete(self, kind: ChildKind, name: str, namespace: str | None) -> None:
        """Remove one child (gone already is fine)."""
        api_version, k = kind.resource
        res = self.dyn.resources.get(api_version=api_version, kind=k)
        with contextlib.suppress(NotFoundError):
            self.dyn.delete(res, name=name, namespace=namespace)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Replicas change only through /scale, under the autoscaler's own field manager."""
        self.apps.patch_namespaced_deployment_scale(
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            field_manager=AUTOSCALER_FIELD_MANAGER,
        )

    def write_status(self, md: ModelDeployment, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Merge-patch the status computed from `md` as observed. The patch carries that
        object's resourceVersion, so if anyone wrote the object since, the apiserver refuses it
        (409 Conflict) rather than letting a status built from a stale body win."""
        if not status_changed(old, new):
            return False
        patch: dict[str, Any] = {"status": status_patch(old, new)}
        version = (md.metadata.model_extra or {}).get("resourceVersion")
        if version:
            patch["metadata"] = {"resourceVersion": version}
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            md.metadata.namespace or "default",
            "modeldeployments",
            md.metadata.name,
            patch,
        )
        return True

    def post_event(self, md: ModelDeployment, ev: Event) -> None:
        ns = md.metadata.namespace or "default"
        ts = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{md.metadata.name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelDeployment",
                "name": md.metadata.name,
                "namespace": ns,
                "uid": md.metadata.uid,
            },
            "type": ev.type,
            "reason": ev.reason,
            "message": ev.message[:1024],
            "source": {"component": "modelplane"},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(ns, body)
        except ApiException as e:  # events are best effort
            log.warning("could not post event %s: %s", ev.reason, e.reason)

    def carry_out(self, md: ModelDeployment, p: Plan) -> int:
        """Apply a plan; returns the number of write requests made."""
        writes = 0
        ns = md.metadata.namespace or "default"
        for obj in p.apply:
            meta = obj["metadata"]
            where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
            try:
                self.apply(obj)
            except ApiException as e:
                refused = rejected(e, f"{obj['kind']} {where}")
                if refused is None:
                    raise
                refused.writes = writes + 1
                raise refused from e
            writes += 1
            if obj["kind"] == "Secret" and p.credentials is not None and p.backend is not None:
                self._credentials_shared(p.credentials, p.backend.namespace, obj)
        for kind, name in p.delete:
            self.delete(kind, name, ns)
            writes += 1
        if p.scale_to is not None and p.resolved is not None:
            target = p.backend or p.resolved
            self.scale(target.namespace, target.name, p.scale_to)
            writes += 1
        return writes

    def _credentials_shared(
        self, creds: serverless.BackendCredentials, namespace: str, secret: dict[str, Any]
    ) -> None:
        """Tell the tenant whose Secret a shared backend now downloads with (log and Event)."""
        where = f"{namespace}/{secret['metadata']['name']}"
        log.info("mirrored credentials of %s (Secret %s) to %s", creds.source, creds.secret, where)
        self.post_event(
            creds.tenant,
            Event(
                "Normal",
                "CredentialsShared",
                f"key {creds.key} of Secret {creds.secret} is mirrored to {where}: the shared "
                "Serverless backend serving this model downloads the weights with it",
            ),
        )

    # ------------------------------------------------------------------ shared capacity
    def sync_nodepools(self, classes: dict[str, AcceleratorClassSpec]) -> int:
        """One NodePool per AcceleratorClass in use by any ModelDeployment; remove the rest."""
        mds = self.custom.list_cluster_custom_object(GROUP, VERSION, "modeldeployments")["items"]
        in_use = {
            (m.get("status") or {}).get("accelerator", {}).get("class")
            for m in mds
            if m["metadata"].get("deletionTimestamp") is None
        } - {None}
        res = self.dyn.resources.get(api_version="karpenter.sh/v1", kind="NodePool")
        existing = {
            item["metadata"]["name"]: item
            for item in self.dyn.get(
                res, label_selector="app.kubernetes.io/managed-by=modelplane"
            ).to_dict()["items"]
        }
        writes = 0
        foreign: set[str] | None = None
        for cls in sorted(in_use):
            spec = classes.get(cls)
            if spec is None:
                continue
            np = build_nodepool(str(cls), spec)
            if np is None:
                continue
            if np["metadata"]["name"] not in existing:
                foreign = self._foreign_nodepools() if foreign is None else foreign
                if f"NodePool/{np['metadata']['name']}" in foreign:
                    continue  # someone else's: its users report ChildConflict
            np["metadata"].setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = content_hash(np)
            have = existing.get(np["metadata"]["name"])
            if (
                have is None
                or (have["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
                != np["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
            ):
                self.apply(np)
                writes += 1
        wanted = {f"modelplane-{c}" for c in in_use}
        for name in existing:
            if name not in wanted:
                self.delete(ChildKind.NODE_POOL, name, None)
                writes += 1
        return writes


@dataclass(frozen=True)
class Serving:
    """The Deployment whose model servers serve a ModelDeployment, and whose it is: the
    object's own ("owner"), a shared Serverless backend ("backend"), or a FineTuned object's
    base ("base", never written by the FineTuned object)."""

    namespace: str
    name: str
    role: Literal["owner", "backend", "base"]
    base: ModelDeployment | None = None
    tenant_names: tuple[str, ...] = ()
    credentials: serverless.BackendCredentials | None = None

    def ours(self, uid: str | None) -> Callable[[Any], bool]:
        """Whether a child at the serving Deployment's name is ours to write."""
        if self.role == "owner":
            return owner_is(uid)
        if self.role == "backend":
            return labelled(serverless.LABEL_BACKEND, self.name)
        return _anything  # the base's children: this object never writes them


def _lora_demand(name: str, siblings: Sequence[ModelDeployment]) -> int:
    """Adapters the FineTuned objects on base `name` want loaded at runtime."""
    return sum(
        len(m.spec.adapters)
        for m in siblings
        if m.spec.tier == Tier.FINE_TUNED
        and m.spec.base is not None
        and m.spec.base.deployment == name
    )


def pod_view(p: Any) -> PodView:
    conds = {c.type: c for c in ((p.status.conditions if p.status else None) or [])}
    sched = conds.get("PodScheduled")
    ready = conds.get("Ready")
    unsched = None
    if sched is not None and sched.status == "False" and sched.reason == "Unschedulable":
        unsched = sched.message or "no node fits"
    return PodView(
        name=p.metadata.name,
        phase=(p.status.phase if p.status else None) or "Pending",
        ready=ready is not None and ready.status == "True",
        scheduled=bool(p.spec.node_name),
        unschedulable_message=unsched,
        node=p.spec.node_name,
        terminating=p.metadata.deletion_timestamp is not None,
    )
