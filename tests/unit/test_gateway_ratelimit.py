"""Rate limits per key and per namespace: buckets refill per minute, all-or-nothing admission,
token reservations settled from the answer's usage, 429 with Retry-After from the app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelplane.gateway import keys
from modelplane.gateway.app import Gateway, GatewayConfig
from modelplane.gateway.ratelimit import Limit, LocalLimiter
from tests.unit.test_gateway import DEP, call, engine, md, pod


def test_buckets_refill_all_or_nothing_and_settle() -> None:
    now = [0.0]
    lim = LocalLimiter(clock=lambda: now[0])
    rpm = Limit("k:rpm", 2, 1)
    assert lim.acquire([rpm]) == 0 and lim.acquire([rpm]) == 0
    assert lim.acquire([rpm]) == 30.0  # one request refills in 60/2 s
    now[0] = 30.0
    assert lim.acquire([rpm]) == 0
    # all or nothing: the token bucket refuses, so the request bucket keeps its allowance
    now[0] = 1000.0
    assert lim.acquire([Limit("k:rpm", 2, 1), Limit("k:tpm", 100, 150)]) == 0  # full bucket
    assert lim.acquire([Limit("k:rpm", 2, 1), Limit("k:tpm", 100, 10)]) > 0
    lim.settle("k:tpm", 100, -150 + 20)  # 150 reserved, 20 used: 130 back
    assert lim.acquire([Limit("k:rpm", 2, 1), Limit("k:tpm", 100, 60)]) == 0
    lim.settle("k:tpm", 100, 500)  # used far more than reserved: the debt delays the next
    assert lim.acquire([Limit("k:tpm", 100, 1)]) == pytest.approx((480 + 1) * 0.6)


def test_gateway_answers_429_with_retry_after_per_key_and_namespace() -> None:
    async def main() -> None:
        async with engine() as port:
            kid, key = keys.new_key()
            kid2, key2 = keys.new_key()
            limited = keys.api_key("a", key, kid)
            limited["spec"]["limits"] = {"requestsPerMinute": 2, "tokensPerMinute": 10_000}
            gw = Gateway(
                lambda: ([md("a", "chat")], [pod("a", "127.0.0.1", **{DEP: "chat"})],
                         [limited, keys.api_key("a", key2, kid2)]),
                lambda *a: None,
                GatewayConfig(namespace_requests_per_minute=3),
                engine_port=port,
            )  # fmt: skip
            await gw.start()
            await gw.refresh()
            try:
                chat: dict[str, Any] = {"model": "chat", "max_tokens": 500,
                                        "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
                codes = [(await call(gw, "/v1/chat/completions", chat, key))[0] for _ in range(2)]
                status, headers, body = await call(gw, "/v1/chat/completions", chat, key)
                assert codes == [200, 200] and status == 429, body
                assert headers["retry-after"] == "30" and b"rate_limit_exceeded" in body
                assert f"key {kid} 2 requests/min".encode() in body
                # the other key has no limit of its own, but the namespace's third request is it
                assert (await call(gw, "/v1/chat/completions", chat, key2))[0] == 200
                status, _, body = await call(gw, "/v1/chat/completions", chat, key2)
                assert status == 429 and b"namespace a 3 requests/min" in body
                # reservations were settled from usage (7 + 3 tokens each): nothing left over
                assert gw._reserved == {}
                level = gw.limiter._buckets[f"key:{kid}:tpm"].level
                assert level >= 10_000 - 2 * 10 - 1  # a reservation left would be ~520 each
            finally:
                await gw.stop()

    asyncio.run(main())
