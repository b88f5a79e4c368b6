"""The product installed on the local cluster as on a real one, with the world beneath it.

``Platform`` is what the demo, the integration tests and the benchmarks share:

* the chart, ``helm install``-ed with its **default values** (RBAC, the operator's namespace,
  the default AcceleratorClasses, the placeholder PriorityClass);
* the operator, run as a process with exactly the environment the chart gives its container
  (read from ``helm template``) and a token of the chart's ServiceAccount, inside the
  cluster's network namespace where pod addresses are reachable: the test bed plays the
  kubelet for the operator's pod, as KWOK does for every other pod;
* beneath the product: the engine emulator (model servers at their pod addresses, readiness,
  start-up times derived from the pods, stand-in clients and their demand signal) and the node
  provisioner (GPU nodes for pods that do not fit, as a cloud's autoscaler adds them).

Nothing here reaches into the product's decisions: it only installs, runs and observes it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelplane_testbed.harness import OperatorProcess
from modelplane_testbed.localcluster import LocalCluster, binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelplane"
#: Times of the cold-start model (node boot, image pull, weight load, warm-up) are scaled by
#: this on the local cluster: 0.05 turns a 90 s node boot into 4.5 s.
DEFAULT_TIME_SCALE = 0.05


@dataclass
class ChartRelease:
    """One ``helm install`` of the chart, and the identity of its ServiceAccount."""

    release: str
    namespace: str
    values: dict[str, str]
    service_account: str = ""
    kubeconfig: Path | None = None
    priority_class: str = ""
    #: The release's values as YAML (``helm get values``), for a release installed elsewhere.
    values_yaml: str = ""

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@dataclass
class Platform:
    cluster: LocalCluster
    time_scale: float = DEFAULT_TIME_SCALE
    #: Node provisioner: seconds a new GPU node takes (default: the cold-start model, scaled).
    provisioning_delay: float | None = None
    #: Node provisioner: remove a node it created once idle this long.
    idle_seconds: float = 120.0
    #: Keep running after this process exits (``demo --keep``); ``cluster down`` stops them.
    detached: bool = False
    namespaces: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    _logs: list[Any] = field(default_factory=list)

    # ------------------------------------------------------------------ beneath the product
    @property
    def control_socket(self) -> Path:
        """The engine emulator's control API (load, pods), HTTP over this Unix socket."""
        return self.cluster.dir / "emulator.sock"

    def control(self) -> Any:
        from modelplane_testbed.emulator import ControlClient

        return ControlClient(str(self.control_socket))

    def start(self) -> Platform:
        """Start the node provisioner and the engine emulator inside the cluster."""
        from modelplane_testbed.simulator import ColdStartModel

        delay = self.provisioning_delay
        if delay is None:
            delay = ColdStartModel().node_provision_s * self.time_scale
        self._spawn(
            "provisioner",
            [
                "-m", "modelplane_testbed.provisioner",
                "--kubeconfig", str(self.cluster.kubeconfig),
                "--delay", str(delay), "--idle", str(self.idle_seconds),
            ],
        )  # fmt: skip
        emulator = self._spawn(
            "emulator",
            [
                "-m", "modelplane_testbed.emulator",
                "--kubeconfig", str(self.cluster.kubeconfig),
                "--control-socket", str(self.control_socket),
                "--time-scale", str(self.time_scale),
                *(a for ns in self.namespaces for a in ("--namespace", ns)),
            ],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert emulator.stdout is not None
        line = emulator.stdout.readline().strip()
        if "EMULATOR_READY" not in line:
            raise RuntimeError(
                f"engine emulator did not start: {line!r}; see {self.cluster.log_dir}/emulator.log"
            )
        return self

    def _spawn(self, name: str, args: list[str], stdout: Any = None) -> subprocess.Popen[Any]:
        log = (self.cluster.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = self.cluster.popen_inside(
            [sys.executable, *args],
            stdout=stdout if stdout is not None else log,
            stderr=log,
            text=True,
            die_with_parent=not self.detached,
            start_new_session=self.detached,
        )
        self.cluster.track(name, proc.pid)
        self._procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self.cluster.untrack(proc.pid)
        self._procs.clear()
        for f in self._logs:
            f.close()
        self._logs.clear()

    # ------------------------------------------------------------------ the product
    def helm(self, *args: str, check: bool = True) -> str:
        bins = binaries.ensure(build=False)
        proc = subprocess.run(
            [str(bins.helm), *args],
            env=self.cluster.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def install(
        self,
        release: str = "modelplane",
        namespace: str = "modelplane-system",
        values: Mapping[str, str] | None = None,
    ) -> ChartRelease:
        """``helm install`` the chart (its defaults, plus ``values``); the operator's pod is
        then played by ``operator()``. The CRDs are the cluster's already (``crds/``, the same
        files the chart carries), so the chart does not install them a second time."""
        vals = {"installCRDs": "false", **(values or {})}
        sets = [a for k, v in vals.items() for a in ("--set", f"{k}={v}")]
        if vals.get("defaultAcceleratorClasses", "true") != "false":
            self._adopt_classes(release, namespace)
        self.helm(
            "upgrade", "--install", release, str(CHART),
            "--namespace", namespace, "--create-namespace", "--wait=false", *sets,
        )  # fmt: skip
        return self.adopt(release, namespace, dict(vals))

    def adopt(
        self, release: str, namespace: str, values: Mapping[str, str] | None = None
    ) -> ChartRelease:
        """A release of the chart installed by someone else (``pulumi up``, a user's ``helm
        install``), so that ``operator()`` can play its pod. ``values`` are ``--set`` pairs;
        without them, the release's own values (``helm get values``) are used."""
        rel = ChartRelease(release, namespace, dict(values or {}))
        if values is None:
            rel.values_yaml = self.helm(
                "get", "values", release, "--namespace", namespace, "--output", "yaml"
            )
        c = self.cluster
        rel.service_account = c.kubectl(
            "get", "serviceaccount", "-n", namespace,
            "-l", f"app.kubernetes.io/instance={release},app.kubernetes.io/component!=gateway",
            "-o", "jsonpath={.items[0].metadata.name}",
        )  # fmt: skip
        token = c.kubectl(
            "create", "token", rel.service_account, "-n", namespace, "--duration=12h"
        ).strip()
        rel.kubeconfig = c.token_kubeconfig(f"operator-{release}", token)
        rel.priority_class = c.kubectl(
            "get", "priorityclass", "-l", f"app.kubernetes.io/instance={release}",
            "-o", "jsonpath={.items[0].metadata.name}",
        )  # fmt: skip
        return rel

    def _adopt_classes(self, release: str, namespace: str) -> None:
        """Default AcceleratorClasses applied before the chart (by a test or a user) become the
        release's, as helm documents for adopting existing objects."""
        from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS

        c = self.cluster
        existing = set(c.kubectl("get", "acceleratorclasses", "-o", "name", check=False).split())
        for a in DEFAULT_ACCELERATORS:
            ref = f"acceleratorclass.modelplane.io/{a.name}"
            if ref not in existing:
                continue
            c.kubectl("label", "--overwrite", ref, "app.kubernetes.io/managed-by=Helm")
            c.kubectl(
                "annotate", "--overwrite", ref,
                f"meta.helm.sh/release-name={release}",
                f"meta.helm.sh/release-namespace={namespace}",
            )  # fmt: skip

    def chart_env(
        self,
        rel: ChartRelease,
        values: Mapping[str, str] | None = None,
        container: str = "operator",
    ) -> dict[str, str]:
        """The environment the chart renders for the operator's container (or the gateway's:
        ``container="gateway"``), from ``helm template`` with the release's values plus
        ``values``."""
        vals = {**rel.values, **(values or {})}
        sets = [a for k, v in vals.items() for a in ("--set", f"{k}={v}")]
        if rel.values_yaml:
            path = self.cluster.dir / f"values-{rel.namespace}-{rel.release}.yaml"
            path.write_text(rel.values_yaml)
            sets = ["--values", str(path), *sets]
        out = self.helm("template", rel.release, str(CHART), "--namespace", rel.namespace, *sets)
        for doc in yaml.safe_load_all(out):
            if doc and doc.get("kind") == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if c["name"] == container:
                        return {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
        raise RuntimeError(f"the chart rendered no Deployment with a {container} container")

    def gateway(
        self, rel: ChartRelease, port: int, watch: list[str] | None = None, **env: str
    ) -> subprocess.Popen[Any]:
        """A gateway pod of ``rel`` (installed with ``gateway.enabled=true``), played by a
        process inside the cluster: the chart's gateway environment, a token of the chart's
        gateway ServiceAccount, the API on 127.0.0.1:``port`` there and /metrics on ``port + 1`` (reach them with
        ``cluster.http``). ``env`` overrides settings (hold limits). Stop it with
        ``terminate()``; it stops with the platform too."""
        import os

        vals = {"gateway.enabled": "true"}
        if watch:
            vals["watchNamespaces"] = "{" + ",".join(watch) + "}"
        sa = self.cluster.kubectl(
            "get", "serviceaccount", "-n", rel.namespace,
            "-l", f"app.kubernetes.io/instance={rel.release},app.kubernetes.io/component=gateway",
            "-o", "jsonpath={.items[0].metadata.name}",
        )  # fmt: skip
        token = self.cluster.kubectl(
            "create", "token", sa, "-n", rel.namespace, "--duration=12h"
        ).strip()
        kubeconfig = self.cluster.token_kubeconfig(f"gateway-{rel.release}", token)
        full = {
            **os.environ,
            **self.chart_env(rel, vals, container="gateway"),
            "KUBECONFIG": str(kubeconfig),
            "MODELPLANE_GATEWAY_HOST": "127.0.0.1",
            "MODELPLANE_GATEWAY_PORT": str(port),
            "MODELPLANE_GATEWAY_METRICS_HOST": "127.0.0.1",
            "MODELPLANE_GATEWAY_METRICS_PORT": str(port + 1),
            # The pod's ledger volume: a file of this cluster, never the host's /var/lib.
            "MODELPLANE_GATEWAY_LEDGER_URL": f"sqlite:///{self.cluster.dir}/gateway-{port}-usage.db",
            **env,
        }
        log = (self.cluster.log_dir / f"gateway-{rel.release}-{port}.log").open("ab")
        self._logs.append(log)
        proc = self.cluster.popen_inside(
            [sys.executable, "-m", "modelplane.cli", "gateway"], stdout=log, stderr=log, env=full
        )
        self.cluster.track(f"gateway-{port}", proc.pid)
        self._procs.append(proc)
        return proc

    def operator(
        self,
        rel: ChartRelease,
        watch: list[str],
        values: Mapping[str, str] | None = None,
        **env: str,
    ) -> OperatorProcess:
        """The operator's pod of ``rel``, played by a process: the chart's environment (with
        ``watchNamespaces`` = ``watch`` and any other chart ``values``), the chart's
        ServiceAccount token. ``env`` is for the test bed's own needs only (log level)."""
        vals = dict(values or {})
        if watch:
            vals["watchNamespaces"] = "{" + ",".join(watch) + "}"
        return OperatorProcess(
            self.cluster,
            watch,
            chart_env=self.chart_env(rel, vals),
            kubeconfig=rel.kubeconfig,
            user=rel.user,
            detached=self.detached,
            **env,
        )


@contextmanager
def running_platform(
    cluster: LocalCluster, *, time_scale: float = DEFAULT_TIME_SCALE, **kw: Any
) -> Iterator[Platform]:
    p = Platform(cluster, time_scale=time_scale, **kw).start()
    try:
        yield p
    finally:
        p.stop()


def wait_until(fn: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


__all__ = [
    "DEFAULT_TIME_SCALE",
    "ChartRelease",
    "Platform",
    "accelerator_classes_yaml",
    "running_platform",
    "wait_until",
]


def accelerator_classes_yaml() -> str:
    """The default AcceleratorClasses with Karpenter provisioning (what the chart renders for
    ``capacityProvider=karpenter``), for tests that run both providers on one cluster."""
    from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS, accelerator_class_spec

    docs = [
        {
            "apiVersion": "modelplane.io/v1alpha1",
            "kind": "AcceleratorClass",
            "metadata": {"name": a.name},
            "spec": accelerator_class_spec(a),
        }
        for a in DEFAULT_ACCELERATORS
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)
