"""Run the operator as a real process against a local cluster, and measure what it does.

Used by the integration tests and the benchmarks: `OperatorProcess` starts `modelplane run`
with its own client-certificate identity (so the apiserver's audit log attributes its
requests), a metrics port on 127.0.0.1, and PR_SET_PDEATHSIG so it never outlives its parent.
"""

from __future__ import annotations

from typing import Any


class OperatorProcess:
    """`modelplane run` as a subprocess against the local cluster, stopped on exit (also on
    failure); it dies with the test run if that is killed (PR_SET_PDEATHSIG)."""

    USER = "modelplane-operator"

    def __init__(
        self,
        cluster: Any,
        namespaces: list[str],
        *,
        chart_env: dict[str, str] | None = None,
        kubeconfig: Any = None,
        user: str | None = None,
        detached: bool = False,
        **env: str,
    ) -> None:
        """``chart_env``: the environment the chart gives the operator's container (see
        ``Platform.chart_env``); without it, the operator's own defaults. The metrics and health
        ports are the pod's own on a real cluster; here several operators may share the
        cluster's network namespace, so each gets a free metrics port and no health port."""
        import os
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.metrics_port = s.getsockname()[1]
        s.close()
        self.cluster = cluster
        #: The identity the apiserver sees (audit log `user.username`).
        self.user = user or self.USER
        self.env = {
            **os.environ,
            **(chart_env or {}),
            # Its own identity, so the audit log tells its requests apart from everyone else's.
            "KUBECONFIG": str(
                kubeconfig or cluster.client_kubeconfig(self.USER, ["system:masters"])
            ),
            "MODELPLANE_NAMESPACES": ",".join(namespaces),
            "MODELPLANE_METRICS_PORT": str(self.metrics_port),
            "MODELPLANE_METRICS_HOST": "127.0.0.1",
            "MODELPLANE_HEALTH_PORT": "0",
            **env,
        }
        label = "-".join(namespaces)[:40] or "all"
        # Several replicas of one release may run side by side: one log each.
        self.log_path = cluster.log_dir / f"operator-{label}-{self.metrics_port}.log"
        self.proc: Any = None
        self.detached = detached

    def start(self) -> OperatorProcess:
        import subprocess
        import sys

        log = self.log_path.open("ab")
        # Inside the cluster's network namespace, where pod addresses are reachable (as from a
        # pod on a real cluster); it dies with its parent (PR_SET_PDEATHSIG).
        self.proc = self.cluster.popen_inside(
            [sys.executable, "-m", "modelplane.cli", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            die_with_parent=not self.detached,
            start_new_session=self.detached,
        )
        log.close()
        self.cluster.track("operator", self.proc.pid)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the operator (SIGSTOP freezes it, SIGCONT thaws it: a stalled leader)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self.cluster.untrack(self.proc.pid)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus series from the operator's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        code, raw = self.cluster.http("127.0.0.1", self.metrics_port, "/metrics", timeout=5)
        if code != 200:
            raise RuntimeError(f"operator /metrics answered {code}")
        text = raw.decode()
        total = 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def log(self) -> str:
        text: str = self.log_path.read_text(errors="replace")
        return text[-5000:]

    def peak_rss_mib(self) -> float:
        """High-water resident memory of the operator process (VmHWM), in MiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def audit_events(cluster: Any, user: str) -> list[dict[str, Any]]:
    """Every request of `user` the apiserver's audit log recorded (ResponseComplete stage)."""
    import json

    out = []
    for line in cluster.audit_log.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("stage") == "ResponseComplete" and ev.get("user", {}).get("username") == user:
            out.append(ev)
    return out


def audit_writes(cluster: Any, user: str) -> list[dict[str, Any]]:
    """Mutating requests `user` made, from the apiserver's audit log."""
    return [e for e in audit_events(cluster, user) if e.get("verb") in MUTATING]
