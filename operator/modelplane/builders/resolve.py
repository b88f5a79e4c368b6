"""Resolve a ModelDeployment against the catalog and the cluster's AcceleratorClasses.

The result, `Resolved`, is every decision the builders need, made once: which weights, which
engine and image, which precision and context, which GPU kind and how many per replica (computed
from weight size + KV cache by `catalog.sizing` when the user did not say), tensor/pipeline
parallelism, and the hourly price. What cannot be resolved is a `ResolveError` whose reason and
message become the `Ready=False` condition verbatim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from modelplane.api.enums import (
    EngineType,
    Precision,
    PreloadMode,
    SpeculativeMode,
    Task,
    Tier,
)
from modelplane.api.v1alpha1 import (
    AcceleratorClassSpec,
    Engine,
    ModelDeployment,
    ModelSource,
    SecretRef,
)
from modelplane.catalog import sizing
from modelplane.catalog.accelerators import Accelerator, InstanceShape
from modelplane.catalog.engines import EngineProfile, engine_profile
from modelplane.catalog.models import CATALOG, CatalogModel


class ResolveError(Exception):
    """The spec is valid but cannot be served as asked; reason is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_FAMILY_BY_PRODUCT = (
    ("H100", "hopper"),
    ("H200", "hopper"),
    ("GH200", "hopper"),
    ("B200", "blackwell"),
    ("B100", "blackwell"),
    ("L40", "ada-lovelace"),
    ("L4", "ada-lovelace"),
    ("A100", "ampere"),
    ("A10", "ampere"),
)


def accelerator_from_class(name: str, spec: AcceleratorClassSpec) -> Accelerator:
    """The catalog view of a cluster AcceleratorClass (for sizing)."""
    family = spec.gpu_family
    if family is None:
        family = next((f for key, f in _FAMILY_BY_PRODUCT if key in spec.gpu_product), "ampere")
    shapes = tuple(
        InstanceShape(t, spec.gpus_per_node, 0, 0) for t in (spec.instance_types or [name])
    )
    return Accelerator(
        name=name,
        display_name=spec.display_name,
        gpu_product=spec.gpu_product,
        gpu_family=family,
        memory_gib=spec.gpu_memory_gi_b,
        memory_mib=spec.gpu_memory_mi_b or spec.gpu_memory_gi_b * 1024,
        price_per_gpu_hour=Decimal(spec.price_per_gpu_hour),
        shapes=shapes,
    )


@dataclass(frozen=True)
class Resolved:
    name: str
    namespace: str
    tier: Tier
    task: Task
    catalog: CatalogModel | None
    uri: str
    revision: str | None
    served_name: str
    aliases: tuple[str, ...]
    credentials: SecretRef | None
    engine: EngineProfile
    image: str
    precision: Precision | None
    context_length: int | None
    accelerator_class: str
    accelerator: AcceleratorClassSpec
    gpu_count: int
    tensor_parallel: int
    pipeline_parallel: int
    gpu_memory_utilization: float | None
    tool_calling: bool
    tool_parser: str | None
    structured_outputs: bool | None
    speculative_mode: SpeculativeMode
    draft_model: str | None
    speculative_tokens: int
    lora: bool
    max_loras: int
    max_lora_rank: int
    extra_args: tuple[str, ...]
    env: tuple[tuple[str, str | None, SecretRef | None], ...]
    min_replicas: int
    max_replicas: int
    pinned_replicas: int | None
    sizing_explanation: str
    notes: tuple[str, ...] = field(default=())
    preload_mode: PreloadMode = PreloadMode.NONE
    warm_nodes: int = 0
    retain_cache: bool = True

    @property
    def scheme(self) -> str:
        return self.uri.partition("://")[0]

    @property
    def model_label(self) -> str:
        """What the MODEL printer column shows."""
        return self.catalog.id if self.catalog else self.uri

    @property
    def hourly_cost_per_replica(self) -> Decimal:
        return Decimal(self.accelerator.price_per_gpu_hour) * self.gpu_count


def engine_type_of(md: ModelDeployment) -> EngineType:
    """The engine a ModelDeployment's servers run, as ``resolve`` picks it: engine.type when
    set, else the catalog model's engine, else vLLM (FineTuned: its catalog base's)."""
    spec = md.spec
    e = spec.engine
    if e is not None and "type" in e.model_fields_set:
        return e.type
    catalog = spec.model.catalog if spec.model else (spec.base.catalog if spec.base else None)
    cat = CATALOG.get(catalog) if catalog else None
    return cat.engine if cat else EngineType.VLLM


def resolve(md: ModelDeployment, classes: dict[str, AcceleratorClassSpec]) -> Resolved:
    """Every serving decision for `md`, or ResolveError (checked in the order below: the
    first problem found is the one reported)."""
    spec = md.spec
    src, cat = _source(md)
    e = spec.engine
    task = spec.task or (cat.task if cat else Task.CHAT)
    engine_type = (e.type if e and "type" in e.model_fields_set else None) or (
        cat.engine if cat else EngineType.VLLM
    )
    profile = _profile(engine_type, task)
    precision = (e.precision if e else None) or (cat.default_precision if cat else None)
    context = _context(e, cat)
    uri = src.uri or (cat.uri if cat else "")
    util = e.gpu_memory_utilization if e else None
    class_name, count, explanation = _placement(md, cat, precision, context, uri, classes, util)
    acc = classes[class_name]
    tp, pp = _parallelism(e, cat, class_name, acc, count)
    tool_on, parser = _tool_calling(e, cat, profile)
    unsupported(profile, e, pp)
    image = (
        e.image
        if e and e.image
        else profile.image_for(
            acc.gpu_product,
            acc.gpu_family or accelerator_from_class(class_name, acc).gpu_family,
            cat.engine_extras if cat else (),
        )
    )
    return Resolved(
        name=md.metadata.name,
        namespace=md.metadata.namespace or "default",
        tier=spec.tier,
        task=task,
        catalog=cat,
        uri=uri,
        revision=src.revision or (cat.revision if cat else None),
        served_name=src.served_name or md.metadata.name,
        aliases=tuple(src.aliases),
        credentials=src.credentials_secret_ref,
        engine=profile,
        image=image,
        tool_parser=parser if tool_on else None,
        tool_calling=tool_on,
        precision=precision,
        context_length=context,
        gpu_memory_utilization=util,
        **_engine_options(e),
        accelerator_class=class_name,
        accelerator=acc,
        gpu_count=count,
        **_replicas_and_preload(md),
        tensor_parallel=tp,
        pipeline_parallel=pp,
        sizing_explanation=explanation,
    )


def _source(md: ModelDeployment) -> tuple[ModelSource, CatalogModel | None]:
    """The spec's model source and its catalog entry (None for a model given by uri)."""
    spec = md.spec
    if spec.tier == Tier.FINE_TUNED:
        raise ResolveError(
            "InternalError", "FineTuned objects are resolved through resolve_fine_tuned()"
        )
    src = spec.model
    if spec.tier == Tier.SERVERLESS and (src is None or not src.catalog):
        raise ResolveError(
            "CatalogModelRequired",
            "Serverless serves catalog models on shared GPUs: set model.catalog, or use tier "
            "OnDemand to serve your own weights",
        )
    assert src is not None  # the CRD requires it outside FineTuned
    if not src.catalog:
        return src, None
    cat = CATALOG.get(src.catalog)
    if cat is None:
        known = ", ".join(sorted(CATALOG))
        raise ResolveError(
            "UnknownModel",
            f"model.catalog {src.catalog!r} is not in the catalog; known: {known}",
        )
    return src, cat


def _profile(engine_type: EngineType, task: Task) -> EngineProfile:
    profile = engine_profile(engine_type)
    if not profile.supports(task):
        able = (
            e.value
            for e in (EngineType.VLLM, EngineType.SGLANG)
            if engine_profile(e).supports(task)
        )
        raise ResolveError(
            "EngineUnsupported",
            f"engine {engine_type.value} cannot serve task {task.value}; "
            f"use one of: {', '.join(able)}",
        )
    return profile


def _context(e: Engine | None, cat: CatalogModel | None) -> int | None:
    context = (e.max_context_length if e else None) or (cat.default_context_length if cat else None)
    if cat and context and context > cat.max_context_length:
        raise ResolveError(
            "ContextTooLong",
            f"engine.maxContextLength {context} exceeds {cat.id}'s native context "
            f"{cat.max_context_length}; lower it",
        )
    return context


def _placement(
    md: ModelDeployment,
    cat: CatalogModel | None,
    precision: Precision | None,
    context: int | None,
    uri: str,
    classes: dict[str, AcceleratorClassSpec],
    util: float | None,
) -> tuple[str, int, str]:
    """(AcceleratorClass, GPUs per replica, how that was decided): sized from the catalog
    unless the spec names both, on the requested class (or its first existing fallback)."""
    if not classes:
        raise ResolveError(
            "NoAcceleratorClass",
            "no AcceleratorClass exists in the cluster; install the chart's defaults "
            "(defaultAcceleratorClasses=true) or create one",
        )
    req = md.spec.accelerator
    want_class = req.class_ if req else None
    want_count = req.count if req else None
    if want_class is not None and want_class not in classes:
        fallbacks = [f for f in (req.fallbacks if req else []) if f in classes]
        if not fallbacks:
            raise ResolveError(
                "NoAcceleratorClass",
                f"AcceleratorClass {want_class!r} does not exist; available: "
                f"{', '.join(sorted(classes))}",
            )
        want_class = fallbacks[0]
    if cat is not None and precision is not None and context is not None:
        plan = _sized(cat, precision, context, classes, want_class, want_count, util)
        return plan.accelerator, plan.gpu_count, plan.explanation
    if not want_class or not want_count:
        raise ResolveError(
            "AcceleratorRequired",
            "a model given only by model.uri has no catalog sizing: set spec.accelerator.class "
            "and spec.accelerator.count (and engine.maxContextLength)",
        )
    return (
        want_class,
        want_count,
        f"{want_count} x {want_class} as requested (no catalog sizing for {uri})",
    )


def _sized(
    cat: CatalogModel,
    precision: Precision,
    context: int,
    classes: dict[str, AcceleratorClassSpec],
    want_class: str | None,
    want_count: int | None,
    util: float | None,
) -> sizing.SizingPlan:
    """The catalog's sizing: check a requested count, else the cheapest count on the
    requested class, else the cheapest class and count of all."""
    candidates = [want_class] if want_class else sorted(classes)
    accs = [accelerator_from_class(n, classes[n]) for n in candidates]
    utilization = util or sizing.DEFAULT_GPU_MEMORY_UTILIZATION
    if want_class and want_count:
        fit = sizing.fits(
            cat, precision, context, accs[0], want_count, gpu_memory_utilization=utilization
        )
        if isinstance(fit, sizing.NoFit):
            raise ResolveError(fit.reason, fit.message)
        return fit
    try:
        if want_class:
            return _cheapest_on(cat, precision, context, accs[0], util)
        return sizing.plan_accelerator(
            cat, precision, context, accs, gpu_memory_utilization=utilization
        )
    except sizing.DoesNotFit as e:
        hint = sizing.multinode_hint(cat, precision, context, accs, utilization)  # multi-node
        raise ResolveError("ModelTooLarge", e.message + hint) from None
    except ValueError as e:
        raise ResolveError("InvalidModelSettings", str(e)) from None


def _parallelism(
    e: Engine | None,
    cat: CatalogModel | None,
    class_name: str,
    acc: AcceleratorClassSpec,
    count: int,
) -> tuple[int, int]:
    """(tensor parallel, pipeline parallel) of a replica of `count` GPUs on one node."""
    if count > acc.gpus_per_node:
        raise ResolveError(
            "InvalidGPUCount",
            f"accelerator.count {count} exceeds the {acc.gpus_per_node} GPUs of one "
            f"{class_name} node; multi-node replicas are not supported yet",
        )
    pp = e.pipeline_parallel_size if e else 1
    tp = (e.tensor_parallel_size if e else None) or max(count // pp, 1)
    if tp * pp > count or count % (tp * pp):
        raise ResolveError(
            "InvalidParallelism",
            f"tensorParallelSize {tp} x pipelineParallelSize {pp} must divide accelerator.count {count}",
        )
    if cat is not None and cat.arch.num_attention_heads % tp:
        raise ResolveError(
            "InvalidParallelism",
            f"{cat.id} has {cat.arch.num_attention_heads} attention heads, not divisible by "
            f"tensor parallel size {tp}; use a count that divides it",
        )
    return tp, pp


def _tool_calling(
    e: Engine | None, cat: CatalogModel | None, profile: EngineProfile
) -> tuple[bool, str | None]:
    """(tool calling on, the tool-call parser: the spec's, else the catalog's default)."""
    tools = e.tool_calling if e else None
    tool_on = bool(tools and tools.enabled)
    parser = (tools.parser if tools else None) or (
        cat.tool_call_parser(profile.engine) if cat else None
    )
    if tool_on and not parser:
        raise ResolveError(
            "ToolParserRequired",
            "engine.toolCalling.enabled needs engine.toolCalling.parser for a model without a "
            "catalog default (e.g. hermes, llama3_json, mistral)",
        )
    if tool_on and parser and profile.tool_call_parsers and parser not in profile.tool_call_parsers:
        raise ResolveError(
            "UnknownToolParser",
            f"tool-call parser {parser!r} is not known to {profile.engine.value}; known: "
            f"{', '.join(sorted(profile.tool_call_parsers))}",
        )
    return tool_on, parser


def _engine_options(e: Engine | None) -> dict[str, Any]:
    """The Resolved fields copied from engine options: outputs, speculation, LoRA, passthrough."""
    spec_dec = e.speculative_decoding if e else None
    lora = e.lora if e else None
    return {
        "structured_outputs": e.structured_outputs if e else None,
        "speculative_mode": spec_dec.mode if spec_dec else SpeculativeMode.DISABLED,
        "draft_model": spec_dec.draft_model if spec_dec else None,
        "speculative_tokens": spec_dec.num_tokens if spec_dec else 0,
        "lora": lora is not None,
        "max_loras": lora.max_adapters if lora else 0,
        "max_lora_rank": lora.max_rank if lora else 0,
        "extra_args": tuple(e.args) if e else (),
        "env": tuple((v.name, v.value, v.secret_key_ref) for v in (e.env if e else [])),
    }


def _replicas_and_preload(md: ModelDeployment) -> dict[str, Any]:
    """The Resolved fields copied from spec.replicas and spec.preload."""
    reps, pre = md.spec.replicas, md.spec.preload
    return {
        "min_replicas": reps.min if reps else 0,
        "max_replicas": reps.effective_max if reps else 1,
        "pinned_replicas": reps.pinned if reps else None,
        "preload_mode": pre.mode if pre else PreloadMode.NONE,
        "warm_nodes": pre.warm_nodes if pre else 0,
        "retain_cache": pre.retain_cache if pre else True,
    }


def unsupported(profile: EngineProfile, e: Engine | None, pipeline_parallel: int) -> None:
    """ResolveError for an option of the spec this engine cannot honour (nothing is dropped
    silently); the CRD refuses the same when engine.type names the engine."""
    if e is None:
        return
    name = f"{profile.engine.value} {profile.version}"
    fix = "use engine type VLLM"
    problems: list[str] = []
    spec_dec = e.speculative_decoding
    if (
        spec_dec
        and spec_dec.mode != SpeculativeMode.DISABLED
        and not profile.speculative_config_flag
    ):
        problems.append(f"engine.speculativeDecoding ({spec_dec.mode.value}): remove it or {fix}")
    if pipeline_parallel > 1 and not profile.pipeline_parallel_flag:
        problems.append(f"engine.pipelineParallelSize {pipeline_parallel}: set it to 1 or {fix}")
    if (e.tensor_parallel_size or 1) > 1 and not profile.tensor_parallel_flag:
        problems.append(f"engine.tensorParallelSize {e.tensor_parallel_size}: set it to 1 or {fix}")
    if e.lora is not None and not profile.supports_lora:
        problems.append(f"engine.lora: remove it or {fix}")
    if e.lora is not None and profile.lora_ranks and e.lora.max_rank not in profile.lora_ranks:
        ranks = ", ".join(str(r) for r in profile.lora_ranks)
        up = next((r for r in profile.lora_ranks if r >= e.lora.max_rank), profile.lora_ranks[-1])
        problems.append(
            f"engine.lora.maxRank {e.lora.max_rank}: {profile.engine.value} accepts only {ranks}; "
            f"set maxRank: {up}"
        )
    if e.structured_outputs is False and profile.structured_outputs_off is None:
        problems.append(
            "engine.structuredOutputs false: this engine cannot turn structured outputs off "
            "(they are served when a request asks); remove engine.structuredOutputs or use "
            "engine type SGLang"
        )
    if e.structured_outputs is True and not profile.structured_outputs_on:
        problems.append(f"engine.structuredOutputs: remove it or {fix}")
    if problems:
        raise ResolveError(
            "EngineOptionUnsupported", f"{name} cannot honour " + "; ".join(problems)
        )


def _cheapest_on(
    cat: CatalogModel, precision: Precision, context: int, acc: Accelerator, util: float | None
) -> sizing.SizingPlan:
    """The smallest valid GPU count of one given accelerator that holds the model."""
    last: sizing.NoFit | None = None
    for n in sizing.candidate_counts(cat, acc):
        fit = sizing.fits(
            cat,
            precision,
            context,
            acc,
            n,
            gpu_memory_utilization=util or sizing.DEFAULT_GPU_MEMORY_UTILIZATION,
        )
        if isinstance(fit, sizing.SizingPlan):
            return fit
        last = fit
    if last is not None and last.reason != "ModelTooLarge":
        raise ResolveError(last.reason, last.message)
    raise ResolveError(
        "ModelTooLarge",
        (last.message if last else f"{cat.id} cannot be placed on {acc.name}")
        + f"; choose a larger AcceleratorClass than {acc.name} or lower engine.maxContextLength"
        + sizing.multinode_hint(  # multi-node
            cat, precision, context, [acc], util or sizing.DEFAULT_GPU_MEMORY_UTILIZATION, ". "
        ),
    )


def resolve_fine_tuned(
    md: ModelDeployment, classes: dict[str, AcceleratorClassSpec], base: ModelDeployment | None
) -> tuple[Resolved, bool]:
    """A FineTuned object: (what serves it, whether it has servers of its own).

    Adapters are always loaded at runtime (MultiLoRA). On a base ModelDeployment: the base's
    servers (no servers of its own). On a catalog base: its own servers with LoRA enabled.
    """
    spec = md.spec
    ref = spec.base
    assert ref is not None  # the CRD requires it for FineTuned
    if ref.deployment:
        if base is None:
            raise ResolveError(
                "BaseNotFound",
                f"base ModelDeployment {ref.deployment!r} does not exist in namespace "
                f"{md.metadata.namespace}; create it or point spec.base at a catalog model",
            )
        if base.spec.tier == Tier.FINE_TUNED:
            raise ResolveError(
                "InvalidBase", f"base {ref.deployment!r} is itself FineTuned; use its base instead"
            )
        try:
            served = resolve(base, classes)
        except ResolveError as e:
            raise ResolveError("BaseNotReady", f"base {ref.deployment!r}: {e.message}") from None
        return served, False
    own = md.model_copy(
        update={
            "spec": spec.model_copy(
                update={
                    "tier": Tier.ON_DEMAND,
                    "model": ModelSource(catalog=ref.catalog),
                    "adapters": [],
                    "base": None,
                }
            )
        }
    )
    r = resolve(own, classes)
    n = len(spec.adapters)
    return (
        dataclasses.replace(
            r,
            tier=Tier.FINE_TUNED,
            lora=True,
            max_loras=max(r.max_loras, n, 8),
            max_lora_rank=r.max_lora_rank or 64,
        ),
        True,
    )
