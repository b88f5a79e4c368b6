"""The gateway's Kubernetes I/O: what it reads (ModelDeployments, Ready model-server pods, ApiKeys) and the one thing it writes (the demand annotations of `api/demand.py`).

Reads are a periodic list (every `refresh_seconds`, default 1 s): three list calls per round per
gateway replica, level-based, so a restart or a dropped connection needs no resync logic. The
client is the synchronous `kubernetes` client, called in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from kubernetes import client, config

from modelplane.api.apikey import PLURAL as API_KEYS
from modelplane.api.demand import ANNOTATION_PENDING_REQUESTS, ANNOTATION_PENDING_REQUESTS_AT
from modelplane.api.v1alpha1 import GROUP, VERSION
from modelplane.gateway.routing import demand_annotations

log = logging.getLogger("modelplane.gateway")

SERVER_PODS = "app.kubernetes.io/component=model-server"


def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """`namespaces`: tenant namespaces served (empty: all); `backend_namespace`: where shared
    Serverless backends run (the operator's namespace)."""

    def __init__(
        self, api: client.ApiClient, namespaces: Sequence[str], backend_namespace: str
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespaces = tuple(namespaces)
        self.backend_namespace = backend_namespace
        #: This replica's name (the pod's hostname): its own demand annotation.
        self.replica = socket.gethostname() + f"-{os.getpid()}"

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(ModelDeployments, model-server pods, ApiKeys) as plain dicts."""
        sanitize = self.api.sanitize_for_serialization
        if not self.namespaces:
            mds = self.custom.list_cluster_custom_object(GROUP, VERSION, "modeldeployments")
            pods = self.core.list_pod_for_all_namespaces(label_selector=SERVER_PODS)
            keys = self.custom.list_cluster_custom_object(GROUP, VERSION, API_KEYS)
            return list(mds["items"]), list(sanitize(pods)["items"]), list(keys["items"])
        md_items: list[dict[str, Any]] = []
        pod_items: list[dict[str, Any]] = []
        cm_items: list[dict[str, Any]] = []
        for ns in self.namespaces:
            md_items += self.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "modeldeployments"
            )["items"]
            cm_items += self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, API_KEYS)[
                "items"
            ]
        for ns in sorted({*self.namespaces, self.backend_namespace}):
            pod_items += sanitize(self.core.list_namespaced_pod(ns, label_selector=SERVER_PODS))[
                "items"
            ]
        return md_items, pod_items, cm_items

    def publish_demand(self, namespace: str, name: str, pending: int, at: float) -> None:
        """Publish this replica's held count: its own annotation plus the total of every
        replica's fresh count in the contract's annotations, written with the object's
        resourceVersion (a concurrent write by another replica: 409, read again, retry)."""
        for attempt in range(5):
            obj = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "modeldeployments", name
            )
            meta = obj.get("metadata") or {}
            total, changes = demand_annotations(
                meta.get("annotations") or {}, self.replica, pending, at
            )
            body = {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": {
                        **changes,
                        ANNOTATION_PENDING_REQUESTS: str(total),
                        ANNOTATION_PENDING_REQUESTS_AT: rfc3339(at),
                    },
                }
            }
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, "modeldeployments", name, body
                )
                return
            except client.ApiException as e:
                if e.status != 409 or attempt == 4:
                    raise

    def publish_annotations(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Set metadata annotations of a ModelDeployment (merge patch; the usage totals)."""
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "modeldeployments",
            name,
            {"metadata": {"annotations": annotations}},
        )
