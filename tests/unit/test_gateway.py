"""The gateway without a cluster: routing table, keys, and the ASGI app against a stand-in
engine on loopback (auth, routing, streaming with usage, hold at zero and its demand)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from modelplane.api.demand import gateway_demand
from modelplane.gateway import keys
from modelplane.gateway.app import Gateway, GatewayConfig
from modelplane.gateway.kube import rfc3339
from modelplane.gateway.routing import PodGroup, build_table


def md(ns: str, name: str, tier: str = "OnDemand", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"tier": tier, **spec},
        "status": status,
    }


def pod(ns: str, ip: str, ready: bool = True, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": f"p-{ip}", "labels": labels},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


DEP = "modelplane.io/deployment"
MDS = [
    md("a", "chat", model={"catalog": "x", "servedName": "llama", "aliases": ["old-llama"]}),
    md("a", "tuned", "FineTuned", base={"deployment": "chat"}, adapters=[{"name": "sql"}]),
    md("a", "sls", "Serverless", model={"catalog": "y"}, status={"backend": "mp/sls-y-1"}),
    md("b", "other"),
]
PODS = [
    pod("a", "10.0.0.1", **{DEP: "chat"}),
    pod("a", "10.0.0.2", ready=False, **{DEP: "chat"}),
    pod("mp", "10.0.0.3", **{"modelplane.io/backend": "sls-y-1"}),
]


def test_routing_table() -> None:
    t = build_table(MDS, PODS)
    assert t.names("a") == ["llama", "old-llama", "sls", "tuned--sql"]
    assert t.names("b") == ["other"]
    assert t.lookup("b", "llama") is None  # names belong to their namespace
    chat = t.lookup("a", "old-llama")
    assert chat is not None and chat.deployment == "chat"
    assert t.ready(chat) == ["10.0.0.1:8000"]  # the unready pod is not an endpoint
    tuned = t.lookup("a", "tuned--sql")
    assert tuned is not None and tuned.pods == PodGroup("a", DEP, "chat")
    assert tuned.demand_on == "chat"  # demand goes to the deployment whose replicas are missing
    sls = t.lookup("a", "sls")
    assert sls is not None and t.ready(sls) == ["10.0.0.3:8000"] and sls.demand_on == "sls"
    assert t.ready(t.routes[("b", "other")]) == []
    assert t.closest("a", "lama")[0] == "llama"


def test_keys_hash_only_verify_expire() -> None:
    kid, key = keys.new_key()
    obj = keys.api_key("a", key, kid)
    assert key not in json.dumps(obj)  # only a salted hash is stored
    table = keys.records([obj])
    now = time.time()
    rec = keys.verify(key, table, now)
    assert rec is not None and rec.namespace == "a" and rec.id == kid
    assert keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B"), table, now) is None
    assert keys.verify("sk-nonsense", table, now) is None
    expired = keys.records([keys.api_key("a", key, kid, rfc3339(now - 1))])
    assert keys.verify(key, expired, now) is None
    # the same id twice is refused in both
    assert keys.records([obj, keys.api_key("b", key, kid)]) == {}


# --------------------------------------------------------------------------- the app
def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def _engine(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    if not body.get("stream"):
        return web.json_response(
            {"object": "chat.completion", "model": body["model"], "choices": [{}], "usage": usage}
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for word in ("a", "b", "c"):
        chunk = {"choices": [{"delta": {"content": word}}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def _transcribe(request: web.Request) -> web.Response:
    form = await request.post()
    assert form["model"] == "llama" and form["file"]
    return web.json_response({"text": "hello", "usage": {"type": "duration", "seconds": 4}})


async def _slow(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for _ in range(40):
        await resp.write(b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n')
        await asyncio.sleep(0.1)
    return resp


@asynccontextmanager
async def engine() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _engine)
    app.router.add_post("/v1/completions", _slow)
    app.router.add_post("/v1/audio/transcriptions", _transcribe)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def call(
    gw: Gateway,
    path: str,
    body: Any = None,
    key: str | None = None,
    method: str = "POST",
    raw: bytes | None = None,
    ctype: str = "application/json",
    leave_after: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    headers.append((b"content-type", ctype.encode()))
    if raw is None:
        raw = json.dumps(body).encode() if body is not None else b""
    scope = {"type": "http", "path": path, "method": method, "headers": headers}
    sent = False
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600 if leave_after is None else leave_after)
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in msg["headers"]}
        else:
            out["body"] += msg.get("body", b"")

    await gw(scope, receive, send)
    return out["status"], out["headers"], out["body"]


async def until(cond: Any, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)


def test_gateway_routes_meters_holds() -> None:
    async def main() -> None:
        async with engine() as port:
            kid_a, key_a = keys.new_key()
            kid_b, key_b = keys.new_key()
            api_keys = [keys.api_key("a", key_a, kid_a), keys.api_key("b", key_b, kid_b)]
            world: dict[str, Any] = {"pods": [pod("a", "127.0.0.1", **{DEP: "chat"})]}
            published: list[tuple[str, str, int, float]] = []
            gw = Gateway(
                lambda: (MDS, world["pods"], api_keys),
                lambda *a: published.append(a),
                GatewayConfig(hold_seconds=3, publish_min_seconds=0.1),
                refresh_seconds=0.05,
                engine_port=port,
            )
            await gw.start()
            try:
                await gw.refresh()
                chat = {"model": "llama", "messages": [{"role": "user", "content": "hi"}]}

                status, _, body = await call(gw, "/v1/chat/completions", chat, key_a)
                assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 3

                # streaming: usage is metered; the usage chunk reaches only who asked for it
                status, headers, body = await call(
                    gw, "/v1/chat/completions", {**chat, "stream": True}, key_a
                )
                assert status == 200 and headers["content-type"].startswith("text/event-stream")
                assert b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")
                asked = {**chat, "stream": True, "stream_options": {"include_usage": True}}
                status, _, body = await call(gw, "/v1/chat/completions", asked, key_a)
                assert status == 200 and b'"usage"' in body
                u = gw.state.usage[("a", "chat")]
                assert (u.requests, u.prompt_tokens, u.completion_tokens) == (3, 21, 9)

                # transcription: multipart, `model` from its field, audio seconds metered
                form = (
                    b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nllama\r\n'
                    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                    b"Content-Type: audio/wav\r\n\r\n" + b"\x00\x01" * 100 + b"\r\n--XyZ--\r\n"
                )
                status, _, body = await call(
                    gw, "/v1/audio/transcriptions", key=key_a, raw=form,
                    ctype="multipart/form-data; boundary=XyZ",
                )  # fmt: skip
                assert status == 200 and json.loads(body)["text"] == "hello", body
                assert gw.state.usage[("a", "chat")].audio_seconds == 4

                # a client that leaves mid-stream ends the engine's request too
                t0 = time.monotonic()
                status, _, body = await call(
                    gw, "/v1/completions", {"model": "llama", "prompt": "x", "stream": True},
                    key_a, leave_after=0.3,
                )  # fmt: skip
                assert status == 200 and time.monotonic() - t0 < 2
                assert (
                    gw.metrics.registry.get_sample_value(
                        "modelplane_gateway_client_disconnects_total"
                    )
                    == 1
                )
                assert gw.state.outstanding == {}

                # keys: none, wrong, another namespace's model
                status, _, body = await call(gw, "/v1/chat/completions", chat)
                assert status == 401 and "modelplane keys create" in body.decode()
                status, _, body = await call(gw, "/v1/chat/completions", chat, key_a + "x")
                err = json.loads(body)["error"]
                assert status == 401 and err["code"] == "invalid_api_key"
                assert key_a not in body.decode()
                status, _, body = await call(gw, "/v1/chat/completions", chat, key_b)
                err = json.loads(body)["error"]
                assert status == 404 and err["code"] == "model_not_found", err
                status, _, body = await call(gw, "/v1/models", key=key_b, method="GET")
                assert [m["id"] for m in json.loads(body)["data"]] == ["other"]
                status, _, body = await call(gw, "/v1/chat/completions", {"x": 1}, key_a)
                assert status == 400 and json.loads(body)["error"]["param"] == "model"

                # hold at zero: held, demand published, served once a replica is Ready
                world["pods"] = []
                await gw.refresh()
                held = [
                    asyncio.create_task(call(gw, "/v1/chat/completions", chat, key_a))
                    for _ in range(3)
                ]
                await until(lambda: any(p[2] == 3 for p in published))
                ns, name, count, at = published[-1]
                assert (ns, name, count) == ("a", "chat", 3)
                annotations = {
                    "modelplane.io/pending-requests": str(count),
                    "modelplane.io/pending-requests-at": rfc3339(at),
                }
                assert gateway_demand(annotations, time.time(), 30).pending == 3
                world["pods"] = [pod("a", "127.0.0.1", **{DEP: "chat"})]
                results = await asyncio.gather(*held)
                assert [r[0] for r in results] == [200, 200, 200]
                await until(lambda: published[-1][2] == 0)
                assert published[-1][:3] == ("a", "chat", 0)

                # a replica gone between refreshes (connect refused): retried on a fresh table
                world["pods"] = [pod("a", "127.0.0.2", **{DEP: "chat"})]
                await gw.refresh()
                task = asyncio.create_task(call(gw, "/v1/chat/completions", chat, key_a))
                await asyncio.sleep(0.01)
                world["pods"] = [pod("a", "127.0.0.1", **{DEP: "chat"})]
                status, _, body = await task
                assert status == 200, body

                # past the hold limit: 503 with Retry-After
                world["pods"] = []
                await gw.refresh()
                status, headers, body = await call(gw, "/v1/chat/completions", chat, key_a)
                assert status == 503 and headers["retry-after"] == "10"
                assert json.loads(body)["error"]["code"] == "model_not_ready"
            finally:
                await gw.stop()

    asyncio.run(main())


def test_replicas_publish_the_sum_and_a_drained_one_hides_nothing() -> None:
    from modelplane.gateway.routing import demand_annotations, replica_key

    now = 1000.0
    total, changes = demand_annotations({}, "gw-a", 5, now)
    assert total == 5 and changes == {replica_key("gw-a"): "5@1000"}
    current = {replica_key("gw-a"): "5@1000"}
    total, changes = demand_annotations(current, "gw-b", 3, now + 1)
    assert total == 8
    current[replica_key("gw-b")] = "3@1001"
    # b drains: its own entry goes, a's 5 still count
    total, changes = demand_annotations(current, "gw-b", 0, now + 2)
    assert total == 5 and changes == {replica_key("gw-b"): None}
    # a's count goes stale (a stopped without publishing 0): removed, not counted
    total, changes = demand_annotations(current, "gw-b", 1, now + 100)
    assert total == 1 and changes[replica_key("gw-a")] is None
    # garbage in a replica annotation is dropped too
    total, changes = demand_annotations({replica_key("x"): "lots"}, "gw-b", 0, now)
    assert total == 0 and changes[replica_key("x")] is None
