"""How many GPUs of which kind a model needs: weights + KV cache + a fixed reserve, per node.

The arithmetic
--------------
* Weights: ``params x bytes per parameter`` of the serving precision (BF16/FP16 2 B, FP8 1 B,
  FP4 0.5 B), except the catalog's ``unquantized_params_billion`` which stay at 2 B: embeddings
  and LM head, and for Meta's Llama 3.1 405B FP8 checkpoint all self-attention plus the first and
  last layers' MLPs (Llama 3 paper, section 6.2) - 453 GiB rather than 378 GiB.
* KV cache per token (2 bytes per element unless the KV cache is FP8):
  - grouped-query / multi-head attention: ``layers x 2 (K and V) x kv_heads x head_dim x bytes``
    (Llama 3.1 8B: 32 x 2 x 8 x 128 x 2 B = 128 KiB per token);
  - MLA (DeepSeek-V3): ``layers x (kv_lora_rank + qk_rope_head_dim) x bytes`` = 61 x 576 x 2 B;
  - encoder-only embedders keep none; Whisper adds its 1500 encoder frames per sequence.
  The minimum an engine accepts is one full-length sequence (vLLM refuses to start when the KV
  pool cannot hold ``--max-model-len`` tokens), hence ``min_concurrent_sequences`` defaults to 1.
* Tensor parallelism shards KV heads across ranks. When a rank would get less than one KV head it
  holds a replica, and MLA's latent cache is replicated on every rank, so the total KV memory of a
  plan is the single-copy figure times that replication factor.
* Reserve: 2 GiB per GPU for what is neither weights nor KV (CUDA context, NCCL buffers, CUDA
  graphs, the activation peak of a chunked-prefill step).
* Usable memory per GPU: the memory the cloud reports (``memory_mib``, e.g. 22888 MiB for an
  L4 rather than the 24 GB on the box) times ``gpu_memory_utilization`` (vLLM's default 0.90).

Placement rules
---------------
* GPU counts are tensor-parallel sizes: 1, 2, 4 or 8, no more than the accelerator's largest
  node, dividing the attention heads, and dividing (or being a multiple of) the KV heads.
* A precision is only placed on GPUs that compute it natively: FP8 on Ada/Hopper/Blackwell
  (Ampere would run weight-only FP8 through Marlin kernels, slower; not chosen automatically),
  FP4 on Blackwell, BF16 from Ampere on.
* The cheapest fitting option (price per GPU-hour x count) wins; ties go to fewer GPUs.

Across nodes (multi-node replicas)
----------------------------------
When no single node of any allowed class holds the model (or the spec asks for more than one
node), a replica spans ``nodes`` whole nodes of one class: tensor parallel inside a node (TP =
the node's GPUs, a valid split as above) and pipeline parallel across nodes (PP = nodes, no more
than the model's layers). Memory adds up across the group: weights and KV are split over
``nodes x GPUs per node`` GPUs (each pipeline stage keeps its own layers' KV, replicated across
its TP ranks as above) and the reserve is per GPU. The fewest nodes that fit on a class is that
class's option; the cheapest option (price per GPU-hour x all GPUs of the group) wins, ties to
fewer nodes. Nodes per replica are capped at `MAX_NODES_PER_REPLICA`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from modelplane.api.enums import Precision
from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS, Accelerator
from modelplane.catalog.models import CatalogModel

__all__ = [
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "GB_PER_GIB",
    "GIB",
    "MAX_NODES_PER_REPLICA",
    "NATIVE_PRECISION_FAMILIES",
    "OVERHEAD_PER_GPU_GIB",
    "TENSOR_PARALLEL_SIZES",
    "DoesNotFit",
    "NoFit",
    "SizingPlan",
    "candidate_counts",
    "fits",
    "fits_nodes",
    "kv_bytes_per_token",
    "kv_cache_gib",
    "kv_replication",
    "multinode_hint",
    "plan_accelerator",
    "plan_multinode",
    "tensor_parallel_problem",
    "usable_gib",
    "weights_gib",
]

GIB = 1024**3
#: Decimal gigabytes in one GiB (disk sizes and download volumes are quoted in GB).
GB_PER_GIB = GIB / 1e9
OVERHEAD_PER_GPU_GIB = 2.0
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
TENSOR_PARALLEL_SIZES: tuple[int, ...] = (1, 2, 4, 8)
#: The most nodes one replica (one LeaderWorkerSet group) may span.
MAX_NODES_PER_REPLICA = 4

#: GPU families (nvidia.com/gpu.family values) with native math for each precision.
NATIVE_PRECISION_FAMILIES: dict[Precision, frozenset[str]] = {
    Precision.FP16: frozenset({"volta", "turing", "ampere", "ada-lovelace", "hopper", "blackwell"}),
    Precision.BF16: frozenset({"ampere", "ada-lovelace", "hopper", "blackwell"}),
    Precision.FP8: frozenset({"ada-lovelace", "hopper", "blackwell"}),
    Precision.FP4: frozenset({"blackwell"}),
}


@dataclass(frozen=True)
class SizingPlan:
    """A placement that fits: which GPUs, how many, and the memory arithmetic behind it.

    ``gpu_count`` is the GPUs of one node (one pod); a multi-node plan has ``nodes`` such pods
    per replica (tensor parallel ``gpu_count`` inside each, pipeline parallel ``nodes``).
    Memory and cost figures are the whole replica's.
    """

    model_id: str
    accelerator: str  # AcceleratorClass name
    accelerator_display_name: str
    gpu_count: int
    precision: Precision
    context_length: int
    concurrent_sequences: int
    gpu_memory_utilization: float
    weights_gib: float
    kv_gib: float  # all replicas included
    overhead_gib: float
    total_required_gib: float
    usable_gib: float
    headroom_gib: float
    kv_capacity_tokens: int  # tokens the KV pool holds once weights and reserve are placed
    hourly_cost: Decimal  # USD for the GPUs of one replica
    explanation: str
    nodes: int = 1  # nodes per replica (pipeline-parallel stages)

    @property
    def tensor_parallel_size(self) -> int:
        return self.gpu_count

    @property
    def pipeline_parallel_size(self) -> int:
        return self.nodes

    @property
    def total_gpus(self) -> int:
        return self.gpu_count * self.nodes


@dataclass(frozen=True)
class NoFit:
    """Why an explicit accelerator choice cannot serve the model (for a status condition)."""

    reason: str  # CamelCase: ModelTooLarge | InvalidGPUCount | PrecisionUnsupported | ...
    message: str


class DoesNotFit(Exception):  # noqa: N818 - the name the operator and its docs use
    """No accelerator in the table holds the model on a single node."""

    def __init__(
        self,
        message: str,
        *,
        required_gib: float | None = None,
        largest: SizingPlan | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.required_gib = required_gib
        self.largest = largest  # the biggest option tried, with its (insufficient) arithmetic


# --- memory arithmetic --------------------------------------------------------------------------


def weights_gib(model: CatalogModel, precision: Precision) -> float:
    """GiB of weights at `precision` (16-bit remainder included for FP8/FP4)."""
    total = model.arch.params_billion
    kept = model.unquantized_params_billion if precision.bytes_per_param < 2 else 0.0
    return ((total - kept) * precision.bytes_per_param + kept * 2.0) * 1e9 / GIB


def kv_bytes_per_token(model: CatalogModel, kv_dtype_bytes: int = 2) -> int:
    """Bytes of KV cache one token occupies across all layers (one copy, no TP replication)."""
    a = model.arch
    if a.encoder_only:
        return 0
    if a.mla_kv_lora_rank is not None and a.mla_qk_rope_head_dim is not None:
        return a.num_layers * (a.mla_kv_lora_rank + a.mla_qk_rope_head_dim) * kv_dtype_bytes
    return a.num_layers * 2 * a.num_kv_heads * a.head_dim * kv_dtype_bytes


def kv_cache_gib(
    model: CatalogModel,
    context_length: int,
    concurrent_sequences: int = 1,
    kv_dtype_bytes: int = 2,
) -> float:
    """GiB of KV cache for `concurrent_sequences` sequences of `context_length` tokens.

    `kv_dtype_bytes` is 2 for a BF16/FP16 cache, 1 for `--kv-cache-dtype fp8`.
    """
    if context_length < 1 or concurrent_sequences < 1:
        raise ValueError("context_length and concurrent_sequences must be >= 1")
    if kv_dtype_bytes not in (1, 2):
        raise ValueError("kv_dtype_bytes is 2 (BF16/FP16) or 1 (FP8)")
    tokens = (context_length + model.arch.cross_attention_tokens) * concurrent_sequences
    return kv_bytes_per_token(model, kv_dtype_bytes) * tokens / GIB


def kv_replication(model: CatalogModel, tensor_parallel: int) -> int:
    """How many copies of the KV cache a tensor-parallel group keeps in total."""
    a = model.arch
    if a.encoder_only:
        return 1
    if a.is_mla:
        return tensor_parallel  # every rank holds the full latent cache
    if a.num_kv_heads < tensor_parallel:
        return tensor_parallel // a.num_kv_heads
    return 1


def usable_gib(
    accelerator: Accelerator,
    count: int,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
) -> float:
    """Memory the engine may use on `count` GPUs of `accelerator`."""
    return accelerator.memory_mib / 1024 * count * gpu_memory_utilization


def tensor_parallel_problem(model: CatalogModel, count: int) -> str | None:
    """Why `count` GPUs is not a valid tensor-parallel split of `model`, or None if it is."""
    a = model.arch
    if count not in TENSOR_PARALLEL_SIZES:
        sizes = ", ".join(map(str, TENSOR_PARALLEL_SIZES))
        return f"{count} GPUs is not a tensor-parallel size ({sizes})"
    if a.num_attention_heads % count:
        return f"{a.num_attention_heads} attention heads do not split across {count} GPUs"
    if not a.is_mla and a.num_kv_heads % count and count % a.num_kv_heads:
        return f"{a.num_kv_heads} KV heads do not split across {count} GPUs"
    return None


# --- placement ----------------------------------------------------------------------------------


def _check_request(model: CatalogModel, context_length: int, gpu_memory_utilization: float) -> None:
    if not 1 <= context_length <= model.max_context_length:
        raise ValueError(
            f"{model.id}: context length {context_length} outside 1..{model.max_context_length}"
        )
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError("gpu_memory_utilization must be in (0, 1]")


def _fmt_bytes(b: float) -> str:
    return f"{b:g} B"


def _plan(
    model: CatalogModel,
    precision: Precision,
    context_length: int,
    accelerator: Accelerator,
    count: int,
    gpu_memory_utilization: float,
    min_concurrent_sequences: int,
    kv_dtype_bytes: int,
    nodes: int = 1,
) -> SizingPlan:
    """The arithmetic for one option, whether or not it fits (headroom may be negative).
    `count` is GPUs per node; `nodes` > 1 splits the layers into that many pipeline stages.
    Long because the memory arithmetic (weights, KV cache per sequence, headroom) and the
    explanation that prints it are kept side by side, so the printed numbers are the ones used."""
    w = weights_gib(model, precision)
    replicas = kv_replication(model, count)
    kv = kv_cache_gib(model, context_length, min_concurrent_sequences, kv_dtype_bytes) * replicas
    gpus = count * nodes
    overhead = OVERHEAD_PER_GPU_GIB * gpus
    total = w + kv + overhead
    usable = usable_gib(accelerator, gpus, gpu_memory_utilization)
    per_token = kv_bytes_per_token(model, kv_dtype_bytes) * replicas
    capacity = int(max(usable - w - overhead, 0.0) * GIB // per_token) if per_token else 0

    asides = []
    if model.arch.active_params_billion is not None:
        asides.append(f"{model.arch.active_params_billion:.0f}B active")
    if precision.bytes_per_param < 2 and model.unquantized_params_billion:
        asides.append(f"{model.unquantized_params_billion:.1f}B kept at 2 B")
    params = f"{model.arch.params_billion:.1f}B params"
    if asides:
        params += f" ({'; '.join(asides)})"
    tokens = f"{context_length} tokens"
    if min_concurrent_sequences > 1:
        tokens = f"{min_concurrent_sequences} x {tokens}"
    if replicas > 1:
        tokens += f", {replicas} copies across TP ranks"
    kv_note = " FP8" if kv_dtype_bytes == 1 else ""
    verdict = "give" if total <= usable else "give only"
    where = f"{count} x {accelerator.display_name}"
    if nodes > 1:
        where = (
            f"{nodes} nodes x {where} = {gpus} GPUs (tensor parallel {count} inside a node, "
            f"pipeline parallel {nodes} across nodes)"
        )
    explanation = (
        f"{params} x {_fmt_bytes(precision.bytes_per_param)} ({precision.value}) = {w:.1f} GiB "
        f"weights + {kv:.1f} GiB{kv_note} KV ({tokens}) + {overhead:.1f} GiB overhead = "
        f"{total:.1f} GiB; {where} {verdict} {usable:.1f} GiB "
        f"usable at {gpu_memory_utilization:.2f}"
    )
    return SizingPlan(
        model_id=model.id,
        accelerator=accelerator.name,
        accelerator_display_name=accelerator.display_name,
        gpu_count=count,
        precision=precision,
        context_length=context_length,
        concurrent_sequences=min_concurrent_sequences,
        gpu_memory_utilization=gpu_memory_utilization,
        weights_gib=w,
        kv_gib=kv,
        overhead_gib=overhead,
        total_required_gib=total,
        usable_gib=usable,
        headroom_gib=usable - total,
        kv_capacity_tokens=capacity,
        hourly_cost=accelerator.price_per_gpu_hour * gpus,
        explanation=explanation,
        nodes=nodes,
    )


def _precision_problem(
    model: CatalogModel, precision: Precision, accelerator: Accelerator
) -> NoFit | None:
    if precision not in model.supported_precisions:
        offered = ", ".join(p.value for p in model.supported_precisions)
        return NoFit(
            "PrecisionUnsupported",
            f"{model.id} is offered at {offered}, not {precision.value}",
        )
    families = NATIVE_PRECISION_FAMILIES[precision]
    if accelerator.gpu_family not in families:
        return NoFit(
            "PrecisionUnsupported",
            f"{accelerator.display_name} ({accelerator.gpu_family}) has no native "
            f"{precision.value} math; needs one of: {', '.join(sorted(families))}",
        )
    return None


def fits(
    model: CatalogModel,
    precision: Precision,
    context_length: int,
    accelerator: Accelerator,
    count: int,
    *,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    min_concurrent_sequences: int = 1,
    kv_dtype_bytes: int = 2,
) -> SizingPlan | NoFit:
    """Check an explicit (accelerator, count) choice; a NoFit carries a reason and message.

    Reasons: ContextTooLong, PrecisionUnsupported, InvalidGPUCount, ModelTooLarge.
    """
    if context_length > model.max_context_length:
        return NoFit(
            "ContextTooLong",
            f"{model.id} supports at most {model.max_context_length} tokens, "
            f"asked for {context_length}",
        )
    _check_request(model, context_length, gpu_memory_utilization)
    problem = _precision_problem(model, precision, accelerator)
    if problem is not None:
        return problem
    if count > accelerator.max_gpus_per_node:
        return NoFit(
            "InvalidGPUCount",
            f"{count} GPUs asked, but {accelerator.display_name} nodes carry at most "
            f"{accelerator.max_gpus_per_node}",
        )
    tp_problem = tensor_parallel_problem(model, count)
    if tp_problem is not None:
        return NoFit("InvalidGPUCount", f"{model.id}: {tp_problem}")
    plan = _plan(
        model,
        precision,
        context_length,
        accelerator,
        count,
        gpu_memory_utilization,
        min_concurrent_sequences,
        kv_dtype_bytes,
    )
    if plan.headroom_gib < 0:
        return NoFit("ModelTooLarge", f"{model.id} does not fit: {plan.explanation}")
    return plan


def candidate_counts(model: CatalogModel, accelerator: Accelerator) -> tuple[int, ...]:
    """GPU counts that are valid tensor-parallel splits of `model` on one `accelerator` node."""
    return tuple(
        n
        for n in TENSOR_PARALLEL_SIZES
        if n <= accelerator.max_gpus_per_node and tensor_parallel_problem(model, n) is None
    )


def plan_accelerator(
    model: CatalogModel,
    precision: Precision,
    context_length: int,
    accelerators: Iterable[Accelerator] = DEFAULT_ACCELERATORS,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    min_concurrent_sequences: int = 1,
    kv_dtype_bytes: int = 2,
) -> SizingPlan:
    """The cheapest single-node placement (price x count; ties → fewer GPUs, then name).

    Raises ValueError for a request the model cannot take (context beyond its native length,
    a precision the catalog does not offer) and DoesNotFit when no node is large enough.
    Long because it walks classes and GPU counts cheapest first and keeps the closest miss to
    explain a refusal; the explanation needs the whole walk.
    """
    _check_request(model, context_length, gpu_memory_utilization)
    if precision not in model.supported_precisions:
        offered = ", ".join(p.value for p in model.supported_precisions)
        raise ValueError(f"{model.id} is offered at {offered}, not {precision.value}")

    tried: list[SizingPlan] = []
    for acc in accelerators:
        if _precision_problem(model, precision, acc) is not None:
            continue
        for count in candidate_counts(model, acc):
            tried.append(
                _plan(
                    model,
                    precision,
                    context_length,
                    acc,
                    count,
                    gpu_memory_utilization,
                    min_concurrent_sequences,
                    kv_dtype_bytes,
                )
            )
    fitting = [p for p in tried if p.headroom_gib >= 0]
    if fitting:
        return min(fitting, key=lambda p: (p.hourly_cost, p.gpu_count, p.accelerator))

    need = (
        f"{model.id} at {precision.value} with {context_length}-token context "
        f"({min_concurrent_sequences} sequence{'s' if min_concurrent_sequences > 1 else ''})"
    )
    if not tried:
        families = ", ".join(sorted(NATIVE_PRECISION_FAMILIES[precision]))
        raise DoesNotFit(
            f"{need}: no accelerator offered runs {precision.value} natively "
            f"(needs a GPU of family {families}) with a valid tensor-parallel split"
        )
    largest = max(tried, key=lambda p: (p.usable_gib, -p.hourly_cost))
    raise DoesNotFit(
        f"{need} needs {largest.total_required_gib:.1f} GiB "
        f"({largest.weights_gib:.1f} GiB weights + {largest.kv_gib:.1f} GiB KV + "
        f"{largest.overhead_gib:.1f} GiB overhead); the largest single-node option, "
        f"{largest.gpu_count} x {largest.accelerator_display_name}, gives "
        f"{largest.usable_gib:.1f} GiB usable at {gpu_memory_utilization:.2f}. "
        f"Use a lower precision, a shorter context, or multi-node serving.",
        required_gib=largest.total_required_gib,
        largest=largest,
    )


# --- across nodes -------------------------------------------------------------------------------


def fits_nodes(
    model: CatalogModel,
    precision: Precision,
    context_length: int,
    accelerator: Accelerator,
    nodes: int,
    gpus_per_node: int | None = None,
    *,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    min_concurrent_sequences: int = 1,
    kv_dtype_bytes: int = 2,
) -> SizingPlan | NoFit:
    """Check an explicit multi-node choice: `nodes` nodes of `accelerator`, `gpus_per_node`
    GPUs each (default: the whole node). Reasons as `fits`, plus InvalidParallelism (node count)."""
    count = gpus_per_node or accelerator.max_gpus_per_node
    if not 1 <= nodes <= MAX_NODES_PER_REPLICA:
        return NoFit(
            "InvalidParallelism",
            f"{nodes} nodes per replica asked; a replica spans 1 to {MAX_NODES_PER_REPLICA} nodes",
        )
    if nodes > model.arch.num_layers:
        return NoFit(
            "InvalidParallelism",
            f"{model.id} has {model.arch.num_layers} layers: no more than that many pipeline "
            f"stages, asked for {nodes} nodes",
        )
    one = fits(
        model,
        precision,
        context_length,
        accelerator,
        count,
        gpu_memory_utilization=gpu_memory_utilization,
        min_concurrent_sequences=min_concurrent_sequences,
        kv_dtype_bytes=kv_dtype_bytes,
    )
    if isinstance(one, NoFit) and one.reason != "ModelTooLarge":
        return one
    plan = _plan(
        model,
        precision,
        context_length,
        accelerator,
        count,
        gpu_memory_utilization,
        min_concurrent_sequences,
        kv_dtype_bytes,
        nodes,
    )
    if plan.headroom_gib < 0:
        return NoFit("ModelTooLarge", f"{model.id} does not fit: {plan.explanation}")
    return plan


def plan_multinode(
    model: CatalogModel,
    precision: Precision,
    context_length: int,
    accelerators: Iterable[Accelerator] = DEFAULT_ACCELERATORS,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    min_concurrent_sequences: int = 1,
    kv_dtype_bytes: int = 2,
    *,
    nodes: int | None = None,
) -> SizingPlan:
    """The cheapest placement on 2 or more whole nodes of one class (or exactly `nodes`):
    each class's fewest fitting nodes, then the lowest price of the whole group (ties: fewer
    nodes, then name). Raises DoesNotFit when no class holds the model within
    `MAX_NODES_PER_REPLICA` nodes."""
    _check_request(model, context_length, gpu_memory_utilization)
    if precision not in model.supported_precisions:
        offered = ", ".join(p.value for p in model.supported_precisions)
        raise ValueError(f"{model.id} is offered at {offered}, not {precision.value}")
    counts = [nodes] if nodes else list(range(2, MAX_NODES_PER_REPLICA + 1))
    best: list[SizingPlan] = []
    largest: SizingPlan | None = None
    for acc in accelerators:
        if _precision_problem(model, precision, acc) is not None:
            continue
        gpus = acc.max_gpus_per_node
        if tensor_parallel_problem(model, gpus) is not None:
            continue
        for n in counts:
            if n > model.arch.num_layers:
                break
            plan = _plan(
                model,
                precision,
                context_length,
                acc,
                gpus,
                gpu_memory_utilization,
                min_concurrent_sequences,
                kv_dtype_bytes,
                n,
            )
            if largest is None or plan.usable_gib > largest.usable_gib:
                largest = plan
            if plan.headroom_gib >= 0:
                best.append(plan)
                break
    if best:
        return min(best, key=lambda p: (p.hourly_cost, p.nodes, p.accelerator))
    need = f"{model.id} at {precision.value} with {context_length}-token context"
    if largest is None:
        raise DoesNotFit(f"{need}: no accelerator offered runs it natively across whole nodes")
    raise DoesNotFit(
        f"{need} needs {largest.total_required_gib:.1f} GiB; the largest multi-node option, "
        f"{largest.nodes} nodes x {largest.gpu_count} x {largest.accelerator_display_name}, "
        f"gives {largest.usable_gib:.1f} GiB usable at {gpu_memory_utilization:.2f}. "
        "Use a lower precision or a shorter context.",
        required_gib=largest.total_required_gib,
        largest=largest,
    )


def multinode_hint(
    model: CatalogModel,
    precision: Precision,
    context_length: int,
    accelerators: Iterable[Accelerator],
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    sep: str = " ",
) -> str:
    """For a model no single node holds: the multi-node arithmetic (cheapest group), as a
    sentence to append to a ModelTooLarge message; empty when no group holds it either."""
    try:
        plan = plan_multinode(
            model, precision, context_length, accelerators, gpu_memory_utilization
        )
    except (DoesNotFit, ValueError):
        return ""
    return (
        f"{sep}Across nodes it would fit: {plan.explanation}. Replicas of {plan.nodes} nodes on a "
        "LeaderWorkerSet are not served by this operator version yet"
    )
