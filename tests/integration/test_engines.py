"""Every engine on the local cluster, under the engine contract (issue 11).

The engine emulator runs each pod with its engine's own argument definitions (read from the
released vLLM / SGLang code, TEI's pinned table), routes and metric names, so a pod the real
engine would refuse never gets Ready here either. In one test, in parallel: a TEI embeddings
deployment, an SGLang Serverless backend with two tenants, an SGLang base with a FineTuned
deployment on it, and a Whisper deployment all become Ready, scale out on their own engine's
metrics, and the FineTuned adapters are loaded through SGLang's routes. Then a spec asking for
what an engine cannot do is refused with the field and the fix (CEL, and the status reason
when the catalog picks the engine).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelplane_testbed import factories
from modelplane_testbed.localcluster import LocalCluster
from modelplane_testbed.platform import ChartRelease, accelerator_classes_yaml
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

FAST = {"scaleUpWindow": "5s", "scaleDownWindow": "5m"}


def md(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return factories.md(name, ns, spec)


def on_demand(ns: str, name: str, catalog: str, engine: dict[str, Any], **extra: Any) -> Any:
    return md(
        ns,
        name,
        {
            "tier": "OnDemand",
            "model": {"catalog": catalog},
            "engine": engine,
            "accelerator": {"class": "nvidia-h100-80gb", "count": 1},
            "replicas": {"min": 1, "max": 3},
            "autoscaling": {**FAST, "loadTargets": {"concurrentRequests": 4}},
            **extra,
        },
    )


def test_every_engine_serves_scales_and_loads_adapters(
    cluster: LocalCluster,
    api: Any,
    namespace: str,
    run_operator: Any,
    releases: dict[str, ChartRelease],
    control: Any,
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=accelerator_classes_yaml())
    ns, opns = namespace, releases["default"].namespace
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def status(name: str) -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            "modelplane.io", "v1alpha1", ns, "modeldeployments", name
        )
        st: dict[str, Any] = obj.get("status") or {}
        return st

    def replicas(namespace: str, name: str) -> int:
        return int(apps.read_namespaced_deployment(name, namespace).spec.replicas or 0)

    docs = [
        on_demand(ns, "emb", "nomic-embed-text-v1p5", {"type": "TEI"}, task="Embedding"),
        on_demand(ns, "asr", "whisper-v3-turbo", {"maxContextLength": 448}),
        on_demand(
            ns, "sgl", "llama-v3p1-8b-instruct", {"type": "SGLang", "maxContextLength": 8192}
        ),
        md(
            ns,
            "tuned",
            {
                "tier": "FineTuned",
                "base": {"deployment": "sgl"},
                "adapters": [
                    {"name": "sql", "uri": "hf://example-org/llama3-8b-sql-lora"},
                    {"name": "chat", "uri": "hf://example-org/llama3-8b-chat-lora"},
                ],
            },
        ),
        *(
            md(
                ns,
                f"tenant{i}",
                {
                    "tier": "Serverless",
                    "model": {"catalog": "llama-v3p1-8b-instruct", "aliases": [f"alias{i}"]},
                    "engine": {"type": "SGLang", "maxContextLength": 8192},
                    "autoscaling": {**FAST, "loadTargets": {"concurrentRequests": 4}},
                },
            )
            for i in (1, 2)
        ),
    ]
    with run_operator([ns], values={"autoscalerIntervalSeconds": "2"}):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        names = ("emb", "asr", "sgl", "tuned", "tenant1", "tenant2")
        wait_for(
            lambda: all(status(n).get("phase") == "Ready" for n in names),
            timeout=240,
            interval=2,
            what="TEI, Whisper, SGLang base, FineTuned and both Serverless tenants Ready",
        )
        # What the engines were given is what they accept (the emulator started them).
        emb = apps.read_namespaced_deployment("emb", ns).spec.template.spec.containers[0]
        assert emb.image.endswith(":hopper-1.9.3") and emb.command == ["text-embeddings-router"]
        asr = apps.read_namespaced_deployment("asr", ns).spec.template.spec.containers[0]
        assert "audio" in asr.image
        backend = status("tenant1")["backend"].split("/", 1)[1]
        assert status("tenant2")["backend"] == status("tenant1")["backend"]
        bargs = apps.read_namespaced_deployment(backend, opns).spec.template.spec.containers[0].args
        i = bargs.index("--served-model-name")
        assert bargs[i + 2].startswith("--")  # SGLang takes one name; tenants resolve in front
        for p in control.get("/pods"):
            if p["namespace"] in (ns, opns) and p.get("error"):
                pytest.fail(f"the emulator refused {p['name']}: {p['error']}")

        # Adapters through SGLang's own routes (/load_lora_adapter), listed by /v1/models.
        def adapters() -> set[str]:
            pods = core.list_namespaced_pod(ns, label_selector="modelplane.io/deployment=sgl")
            out: set[str] = set()
            for p in pods.items:
                if p.status.pod_ip:
                    code, raw = cluster.http(p.status.pod_ip, 8000, "/v1/models")
                    if code == 200:
                        out |= {m["id"] for m in json.loads(raw)["data"] if m.get("parent")}
            return out

        wait_for(
            lambda: adapters() == {"tuned--sql", "tuned--chat"}, timeout=60, what="adapters loaded"
        )
        sgl_pod = core.list_namespaced_pod(ns, label_selector="modelplane.io/deployment=sgl")
        code, body = cluster.http(sgl_pod.items[0].status.pod_ip, 8000, "/metrics")
        raw = body.decode()
        assert code == 200 and "sglang:num_running_reqs" in raw
        tei_pod = core.list_namespaced_pod(ns, label_selector="modelplane.io/deployment=emb")
        code, body = cluster.http(tei_pod.items[0].status.pod_ip, 8000, "/metrics")
        raw = body.decode()
        assert code == 200 and "te_queue_size" in raw and "te_batch_current_size" not in raw

        # Load on each: every one scales out on its own engine's metrics.
        load = {"requestsPerSecond": 30, "promptTokens": 400, "outputTokens": 300}
        for name in ("emb", "asr", "sgl", "tenant1"):
            control.put(f"/load/{ns}/{name}", load)
        wait_for(
            lambda: (
                replicas(ns, "emb") >= 2
                and replicas(ns, "asr") >= 2
                and replicas(ns, "sgl") >= 2
                and replicas(opns, backend) >= 2
            ),
            timeout=180,
            interval=2,
            what="TEI, Whisper, SGLang base and the SGLang Serverless backend scaled out",
        )
        for name in ("emb", "asr", "sgl", "tenant1"):
            control.put(f"/load/{ns}/{name}", {"requestsPerSecond": 0})
        # The new SGLang replicas get the adapters too.
        wait_for(lambda: adapters() == {"tuned--sql", "tuned--chat"}, timeout=60, what="adapters")

        # A catalog model whose engine is SGLang, asked for speculative decoding: the operator
        # refuses it, naming the field and the fix.
        vision = md(
            ns,
            "vision",
            {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p2-11b-vision-instruct"},
                "engine": {"speculativeDecoding": {"mode": "NGram"}},
            },
        )
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(vision))

        def refused() -> dict[str, Any] | None:
            ready = next(
                (c for c in status("vision").get("conditions", []) if c["type"] == "Ready"), {}
            )
            return ready if ready.get("reason") == "EngineOptionUnsupported" else None

        ready = wait_for(refused, timeout=60, what="EngineOptionUnsupported")
        assert "engine.speculativeDecoding" in ready["message"]
        assert "use engine type VLLM" in ready["message"]

    # CEL: the apiserver refuses what it can know (engine.type names the engine).
    bad = [
        (
            {"type": "SGLang", "speculativeDecoding": {"mode": "NGram"}},
            "engine.speculativeDecoding is not supported on SGLang",
        ),
        ({"type": "VLLM", "structuredOutputs": False}, "vLLM cannot turn structured outputs off"),
        ({"type": "VLLM", "lora": {"maxRank": 48}}, "engine.lora.maxRank must be a rank vLLM"),
        ({"type": "TEI", "lora": {}}, "TEI runs one embedding model per GPU"),
    ]
    for engine, message in bad:
        doc = md(
            ns,
            "bad",
            {"tier": "OnDemand", "model": {"catalog": "llama-v3p1-8b-instruct"}, "engine": engine},
        )
        with pytest.raises(ApiException) as exc:
            custom.create_namespaced_custom_object(
                "modelplane.io", "v1alpha1", ns, "modeldeployments", doc
            )
        assert exc.value.status in (400, 422) and message in str(exc.value.body), exc.value.body
