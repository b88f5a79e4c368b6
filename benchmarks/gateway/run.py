"""Gateway overhead on loopback: the same requests straight to a stand-in engine, and through
`modelplane gateway` (its ASGI app on uvicorn, its pooled aiohttp client), at fixed request
rates (open loop: requests start on schedule whatever the answers do).

The engine answers a chat completion at once (a fixed JSON body with usage), so the difference
between the two paths is the gateway: auth (key hash), routing, replica choice, the proxied
call, metering (each answer recorded in the SQLite usage ledger; `--ledger ''` for none). The gateway runs in its own process (pinned to core 0 with `PIN=1`, when
`taskset` is there); the engine and the load generator share the machine. The routing table is
static (no cluster). Besides latency it reports the gateway's CPU time per request, which
contention on a shared machine inflates far less than latency: its inverse is the request rate
one core sustains.

    uv run python -m benchmarks.gateway.run [--rates 100,300,600] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

from modelplane.gateway import keys

BODY = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
ANSWER = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "llama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
).encode()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def engine(port: int) -> web.AppRunner:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


GATEWAY = r"""
import json, sys, uvicorn
from modelplane.gateway.app import Gateway
from modelplane.gateway.ledger import open_ledger
engine_port, port, api_key = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
ledger = open_ledger(sys.argv[4]) if sys.argv[4] else None
mds = [{"metadata": {"namespace": "a", "name": "chat"},
        "spec": {"tier": "OnDemand", "model": {"servedName": "llama"}}}]
pods = [{"metadata": {"namespace": "a", "name": "p", "labels": {"modelplane.io/deployment": "chat"}},
         "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}]
gw = Gateway(lambda: (mds, pods, [api_key]), lambda *a: None, engine_port=engine_port,
             refresh_seconds=3600, ledger=ledger)
uvicorn.run(gw, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            lifespan="on")
"""


async def load(url: str, key: str, rate: float, seconds: float) -> dict[str, float]:
    """Open loop at `rate` req/s for `seconds`: latency percentiles (ms) and errors."""
    lat: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = json.dumps(BODY).encode()
    async with ClientSession(connector=TCPConnector(limit=0)) as s:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with s.post(url, data=data, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except Exception:
                errors += 1
                return
            lat.append((time.perf_counter() - t0) * 1000)

        for _ in range(int(rate)):  # warm the pools
            await one()
        lat.clear()
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [0.0] * 99
    return {
        "p50": q[49],
        "p99": q[98],
        "achieved": len(lat) / took,
        "errors": errors,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main_async(
    rates: list[float], seconds: float, eport: int, gport: int, key: str, pid: int
) -> list[dict[str, Any]]:
    runner = await engine(eport)
    try:
        async with ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(f"http://127.0.0.1:{gport}/readyz") as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
        rows = []
        for rate in rates:
            direct = await load(f"http://127.0.0.1:{eport}/v1/chat/completions", key, rate, seconds)
            cpu0 = cpu_seconds(pid)
            via = await load(f"http://127.0.0.1:{gport}/v1/chat/completions", key, rate, seconds)
            # CPU the gateway spent per request (warm-up requests included): contention on a
            # shared machine inflates latency, not this.
            via["cpu_ms"] = (cpu_seconds(pid) - cpu0) * 1000 / (rate * seconds + rate)
            rows.append({"rate": rate, "direct": direct, "gateway": via})
            print(
                f"{rate:6.0f} req/s  direct p50 {direct['p50']:.2f} p99 {direct['p99']:.2f} ms | "
                f"gateway p50 {via['p50']:.2f} p99 {via['p99']:.2f} ms "
                f"(achieved {via['achieved']:.0f}/s, errors {via['errors']:.0f}) | added p50 "
                f"{via['p50'] - direct['p50']:.2f} p99 {via['p99'] - direct['p99']:.2f} ms | "
                f"gateway CPU {via['cpu_ms']:.2f} ms/request (~{1000 / via['cpu_ms']:.0f} "
                "req/s per core)",
                flush=True,
            )
        return rows
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--rates", default="100,300,600")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument(
        "--ledger",
        default="sqlite:///tmp/modelplane-bench-usage.db",
        help="usage ledger URL the gateway records into ('' for none)",
    )
    args = p.parse_args(argv)
    eport, gport = free_port(), free_port()
    kid, key = keys.new_key()
    cmd = [
        sys.executable,
        "-c",
        GATEWAY,
        str(eport),
        str(gport),
        json.dumps(keys.api_key("a", key, kid)),
        args.ledger,
    ]
    if os.environ.get("PIN") and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    gw = subprocess.Popen(cmd)  # with taskset: its pid is the gateway's (exec)
    try:
        rates = [float(r) for r in args.rates.split(",")]
        asyncio.run(main_async(rates, args.seconds, eport, gport, key, gw.pid))
    finally:
        gw.terminate()
        gw.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
