"""Least privilege, proven: the operator runs under the chart's ServiceAccount, and every
permission the chart grants is one the operator really uses (read back from the audit log)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from modelplane.api.enums import CapacityProvider
from modelplane.permissions import PERMISSIONS, required
from modelplane_testbed import factories
from modelplane_testbed.harness import audit_events
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import ChartRelease, accelerator_classes_yaml
from tests.helpers import put_load, wait_for
from tests.integration.test_preload import static_pv

pytestmark = pytest.mark.integration


def _md(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    accelerator = {"class": "nvidia-a10g-24gb", "count": 1}
    base = factories.spec(factories.EMBEDDINGS, accelerator=accelerator) | spec
    return factories.md(name, ns, base)


def _phase(cluster: LocalCluster, ns: str, name: str) -> str:
    return cluster.kubectl("get", "mdep", name, "-n", ns, "-o", "jsonpath={.status.phase}")


def _used(cluster: LocalCluster, ident: ChartRelease) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for ev in audit_events(cluster, ident.user):
        ref = ev.get("objectRef") or {}
        if not ref.get("resource") or ev["responseStatus"]["code"] >= 400:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource)
        out.setdefault(key, set()).add(ev["verb"])
        if ev["verb"] == "patch" and ev["responseStatus"]["code"] == 201:
            out[key].add("create")  # server-side apply created it: authorized as create too
    return out


def _replicas(cluster: LocalCluster, ns: str, name: str) -> str:
    return cluster.kubectl(
        "get", "deploy", name, "-n", ns, "-o", "jsonpath={.status.readyReplicas}"
    )


def _exercise(
    cluster: LocalCluster, ns: str, run_operator: Any, provider: str, control: Any
) -> None:
    """A user's day: create (needing new capacity), autoscale up and down, change, delete."""
    name = f"p-{provider}"
    release = "karpenter" if provider == "karpenter" else "default"
    with run_operator([ns], release, values={"autoscalerIntervalSeconds": "2"}):
        # 12 single-GPU replicas: more A10G GPUs than the cluster has, so capacity is needed.
        md = _md(ns, name, replicas={"min": 1, "max": 12, "pinned": 12})
        if provider == "static":  # weights cached on the class's nodes, one warm node
            md["spec"]["preload"] = {"mode": "NodeLocal", "warmNodes": 1}
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(md))
        if provider == "static":
            wait_for(lambda: _phase(cluster, ns, name) == "Ready", timeout=120, what="Ready")
            wait_for(
                lambda: (
                    cluster.kubectl(
                        "get",
                        "mdep",
                        name,
                        "-n",
                        ns,
                        "-o",
                        "jsonpath={.status.preload.cachedNodes}",
                    )
                    not in ("", "0")
                ),
                timeout=120,
                what="a node caches the weights",
            )
            # Hand replicas to the autoscaler: load up (-> 3), then down (-> 1).
            md["spec"]["replicas"] = {"min": 1, "max": 3}
            md["spec"]["autoscaling"] = {
                "scaleUpWindow": "5s",
                "scaleDownWindow": "30s",
                "loadTargets": {"concurrentRequests": 16},
            }
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(md))
            put_load(control, ns, name, 60.0)
            wait_for(lambda: _replicas(cluster, ns, name) == "3", timeout=90, what="3 replicas")
            put_load(control, ns, name, 1.0)
            wait_for(lambda: _replicas(cluster, ns, name) == "1", timeout=120, what="back to 1")
        else:
            wait_for(lambda: _phase(cluster, ns, name) != "", timeout=60, what="status")
        md["spec"]["replicas"] = {"min": 1, "max": 1}  # the PDB goes
        md["spec"].pop("autoscaling", None)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(md))
        wait_for(
            lambda: cluster.kubectl("get", "pdb", "-n", ns, "-o", "name") == "",
            timeout=60,
            what="PDB removed",
        )
        cluster.kubectl("delete", "mdep", name, "-n", ns)
        if provider == "static":
            # SharedVolume: a claim filled once by a Job, mounted read-only.
            pv = static_pv(f"pv-{ns}"[:60])
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pv))
            shared = _md(ns, "shared", preload={"mode": "SharedVolume"})
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(shared))
            wait_for(
                lambda: _phase(cluster, ns, "shared") == "Ready", timeout=120, what="shared Ready"
            )
            cluster.kubectl("delete", "mdep", "shared", "-n", ns)
            cluster.kubectl("delete", "pvc", "--all", "-n", ns, "--wait=false")
            cluster.kubectl("delete", "pv", pv["metadata"]["name"], "--wait=false")
            # A Serverless tenant comes and goes: its shared backend is created, then removed.
            # With credentials: the operator mirrors the referenced key next to the backend.
            cluster.kubectl(
                "create", "secret", "generic", "hf-token", "-n", ns, "--from-literal=token=hf_x"
            )
            tenant = _md(ns, "tenant", tier="Serverless")
            tenant["spec"]["model"]["credentialsSecretRef"] = {"name": "hf-token"}
            del tenant["spec"]["accelerator"]
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))
            wait_for(
                lambda: _phase(cluster, ns, "tenant") == "Ready", timeout=120, what="tenant Ready"
            )
            cluster.kubectl("delete", "mdep", "tenant", "-n", ns)
            wait_for(
                lambda: (
                    cluster.kubectl(
                        "get", "deploy", "-A", "-l", "modelplane.io/backend", "-o", "name"
                    )
                    == ""
                ),
                timeout=60,
                what="backend removed",
            )
        if provider == "karpenter":
            wait_for(
                lambda: (
                    "modelplane-nvidia-a10g-24gb"
                    not in cluster.kubectl("get", "nodepools.karpenter.sh", "-o", "name")
                ),
                timeout=60,
                what="NodePool removed",
            )


@pytest.mark.parametrize("provider", ["static", "karpenter"])
def test_every_granted_permission_is_used_and_nothing_more(
    cluster: LocalCluster,
    namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
    control: Any,
    provider: str,
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    _exercise(cluster, namespace, run_operator, provider, control)
    ident = releases["karpenter" if provider == "karpenter" else "default"]
    used = _used(cluster, ident)
    granted: dict[tuple[str, str], set[str]] = {}
    cp = CapacityProvider(provider)
    for scope in (required(cp), required(cp, operator_namespace=True)):
        for (group, resource, _namespaced), verbs in scope.items():
            granted.setdefault((group, resource), set()).update(verbs)
    # Nothing used beyond what the table grants (the apiserver would have refused it anyway).
    for key, verbs in used.items():
        assert verbs <= granted.get(key, set()), (
            f"used without a grant: {key} {verbs - granted.get(key, set())}"
        )
    # Nothing granted that the operator never used. The static run exercises every common
    # path (capacity, autoscaling, disruption budgets); the karpenter run its NodePools.
    checked = granted
    if provider == "karpenter":
        checked = {
            (p.group, p.resource): set(p.verbs)
            for p in PERMISSIONS
            if p.provider == CapacityProvider.KARPENTER
        }
    unused = {k: v - used.get(k, set()) for k, v in checked.items() if v - used.get(k, set())}
    assert not unused, (
        f"granted but never used: {json.dumps({str(k): sorted(v) for k, v in unused.items()})}"
    )
    # Secrets are never read, listed or watched.
    # Secrets: read one by name where a tenant references it, never listed or watched; written
    # only in the operator's own namespace (the mirrored credentials of a shared backend).
    for ev in audit_events(cluster, ident.user):
        ref = ev.get("objectRef") or {}
        if ref.get("resource") != "secrets" or ev["responseStatus"]["code"] >= 400:
            continue
        assert ev["verb"] in {"get", "create", "patch", "update", "delete"}, ev["verb"]
        if ev["verb"] != "get":
            assert ref.get("namespace") == ident.namespace, ref
