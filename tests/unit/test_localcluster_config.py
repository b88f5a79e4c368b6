"""Node layout, PKI and version pins of the local cluster (no processes started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509

from modelplane.catalog import accelerators as acc
from modelplane_testbed.localcluster import NodeConfigError, load_layout
from modelplane_testbed.localcluster import pki as pki_mod
from modelplane_testbed.localcluster.binaries import versions
from modelplane_testbed.localcluster.nodes import kwok_node

REPO = Path(__file__).resolve().parents[2]


def test_default_layout_has_every_required_gpu_shape() -> None:
    counts: dict[tuple[str, int], int] = {}
    for m in load_layout().manifests():
        labels = m["metadata"]["labels"]
        if acc.LABEL_GPU_PRODUCT in labels:
            key = (labels[acc.LABEL_GPU_PRODUCT], int(labels[acc.LABEL_GPU_COUNT]))
            counts[key] = counts.get(key, 0) + 1
    for need in [
        ("NVIDIA-H100-80GB-HBM3", 8),
        ("NVIDIA-H200", 8),
        ("NVIDIA-A100-SXM4-80GB", 8),
        ("NVIDIA-A100-SXM4-40GB", 8),
        ("NVIDIA-L40S", 4),
        ("NVIDIA-L4", 4),
        ("NVIDIA-L4", 1),
        ("NVIDIA-A10G", 1),
    ]:
        assert counts.get(need, 0) >= 1, need


def test_gpu_node_manifest_shape() -> None:
    a, s = acc.shape("p5.48xlarge")
    node = kwok_node("n", a, s, zone="z", region="r")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"  # type: ignore[index]
    assert node["spec"]["taints"] == [  # type: ignore[index]
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    labels = node["metadata"]["labels"]  # type: ignore[index]
    assert labels["node.kubernetes.io/instance-type"] == "p5.48xlarge"
    assert labels["nvidia.com/gpu.memory"] == "81920"
    assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}  # type: ignore[index]


def test_overrides_change_counts_and_reject_garbage() -> None:
    layout = load_layout().with_overrides(["p5.48xlarge=5", "system=0"])
    names = [m["metadata"]["name"] for m in layout.manifests()]
    assert sum(n.startswith("gpu-p5-48xlarge-") for n in names) == 5
    assert not any(n.startswith("system-") for n in names)
    with pytest.raises(NodeConfigError, match="INSTANCE_TYPE=COUNT"):
        load_layout().with_overrides(["p5.48xlarge"])
    with pytest.raises(NodeConfigError, match=r"unknown GPU instance type 'x9\.huge'"):
        load_layout().with_overrides(["x9.huge=1"])


def test_layout_file_errors_name_the_field(tmp_path: Path) -> None:
    f = tmp_path / "nodes.yaml"
    f.write_text("gpu:\n  - {instanceType: p5.48xlarge, count: -1}\n")
    with pytest.raises(NodeConfigError, match=r"gpu\.0\.count"):
        load_layout(f)
    with pytest.raises(NodeConfigError, match="cannot read"):
        load_layout(tmp_path / "missing.yaml")


def test_nodes_spread_round_robin_over_zones() -> None:
    zones = [m["metadata"]["labels"][acc.LABEL_ZONE] for m in load_layout().manifests()]
    assert {zones.count(z) for z in set(zones)} <= {len(zones) // 3, len(zones) // 3 + 1}


def test_pki_issues_loopback_serving_cert_and_admin_client(tmp_path: Path) -> None:
    k = pki_mod.generate(tmp_path / "pki")
    srv = x509.load_pem_x509_certificate(k.apiserver_crt.read_bytes())
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    adm = x509.load_pem_x509_certificate(k.admin_crt.read_bytes())
    assert "O=system:masters" in adm.subject.rfc4514_string()
    assert (k.ca_key.stat().st_mode & 0o077) == 0
    # the LWS webhook's serving certificate: for its loopback address, from the same CA
    crt, _key = pki_mod.issue_server(k, "lws-webhook", ["127.0.0.1"])
    hook = x509.load_pem_x509_certificate(crt)
    sans = hook.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert hook.issuer == srv.issuer


def test_wrapper_modules_pin_the_versions_in_versions_env() -> None:
    v = versions()
    k8s = (REPO / "tools/kubernetes/go.mod").read_text()
    assert f"require k8s.io/kubernetes v{v['KUBERNETES_VERSION']}" in k8s
    staging = "0." + v["KUBERNETES_VERSION"].split(".", 1)[1]
    replaces = re.findall(r"=> (k8s\.io/\S+) v(\S+)", k8s)
    assert len(replaces) >= 31 and all(ver == staging for _, ver in replaces)
    assert (
        f"go.etcd.io/etcd/server/v3 v{v['ETCD_VERSION']}"
        in (REPO / "tools/etcd/go.mod").read_text()
    )
    assert v["ETCD_VERSION"].startswith("3.6.")
    assert f"sigs.k8s.io/kwok v{v['KWOK_VERSION']}" in (REPO / "tools/kwok/go.mod").read_text()
    assert f"helm.sh/helm/v3 v{v['HELM_VERSION']}" in (REPO / "tools/helm/go.mod").read_text()
    assert (
        f"sigs.k8s.io/karpenter v{v['KARPENTER_VERSION']}"
        in (REPO / "tools/karpenter/go.mod").read_text()
    )
    assert f"require sigs.k8s.io/lws v{v['LWS_VERSION']}" in (REPO / "tools/lws/go.mod").read_text()
