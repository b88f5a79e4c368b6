"""Issue 11's findings, one test each (each failed before the engine contract)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from modelplane.adapters.autoscaler import PodMetricsSource, PodState, Target
from modelplane.adapters.lora import EngineError, HttpEngine
from modelplane.api.enums import EngineType
from modelplane.autoscaling.metrics import FleetCollector, parse_engine_metrics
from modelplane.catalog.engines import SGLANG, TEI, VLLM
from modelplane.commands import render_documents
from modelplane_testbed.emulator.pods import Engine, refusal
from modelplane_testbed.engine_args import check_args, defs_for


def render(spec: dict[str, Any], name: str = "x") -> list[dict[str, Any]]:
    doc = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "m"},
        "spec": spec,
    }
    return render_documents([doc], "static")


def server(objs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = next(o for o in objs if o["kind"] == "Deployment")
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def refused(spec: dict[str, Any]) -> str:
    with pytest.raises(SystemExit) as e:
        render(spec)
    return str(e.value)


def test_tei_runs_the_per_architecture_image_whose_binary_the_command_names() -> None:
    c = server(
        render(
            {
                "tier": "OnDemand",
                "model": {"catalog": "nomic-embed-text-v1p5"},
                "task": "Embedding",
                "engine": {"type": "TEI"},
                "accelerator": {"class": "nvidia-h100-80gb", "count": 1},
            }
        )
    )
    assert c["image"] == "ghcr.io/huggingface/text-embeddings-inference:hopper-1.9.3"
    assert c["command"] == ["text-embeddings-router"]
    assert refusal(c, Engine.TEI, c["args"]) is None
    # TEI gets a served name, so responses carry it rather than the Hugging Face id.
    assert c["args"][c["args"].index("--served-model-name") + 1] == "x"


def test_sglang_gets_one_served_name() -> None:
    c = server(
        render(
            {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p1-8b-instruct", "aliases": ["a", "b"]},
                "engine": {"type": "SGLang"},
            }
        )
    )
    i = c["args"].index("--served-model-name")
    assert c["args"][i + 1] == "x" and c["args"][i + 2].startswith("--")
    assert check_args(defs_for(EngineType.SGLANG), c["args"]) == []


def test_sglang_lora_without_initial_adapters_names_its_target_modules() -> None:
    c = server(
        render(
            {
                "tier": "FineTuned",
                "base": {"catalog": "llama-v3p1-8b-instruct"},
                "adapters": [{"name": "sql", "uri": "hf://org/sql"}],
                "engine": {"type": "SGLang"},
            }
        )
    )
    args = c["args"]
    assert "--enable-lora" in args and args[args.index("--lora-target-modules") + 1] == "all"
    assert args[args.index("--max-lora-rank") + 1] == "64"
    assert check_args(defs_for(EngineType.SGLANG), args) == []
    bare = [a for a in args if a not in ("--lora-target-modules", "all")]
    assert "AssertionError" in check_args(defs_for(EngineType.SGLANG), bare)[0]


def test_vllm_lora_rank_outside_its_choices_is_refused_with_the_fix() -> None:
    msg = refused(
        {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-8b-instruct"},
            "engine": {"lora": {"maxRank": 48}},
        }
    )
    assert "EngineOptionUnsupported" in msg and "engine.lora.maxRank 48" in msg
    assert "set maxRank: 64" in msg


def test_llama_405b_fp8_checkpoint_is_allowed_its_deprecated_method() -> None:
    c = server(render({"tier": "OnDemand", "model": {"catalog": "llama-v3p1-405b-instruct"}}))
    assert "--allow-deprecated-quantization" in c["args"]
    without = [a for a in c["args"] if a != "--allow-deprecated-quantization"]
    errors = check_args(defs_for(EngineType.VLLM), without, checkpoint_quantization="fbgemm_fp8")
    assert "--allow-deprecated-quantization" in errors[0]


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self._answer("GET", {"data": [{"id": "ft--a", "parent": "base"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.path != "/unload_lora_adapter"
        self._answer("POST", {"success": ok, "error_message": None if ok else "not loaded"})

    def _answer(self, method: str, body: Any) -> None:
        type(self).seen.append((method, self.path))
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    srv = HTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Recorder.seen = []
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_the_lora_loop_calls_each_engines_own_routes(recorder: int) -> None:
    pod = SimpleNamespace(status=SimpleNamespace(pod_ip="127.0.0.1"))
    api = HttpEngine(port=recorder)
    assert api.loaded("m", pod, SGLANG) == {"ft--a"}
    api.load("m", pod, "ft--a", "org/a", SGLANG)
    api.load("m", pod, "ft--a", "org/a", VLLM)
    with pytest.raises(EngineError, match="not loaded"):  # SGLang: 200 with success false
        api.unload("m", pod, "ft--a", SGLANG)
    assert _Recorder.seen == [
        ("GET", "/v1/models"),
        ("POST", "/load_lora_adapter"),
        ("POST", "/v1/load_lora_adapter"),
        ("POST", "/unload_lora_adapter"),
    ]


SGLANG_TEXT = """\
sglang:num_running_reqs{model_name="m"} 3
sglang:num_queue_reqs{model_name="m"} 2
sglang:token_usage{model_name="m"} 0.5
sglang:prompt_tokens_total{model_name="m"} 100
sglang:generation_tokens_total{model_name="m"} 40
sglang:num_requests_total{model_name="m",is_streaming="false"} 7
"""
TEI_TEXT = """\
te_queue_size 4
te_request_success{method="single"} 9
te_request_count{method="single"} 9
"""


def test_metric_parsers_read_each_engines_own_names() -> None:
    s = parse_engine_metrics(SGLANG_TEXT, 1.0, SGLANG.metrics)
    assert (s.running, s.waiting, s.kv_cache_usage, s.request_success_total) == (3, 2, 0.5, 7)
    t = parse_engine_metrics(TEI_TEXT, 1.0, TEI.metrics)
    assert (t.running, t.waiting, t.request_success_total) == (0, 4, 9)
    assert "te_batch_current_size" not in TEI.metrics.all_names


def test_unreadable_metrics_are_handled_per_pod() -> None:
    fleet = FleetCollector(names=SGLANG.metrics)
    sample = fleet.observe({"a": SGLANG_TEXT, "b": "garbage {{{"}, 1.0)
    assert sample.ready_replicas == 1 and "b" in fleet.errors
    with pytest.raises(ValueError, match="no readable /metrics"):
        FleetCollector(names=TEI.metrics).observe({"a": SGLANG_TEXT}, 1.0)


def test_the_autoscaler_scrapes_an_sglang_target_with_sglang_names() -> None:
    class Source(PodMetricsSource):
        def _text(self, target: Target, pod: PodState) -> str:
            return SGLANG_TEXT

    pods = [PodState("p", "10.0.0.1", True, True)]
    got = Source().collect(Target("m", "x", EngineType.SGLANG), pods, 1.0)
    assert got.sample.concurrent_requests == 5 and got.in_flight == {"p": 5}


def test_sglang_pipeline_parallelism_is_rendered_and_speculation_refused() -> None:
    c = server(
        render(
            {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p3-70b-instruct"},
                "engine": {"type": "SGLang", "tensorParallelSize": 2, "pipelineParallelSize": 2},
                "accelerator": {"class": "nvidia-h100-80gb", "count": 4},
            }
        )
    )
    a = c["args"]
    assert a[a.index("--tp-size") + 1] == "2" and a[a.index("--pp-size") + 1] == "2"
    msg = refused(
        {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-8b-instruct", "servedName": "s"},
            "engine": {"type": "SGLang", "speculativeDecoding": {"mode": "NGram"}},
        }
    )
    assert "engine.speculativeDecoding" in msg and "use engine type VLLM" in msg


def test_structured_outputs_false_is_honoured_or_refused() -> None:
    c = server(
        render(
            {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p1-8b-instruct"},
                "engine": {"type": "SGLang", "structuredOutputs": False},
            }
        )
    )
    assert c["args"][c["args"].index("--grammar-backend") + 1] == "none"
    msg = refused(
        {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-8b-instruct"},
            "engine": {"structuredOutputs": False},
        }
    )
    assert "engine.structuredOutputs false" in msg and "EngineOptionUnsupported" in msg


def test_online_fp8_and_ngram_window() -> None:
    c = server(
        render(
            {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p1-8b-instruct"},
                "engine": {"precision": "FP8", "speculativeDecoding": {"mode": "NGram"}},
            }
        )
    )
    a = c["args"]
    assert a[a.index("--quantization") + 1] == "fp8_per_tensor"
    cfg = json.loads(a[a.index("--speculative-config") + 1])
    assert (cfg["prompt_lookup_min"], cfg["prompt_lookup_max"]) == (2, 4)


def test_whisper_runs_the_image_with_the_audio_extra() -> None:
    c = server(render({"tier": "OnDemand", "model": {"catalog": "whisper-v3-turbo"}}))
    assert c["image"] == VLLM.extra_images["audio"]
    assert refusal(c, Engine.VLLM, c["args"]) is None
    stock = {**c, "image": VLLM.image}
    assert "vllm[audio]" in (refusal(stock, Engine.VLLM, c["args"]) or "")
