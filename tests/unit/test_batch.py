"""The Batch API without a cluster: validation of input files, the file store, and the gateway's
`/v1/files` + `/v1/batches` against a stand-in engine on loopback (run to completion in prompt
order, every custom_id once, a restart that resumes, cancel, batch behind interactive)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from modelplane.gateway import keys
from modelplane.gateway.app import Gateway, GatewayConfig
from modelplane.gateway.batches import BatchConfig, BatchService, BatchStore, validate
from modelplane.gateway.files import FileStore, multipart
from tests.unit.test_gateway import DEP, MDS, _free_port, call, pod

EP = "/v1/chat/completions"


def line(cid: Any, content: str = "hi", model: str = "llama", url: str = EP) -> bytes:
    obj: dict[str, Any] = {"method": "POST", "url": url,
                           "body": {"model": model, "messages": [{"role": "user", "content": content}]}}  # fmt: skip
    if cid is not None:
        obj["custom_id"] = cid
    return json.dumps(obj).encode()


def test_validation_names_each_bad_line_and_its_fix() -> None:
    cfg = BatchConfig(max_line_bytes=2000)
    data = b"\n".join(
        [
            line("a"),
            b'{"custom_id": "b", "method": "POST", "url": ',  # 2: bad JSON
            line(None),  # 3: no custom_id
            line("a"),  # 4: duplicate of line 1
            line("c", model="gpt-4o"),  # 5: a model the namespace does not serve
            line("d", url="/v1/embeddings"),  # 6: another endpoint
            line("e", content="x" * 3000),  # 7: over the line limit
            line("f"),
        ]
    )
    lines, errors = validate(data, EP, lambda m: m == "llama", ["llama"], "a", cfg)
    assert [(e["line"], e["code"]) for e in errors] == [
        (2, "invalid_json"),
        (3, "missing_custom_id"),
        (4, "duplicate_custom_id"),
        (5, "model_not_found"),
        (6, "mismatched_endpoint"),
        (7, "line_too_large"),
    ]
    msgs = [e["message"] for e in errors]
    assert msgs[0].startswith("Line 2 is not valid JSON")
    assert "unique string `custom_id`" in msgs[1]
    assert "repeats the custom_id `a` of line 1" in msgs[2]
    assert "`gpt-4o`" in msgs[3] and "llama" in msgs[3]
    assert "set `url` to `/v1/chat/completions`" in msgs[4]
    assert "over the limit of 2000" in msgs[5]
    assert [ln.custom_id for ln in lines] == ["a", "f"]
    # the whole file over its limit: one error, no line
    _, errors = validate(data, EP, lambda m: True, [], "a", BatchConfig(max_file_bytes=100))
    assert [(e["line"], e["code"]) for e in errors] == [(None, "file_too_large")]
    _, errors = validate(b"\n", EP, lambda m: True, [], "a", cfg)
    assert errors[0]["code"] == "empty_file"


def test_file_store_and_multipart(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    meta = store.put("a", "in.jsonl", "batch", b"x\n")
    assert store.get("a", meta.id) == meta and store.content("a", meta.id) == b"x\n"
    assert store.get("b", meta.id) is None and store.content("b", meta.id) is None
    assert store.get("a", "../etc/passwd") is None  # ids are checked before they name a path
    assert [m.id for m in store.listing("a")] == [meta.id] and store.listing("b") == []
    assert not store.delete("b", meta.id) and store.delete("a", meta.id)
    assert store.get("a", meta.id) is None
    body = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\nl1\r\nl2\n\r\n--B--\r\n"
    )
    parts = multipart("multipart/form-data; boundary=B", body)
    assert parts == {"purpose": (None, b"batch"), "file": ("x.jsonl", b"l1\r\nl2\n")}


# --------------------------------------------------------------------------- the app


class Engine:
    """A stand-in engine: records the prompts it was sent; `gate` holds its answers."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.inflight = 0
        self.most = 0

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.prompts.append(body["messages"][-1]["content"])
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await self.gate.wait()
            await asyncio.sleep(0.001)
        finally:
            self.inflight -= 1
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        return web.json_response({"object": "chat.completion", "choices": [{}], "usage": usage})


@asynccontextmanager
async def engine() -> AsyncIterator[tuple[int, Engine]]:
    eng = Engine()
    app = web.Application()
    app.router.add_post(EP, eng.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, eng
    finally:
        await runner.cleanup()


@asynccontextmanager
async def gateway(port: int, data: Path, cfg: BatchConfig, *key: Any) -> AsyncIterator[Gateway]:
    gw = Gateway(
        lambda: (MDS, [pod("a", "127.0.0.1", **{DEP: "chat"})], list(key)),
        lambda *a: None,
        GatewayConfig(hold_seconds=3),
        refresh_seconds=0.05,
        engine_port=port,
    )
    gw.extensions.append(BatchService(gw, data, cfg))
    await gw.start()
    await gw.refresh()
    try:
        yield gw
    finally:
        await gw.stop()


async def upload(gw: Gateway, key: str, data: bytes) -> str:
    form = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--B--\r\n"
    )
    status, _, body = await call(gw, "/v1/files", key=key, raw=form,
                                 ctype="multipart/form-data; boundary=B")  # fmt: skip
    assert status == 200, body
    obj = json.loads(body)
    assert obj["object"] == "file" and obj["purpose"] == "batch" and obj["bytes"] == len(data)
    return str(obj["id"])


async def create(gw: Gateway, key: str, fid: str) -> dict[str, Any]:
    status, _, body = await call(gw, "/v1/batches", {"input_file_id": fid, "endpoint": EP,
                                 "completion_window": "24h"}, key)  # fmt: skip
    assert status == 200, body
    obj: dict[str, Any] = json.loads(body)
    assert obj["status"] == "validating" and obj["object"] == "batch"
    return obj


async def poll(gw: Gateway, key: str, bid: str, want: set[str], within: float = 20) -> Any:
    deadline = time.monotonic() + within
    while True:
        status, _, body = await call(gw, f"/v1/batches/{bid}", key=key, method="GET")
        assert status == 200, body
        obj = json.loads(body)
        if obj["status"] in want or time.monotonic() > deadline:
            return obj
        await asyncio.sleep(0.05)


async def lines_of(gw: Gateway, key: str, fid: str | None) -> list[dict[str, Any]]:
    if fid is None:
        return []
    status, _, body = await call(gw, f"/v1/files/{fid}/content", key=key, method="GET")
    assert status == 200, body
    return [json.loads(x) for x in body.splitlines()]


def test_batch_runs_in_prompt_order_resumes_and_cancels(tmp_path: Path) -> None:
    async def main() -> None:
        kid, key = keys.new_key()
        kid_b, key_b = keys.new_key()
        api_key = (keys.api_key("a", key, kid), keys.api_key("b", key_b, kid_b))
        cfg = BatchConfig(concurrency=1, slots_per_replica=4, poll_seconds=0.05)
        async with engine() as (port, eng):
            # ---- to completion: prompt order (shared prefixes together), every custom_id once
            prompts = ["sys B: 2", "sys A: 1", "sys B: 1", "sys A: 2"]
            data = b"\n".join(line(f"r{i}", p) for i, p in enumerate(prompts)) + b"\n"
            async with gateway(port, tmp_path, cfg, *api_key) as gw:
                fid = await upload(gw, key, data)
                bid = (await create(gw, key, fid))["id"]
                done = await poll(gw, key, bid, {"completed", "failed"})
                assert done["status"] == "completed", done
                assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
                assert eng.prompts == sorted(prompts)
                out = await lines_of(gw, key, done["output_file_id"])
                assert sorted(o["custom_id"] for o in out) == ["r0", "r1", "r2", "r3"]
                assert all(o["response"]["status_code"] == 200 for o in out)
                assert done["error_file_id"] is None
                # another namespace sees none of it
                status, _, body = await call(gw, f"/v1/batches/{bid}", key=key_b, method="GET")
                assert status == 404 and json.loads(body)["error"]["code"] == "batch_not_found"
                status, _, body = await call(gw, f"/v1/files/{fid}", key=key_b, method="GET")
                assert status == 404 and "GET /v1/files lists yours" in body.decode()
                status, _, body = await call(gw, "/v1/batches", key=key, method="GET")
                listing = json.loads(body)
                assert [b["id"] for b in listing["data"]] == [bid] and not listing["has_more"]
                # a bad file fails at validating, nothing runs
                sent = len(eng.prompts)
                bad = await upload(gw, key, line("x") + b"\n" + line("x") + b"\n{oops\n")
                failed = await poll(gw, key, (await create(gw, key, bad))["id"], {"failed"})
                assert failed["status"] == "failed" and failed["failed_at"]
                assert [e["line"] for e in failed["errors"]["data"]] == [2, 3]
                assert len(eng.prompts) == sent

            # ---- a gateway stopped mid-batch: a new one resumes; each custom_id once
            eng.prompts.clear()
            eng.gate.clear()
            data = b"\n".join(line(f"s{i}", f"p{i:02d}") for i in range(20))
            async with gateway(port, tmp_path, cfg, *api_key) as gw:
                bid = (await create(gw, key, await upload(gw, key, data)))["id"]
                await asyncio.sleep(0.3)
                eng.gate.set()
                await asyncio.sleep(0.01)
                eng.gate.clear()
                await asyncio.sleep(0.2)
                mid = await poll(gw, key, bid, {"in_progress"})
                assert 0 < mid["request_counts"]["completed"] < 20, mid
            eng.gate.set()
            async with gateway(port, tmp_path, cfg, *api_key) as gw:
                done = await poll(gw, key, bid, {"completed"})
                assert done["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
                out = await lines_of(gw, key, done["output_file_id"])
                assert sorted(o["custom_id"] for o in out) == sorted(f"s{i}" for i in range(20))

                # ---- cancel: no new requests start, what finished is in the output
                eng.gate.clear()
                eng.prompts.clear()
                data = b"\n".join(line(f"c{i}", f"q{i:02d}") for i in range(10))
                bid = (await create(gw, key, await upload(gw, key, data)))["id"]
                await poll(gw, key, bid, {"in_progress"})
                await asyncio.sleep(0.2)  # one request is in flight at the engine
                status, _, body = await call(gw, f"/v1/batches/{bid}/cancel", key=key)
                assert status == 200 and json.loads(body)["status"] == "cancelling", body
                sent = len(eng.prompts)
                eng.gate.set()
                done = await poll(gw, key, bid, {"cancelled"})
                assert done["status"] == "cancelled" and done["cancelled_at"], done
                assert len(eng.prompts) == sent  # nothing started after the cancel
                out = await lines_of(gw, key, done["output_file_id"])
                assert len(out) == done["request_counts"]["completed"] == sent
                status, _, body = await call(gw, f"/v1/batches/{bid}/cancel", key=key)
                assert status == 200 and json.loads(body)["status"] == "cancelled"

    asyncio.run(main())


def test_batch_requests_wait_behind_interactive_ones(tmp_path: Path) -> None:
    """With 3 slots on the one replica and 3 interactive requests outstanding, no batch request
    reaches the engine; when they finish, the batch takes the slots (and no more than 3)."""

    async def main() -> None:
        kid, key = keys.new_key()
        cfg = BatchConfig(concurrency=8, slots_per_replica=3, poll_seconds=0.05)
        async with (
            engine() as (port, eng),
            gateway(port, tmp_path, cfg, keys.api_key("a", key, kid)) as gw,
        ):
            eng.gate.clear()
            chat = {"model": "llama", "messages": [{"role": "user", "content": "interactive"}]}
            inter = [asyncio.create_task(call(gw, EP, chat, key)) for _ in range(3)]
            await asyncio.sleep(0.2)
            data = b"\n".join(line(f"b{i}", f"batch {i}") for i in range(12))
            bid = (await create(gw, key, await upload(gw, key, data)))["id"]
            await poll(gw, key, bid, {"in_progress"})
            await asyncio.sleep(0.3)
            assert eng.prompts == ["interactive"] * 3  # the batch waits for a free slot
            eng.gate.set()
            assert [r[0] for r in await asyncio.gather(*inter)] == [200] * 3
            eng.gate.clear()
            await asyncio.sleep(0.3)
            assert eng.inflight == 3  # the batch fills the 3 free slots, not its concurrency 8
            eng.gate.set()
            done = await poll(gw, key, bid, {"completed"})
            assert done["request_counts"]["completed"] == 12

    asyncio.run(main())


def test_a_request_is_recorded_once(tmp_path: Path) -> None:
    store = BatchStore(tmp_path / "b.sqlite")
    from modelplane.gateway.batches import Line, new_batch

    obj = new_batch("batch_x", "file-x", EP, None, 0)
    store.insert("a", "k", obj)
    assert store.add_requests({**obj, "status": "in_progress"}, [Line(1, "c", "m", {}, "")])
    assert store.finish("batch_x", 1, True, {"custom_id": "c", "n": 1})
    assert not store.finish("batch_x", 1, True, {"custom_id": "c", "n": 2})  # a re-run
    assert store.results("batch_x") == [(True, json.dumps({"custom_id": "c", "n": 1}))]
    store.close()
