"""The LeaderWorkerSet controller of the local cluster (multi-node replicas).

`cluster up` runs the real LWS controller manager (built by ``tools/build.sh lws`` from
``sigs.k8s.io/lws`` at the pin in ``tools/versions.env``) inside the cluster's network namespace,
with its CRDs and its admission webhooks. The pod mutating webhook is not optional: it writes the
group and worker labels (``leaderworkerset.sigs.k8s.io/group-index``, ``worker-index``, the
group key) the controller relies on.

The apiserver must reach the webhooks. In a real cluster they are called through a Service whose
certificate LWS's internal cert rotator writes into a Secret and injects into the webhook
configurations. Here nothing routes Service IPs, so instead:

- the controller serves its webhooks on ``127.0.0.1:<free port>`` inside the namespace (where the
  apiserver runs too) with a serving certificate from the local cluster's CA
  (`pki.issue_server`), internal cert management disabled;
- the upstream webhook configurations (``config/webhook/manifests.yaml`` plus the kustomize
  patches that narrow the pod webhooks to LWS pods) are applied with
  ``clientConfig.url: https://127.0.0.1:<port><path>`` and the CA as ``caBundle``.

Everything else is upstream's: the same binary, CRDs, webhook paths, rules and failure policies.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

WEBHOOK_HOST = "127.0.0.1"

#: A LeaderWorkerSet the webhooks are asked about (server-side dry run) until they answer.
PROBE_LWS: dict[str, Any] = {
    "apiVersion": "leaderworkerset.x-k8s.io/v1",
    "kind": "LeaderWorkerSet",
    "metadata": {"name": "modelplane-webhook-probe", "namespace": "default"},
    "spec": {
        "replicas": 1,
        "leaderWorkerTemplate": {
            "size": 2,
            "workerTemplate": {
                "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause"}]}
            },
        },
    },
}


def controller_config(*, webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """The controller manager's Configuration (config.lws.x-k8s.io/v1alpha1)."""
    return {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        # One instance; never wait out a stale lease after a restart.
        "leaderElection": {"leaderElect": False},
        # The local CA issues the serving certificate; nothing to rotate, no Secret to write.
        "internalCertManagement": {"enable": False},
        "webhook": {"host": WEBHOOK_HOST, "port": webhook_port, "certDir": str(cert_dir)},
        "health": {"healthProbeBindAddress": f"{WEBHOOK_HOST}:{health_port}"},
        "metrics": {"bindAddress": "0"},  # disabled: nothing scrapes it here
    }


def _apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """The JSON-patch subset upstream's webhook patches use (``replace /webhooks/<i>``)."""
    for op in ops:
        parts = op["path"].strip("/").split("/")
        if op.get("op") != "replace" or len(parts) != 2 or parts[0] != "webhooks":
            raise ValueError(
                f"unsupported patch {op.get('op')} {op.get('path')} in LWS's webhook patches; "
                "tools/build.sh lws copied a layout this module does not know: update "
                "modelplane_testbed/localcluster/lws.py for the new LWS version"
            )
        doc["webhooks"][int(parts[1])] = op["value"]


def webhook_configurations(webhook_dir: Path, *, port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """Upstream's webhook configurations, patched as its kustomization does, each webhook
    called by URL at ``https://127.0.0.1:<port><path>`` with the local CA."""
    import base64

    docs = [d for d in yaml.safe_load_all((webhook_dir / "manifests.yaml").read_text()) if d]
    patches = {
        "MutatingWebhookConfiguration": webhook_dir / "mutating-patch.yaml",
        "ValidatingWebhookConfiguration": webhook_dir / "validating-patch.yaml",
    }
    ca = base64.b64encode(ca_pem).decode()
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        patch = patches.get(doc["kind"])
        if patch is not None and patch.exists():
            _apply_patch(doc, yaml.safe_load(patch.read_text()) or [])
        # Upstream names them generically (`mutating-webhook-configuration`): say whose they are.
        doc["metadata"] = {"name": f"lws-{doc['metadata']['name']}"}
        for wh in doc["webhooks"]:
            path = wh["clientConfig"]["service"].get("path", "/")
            wh["clientConfig"] = {"url": f"https://{WEBHOOK_HOST}:{port}{path}", "caBundle": ca}
        out.append(doc)
    return out


def wait_for_webhooks(
    dry_run_create: Callable[[dict[str, Any]], None],
    *,
    deadline: float,
    alive: Callable[[], bool],
) -> None:
    """Until a server-side dry run of a LeaderWorkerSet passes the webhooks (the controller has
    started serving them and the apiserver trusts its certificate)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the LWS controller exited")
        try:
            dry_run_create(copy.deepcopy(PROBE_LWS))
            return
        except Exception as e:  # the apiserver's answer is reported below
            last = e
        time.sleep(0.25)
    raise TimeoutError(f"the LWS webhooks did not answer the apiserver: {last}")
