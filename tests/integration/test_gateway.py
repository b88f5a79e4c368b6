"""`modelplane gateway` on the local cluster: the chart's gateway (its environment and its
ServiceAccount's least-privilege RBAC) run as a process inside the cluster's network namespace,
in front of the engine emulator at the model-server pods' addresses.

One OnDemand deployment is created *after* the gateway is up and asked at once: its request is
held (no Ready replica), the gateway publishes the demand annotations on the ModelDeployment,
and the request is answered once the replica is Ready; then the annotation drains to "0". Chat
by alias, streaming with usage, embeddings (TEI), a transcription (Whisper, multipart), a
FineTuned adapter routed to its base's replicas, a Serverless tenant routed to the shared
backend's replicas, API keys (wrong key 401, another namespace's key 404), /v1/models
per key, token metrics, and a hold past its limit answered 503 with Retry-After.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelplane.gateway import keys
from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.localcluster.netns import open_connection
from modelplane_testbed.platform import ChartRelease, Platform
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

PORT = 18480
PENDING = "modelplane.io/pending-requests"


class _Inside(http.client.HTTPConnection):
    def __init__(self, cluster: LocalCluster, port: int, timeout: float) -> None:
        super().__init__("127.0.0.1", port, timeout=timeout)
        self._socket = str(cluster.connect_socket)

    def connect(self) -> None:
        self.sock = open_connection(self._socket, self.host, self.port, self.timeout or 10)


def call(
    cluster: LocalCluster,
    path: str,
    body: Any = None,
    key: str | None = None,
    port: int = PORT,
    timeout: float = 30,
    raw: bytes | None = None,
    ctype: str = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to the gateway inside the cluster."""
    conn = _Inside(cluster, port, timeout)
    headers = {"Content-Type": ctype}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        conn.request("POST" if data else "GET", path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def md(
    namespace: str,
    name: str,
    catalog: str = "llama-v3p1-8b-instruct",
    engine: dict[str, Any] | None = None,
    **model: Any,
) -> dict[str, Any]:
    spec = factories.spec(
        model={"catalog": catalog, **model},
        engine=engine or {"maxContextLength": 8192},
        accelerator={"class": "nvidia-h100-80gb", "count": 1},
        replicas={"min": 1, "max": 1},
    )
    return factories.md(name, namespace, spec)


def tuned(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "tuned", "namespace": namespace},
        "spec": {
            "tier": "FineTuned",
            "base": {"deployment": "chat"},
            "adapters": [{"name": "sql", "uri": "hf://example-org/llama3-8b-sql-lora"}],
        },
    }


def serverless(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "sls", "namespace": namespace},
        "spec": {
            "tier": "Serverless",
            "model": {"catalog": "llama-v3p1-8b-instruct", "servedName": "sls-chat"},
            "engine": {"maxContextLength": 8192},
        },
    }


AUDIO = (
    b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nasr\r\n'
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\n" + b"\x00\x01" * 48000 + b"\r\n--XyZ--\r\n"
)


@pytest.fixture(scope="module")
def gateway_release(platform: Platform, releases: dict[str, ChartRelease]) -> ChartRelease:
    """The chart once more with its gateway (default classes come from the default release)."""
    return platform.install(
        "mp-gateway",
        "mp-gateway",
        {"gateway.enabled": "true", "defaultAcceleratorClasses": "false"},
    )


def test_gateway_routes_holds_meters_and_keys(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    platform: Platform,
    gateway_release: ChartRelease,
    run_operator: Any,
    tmp_path: Any,
) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    other = f"gw-other-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": other}})
    procs = []
    try:
        operator = run_operator([namespace]).start()
        _, key = keys.create(api, namespace, description="integration test")
        _, other_key = keys.create(api, other)
        ledger = f"sqlite:///{tmp_path}/usage.db"  # both replicas share one file (WAL)
        procs.append(
            platform.gateway(
                gateway_release, PORT, MODELPLANE_GATEWAY_HOLD_SECONDS="120",
                MODELPLANE_GATEWAY_LEDGER_URL=ledger,
            )
        )  # fmt: skip
        procs.append(
            platform.gateway(
                gateway_release, PORT + 10, MODELPLANE_GATEWAY_HOLD_SECONDS="2",
                MODELPLANE_GATEWAY_LEDGER_URL=ledger,
            )
        )  # fmt: skip
        for port in (PORT, PORT + 10):
            wait_for(lambda p=port: _ready(cluster, p), timeout=180, what=f"gateway :{port} ready")

        # ---- hold: the deployments are created now, so no replica is Ready when asked
        for obj in (
            md(namespace, "chat", aliases=["llama-chat"]),
            tuned(namespace),
            md(namespace, "emb", "nomic-embed-text-v1p5", {"type": "TEI"}, servedName="nomic"),
            md(namespace, "asr", "whisper-v3-turbo", {"maxContextLength": 448}),
            serverless(namespace),
        ):
            custom.create_namespaced_custom_object(
                "modelplane.io", "v1alpha1", namespace, "modeldeployments", obj
            )
        chat = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}]}
        wait_for(lambda: "chat" in _models(cluster, key), timeout=10, what="route for chat")
        held: dict[str, Any] = {}
        asked = time.monotonic()

        def ask() -> None:
            held["answer"] = call(cluster, "/v1/chat/completions", chat, key, timeout=150)
            held["after"] = time.monotonic() - asked

        t = threading.Thread(target=ask, daemon=True)
        t.start()
        annotations = wait_for(
            lambda: (a := _annotations(custom, namespace)).get(PENDING, "0") != "0" and a,
            timeout=15,
            what="the demand annotation while the request is held",
        )
        assert int(annotations[PENDING]) >= 1
        assert annotations["modelplane.io/pending-requests-at"].endswith("Z")
        t.join(timeout=150)
        status, _, body = held["answer"]
        if status != 200:
            obj = custom.get_namespaced_custom_object(
                "modelplane.io", "v1alpha1", namespace, "modeldeployments", "chat"
            )
            pods = core.list_namespaced_pod(namespace).items
            print(json.dumps(obj.get("status"), indent=1)[:3000])
            for p in pods:
                print(p.metadata.name, p.metadata.labels, p.status.pod_ip, p.status.conditions)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["usage"]["prompt_tokens"] > 0 and answer["usage"]["completion_tokens"] > 0
        print(f"\nheld request answered after {held['after']:.1f}s (replica became Ready)")
        wait_for(
            lambda: _annotations(custom, namespace).get(PENDING) == "0",
            timeout=15,
            what='the demand annotation back to "0"',
        )

        # ---- routing by alias, streaming with usage
        status, _, body = call(
            cluster, "/v1/chat/completions", {**chat, "model": "llama-chat"}, key
        )
        assert status == 200, body
        stream = {**chat, "stream": True, "stream_options": {"include_usage": True}}
        status, headers, body = call(cluster, "/v1/chat/completions", stream, key)
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        events = [e for e in body.decode().split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        last = json.loads(events[-2].removeprefix("data: "))
        assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
        status, _, body = call(cluster, "/v1/chat/completions", {**chat, "stream": True}, key)
        assert status == 200 and b'"usage"' not in body  # not asked for: not passed on
        status, _, body = call(
            cluster, "/v1/completions", {"model": "chat", "prompt": "Once", "max_tokens": 8}, key
        )
        assert status == 200, body

        # ---- embeddings (TEI), transcription (Whisper, multipart), a FineTuned adapter
        for name in ("emb", "asr", "tuned", "sls"):
            wait_for(
                lambda n=name: _phase(custom, namespace, n) == "Ready",
                timeout=60,
                what=f"{name} Ready",
            )
        status, _, body = call(cluster, "/v1/embeddings", {"model": "nomic", "input": "hi"}, key)
        assert status == 200 and json.loads(body)["usage"]["prompt_tokens"] > 0, body
        status, _, body = call(
            cluster, "/v1/audio/transcriptions", key=key, raw=AUDIO,
            ctype="multipart/form-data; boundary=XyZ",
        )  # fmt: skip
        assert status == 200 and json.loads(body)["usage"]["type"] == "duration", body
        status, _, body = call(
            cluster, "/v1/chat/completions", {**chat, "model": "tuned--sql"}, key
        )
        assert status == 200 and json.loads(body)["model"] == "tuned--sql", body
        # a Serverless tenant: its name goes to the shared backend's pods (status.backend)
        backend = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments", "sls"
        )["status"]["backend"]
        assert not backend.startswith(f"{namespace}/")
        status, _, body = call(cluster, "/v1/chat/completions", {**chat, "model": "sls-chat"}, key)
        assert status == 200 and json.loads(body)["model"] == "sls-chat", body

        # ---- keys
        status, _, body = call(cluster, "/v1/chat/completions", chat, key[:-4] + "AAAA")
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        assert key[:-4] not in body.decode()
        status, _, body = call(cluster, "/v1/chat/completions", chat)
        assert status == 401 and "modelplane keys create" in body.decode()
        status, _, body = call(cluster, "/v1/chat/completions", chat, other_key)
        err = json.loads(body)["error"]
        assert status == 404 and err["code"] == "model_not_found", err
        assert _models(cluster, other_key) == []
        assert _models(cluster, key) == [
            "asr", "chat", "llama-chat", "nomic", "sls-chat", "tuned--sql",
        ]  # fmt: skip
        status, _, body = call(cluster, "/v1/chat/completions", {**chat, "model": "chta"}, key)
        assert status == 404 and "Did you mean chat" in body.decode()

        # ---- metering: tokens per namespace/model/key from the engines' usage
        status, metrics = cluster.http("127.0.0.1", PORT + 1, "/metrics")
        samples = {
            (x.name, tuple(sorted(x.labels.items()))): x.value
            for fam in text_string_to_metric_families(metrics.decode())
            for x in fam.samples
        }

        def total(name: str, **labels: str) -> float:
            return sum(
                v
                for (n, ls), v in samples.items()
                if n == name and labels.items() <= dict(ls).items()
            )

        tokens = "modelplane_gateway_tokens_total"
        assert total(tokens, namespace=namespace, model="chat", kind="prompt") > 0
        assert total(tokens, namespace=namespace, model="llama-chat", kind="completion") > 0
        assert total("modelplane_gateway_requests_total", namespace=namespace, code="200") == 9
        assert total("modelplane_gateway_audio_seconds_total", namespace=namespace) > 0
        assert total("modelplane_gateway_auth_failures_total") == 2

        # ---- a hold past its limit: 503 with Retry-After. The operator is stopped first, so
        # nothing can make the new deployment Ready within the hold (no race with start-up).
        operator.stop()
        custom.create_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments",
            md(namespace, "later", servedName="later-model"),
        )  # fmt: skip
        wait_for(
            lambda: "later-model" in _models(cluster, key, PORT + 10),
            timeout=10,
            what="route for later-model",
        )
        status, headers, body = call(
            cluster, "/v1/chat/completions", {**chat, "model": "later-model"}, key, PORT + 10
        )
        assert status == 503 and headers.get("retry-after") == "10", (status, body)
        assert json.loads(body)["error"]["code"] == "model_not_ready"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        core.delete_namespace(other)


def _ready(cluster: LocalCluster, port: int) -> bool:
    try:
        return cluster.http("127.0.0.1", port, "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def _models(cluster: LocalCluster, key: str, port: int = PORT) -> list[str]:
    status, _, body = call(cluster, "/v1/models", key=key, port=port)
    assert status == 200, body
    return [m["id"] for m in json.loads(body)["data"]]


def _phase(custom: Any, namespace: str, name: str) -> str | None:
    obj = custom.get_namespaced_custom_object(
        "modelplane.io", "v1alpha1", namespace, "modeldeployments", name
    )
    phase: str | None = (obj.get("status") or {}).get("phase")
    return phase


def _annotations(custom: Any, namespace: str) -> dict[str, str]:
    obj = custom.get_namespaced_custom_object(
        "modelplane.io", "v1alpha1", namespace, "modeldeployments", "chat"
    )
    return dict(obj["metadata"].get("annotations") or {})
