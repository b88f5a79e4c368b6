"""Model-server engines as data: images, ports, probe paths, metric names and flag spellings.

The builders turn a ModelDeployment into container args; this module only says *how each engine
spells things*, so that layer stays a pure function of (spec, catalog entry, profile).

Sources (the engines' own documentation and source, checked Aug 2026):
* vLLM 0.33.0 (latest on PyPI): ``vllm serve <model>`` with the model positional (``--model`` is
  deprecated for ``serve``), port 8000, ``/health`` (503 when the engine is dead), ``/metrics``
  on the same port, ``--runner pooling`` for embeddings (``--task`` is rejected since 0.13),
  ``--limit-mm-per-prompt`` as JSON, ``--speculative-config`` as JSON, ``--shutdown-timeout``
  since 0.18, LoRA ranks 1/8/16/32/64/128/256/320/512.
* SGLang 0.5.23 (latest on PyPI): ``python3 -m sglang.launch_server --model-path``; it binds
  127.0.0.1 and port 30000 unless told otherwise, so we always pass ``--host`` and ``--port``;
  metrics need ``--enable-metrics``; its ``/health`` runs a one-token generation.
* TEI 1.9.3: ``text-embeddings-router --model-id``; the image sets PORT=80 and
  HUGGINGFACE_HUB_CACHE=/data, and ``--hostname`` falls back to the HOSTNAME env var (the pod
  name in Kubernetes), so both are passed explicitly. Metric names (``te_`` prefix) ⚠ are from
  the router source, not re-verified for 1.9.

Images are pinned by release tag; no digest was recorded in the notes, so the chart should
resolve and pin ``image@sha256`` at release time. The vLLM image ships without optional extras:
Whisper needs an image built ``FROM vllm/vllm-openai:v0.33.0`` with ``vllm[audio]==0.33.0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from modelplane.api.enums import EngineType, Precision, SpeculativeMode, Task

__all__ = [
    "ENGINES",
    "LISTEN_HOST",
    "SERVING_PORT",
    "SGLANG",
    "TEI",
    "VLLM",
    "EngineMetrics",
    "EngineProfile",
    "engine_profile",
]

#: Every engine is told to listen here, so Services and probes never differ per engine.
SERVING_PORT = 8000
LISTEN_HOST = "0.0.0.0"


@dataclass(frozen=True)
class EngineMetrics:
    """Prometheus series the autoscaler and dashboards read (label `model_label`)."""

    running_requests: str
    waiting_requests: str
    kv_cache_usage: str | None  # 0..1
    prompt_tokens_total: str | None
    generation_tokens_total: str | None
    time_to_first_token_seconds: str | None
    inter_token_latency_seconds: str | None
    model_label: str | None = "model_name"


@dataclass(frozen=True)
class EngineProfile:
    """How one engine is started and spelled. `None` flag = the engine has no such option."""

    engine: EngineType
    image: str
    image_notes: str
    command: tuple[str, ...]
    tasks: frozenset[Task]
    metrics: EngineMetrics
    # Listening and probes
    host_flag: str
    port_flag: str
    port: int = SERVING_PORT
    host: str = LISTEN_HOST
    health_path: str = "/health"  # liveness
    readiness_path: str = "/health"
    metrics_path: str = "/metrics"  # served on `port`
    metrics_enable_args: tuple[str, ...] = ()
    # Model source
    model_flag: str | None = None  # None: the model is the first positional argument
    revision_flag: str | None = "--revision"
    served_model_name_flag: str = "--served-model-name"
    download_dir_flag: str | None = None
    cache_env: str = "HF_HOME"  # where the Hugging Face cache lives (mount a volume here)
    hf_token_env: str = "HF_TOKEN"
    trust_remote_code_flag: str | None = None
    api_key_flag: str | None = "--api-key"
    # Parallelism, context, memory
    tensor_parallel_flag: str | None = None
    max_model_len_flag: str | None = None
    gpu_memory_utilization_flag: str | None = None
    # Precision: dtype per precision; quantization applied while loading a higher-precision
    # checkpoint (see CatalogModel.needs_online_quantization); pre-quantized ones need nothing.
    dtype_flag: str | None = "--dtype"
    dtype_values: Mapping[Precision, str] = field(default_factory=dict, hash=False)
    quantization_flag: str | None = None
    online_quantization: Mapping[Precision, str] = field(default_factory=dict, hash=False)
    kv_cache_dtype_flag: str | None = None
    kv_cache_fp8_value: str | None = None
    # Tool calling and chat templates
    tool_choice_args: tuple[str, ...] = ()  # emitted before the parser flag
    tool_call_parser_flag: str | None = None
    tool_call_parsers: frozenset[str] = frozenset()
    chat_template_flag: str | None = None
    # Embeddings
    embedding_args: tuple[str, ...] = ()
    pooling_flag: str | None = None
    # LoRA
    lora_enable_args: tuple[str, ...] = ()
    max_loras_flag: str | None = None
    max_lora_rank_flag: str | None = None
    lora_ranks: tuple[int, ...] = ()
    lora_modules_flag: str | None = None
    runtime_lora_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    lora_load_path: str | None = None  # POST body {"lora_name", "lora_path"}
    lora_unload_path: str | None = None
    # Speculative decoding: one JSON flag, `method` per SpeculativeMode
    speculative_config_flag: str | None = None
    speculative_methods: Mapping[SpeculativeMode, str] = field(default_factory=dict, hash=False)
    # Multimodal
    mm_limits_flag: str | None = None  # value: CatalogModel.mm_limits_json
    # Lifecycle
    shutdown_timeout_flag: str | None = None
    dev_shm_gib: int = 0  # size of the memory-backed /dev/shm emptyDir; 0 = none needed

    def __post_init__(self) -> None:
        # Freeze the tables so a shared profile cannot be mutated by a caller.
        for name in (
            "dtype_values",
            "online_quantization",
            "runtime_lora_env",
            "speculative_methods",
        ):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    @property
    def supports_tensor_parallel(self) -> bool:
        return self.tensor_parallel_flag is not None

    @property
    def supports_lora(self) -> bool:
        return bool(self.lora_enable_args)


_VLLM_VERSION = "0.33.0"

VLLM = EngineProfile(
    engine=EngineType.VLLM,
    image=f"vllm/vllm-openai:v{_VLLM_VERSION}",
    image_notes="Pinned by release tag (latest PyPI release in the notes); pin the digest at "
    "chart release. Whisper needs an image with the `vllm[audio]` extra on top of this tag.",
    command=("vllm", "serve"),
    tasks=frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING, Task.TRANSCRIPTION}),
    metrics=EngineMetrics(
        running_requests="vllm:num_requests_running",
        waiting_requests="vllm:num_requests_waiting",
        kv_cache_usage="vllm:kv_cache_usage_perc",
        prompt_tokens_total="vllm:prompt_tokens_total",
        generation_tokens_total="vllm:generation_tokens_total",
        time_to_first_token_seconds="vllm:time_to_first_token_seconds",
        inter_token_latency_seconds="vllm:inter_token_latency_seconds",
    ),
    host_flag="--host",
    port_flag="--port",
    model_flag=None,
    download_dir_flag="--download-dir",
    trust_remote_code_flag="--trust-remote-code",
    tensor_parallel_flag="--tensor-parallel-size",
    max_model_len_flag="--max-model-len",
    gpu_memory_utilization_flag="--gpu-memory-utilization",
    dtype_values={Precision.BF16: "bfloat16", Precision.FP16: "float16"},
    quantization_flag="--quantization",
    online_quantization={Precision.FP8: "fp8"},
    kv_cache_dtype_flag="--kv-cache-dtype",
    kv_cache_fp8_value="fp8",
    tool_choice_args=("--enable-auto-tool-choice",),
    tool_call_parser_flag="--tool-call-parser",
    tool_call_parsers=frozenset(
        {
            "llama3_json",
            "llama4_pythonic",
            "hermes",
            "mistral",
            "deepseek_v3",
            "deepseek_v31",
            "deepseek_v32",
            "qwen3_xml",
            "qwen3_coder",
            "openai",
            "pythonic",
            "granite",
            "granite4",
            "internlm",
            "jamba",
            "kimi_k2",
            "glm45",
            "glm47",
            "xlam",
            "phi4_mini_json",
            "minimax_m2",
            "olmo3",
            "gemma4",
        }
    ),
    chat_template_flag="--chat-template",
    embedding_args=("--runner", "pooling"),
    lora_enable_args=("--enable-lora",),
    max_loras_flag="--max-loras",
    max_lora_rank_flag="--max-lora-rank",
    lora_ranks=(1, 8, 16, 32, 64, 128, 256, 320, 512),
    lora_modules_flag="--lora-modules",
    runtime_lora_env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    lora_load_path="/v1/load_lora_adapter",
    lora_unload_path="/v1/unload_lora_adapter",
    speculative_config_flag="--speculative-config",
    speculative_methods={
        SpeculativeMode.DRAFT_MODEL: "draft_model",
        SpeculativeMode.NGRAM: "ngram",
    },
    mm_limits_flag="--limit-mm-per-prompt",
    shutdown_timeout_flag="--shutdown-timeout",
    dev_shm_gib=2,
)

SGLANG = EngineProfile(
    engine=EngineType.SGLANG,
    image="lmsysorg/sglang:v0.5.23",
    image_notes="Release tag matching the latest PyPI version in the notes (⚠ CUDA-suffixed "
    "variants such as -cu129 also exist); pin the digest at chart release.",
    command=("python3", "-m", "sglang.launch_server"),
    tasks=frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING}),
    metrics=EngineMetrics(
        running_requests="sglang:num_running_reqs",
        waiting_requests="sglang:num_queue_reqs",
        kv_cache_usage="sglang:token_usage",
        prompt_tokens_total="sglang:prompt_tokens_total",
        generation_tokens_total="sglang:generation_tokens_total",
        time_to_first_token_seconds="sglang:time_to_first_token_seconds",
        inter_token_latency_seconds="sglang:inter_token_latency_seconds",
    ),
    host_flag="--host",
    port_flag="--port",
    metrics_enable_args=("--enable-metrics",),
    model_flag="--model-path",
    download_dir_flag="--download-dir",
    trust_remote_code_flag="--trust-remote-code",
    tensor_parallel_flag="--tp-size",
    max_model_len_flag="--context-length",
    gpu_memory_utilization_flag="--mem-fraction-static",
    dtype_values={Precision.BF16: "bfloat16", Precision.FP16: "float16"},
    quantization_flag="--quantization",
    online_quantization={Precision.FP8: "fp8"},
    kv_cache_dtype_flag="--kv-cache-dtype",
    kv_cache_fp8_value="fp8_e4m3",
    tool_call_parser_flag="--tool-call-parser",
    tool_call_parsers=frozenset(
        {
            "llama3",
            "qwen25",
            "qwen",
            "mistral",
            "deepseekv3",
            "deepseekv31",
            "deepseekv32",
            "hermes",
            "qwen3_coder",
            "gpt-oss",
            "kimi_k2",
            "pythonic",
            "glm45",
            "glm47",
        }
    ),
    chat_template_flag="--chat-template",
    embedding_args=("--is-embedding",),
    lora_enable_args=("--enable-lora",),
    max_loras_flag="--max-loras-per-batch",
    max_lora_rank_flag="--max-lora-rank",
    lora_modules_flag="--lora-paths",
    lora_load_path="/load_lora_adapter",
    lora_unload_path="/unload_lora_adapter",
    dev_shm_gib=32,
)

TEI = EngineProfile(
    engine=EngineType.TEI,
    image="ghcr.io/huggingface/text-embeddings-inference:cuda-1.9.3",
    image_notes="Multi-arch CUDA image; per-architecture tags (86-1.9 for A10G, 89-1.9 for "
    "L4/L40S, hopper-1.9 for H100/H200) start faster. Pin the digest at chart release.",
    command=("text-embeddings-router",),
    tasks=frozenset({Task.EMBEDDING}),
    metrics=EngineMetrics(
        running_requests="te_batch_current_size",
        waiting_requests="te_queue_size",
        kv_cache_usage=None,
        prompt_tokens_total=None,
        generation_tokens_total=None,
        time_to_first_token_seconds=None,
        inter_token_latency_seconds=None,
        model_label=None,
    ),
    host_flag="--hostname",
    port_flag="--port",
    model_flag="--model-id",
    download_dir_flag="--huggingface-hub-cache",
    cache_env="HUGGINGFACE_HUB_CACHE",
    dtype_values={Precision.FP16: "float16"},
    pooling_flag="--pooling",
)

ENGINES: Mapping[EngineType, EngineProfile] = MappingProxyType(
    {p.engine: p for p in (VLLM, SGLANG, TEI)}
)


def engine_profile(engine: EngineType) -> EngineProfile:
    """The profile of `engine`; KeyError names the known engines."""
    try:
        return ENGINES[engine]
    except KeyError:
        known = ", ".join(e.value for e in ENGINES)
        raise KeyError(f"unknown engine {engine!r}; known: {known}") from None
