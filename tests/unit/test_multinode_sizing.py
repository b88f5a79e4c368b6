"""Sizing across nodes: nodes per replica x GPUs per node, TP inside a node, PP across nodes."""

from __future__ import annotations

import pytest

from modelplane.api.enums import Precision
from modelplane.catalog import get_model
from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS, Accelerator
from modelplane.catalog.sizing import (
    GIB,
    MAX_NODES_PER_REPLICA,
    OVERHEAD_PER_GPU_GIB,
    DoesNotFit,
    NoFit,
    SizingPlan,
    fits,
    fits_nodes,
    kv_cache_gib,
    plan_accelerator,
    plan_multinode,
    weights_gib,
)


def _acc(word: str) -> Accelerator:
    return next(a for a in DEFAULT_ACCELERATORS if a.name == word)


H100 = _acc("nvidia-h100-80gb")
H200 = _acc("nvidia-h200-141gb")
BF16_405B = get_model("llama-v3p1-405b-instruct-bf16")
DEEPSEEK = get_model("deepseek-v3")


def test_405b_bf16_does_not_fit_one_h100_node_and_takes_two() -> None:
    with pytest.raises(DoesNotFit):
        plan_accelerator(BF16_405B, Precision.BF16, 131072, [H100])
    plan = plan_multinode(BF16_405B, Precision.BF16, 131072, [H100])
    assert (plan.nodes, plan.gpu_count, plan.total_gpus) == (2, 8, 16)
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (8, 2)
    # The arithmetic, recomputed here: weights + KV + 2 GiB per GPU of the whole group.
    w = weights_gib(BF16_405B, Precision.BF16)
    assert 750 < w < 760  # 405.85e9 x 2 B
    kv = kv_cache_gib(BF16_405B, 131072)  # 126 layers x 2 x 8 x 128 x 2 B a token: no TP copies
    assert plan.total_required_gib == pytest.approx(w + kv + 16 * OVERHEAD_PER_GPU_GIB)
    assert plan.usable_gib == pytest.approx(16 * H100.memory_mib / 1024 * 0.90)
    assert plan.hourly_cost == H100.price_per_gpu_hour * 16
    assert plan.kv_capacity_tokens == int(
        (plan.usable_gib - w - 16 * OVERHEAD_PER_GPU_GIB) * GIB // (kv * GIB / 131072)
    )
    assert "2 nodes x 8 x NVIDIA H100 80GB = 16 GPUs" in plan.explanation
    assert "tensor parallel 8 inside a node, pipeline parallel 2 across nodes" in plan.explanation
    assert f"{plan.total_required_gib:.1f} GiB" in plan.explanation


def test_one_node_plans_are_unchanged_and_single_node_wins_when_it_fits() -> None:
    one = plan_accelerator(BF16_405B, Precision.BF16, 131072)
    assert one.nodes == 1 and one.accelerator == H200.name  # 8 x H200 holds 756 GiB
    assert "nodes" not in one.explanation
    small = get_model("llama-v3p1-8b-instruct")
    assert plan_accelerator(small, Precision.BF16, 8192).total_gpus == 1


def test_deepseek_v3_on_h100_spans_two_nodes_with_mla_copies_per_rank() -> None:
    with pytest.raises(DoesNotFit):
        plan_accelerator(DEEPSEEK, Precision.FP8, 131072, [H100])
    plan = plan_multinode(DEEPSEEK, Precision.FP8, 131072, [H100])
    assert (plan.nodes, plan.gpu_count) == (2, 8)
    # MLA: every TP rank of a stage keeps the latent of that stage's layers: 8 copies in all.
    assert plan.kv_gib == pytest.approx(kv_cache_gib(DEEPSEEK, 131072) * 8)
    assert "8 copies across TP ranks" in plan.explanation


def test_cheapest_group_wins_across_classes() -> None:
    plan = plan_multinode(BF16_405B, Precision.BF16, 131072)
    # Every class's fewest fitting nodes, then price of the whole group.
    options = []
    for acc in DEFAULT_ACCELERATORS:
        for n in range(2, MAX_NODES_PER_REPLICA + 1):
            r = fits_nodes(BF16_405B, Precision.BF16, 131072, acc, n)
            if isinstance(r, SizingPlan):
                options.append(r)
                break
    assert options
    cheapest = min(options, key=lambda p: (p.hourly_cost, p.nodes))
    assert (plan.accelerator, plan.nodes) == (cheapest.accelerator, cheapest.nodes)
    assert plan.hourly_cost <= min(p.hourly_cost for p in options)


def test_fits_nodes_reasons() -> None:
    too_many = fits_nodes(BF16_405B, Precision.BF16, 131072, H100, MAX_NODES_PER_REPLICA + 1)
    assert isinstance(too_many, NoFit) and too_many.reason == "InvalidParallelism"
    one = fits_nodes(BF16_405B, Precision.BF16, 131072, H100, 1)
    assert isinstance(one, NoFit) and one.reason == "ModelTooLarge"
    assert one == fits(BF16_405B, Precision.BF16, 131072, H100, 8)
    fp8 = fits_nodes(BF16_405B, Precision.FP8, 131072, H100, 2)
    assert isinstance(fp8, NoFit) and fp8.reason == "PrecisionUnsupported"
    bad_tp = fits_nodes(BF16_405B, Precision.BF16, 131072, H100, 2, gpus_per_node=3)
    assert isinstance(bad_tp, NoFit) and bad_tp.reason == "InvalidGPUCount"
    ok = fits_nodes(BF16_405B, Precision.BF16, 131072, H100, 3)
    assert isinstance(ok, SizingPlan) and ok.nodes == 3 and ok.total_gpus == 24


def test_nothing_fits_within_the_node_cap_says_so() -> None:
    l4 = _acc("nvidia-l4-24gb")  # 4 x 22 GiB a node: 4 nodes hold ~322 GiB
    with pytest.raises(DoesNotFit) as e:
        plan_multinode(BF16_405B, Precision.BF16, 131072, [l4])
    assert e.value.largest is not None and e.value.largest.nodes == MAX_NODES_PER_REPLICA
    assert "largest multi-node option" in e.value.message


def test_render_prints_the_multinode_arithmetic_for_405b_bf16_on_h100() -> None:
    from modelplane.commands import render_documents

    doc = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "big", "namespace": "m"},
        "spec": {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-405b-instruct-bf16"},
            "accelerator": {"class": "nvidia-h100-80gb"},
        },
    }
    with pytest.raises(SystemExit) as e:
        render_documents([doc], "static")
    msg = str(e.value)
    assert "ModelTooLarge" in msg and "8 x NVIDIA H100 80GB give only 576.0 GiB" in msg
    assert "2 nodes x 8 x NVIDIA H100 80GB = 16 GPUs" in msg
    assert "851.0 GiB" in msg and "1152.0 GiB usable" in msg
