"""Run the operator as a real process against a local cluster, and measure what it does.

Used by the integration tests and the benchmarks: `OperatorProcess` starts `modelplane run`
with its own client-certificate identity (so the apiserver's audit log attributes its
requests), a metrics port on 127.0.0.1, and PR_SET_PDEATHSIG so it never outlives its parent.
"""

from __future__ import annotations

from typing import Any

from modelplane_testbed.localcluster.cluster import _die_with_parent


class OperatorProcess:
    """`modelplane run` as a subprocess against the local cluster, stopped on exit (also on
    failure); it dies with the test run if that is killed (PR_SET_PDEATHSIG)."""

    USER = "modelplane-operator"

    def __init__(
        self,
        cluster: Any,
        namespaces: list[str],
        provider: str = "simulated",
        *,
        kubeconfig: Any = None,
        user: str | None = None,
        **env: str,
    ) -> None:
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
            # Its own identity, so the audit log tells its requests apart from everyone else's.
            "KUBECONFIG": str(
                kubeconfig or cluster.client_kubeconfig(self.USER, ["system:masters"])
            ),
            "MODELPLANE_NAMESPACES": ",".join(namespaces),
            "MODELPLANE_CAPACITY_PROVIDER": provider,
            "MODELPLANE_RESYNC_INTERVAL_SECONDS": "3",
            "MODELPLANE_METRICS_PORT": str(self.metrics_port),
            "MODELPLANE_METRICS_HOST": "127.0.0.1",
            "MODELPLANE_HEALTH_PORT": "0",
            "MODELPLANE_LOG_LEVEL": "DEBUG",
            **env,
        }
        label = "-".join(namespaces)[:40] or "all"
        self.log_path = cluster.log_dir / f"operator-{label}.log"
        self.proc: Any = None

    def start(self) -> OperatorProcess:
        import subprocess
        import sys

        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelplane.cli", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus series from the operator's /metrics."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text = r.read().decode()
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
