"""NodeLocal preloading: cache Jobs per node, node labels once warm, disk accounted per node.

Every few seconds, for each ModelDeployment with `preload.mode: NodeLocal`: find the nodes of
its accelerator class, and for each node without the weights start one cache Job (unless the
node's cache disk cannot hold them: no overcommit); when a Job has succeeded, label the node
`cache.modelplane.io/<key>=ready` and record (uri, revision, size, time, retain) in a node
annotation. Identical (uri, revision) share one key, so they are cached once per node. The
per-object view (cached / class nodes, downloading) goes to the runtime; the reconciler
reports it (serving pods prefer cached nodes; the pod template never depends on this view).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from kubernetes.client.rest import ApiException

from modelplane.adapters.kube import labelled
from modelplane.adapters.ports import PreloadCluster, PreloadRuntime
from modelplane.api.enums import PreloadMode, Tier
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders import preload as pl
from modelplane.builders.objects import BuildContext, node_selector
from modelplane.builders.resolve import ResolveError, resolve
from modelplane.catalog.sizing import GB_PER_GIB

log = logging.getLogger("modelplane.preload")

#: Share of a node's ephemeral storage the weight cache may use.
CACHE_DISK_SHARE = 0.8


def _gib(quantity: str) -> float:
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10, "G": 0.931, "M": 0.000931}
    for u, f in units.items():
        if quantity.endswith(u):
            return float(quantity[: -len(u)]) * f
    return float(quantity) / 2**30


class PreloadLoop:
    def __init__(
        self,
        kube: PreloadCluster,
        rt: PreloadRuntime,
        ctx: BuildContext,
        namespaces: Sequence[str] = (),
    ) -> None:
        self.kube = kube
        self.rt = rt
        self.ctx = ctx
        self.namespaces = tuple(namespaces)

    def _mds(self) -> list[ModelDeployment]:
        out = []
        for md in self.kube.model_deployments(self.namespaces):
            pre = md.spec.preload
            if (
                pre is not None
                and pre.mode == PreloadMode.NODE_LOCAL
                and md.spec.tier == Tier.ON_DEMAND
            ):
                out.append(md)
        return out

    def _jobs(self) -> dict[tuple[str, str], Any]:
        found = self.kube.cache_jobs(self.namespaces)
        return {
            (
                j.metadata.labels[pl.LABEL_CACHE_KEY],
                j.metadata.labels.get(pl.LABEL_CACHE_NODE, ""),
            ): j
            for j in found
        }

    def round(self) -> None:
        mds = self._mds()
        if not mds:
            return
        classes = self.kube.accelerator_classes()
        nodes = self.kube.nodes()
        jobs = self._jobs()
        for md in mds:
            key = f"{md.metadata.namespace}/{md.metadata.name}"
            try:
                r = resolve(md, classes)
            except ResolveError:
                continue
            view = self._one(r, nodes, jobs)
            with self.rt.guard:
                changed = self.rt.preload.get(key) != view
                self.rt.preload[key] = view
            if changed:
                self.rt.trigger(md.metadata.namespace or "default", md.metadata.name, delay=0)

    def _one(self, r: Any, nodes: list[Any], jobs: dict[tuple[str, str], Any]) -> pl.PreloadView:
        key, label = pl.cache_key(r), pl.cache_label(r)
        want = node_selector(r)
        mine = [
            n for n in nodes if all((n.metadata.labels or {}).get(k) == v for k, v in want.items())
        ]
        size = pl.weights_gb(r) / GB_PER_GIB
        cached = downloading = 0
        message = None
        foreign: list[str] = []
        for n in mine:
            name = n.metadata.name
            if (n.metadata.labels or {}).get(label) == "ready":
                cached += 1
                continue
            job = jobs.get((key, name))
            if job is None:
                existing = self.kube.job(r.namespace, pl.job_name(key, name))
                if existing is not None:
                    if labelled(pl.LABEL_CACHE_KEY, key)(existing):
                        downloading += 1  # created since the round's list (same weights)
                    else:  # never applied over: the reconciler reports a ChildConflict
                        foreign.append(existing.metadata.name)
                    continue
                free = self._free_gib(n, jobs)
                if free < size:
                    message = (
                        f"node {name} has {free:.0f} GiB of cache disk free, {size:.0f} GiB needed"
                    )
                    continue
                obj = pl.build_cache_job(r, name, self.ctx)
                obj["metadata"].setdefault("annotations", {})["modelplane.io/size-gib"] = (
                    f"{size:.1f}"
                )
                self.kube.apply(obj)
                downloading += 1
                log.info("caching %s on node %s", r.uri, name)
            elif (job.status.succeeded or 0) > 0:
                self._mark(n, r, key, size)
                cached += 1
            elif (job.status.failed or 0) >= (job.spec.backoff_limit or 0) + 1:
                message = f"cache Job {job.metadata.name} failed on node {name}"
            else:
                downloading += 1
        return pl.PreloadView(cached, len(mine), downloading, message, tuple(foreign))

    def _free_gib(self, node: Any, jobs: dict[tuple[str, str], Any]) -> float:
        alloc = (node.status.allocatable or {}).get("ephemeral-storage", "0")
        budget = _gib(alloc) * CACHE_DISK_SHARE
        used = 0.0
        for k, v in (node.metadata.annotations or {}).items():
            if k.startswith(pl.CACHE_LABEL_PREFIX):
                used += float(json.loads(v).get("sizeGiB", 0))
        for (_, node_name), job in jobs.items():
            if node_name == node.metadata.name and not (job.status.succeeded or 0):
                used += float((job.metadata.annotations or {}).get("modelplane.io/size-gib", 0))
        return budget - used

    def _mark(self, node: Any, r: Any, key: str, size: float) -> None:
        record = {
            "uri": r.uri,
            "revision": r.revision or "",
            "sizeGiB": round(size, 1),
            "cachedAt": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "retain": r.retain_cache,
        }
        patch = {
            "metadata": {
                "labels": {pl.CACHE_LABEL_PREFIX + key: "ready"},
                "annotations": {pl.CACHE_LABEL_PREFIX + key: json.dumps(record, sort_keys=True)},
            }
        }
        try:
            self.kube.patch_node(node.metadata.name, patch)
            log.info("node %s now caches %s", node.metadata.name, r.uri)
        except ApiException as e:
            log.warning("could not label node %s: %s", node.metadata.name, e.reason)

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        while not stop.wait(interval):
            try:
                self.round()
            except Exception:
                log.exception("preload round failed")
