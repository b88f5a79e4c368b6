"""The model catalog: Fireworks-style ids with weights, architecture and serving defaults.

Where the numbers come from
---------------------------
* Architecture figures (layers, attention heads, KV heads, head dim, hidden size, MLA ranks,
  native context) are the published ``config.json`` values of each Hugging Face repository named
  in ``uri``. For multimodal models they are the *text decoder's* values (``text_config``), since
  that is where the KV cache lives; for Whisper they are the decoder's (``decoder_layers``,
  ``decoder_attention_heads``, ``max_target_positions``) plus the 1500 encoder frames every
  request keeps as cross-attention keys/values (``max_source_positions``).
* Parameter counts are the totals shown on the model cards / safetensors metadata
  (e.g. Llama 3.1 8B = 8.03B, DeepSeek-V3 = 671B main model, 37B active, MTP head excluded).
* Tool-call parser names, the multimodal-limit JSON form and which engine still implements an
  architecture come from the vLLM and SGLang sources and docs: vLLM removed
  ``MllamaForConditionalGeneration`` (Llama 3.2 Vision) after v0.10.2, so those two models default
  to SGLang here; firefunction-v2 emits ``functools[...]`` which no vLLM/SGLang parser reads.
* Ids follow the Fireworks ``accounts/fireworks/models/<id>`` naming so migrating clients keep
  their model strings.

``revision`` is left ``None`` (track the repository head) unless a commit is known; a
ModelDeployment pins its own ``spec.model.revision``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from modelplane.api.enums import EngineType, Precision, Task

__all__ = [
    "CATALOG",
    "CatalogModel",
    "ModelArch",
    "get_model",
]


@dataclass(frozen=True)
class ModelArch:
    """The architecture figures sizing needs (one decoder's worth for multimodal models).

    ``num_layers`` counts the layers that hold a KV cache. For MLA (DeepSeek V2/V3) the cache per
    token per layer is the compressed latent plus the decoupled RoPE key, shared by K and V:
    ``kv_lora_rank + qk_rope_head_dim`` elements (512 + 64 = 576 for DeepSeek-V3).
    """

    params_billion: float  # total parameters, all experts included
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    active_params_billion: float | None = None  # MoE: parameters used per token
    mla_kv_lora_rank: int | None = None
    mla_qk_rope_head_dim: int | None = None
    encoder_only: bool = False  # bidirectional encoders (BERT-style embedders) keep no KV cache
    cross_attention_tokens: int = 0  # encoder states cached per sequence (Whisper: 1500 frames)

    def __post_init__(self) -> None:
        if self.params_billion <= 0:
            raise ValueError("params_billion must be positive")
        if min(self.num_layers, self.num_attention_heads, self.num_kv_heads, self.head_dim) < 1:
            raise ValueError("layers, heads, kv heads and head_dim must be >= 1")
        if (self.mla_kv_lora_rank is None) != (self.mla_qk_rope_head_dim is None):
            raise ValueError("MLA needs both kv_lora_rank and qk_rope_head_dim")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")

    @property
    def is_mla(self) -> bool:
        return self.mla_kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        return self.active_params_billion is not None


@dataclass(frozen=True)
class CatalogModel:
    """One servable model and the defaults modelplane fills in for it."""

    id: str
    display_name: str
    uri: str  # hf://<org>/<repo>
    task: Task
    arch: ModelArch
    max_context_length: int  # native context of the checkpoint
    default_context_length: int  # what we serve unless the spec says otherwise
    default_precision: Precision
    checkpoint_precision: Precision  # dtype of the weights as published at `uri`
    supported_precisions: tuple[Precision, ...]
    #: The quantization method a pre-quantized checkpoint declares in its config.json
    #: (``quantization_config.quant_method``): the engine detects it, but may refuse a
    #: deprecated one unless told (vLLM: fbgemm_fp8 needs --allow-deprecated-quantization).
    checkpoint_quantization: str | None = None
    #: Parameters that stay at 16 bits when the rest is served in FP8/FP4: token embeddings and
    #: LM head (engines do not quantize them), plus whatever a pre-quantized checkpoint left out.
    unquantized_params_billion: float = 0.0
    engine: EngineType = EngineType.VLLM
    alternative_engines: tuple[EngineType, ...] = ()
    revision: str | None = None
    vision: bool = False
    #: Per-prompt multimodal item limits, e.g. {"image": 1}; rendered for vLLM as JSON.
    mm_limits: Mapping[str, int] = field(default_factory=dict, hash=False)
    supports_tools: bool = False
    #: Parser name per engine (names differ: vLLM `llama3_json` vs SGLang `llama3`).
    tool_call_parsers: Mapping[EngineType, str] = field(default_factory=dict, hash=False)
    supports_lora: bool = False
    trust_remote_code: bool = False
    #: Optional pip extras the engine image must carry (vLLM Whisper needs `vllm[audio]`).
    engine_extras: tuple[str, ...] = ()
    #: TEI `--pooling` value for embedding models (TEI reads it from the repo when unset).
    pooling: str | None = None
    chat_template_notes: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        # Freeze the mappings so a shared catalog entry cannot be mutated by a caller.
        object.__setattr__(self, "mm_limits", MappingProxyType(dict(self.mm_limits)))
        object.__setattr__(
            self, "tool_call_parsers", MappingProxyType(dict(self.tool_call_parsers))
        )
        if not self.uri.startswith("hf://"):
            raise ValueError(f"{self.id}: catalog uris are hf://org/repo, got {self.uri!r}")
        if not 0 < self.default_context_length <= self.max_context_length:
            raise ValueError(f"{self.id}: default context must be in 1..max_context_length")
        if not 0.0 <= self.unquantized_params_billion < self.arch.params_billion:
            raise ValueError(f"{self.id}: unquantized params must be below the total")
        if self.default_precision not in self.supported_precisions:
            raise ValueError(f"{self.id}: default precision not in supported_precisions")
        if self.engine in self.alternative_engines:
            raise ValueError(f"{self.id}: default engine repeated in alternative_engines")
        if self.vision != bool(self.mm_limits):
            raise ValueError(f"{self.id}: vision models (and only they) carry mm_limits")
        if self.supports_tools and self.engine not in self.tool_call_parsers:
            raise ValueError(f"{self.id}: tool-capable model lacks a parser for {self.engine}")

    @property
    def engines(self) -> tuple[EngineType, ...]:
        """Default engine first, then the alternatives."""
        return (self.engine, *self.alternative_engines)

    @property
    def hf_repo(self) -> str:
        """`org/repo` as engines take it (`--model-id`, positional model)."""
        return self.uri.removeprefix("hf://")

    @property
    def mm_limits_json(self) -> str | None:
        """`--limit-mm-per-prompt` value in the JSON form vLLM >= 0.13 requires."""
        if not self.mm_limits:
            return None
        return json.dumps(dict(self.mm_limits), separators=(",", ":"), sort_keys=True)

    def tool_call_parser(self, engine: EngineType | None = None) -> str | None:
        """The parser name for `engine` (default engine if omitted); None if tools unsupported."""
        if not self.supports_tools:
            return None
        return self.tool_call_parsers.get(engine or self.engine)

    def needs_online_quantization(self, precision: Precision) -> bool:
        """True when serving at `precision` means quantizing the checkpoint while loading.

        A pre-quantized checkpoint (FP8 for DeepSeek-V3 and the Llama 405B FP8 repo) is detected
        by the engine; passing `--quantization fp8` on top of it conflicts with its own config.
        """
        return precision.bytes_per_param < self.checkpoint_precision.bytes_per_param


# --- architectures (config.json of each repository) -------------------------------------------

_LLAMA_3_8B = ModelArch(
    params_billion=8.03,
    num_layers=32,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=4096,
)
_LLAMA_3_70B = ModelArch(
    params_billion=70.55,
    num_layers=80,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=8192,
)
_LLAMA_3_405B = ModelArch(
    params_billion=405.85,
    num_layers=126,
    num_attention_heads=128,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=16384,
)
_DEEPSEEK_V3 = ModelArch(
    params_billion=671.0,
    active_params_billion=37.0,
    num_layers=61,
    num_attention_heads=128,
    num_kv_heads=128,
    head_dim=192,  # qk_nope_head_dim 128 + qk_rope_head_dim 64 (v_head_dim 128)
    hidden_size=7168,
    mla_kv_lora_rank=512,
    mla_qk_rope_head_dim=64,
)
_MIXTRAL_8X22B = ModelArch(
    params_billion=140.6,
    active_params_billion=39.1,
    num_layers=56,
    num_attention_heads=48,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=6144,
)
_QWEN2P5_72B = ModelArch(
    params_billion=72.7,
    num_layers=80,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=8192,
)
_LLAMA_3P2_11B_VISION = ModelArch(
    params_billion=10.67,  # text decoder + vision tower
    num_layers=40,  # 32 self-attention + 8 cross-attention layers
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=4096,
)
_LLAMA_3P2_90B_VISION = ModelArch(
    params_billion=88.6,
    num_layers=100,  # 80 self-attention + 20 cross-attention layers
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=8192,
)
_PHI_3P5_VISION = ModelArch(
    params_billion=4.15,
    num_layers=32,
    num_attention_heads=32,
    num_kv_heads=32,  # no GQA: KV cache is 4x a Llama-style model of the same width
    head_dim=96,
    hidden_size=3072,
)
_WHISPER_LARGE_V3 = ModelArch(
    params_billion=1.55,
    num_layers=32,  # decoder layers (the encoder has 32 more, without KV cache)
    num_attention_heads=20,
    num_kv_heads=20,
    head_dim=64,
    hidden_size=1280,
    cross_attention_tokens=1500,
)
_WHISPER_LARGE_V3_TURBO = ModelArch(
    params_billion=0.809,
    num_layers=4,  # turbo prunes the decoder from 32 to 4 layers
    num_attention_heads=20,
    num_kv_heads=20,
    head_dim=64,
    hidden_size=1280,
    cross_attention_tokens=1500,
)
_NOMIC_EMBED_V1P5 = ModelArch(
    params_billion=0.137,
    num_layers=12,
    num_attention_heads=12,
    num_kv_heads=12,
    head_dim=64,
    hidden_size=768,
    encoder_only=True,
)
_E5_MISTRAL_7B = ModelArch(
    params_billion=7.11,
    num_layers=32,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=4096,
)

_TEXT_LLM_PRECISIONS = (Precision.BF16, Precision.FP8)
_LLAMA_TOOLS = {EngineType.VLLM: "llama3_json", EngineType.SGLANG: "llama3"}
_LLAMA_TOOL_TEMPLATE = (
    "vLLM docs pair llama3_json with examples/tool_chat_template_llama3.1_json.jinja; the "
    "repository's own template also renders tools."
)

_MODELS: tuple[CatalogModel, ...] = (
    CatalogModel(
        id="llama-v3p1-8b-instruct",
        display_name="Llama 3.1 8B Instruct",
        uri="hf://meta-llama/Llama-3.1-8B-Instruct",
        task=Task.CHAT,
        arch=_LLAMA_3_8B,
        unquantized_params_billion=1.05,  # embed + lm_head: 2 x 128256 x 4096
        max_context_length=131072,
        default_context_length=131072,
        default_precision=Precision.BF16,
        checkpoint_precision=Precision.BF16,
        supported_precisions=_TEXT_LLM_PRECISIONS,
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers=_LLAMA_TOOLS,
        supports_lora=True,
        chat_template_notes=_LLAMA_TOOL_TEMPLATE,
    ),
    CatalogModel(
        id="llama-v3p3-70b-instruct",
        display_name="Llama 3.3 70B Instruct",
        uri="hf://meta-llama/Llama-3.3-70B-Instruct",
        task=Task.CHAT,
        arch=_LLAMA_3_70B,
        unquantized_params_billion=2.10,  # embed + lm_head: 2 x 128256 x 8192
        max_context_length=131072,
        default_context_length=131072,
        default_precision=Precision.FP8,
        checkpoint_precision=Precision.BF16,
        supported_precisions=_TEXT_LLM_PRECISIONS,
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers=_LLAMA_TOOLS,
        supports_lora=True,
        chat_template_notes=_LLAMA_TOOL_TEMPLATE,
    ),
    CatalogModel(
        id="llama-v3p1-405b-instruct",
        display_name="Llama 3.1 405B Instruct",
        uri="hf://meta-llama/Llama-3.1-405B-Instruct-FP8",
        task=Task.CHAT,
        arch=_LLAMA_3_405B,
        # Meta left all self-attention, the first and last layers' MLPs, embeddings and LM head
        # in BF16 (Llama 3 paper, section 6.2): 71.9B + 5.2B + 4.2B.
        unquantized_params_billion=81.3,
        max_context_length=131072,
        default_context_length=131072,
        default_precision=Precision.FP8,
        checkpoint_precision=Precision.FP8,
        checkpoint_quantization="fbgemm_fp8",
        supported_precisions=(Precision.FP8,),
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers=_LLAMA_TOOLS,
        supports_lora=True,
        chat_template_notes=_LLAMA_TOOL_TEMPLATE,
        notes="Meta's FP8 checkpoint (fbgemm_fp8, detected by the engine); BF16 would need "
        "~756 GiB of weights, more than any single node in the default accelerator table.",
    ),
    CatalogModel(
        id="llama-v3p1-405b-instruct-bf16",
        display_name="Llama 3.1 405B Instruct (BF16)",
        uri="hf://meta-llama/Llama-3.1-405B-Instruct",
        task=Task.CHAT,
        arch=_LLAMA_3_405B,
        unquantized_params_billion=4.2,  # embed + lm_head: 2 x 128256 x 16384
        max_context_length=131072,
        default_context_length=131072,
        default_precision=Precision.BF16,
        checkpoint_precision=Precision.BF16,
        supported_precisions=(Precision.BF16,),
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers=_LLAMA_TOOLS,
        supports_lora=True,
        chat_template_notes=_LLAMA_TOOL_TEMPLATE,
        notes="Meta's original BF16 weights: ~756 GiB, more than one 8 x H100 or 8 x A100 node "
        "holds, so on those classes a replica spans two nodes (tensor parallel 8 inside each, "
        "pipeline parallel 2 across them) on a LeaderWorkerSet; one 8 x H200 node holds it.",
    ),
    CatalogModel(
        id="deepseek-v3",
        display_name="DeepSeek V3",
        uri="hf://deepseek-ai/DeepSeek-V3",
        task=Task.CHAT,
        arch=_DEEPSEEK_V3,
        unquantized_params_billion=2.0,  # embed + lm_head (2 x 129280 x 7168), routers
        max_context_length=163840,
        default_context_length=131072,
        default_precision=Precision.FP8,
        checkpoint_precision=Precision.FP8,
        checkpoint_quantization="fp8",
        supported_precisions=(Precision.FP8,),
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers={EngineType.VLLM: "deepseek_v3", EngineType.SGLANG: "deepseekv3"},
        chat_template_notes="vLLM docs pair deepseek_v3 with "
        "examples/tool_chat_template_deepseekv3.jinja.",
        notes="Published natively in block-wise FP8. The repository also holds a 14B MTP module "
        "(685B total) that is only loaded for MTP speculative decoding. MLA keeps one latent "
        "KV copy per tensor-parallel rank.",
    ),
    CatalogModel(
        id="mixtral-8x22b-instruct",
        display_name="Mixtral MoE 8x22B Instruct",
        uri="hf://mistralai/Mixtral-8x22B-Instruct-v0.1",
        task=Task.CHAT,
        arch=_MIXTRAL_8X22B,
        unquantized_params_billion=0.40,  # embed + lm_head: 2 x 32768 x 6144
        max_context_length=65536,
        default_context_length=65536,
        default_precision=Precision.FP8,
        checkpoint_precision=Precision.BF16,
        supported_precisions=_TEXT_LLM_PRECISIONS,
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers={EngineType.VLLM: "mistral", EngineType.SGLANG: "mistral"},
        supports_lora=True,
    ),
    CatalogModel(
        id="qwen2p5-72b-instruct",
        display_name="Qwen2.5 72B Instruct",
        uri="hf://Qwen/Qwen2.5-72B-Instruct",
        task=Task.CHAT,
        arch=_QWEN2P5_72B,
        unquantized_params_billion=2.49,  # embed + lm_head: 2 x 152064 x 8192
        max_context_length=32768,
        default_context_length=32768,
        default_precision=Precision.FP8,
        checkpoint_precision=Precision.BF16,
        supported_precisions=_TEXT_LLM_PRECISIONS,
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=True,
        tool_call_parsers={EngineType.VLLM: "hermes", EngineType.SGLANG: "qwen25"},
        supports_lora=True,
        notes="config.json gives 32768; 131072 needs YaRN rope_scaling added to the config.",
    ),
    CatalogModel(
        id="firefunction-v2",
        display_name="FireFunction V2",
        uri="hf://fireworks-ai/llama-3-firefunction-v2",
        task=Task.CHAT,
        arch=_LLAMA_3_70B,  # a Llama 3 70B fine-tune
        unquantized_params_billion=2.10,
        max_context_length=8192,
        default_context_length=8192,
        default_precision=Precision.FP8,
        checkpoint_precision=Precision.BF16,
        supported_precisions=_TEXT_LLM_PRECISIONS,
        alternative_engines=(EngineType.SGLANG,),
        supports_tools=False,
        notes="Emits tool calls as ` functools[{...}]`, a format neither vLLM nor SGLang ships a "
        "parser for; served as plain chat unless a tool-parser plugin is supplied.",
    ),
    CatalogModel(
        id="llama-v3p2-11b-vision-instruct",
        display_name="Llama 3.2 11B Vision Instruct",
        uri="hf://meta-llama/Llama-3.2-11B-Vision-Instruct",
        task=Task.CHAT,
        arch=_LLAMA_3P2_11B_VISION,
        max_context_length=131072,
        default_context_length=32768,
        default_precision=Precision.BF16,
        checkpoint_precision=Precision.BF16,
        supported_precisions=(Precision.BF16,),
        engine=EngineType.SGLANG,
        vision=True,
        mm_limits={"image": 1},
        notes="vLLM dropped MllamaForConditionalGeneration after v0.10.2; SGLang serves it. "
        "The model takes one image per prompt.",
    ),
    CatalogModel(
        id="llama-v3p2-90b-vision-instruct",
        display_name="Llama 3.2 90B Vision Instruct",
        uri="hf://meta-llama/Llama-3.2-90B-Vision-Instruct",
        task=Task.CHAT,
        arch=_LLAMA_3P2_90B_VISION,
        max_context_length=131072,
        default_context_length=32768,
        default_precision=Precision.BF16,
        checkpoint_precision=Precision.BF16,
        supported_precisions=(Precision.BF16,),
        engine=EngineType.SGLANG,
        vision=True,
        mm_limits={"image": 1},
        notes="vLLM dropped MllamaForConditionalGeneration after v0.10.2; SGLang serves it.",
    ),
    CatalogModel(
        id="phi-3p5-vision-instruct",
        display_name="Phi 3.5 Vision Instruct",
        uri="hf://microsoft/Phi-3.5-vision-instruct",
        task=Task.CHAT,
        arch=_PHI_3P5_VISION,
        max_context_length=131072,
        default_context_length=16384,
        default_precision=Precision.BF16,
        checkpoint_precision=Precision.BF16,
        supported_precisions=(Precision.BF16,),
        vision=True,
        mm_limits={"image": 2},
        trust_remote_code=True,
        notes="32 KV heads (no GQA), so long contexts are KV-heavy; default trimmed to 16k.",
    ),
    CatalogModel(
        id="whisper-v3",
        display_name="Whisper V3 Large",
        uri="hf://openai/whisper-large-v3",
        task=Task.TRANSCRIPTION,
        arch=_WHISPER_LARGE_V3,
        max_context_length=448,
        default_context_length=448,
        default_precision=Precision.FP16,
        checkpoint_precision=Precision.FP16,
        supported_precisions=(Precision.FP16, Precision.BF16),
        engine_extras=("audio",),
        notes="Served on /v1/audio/transcriptions; the stock vLLM image lacks the audio extra.",
    ),
    CatalogModel(
        id="whisper-v3-turbo",
        display_name="Whisper V3 Turbo",
        uri="hf://openai/whisper-large-v3-turbo",
        task=Task.TRANSCRIPTION,
        arch=_WHISPER_LARGE_V3_TURBO,
        max_context_length=448,
        default_context_length=448,
        default_precision=Precision.FP16,
        checkpoint_precision=Precision.FP16,
        supported_precisions=(Precision.FP16, Precision.BF16),
        engine_extras=("audio",),
        notes="Served on /v1/audio/transcriptions; the stock vLLM image lacks the audio extra.",
    ),
    CatalogModel(
        id="nomic-embed-text-v1p5",
        display_name="Nomic Embed Text v1.5",
        uri="hf://nomic-ai/nomic-embed-text-v1.5",
        task=Task.EMBEDDING,
        arch=_NOMIC_EMBED_V1P5,
        max_context_length=8192,
        default_context_length=8192,
        default_precision=Precision.FP16,
        checkpoint_precision=Precision.FP16,
        supported_precisions=(Precision.FP16,),
        alternative_engines=(EngineType.TEI,),
        trust_remote_code=True,
        pooling="mean",
        notes="Clients prefix inputs with `search_query: ` / `search_document: `. 768-dim "
        "Matryoshka embeddings.",
    ),
    CatalogModel(
        id="e5-mistral-7b-instruct",
        display_name="E5 Mistral 7B Instruct",
        uri="hf://intfloat/e5-mistral-7b-instruct",
        task=Task.EMBEDDING,
        arch=_E5_MISTRAL_7B,
        max_context_length=4096,
        default_context_length=4096,
        default_precision=Precision.FP16,
        checkpoint_precision=Precision.FP16,
        supported_precisions=(Precision.FP16,),
        alternative_engines=(EngineType.TEI,),
        pooling="last-token",
        notes="Trained for inputs up to 4096 tokens (config allows 32768). Queries take an "
        "`Instruct: ...\\nQuery: ` prefix.",
    ),
)

CATALOG: dict[str, CatalogModel] = {m.id: m for m in _MODELS}


def get_model(model_id: str) -> CatalogModel:
    """The catalog entry for `model_id`; KeyError lists the known ids."""
    try:
        return CATALOG[model_id]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise KeyError(f"unknown catalog model {model_id!r}; known: {known}") from None


if len(CATALOG) != len(_MODELS):  # pragma: no cover - guards against a copy-paste id
    raise RuntimeError("duplicate model id in the catalog")
