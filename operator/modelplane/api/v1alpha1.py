"""modelplane.io/v1alpha1: ModelDeployment and AcceleratorClass.

These pydantic models are the single source of the CRDs in `crds/` (see `api.crdgen`). Rules
the apiserver can check (ranges, enums, cross-field and immutability rules in CEL) live here,
next to the fields, each with a message that says how to fix the input. What only the operator
can know (does the model fit the GPUs? does the AcceleratorClass exist?) becomes a condition.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from modelplane.api.enums import (
    EngineType,
    Phase,
    Precision,
    PreloadMode,
    SpeculativeMode,
    Task,
    Tier,
)

GROUP = "modelplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One x-kubernetes-validations entry."""
    return {"rule": rule, "message": message, **extra}


def k8s(*rules: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Schema extras for a model or field: CEL rules and other x-kubernetes-* keys."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


Duration = Annotated[
    str,
    Field(
        max_length=32,
        json_schema_extra=k8s(
            cel(
                "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')",
                "must be a duration such as 30s, 10m, 1h or 1h30m",
            )
        ),
    ),
]
Uri = Annotated[
    str,
    Field(
        max_length=512,
        json_schema_extra=k8s(
            cel(
                "self.matches('^(hf|s3|gs|pvc|oci)://[^ ]+$')",
                "must be a URI starting with hf://, s3://, gs://, pvc:// or oci:// "
                "(e.g. hf://meta-llama/Llama-3.1-8B-Instruct)",
            )
        ),
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]

#: The one way FineTuned adapters are served: loaded at runtime into the base's servers.
MULTI_LORA = "MultiLoRA"
ADAPTER_STRATEGY_MESSAGE = (
    "adapterStrategy must be MultiLoRA (adapters loaded at runtime into the base's servers); "
    "Merged is not supported: merge the adapters offline and serve the merged weights as "
    "tier OnDemand with model.uri (e.g. hf://org/merged-model)"
)
#: A plain string with a rule rather than an enum: the apiserver skips CEL rules after an enum
#: violation, and this message says what to do instead.
AdapterStrategy = Annotated[
    str,
    Field(
        max_length=32,
        description="MultiLoRA (the only strategy): adapters loaded at runtime into the base's "
        "servers.",
        json_schema_extra=k8s(cel(f"self == '{MULTI_LORA}'", ADAPTER_STRATEGY_MESSAGE)),
    ),
]


class Model(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


# --------------------------------------------------------------------------- spec pieces
class SecretRef(Model):
    """A Secret in the ModelDeployment's namespace; the value never appears in the spec."""

    name: Name
    key: str | None = Field(
        default=None, max_length=253, description="Key in the Secret (default: token)."
    )


class ModelSource(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "has(self.catalog) || has(self.uri)",
                "set model.catalog (a catalog id, e.g. llama-v3p1-8b-instruct) or model.uri "
                "(hf://org/repo, s3://bucket/path, gs://bucket/path, pvc://claim/path, oci://image)",
            )
        )
    )

    catalog: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[a-z0-9][a-z0-9.\-]*$",
        description="Catalog id; fills the source, engine flags, context length and accelerator.",
    )
    uri: Uri | None = Field(
        default=None, description="Where the weights are: hf://, s3://, gs://, pvc:// or oci://."
    )
    revision: str | None = Field(
        default=None, max_length=128, description="Pin the weights (commit or tag)."
    )
    served_name: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/\-]*$",
        description="The OpenAI `model` value clients send (default: metadata.name).",
    )
    aliases: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=16,
        description="Extra `model` names accepted (migrations).",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None, description="Secret holding the token for a gated or private source."
    )


class ToolCalling(Model):
    enabled: bool = False
    parser: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9_]+$",
        description="Engine tool-call parser (default: the catalog's, e.g. llama3_json).",
    )


class SpeculativeDecoding(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "!has(self.mode) || self.mode != 'DraftModel' || has(self.draftModel)",
                "speculativeDecoding.mode DraftModel needs draftModel (e.g. hf://org/small-draft-model)",
            ),
            cel(
                "(has(self.mode) && self.mode == 'DraftModel') || !has(self.draftModel)",
                "draftModel is only used with mode DraftModel: remove it or set mode: DraftModel",
            ),
        )
    )

    mode: SpeculativeMode = SpeculativeMode.DISABLED
    draft_model: Uri | None = None
    num_tokens: int = Field(default=4, ge=1, le=16, description="Tokens proposed per step.")


class LoRA(Model):
    max_adapters: int = Field(default=8, ge=1, le=256, description="Adapters resident per replica.")
    max_rank: int = Field(default=64, ge=1, le=512)


class EnvVar(Model):
    """Plain settings only; anything secret goes through valueFrom.secretKeyRef."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "has(self.value) != has(self.secretKeyRef)",
                "set exactly one of value or secretKeyRef",
            ),
            cel(
                "!has(self.value) || !self.name.matches('(?i)(TOKEN|SECRET|PASSWORD|API_?KEY)')",
                "do not put credentials in the spec: store them in a Secret and use secretKeyRef",
            ),
        )
    )

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str | None = Field(default=None, max_length=4096)
    secret_key_ref: SecretRef | None = None


#: LoRA ranks vLLM accepts (``MaxLoRARanks``; catalog.engines.VLLM_LORA_RANKS, checked equal).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_NO_SPECULATION = (
    "!has(self.speculativeDecoding) || !has(self.speculativeDecoding.mode) "
    "|| self.speculativeDecoding.mode == 'Disabled'"
)


class Engine(Model):
    """Options each engine cannot honour are refused here when ``type`` names the engine, and
    by the operator (Ready=False, reason EngineOptionUnsupported) when the catalog picks it."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "!has(self.type) || self.type != 'TEI' || !has(self.toolCalling) "
                "|| !has(self.toolCalling.enabled) || !self.toolCalling.enabled",
                "TEI serves embeddings only: disable toolCalling or use engine type VLLM",
            ),
            cel(
                f"!has(self.type) || self.type != 'SGLang' || {_NO_SPECULATION}",
                "engine.speculativeDecoding is not supported on SGLang by modelplane: remove "
                "engine.speculativeDecoding or use engine type VLLM",
            ),
            cel(
                "!has(self.type) || self.type != 'TEI' || (!has(self.lora) "
                f"&& ({_NO_SPECULATION}) && (!has(self.pipelineParallelSize) "
                "|| self.pipelineParallelSize == 1) && (!has(self.tensorParallelSize) "
                "|| self.tensorParallelSize == 1) && !has(self.structuredOutputs))",
                "TEI runs one embedding model per GPU: remove engine.lora, "
                "engine.speculativeDecoding, engine.structuredOutputs and tensor/pipeline "
                "parallelism, or use engine type VLLM",
            ),
            cel(
                "!has(self.type) || self.type != 'VLLM' || !has(self.structuredOutputs) "
                "|| self.structuredOutputs",
                "engine.structuredOutputs false: vLLM cannot turn structured outputs off (they "
                "are served when a request asks); remove engine.structuredOutputs, or use "
                "engine type SGLang (--grammar-backend none)",
            ),
            cel(
                "!has(self.type) || self.type != 'VLLM' || !has(self.lora) "
                "|| !has(self.lora.maxRank) || self.lora.maxRank in "
                f"[{', '.join(str(r) for r in VLLM_LORA_RANKS)}]",
                "engine.lora.maxRank must be a rank vLLM accepts: "
                f"{', '.join(str(r) for r in VLLM_LORA_RANKS)} (e.g. 64)",
            ),
        )
    )

    type: EngineType = EngineType.VLLM
    image: str | None = Field(
        default=None, max_length=512, description="Default: the catalog's pinned image."
    )
    precision: Precision | None = Field(default=None, description="Default: the catalog model's.")
    max_context_length: int | None = Field(default=None, ge=256, le=10_485_760)
    tensor_parallel_size: int | None = Field(
        default=None, ge=1, le=64, description="Default: accelerator.count / pipeline."
    )
    pipeline_parallel_size: int = Field(default=1, ge=1, le=16)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.1, le=0.98)
    tool_calling: ToolCalling | None = None
    structured_outputs: bool | None = Field(
        default=None,
        description="true: serve structured outputs (JSON schema, regex) with the engine's "
        "grammar backend; false: turn them off (SGLang only); unset: the engine's default.",
    )
    speculative_decoding: SpeculativeDecoding | None = None
    lora: LoRA | None = None
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list,
        max_length=64,
        description="Passthrough engine arguments, appended last (they win).",
        json_schema_extra=k8s(
            cel(
                "!self.exists(a, a.matches('^--(hf-token|api-key)') || a.matches('hf_[A-Za-z0-9]{30,}'))",
                "do not put tokens in engine.args: reference a Secret with model.credentialsSecretRef",
            )
        ),
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=32)


class AcceleratorRequest(Model):
    class_: str | None = Field(
        default=None,
        alias="class",
        max_length=63,
        pattern=DNS_LABEL,
        description="An AcceleratorClass (default: the catalog's computed choice).",
    )
    count: int | None = Field(default=None, ge=1, le=64, description="GPUs per replica.")
    fallbacks: list[Name] = Field(default_factory=list, max_length=4)


class Replicas(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "!has(self.max) || (has(self.min) ? self.min : 0) <= self.max",
                "replicas.min must be <= replicas.max: lower min or raise max",
            ),
        )
    )

    min: int = Field(default=0, ge=0, le=1000, description="Default 0 (scale to zero when idle).")
    max: int | None = Field(default=None, ge=0, le=1000, description="Default max(min, 1).")

    @property
    def effective_max(self) -> int:
        return self.max if self.max is not None else max(self.min, 1)

    pinned: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed replica count set by `kubectl scale mdep` (the /scale subresource); "
        "pauses the autoscaler. Remove to resume autoscaling.",
    )


class LoadTargets(Model):
    """Per-replica targets; the highest replica count across them wins."""

    concurrent_requests: float | None = Field(default=None, gt=0, le=100_000)
    requests_per_second: float | None = Field(default=None, gt=0, le=100_000)
    tokens_generated_per_second: float | None = Field(default=None, gt=0, le=10_000_000)
    prompt_tokens_per_second: float | None = Field(default=None, gt=0, le=100_000_000)
    kv_cache_utilization: float | None = Field(default=None, gt=0, le=1)
    queue_depth: float | None = Field(default=None, gt=0, le=100_000)


class Autoscaling(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "!has(self.scaleUpWindow) || duration(self.scaleUpWindow) <= duration('1h')",
                "autoscaling.scaleUpWindow must be at most 1h",
            ),
            cel(
                "!has(self.scaleDownWindow) || duration(self.scaleDownWindow) >= duration('30s')",
                "autoscaling.scaleDownWindow must be at least 30s (e.g. 10m)",
            ),
            cel(
                "!has(self.scaleToZeroWindow) || duration(self.scaleToZeroWindow) >= duration('5m')",
                "autoscaling.scaleToZeroWindow must be at least 5m (e.g. 1h)",
            ),
        )
    )

    scale_up_window: Duration = "30s"
    scale_down_window: Duration = "10m"
    scale_to_zero_window: Duration | None = Field(
        default=None,
        description="Idle time before scaling to zero (>= 5m; only with replicas.min 0). Default 1h.",
    )
    load_targets: LoadTargets | None = None


class Preload(Model):
    mode: PreloadMode = PreloadMode.NONE
    warm_nodes: int = Field(
        default=0, ge=0, le=16, description="Nodes of the class kept provisioned."
    )
    retain_cache: bool = Field(
        default=True, description="Keep cached weights when this object is deleted."
    )


class BaseRef(Model):
    model_config = ConfigDict(
        json_schema_extra=k8s(
            cel(
                "has(self.deployment) != has(self.catalog)",
                "base needs exactly one of deployment (a ModelDeployment in this namespace) or catalog",
            )
        )
    )

    deployment: Name | None = None
    catalog: str | None = Field(default=None, max_length=128, pattern=r"^[a-z0-9][a-z0-9.\-]*$")


class Adapter(Model):
    name: Name
    uri: Uri
    credentials_secret_ref: SecretRef | None = None


SPEC_RULES = k8s(
    cel(
        "self.tier == oldSelf.tier",
        "tier is immutable: create a new ModelDeployment for another tier",
    ),
    cel(
        "self.tier == 'FineTuned' || has(self.model)",
        "spec.model is required: set model.catalog or model.uri",
    ),
    cel(
        "self.tier != 'Serverless' || (!has(self.accelerator) && !has(self.replicas))",
        "Serverless deployments run on shared, platform-managed GPUs: remove spec.accelerator and "
        "spec.replicas, or use tier OnDemand to choose GPUs and replica counts",
    ),
    cel(
        "self.tier != 'FineTuned' || (has(self.adapters) && size(self.adapters) > 0 && has(self.base))",
        "tier FineTuned needs spec.base (deployment or catalog) and at least one entry in spec.adapters",
    ),
    cel(
        "self.tier == 'FineTuned' || (!has(self.adapters) && !has(self.base))",
        "spec.adapters and spec.base are only for tier FineTuned",
    ),
    cel(
        "!has(self.autoscaling) || !has(self.autoscaling.scaleToZeroWindow) "
        "|| !has(self.replicas) || !has(self.replicas.min) || self.replicas.min == 0",
        "autoscaling.scaleToZeroWindow only applies with replicas.min 0: remove it or set min to 0",
    ),
    cel(
        "!has(self.accelerator) || !has(self.accelerator.count) || !has(self.engine) "
        "|| self.accelerator.count % ((has(self.engine.tensorParallelSize) ? "
        "self.engine.tensorParallelSize : 1) * (has(self.engine.pipelineParallelSize) ? "
        "self.engine.pipelineParallelSize : 1)) == 0",
        "accelerator.count must be a multiple of engine.tensorParallelSize x "
        "engine.pipelineParallelSize",
    ),
    cel(
        "!has(self.engine) || !has(self.engine.type) || self.engine.type != 'TEI' "
        "|| !has(self.task) || self.task == 'Embedding'",
        "engine type TEI serves only task Embedding: use engine type VLLM for this task",
    ),
    cel(
        "!has(self.adapters) || self.adapters.all(a, self.adapters.exists_one(b, b.name == a.name))",
        "adapter names must be unique",
    ),
)


class ModelDeploymentSpec(Model):
    model_config = ConfigDict(json_schema_extra=SPEC_RULES)

    tier: Tier
    model: ModelSource | None = None
    task: Task | None = Field(default=None, description="Default: the catalog model's, else Chat.")
    engine: Engine | None = None
    accelerator: AcceleratorRequest | None = None
    replicas: Replicas | None = None
    autoscaling: Autoscaling | None = None
    preload: Preload | None = None
    base: BaseRef | None = None
    adapters: list[Adapter] = Field(default_factory=list, max_length=64)
    adapter_strategy: AdapterStrategy = MULTI_LORA

    @field_validator("adapter_strategy")
    @classmethod
    def _only_multi_lora(cls, v: str) -> str:
        if v != MULTI_LORA:  # an object stored before Merged was removed
            raise ValueError(ADAPTER_STRATEGY_MESSAGE)
        return v


# --------------------------------------------------------------------------- status
class Condition(Model):
    """metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class ReplicaStats(Model):
    pending_capacity: int = 0
    downloading_weights: int = 0
    initializing: int = 0
    ready: int = 0


class Endpoint(Model):
    url: str
    model: str
    aliases: list[str] = Field(default_factory=list, max_length=16)


class AcceleratorStatus(Model):
    class_: str = Field(alias="class")
    count: int
    node_pool: str | None = None


class Cost(Model):
    gpu_hourly: str
    currency: str = "USD"


class AutoscalerStatus(Model):
    desired_replicas: int
    last_scale_time: str | None = None
    last_decision: str | None = None
    reason: str | None = None


class AdapterStatus(Model):
    name: str
    loaded_replicas: int = 0
    total_replicas: int = 0
    reason: str | None = None
    message: str | None = None


class Usage(Model):
    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    audio_seconds: float | None = None
    cost_usd: float | None = Field(
        default=None, alias="costUSD", description="Metered cost at the catalog's prices."
    )
    since: str | None = None
    at: str | None = Field(default=None, description="The latest metered request.")


class PreloadStatus(Model):
    mode: PreloadMode
    cached_nodes: int = 0
    class_nodes: int = 0
    downloading: int = 0
    warm_nodes: int = 0
    message: str | None = None


class ModelDeploymentStatus(Model):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    phase: Phase | None = None
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int = 0
    ready: str | None = Field(default=None, description="ready/desired, for kubectl get.")
    selector: str | None = None
    replica_stats: ReplicaStats | None = None
    endpoint: Endpoint | None = None
    model: str | None = Field(default=None, description="Resolved model (catalog id or uri).")
    accelerator: AcceleratorStatus | None = None
    cost: Cost | None = None
    autoscaler: AutoscalerStatus | None = None
    adapters: list[AdapterStatus] = Field(default_factory=list, max_length=64)
    usage: Usage | None = None
    backend: str | None = Field(
        default=None, description="Serverless: namespace/name of the shared backend serving this."
    )
    preload: PreloadStatus | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(Model):
    model_config = ConfigDict(extra="ignore")

    kind_name: ClassVar[str] = "ModelDeployment"
    api_version: Literal["modelplane.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None


# --------------------------------------------------------------------------- AcceleratorClass
class Toleration(Model):
    key: str = Field(max_length=253)
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class NodeClassRef(Model):
    group: str = Field(max_length=253)
    kind: str = Field(max_length=63)
    name: str = Field(max_length=253)


class NodeSelectorRequirement(Model):
    key: str = Field(max_length=316)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=32)


class KarpenterProvisioning(Model):
    node_class_ref: NodeClassRef
    requirements: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=32)
    gpu_limit: int | None = Field(
        default=None, ge=1, description="Cap on GPUs the NodePool may launch."
    )


class Provisioning(Model):
    karpenter: KarpenterProvisioning | None = None


class AcceleratorClassSpec(Model):
    display_name: str = Field(max_length=128)
    gpu_product: str = Field(max_length=128, description="nvidia.com/gpu.product of its nodes.")
    gpu_family: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z\-]+$",
        description="nvidia.com/gpu.family (ampere, ada-lovelace, hopper, blackwell); decides "
        "which precisions run natively.",
    )
    gpu_memory_gi_b: int = Field(alias="gpuMemoryGiB", ge=1, le=4096)
    gpu_memory_mi_b: int | None = Field(
        default=None, alias="gpuMemoryMiB", ge=1, description="Usable MiB per GPU as reported."
    )
    gpus_per_node: int = Field(ge=1, le=64)
    price_per_gpu_hour: str = Field(
        alias="pricePerGPUHour", pattern=r"^[0-9]+(\.[0-9]{1,4})?$", max_length=16
    )
    instance_types: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=16
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 16}
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=8)
    provisioning: Provisioning | None = None


class AcceleratorClass(Model):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["modelplane.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["AcceleratorClass"] = "AcceleratorClass"
    metadata: ObjectMeta
    spec: AcceleratorClassSpec
