"""Shared fixtures: one local GPU cluster per test session, one namespace per test.

The cluster's processes are started with PR_SET_PDEATHSIG, so even a test run killed with
SIGKILL leaves nothing running; SIGTERM/SIGINT run the normal teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelplane_testbed.localcluster import LocalCluster, ensure, load_layout
from modelplane_testbed.harness import OperatorProcess

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


@dataclass(frozen=True)
class ChartIdentity:
    """The chart's ServiceAccount for one capacity provider, as the operator's identity."""

    provider: str
    namespace: str
    service_account: str
    kubeconfig: Path
    priority_class: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@pytest.fixture(scope="session")
def chart_identities(cluster: LocalCluster) -> dict[str, ChartIdentity]:
    """`helm install` the chart once per capacity provider; the operator under test then runs
    with a token of the chart's ServiceAccount, i.e. with exactly the chart's RBAC."""
    helm = str(ensure(build=False).helm)
    out: dict[str, ChartIdentity] = {}
    for provider in ("simulated", "karpenter", "static"):
        ns = f"mp-{provider}"
        release = f"mp-{provider}"
        subprocess.run(
            [
                helm, "install", release, str(REPO / "charts" / "modelplane"),
                "--namespace", ns, "--create-namespace",
                "--set", f"capacityProvider={provider}",
                "--set", "installCRDs=false",
                "--set", "defaultAcceleratorClasses=false",
                "--set", "image.repository=example.invalid/modelplane",
            ],
            env=cluster.env(), check=True, capture_output=True, text=True,
        )  # fmt: skip
        sa = cluster.kubectl(
            "get", "serviceaccount", "-n", ns,
            "-l", f"app.kubernetes.io/instance={release}", "-o", "jsonpath={.items[0].metadata.name}",
        )  # fmt: skip
        token = cluster.kubectl("create", "token", sa, "-n", ns, "--duration=6h").strip()
        kc = cluster.token_kubeconfig(f"operator-{provider}", token)
        pc = cluster.kubectl(
            "get", "priorityclass", "-l", f"app.kubernetes.io/instance={release}",
            "-o", "jsonpath={.items[0].metadata.name}",
        )  # fmt: skip
        out[provider] = ChartIdentity(provider, ns, sa, kc, pc)
    return out


@pytest.fixture
def run_operator(
    cluster: LocalCluster, chart_identities: dict[str, ChartIdentity]
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `modelplane run` under the chart's ServiceAccount for `provider`; stopped after
    the test (also on failure)."""
    started: list[OperatorProcess] = []

    def start(namespaces: list[str], provider: str = "simulated", **env: str) -> OperatorProcess:
        ident = chart_identities[provider]
        op = OperatorProcess(
            cluster,
            namespaces,
            provider,
            kubeconfig=ident.kubeconfig,
            user=ident.user,
            MODELPLANE_OPERATOR_NAMESPACE=ident.namespace,
            MODELPLANE_PLACEHOLDER_PRIORITY_CLASS=ident.priority_class,
            **env,
        )
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def fleet_url(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    """The simulated engine fleet for this test's namespace (vLLM metrics, LoRA endpoints)."""
    log = (tmp_path / "fleet.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane_testbed.fleet",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--port",
            "0",
            "--namespace",
            namespace,
            "--seed",
            "7",
            "--ttl",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("FLEET_URL=http://127.0.0.1:"), (tmp_path / "fleet.log").read_text()
        yield line.split("=", 1)[1]
    finally:
        _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
