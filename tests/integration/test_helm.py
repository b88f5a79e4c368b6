"""The chart against the local cluster: install, RBAC as the ServiceAccount, CRD upgrade, uninstall.

The CRDs are cluster-scoped and shared by the whole test session (the `cluster` fixture applies
them from crds/). The release adopts them, upgrades one with an extra field and back, and on
uninstall keeps them (helm.sh/resource-policy: keep). Whatever happens, the test puts their
original spec and metadata back, and re-creates AcceleratorClasses that existed before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane import permissions
from modelplane.api.enums import CapacityProvider
from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS
from modelplane_testbed.localcluster import LocalCluster, ensure
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelplane"
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))
ACCEL_CRD = "acceleratorclasses.modelplane.io"
ACCEL_FILE = "modelplane.io_acceleratorclasses.yaml"
PROBE_FIELD = "helmUpgradeProbe"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
HELM_LABEL = "app.kubernetes.io/managed-by"


def _helm(
    cluster: LocalCluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(ensure(build=False).helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        env=cluster.env(),
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _get(cluster: LocalCluster, *args: str) -> Any:
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out) if out else None


def _patch(cluster: LocalCluster, kind: str, name: str, ops: list[dict[str, Any]]) -> None:
    cluster.kubectl("patch", kind, name, "--type=json", "-p", json.dumps(ops))


@pytest.fixture
def shared_state(cluster: LocalCluster, namespace: str) -> Iterator[dict[str, Any]]:
    """Snapshot the shared CRDs and AcceleratorClasses; restore them after the test.

    Also uninstalls the test's release if the test failed before doing so itself.
    """
    crds = {p.name: yaml.safe_load(p.read_text()) for p in CRD_FILES}
    before = {c["metadata"]["name"]: c for c in (_get(cluster, "crd") or {"items": []})["items"]}
    classes = (_get(cluster, "acceleratorclasses") or {"items": []})["items"]
    release = f"mp-{uuid.uuid4().hex[:6]}"
    state = {
        "crds": crds,
        "classes": {c["metadata"]["name"]: c for c in classes},
        "release": release,
    }
    yield state
    if _helm(cluster, "status", release, "-n", namespace, check=False).returncode == 0:
        _helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    for doc in crds.values():
        name = doc["metadata"]["name"]
        meta = before.get(name, {}).get("metadata", {})
        _patch(
            cluster,
            "crd",
            name,
            [
                {"op": "replace", "path": "/spec", "value": doc["spec"]},
                {"op": "add", "path": "/metadata/labels", "value": meta.get("labels", {})},
                {
                    "op": "add",
                    "path": "/metadata/annotations",
                    "value": meta.get("annotations", {}),
                },
            ],
        )
    for name, obj in state["classes"].items():
        if _get(cluster, "acceleratorclass", name) is None:
            clean = {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": {
                    "name": name,
                    "labels": obj["metadata"].get("labels", {}),
                },
                "spec": obj["spec"],
            }
            cluster.kubectl("create", "-f", "-", input=json.dumps(clean))


def _adopt(cluster: LocalCluster, kind: str, name: str, release: str, namespace: str) -> None:
    """Hand an object created outside helm to the release, as helm's ownership check wants."""
    cluster.kubectl("label", "--overwrite", kind, name, f"{HELM_LABEL}=Helm")
    cluster.kubectl(
        "annotate",
        "--overwrite",
        kind,
        name,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


def _can_i(cluster: LocalCluster, sa: str, namespace: str, verb: str, group: str, res: str) -> bool:
    resource, _, sub = res.partition("/")
    target = f"{resource}.{group}" if group else resource
    args = ["auth", "can-i", verb, target, f"--as={sa}", "-n", namespace]
    if sub:
        args.append(f"--subresource={sub}")
    return cluster.kubectl(*args, check=False).strip() == "yes"


def _modified_chart(tmp: Path) -> Path:
    """A copy of the chart whose AcceleratorClass CRD has one more (optional) spec field."""
    chart = tmp / "modelplane"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / ACCEL_FILE
    crd = yaml.safe_load(path.read_text())
    spec_props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_props["properties"][PROBE_FIELD] = {
        "type": "string",
        "maxLength": 63,
        "description": "Added by the helm upgrade test.",
    }
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def _accel_spec_fields(cluster: LocalCluster) -> set[str]:
    crd = _get(cluster, "crd", ACCEL_CRD)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["spec"]["properties"])


def test_install_rbac_crd_upgrade_and_uninstall(
    cluster: LocalCluster, namespace: str, shared_state: dict[str, Any], tmp_path: Path
) -> None:
    release = shared_state["release"]
    fullname = f"{release}-modelplane"
    for doc in shared_state["crds"].values():
        _adopt(cluster, "crd", doc["metadata"]["name"], release, namespace)
    defaults = {a.name for a in DEFAULT_ACCELERATORS}
    for name in defaults & set(shared_state["classes"]):
        _adopt(cluster, "acceleratorclass", name, release, namespace)

    common = [
        "-n",
        namespace,
        "--set",
        "image.repository=example.invalid/modelplane",
        "--wait",
        "--timeout",
        "180s",
    ]
    installed = _helm(cluster, "install", release, str(CHART), *common)
    assert "modelplane 0.1.0 is installed" in installed.stdout

    # CRDs are the release's, kept on uninstall; the default classes exist with the provider's
    # provisioning; the operator Deployment came up (KWOK plays the kubelet).
    for doc in shared_state["crds"].values():
        live = _get(cluster, "crd", doc["metadata"]["name"])
        assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    classes = {c["metadata"]["name"]: c for c in _get(cluster, "acceleratorclasses")["items"]}
    assert defaults <= set(classes)
    for name in defaults:
        assert classes[name]["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    deployment = _get(cluster, "deployment", fullname, "-n", namespace)
    # the chart's default replica count (two: a leader and a standby, see leaderElection)
    default_replicas = yaml.safe_load((CHART / "values.yaml").read_text())["replicas"]
    assert default_replicas >= 2
    assert deployment["status"].get("availableReplicas") == default_replicas

    # RBAC: as the chart's ServiceAccount, exactly what permissions.py lists, nothing else.
    sa = f"system:serviceaccount:{namespace}:{fullname}"
    # In the release namespace: what the operator needs everywhere plus what it needs only in its
    # own namespace (the mirrored credentials of shared Serverless backends).
    required = permissions.required(CapacityProvider.STATIC)
    for key, verbs in permissions.required(
        CapacityProvider.STATIC, operator_namespace=True
    ).items():
        required.setdefault(key, set()).update(verbs)
    resources = {(g, r) for g, r, _ in required} | {
        ("", "secrets"),
        ("", "configmaps"),
        ("karpenter.sh", "nodepools"),
        ("rbac.authorization.k8s.io", "clusterroles"),
    }
    expected = {
        (g, r, v): v in next((vs for (gg, rr, _), vs in required.items() if (gg, rr) == (g, r)), ())
        for g, r in resources
        for v in VERBS
    }
    with ThreadPoolExecutor(max_workers=16) as pool:
        checks = list(expected)
        answers = pool.map(lambda k: _can_i(cluster, sa, namespace, k[2], k[0], k[1]), checks)
        actual = dict(zip(checks, answers, strict=True))
    wrong = {k: actual[k] for k in expected if actual[k] != expected[k]}
    assert not wrong, f"can-i differs from permissions.py (key: got): {wrong}"
    assert sum(expected.values()) >= 20  # enough granted verbs to make the comparison meaningful
    # cluster-wide mode: namespaced permissions hold in any namespace; Secrets are read by name
    # (a tenant's credentialsSecretRef), never listed, and written only in the release namespace
    assert _can_i(cluster, sa, "default", "list", "modelplane.io", "modeldeployments")
    assert _can_i(cluster, sa, "default", "get", "", "secrets")
    assert not _can_i(cluster, sa, "default", "list", "", "secrets")
    assert not _can_i(cluster, sa, "default", "create", "", "secrets")
    assert not _can_i(cluster, sa, namespace, "list", "", "secrets")

    # A ModelDeployment that must survive everything below.
    md = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "survivor", "namespace": namespace},
        "spec": {"tier": "OnDemand", "model": {"catalog": "llama-v3p1-8b-instruct"}},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(md))

    # helm upgrade with a changed CRD applies the new schema ...
    assert PROBE_FIELD not in _accel_spec_fields(cluster)
    _helm(cluster, "upgrade", release, str(_modified_chart(tmp_path)), *common)
    assert PROBE_FIELD in _accel_spec_fields(cluster)
    probe: dict[str, Any] = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "AcceleratorClass",
        "metadata": {"name": f"probe-{release}"},
        "spec": {
            **classes["nvidia-l4-24gb"]["spec"],
            PROBE_FIELD: "kept",
        },
    }
    probe["spec"].pop("provisioning", None)
    cluster.kubectl("create", "-f", "-", input=json.dumps(probe))
    stored = _get(cluster, "acceleratorclass", probe["metadata"]["name"])
    assert stored["spec"][PROBE_FIELD] == "kept"  # not pruned: the field is in the schema
    cluster.kubectl("delete", "acceleratorclass", probe["metadata"]["name"])
    # ... and upgrading back to the chart's own CRD removes the field again.
    _helm(cluster, "upgrade", release, str(CHART), *common)
    assert PROBE_FIELD not in _accel_spec_fields(cluster)
    live_schema = _get(cluster, "crd", ACCEL_CRD)["spec"]["versions"][0]["schema"]
    chart_crd = yaml.safe_load((CHART / "files" / "crds" / ACCEL_FILE).read_text())
    assert live_schema == chart_crd["spec"]["versions"][0]["schema"]

    # uninstall: the release's objects go, the CRDs and the ModelDeployment stay.
    _helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    for doc in shared_state["crds"].values():
        assert _get(cluster, "crd", doc["metadata"]["name"]) is not None
    survivor = _get(cluster, "modeldeployment", "survivor", "-n", namespace)
    assert survivor is not None and survivor["spec"]["tier"] == "OnDemand"
    assert _get(cluster, "clusterrole", fullname) is None
    wait_for(
        lambda: _get(cluster, "deployment", fullname, "-n", namespace) is None,
        timeout=60,
        what="the operator Deployment to be deleted",
    )
    remaining = {c["metadata"]["name"] for c in _get(cluster, "acceleratorclasses")["items"]}
    assert not (defaults - set(shared_state["classes"])) & remaining
