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
    "VLLM_LORA_RANKS",
    "EngineMetrics",
    "EngineProfile",
    "Flag",
    "engine_profile",
]

#: Every engine is told to listen here, so Services and probes never differ per engine.
SERVING_PORT = 8000
LISTEN_HOST = "0.0.0.0"


@dataclass(frozen=True)
class EngineMetrics:
    """Prometheus sample names (as exposed: counters end in ``_total``) the autoscaler reads.

    ``None``: the engine has no such series (TEI has no running-requests gauge, no KV cache and
    no token counters). Every name is checked against the engine's source by the contract test.
    """

    running_requests: str | None
    waiting_requests: str
    requests_total: str  # finished requests (counter)
    kv_cache_usage: str | None  # 0..1
    prompt_tokens_total: str | None
    generation_tokens_total: str | None
    time_to_first_token_seconds: str | None = None  # histogram base name
    inter_token_latency_seconds: str | None = None
    model_label: str | None = "model_name"

    @property
    def all_names(self) -> frozenset[str]:
        """Every sample name read (histograms by their ``_bucket`` series)."""
        names = {
            self.running_requests,
            self.waiting_requests,
            self.requests_total,
            self.kv_cache_usage,
            self.prompt_tokens_total,
            self.generation_tokens_total,
        }
        for h in (self.time_to_first_token_seconds, self.inter_token_latency_seconds):
            if h:
                names.add(h + "_bucket")
        return frozenset(n for n in names if n)


@dataclass(frozen=True)
class Flag:
    """One engine option the builders may render, with the values the engine accepts where it
    restricts them (a pinned copy, checked against the engine's own definition)."""

    name: str
    takes: str = "one"  # "none" (a switch), "one" value, "many" values (nargs='+')
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineProfile:
    """The contract of one engine version: how it is started and spelled, what it accepts.

    `None` flag = the engine has no such option. ``engine_flags`` lists every option the
    builders can render (tests/unit/test_engine_contract.py renders a matrix of specs and fails
    on any other); the contract test checks each against the engine's released source.
    """

    engine: EngineType
    package: str  # PyPI name of the engine (the release the facts come from)
    version: str
    source: str  # where the facts were checked, and when
    image: str
    image_notes: str
    command: tuple[str, ...]
    tasks: frozenset[Task]
    metrics: EngineMetrics
    # Listening and probes
    host_flag: str
    port_flag: str
    engine_flags: tuple[Flag, ...] = ()
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
    #: How many names ``--served-model-name`` takes (None: any number). Engines that take one
    #: serve whatever ``model`` a request names, so aliases resolve in front of them.
    max_served_names: int | None = None
    download_dir_flag: str | None = None
    cache_env: str = "HF_HOME"  # where the Hugging Face cache lives (mount a volume here)
    hf_token_env: str = "HF_TOKEN"
    trust_remote_code_flag: str | None = None
    api_key_flag: str | None = "--api-key"
    # Parallelism, context, memory
    tensor_parallel_flag: str | None = None
    pipeline_parallel_flag: str | None = None
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
    #: Quantization methods the engine refuses unless ``allow_deprecated_quantization_flag``.
    deprecated_quantization: frozenset[str] = frozenset()
    allow_deprecated_quantization_flag: str | None = None
    #: Structured outputs: args that turn them on / off (None: the engine cannot turn them off).
    structured_outputs_on: tuple[str, ...] = ()
    structured_outputs_off: tuple[str, ...] | None = None
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
    #: Args LoRA needs when no adapter is given at start-up (SGLang: the target modules).
    lora_runtime_args: tuple[str, ...] = ()
    runtime_lora_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    lora_load_path: str | None = None  # POST body {"lora_name", "lora_path"}
    lora_unload_path: str | None = None
    lora_list_path: str | None = "/v1/models"  # adapters listed with a `parent`
    #: How a request names an adapter: "{adapter}" or "{base}:{adapter}" (SGLang).
    adapter_model_format: str = "{adapter}"
    # Speculative decoding: one JSON flag, `method` per SpeculativeMode
    speculative_config_flag: str | None = None
    speculative_methods: Mapping[SpeculativeMode, str] = field(default_factory=dict, hash=False)
    # Multimodal
    mm_limits_flag: str | None = None  # value: CatalogModel.mm_limits_json
    #: Images with optional extras installed (CatalogModel.engine_extras), by extra.
    extra_images: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Images per GPU architecture (TEI ships one binary per compute capability), keyed by a
    #: substring of nvidia.com/gpu.product or the GPU family; first match wins.
    images_by_gpu: tuple[tuple[str, str], ...] = ()
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
            "extra_images",
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

    @property
    def flags(self) -> Mapping[str, Flag]:
        return {f.name: f for f in self.engine_flags}

    def image_for(self, gpu_product: str, gpu_family: str | None, extras: tuple[str, ...]) -> str:
        """The image a pod of this engine runs on that GPU with those extras."""
        for extra in extras:
            if extra in self.extra_images:
                return self.extra_images[extra]
        for key, image in self.images_by_gpu:
            if key in gpu_product or key == gpu_family:
                return image
        return self.image

    def check_args(self, args: list[str]) -> list[str]:
        """Rendered args outside this contract: an undeclared flag, or a value outside its
        choices (what the contract test and the builders' own tests assert is empty)."""
        problems: list[str] = []
        flags = self.flags
        i = 0
        while i < len(args):
            tok = args[i]
            i += 1
            if not tok.startswith("--"):
                continue
            name = tok.split("=", 1)[0]
            f = flags.get(name) or flags.get(name.split(".", 1)[0])
            if f is None:
                problems.append(
                    f"{self.engine.value} {self.version}: {name} is not in the contract"
                )
                continue
            values: list[str] = []
            while i < len(args) and not args[i].startswith("--"):
                values.append(args[i])
                i += 1
            if f.takes == "none" and values:
                problems.append(f"{name} takes no value, got {values}")
            if f.takes == "one" and len(values) != 1:
                problems.append(f"{name} takes one value, got {values}")
            if f.choices and any(v not in f.choices for v in values):
                problems.append(f"{name} {values}: not one of {', '.join(f.choices)}")
        return problems


_VLLM_VERSION = "0.33.0"
_SGLANG_VERSION = "0.5.23"
_TEI_VERSION = "1.9.3"

_VLLM_TOOL_PARSERS = (
    "deepseek_v3",
    "deepseek_v31",
    "deepseek_v32",
    "gemma4",
    "glm45",
    "glm47",
    "granite",
    "granite4",
    "hermes",
    "internlm",
    "jamba",
    "kimi_k2",
    "llama3_json",
    "llama4_pythonic",
    "minimax_m2",
    "mistral",
    "olmo3",
    "openai",
    "phi4_mini_json",
    "pythonic",
    "qwen3_coder",
    "qwen3_xml",
    "xlam",
)
_SGLANG_TOOL_PARSERS = (
    "deepseekv3",
    "deepseekv31",
    "deepseekv32",
    "glm45",
    "glm47",
    "gpt-oss",
    "hermes",
    "kimi_k2",
    "llama3",
    "mistral",
    "pythonic",
    "qwen",
    "qwen25",
    "qwen3_coder",
)
#: vLLM's accepted LoRA ranks (``MaxLoRARanks`` in vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

VLLM = EngineProfile(
    engine=EngineType.VLLM,
    package="vllm",
    version=_VLLM_VERSION,
    source=f"vllm {_VLLM_VERSION} sdist from PyPI, read without installing (flags: "
    "engine/arg_utils.py, entrypoints/common/cli_args.py; metrics: v1/metrics/loggers.py; "
    "LoRA routes: entrypoints/serve/lora/api_router.py), checked 2026-08 and by "
    "tests/unit/test_engine_contract.py",
    image=f"vllm/vllm-openai:v{_VLLM_VERSION}",
    image_notes="Pinned by release tag (latest PyPI release in the notes); pin the digest at "
    "chart release. Whisper runs the audio image (the stock one lacks the `vllm[audio]` extra).",
    command=("vllm", "serve"),
    tasks=frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING, Task.TRANSCRIPTION}),
    metrics=EngineMetrics(
        running_requests="vllm:num_requests_running",
        waiting_requests="vllm:num_requests_waiting",
        requests_total="vllm:request_success_total",
        kv_cache_usage="vllm:kv_cache_usage_perc",
        prompt_tokens_total="vllm:prompt_tokens_total",
        generation_tokens_total="vllm:generation_tokens_total",
        time_to_first_token_seconds="vllm:time_to_first_token_seconds",
        inter_token_latency_seconds="vllm:inter_token_latency_seconds",
    ),
    engine_flags=(
        Flag("--host"),
        Flag("--port"),
        Flag("--served-model-name", "many"),
        Flag("--revision"),
        Flag("--download-dir"),
        Flag("--tensor-parallel-size"),
        Flag("--pipeline-parallel-size"),
        Flag("--max-model-len"),
        Flag("--dtype", choices=("bfloat16", "float16")),
        Flag("--quantization", choices=("fp8_per_tensor",)),
        Flag("--allow-deprecated-quantization", "none"),
        Flag("--gpu-memory-utilization"),
        Flag("--load-format", choices=("runai_streamer",)),
        Flag("--trust-remote-code", "none"),
        Flag("--runner", choices=("pooling",)),
        Flag("--enable-auto-tool-choice", "none"),
        Flag("--tool-call-parser", choices=_VLLM_TOOL_PARSERS),
        Flag("--structured-outputs-config.backend", choices=("auto",)),
        Flag("--speculative-config"),
        Flag("--limit-mm-per-prompt"),
        Flag("--enable-lora", "none"),
        Flag("--max-loras"),
        Flag("--max-lora-rank", choices=tuple(str(r) for r in VLLM_LORA_RANKS)),
        Flag("--shutdown-timeout"),
    ),
    host_flag="--host",
    port_flag="--port",
    model_flag=None,
    download_dir_flag="--download-dir",
    trust_remote_code_flag="--trust-remote-code",
    tensor_parallel_flag="--tensor-parallel-size",
    pipeline_parallel_flag="--pipeline-parallel-size",
    max_model_len_flag="--max-model-len",
    gpu_memory_utilization_flag="--gpu-memory-utilization",
    dtype_values={Precision.BF16: "bfloat16", Precision.FP16: "float16"},
    quantization_flag="--quantization",
    # `fp8` for online quantization of a 16-bit checkpoint is deprecated in 0.33 in favour of
    # the online shorthand `fp8_per_tensor` (model_executor/layers/quantization/fp8.py).
    online_quantization={Precision.FP8: "fp8_per_tensor"},
    kv_cache_dtype_flag="--kv-cache-dtype",
    kv_cache_fp8_value="fp8",
    deprecated_quantization=frozenset({"fbgemm_fp8", "fp_quant"}),
    allow_deprecated_quantization_flag="--allow-deprecated-quantization",
    structured_outputs_on=("--structured-outputs-config.backend", "auto"),
    structured_outputs_off=None,  # no server option turns them off; requests ask for them
    tool_choice_args=("--enable-auto-tool-choice",),
    tool_call_parser_flag="--tool-call-parser",
    tool_call_parsers=frozenset(_VLLM_TOOL_PARSERS),
    chat_template_flag="--chat-template",
    embedding_args=("--runner", "pooling"),
    lora_enable_args=("--enable-lora",),
    max_loras_flag="--max-loras",
    max_lora_rank_flag="--max-lora-rank",
    lora_ranks=VLLM_LORA_RANKS,
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
    extra_images={"audio": f"ghcr.io/modelplane/vllm-openai-audio:v{_VLLM_VERSION}"},
    shutdown_timeout_flag="--shutdown-timeout",
    dev_shm_gib=2,
)

SGLANG = EngineProfile(
    engine=EngineType.SGLANG,
    package="sglang",
    version=_SGLANG_VERSION,
    source=f"sglang {_SGLANG_VERSION} wheel from PyPI, read without installing (flags: "
    "srt/arg_groups/fields/*.py, srt/server_args.py; metrics: "
    "srt/observability/metrics_collector.py; LoRA routes: srt/entrypoints/http_server.py), "
    "checked 2026-08 and by tests/unit/test_engine_contract.py",
    image=f"lmsysorg/sglang:v{_SGLANG_VERSION}",
    image_notes="Release tag matching the latest PyPI version in the notes (⚠ CUDA-suffixed "
    "variants such as -cu129 also exist); pin the digest at chart release.",
    command=("python3", "-m", "sglang.launch_server"),
    tasks=frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING}),
    metrics=EngineMetrics(
        running_requests="sglang:num_running_reqs",
        waiting_requests="sglang:num_queue_reqs",
        requests_total="sglang:num_requests_total",
        kv_cache_usage="sglang:token_usage",
        prompt_tokens_total="sglang:prompt_tokens_total",
        generation_tokens_total="sglang:generation_tokens_total",
        time_to_first_token_seconds="sglang:time_to_first_token_seconds",
        inter_token_latency_seconds="sglang:inter_token_latency_seconds",
    ),
    engine_flags=(
        Flag("--model-path"),
        Flag("--host"),
        Flag("--port"),
        Flag("--served-model-name"),
        Flag("--revision"),
        Flag("--download-dir"),
        Flag("--tp-size"),
        Flag("--pp-size"),
        Flag("--context-length"),
        Flag("--dtype", choices=("bfloat16", "float16")),
        Flag("--quantization", choices=("fp8",)),
        Flag("--mem-fraction-static"),
        Flag("--trust-remote-code", "none"),
        Flag("--is-embedding", "none"),
        Flag("--tool-call-parser", choices=_SGLANG_TOOL_PARSERS),
        Flag("--grammar-backend", choices=("xgrammar", "none")),
        Flag("--enable-lora", "none"),
        Flag("--max-loras-per-batch"),
        Flag("--max-lora-rank"),
        Flag("--lora-target-modules", "many", choices=("all",)),
        Flag("--enable-metrics", "none"),
    ),
    host_flag="--host",
    port_flag="--port",
    metrics_enable_args=("--enable-metrics",),
    model_flag="--model-path",
    max_served_names=1,  # `served_model_name: Optional[str]`; a second name is unrecognized
    download_dir_flag="--download-dir",
    trust_remote_code_flag="--trust-remote-code",
    tensor_parallel_flag="--tp-size",
    pipeline_parallel_flag="--pp-size",
    max_model_len_flag="--context-length",
    gpu_memory_utilization_flag="--mem-fraction-static",
    dtype_values={Precision.BF16: "bfloat16", Precision.FP16: "float16"},
    quantization_flag="--quantization",
    online_quantization={Precision.FP8: "fp8"},
    kv_cache_dtype_flag="--kv-cache-dtype",
    kv_cache_fp8_value="fp8_e4m3",
    structured_outputs_on=("--grammar-backend", "xgrammar"),
    structured_outputs_off=("--grammar-backend", "none"),
    tool_call_parser_flag="--tool-call-parser",
    tool_call_parsers=frozenset(_SGLANG_TOOL_PARSERS),
    chat_template_flag="--chat-template",
    embedding_args=("--is-embedding",),
    lora_enable_args=("--enable-lora",),
    max_loras_flag="--max-loras-per-batch",
    max_lora_rank_flag="--max-lora-rank",
    lora_modules_flag="--lora-paths",
    # Without --lora-paths at start-up SGLang asserts that both --max-lora-rank and
    # --lora-target-modules are given (srt/arg_groups/lora_hook.py).
    lora_runtime_args=("--lora-target-modules", "all"),
    lora_load_path="/load_lora_adapter",
    lora_unload_path="/unload_lora_adapter",
    adapter_model_format="{base}:{adapter}",
    dev_shm_gib=32,
)

_TEI_IMAGE = "ghcr.io/huggingface/text-embeddings-inference"

TEI = EngineProfile(
    engine=EngineType.TEI,
    package="text-embeddings-inference",
    version=_TEI_VERSION,
    source=f"TEI v{_TEI_VERSION} (not on PyPI): router/src/main.rs clap arguments, the README's "
    "per-architecture image table and Dockerfile-cuda / Dockerfile-cuda-all (the `cuda-` image "
    "ships text-embeddings-router-{75,80,90,100,120} and an entrypoint.sh that picks one; the "
    "per-architecture tags ship text-embeddings-router), core/src/queue.rs and "
    "router/src/http/server.rs metrics; checked 2026-08",
    image=f"{_TEI_IMAGE}:{_TEI_VERSION}",  # Ampere 80 (A100, A30)
    image_notes="One image per GPU architecture (images_by_gpu); each runs "
    "text-embeddings-router. The multi-architecture cuda- tag is not used: its binaries are "
    "suffixed per compute capability. Pin the digest at chart release.",
    command=("text-embeddings-router",),
    tasks=frozenset({Task.EMBEDDING}),
    metrics=EngineMetrics(
        running_requests=None,  # TEI has no gauge of requests in the batch
        waiting_requests="te_queue_size",
        requests_total="te_request_success",
        kv_cache_usage=None,
        prompt_tokens_total=None,
        generation_tokens_total=None,
        model_label=None,
    ),
    # TEI's whole argument table (clap), so the emulator refuses what TEI would.
    engine_flags=(
        Flag("--model-id"),
        Flag("--revision"),
        Flag("--tokenization-workers"),
        Flag("--dtype", choices=("float16", "float32")),
        Flag("--served-model-name"),
        Flag("--pooling", choices=("cls", "mean", "splade", "last-token")),
        Flag("--max-concurrent-requests"),
        Flag("--max-batch-tokens"),
        Flag("--max-batch-requests"),
        Flag("--max-client-batch-size"),
        Flag("--auto-truncate", "none"),
        Flag("--default-prompt-name"),
        Flag("--default-prompt"),
        Flag("--dense-path"),
        Flag("--device-id"),
        Flag("--hf-token"),
        Flag("--hostname"),
        Flag("--port"),
        Flag("--uds-path"),
        Flag("--huggingface-hub-cache"),
        Flag("--payload-limit"),
        Flag("--api-key"),
        Flag("--json-output", "none"),
        Flag("--disable-spans", "none"),
        Flag("--otlp-endpoint"),
        Flag("--otlp-service-name"),
        Flag("--prometheus-port"),
        Flag("--cors-allow-origin"),
    ),
    host_flag="--hostname",
    port_flag="--port",
    model_flag="--model-id",
    max_served_names=1,
    download_dir_flag="--huggingface-hub-cache",
    cache_env="HUGGINGFACE_HUB_CACHE",
    dtype_values={Precision.FP16: "float16"},
    pooling_flag="--pooling",
    lora_list_path=None,
    images_by_gpu=(
        ("A100", f"{_TEI_IMAGE}:{_TEI_VERSION}"),
        ("A30", f"{_TEI_IMAGE}:{_TEI_VERSION}"),
        ("A10", f"{_TEI_IMAGE}:86-{_TEI_VERSION}"),
        ("A40", f"{_TEI_IMAGE}:86-{_TEI_VERSION}"),
        ("L4", f"{_TEI_IMAGE}:89-{_TEI_VERSION}"),
        ("hopper", f"{_TEI_IMAGE}:hopper-{_TEI_VERSION}"),
        ("H100", f"{_TEI_IMAGE}:hopper-{_TEI_VERSION}"),
        ("H200", f"{_TEI_IMAGE}:hopper-{_TEI_VERSION}"),
        ("ada-lovelace", f"{_TEI_IMAGE}:89-{_TEI_VERSION}"),
        ("blackwell", f"{_TEI_IMAGE}:100-{_TEI_VERSION}"),
    ),
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
