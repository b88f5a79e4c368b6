"""Closed vocabularies of the v1alpha1 API (each becomes an OpenAPI enum in the CRD)."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    SERVERLESS = "Serverless"
    ON_DEMAND = "OnDemand"
    FINE_TUNED = "FineTuned"


class Task(StrEnum):
    CHAT = "Chat"  # chat completions; vision models are Chat with image inputs
    COMPLETION = "Completion"
    EMBEDDING = "Embedding"
    TRANSCRIPTION = "Transcription"


class EngineType(StrEnum):
    VLLM = "VLLM"
    SGLANG = "SGLang"
    TEI = "TEI"  # text-embeddings-inference, Embedding only


class Precision(StrEnum):
    BF16 = "BF16"
    FP16 = "FP16"
    FP8 = "FP8"
    FP4 = "FP4"

    @property
    def bytes_per_param(self) -> float:
        return {"BF16": 2.0, "FP16": 2.0, "FP8": 1.0, "FP4": 0.5}[self.value]


class SpeculativeMode(StrEnum):
    DISABLED = "Disabled"
    DRAFT_MODEL = "DraftModel"
    NGRAM = "NGram"


class PreloadMode(StrEnum):
    NONE = "None"
    NODE_LOCAL = "NodeLocal"
    SHARED_VOLUME = "SharedVolume"


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    LOADING = "Loading"
    READY = "Ready"
    SCALED_TO_ZERO = "ScaledToZero"
    UPDATING = "Updating"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class CapacityProvider(StrEnum):
    KARPENTER = "karpenter"
    STATIC = "static"


class FailureReason(StrEnum):
    """Reasons of `Ready=False` that no amount of waiting fixes: the spec, the cluster or a
    conflicting object must change. Every reason a ResolveError or a sizing NoFit carries is
    one (phase Failed), and AdapterLoadFailed (phase Degraded). Argo CD's health check
    (examples/gitops/argocd) reports exactly these as Degraded; a unit test keeps them equal."""

    ACCELERATOR_REQUIRED = "AcceleratorRequired"
    ADAPTER_LOAD_FAILED = "AdapterLoadFailed"
    BASE_NOT_FOUND = "BaseNotFound"
    BASE_NOT_READY = "BaseNotReady"
    CATALOG_MODEL_REQUIRED = "CatalogModelRequired"
    CHILD_CONFLICT = "ChildConflict"
    CONTEXT_TOO_LONG = "ContextTooLong"
    ENGINE_OPTION_UNSUPPORTED = "EngineOptionUnsupported"
    ENGINE_UNSUPPORTED = "EngineUnsupported"
    INTERNAL_ERROR = "InternalError"
    INVALID_BASE = "InvalidBase"
    INVALID_GPU_COUNT = "InvalidGPUCount"
    INVALID_MODEL_SETTINGS = "InvalidModelSettings"
    INVALID_NAME = "InvalidName"
    INVALID_PARALLELISM = "InvalidParallelism"
    MODEL_TOO_LARGE = "ModelTooLarge"
    NO_ACCELERATOR_CLASS = "NoAcceleratorClass"
    PRECISION_UNSUPPORTED = "PrecisionUnsupported"
    TOOL_PARSER_REQUIRED = "ToolParserRequired"
    UNKNOWN = "Unknown"
    UNKNOWN_MODEL = "UnknownModel"
    UNKNOWN_TOOL_PARSER = "UnknownToolParser"
    WRITE_REJECTED = "WriteRejected"
