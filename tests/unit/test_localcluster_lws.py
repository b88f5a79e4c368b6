"""How the local cluster installs LeaderWorkerSet's webhooks (no processes started)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from modelplane_testbed.localcluster import lws

# The layout of sigs.k8s.io/lws config/webhook (generated manifests + kustomize patches).
MANIFESTS = """---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-lws}
  name: mleaderworkerset.kb.io
  failurePolicy: Fail
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
  name: mpod.kb.io
  failurePolicy: Fail
"""
PATCH = """- op: replace
  path: /webhooks/1
  value:
    clientConfig:
      service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
    name: mpod.kb.io
    failurePolicy: Fail
    objectSelector:
      matchExpressions:
      - {key: leaderworkerset.sigs.k8s.io/name, operator: Exists}
"""


def test_webhooks_are_called_by_url_on_loopback_with_the_local_ca(tmp_path: Path) -> None:
    (tmp_path / "manifests.yaml").write_text(MANIFESTS)
    (tmp_path / "mutating-patch.yaml").write_text(PATCH)
    docs = lws.webhook_configurations(tmp_path, port=4443, ca_pem=b"CA PEM")
    assert [d["metadata"]["name"] for d in docs] == ["lws-mutating-webhook-configuration"]
    hooks = docs[0]["webhooks"]
    assert [h["clientConfig"]["url"] for h in hooks] == [
        "https://127.0.0.1:4443/mutate-lws",
        "https://127.0.0.1:4443/mutate--v1-pod",
    ]
    assert {base64.b64decode(h["clientConfig"]["caBundle"]) for h in hooks} == {b"CA PEM"}
    # upstream's patch applied: only LWS pods go through the pod webhook
    assert hooks[1]["objectSelector"]["matchExpressions"][0]["operator"] == "Exists"
    assert "objectSelector" not in hooks[0]


def test_an_unknown_patch_layout_is_an_error_naming_the_module(tmp_path: Path) -> None:
    (tmp_path / "manifests.yaml").write_text(MANIFESTS)
    (tmp_path / "mutating-patch.yaml").write_text("- {op: add, path: /webhooks/-, value: {}}\n")
    with pytest.raises(ValueError, match=r"localcluster/lws\.py"):
        lws.webhook_configurations(tmp_path, port=1, ca_pem=b"x")


def test_controller_config_serves_on_loopback_without_cert_rotation(tmp_path: Path) -> None:
    conf = lws.controller_config(webhook_port=9443, health_port=9444, cert_dir=tmp_path)
    assert yaml.safe_load(yaml.safe_dump(conf)) == conf
    assert conf["internalCertManagement"] == {"enable": False}
    assert conf["leaderElection"] == {"leaderElect": False}
    assert conf["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": str(tmp_path)}
    assert conf["health"]["healthProbeBindAddress"] == "127.0.0.1:9444"
    assert conf["metrics"]["bindAddress"] == "0"
