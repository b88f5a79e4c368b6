"""The batch benchmark's client, run inside the local cluster's network namespace (where the
gateway listens): prints one JSON object.

    python -m benchmarks.batch.load interactive BASE KEY --n 10000 --concurrency 64
    python -m benchmarks.batch.load batch BASE KEY --n 10000
    python -m benchmarks.batch.load probe BASE KEY --rate 10 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import aiohttp

EP = "/v1/chat/completions"
SYSTEMS = [
    f"You are assistant number {i}. " + "Answer briefly and precisely. " * 8 for i in range(10)
]


def body(i: int, max_tokens: int) -> dict[str, Any]:
    """Request i: one of 10 long shared system prompts (a prefix), a short question."""
    return {
        "model": "chat",
        "max_tokens": max_tokens,
        "messages": [
            {"role": "system", "content": SYSTEMS[i % len(SYSTEMS)]},
            {"role": "user", "content": f"Summarize document {i} in one line."},
        ],
    }


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def interactive(base: str, key: str, n: int, concurrency: int, max_tokens: int) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    lat: list[float] = []
    tokens = errors = 0
    todo = iter(range(n))
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=base, headers=headers, connector=conn) as s:

        async def worker() -> None:
            nonlocal tokens, errors
            for i in todo:
                t0 = time.monotonic()
                async with s.post(EP, json=body(i, max_tokens)) as r:
                    data = await r.json()
                if r.status != 200:
                    errors += 1
                    continue
                lat.append(time.monotonic() - t0)
                tokens += data["usage"]["completion_tokens"]

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.monotonic() - t0
    return {"seconds": took, "tokens": tokens, "errors": errors, "n": n,
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}  # fmt: skip


async def batch(base: str, key: str, n: int, max_tokens: int) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    order = list(range(n))
    random.Random(1).shuffle(order)  # the file is not sorted by prefix; the executor groups
    lines = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": EP, "body": body(i, max_tokens)})
        + "\n"
        for i in order
    ).encode()
    async with aiohttp.ClientSession(base_url=base, headers=headers) as s:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", lines, filename="in.jsonl", content_type="application/jsonl")
        t0 = time.monotonic()
        async with s.post("/v1/files", data=form) as r:
            fid = (await r.json())["id"]
        req = {"input_file_id": fid, "endpoint": EP, "completion_window": "24h"}
        async with s.post("/v1/batches", json=req) as r:
            b = await r.json()
        while b["status"] not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(0.5)
            async with s.get(f"/v1/batches/{b['id']}") as r:
                b = await r.json()
        took = time.monotonic() - t0
        async with s.get(f"/v1/files/{b['output_file_id']}/content") as r:
            out = [json.loads(x) for x in (await r.read()).splitlines()]
    tokens = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out)
    ids = {o["custom_id"] for o in out}
    return {"seconds": took, "tokens": tokens, "n": n, "status": b["status"],
            "counts": b["request_counts"], "unique": len(ids)}  # fmt: skip


async def probe(base: str, key: str, rate: float, seconds: float, max_tokens: int) -> Any:
    """Open loop: a request every 1/rate s, whatever the answers do; their latencies."""
    headers = {"Authorization": f"Bearer {key}"}
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(base_url=base, headers=headers) as s:

        async def one(i: int) -> None:
            nonlocal errors
            t0 = time.monotonic()
            async with s.post(EP, json=body(100_000 + i, max_tokens)) as r:
                await r.read()
            if r.status == 200:
                lat.append(time.monotonic() - t0)
            else:
                errors += 1

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return {"n": len(lat), "errors": errors, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "max": max(lat, default=float("nan"))}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["interactive", "batch", "probe"])
    ap.add_argument("base")
    ap.add_argument("key")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()
    if a.mode == "interactive":
        res = interactive(a.base, a.key, a.n, a.concurrency, a.max_tokens)
    elif a.mode == "batch":
        res = batch(a.base, a.key, a.n, a.max_tokens)
    else:
        res = probe(a.base, a.key, a.rate, a.seconds, a.max_tokens)
    print(json.dumps(asyncio.run(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
