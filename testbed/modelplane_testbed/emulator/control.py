"""The emulator's control API: HTTP over a Unix socket, and a tiny client for it.

Routes (JSON in and out; errors ``{"error": message, "code": status}``):

- ``GET /healthz``;
- ``GET /pods`` (every model-server pod: engine, served names, weights, cache hit, start-up
  breakdown, ready time...), ``GET /pods/<ns>/<name>``; ``GET /cache-jobs``;
- ``GET /load``; ``GET|PUT|POST|DELETE /load/<ns>/<name>`` with
  ``{"requestsPerSecond", "promptTokens", "outputTokens"}`` (Poisson arrivals; omitted fields
  keep their value; DELETE stops the load); ``POST /load/<ns>/<name>/requests``
  ``{"count", "promptTokens", "outputTokens"}``: that many requests at once;
- ``PUT /schedule``: the ``--rate-file`` format;
- ``GET /demand``: the pending-requests annotations published per ModelDeployment;
- ``POST /gateway/<ns>/<name>/<engine path>`` (e.g. ``/gateway/ns/chat/v1/chat/completions``):
  a stand-in gateway for one client request: it waits (counted as pending demand) until a
  Ready pod of the deployment serves, then forwards the body to ``podIP:port`` and relays the
  answer. ``?timeout=S`` (default 300) bounds the wait: 504 after it.

``ControlClient(path).get/put/post/delete(path, body)`` returns the decoded JSON (or text) and
raises ``ControlError`` for an error status.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from modelplane_testbed.emulator.core import ControlError, Emulator

__all__ = ["ControlClient", "ControlServer", "serve_control"]

log = logging.getLogger("modelplane.emulator.control")


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ControlServer:
    """The control API on ``socket_path``, served by daemon threads until ``close()``."""

    def __init__(
        self,
        emulator: Emulator,
        socket_path: Path,
        demand: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.emulator = emulator
        self.socket_path = Path(socket_path)
        self.demand = demand
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._server = _UnixHTTPServer(str(self.socket_path), _make_handler(self))
        os.chmod(self.socket_path, 0o600)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="emulator-control",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


def serve_control(emulator: Emulator, socket_path: Path) -> ControlServer:
    return ControlServer(emulator, socket_path)


def _make_handler(ctl: ControlServer) -> type[BaseHTTPRequestHandler]:
    emu = ctl.emulator

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def address_string(self) -> str:  # AF_UNIX peers have no (host, port)
            return "unix"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control: " + format, *args)

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _raw(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json(self) -> Any:
            raw = self._raw()
            if not raw:
                return {}
            try:
                return json.loads(raw)
            except ValueError as e:
                raise ControlError(400, f"body is not JSON: {e}") from e

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
            try:
                self._dispatch(method, parts, parse_qs(url.query))
            except ControlError as e:
                self._send(e.status, e.body())
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:  # report, keep serving
                log.exception("control: error serving %s %s", method, self.path)
                self._send(500, ControlError(500, str(e)).body())

        def _dispatch(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
            match method, parts:
                case "GET", ["healthz"]:
                    self._send(200, {"ok": True})
                case "GET", ["pods"]:
                    self._send(200, emu.pods())
                case "GET", ["pods", ns, name]:
                    self._send(200, emu.pod(ns, name))
                case "GET", ["cache-jobs"]:
                    self._send(200, emu.cache_jobs())
                case "GET", ["load"]:
                    self._send(200, emu.loads())
                case "GET", ["load", ns, name]:
                    self._send(200, emu.load_status(ns, name))
                case "PUT" | "POST", ["load", ns, name]:
                    emu.set_load(ns, name, self._json())
                    self._send(200, emu.load_status(ns, name))
                case "DELETE", ["load", ns, name]:
                    emu.stop_load(ns, name)
                    self._send(200, emu.load_status(ns, name))
                case "POST", ["load", ns, name, "requests"]:
                    body = self._json()
                    count = body.get("count", 1)
                    prompt = body.get("promptTokens", 220)
                    output = body.get("outputTokens", 200)
                    for v in (count, prompt, output):
                        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                            raise ControlError(400, "count, promptTokens, outputTokens: int >= 1")
                    emu.submit(ns, name, prompt, output, count)
                    self._send(200, emu.load_status(ns, name))
                case "PUT", ["schedule"]:
                    body = self._json()
                    if not isinstance(body, Mapping):
                        raise ControlError(400, "the schedule must be a JSON object")
                    emu.set_schedule(body)
                    self._send(200, emu.loads())
                case "GET", ["demand"]:
                    self._send(200, dict(ctl.demand()) if ctl.demand else {})
                case "POST", ["gateway", ns, name, *rest] if rest:
                    timeout = float((query.get("timeout") or ["300"])[0])
                    self._gateway(ns, name, "/" + "/".join(rest), timeout)
                case _:
                    raise ControlError(404, f"no route {method} {self.path}")

        def _gateway(self, ns: str, name: str, path: str, timeout: float) -> None:
            body = self._raw()
            deadline = time.monotonic() + timeout
            emu.gateway_hold(ns, name, +1)
            try:
                while True:
                    addr = emu.gateway_pick(ns, name)
                    if addr is not None:
                        break
                    if time.monotonic() >= deadline:
                        raise ControlError(504, f"no Ready pod of {ns}/{name} within {timeout}s")
                    time.sleep(0.05)
            finally:
                emu.gateway_hold(ns, name, -1)
            req = urllib.request.Request(
                f"http://{addr[0]}:{addr[1]}{path}", data=body, method="POST"
            )
            req.add_header("Content-Type", self.headers.get("Content-Type") or "application/json")
            if self.headers.get("Authorization"):
                req.add_header("Authorization", self.headers["Authorization"])
            try:
                with urllib.request.urlopen(
                    req, timeout=max(1.0, deadline - time.monotonic())
                ) as r:
                    status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
            except urllib.error.HTTPError as e:
                status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
            except OSError as e:
                raise ControlError(502, f"pod {addr[0]}:{addr[1]} failed: {e}") from None
            self._send(status, data, ctype or "application/json")

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


# --------------------------------------------------------------------------- client
class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


class ControlClient:
    """HTTP over the emulator's control socket: ``get/put/post/delete(path, body)``."""

    def __init__(self, socket_path: str | Path, timeout: float = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        text = raw.decode("utf-8", errors="replace")
        try:
            out: Any = json.loads(text) if text else None
        except ValueError:
            out = text
        if resp.status >= 400:
            message = out.get("error") if isinstance(out, dict) else out
            raise ControlError(resp.status, str(message), out)
        return out

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body if body is not None else {})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)
