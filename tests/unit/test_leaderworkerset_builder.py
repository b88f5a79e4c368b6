"""The LeaderWorkerSet builder: a rendered single-node pod turned into leader + worker templates."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.api.enums import EngineType
from modelplane.builders.leaderworkerset import (
    DIST_PORT,
    EXCLUSIVE_TOPOLOGY,
    LEADER_SELECTOR,
    build_leaderworkerset,
    multinode_args,
)
from modelplane.commands import render_documents
from modelplane_testbed.engine_args import check_args, defs_for


def _deployment(engine: str) -> dict[str, Any]:
    doc = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "big", "namespace": "m"},
        "spec": {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-405b-instruct"},
            "engine": {"type": engine},
        },
    }
    objs = render_documents([doc], "static")
    dep: dict[str, Any] = next(o for o in objs if o["kind"] == "Deployment")
    return dep


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    out = []
    for a in args:
        for k, v in env.items():
            a = a.replace(f"$({k})", v)
        out.append(a)
    return out


@pytest.mark.parametrize("engine", [EngineType.VLLM, EngineType.SGLANG])
def test_leader_and_worker_args_are_accepted_by_the_engine(engine: EngineType) -> None:
    dep = _deployment(engine.value)
    lws = build_leaderworkerset(dep, engine=engine, nodes=2)
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    leader = tmpl["leaderTemplate"]["spec"]["containers"][0]
    worker = tmpl["workerTemplate"]["spec"]["containers"][0]
    base = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert leader["args"][: len(base)] == base and worker["args"][: len(base)] == base
    # The pinned engines' own argument definitions accept both roles' flags, once the kubelet
    # has expanded $(VAR) from the environment the LWS webhook injects.
    defs = defs_for(engine)
    quant = "fbgemm_fp8"  # the 405B FP8 checkpoint's method
    lws_env = {"LWS_WORKER_INDEX": "1", "LWS_LEADER_ADDRESS": "big-0.big.m"}
    assert check_args(defs, _expand(leader["args"], lws_env), checkpoint_quantization=quant) == []
    assert check_args(defs, _expand(worker["args"], lws_env), checkpoint_quantization=quant) == []
    assert "--nnodes=2" in leader["args"] and "--node-rank=0" in leader["args"]
    assert "--node-rank=$(LWS_WORKER_INDEX)" in worker["args"]
    assert ("--headless" in worker["args"]) == (engine == EngineType.VLLM)
    assert "--headless" not in leader["args"]


def test_group_shape_restart_and_probes() -> None:
    dep = _deployment("VLLM")
    dep["spec"]["replicas"] = 3
    lws = build_leaderworkerset(dep, engine=EngineType.VLLM, nodes=2)
    assert lws["kind"] == "LeaderWorkerSet" and lws["metadata"]["name"] == "big"
    assert lws["metadata"]["labels"] == dep["metadata"]["labels"]
    spec = lws["spec"]
    assert spec["replicas"] == 3  # groups, not pods
    tmpl = spec["leaderWorkerTemplate"]
    assert tmpl["size"] == 2 and tmpl["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = tmpl["leaderTemplate"]["spec"]
    worker = tmpl["workerTemplate"]["spec"]
    # Every pod of a group on a node of the same class, whole node each.
    assert leader["nodeSelector"] == worker["nodeSelector"] != {}
    lim = leader["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == lim
    assert "readinessProbe" in leader["containers"][0]
    assert "readinessProbe" not in worker["containers"][0]
    assert {"name": "dist", "containerPort": DIST_PORT} in leader["containers"][0]["ports"]
    assert LEADER_SELECTOR == {"leaderworkerset.sigs.k8s.io/worker-index": "0"}
    # the input Deployment is not modified
    assert "--nnodes=2" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_exclusive_topology_and_refusals() -> None:
    dep = _deployment("VLLM")
    lws = build_leaderworkerset(
        dep, engine=EngineType.VLLM, nodes=2, exclusive_topology_key="topology.kubernetes.io/zone"
    )
    assert lws["metadata"]["annotations"][EXCLUSIVE_TOPOLOGY] == "topology.kubernetes.io/zone"
    with pytest.raises(ValueError, match="2 or more nodes"):
        build_leaderworkerset(dep, engine=EngineType.VLLM, nodes=1)
    with pytest.raises(ValueError, match="no multi-node launch"):
        multinode_args(EngineType.TEI, 2, leader=True)
