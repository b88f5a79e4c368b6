"""The usage ledger (SQLite): idempotent by request id, totals per namespace and model, prices
from the catalog (batch at half price), durable across reopening the file."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.gateway.ledger import (
    SqliteLedger,
    UsageRecord,
    cost,
    open_ledger,
    usage_record,
)


def test_record_is_idempotent_by_request_id(tmp_path: object) -> None:
    led = open_ledger(f"sqlite:///{tmp_path}/usage.db")
    rec = UsageRecord("r1", "team-a", "llama-v3p3-70b-instruct", "k1", 10, 5)
    assert led.record(rec) is True
    # the same request id again (a retry, another replica): not counted twice
    assert led.record(UsageRecord("r1", "team-a", "llama-v3p3-70b-instruct", "k1", 99, 99)) is False
    assert led.record(UsageRecord("r2", "team-a", "llama-v3p3-70b-instruct", "k1", 1, 2)) is True
    assert led.record(UsageRecord("r3", "team-b", "nomic-embed-text-v1p5", "k2", 7)) is True
    (a,) = led.totals("team-a")
    assert (a.requests, a.prompt_tokens, a.completion_tokens, a.tokens) == (2, 11, 7, 18)
    assert [(t.namespace, t.model) for t in led.totals()] == [
        ("team-a", "llama-v3p3-70b-instruct"),
        ("team-b", "nomic-embed-text-v1p5"),
    ]
    led.close()
    again = SqliteLedger(f"{tmp_path}/usage.db")  # what was recorded survives the process
    assert sum(t.requests for t in again.totals()) == 3
    assert again.totals(since=rec.at + 3600) == []


def test_prices_from_the_catalog_and_batch_half() -> None:
    assert cost("llama-v3p3-70b-instruct", 1_000_000, 1_000_000) == pytest.approx(1.80)
    assert cost("llama-v3p1-405b-instruct", 500_000, 500_000) == pytest.approx(3.00)
    assert cost("nomic-embed-text-v1p5", 1_000_000) == pytest.approx(0.008)
    assert cost("whisper-v3", audio_seconds=90) == pytest.approx(0.30)
    assert cost("llama-v3p3-70b-instruct", 1_000_000, 0, batch=True) == pytest.approx(0.45)
    assert cost("no-such-model", 10**9, 10**9) == 0.0
    rec = usage_record("r", "ns", "llama-v3p1-405b-instruct", "k", 2_000_000, 0, batch=True)
    assert rec.cost_usd == pytest.approx(3.00) and rec.batch


def test_unknown_ledger_url_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        open_ledger("mysql://x/y")


def test_gateway_records_every_answer_and_publishes_totals(tmp_path: object) -> None:
    """Each answered request (plain, streamed, transcription) is one ledger row with the
    engine's counts, priced by the catalog; the totals go out as the usage annotation that
    `status.usage` reads."""
    import asyncio
    import json

    from modelplane.api.usage import ANNOTATION_USAGE, parse_usage, status_usage
    from modelplane.gateway import keys
    from modelplane.gateway.app import Gateway
    from tests.unit.test_gateway import DEP, call, engine, md, pod

    async def main() -> None:
        async with engine() as port:
            kid, key = keys.new_key()
            mds = [md("a", "chat", model={"catalog": "llama-v3p3-70b-instruct",
                                          "servedName": "llama"})]  # fmt: skip
            pods = [pod("a", "127.0.0.1", **{DEP: "chat"})]
            led = open_ledger(f"sqlite:///{tmp_path}/gw.db")
            published: list[tuple[str, str, dict[str, str]]] = []
            gw = Gateway(
                lambda: (mds, pods, [keys.api_key("a", key, kid)]),
                lambda *a: None,
                engine_port=port,
                ledger=led,
                publish_usage=lambda ns, n, ann: published.append((ns, n, ann)),
            )
            await gw.start()
            await gw.refresh()
            try:
                chat = {"model": "llama", "messages": [{"role": "user", "content": "hi"}]}
                status, headers, _ = await call(gw, "/v1/chat/completions", chat, key)
                assert status == 200 and len(headers["x-request-id"]) == 32
                status, _, body = await call(
                    gw, "/v1/chat/completions", {**chat, "stream": True}, key
                )
                assert status == 200 and b'"usage"' not in body  # not asked for: dropped
                (t,) = led.totals("a")
                assert (t.deployment, t.model, t.requests) == ("chat", "llama-v3p3-70b-instruct", 2)
                assert (t.prompt_tokens, t.completion_tokens) == (14, 6)
                assert t.cost_usd == pytest.approx(20 * 0.90 / 1e6)
                assert await gw.publish_usage_round() == 1
                assert await gw.publish_usage_round() == 0  # unchanged: not written again
                ((ns, name, ann),) = published
                assert (ns, name) == ("a", "chat")
                u = parse_usage(ann)
                assert u is not None and u["requests"] == 2 and u["generatedTokens"] == 6
                assert u["costUSD"] == pytest.approx(20 * 0.90 / 1e6)
                assert status_usage(ann, None, "now")["promptTokens"] == 14
                assert json.loads(ann[ANNOTATION_USAGE])["since"].endswith("Z")
            finally:
                await gw.stop()

    asyncio.run(main())


def test_status_usage_falls_back_to_previous_then_zeros() -> None:
    from modelplane.api.usage import ANNOTATION_USAGE, status_usage

    prev = {"requests": 3, "promptTokens": 1, "generatedTokens": 2, "since": "t0"}
    assert status_usage({ANNOTATION_USAGE: "{not json"}, prev, "t1") == prev
    assert status_usage({}, None, "t1") == {
        "requests": 0, "promptTokens": 0, "generatedTokens": 0, "since": "t1",
    }  # fmt: skip
    assert status_usage({ANNOTATION_USAGE: '{"requests": -1}'}, prev, "t1") == prev


def test_usage_report_spend_and_ondemand_hint() -> None:
    from modelplane.gateway.ledger import Total
    from modelplane.gateway.usage_report import report

    now = 1_000_000.0
    busy = Total("team-a", "sls", "llama-v3p3-70b-instruct", 900, 2_000_000, 600_000, 0.0,
                 2.34, now - 20 * 3600, now - 60)  # fmt: skip
    burst = Total("team-b", "sls", "llama-v3p3-70b-instruct", 50, 2_000_000, 600_000, 0.0,
                  2.34, now - 600, now - 60)  # fmt: skip
    quiet = Total("team-c", "sls", "llama-v3p3-70b-instruct", 5, 1000, 100, 0.0, 0.001,
                  now - 20 * 3600, now)  # fmt: skip
    out = report([busy, burst, quiet], 24, now, {("team-c", "sls"): "Serverless"})
    assert "total team-a: $2.3400" in out
    hints = [line for line in out.splitlines() if "OnDemand" in line]
    # 2.6M tokens over 24 h is ~108K/hour and steady: the hint; the same in one burst: none
    assert len(hints) == 1 and hints[0].startswith("team-a/sls: steady 108,333 tokens/hour")
    assert "OnDemand" not in report([busy], 24, now, {("team-a", "sls"): "OnDemand"})


def test_held_stream_gets_keepalives_then_its_answer_or_an_error_event() -> None:
    import asyncio

    from modelplane.gateway import keys
    from modelplane.gateway.app import Gateway, GatewayConfig
    from tests.unit.test_gateway import DEP, call, engine, md, pod

    async def main() -> None:
        async with engine() as port:
            kid, key = keys.new_key()
            world: dict[str, Any] = {"pods": []}
            gw = Gateway(
                lambda: ([md("a", "chat")], world["pods"], [keys.api_key("a", key, kid)]),
                lambda *a: None,
                GatewayConfig(hold_seconds=0.6, keepalive_seconds=0.1),
                refresh_seconds=0.05,
                engine_port=port,
            )
            await gw.start()
            await gw.refresh()
            try:
                chat = {"model": "chat", "stream": True, "messages": [{"role": "user",
                                                                      "content": "hi"}]}  # fmt: skip
                # nothing becomes ready: keep-alives, then the hold limit as an error event
                status, headers, body = await call(gw, "/v1/chat/completions", chat, key)
                assert status == 200 and headers["content-type"].startswith("text/event-stream")
                assert body.count(b": keep-alive\n\n") >= 3
                assert b'"model_not_ready"' in body and body.endswith(b"data: [DONE]\n\n")
                # a replica comes while held: keep-alives, then the engine's events
                task = asyncio.create_task(call(gw, "/v1/chat/completions", chat, key))
                await asyncio.sleep(0.35)
                world["pods"] = [pod("a", "127.0.0.1", **{DEP: "chat"})]
                status, _, body = await task
                assert status == 200 and body.startswith(b": keep-alive\n\n")
                assert b'"content": "a"' in body and body.endswith(b"data: [DONE]\n\n")
                assert b"error" not in body
            finally:
                await gw.stop()

    asyncio.run(main())
