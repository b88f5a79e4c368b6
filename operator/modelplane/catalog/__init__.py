"""Catalog: models, accelerators and engines with their serving defaults.

Submodules: `accelerators` (GPU kinds and instance shapes), `models` (the model catalog),
`engines` (per-engine images, probes, metrics and flag spellings) and `sizing` (which GPUs a
model needs). All are pure data and functions: no Kubernetes or kopf imports.
"""

from modelplane.catalog.engines import (
    ENGINES,
    VLLM_LORA_RANKS,
    EngineMetrics,
    EngineProfile,
    Flag,
    engine_profile,
)
from modelplane.catalog.models import CATALOG, CatalogModel, ModelArch, get_model
from modelplane.catalog.sizing import (
    DoesNotFit,
    NoFit,
    SizingPlan,
    fits,
    kv_cache_gib,
    plan_accelerator,
    weights_gib,
)

__all__ = [
    "CATALOG",
    "ENGINES",
    "VLLM_LORA_RANKS",
    "CatalogModel",
    "DoesNotFit",
    "EngineMetrics",
    "EngineProfile",
    "Flag",
    "ModelArch",
    "NoFit",
    "SizingPlan",
    "engine_profile",
    "fits",
    "get_model",
    "kv_cache_gib",
    "plan_accelerator",
    "weights_gib",
]
