"""The gateway's ASGI app: keys, routing, hold at zero, replica choice, passthrough, metering.

Requests: `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` (JSON, `model` names
a route of the key's namespace), `/v1/audio/transcriptions` (multipart, its `model` field),
`GET /v1/models` (the names the key may use). Errors have
OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) and say how to fix them.

A request for a route with no Ready replica is held: at most `max_held` per ModelDeployment, for
at most `hold_seconds`, then `503` with `Retry-After`. While any are held the count is published
on the ModelDeployment (`modelplane.io/pending-requests` and `-at`; at most once per
`publish_min_seconds`, refreshed every `publish_refresh_seconds`, `"0"` once drained), which
the operator's autoscaler reads to scale from zero. Held requests go out as soon as a refresh
finds a Ready replica.

Replica choice: the fewest requests this gateway has outstanding on it (ties: round robin).
A connect error, or `503` before the first byte, is retried on another replica (two per round);
when every replica failed, up to two more rounds on a fresh table without them (held if none is
left), then `503` with `Retry-After`.

Streaming (`stream: true`) is passed through event by event as it arrives. The gateway asks the
engine for `stream_options.include_usage` so it can meter tokens, and drops the final usage
chunk again if the client did not ask for it. Tokens are counted from the engine's `usage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelplane.api.usage import ANNOTATION_USAGE
from modelplane.gateway import keys as keymod
from modelplane.gateway.ledger import Ledger, Total, usage_record
from modelplane.gateway.ratelimit import Limit, LocalLimiter, retry_after
from modelplane.gateway.routing import ENGINE_PORT, Route, Table, build_table

log = logging.getLogger("modelplane.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROXIED = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/audio/transcriptions",
}
MULTIPART = {"/v1/audio/transcriptions"}
STREAMABLE = {"/v1/chat/completions", "/v1/completions"}
MAX_BODY = 16 * 1024 * 1024
#: request ids of batch requests (`batches.py`) start so: billed as batch in the ledger
BATCH_REQUEST_PREFIX = "batch_"
KEY_HELP = (
    "Send an API key of your namespace as `Authorization: Bearer <key>`; create one with "
    "`modelplane keys create -n <namespace>`."
)


@dataclass(frozen=True)
class GatewayConfig:
    hold_seconds: float = 60.0
    max_held: int = 100
    retry_after_seconds: int = 10
    publish_min_seconds: float = 1.0
    publish_refresh_seconds: float = 10.0
    connect_timeout: float = 5.0
    usage_publish_seconds: float = 15.0
    #: a held streaming call gets its response headers at once and an SSE comment this often
    keepalive_seconds: float = 5.0
    #: per tenant namespace, over all its keys (0: no limit)
    namespace_requests_per_minute: int = 0
    namespace_tokens_per_minute: int = 0
    #: the token reservation of a request that does not say max_tokens
    default_max_tokens: int = 256


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.requests = Counter(
            "modelplane_gateway_requests",
            "Requests answered, by tenant namespace, model and HTTP status.",
            ["namespace", "model", "code"],
            registry=r,
        )
        self.tokens = Counter(
            "modelplane_gateway_tokens",
            "Tokens counted from the engines' usage, by namespace, model, key id and kind "
            "(prompt or completion).",
            ["namespace", "model", "key", "kind"],
            registry=r,
        )
        self.auth_failures = Counter(
            "modelplane_gateway_auth_failures",
            "Requests refused 401 (no, malformed, unknown, revoked or expired key).",
            registry=r,
        )
        self.held = Gauge(
            "modelplane_gateway_held_requests",
            "Requests held for want of a Ready replica, by namespace and ModelDeployment.",
            ["namespace", "deployment"],
            registry=r,
        )
        self.hold_seconds = Histogram(
            "modelplane_gateway_hold_seconds",
            "How long requests were held before a replica was Ready (or they timed out).",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.audio_seconds = Counter(
            "modelplane_gateway_audio_seconds",
            "Seconds of audio transcribed (the engines' usage), by namespace, model and key id.",
            ["namespace", "model", "key"],
            registry=r,
        )
        self.disconnects = Counter(
            "modelplane_gateway_client_disconnects",
            "Streams the client left before the end (the engine's request is cancelled).",
            registry=r,
        )
        self.ledger_errors = Counter(
            "modelplane_gateway_ledger_errors",
            "Answered requests the usage ledger could not record (see the log).",
            registry=r,
        )
        self.ledger_duplicates = Counter(
            "modelplane_gateway_ledger_duplicates",
            "Usage records refused because their request id was already in the ledger.",
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "modelplane_gateway_upstream_seconds",
            "Time from sending a request to an engine to the first byte of its answer.",
            registry=r,
        )


class UnavailableError(Exception):
    """Every replica tried failed before the first byte (connect error or 503): worth another
    round on a fresh table."""

    def __init__(self, tried: list[str], last_error: str) -> None:
        super().__init__(last_error)
        self.tried, self.last_error = tried, last_error


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.param, self.retry_after = param, retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0


@dataclass
class State:
    table: Table = field(default_factory=Table)
    keys: dict[str, keymod.KeyRecord] = field(default_factory=dict)
    synced: bool = False
    draining: bool = False
    outstanding: dict[str, int] = field(default_factory=dict)
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    #: per (namespace, ModelDeployment): what was metered (for the status aggregation)
    usage: dict[tuple[str, str], Usage] = field(default_factory=dict)


class Gateway:
    """The ASGI app. `snapshot()` (blocking, run in a thread) returns (ModelDeployments, pods,
    key ConfigMaps); `publish(namespace, name, pending, at)` (blocking) writes the demand.
    `ledger` records every answered request's usage (before its last byte goes out);
    `publish_usage(namespace, name, annotations)` (blocking) writes a ModelDeployment's
    ledger totals (`modelplane.api.usage`)."""

    def __init__(
        self,
        snapshot: Callable[[], tuple[list[Any], list[Any], list[Any]]],
        publish: Callable[[str, str, int, float], None],
        cfg: GatewayConfig | None = None,
        metrics: Metrics | None = None,
        refresh_seconds: float = 1.0,
        engine_port: int = ENGINE_PORT,
        ledger: Ledger | None = None,
        publish_usage: Callable[[str, str, dict[str, str]], None] | None = None,
    ) -> None:
        self.engine_port = engine_port
        self.ledger, self.publish_usage = ledger, publish_usage
        self._usage_published: dict[tuple[str, str], str] = {}
        self.limiter = LocalLimiter()
        #: request id -> token buckets (key, per minute) and the reservation taken from each
        self._reserved: dict[str, tuple[list[tuple[str, float]], float]] = {}
        self.snapshot, self.publish = snapshot, publish
        self.cfg = cfg or GatewayConfig()
        self.metrics = metrics or Metrics()
        self.refresh_seconds = refresh_seconds
        self.state = State()
        self._changed = asyncio.Event()
        self._rr = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._published: dict[tuple[str, str], tuple[int, float]] = {}
        #: more APIs under path prefixes (the Batch API): `prefixes`, `handle`, `start`, `stop`
        self.extensions: list[Any] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.connect_timeout),
            auto_decompress=False,
        )
        self._tasks = [
            asyncio.create_task(self._refresh_loop()),
            asyncio.create_task(self._demand_loop()),
        ]
        if self.ledger is not None and self.publish_usage is not None:
            self._tasks.append(asyncio.create_task(self._usage_loop()))
        for ext in self.extensions:
            await ext.start()

    async def stop(self) -> None:
        for ext in self.extensions:
            await ext.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._publish_round(final=True)
        if self._session is not None:
            await self._session.close()

    async def refresh(self) -> None:
        mds, pods, cms = await asyncio.to_thread(self.snapshot)
        self.state.table = build_table(mds, pods, self.engine_port)
        self.state.keys = keymod.records(cms)
        self.state.synced = True
        self._changed.set()
        self._changed = asyncio.Event()

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # keep serving from the last table
                log.warning("refresh failed: %s", e)
            await asyncio.sleep(self.refresh_seconds)

    async def _demand_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.cfg.publish_min_seconds, 1.0))
            await self._publish_round()

    async def _usage_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.usage_publish_seconds)
            try:
                await self.publish_usage_round()
            except Exception as e:
                log.warning("cannot publish usage: %s", e)

    async def publish_usage_round(self) -> int:
        """Write the ledger's totals of each used ModelDeployment that changed since the last
        round; returns how many were written."""
        if self.ledger is None or self.publish_usage is None:
            return 0
        totals = await asyncio.to_thread(self.ledger.totals)
        live = {(r.namespace, r.deployment) for r in self.state.table.routes.values()}
        written = 0
        for key, value in usage_annotations(totals).items():
            if key not in live or self._usage_published.get(key) == value:
                continue
            try:
                await asyncio.to_thread(
                    self.publish_usage, key[0], key[1], {ANNOTATION_USAGE: value}
                )
            except Exception as e:
                log.warning("cannot publish usage on %s/%s: %s", key[0], key[1], e)
                continue
            self._usage_published[key] = value
            written += 1
        return written

    async def _publish_round(self, final: bool = False) -> None:
        now = time.time()
        want = dict(self.state.held)
        for key in set(self._published) | set(want):
            count = 0 if final else want.get(key, 0)
            last = self._published.get(key)
            if last is not None:
                value, at = last
                age = now - at
                if not final and age < self.cfg.publish_min_seconds:
                    continue
                if count == value and (count == 0 or age < self.cfg.publish_refresh_seconds):
                    continue
            elif count == 0:
                continue
            try:
                await asyncio.to_thread(self.publish, key[0], key[1], count, now)
            except Exception as e:
                log.warning("cannot publish demand on %s/%s: %s", key[0], key[1], e)
                continue
            log.info("published %d held request(s) on %s/%s", count, key[0], key[1])
            if count == 0:
                self._published.pop(key, None)
            else:
                self._published[key] = (count, now)

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path in ("/healthz", "/livez"):
                await _json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                ok = self.state.synced and not self.state.draining
                await _json(send, 200 if ok else 503, {"ready": ok})
            elif path == "/v1/models" and method == "GET":
                rec = self._auth(scope)
                await _json(send, 200, self._models(rec))
            elif path in PROXIED:
                if method != "POST":
                    raise HttpError(405, f"Use POST for {path}.", code="method_not_allowed")
                await self._proxy(scope, receive, send, path)
            elif ext := next((x for x in self.extensions if path.startswith(x.prefixes)), None):
                await ext.handle(scope, receive, send)
            else:
                raise HttpError(404, f"Unknown path {path}.", code="not_found")
        except HttpError as e:
            headers = [(b"retry-after", str(e.retry_after).encode())] if e.retry_after else []
            await _json(send, e.status, e.body(), headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ requests
    def _auth(self, scope: Scope) -> keymod.KeyRecord:
        try:
            return self._check_key(scope)
        except HttpError:
            self.metrics.auth_failures.inc()
            raise

    def _check_key(self, scope: Scope) -> keymod.KeyRecord:
        raw = ""
        for k, v in scope["headers"]:
            if k == b"authorization":
                raw = v.decode("latin-1")
                break
        scheme, _, key = raw.partition(" ")
        if not raw:
            raise HttpError(401, f"No API key provided. {KEY_HELP}", code="invalid_api_key")
        if scheme.lower() != "bearer" or not key.strip():
            raise HttpError(
                401, f"Malformed Authorization header. {KEY_HELP}", code="invalid_api_key"
            )
        rec = keymod.verify(key.strip(), self.state.keys, time.time())
        if rec is None:
            kid = keymod.key_id(key.strip())
            what = f"key id {kid}" if kid else "a key not in modelplane's format (mpk_...)"
            raise HttpError(
                401,
                f"Incorrect, revoked or expired API key ({what}). {KEY_HELP}",
                code="invalid_api_key",
            )
        return rec

    def _models(self, rec: keymod.KeyRecord) -> dict[str, Any]:
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": rec.namespace}
            for n in self.state.table.names(rec.namespace)
        ]
        return {"object": "list", "data": data}

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """The request path in order: key, body (JSON or multipart), model lookup with its 404 hint,
        rate-limit admission, hold at zero, forwarding. Long because each step answers the client
        with its own OpenAI-shaped error.
        """
        rec = self._auth(scope)
        raw = await _read_body(receive)
        ctype = _header(scope, b"content-type") or "application/json"
        if path in MULTIPART:
            body = _multipart_fields(ctype, raw)
        else:
            ctype = "application/json"
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise HttpError(400, f"The request body is not valid JSON: {e}.") from None
            if not isinstance(body, dict):
                raise HttpError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise HttpError(400, "`model` is required: the name of a model.", param="model")
        route = self.state.table.lookup(rec.namespace, model)
        if route is None:
            raise HttpError(404, self._not_found(rec.namespace, model), code="model_not_found",
                            param="model")  # fmt: skip
        stream = path in STREAMABLE and body.get("stream") is True
        wants_usage = False
        if stream:
            opts = body.get("stream_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            wants_usage = opts.get("include_usage") is True
            opts["include_usage"] = True
            body["stream_options"] = opts
            raw = json.dumps(body).encode()
        code = 500
        rid = uuid.uuid4().hex
        self._admit(rec, rid, body, len(raw), path in MULTIPART)
        failed: set[str] = set()
        held = _HeldStream(send, rid, self.cfg.keepalive_seconds) if stream else None
        try:
            for attempt in range(3):
                if (
                    held is not None
                    and not held.begun
                    and not self.state.table.ready(route)
                    and self.state.held.get((route.namespace, route.demand_on), 0)
                    < self.cfg.max_held
                ):
                    await held.begin()  # the client sees headers and keep-alives while held
                endpoints = await self._wait_ready(route, failed)
                try:
                    code = await self._forward(
                        route, rec, endpoints, path, raw, ctype, stream, wants_usage, receive, send,
                        rid, held,
                    )  # fmt: skip
                    break
                except UnavailableError as e:
                    failed.update(e.tried)
                    if attempt == 2:
                        raise HttpError(
                            503,
                            f"No replica of `{route.name}` could take the request "
                            f"({e.last_error}); retry.",
                            type_="server_error", code="upstream_unavailable",
                            retry_after=1,
                        ) from None  # fmt: skip
                    await self._next_refresh()
        except HttpError as e:
            code = e.status
            if held is not None and held.begun:  # headers are out: the error is an event
                await held.fail(e.body())
                return
            raise
        finally:
            if held is not None:
                await held.stop()
            left = self._reserved.pop(rid, None)
            if left is not None:  # never metered (an error, a client gone): give it back
                for key, per_minute in left[0]:
                    self.limiter.settle(key, per_minute, -left[1])
            self.metrics.requests.labels(rec.namespace, model, str(code)).inc()

    def _admit(
        self, rec: keymod.KeyRecord, rid: str, body: dict[str, Any], size: int, audio: bool
    ) -> None:
        """Take the request's share of its key's and namespace's limits, or raise 429."""
        cfg = self.cfg
        rpm = [(f"key:{rec.id}:rpm", rec.requests_per_minute),
               (f"ns:{rec.namespace}:rpm", cfg.namespace_requests_per_minute or None)]  # fmt: skip
        tpm = [(f"key:{rec.id}:tpm", rec.tokens_per_minute),
               (f"ns:{rec.namespace}:tpm", cfg.namespace_tokens_per_minute or None)]  # fmt: skip
        tokens = 0.0
        if not audio:
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
            out = limit if isinstance(limit, int) and limit > 0 else cfg.default_max_tokens
            tokens = float(size // 4 + out)
        limits = [Limit(k, float(v), 1.0) for k, v in rpm if v]
        limits += [Limit(k, float(v), tokens) for k, v in tpm if v]
        if not limits:
            return
        wait = self.limiter.acquire(limits)
        if wait > 0:
            what = [f"{'key ' + rec.id if k.startswith('key') else 'namespace ' + rec.namespace}"
                    f" {int(v)} {'requests' if k.endswith('rpm') else 'tokens'}/min"
                    for k, v in rpm + tpm if v]  # fmt: skip
            raise HttpError(
                429,
                f"Rate limit reached ({'; '.join(what)}); retry after {retry_after(wait)}s "
                "or ask for higher limits.",
                type_="rate_limit_error", code="rate_limit_exceeded",
                retry_after=retry_after(wait),
            )  # fmt: skip
        buckets = [(lim.key, lim.per_minute) for lim in limits if lim.key.endswith("tpm")]
        if buckets:
            self._reserved[rid] = (buckets, tokens)

    def _not_found(self, namespace: str, model: str) -> str:
        names = self.state.table.names(namespace)
        close = self.state.table.closest(namespace, model)
        msg = f"The model `{model}` does not exist in namespace {namespace} (your key's)."
        if close:
            msg += f" Did you mean {', '.join(close)}?"
        if names:
            msg += f" Models you can use: {', '.join(names[:20])} (GET /v1/models lists them)."
        else:
            msg += " No ModelDeployment serves a model there yet."
        return msg

    async def _next_refresh(self) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=self.refresh_seconds * 3)

    async def _wait_ready(self, route: Route, avoid: set[str] | None = None) -> list[str]:
        """Ready endpoints of `route`, those not in `avoid` (replicas that just failed) if there
        are any; holds the request while there are none."""

        def ready() -> list[str]:
            eps = self.state.table.ready(route)
            return [e for e in eps if e not in avoid] or eps if avoid else eps

        eps = ready()
        if eps:
            return eps
        key = (route.namespace, route.demand_on)
        held = self.state.held
        if held.get(key, 0) >= self.cfg.max_held:
            raise HttpError(
                503,
                f"`{route.name}` has no ready replica and already {self.cfg.max_held} requests "
                "wait for one; retry later.",
                type_="server_error", code="hold_queue_full",
                retry_after=self.cfg.retry_after_seconds,
            )  # fmt: skip
        held[key] = held.get(key, 0) + 1
        self.metrics.held.labels(*key).set(held[key])
        start = time.monotonic()
        deadline = start + self.cfg.hold_seconds
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HttpError(
                        503,
                        f"`{route.name}` had no ready replica within {self.cfg.hold_seconds:.0f}s "
                        f"(ModelDeployment {route.namespace}/{route.demand_on} is scaling up or "
                        "cannot start; see its status). Retry later.",
                        type_="server_error", code="model_not_ready",
                        retry_after=self.cfg.retry_after_seconds,
                    )  # fmt: skip
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), timeout=left)
                except TimeoutError:
                    continue
                route = self.state.table.lookup(route.namespace, route.name) or route
                eps = ready()
                if eps:
                    return eps
        finally:
            held[key] -= 1
            self.metrics.held.labels(*key).set(held[key])
            if held[key] == 0:
                del held[key]
            self.metrics.hold_seconds.observe(time.monotonic() - start)

    def _order(self, endpoints: list[str]) -> list[str]:
        """Least outstanding first; ties broken round robin."""
        n = len(endpoints)
        shift = next(self._rr) % n
        rotated = endpoints[shift:] + endpoints[:shift]
        return sorted(rotated, key=lambda e: self.state.outstanding.get(e, 0))

    async def _forward(
        self,
        route: Route,
        rec: keymod.KeyRecord,
        endpoints: list[str],
        path: str,
        raw: bytes,
        ctype: str,
        stream: bool,
        wants_usage: bool,
        receive: Receive,
        send: Send,
        rid: str = "",
        held: _HeldStream | None = None,
    ) -> int:
        """Long because the retry on another replica, the upstream call, the streaming and
        the non-streaming relays and the metering share one outstanding-request count that must
        be released on every exit path.
        """
        assert self._session is not None
        begun = held is not None and held.begun
        tries = self._order(endpoints)[:2]
        last_error = ""
        started = False
        for ep in tries:
            out = self.state.outstanding
            out[ep] = out.get(ep, 0) + 1
            try:
                t0 = time.monotonic()
                async with self._session.post(
                    f"http://{ep}{path}",
                    data=raw,
                    headers={"Content-Type": ctype, "X-Request-Id": rid},
                ) as resp:
                    self.metrics.upstream_seconds.observe(time.monotonic() - t0)
                    if resp.status == 503:  # not taking requests (draining, gone): next one
                        last_error = f"{ep} answered 503: {(await resp.read())[:200]!r}"
                        continue
                    if stream and resp.status == 200:
                        started = True
                        if held is not None:
                            await held.stop()
                        await self._stream(route, rec, resp, wants_usage, receive, send, rid, begun)
                    elif begun and held is not None:  # an engine error after held headers
                        started = True
                        data = await resp.read()
                        try:
                            err = json.loads(data)
                        except ValueError:
                            err = {"error": {"message": data.decode(errors="replace")[:500]}}
                        await held.fail(err)
                    else:
                        data = await resp.read()
                        if resp.status == 200:
                            await self._meter(route, rec, _usage_of(data), rid)
                        rtype = resp.headers.get("Content-Type", "application/json").encode()
                        started = True
                        await send(
                            {
                                "type": "http.response.start",
                                "status": resp.status,
                                "headers": [
                                    (b"content-type", rtype),
                                    (b"x-request-id", rid.encode()),
                                ],
                            }
                        )
                        await send({"type": "http.response.body", "body": data})
                    return resp.status
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                if started:  # the answer had begun: it ends here, nothing can be retried
                    log.info("upstream %s broke off mid-answer: %s", ep, e)
                    with contextlib.suppress(Exception):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return 502
                last_error = f"{ep}: {e or type(e).__name__}"
                continue
            finally:
                out[ep] -= 1
                if out[ep] <= 0:
                    del out[ep]
        raise UnavailableError(tries, last_error)

    async def _stream(
        self,
        route: Route,
        rec: keymod.KeyRecord,
        resp: aiohttp.ClientResponse,
        wants_usage: bool,
        receive: Receive,
        send: Send,
        rid: str = "",
        begun: bool = False,
    ) -> None:
        """Pass the engine's events on as they arrive; a client that leaves ends the upstream
        request too (the connection is closed, so the engine aborts it). `begun`: the headers
        went out already (the call was held)."""
        if not begun:
            await send(_sse_start(rid))
        buf = b""
        usage: list[dict[str, Any]] = []  # the usage chunk, once seen
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            async for chunk in resp.content.iter_any():
                if gone.done():
                    self.metrics.disconnects.inc()
                    resp.close()
                    await self._meter(route, rec, None, rid)
                    return
                buf = await _relay(buf + chunk, wants_usage, send, usage)
        finally:
            gone.cancel()
        # metered (durably, in the ledger) before the client sees the end of the answer
        await self._meter(route, rec, usage[-1] if usage else None, rid)
        await send({"type": "http.response.body", "body": buf, "more_body": False})

    async def _meter(
        self, route: Route, rec: keymod.KeyRecord, usage: dict[str, Any] | None, rid: str = ""
    ) -> None:
        u = self.state.usage.setdefault((route.namespace, route.deployment), Usage())
        u.requests += 1
        if not usage:
            return
        reserved = self._reserved.pop(rid, None)
        if reserved is not None:  # settle the reservation with the real count
            used = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
            for key, per_minute in reserved[0]:
                self.limiter.settle(key, per_minute, used - reserved[1])
        seconds, prompt, completion = 0.0, 0, 0
        if usage.get("type") == "duration":  # transcription: seconds of audio
            seconds = float(usage.get("seconds") or 0)
            self.metrics.audio_seconds.labels(route.namespace, route.name, rec.id).inc(seconds)
            u.audio_seconds += seconds
        else:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            u.prompt_tokens += prompt
            u.completion_tokens += completion
            m = self.metrics.tokens
            m.labels(route.namespace, route.name, rec.id, "prompt").inc(prompt)
            m.labels(route.namespace, route.name, rec.id, "completion").inc(completion)
        if self.ledger is None or not rid:
            return
        row = usage_record(
            rid, route.namespace, route.model or route.name, rec.id, prompt, completion, seconds,
            batch=rid.startswith(BATCH_REQUEST_PREFIX), deployment=route.deployment,
        )  # fmt: skip
        try:
            if not await asyncio.to_thread(self.ledger.record, row):
                self.metrics.ledger_duplicates.inc()
        except Exception as e:
            self.metrics.ledger_errors.inc()
            log.error("usage ledger: cannot record request %s (%s): %s", rid, route.name, e)


def usage_annotations(totals: list[Total]) -> dict[tuple[str, str], str]:
    """(namespace, ModelDeployment) -> the `modelplane.io/usage` value of its ledger totals
    (summed over models; `at` is its latest recorded request, so an idle deployment's value
    does not change)."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for t in totals:
        if not t.deployment:
            continue
        a = acc.setdefault(
            (t.namespace, t.deployment),
            {"requests": 0, "promptTokens": 0, "generatedTokens": 0, "audioSeconds": 0.0,
             "costUSD": 0.0, "first": t.first_at, "last": t.last_at},
        )  # fmt: skip
        a["requests"] += t.requests
        a["promptTokens"] += t.prompt_tokens
        a["generatedTokens"] += t.completion_tokens
        a["audioSeconds"] += t.audio_seconds
        a["costUSD"] += t.cost_usd
        for k, v, pick in (("first", t.first_at, min), ("last", t.last_at, max)):
            if v is not None:
                a[k] = v if a[k] is None else pick(a[k], v)
    out = {}
    for key, a in acc.items():
        first, last = a.pop("first"), a.pop("last")
        a["audioSeconds"] = round(a["audioSeconds"], 3)
        a["costUSD"] = round(a["costUSD"], 6)
        if first is not None:
            a["since"] = _rfc3339(first)
        if last is not None:
            a["at"] = _rfc3339(last)
        out[key] = json.dumps(a, sort_keys=True, separators=(",", ":"))
    return out


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _sse_start(rid: str) -> Message:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-request-id", rid.encode()),
        ],
    }


class _HeldStream:
    """A streaming call held for want of a replica: its `200` headers go out at once and an SSE
    comment (`: keep-alive`) every `every` seconds, so clients and proxies with idle timeouts
    keep the connection; an error after that is sent as an OpenAI-shaped error event."""

    def __init__(self, send: Send, rid: str, every: float) -> None:
        self.send, self.rid, self.every = send, rid, every
        self.begun = False
        self._task: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        await self.send(_sse_start(self.rid))
        self.begun = True
        self._task = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await self.send({"type": "http.response.body", "body": b": keep-alive\n\n",
                             "more_body": True})  # fmt: skip
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def fail(self, body: dict[str, Any]) -> None:
        await self.stop()
        event = b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"
        with contextlib.suppress(Exception):
            await self.send({"type": "http.response.body", "body": event, "more_body": False})


async def _relay(buf: bytes, wants_usage: bool, send: Send, usage: list[dict[str, Any]]) -> bytes:
    """Send the complete SSE events in `buf` (appending any usage to `usage`); return the
    incomplete rest."""
    out = []
    while b"\n\n" in buf:
        event, buf = buf.split(b"\n\n", 1)
        keep, found = _usage_event(event, wants_usage)
        if found is not None:
            usage.append(found)
        if keep:
            out.append(event + b"\n\n")
    if out:
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
    return buf


def _usage_of(data: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    u = obj.get("usage") if isinstance(obj, dict) else None
    return u if isinstance(u, dict) else None


def _usage_event(event: bytes, wants_usage: bool) -> tuple[bool, dict[str, Any] | None]:
    """(forward this SSE event?, the usage it carries)."""
    if b'"usage"' not in event:
        return True, None
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return True, None
        try:
            obj = json.loads(payload)
        except ValueError:
            return True, None
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if not isinstance(usage, dict):
            return True, None
        only_usage = not obj.get("choices")
        return (wants_usage or not only_usage), usage
    return True, None


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def _multipart_fields(ctype: str, raw: bytes) -> dict[str, Any]:
    """The small text fields of a multipart/form-data body (`model`, ...); files are skipped."""
    kind, _, params = ctype.partition(";")
    boundary = ""
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if kind.strip().lower() != "multipart/form-data" or not boundary:
        raise HttpError(
            400, "Send the audio as multipart/form-data with a `file` and a `model` field."
        )
    out: dict[str, Any] = {}
    for part in raw.split(b"--" + boundary.encode())[1:]:
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = head.decode("latin-1")
        if "filename=" in disposition or 'name="' not in disposition:
            continue
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        if len(value) <= 4096:
            out[name] = value.removesuffix(b"\r\n").decode(errors="replace")
    return out


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(
    receive: Receive, limit: int = MAX_BODY, too_large: str | None = None
) -> bytes:
    """The whole request body; 413 with `too_large` (or the default message) past `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise HttpError(400, "The client disconnected before sending the whole body.")
        part = msg.get("body", b"")
        size += len(part)
        if size > limit:
            raise HttpError(
                413, too_large or f"The request body exceeds {limit // (1024 * 1024)} MiB."
            )
        chunks.append(part)
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _json(
    send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": data})
