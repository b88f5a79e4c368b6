"""The model server's command line, engine by engine (from the engines' contracts).

Every flag and value comes from the engine's contract (``catalog.engines``): the contract test
renders a matrix of specs and checks each against the engine's released source.
"""

from __future__ import annotations

import json
from typing import Any

from modelplane.api.enums import EngineType, Precision, PreloadMode, SpeculativeMode, Task
from modelplane.builders.common import CACHE_MOUNT
from modelplane.builders.preload import SHARED_MOUNT
from modelplane.builders.resolve import Resolved

#: Longest stream we let finish on shutdown (the engine's drain timeout).
DRAIN_SECONDS = 300
#: NGram speculation window (vLLM's prompt_lookup_min / prompt_lookup_max).
NGRAM_LOOKUP_MIN = 2
NGRAM_LOOKUP_MAX = 4
#: NodeLocal preload: where the server pod mounts its node's cache directory (read-only) ...
NODE_CACHE_MOUNT = "/models/node-cache"
#: ... and the one path the engine loads the weights from: a link to that directory when the
#: cache Job has filled it, else the pod's own download (see `pod.node_cache_init_container`).
NODE_LOCAL_MODEL = f"{CACHE_MOUNT}/model"


def reads_node_cache(r: Resolved) -> bool:
    """NodeLocal preload of Hugging Face weights: the server reads what the cache Job wrote.
    (Object-store weights are streamed at start-up and never cached on nodes.)"""
    return r.preload_mode == PreloadMode.NODE_LOCAL and r.scheme == "hf"


def needs_the_hub(r: Resolved) -> bool:
    """Whether the running server fetches from the Hub: LoRA adapters loaded at runtime by
    repo id, or a draft model given as hf://."""
    draft_hf = r.speculative_mode == SpeculativeMode.DRAFT_MODEL and (
        r.draft_model or ""
    ).startswith("hf://")
    return r.lora or draft_hf


def model_argument(r: Resolved) -> str:
    """How the engine is told where the weights are."""
    if reads_node_cache(r):
        return NODE_LOCAL_MODEL
    if r.preload_mode == PreloadMode.SHARED_VOLUME and r.scheme == "hf":
        return SHARED_MOUNT  # filled once by the fill Job, mounted read-only
    scheme, _, rest = r.uri.partition("://")
    if scheme == "hf":
        return rest
    if scheme in ("s3", "gs"):
        return r.uri  # streamed by vLLM's runai_streamer load format
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return f"/models/{claim}/{path}".rstrip("/")
    if scheme == "oci":
        return "/models/oci"
    return r.uri


def served_names(r: Resolved) -> list[str]:
    """What ``--served-model-name`` gets: every name on engines that take several; the primary
    name on engines that take one (SGLang, TEI). Those serve whatever ``model`` a request
    names, so aliases and Serverless tenant names need no engine flag: they resolve at the
    endpoint (the tenant Service, a gateway) in front of the engine."""
    names = [r.served_name, *(a for a in r.aliases if a != r.served_name)]
    limit = r.engine.max_served_names
    return names if limit is None else names[:limit]


def engine_args(r: Resolved) -> list[str]:
    """The container args of the model server: where and how to serve, then what the spec
    turns on, then the passthrough args last."""
    p = r.engine
    args = _serving_args(r)
    if r.precision is not None:
        args += _precision_args(r, r.precision)
    if r.gpu_memory_utilization and p.gpu_memory_utilization_flag:
        args += [p.gpu_memory_utilization_flag, str(r.gpu_memory_utilization)]
    if r.scheme in ("s3", "gs") and p.engine == EngineType.VLLM:
        args += ["--load-format", "runai_streamer"]
    if r.catalog and r.catalog.trust_remote_code and p.trust_remote_code_flag:
        args.append(p.trust_remote_code_flag)
    args += _feature_args(r)
    if p.shutdown_timeout_flag:
        args += [p.shutdown_timeout_flag, str(DRAIN_SECONDS)]
    args += list(p.metrics_enable_args)
    args += list(r.extra_args)
    return args


def _serving_args(r: Resolved) -> list[str]:
    """The weights, the address, the served names, parallelism and context length."""
    p = r.engine
    model = model_argument(r)
    args = [p.model_flag, model] if p.model_flag else [model]
    args += [p.host_flag, p.host, p.port_flag, str(p.port)]
    args += [p.served_model_name_flag, *served_names(r)]
    if r.revision and p.revision_flag and not reads_node_cache(r):  # pinned at download
        args += [p.revision_flag, r.revision]
    if p.download_dir_flag:
        args += [p.download_dir_flag, f"{CACHE_MOUNT}/weights"]
    if p.tensor_parallel_flag and r.tensor_parallel > 1:
        args += [p.tensor_parallel_flag, str(r.tensor_parallel)]
    if p.pipeline_parallel_flag and r.pipeline_parallel > 1:
        args += [p.pipeline_parallel_flag, str(r.pipeline_parallel)]
    if r.context_length and p.max_model_len_flag:
        args += [p.max_model_len_flag, str(r.context_length)]
    return args


def _feature_args(r: Resolved) -> list[str]:
    """Embeddings, tool calling, structured outputs, speculation, vision limits, LoRA."""
    p = r.engine
    args: list[str] = []
    if r.task == Task.EMBEDDING:
        args += list(p.embedding_args)
        if p.pooling_flag and r.catalog and r.catalog.pooling:
            args += [p.pooling_flag, r.catalog.pooling]
    if r.tool_calling and r.tool_parser and p.tool_call_parser_flag:
        args += [*p.tool_choice_args, p.tool_call_parser_flag, r.tool_parser]
    if r.structured_outputs is True:
        args += list(p.structured_outputs_on)
    elif r.structured_outputs is False and p.structured_outputs_off is not None:
        args += list(p.structured_outputs_off)
    if r.speculative_mode != SpeculativeMode.DISABLED and p.speculative_config_flag:
        args += [p.speculative_config_flag, _speculative_config(r)]
    if r.catalog and r.catalog.vision and p.mm_limits_flag and r.catalog.mm_limits_json:
        args += [p.mm_limits_flag, r.catalog.mm_limits_json]
    if r.lora and p.lora_enable_args:
        args += _lora_args(r)
    return args


def _speculative_config(r: Resolved) -> str:
    """The engine's speculative-decoding JSON (compact, keys sorted: a stable pod template)."""
    cfg: dict[str, Any] = {
        "method": r.engine.speculative_methods[r.speculative_mode],
        "num_speculative_tokens": r.speculative_tokens,
    }
    if r.speculative_mode == SpeculativeMode.DRAFT_MODEL and r.draft_model:
        cfg["model"] = (
            r.draft_model.partition("://")[2]
            if r.draft_model.startswith("hf://")
            else r.draft_model
        )
    if r.speculative_mode == SpeculativeMode.NGRAM:
        # Both ends of the n-gram window: with only the maximum, vLLM sets the minimum to it.
        cfg["prompt_lookup_min"] = NGRAM_LOOKUP_MIN
        cfg["prompt_lookup_max"] = NGRAM_LOOKUP_MAX
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def _lora_args(r: Resolved) -> list[str]:
    p = r.engine
    args = list(p.lora_enable_args)
    if p.max_loras_flag:
        args += [p.max_loras_flag, str(r.max_loras)]
    if p.max_lora_rank_flag:
        args += [p.max_lora_rank_flag, str(r.max_lora_rank)]
    return args + list(p.lora_runtime_args)


def _precision_args(r: Resolved, precision: Precision) -> list[str]:
    p = r.engine
    if precision in p.dtype_values and p.dtype_flag:
        return [p.dtype_flag, p.dtype_values[precision]]
    if r.catalog is None or r.catalog.needs_online_quantization(precision):
        q = p.online_quantization.get(precision)
        if q and p.quantization_flag:
            return [p.quantization_flag, q]
    method = r.catalog.checkpoint_quantization if r.catalog else None
    if method in p.deprecated_quantization and p.allow_deprecated_quantization_flag:
        # The engine detects the checkpoint's method and stops on a deprecated one unless told.
        return [p.allow_deprecated_quantization_flag]
    return []
