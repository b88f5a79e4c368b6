"""The Batch API on the local cluster: the chart's gateway (a process inside the cluster's
network namespace, with a data directory) in front of the engine emulator.

- The real `openai` SDK, run inside the cluster: `files.create`, `batches.create`, poll to
  `completed`, `files.content` of the output; every custom_id answered once.
- A file with 5 kinds of bad lines (bad JSON, no custom_id, a duplicate, a model the key may not
  use, another endpoint) and a line over the size limit: `failed` at `validating`, one error per
  bad line, nothing sent to an engine.
- `kill -9` of the gateway at half of a 2,000-request batch: a new gateway on the same data
  directory completes it; no custom_id missing or twice; the usage ledger's batch rows equal
  the tokens in the output file, and the engine emulator counted those plus the requests the
  kill cut off (they ran again; whole requests, at most the batch concurrency).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelplane.gateway import keys
from modelplane.gateway.ledger import open_ledger
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import ChartRelease, Platform
from tests.helpers import wait_for
from tests.integration.test_gateway import _models, _phase, _ready, call, md

pytestmark = pytest.mark.integration

PORT = 18580

SDK = r"""
import io, json, sys, time
import openai

base, key, lines = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
data = "".join(
    json.dumps({"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "chat", "max_tokens": 8, "messages": [
                    {"role": "system", "content": "You are terse." if i % 2 else "You are kind."},
                    {"role": "user", "content": f"Question {i}?"}]}}) + "\n"
    for i in range(lines)
)
f = c.files.create(file=("in.jsonl", io.BytesIO(data.encode())), purpose="batch")
assert c.files.retrieve(f.id).bytes == len(data.encode())
b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                     completion_window="24h", metadata={"job": "sdk"})
seen = [b.status]
while b.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(0.2)
    b = c.batches.retrieve(b.id)
    if b.status != seen[-1]:
        seen.append(b.status)
out = c.files.content(b.output_file_id).text.splitlines()
listed = [x.id for x in c.batches.list(limit=5)]
print(json.dumps({"statuses": seen, "batch": b.model_dump(), "out": [json.loads(x) for x in out],
                  "listed": listed, "files": [x.id for x in c.files.list()]}))
"""


@pytest.fixture(scope="module")
def gateway_release(platform: Platform, releases: dict[str, ChartRelease]) -> ChartRelease:
    return platform.install(
        "mp-batch", "mp-batch", {"gateway.enabled": "true", "defaultAcceleratorClasses": "false"}
    )


def test_batch_api_with_the_openai_sdk_validation_and_kill_9(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    platform: Platform,
    gateway_release: ChartRelease,
    run_operator: Any,
    tmp_path: Path,
) -> None:
    custom = client.CustomObjectsApi(api)
    run_operator([namespace]).start()
    _, key = keys.create(api, namespace, description="batch test")
    data = tmp_path / "gateway-data"
    env = {
        "MODELPLANE_GATEWAY_DATA_DIR": str(data),
        "MODELPLANE_GATEWAY_DRAIN_SECONDS": "0",
        "MODELPLANE_GATEWAY_LEDGER_URL": f"sqlite:///{tmp_path}/usage.db",
    }
    gw = platform.gateway(gateway_release, PORT, **env)
    try:
        wait_for(lambda: _ready(cluster, PORT), timeout=300, what="gateway ready")
        custom.create_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments", md(namespace, "chat")
        )
        wait_for(lambda: _phase(custom, namespace, "chat") == "Ready", timeout=90, what="Ready")
        wait_for(lambda: "chat" in _models(cluster, key, PORT), timeout=10, what="route for chat")

        # ---- the openai SDK, inside the cluster's network namespace
        proc = cluster.popen_inside(
            [sys.executable, "-c", SDK, f"http://127.0.0.1:{PORT}/v1", key, "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        got = json.loads(stdout)
        batch = got["batch"]
        assert got["statuses"][0] == "validating" and got["statuses"][-1] == "completed", got
        assert batch["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
        assert batch["metadata"] == {"job": "sdk"} and batch["error_file_id"] is None
        ids = [o["custom_id"] for o in got["out"]]
        assert sorted(ids) == sorted(f"q-{i}" for i in range(40))  # each once
        assert all(
            o["response"]["status_code"] == 200
            and o["response"]["body"]["usage"]["completion_tokens"] > 0
            for o in got["out"]
        )
        assert batch["id"] in got["listed"] and batch["output_file_id"] in got["files"]

        # ---- five kinds of bad lines and one too long: failed at validating, nothing ran
        good = {"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}}  # fmt: skip
        bad_lines = [
            json.dumps(good),
            '{"custom_id": "x", "method": "POST"',
            json.dumps({k: v for k, v in good.items() if k != "custom_id"}),
            json.dumps(good),
            json.dumps({**good, "custom_id": "m", "body": {**good["body"], "model": "gpt-4o"}}),
            json.dumps({**good, "custom_id": "e", "url": "/v1/embeddings"}),
            json.dumps({**good, "custom_id": "big", "body": {**good["body"], "x": "y" * 1100000}}),
        ]
        before = _engine_tokens(cluster, api, namespace)
        fid = _upload(cluster, key, "\n".join(bad_lines).encode())
        bid = _create(cluster, key, fid)
        failed = wait_for(
            lambda: (b := _get(cluster, key, bid))["status"] != "validating" and b,
            timeout=30,
            what="validation",
        )
        assert failed["status"] == "failed" and failed["in_progress_at"] is None, failed
        errors = failed["errors"]["data"]
        assert [(e["line"], e["code"]) for e in errors] == [
            (2, "invalid_json"),
            (3, "missing_custom_id"),
            (4, "duplicate_custom_id"),
            (5, "model_not_found"),
            (6, "mismatched_endpoint"),
            (7, "line_too_large"),
        ], errors
        assert all(e["message"].startswith(f"Line {e['line']} ") for e in errors)
        assert _engine_tokens(cluster, api, namespace) == before

        # ---- kill -9 at half of a 2,000-request batch; a new gateway finishes it
        n = 2000
        lines = [
            json.dumps({**good, "custom_id": f"k-{i}", "body": {**good["body"], "max_tokens": 16,
                        "messages": [{"role": "user", "content": f"Item {i} of the list."}]}})
            for i in range(n)
        ]  # fmt: skip
        before = _engine_tokens(cluster, api, namespace)
        ledger_before = _ledger(tmp_path, namespace)
        bid = _create(cluster, key, _upload(cluster, key, "\n".join(lines).encode()))
        half = wait_for(
            lambda: (b := _get(cluster, key, bid))["request_counts"]["completed"] >= n // 2 and b,
            timeout=300,
            what="half of the batch",
        )
        gw.kill()  # SIGKILL: no drain, no finalizing, requests in flight cut off
        gw.wait(timeout=30)
        print(f"\nkilled at {half['request_counts']['completed']}/{n}")
        gw = platform.gateway(gateway_release, PORT, **env)
        wait_for(lambda: _ready(cluster, PORT), timeout=300, what="gateway ready again")
        done = wait_for(
            lambda: (b := _get(cluster, key, bid))["status"] in ("completed", "failed") and b,
            timeout=600,
            what="the batch to complete after the restart",
        )
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": n, "completed": n, "failed": 0}
        status, _, body = call(
            cluster, f"/v1/files/{done['output_file_id']}/content", key=key, port=PORT
        )
        assert status == 200
        out = [json.loads(x) for x in body.splitlines()]
        ids = [o["custom_id"] for o in out]
        assert len(ids) == n and set(ids) == {f"k-{i}" for i in range(n)}
        billed = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
        billed_out = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out)
        counted = _engine_tokens(cluster, api, namespace)
        engine_prompt = counted[0] - before[0]
        engine_out = counted[1] - before[1]
        print(
            f"output file: {billed} prompt + {billed_out} completion tokens; engine counted "
            f"{engine_prompt} + {engine_out}"
        )
        # the ledger bills each line once, as batch: what the output file says
        led = _ledger(tmp_path, namespace)
        assert (led[0] - ledger_before[0], led[1] - ledger_before[1]) == (billed, billed_out)
        # the requests cut off by the kill were counted by the engine and ran again; the
        # engine's count is the ledger's plus those (whole requests: at most the concurrency)
        rerun_prompt, rerun_out = engine_prompt - billed, engine_out - billed_out
        print(f"ledger == output file; engine counted {rerun_prompt} + {rerun_out} more")
        assert rerun_prompt >= 0 and rerun_out >= 0
        assert rerun_out <= 64 * 16  # at most the concurrency (64) x max_tokens (16)
    finally:
        gw.kill()
        gw.wait(timeout=30)


def _upload(cluster: LocalCluster, key: str, data: bytes) -> str:
    form = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--B--\r\n"
    )
    status, _, body = call(cluster, "/v1/files", key=key, raw=form, port=PORT,
                           ctype="multipart/form-data; boundary=B")  # fmt: skip
    assert status == 200, body
    return str(json.loads(body)["id"])


def _create(cluster: LocalCluster, key: str, fid: str) -> str:
    req = {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    status, _, body = call(cluster, "/v1/batches", req, key, port=PORT)
    assert status == 200, body
    return str(json.loads(body)["id"])


def _get(cluster: LocalCluster, key: str, bid: str) -> dict[str, Any]:
    status, _, body = call(cluster, f"/v1/batches/{bid}", key=key, port=PORT)
    assert status == 200, body
    obj: dict[str, Any] = json.loads(body)
    return obj


def _ledger(tmp_path: Path, namespace: str) -> tuple[int, int]:
    """(prompt, completion) tokens of the namespace's batch rows in the gateway's ledger."""
    led = open_ledger(f"sqlite:///{tmp_path}/usage.db")
    try:
        rows = [t for t in led.totals(namespace) if t.batch]
        return sum(t.prompt_tokens for t in rows), sum(t.completion_tokens for t in rows)
    finally:
        led.close()


def _engine_tokens(cluster: LocalCluster, api: Any, namespace: str) -> tuple[int, int]:
    """(prompt, generation) tokens the emulated engines of the namespace counted."""
    prompt = gen = 0
    for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items:
        if not p.status.pod_ip:
            continue
        status, text = cluster.http(p.status.pod_ip, 8000, "/metrics")
        assert status == 200
        for fam in text_string_to_metric_families(text.decode()):
            for s in fam.samples:
                if s.name == "vllm:prompt_tokens_total":
                    prompt += int(s.value)
                elif s.name == "vllm:generation_tokens_total":
                    gen += int(s.value)
    return prompt, gen
