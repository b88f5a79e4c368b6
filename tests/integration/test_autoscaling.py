"""Autoscaling end to end on the local cluster: emulated engines, the operator, real scaling.

The engine emulator serves vLLM's ``/metrics`` at each model-server pod's own address; the
operator (chart defaults: ``metricsSource: pods``) scrapes the pods as on a real cluster and
scales the Deployment through ``/scale``. At zero replicas the stand-in gateway's held requests
(the ``modelplane.io/pending-requests`` annotation) wake it. Load rises: 1 -> 3 replicas; load falls: back to 1 once the 30 s
scale-down window has passed. Scale to zero needs ``scaleToZeroWindow`` >= 5 min (a CRD rule),
so it is covered by ``tests/unit/test_autoscaler_loop.py`` with an injected clock instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelplane_testbed.localcluster import LocalCluster, ensure
from modelplane_testbed.platform import accelerator_classes_yaml
from tests.helpers import put_load, wait_for

pytestmark = pytest.mark.integration

MANIFEST = """\
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: chat
  namespace: {namespace}
spec:
  tier: OnDemand
  model:
    catalog: llama-v3p1-8b-instruct
  accelerator:
    class: nvidia-h100-80gb
    count: 1
  replicas:
    min: 1
    max: 4
  autoscaling:
    scaleUpWindow: 10s
    scaleDownWindow: 30s
    loadTargets:
      concurrentRequests: 16
"""

# Llama 3 8B on one H100 (the emulator's replica model), ~220 prompt / ~200 output tokens:
# 22 req/s keep ~40-45 requests in flight -> 3 replicas at 16 each; 2 req/s need 1.
HIGH_RPS = 22.0
LOW_RPS = 2.0


@pytest.fixture
def operator(cluster: LocalCluster, namespace: str, run_operator: Any) -> Iterator[Path]:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    op = run_operator([namespace], values={"autoscalerIntervalSeconds": "2"})
    with op:
        yield op.log_path


def _put_load(control: Any, namespace: str, rps: float) -> None:
    put_load(control, namespace, "chat", rps)


def _status(api: Any, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "modelplane.io", "v1alpha1", namespace, "modeldeployments", "chat"
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _no_drift(cluster: LocalCluster, manifest: Path) -> None:
    """`kubectl diff -f` of the user's manifest: nothing to report, exit code 0."""
    kubectl = ensure(build=False).kubectl
    out = subprocess.run(
        [str(kubectl), f"--kubeconfig={cluster.kubeconfig}", "diff", "-f", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_scales_up_with_load_and_back_down(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    control: Any,
    operator: Path,
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "chat.yaml"
    manifest.write_text(MANIFEST.format(namespace=namespace))
    cluster.kubectl("apply", "-f", str(manifest))
    apps = client.AppsV1Api(api)
    try:
        wait_for(
            lambda: _status(api, namespace).get("phase") == "Ready",
            timeout=90,
            what="ModelDeployment Ready with 1 replica",
        )
        _no_drift(cluster, manifest)

        # Load rises: 1 -> 3 replicas, all Ready.
        _put_load(control, namespace, HIGH_RPS)
        rise = time.monotonic()
        st = wait_for(
            lambda: (s := _status(api, namespace)).get("readyReplicas", 0) >= 3 and s,
            timeout=90,
            interval=0.5,
            what="3 ready replicas under load",
        )
        scale_up_s = time.monotonic() - rise
        print(f"\nscale-up: load rise -> {st['readyReplicas']} Ready in {scale_up_s:.1f}s")
        auto = st["autoscaler"]
        assert auto["reason"] == "ScaleUp", auto
        assert "concurrentRequests" in auto["lastDecision"]
        assert re.match(r"^[12] -> [34]: ", auto["lastDecision"]), auto
        assert auto["lastScaleTime"]
        dep = apps.read_namespaced_deployment("chat", namespace)
        assert dep.spec.replicas == st["desiredReplicas"] >= 3
        _no_drift(cluster, manifest)

        # Load falls: back to 1 after the 30 s scale-down window.
        _put_load(control, namespace, LOW_RPS)
        fall = time.monotonic()
        st = wait_for(
            lambda: (
                (s := _status(api, namespace)).get("desiredReplicas") == 1
                and s.get("readyReplicas") == 1
                and s
            ),
            timeout=120,
            interval=0.5,
            what="back to 1 replica after the load fell",
        )
        print(f"scale-down: load fall -> 1 replica in {time.monotonic() - fall:.1f}s")
        auto = st["autoscaler"]
        assert auto["reason"] == "ScaleDown", auto
        assert "scale-down window 30s" in auto["lastDecision"]
        assert apps.read_namespaced_deployment("chat", namespace).spec.replicas == 1
        _no_drift(cluster, manifest)
    except AssertionError:
        print(operator.read_text()[-6000:], file=sys.stderr)
        raise


ZERO_MANIFEST = """\
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: chat
  namespace: {namespace}
spec:
  tier: OnDemand
  model:
    catalog: llama-v3p1-8b-instruct
  accelerator:
    class: nvidia-h100-80gb
    count: 1
  replicas:
    min: 0
    max: 2
  autoscaling:
    scaleUpWindow: 10s
    scaleDownWindow: 30s
    scaleToZeroWindow: 5m
    loadTargets:
      concurrentRequests: 16
"""


def test_scales_to_zero_after_the_window_and_back_on_traffic(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    control: Any,
    operator: Path,
    tmp_path: Path,
) -> None:
    """min 0: no traffic for scaleToZeroWindow (5 min, the CRD's minimum) -> 0 replicas,
    phase ScaledToZero; a request arriving at the gateway brings one replica back."""
    manifest = tmp_path / "chat.yaml"
    manifest.write_text(ZERO_MANIFEST.format(namespace=namespace))
    cluster.kubectl("apply", "-f", str(manifest))
    apps = client.AppsV1Api(api)
    try:
        wait_for(lambda: _status(api, namespace).get("phase") == "Ready", timeout=90, what="Ready")
        _put_load(control, namespace, LOW_RPS)
        time.sleep(20)
        _put_load(control, namespace, 0.0)
        idle_from = time.monotonic()
        st = wait_for(
            lambda: (s := _status(api, namespace)).get("phase") == "ScaledToZero" and s,
            timeout=420,
            interval=2,
            what="ScaledToZero after the 5 min window",
        )
        waited = time.monotonic() - idle_from
        print(f"\nscale to zero: {waited:.0f}s after the last request (window 300s)")
        assert waited >= 300 - 30  # not before the window (minus the last requests' drain)
        assert st["autoscaler"]["reason"] == "ScaleToZero", st["autoscaler"]
        assert apps.read_namespaced_deployment("chat", namespace).spec.replicas == 0
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "ScaledToZero"
        _no_drift(cluster, manifest)

        _put_load(control, namespace, LOW_RPS)
        st = wait_for(
            lambda: (s := _status(api, namespace)).get("readyReplicas", 0) >= 1 and s,
            timeout=90,
            what="back from zero",
        )
        assert st["autoscaler"]["reason"] == "ScaleFromZero", st["autoscaler"]
        _no_drift(cluster, manifest)
    except AssertionError:
        print(operator.read_text()[-6000:], file=sys.stderr)
        raise
