"""Shared fixtures: one local GPU cluster per test session, one namespace per test.

The cluster's processes are started with PR_SET_PDEATHSIG, so even a test run killed with
SIGKILL leaves nothing running; SIGTERM/SIGINT run the normal teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane_testbed.harness import OperatorProcess
from modelplane_testbed.localcluster import LocalCluster, load_layout
from modelplane_testbed.platform import ChartRelease, Platform

REPO = Path(__file__).resolve().parents[1]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The local GPU cluster (real control plane + KWOK GPU nodes) with our CRDs installed."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    root = Path(tempfile.mkdtemp(prefix="modelplane-test-"))
    c = LocalCluster(
        f"test-{os.getpid()}", state_root=root, layout=load_layout(), die_with_parent=True
    )
    try:
        c.up(crd_dirs=[REPO / "crds"], timeout=240)
        yield c
    finally:
        c.down(keep_logs=bool(os.environ.get("MODELPLANE_KEEP_TEST_LOGS")))
        if not os.environ.get("MODELPLANE_KEEP_TEST_LOGS"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> Any:
    return cluster.api()


@pytest.fixture
def namespace(cluster: LocalCluster, api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (deleted afterwards), with its default ServiceAccount."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    v1 = client.CoreV1Api(api)
    base = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")
    name = f"{base[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    v1.create_namespace({"metadata": {"name": name, "labels": {"modelplane.io/test": "true"}}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            v1.read_namespaced_service_account("default", name)
            break
        except ApiException:
            time.sleep(0.2)
    yield name
    v1.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def platform(cluster: LocalCluster) -> Iterator[Platform]:
    """What lies beneath the product: the engine emulator (model servers at pod addresses,
    readiness, start-up times, stand-in clients) and the node provisioner."""
    p = Platform(cluster).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def releases(platform: Platform) -> dict[str, ChartRelease]:
    """The chart, installed with its defaults (``default``: capacityProvider static, the default
    AcceleratorClasses), and once more with ``capacityProvider=karpenter`` for the NodePool
    tests. The operator under test runs with a token of the release's ServiceAccount, i.e.
    with exactly the chart's RBAC, and with the environment the chart renders."""
    return {
        "default": platform.install("modelplane", "modelplane-system"),
        "karpenter": platform.install(
            "mp-karpenter",
            "mp-karpenter",
            {"capacityProvider": "karpenter", "defaultAcceleratorClasses": "false"},
        ),
    }


@pytest.fixture
def control(platform: Platform) -> Any:
    """The engine emulator's control API (load per ModelDeployment, what each pod does)."""
    return platform.control()


@pytest.fixture
def run_operator(
    platform: Platform, releases: dict[str, ChartRelease]
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator of a chart release (``default`` or ``karpenter``), watching
    ``namespaces``, with the chart's environment plus chart ``values``; stopped after the test
    (also on failure)."""
    started: list[OperatorProcess] = []

    def start(
        namespaces: list[str],
        release: str = "default",
        values: dict[str, str] | None = None,
        **env: str,
    ) -> OperatorProcess:
        vals = {"logLevel": "DEBUG", "resyncIntervalSeconds": "5", **(values or {})}
        op = platform.operator(releases[release], namespaces, vals, **env)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
