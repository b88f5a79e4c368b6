"""A real Kubernetes control plane on one machine, with simulated GPU nodes.

`LocalCluster.up()` starts etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler ->
KWOK on 127.0.0.1 with free ports, creates GPU nodes shaped like real instances, and waits until
the cluster is usable (readyz, nodes Ready, the default ServiceAccount). `down()` stops exactly
the processes it started (matched by pid *and* start time) and removes the state directory.

State lives in `<state_root>/clusters/<name>/` (default state root: `~/.local/state/modelplane`,
or `$MODELPLANE_STATE`); the admin kubeconfig is `<that dir>/admin.kubeconfig`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from modelplane import kubeconfig
from modelplane_testbed.localcluster import binaries, lws, netns, pki
from modelplane_testbed.localcluster.nodes import NodeLayout, load_layout

Log = Callable[[str], None]

SERVICE_CIDR = "10.0.0.0/24"
# Metadata level: every mutating request, plus every request of ServiceAccounts (the operator
# runs as one in the tests, which read both its writes and the permissions it really used).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [system:serviceaccounts]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
"""
POD_CIDR = netns.POD_CIDR


#: The processes `up` starts; others (emulator, provisioner, an operator) may come and go.
CORE_PROCESSES = frozenset(
    {"netns", "etcd", "apiserver", "controller-manager", "scheduler", "kwok", "lws"}
)


class ClusterError(RuntimeError):
    """The local cluster could not be started or reached; the message says what to look at."""


def default_state_root() -> Path:
    env = os.environ.get("MODELPLANE_STATE")
    return Path(env) if env else Path.home() / ".local" / "state" / "modelplane"


def _stderr_log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot (None if gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces; it is wrapped in parentheses.
    rest = raw.rsplit(")", 1)[1].split()
    if rest[0] == "Z":  # zombie: exited, not yet reaped
        return None
    return int(rest[19])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class ProcessRecord:
    name: str
    pid: int
    start_time: int
    argv0: str

    def alive(self) -> bool:
        return _proc_start_time(self.pid) == self.start_time


@dataclass
class ClusterState:
    name: str
    kubernetes_version: str
    ports: dict[str, int]
    processes: list[ProcessRecord] = field(default_factory=list)
    #: The process holding the cluster's network namespace (and relaying the host to it).
    netns_pid: int | None = None

    def core(self) -> list[ProcessRecord]:
        """The cluster's own processes (not what the test bed started inside it since)."""
        return [p for p in self.processes if p.name in CORE_PROCESSES]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "kubernetesVersion": self.kubernetes_version,
                "ports": self.ports,
                "processes": [p.__dict__ for p in self.processes],
                "netnsPid": self.netns_pid,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        d = json.loads(text)
        return cls(
            name=d["name"],
            kubernetes_version=d["kubernetesVersion"],
            ports=d["ports"],
            processes=[ProcessRecord(**p) for p in d["processes"]],
            netns_pid=d.get("netnsPid"),
        )


class LocalCluster:
    """One local cluster, identified by its name and state root."""

    def __init__(
        self,
        name: str = "modelplane",
        *,
        state_root: Path | None = None,
        layout: NodeLayout | None = None,
        die_with_parent: bool = False,
        log: Log = _stderr_log,
    ) -> None:
        self.name = name
        self.dir = (state_root or default_state_root()) / "clusters" / name
        self.layout = layout
        self.die_with_parent = die_with_parent
        self.log = log
        self._state: ClusterState | None = None
        # Popen objects of the processes this instance started: kept so they are reaped (and
        # not reported as leaked) by this process; `down` works from the state file alone.
        self._popen: list[subprocess.Popen[bytes]] = []
        #: argv of each core process this instance started, so `restart` can start it again.
        self._argv: dict[str, list[str]] = {}

    # ----------------------------------------------------------------- paths and state
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def connect_socket(self) -> Path:
        """Unix socket of the namespace holder: ``CONNECT host:port`` into the cluster."""
        return self.dir / "netns.sock"

    def http(
        self,
        host: str,
        port: int,
        path: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """An HTTP request to ``host:port`` inside the cluster's network namespace (a pod
        address, the operator's metrics port), from outside it."""
        return netns.http_request(
            str(self.connect_socket), host, port, method, path, body, headers, timeout
        )

    def state(self) -> ClusterState | None:
        if self._state is None and self.state_file.exists():
            self._state = ClusterState.from_json(self.state_file.read_text())
        return self._state

    def _save(self) -> None:
        assert self._state is not None
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(self._state.to_json())
        tmp.replace(self.state_file)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ----------------------------------------------------------------- up
    def up(
        self,
        *,
        crd_dirs: Sequence[Path] = (),
        timeout: float = 180.0,
        bins: binaries.Binaries | None = None,
    ) -> ClusterState:
        """Start the cluster; idempotent when it is already running and healthy."""
        existing = self.state()
        if existing is not None:
            if all(p.alive() for p in existing.core()) and self._readyz(existing):
                self.log(f"cluster {self.name!r} already running at {existing.server}")
                return existing
            self.log(f"cluster {self.name!r} has stale state; cleaning it up first")
            self.down()
        bins = bins or binaries.ensure()
        layout = self.layout or load_layout()
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.log_dir.mkdir(exist_ok=True)
        keys = pki.generate(self.dir / "pki")
        names = ["etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler"]
        names += ["lws_webhook", "lws_health"]
        self._state = ClusterState(
            name=self.name,
            kubernetes_version=bins.kubernetes_version,
            ports=dict(zip(names, free_ports(len(names)), strict=True)),
        )
        self._save()
        st = self._state
        self._write_kubeconfig(keys, st)
        try:
            self._start_netns(st, deadline)
            self.log(
                f"network namespace ready (holder pid {st.netns_pid}, pod CIDR {POD_CIDR} local, "
                f"no route out) ({time.monotonic() - t0:.1f}s)"
            )
            self._start_etcd(bins, st)
            self._start_apiserver(bins, st, keys)
            self._wait(lambda: self._readyz(st), deadline, "kube-apiserver /readyz", "apiserver")
            self.log(f"kube-apiserver ready at {st.server} ({time.monotonic() - t0:.1f}s)")
            for d in [bins.karpenter_crds, bins.lws_crds, *crd_dirs]:
                self.apply_dir(d, bins)
            self._start_controllers(bins, st, keys)
            self._create_nodes(layout)
            self._start_kwok(bins, st)
            self._wait(
                lambda: self._nodes_ready(len(layout.manifests())), deadline, "nodes Ready", "kwok"
            )
            self._wait(
                self._default_sa_exists, deadline, "default ServiceAccount", "controller-manager"
            )
            self._start_lws(bins, st, keys, deadline)
            self.log(
                f"LeaderWorkerSet controller and webhooks ready ({time.monotonic() - t0:.1f}s)"
            )
        except BaseException:
            self.log("start-up failed; stopping what was started")
            self.down(keep_logs=True)
            raise
        self.log(
            f"cluster {self.name!r} up in {time.monotonic() - t0:.1f}s: "
            f"{len(layout.manifests())} nodes; KUBECONFIG={self.kubeconfig}"
        )
        return st

    def enter_prefix(self) -> list[str]:
        """argv prefix that runs a command inside this cluster's network namespace."""
        st = self.state()
        if st is None or st.netns_pid is None:
            raise ClusterError(f"cluster {self.name!r} is not running")
        return netns.enter_prefix(st.netns_pid)

    def popen_inside(
        self,
        argv: Sequence[str],
        *,
        die_with_parent: bool = True,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the cluster's network namespace (pod IPs are local there; no
        address outside it is reachable). ``kw`` goes to ``subprocess.Popen``."""
        return subprocess.Popen(
            [*self.enter_prefix(), *argv],
            preexec_fn=_die_with_parent if die_with_parent else None,
            **kw,
        )

    def track(self, name: str, pid: int) -> None:
        """Record a process started inside the cluster, so ``down`` stops it too."""
        st = self.state()
        start = _proc_start_time(pid)
        if st is None or start is None:
            return
        st.processes.append(ProcessRecord(name, pid, start, name))
        self._save()

    def untrack(self, pid: int) -> None:
        """Forget a tracked process that was stopped on purpose (else `status` reports the
        cluster as not running: one of its processes is gone)."""
        st = self.state()
        if st is None:
            return
        st.processes = [p for p in st.processes if p.pid != pid or p.alive()]
        self._save()

    def _start_netns(self, st: ClusterState, deadline: float) -> None:
        port = st.ports["apiserver"]
        listener = netns.listen_on_host(port)
        fd = listener.fileno()
        logf = (self.log_dir / "netns.log").open("ab")
        try:
            proc = subprocess.Popen(
                [
                    *netns.create_prefix(),
                    sys.executable, "-m", "modelplane_testbed.localcluster.netns",
                    f"--cidr={POD_CIDR}", "--relay", f"{fd}:{port}",
                    f"--connect-socket={self.connect_socket}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(fd,),
                preexec_fn=_die_with_parent if self.die_with_parent else None,
                cwd=self.dir,
            )  # fmt: skip
        finally:
            logf.close()
            listener.close()  # the holder has its own copy
        self._popen.append(proc)
        start = _proc_start_time(proc.pid)
        if start is None:
            raise ClusterError(f"netns holder exited at once; see {self.log_dir / 'netns.log'}")
        st.processes.append(ProcessRecord("netns", proc.pid, start, "netns"))
        st.netns_pid = proc.pid
        self._save()
        log = self.log_dir / "netns.log"
        self._wait(
            lambda: "NETNS_READY" in log.read_text(errors="replace"),
            deadline,
            "the network namespace (unshare -rn: are user namespaces allowed?)",
            "netns",
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self._state is not None
        logf = (self.log_dir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                [*self.enter_prefix(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
                cwd=self.dir,
            )
        finally:
            logf.close()
        self._popen.append(proc)
        self._argv[name] = argv
        start = _proc_start_time(proc.pid)
        if start is None:
            raise ClusterError(f"{name} exited at once; see {self.log_dir / (name + '.log')}")
        self._state.processes.append(ProcessRecord(name, proc.pid, start, argv[0]))
        self._save()

    def restart(self, name: str, *, down_seconds: float = 0.0, kill: bool = False) -> None:
        """Stop one control-plane process (``etcd``, ``apiserver``, ...; SIGTERM, or SIGKILL with
        ``kill``), keep it down ``down_seconds``, start it again with the same arguments and,
        for etcd and the apiserver, wait until the apiserver is ready again. Chaos tests only:
        a restart of this instance's own cluster."""
        st = self.state()
        assert st is not None
        if name not in self._argv:
            raise ClusterError(f"{name} was not started by this LocalCluster; cannot restart it")
        rec = next(p for p in st.processes if p.name == name and p.alive())
        proc = next(p for p in self._popen if p.pid == rec.pid)
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        st.processes.remove(rec)
        self._save()
        time.sleep(down_seconds)
        self._spawn(name, self._argv[name])
        if name in ("etcd", "apiserver"):
            self._wait(lambda: self._readyz(st), time.monotonic() + 120, "/readyz", "apiserver")

    def _start_etcd(self, bins: binaries.Binaries, st: ClusterState) -> None:
        c, p = st.ports["etcd"], st.ports["etcd_peer"]
        self._spawn(
            "etcd",
            [
                str(bins.etcd),
                "--name=node0",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{c}",
                f"--advertise-client-urls=http://127.0.0.1:{c}",
                f"--listen-peer-urls=http://127.0.0.1:{p}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
                f"--initial-cluster=node0=http://127.0.0.1:{p}",
                "--unsafe-no-fsync=true",  # a throw-away dev/test store: durability is not wanted
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, bins: binaries.Binaries, st: ClusterState, k: pki.Pki) -> None:
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self._spawn(
            "apiserver",
            [
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{st.ports['etcd']}",
                "--bind-address=127.0.0.1",
                # Derived from the bind address otherwise; hosts without a default route fail.
                "--advertise-address=127.0.0.1",
                f"--secure-port={st.ports['apiserver']}",
                f"--tls-cert-file={k.apiserver_crt}",
                f"--tls-private-key-file={k.apiserver_key}",
                f"--client-ca-file={k.ca_crt}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={k.sa_pub}",
                f"--service-account-signing-key-file={k.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Loopback addresses are not valid endpoints for the `kubernetes` service.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--v=0",
            ],
        )

    def _start_controllers(self, bins: binaries.Binaries, st: ClusterState, k: pki.Pki) -> None:
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",  # one instance; never wait out a stale lease after restart
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--profiling=false",
        ]
        self._spawn(
            "controller-manager",
            [
                str(bins.kube_controller_manager),
                *common,
                f"--secure-port={st.ports['controller_manager']}",
                f"--service-account-private-key-file={k.sa_key}",
                f"--root-ca-file={k.ca_crt}",
                "--controllers=*",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        self._spawn(
            "scheduler",
            [str(bins.kube_scheduler), *common, f"--secure-port={st.ports['scheduler']}"],
        )

    def _start_kwok(self, bins: binaries.Binaries, st: ClusterState) -> None:
        from modelplane_testbed.localcluster.stages import kwok_stages

        cfg = self.dir / "kwok.yaml"
        # Model-server pods become Running but not Ready: the engine emulator reports readiness
        # as a kubelet prober would; cache-fill Job pods complete when the emulator says so.
        cfg.write_text(yaml.safe_dump_all(kwok_stages(bins.kwok_stages), sort_keys=False))
        self._spawn(
            "kwok",
            [
                str(bins.kwok),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={cfg}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--manage-nodes-with-label-selector=",
                "--manage-single-node=",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.0.0.1",  # written into status only; nothing connects to it
                "--node-lease-duration-seconds=40",
                "--server-address=",  # no /logs or /exec endpoint: nothing listens
            ],
        )

    def _start_lws(
        self, bins: binaries.Binaries, st: ClusterState, k: pki.Pki, deadline: float
    ) -> None:
        """The LeaderWorkerSet controller, its webhooks served on loopback with a certificate of
        the cluster's CA and registered by URL (see `modelplane_testbed.localcluster.lws`)."""
        from kubernetes import client

        # Its CRDs were applied with the others; their large schemas take a while to be served.
        self._wait(
            lambda: self.get("/apis/leaderworkerset.x-k8s.io/v1")[0] == 200,
            deadline,
            "the LeaderWorkerSet CRD to be served",
            "apiserver",
        )
        certs = self.dir / "lws-certs"
        certs.mkdir(mode=0o700, exist_ok=True)
        crt, key = pki.issue_server(k, "lws-webhook", [lws.WEBHOOK_HOST])
        (certs / "tls.crt").write_bytes(crt)
        (certs / "tls.key").write_bytes(key)
        (certs / "tls.key").chmod(0o600)
        cfg = self.dir / "lws.yaml"
        port = st.ports["lws_webhook"]
        conf = lws.controller_config(
            webhook_port=port, health_port=st.ports["lws_health"], cert_dir=certs
        )
        cfg.write_text(yaml.safe_dump(conf, sort_keys=False))
        self._spawn(
            "lws",
            [
                str(bins.lws),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={cfg}",
                "--zap-log-level=info",
            ],
        )
        docs = lws.webhook_configurations(bins.lws_webhook, port=port, ca_pem=k.ca_crt.read_bytes())
        self.kubectl(
            "apply", "--server-side", "--force-conflicts",
            "--field-manager=modelplane-localcluster", "-f", "-",
            input=yaml.safe_dump_all(docs, sort_keys=False),
        )  # fmt: skip
        api = client.CustomObjectsApi(self.api())
        rec = next(p for p in st.processes if p.name == "lws")

        def dry_run(body: dict[str, Any]) -> None:
            api.create_namespaced_custom_object(
                "leaderworkerset.x-k8s.io", "v1", "default", "leaderworkersets", body,
                dry_run="All",
            )  # fmt: skip

        try:
            lws.wait_for_webhooks(dry_run, deadline=deadline, alive=rec.alive)
        except (RuntimeError, TimeoutError) as e:
            raise ClusterError(f"{e}; see {self.log_dir / 'lws.log'}") from e

    def client_kubeconfig(self, user: str, groups: list[str] | None = None) -> Path:
        """A kubeconfig for another identity (a client cert for `user` in `groups`)."""
        st = self.state()
        if st is None:
            raise ClusterError(f"cluster {self.name!r} is not running")
        k = pki.Pki(self.dir / "pki")
        crt, key = pki.issue_client(k, user, groups or [])
        path = self.dir / f"{user.replace(':', '-')}.kubeconfig"
        self._write_kubeconfig(k, st, path=path, user=user, cert=(crt, key))
        return path

    def token_kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        st = self.state()
        if st is None:
            raise ClusterError(f"cluster {self.name!r} is not running")
        k = pki.Pki(self.dir / "pki")
        ctx = f"modelplane-{self.name}"
        cfg = kubeconfig.render(
            server=st.server,
            ca_data=base64.b64encode(k.ca_crt.read_bytes()).decode(),
            user={"token": token},
            cluster=ctx,
            user_name=name,
        )
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)
        return path

    @property
    def audit_log(self) -> Path:
        """Every mutating request (who, verb, resource), one JSON event a line."""
        return self.dir / "audit.log"

    def _write_kubeconfig(
        self,
        k: pki.Pki,
        st: ClusterState,
        *,
        path: Path | None = None,
        user: str = "admin",
        cert: tuple[bytes, bytes] | None = None,
    ) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        crt, key = cert or (k.admin_crt.read_bytes(), k.admin_key.read_bytes())
        ctx = f"modelplane-{self.name}"
        cfg = kubeconfig.render(
            server=st.server,
            ca_data=b64(k.ca_crt),
            user={
                "client-certificate-data": base64.b64encode(crt).decode(),
                "client-key-data": base64.b64encode(key).decode(),
            },
            cluster=ctx,
            user_name=f"{ctx}-{user}",
        )
        out = path or self.kubeconfig
        out.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out.chmod(0o600)

    # ----------------------------------------------------------------- waiting
    def _ssl(self) -> ssl.SSLContext:
        k = pki.Pki(self.dir / "pki")
        ctx = ssl.create_default_context(cafile=str(k.ca_crt))
        ctx.load_cert_chain(str(k.admin_crt), str(k.admin_key))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET an apiserver path as the admin user."""
        st = self.state()
        if st is None:
            raise ClusterError(f"cluster {self.name!r} is not running (no state in {self.dir})")
        req = urllib.request.Request(st.server + path)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _readyz(self, st: ClusterState) -> bool:
        try:
            code, _ = self.get("/readyz")
        except (OSError, ssl.SSLError):
            return False
        return code == 200

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def _wait(self, ok: Callable[[], bool], deadline: float, what: str, proc: str) -> None:
        st = self.state()
        assert st is not None
        while time.monotonic() < deadline:
            # Only the control plane's own processes: a tracked operator or gateway a test killed
            # on purpose is not the cluster failing.
            dead = [p.name for p in st.processes if p.name in CORE_PROCESSES and not p.alive()]
            if dead:
                raise ClusterError(
                    f"{', '.join(dead)} exited while waiting for {what}; "
                    f"see the logs in {self.log_dir}"
                )
            if ok():
                return
            time.sleep(0.25)
        raise ClusterError(f"timed out waiting for {what}; see {self.log_dir / (proc + '.log')}")

    def api(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster (admin)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def _create_nodes(self, layout: NodeLayout) -> None:
        from kubernetes import client

        v1 = client.CoreV1Api(self.api())
        manifests = layout.manifests()
        for m in manifests:
            v1.create_node(m)
        gpus = sum(int(m["status"]["capacity"].get("nvidia.com/gpu", 0)) for m in manifests)
        self.log(f"created {len(manifests)} simulated nodes ({gpus} GPUs)")

    def _nodes_ready(self, want: int) -> bool:
        from kubernetes import client

        nodes = client.CoreV1Api(self.api()).list_node().items
        ready = 0
        for n in nodes:
            status, spec = n.status, n.spec
            conds = {c.type: c.status for c in ((status.conditions if status else None) or [])}
            taints = (spec.taints if spec else None) or []
            tainted = any(t.key == "node.kubernetes.io/not-ready" for t in taints)
            ready += int(conds.get("Ready") == "True" and not tainted)
        return ready >= want

    def _default_sa_exists(self) -> bool:
        code, _ = self.get("/api/v1/namespaces/default/serviceaccounts/default")
        return code == 200

    # ----------------------------------------------------------------- helpers for users
    def env(self) -> dict[str, str]:
        """Environment for running kubectl/helm against this cluster."""
        bins = binaries.ensure(build=False)
        path = os.pathsep.join([*(str(d) for d in bins.bin_dirs), os.environ.get("PATH", "")])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        bins = binaries.ensure(build=False)
        proc = subprocess.run(
            [str(bins.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def apply_dir(self, d: Path, bins: binaries.Binaries | None = None) -> None:
        """Server-side apply every YAML file in `d` (CRDs before the controllers start)."""
        files = sorted(p for p in d.glob("*.yaml"))
        if not files:
            return
        bins = bins or binaries.ensure(build=False)
        args = [str(bins.kubectl), f"--kubeconfig={self.kubeconfig}", "apply", "--server-side"]
        args += ["--force-conflicts", "--field-manager=modelplane-localcluster"]
        for f in files:
            args += ["-f", str(f)]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"applying {d} failed: {proc.stderr.strip()}")
        self.log(f"applied {len(files)} manifests from {d.name}/")

    # ----------------------------------------------------------------- status and down
    def status(self) -> dict[str, Any]:
        st = self.state()
        if st is None:
            return {"name": self.name, "running": False, "stateDir": str(self.dir)}
        procs = {p.name: {"pid": p.pid, "alive": p.alive()} for p in st.processes}
        info: dict[str, Any] = {
            "name": self.name,
            "running": bool(st.core()) and all(p.alive() for p in st.core()),
            "server": st.server,
            "kubeconfig": str(self.kubeconfig),
            "kubernetesVersion": st.kubernetes_version,
            "processes": procs,
        }
        if info["running"]:
            info["readyz"] = self._readyz(st)
            with contextlib.suppress(Exception):
                from kubernetes import client

                nodes = client.CoreV1Api(self.api()).list_node().items
                info["nodes"] = len(nodes)
                info["gpus"] = sum(
                    int(
                        ((n.status.allocatable if n.status else None) or {}).get(
                            "nvidia.com/gpu", "0"
                        )
                    )
                    for n in nodes
                )
        return info

    def pids(self) -> list[int]:
        st = self.state()
        return [p.pid for p in st.processes if p.alive()] if st else []

    def down(self, *, keep_logs: bool = False, grace: float = 10.0) -> None:
        """Stop the processes this cluster started (newest first) and remove its state."""
        st = self.state()
        if st is not None:
            for p in reversed(st.processes):
                if p.alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)
            end = time.monotonic() + grace
            while time.monotonic() < end and any(p.alive() for p in st.processes):
                _reap()
                time.sleep(0.1)
            for p in st.processes:
                if p.alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)
            _reap()
            for proc in self._popen:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
            self._popen.clear()
            self.log(f"stopped {len(st.processes)} processes of cluster {self.name!r}")
        self._state = None
        if keep_logs and self.dir.exists():
            for child in self.dir.iterdir():
                if child.name != "logs":
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _reap() -> None:
    """Collect exited children of this process, so they do not linger as zombies."""
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    out: list[tuple[str, int]] = []
    for table, v6 in ((f"/proc/{pid}/net/tcp", False), (f"/proc/{pid}/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state != "0A" or inode not in inodes:  # 0A = LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                out.append((_decode_addr(addr_hex, v6), int(port_hex, 16)))
    return out


def _decode_addr(h: str, v6: bool) -> str:
    raw = bytes.fromhex(h)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc stores IPv6 as four host-endian 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


@contextlib.contextmanager
def running(name: str, *, state_root: Path | None = None, **kw: Any) -> Iterator[LocalCluster]:
    """A cluster that is up for the `with` block and down afterwards, also on errors."""
    c = LocalCluster(name, state_root=state_root, die_with_parent=True)
    try:
        c.up(**kw)
        yield c
    finally:
        c.down()
