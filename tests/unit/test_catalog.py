"""Model catalog, engine profiles and GPU sizing."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from modelplane.api.enums import EngineType, Precision, Task
from modelplane.catalog import accelerators as acc_mod
from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS, accelerator
from modelplane.catalog.engines import ENGINES, SERVING_PORT, engine_profile
from modelplane.catalog.models import CATALOG, CatalogModel, ModelArch, get_model
from modelplane.catalog.sizing import (
    GIB,
    NATIVE_PRECISION_FAMILIES,
    TENSOR_PARALLEL_SIZES,
    DoesNotFit,
    NoFit,
    SizingPlan,
    fits,
    kv_bytes_per_token,
    kv_cache_gib,
    plan_accelerator,
    weights_gib,
)

FIREWORKS_IDS = {
    "llama-v3p3-70b-instruct",
    "llama-v3p1-405b-instruct",
    "llama-v3p1-8b-instruct",
    "deepseek-v3",
    "mixtral-8x22b-instruct",
    "qwen2p5-72b-instruct",
    "firefunction-v2",
    "llama-v3p2-11b-vision-instruct",
    "llama-v3p2-90b-vision-instruct",
    "phi-3p5-vision-instruct",
    "whisper-v3",
    "whisper-v3-turbo",
    "nomic-embed-text-v1p5",
    "e5-mistral-7b-instruct",
}
#: Entries beyond Fireworks' ids: the BF16 405B (Fireworks serves its FP8), for multi-node.
EXTRA_IDS = {"llama-v3p1-405b-instruct-bf16"}


def _brute_force_cheapest(model: CatalogModel, precision: Precision, ctx: int) -> SizingPlan:
    """Every accelerator x every count 1..8, independent of the planner's candidate list."""
    found = []
    for acc in DEFAULT_ACCELERATORS:
        for count in range(1, 9):
            result = fits(model, precision, ctx, acc, count)
            if isinstance(result, SizingPlan):
                found.append(result)
    assert found, f"{model.id} fits nowhere"
    return min(found, key=lambda p: (p.hourly_cost, p.gpu_count))


# --- catalog content -----------------------------------------------------------------------------


def test_catalog_holds_the_fireworks_ids_with_real_hf_uris() -> None:
    assert set(CATALOG) == FIREWORKS_IDS | EXTRA_IDS
    for model in CATALOG.values():
        org, _, repo = model.hf_repo.partition("/")
        assert model.uri.startswith("hf://"), model.uri
        assert org, model.uri
        assert repo, model.uri
        assert "/" not in repo, model.uri
        assert model.revision is None  # no fake pins
        assert model.default_context_length <= model.max_context_length


def test_unknown_id_raises_keyerror_listing_known_ids() -> None:
    with pytest.raises(KeyError) as err:
        get_model("gpt-5-turbo")
    text = str(err.value)
    assert "gpt-5-turbo" in text
    for model_id in FIREWORKS_IDS:
        assert model_id in text


def test_tasks_embedding_and_transcription() -> None:
    assert get_model("nomic-embed-text-v1p5").task is Task.EMBEDDING
    assert get_model("e5-mistral-7b-instruct").task is Task.EMBEDDING
    assert get_model("whisper-v3").task is Task.TRANSCRIPTION
    assert get_model("whisper-v3-turbo").task is Task.TRANSCRIPTION
    # Whisper on vLLM needs the audio extra, which the stock image lacks.
    assert "audio" in get_model("whisper-v3").engine_extras
    # TEI is an alternative for embeddings only.
    for model in CATALOG.values():
        if EngineType.TEI in model.engines:
            assert model.task is Task.EMBEDDING


def test_every_default_and_alternative_engine_serves_the_task() -> None:
    for model in CATALOG.values():
        for engine in model.engines:
            assert engine_profile(engine).supports(model.task), (model.id, engine)


def test_tool_capable_models_have_a_parser_valid_for_each_engine() -> None:
    tool_models = [m for m in CATALOG.values() if m.supports_tools]
    assert {m.id for m in tool_models} >= {
        "llama-v3p1-8b-instruct",
        "llama-v3p1-405b-instruct",
        "deepseek-v3",
        "qwen2p5-72b-instruct",
        "mixtral-8x22b-instruct",
    }
    for model in tool_models:
        for engine in model.engines:
            parser = model.tool_call_parser(engine)
            assert parser is not None, (model.id, engine)
            assert parser in ENGINES[engine].tool_call_parsers, (model.id, engine, parser)
    # Names differ across engines; the per-engine map must keep them apart.
    ds = get_model("deepseek-v3")
    assert ds.tool_call_parser(EngineType.VLLM) == "deepseek_v3"
    assert ds.tool_call_parser(EngineType.SGLANG) == "deepseekv3"
    assert get_model("qwen2p5-72b-instruct").tool_call_parser() == "hermes"
    assert get_model("firefunction-v2").tool_call_parser() is None


def test_vision_models_carry_json_mm_limits() -> None:
    vision = [m for m in CATALOG.values() if m.vision]
    assert {m.id for m in vision} == {
        "llama-v3p2-11b-vision-instruct",
        "llama-v3p2-90b-vision-instruct",
        "phi-3p5-vision-instruct",
    }
    for model in vision:
        limits = model.mm_limits_json
        assert limits is not None
        parsed = json.loads(limits)  # the JSON form, never `image=1`
        assert parsed.get("image", 0) >= 1
        assert "=" not in limits
    assert get_model("llama-v3p1-8b-instruct").mm_limits_json is None


def test_mllama_models_avoid_vllm_which_dropped_them() -> None:
    for model_id in ("llama-v3p2-11b-vision-instruct", "llama-v3p2-90b-vision-instruct"):
        assert EngineType.VLLM not in get_model(model_id).engines


def test_catalog_entries_are_immutable() -> None:
    model = get_model("phi-3p5-vision-instruct")
    with pytest.raises(TypeError):
        model.mm_limits["image"] = 99  # type: ignore[index]
    with pytest.raises(AttributeError):
        model.id = "other"  # type: ignore[misc]


def test_inconsistent_entries_are_rejected() -> None:
    base = get_model("llama-v3p1-8b-instruct")
    with pytest.raises(ValueError, match="parser"):
        CatalogModel(
            id="broken",
            display_name="Broken",
            uri="hf://org/repo",
            task=Task.CHAT,
            arch=base.arch,
            max_context_length=8192,
            default_context_length=8192,
            default_precision=Precision.BF16,
            checkpoint_precision=Precision.BF16,
            supported_precisions=(Precision.BF16,),
            supports_tools=True,  # without a parser
        )
    with pytest.raises(ValueError, match="MLA"):
        ModelArch(
            params_billion=1,
            num_layers=1,
            num_attention_heads=1,
            num_kv_heads=1,
            head_dim=1,
            hidden_size=1,
            mla_kv_lora_rank=512,
        )


def test_online_quantization_only_for_higher_precision_checkpoints() -> None:
    assert get_model("llama-v3p3-70b-instruct").needs_online_quantization(Precision.FP8)
    assert not get_model("llama-v3p3-70b-instruct").needs_online_quantization(Precision.BF16)
    # Pre-quantized FP8 checkpoints: `--quantization fp8` would clash with their own config.
    assert not get_model("deepseek-v3").needs_online_quantization(Precision.FP8)
    assert not get_model("llama-v3p1-405b-instruct").needs_online_quantization(Precision.FP8)


# --- memory arithmetic ---------------------------------------------------------------------------


def test_kv_formula_matches_hand_computation_for_llama_8b() -> None:
    model = get_model("llama-v3p1-8b-instruct")
    per_token = 32 * 8 * 128 * 2 * 2  # layers x kv heads x head dim x (K, V) x 2 bytes
    assert per_token == 128 * 1024
    assert kv_bytes_per_token(model) == per_token
    assert kv_cache_gib(model, 8192) == pytest.approx(1.0)  # 8192 x 128 KiB = 1 GiB
    assert kv_cache_gib(model, 131072, concurrent_sequences=2) == pytest.approx(32.0)
    assert kv_cache_gib(model, 8192, kv_dtype_bytes=1) == pytest.approx(0.5)


def test_mla_kv_uses_latent_plus_rope_dims() -> None:
    ds = get_model("deepseek-v3")
    assert kv_bytes_per_token(ds) == 61 * (512 + 64) * 2
    # Far smaller than if it were plain MHA with 128 KV heads of 192 dims.
    assert kv_bytes_per_token(ds) * 40 < 61 * 2 * 128 * 192 * 2


def test_encoder_only_embedder_has_no_kv_and_whisper_counts_encoder_frames() -> None:
    assert kv_cache_gib(get_model("nomic-embed-text-v1p5"), 8192) == 0.0
    whisper = get_model("whisper-v3")
    expected = 32 * 2 * 20 * 64 * 2 * (448 + 1500) / GIB
    assert kv_cache_gib(whisper, 448) == pytest.approx(expected)


def test_weights_scale_with_precision_and_keep_16_bit_remainder() -> None:
    model = get_model("llama-v3p3-70b-instruct")
    bf16 = weights_gib(model, Precision.BF16)
    fp8 = weights_gib(model, Precision.FP8)
    assert bf16 == pytest.approx(70.55e9 * 2 / GIB)
    assert bf16 / 2 < fp8 < bf16 / 2 + 2.5  # embeddings + LM head stay BF16
    big = get_model("llama-v3p1-405b-instruct")
    assert weights_gib(big, Precision.FP8) == pytest.approx(
        ((405.85 - 81.3) * 1 + 81.3 * 2) * 1e9 / GIB
    )


def test_kv_cache_input_validation() -> None:
    model = get_model("llama-v3p1-8b-instruct")
    with pytest.raises(ValueError, match="must be >= 1"):
        kv_cache_gib(model, 0)
    with pytest.raises(ValueError, match="kv_dtype_bytes"):
        kv_cache_gib(model, 1024, kv_dtype_bytes=4)


# --- placement -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(FIREWORKS_IDS))
def test_default_sizing_fits_and_is_cheapest_by_brute_force(model_id: str) -> None:
    model = get_model(model_id)
    plan = plan_accelerator(model, model.default_precision, model.default_context_length)
    assert plan.total_required_gib <= plan.usable_gib
    assert plan.headroom_gib == pytest.approx(plan.usable_gib - plan.total_required_gib)
    assert plan.total_required_gib == pytest.approx(
        plan.weights_gib + plan.kv_gib + plan.overhead_gib
    )
    acc = accelerator(plan.accelerator)
    assert plan.gpu_count in TENSOR_PARALLEL_SIZES
    assert plan.gpu_count <= acc.max_gpus_per_node
    assert model.arch.num_attention_heads % plan.gpu_count == 0
    assert acc.gpu_family in NATIVE_PRECISION_FAMILIES[plan.precision]
    assert plan.hourly_cost == acc.price_per_gpu_hour * plan.gpu_count
    best = _brute_force_cheapest(model, model.default_precision, model.default_context_length)
    assert (plan.hourly_cost, plan.gpu_count) == (best.hourly_cost, best.gpu_count)


def test_405b_fp8_lands_on_eight_80gb_class_gpus() -> None:
    model = get_model("llama-v3p1-405b-instruct")
    plan = plan_accelerator(model, Precision.FP8, 131072)
    assert plan.gpu_count == 8
    assert accelerator(plan.accelerator).memory_gib >= 80
    assert plan.accelerator in {"nvidia-h100-80gb", "nvidia-h200-141gb"}
    # Four H200s are cheaper but cannot hold it: computed, not assumed.
    four = fits(model, Precision.FP8, 131072, accelerator("nvidia-h200-141gb"), 4)
    assert isinstance(four, NoFit)
    assert four.reason == "ModelTooLarge"


def test_8b_bf16_at_8k_fits_a_single_24gb_gpu() -> None:
    model = get_model("llama-v3p1-8b-instruct")
    plan = plan_accelerator(model, Precision.BF16, 8192)
    assert plan.gpu_count == 1
    assert accelerator(plan.accelerator).memory_gib == 24
    for name in ("nvidia-l4-24gb", "nvidia-a10g-24gb"):
        assert isinstance(fits(model, Precision.BF16, 8192, accelerator(name), 1), SizingPlan)


def test_deepseek_v3_needs_eight_h200_because_weights_exceed_eight_h100() -> None:
    model = get_model("deepseek-v3")
    weights = weights_gib(model, Precision.FP8)
    h100 = accelerator("nvidia-h100-80gb")
    assert weights > 8 * h100.memory_gib * 0.90  # ~627 GiB > 576 GiB before any KV cache
    plan = plan_accelerator(model, Precision.FP8, model.default_context_length)
    assert (plan.accelerator, plan.gpu_count) == ("nvidia-h200-141gb", 8)
    result = fits(model, Precision.FP8, 131072, h100, 8)
    assert isinstance(result, NoFit)
    assert result.reason == "ModelTooLarge"
    assert "8 x NVIDIA H100 80GB" in result.message


def test_mla_kv_is_replicated_per_tensor_parallel_rank() -> None:
    model = get_model("deepseek-v3")
    plan = plan_accelerator(model, Precision.FP8, 131072)
    assert plan.kv_gib == pytest.approx(8 * kv_cache_gib(model, 131072))


def test_small_models_land_on_one_small_gpu() -> None:
    for model_id in ("whisper-v3", "whisper-v3-turbo", "nomic-embed-text-v1p5"):
        model = get_model(model_id)
        plan = plan_accelerator(model, model.default_precision, model.default_context_length)
        assert plan.gpu_count == 1
        assert accelerator(plan.accelerator).memory_gib <= 24


def test_tie_on_price_prefers_fewer_gpus() -> None:
    model = get_model("llama-v3p1-8b-instruct")
    cheap = acc_mod.Accelerator(
        name="cheap-small",
        display_name="Cheap Small",
        gpu_product="X",
        gpu_family="hopper",
        memory_gib=24,
        memory_mib=24576,
        price_per_gpu_hour=Decimal("1.00"),
        shapes=(acc_mod.InstanceShape("x.large", 8, 8, 64),),
    )
    double = acc_mod.Accelerator(
        name="double",
        display_name="Double",
        gpu_product="Y",
        gpu_family="hopper",
        memory_gib=48,
        memory_mib=49152,
        price_per_gpu_hour=Decimal("2.00"),
        shapes=(acc_mod.InstanceShape("y.large", 8, 8, 64),),
    )
    # 131072 tokens: 15 + 16 + overhead needs 2 x cheap ($2.00) or 1 x double ($2.00).
    plan = plan_accelerator(model, Precision.BF16, 131072, accelerators=(cheap, double))
    assert (plan.accelerator, plan.gpu_count, plan.hourly_cost) == ("double", 1, Decimal("2.00"))


def test_explanation_spells_out_the_arithmetic() -> None:
    model = get_model("llama-v3p3-70b-instruct")
    result = fits(model, Precision.FP8, 131072, accelerator("nvidia-h100-80gb"), 2)
    assert isinstance(result, SizingPlan)
    text = result.explanation
    for part in ("70.5B params", "x 1 B (FP8)", "GiB weights", "40.0 GiB KV (131072 tokens)"):
        assert part in text
    assert "4.0 GiB overhead" in text
    assert "2 x NVIDIA H100 80GB give 144.0 GiB usable at 0.90" in text


def test_fits_reports_invalid_choices() -> None:
    model = get_model("llama-v3p1-8b-instruct")
    h100 = accelerator("nvidia-h100-80gb")
    three = fits(model, Precision.BF16, 8192, h100, 3)
    assert isinstance(three, NoFit)
    assert three.reason == "InvalidGPUCount"
    a10g = accelerator("nvidia-a10g-24gb")  # single-GPU nodes only
    two = fits(model, Precision.BF16, 8192, a10g, 2)
    assert isinstance(two, NoFit)
    assert two.reason == "InvalidGPUCount"
    fp8_on_ampere = fits(model, Precision.FP8, 8192, accelerator("nvidia-a100-80gb"), 1)
    assert isinstance(fp8_on_ampere, NoFit)
    assert fp8_on_ampere.reason == "PrecisionUnsupported"
    too_long = fits(model, Precision.BF16, 262144, h100, 1)
    assert isinstance(too_long, NoFit)
    assert too_long.reason == "ContextTooLong"
    whisper = get_model("whisper-v3")  # 20 heads do not split 8 ways
    eight = fits(whisper, Precision.FP16, 448, h100, 8)
    assert isinstance(eight, NoFit)
    assert "20 attention heads" in eight.message


def test_does_not_fit_names_the_need_and_the_largest_option() -> None:
    model = get_model("deepseek-v3")
    with pytest.raises(DoesNotFit) as err:
        plan_accelerator(model, Precision.FP8, 163840, min_concurrent_sequences=8)
    message = str(err.value)
    assert "deepseek-v3 at FP8" in message
    assert "8 x NVIDIA H200 141GB" in message  # the largest single node on offer
    assert "1015.2 GiB usable" in message
    assert err.value.required_gib is not None
    assert err.value.required_gib > 1015.2
    assert err.value.largest is not None
    assert err.value.largest.headroom_gib < 0


def test_does_not_fit_when_no_gpu_runs_the_precision() -> None:
    model = get_model("llama-v3p1-8b-instruct")
    base = model.arch
    fp4_model = CatalogModel(
        id="fp4-test",
        display_name="FP4",
        uri="hf://org/repo",
        task=Task.CHAT,
        arch=base,
        max_context_length=8192,
        default_context_length=8192,
        default_precision=Precision.FP4,
        checkpoint_precision=Precision.FP4,
        supported_precisions=(Precision.FP4,),
    )
    with pytest.raises(DoesNotFit, match="blackwell"):
        plan_accelerator(fp4_model, Precision.FP4, 8192)


def test_plan_rejects_requests_the_model_cannot_take() -> None:
    model = get_model("deepseek-v3")
    with pytest.raises(ValueError, match="offered at FP8"):
        plan_accelerator(model, Precision.BF16, 8192)
    with pytest.raises(ValueError, match="context length"):
        plan_accelerator(model, Precision.FP8, model.max_context_length + 1)


def test_fp8_kv_cache_shrinks_the_plan() -> None:
    model = get_model("llama-v3p3-70b-instruct")
    h100 = accelerator("nvidia-h100-80gb")
    # 67.7 GiB weights + 2 GiB reserve leave ~2.3 GiB of a 72 GiB H100 for KV: 12288 tokens
    # need 3.75 GiB at BF16 but 1.9 GiB at FP8.
    assert isinstance(fits(model, Precision.FP8, 12288, h100, 1), NoFit)
    plan = fits(model, Precision.FP8, 12288, h100, 1, kv_dtype_bytes=1)
    assert isinstance(plan, SizingPlan)
    assert "FP8 KV" in plan.explanation


# --- engines -------------------------------------------------------------------------------------


def test_engine_profiles_listen_on_one_port_with_health_and_metrics() -> None:
    assert set(ENGINES) == set(EngineType)
    for profile in ENGINES.values():
        assert profile.port == SERVING_PORT == 8000
        assert profile.host == "0.0.0.0"
        assert profile.health_path == "/health"
        assert profile.metrics_path == "/metrics"
        assert ":" in profile.image
        assert not profile.image.endswith(":latest")
    vllm = ENGINES[EngineType.VLLM]
    assert vllm.image.startswith("vllm/vllm-openai:v")
    assert vllm.model_flag is None  # positional
    assert vllm.embedding_args == ("--runner", "pooling")
    assert vllm.metrics.kv_cache_usage == "vllm:kv_cache_usage_perc"
    assert vllm.online_quantization[Precision.FP8] == "fp8_per_tensor"  # `fp8` is deprecated
    assert vllm.mm_limits_flag == "--limit-mm-per-prompt"
    assert ENGINES[EngineType.SGLANG].metrics_enable_args == ("--enable-metrics",)
    assert ENGINES[EngineType.TEI].tasks == frozenset({Task.EMBEDDING})
    # No deprecated spellings anywhere.
    for profile in ENGINES.values():
        flags = [v for v in vars(profile).values() if isinstance(v, str)]
        flags += [a for a in profile.embedding_args + profile.tool_choice_args]
        assert "--task" not in flags
        assert "--speculative-model" not in flags
