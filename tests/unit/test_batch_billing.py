"""Batch requests in the usage ledger: marked batch, at half the interactive price, once per
batch line even when a line runs twice; `modelplane usage` shows them apart."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from modelplane.gateway import keys
from modelplane.gateway.app import Gateway
from modelplane.gateway.batches import BatchConfig, BatchService
from modelplane.gateway.ledger import open_ledger
from modelplane.gateway.usage_report import report
from tests.unit.test_batch import EP, create, engine, line, poll, upload
from tests.unit.test_gateway import DEP, call, md, pod


def test_batch_is_billed_at_half_price_once_per_line(tmp_path: Path) -> None:
    async def main() -> None:
        kid, key = keys.new_key()
        mds = [md("a", "chat", model={"catalog": "llama-v3p3-70b-instruct",
                                      "servedName": "llama"})]  # fmt: skip
        led = open_ledger(f"sqlite:///{tmp_path}/usage.db")
        async with engine() as (port, _):
            gw = Gateway(
                lambda: (mds, [pod("a", "127.0.0.1", **{DEP: "chat"})],
                         [keys.api_key("a", key, kid)]),
                lambda *a: None, engine_port=port, ledger=led,
            )  # fmt: skip
            svc = BatchService(gw, tmp_path / "data", BatchConfig(poll_seconds=0.05))
            gw.extensions.append(svc)
            await gw.start()
            await gw.refresh()
            try:
                chat = {"model": "llama", "messages": [{"role": "user", "content": "x"}]}
                for _ in range(3):
                    status, _, body = await call(gw, EP, chat, key)
                    assert status == 200, body
                data = b"\n".join(line(f"b{i}", f"p{i}") for i in range(3))
                bid = (await create(gw, key, await upload(gw, key, data)))["id"]
                done = await poll(gw, key, bid, {"completed"})
                assert done["request_counts"]["completed"] == 3
                # a line run again (a crash after the engine answered): the same request id
                route = gw.state.table.lookup("a", "llama")
                assert route is not None
                rec = gw.state.keys[kid]
                again = json.dumps({"model": "llama", "messages": [{"role": "user",
                                                                    "content": "p0"}]})  # fmt: skip
                status, _ = await svc._call(route, rec, EP, again.encode(), f"{bid}_1")
                assert status == 200
                assert (
                    gw.metrics.registry.get_sample_value(
                        "modelplane_gateway_ledger_duplicates_total"
                    )
                    == 1
                )
            finally:
                await gw.stop()
        online, batch = led.totals("a")
        assert (online.batch, batch.batch) == (False, True)
        assert online.requests == batch.requests == 3
        assert online.tokens == batch.tokens
        assert batch.cost_usd == pytest.approx(online.cost_usd / 2)
        text = report([online, batch], 1.0, time.time())
        rows = [r for r in text.splitlines() if r.startswith("a ")]
        assert [r.split()[3] for r in rows] == ["online", "batch"]
        led.close()

    asyncio.run(main())
