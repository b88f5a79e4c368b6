"""The local cluster's own network namespace, and the relay that lets the host reach it.

Pods on the local cluster get addresses from KWOK's pod CIDR (10.244.0.0/16). The apiserver
refuses loopback addresses in Endpoints and EndpointSlices, so pod IPs cannot be 127.x; instead
the whole cluster lives in a network namespace of its own (``unshare -rn``: a user namespace
plus a network namespace, no root needed) whose only interface is ``lo`` with the pod CIDR
added to it. Every pod IP is then a local address there: the engine emulator binds each pod's
address and the operator connects to it exactly as it would on a real cluster.

Nothing can leave by construction: the namespace has no interface but ``lo`` and no route, so
a connection to any address outside the pod CIDR and 127.0.0.0/8 fails at once (ENETUNREACH).
No route is ever added to the host's namespace.

The *holder* process (``python -m modelplane_testbed.localcluster.netns``, started under
``unshare -rn``) configures ``lo`` and then serves a relay: it inherits a listening socket the
parent bound on 127.0.0.1:<port> in the *host* namespace (a socket keeps the namespace it was
created in) and forwards each connection to 127.0.0.1:<port> inside the cluster's namespace,
where the apiserver listens. So a kubeconfig naming https://127.0.0.1:<port> works on both
sides, and ``kubectl`` keeps working after ``demo --keep``. Other processes join the namespace
with ``nsenter`` (``enter_prefix``).

The holder also serves a Unix socket (``--connect-socket``; a path crosses network namespaces):
a client writes ``CONNECT <host>:<port>\n`` and, after ``OK\n``, the stream is a connection to
that address *inside* the namespace (a pod address, the operator's metrics port). The tests use
it (``open_connection``, ``http_request``) to talk to what runs inside without joining it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence

POD_CIDR = "10.244.0.0/16"


def create_prefix() -> list[str]:
    """argv prefix that runs a command in a new user + network namespace."""
    return ["unshare", "--user", "--map-root-user", "--net"]


def enter_prefix(holder_pid: int) -> list[str]:
    """argv prefix that runs a command inside the namespace of ``holder_pid``.

    ``--preserve-credentials``: keep our uid (mapped to root inside) rather than calling
    setgroups, which a user namespace made by an unprivileged user denies.
    """
    return [
        "nsenter",
        f"--target={holder_pid}",
        "--user",
        "--net",
        "--preserve-credentials",
    ]


def listen_on_host(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` in the caller's (host) namespace."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    s.set_inheritable(True)
    return s


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy both directions between two connected sockets until either side closes."""
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select():
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                dst: socket.socket = key.data
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
    finally:
        sel.close()
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()


def relay(listener: socket.socket, port: int, stop: threading.Event) -> None:
    """Accept on ``listener`` (host namespace), connect to 127.0.0.1:``port`` (ours)."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        conn.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            continue
        threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()


def _serve_connect(conn: socket.socket) -> None:
    try:
        conn.settimeout(10)
        line = b""
        while not line.endswith(b"\n") and len(line) < 256:
            chunk = conn.recv(1)
            if not chunk:
                conn.close()
                return
            line += chunk
        verb, _, target = line.decode(errors="replace").strip().partition(" ")
        host, _, port = target.rpartition(":")
        if verb != "CONNECT" or not host or not port.isdigit():
            conn.sendall(b"ERR usage: CONNECT <host>:<port>\n")
            conn.close()
            return
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError as e:
            conn.sendall(f"ERR {e}\n".encode())
            conn.close()
            return
        conn.sendall(b"OK\n")
        conn.settimeout(None)
        upstream.settimeout(None)
    except OSError:
        conn.close()
        return
    _pipe(conn, upstream)


def connect_service(path: str, stop: threading.Event) -> None:
    """Serve ``CONNECT host:port`` requests on the Unix socket ``path``."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(64)
    srv.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_serve_connect, args=(conn,), daemon=True).start()
    srv.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def open_connection(
    connect_socket: str, host: str, port: int, timeout: float = 10.0
) -> socket.socket:
    """A stream connected to ``host:port`` inside the cluster's namespace (via its holder)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(connect_socket)
    s.sendall(f"CONNECT {host}:{port}\n".encode())
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        reply += chunk
    if reply != b"OK\n":
        s.close()
        raise ConnectionError(f"{host}:{port} inside the cluster: {reply.decode().strip()}")
    return s


class _InsideConnection(http.client.HTTPConnection):
    def __init__(self, connect_socket: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._connect_socket = connect_socket

    def connect(self) -> None:
        self.sock = open_connection(self._connect_socket, self.host, self.port, self.timeout or 10)


def http_request(
    connect_socket: str,
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request to ``host:port`` inside the cluster's namespace: (status, body)."""
    conn = _InsideConnection(connect_socket, host, port, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def configure_loopback(cidr: str) -> None:
    """Bring ``lo`` up and make every address of ``cidr`` local (needs CAP_NET_ADMIN here)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", cidr, "dev", "lo"], check=True)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m modelplane_testbed.localcluster.netns",
        description="Hold the local cluster's network namespace and relay the host to it.",
    )
    p.add_argument("--cidr", default=POD_CIDR, help="addresses made local on lo (the pod CIDR)")
    p.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="FD:PORT",
        help="inherited host listening socket FD -> 127.0.0.1:PORT in here (repeatable)",
    )
    p.add_argument("--connect-socket", help="Unix socket serving CONNECT host:port into here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    configure_loopback(args.cidr)
    threads = []
    for spec in args.relay:
        fd, _, port = spec.partition(":")
        listener = socket.socket(fileno=int(fd))
        t = threading.Thread(
            target=relay, args=(listener, int(port), stop), name=f"relay-{port}", daemon=True
        )
        t.start()
        threads.append(t)
    if args.connect_socket:
        t = threading.Thread(
            target=connect_service, args=(args.connect_socket, stop), name="connect", daemon=True
        )
        t.start()
        threads.append(t)
    print(f"NETNS_READY pid={os.getpid()}", flush=True)
    while not stop.wait(1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
