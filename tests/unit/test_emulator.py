"""The engine emulator: pods read as the product renders them, engines over real HTTP on
127.0.0.x, readiness and demand written through a fake API, the control socket, the load model,
the process, and the KWOK stages that leave readiness to it."""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.autoscaling.metrics import FleetCollector, parse_vllm_metrics
from modelplane.builders import preload
from modelplane.builders.objects import BuildContext
from modelplane.builders.resolve import resolve
from modelplane.commands import default_classes, render_documents
from modelplane_testbed.emulator import (
    ANNOTATION_PENDING,
    ANNOTATION_PENDING_AT,
    READY_LINE,
    ControlClient,
    ControlError,
    ControlServer,
    DemandPublisher,
    Emulator,
    Engine,
    LoadSpec,
    PodServers,
    ReadinessProber,
    complete_cache_jobs,
    load_trace,
    server_spec,
)
from modelplane_testbed.emulator.kube import NotFoundError
from modelplane_testbed.emulator.pods import CACHE_ROOT, parse_args
from modelplane_testbed.localcluster import binaries
from modelplane_testbed.localcluster.stages import SERVER_START_STAGE, kwok_stages
from modelplane_testbed.simulator import LLAMA3_8B_H100, LLAMA3_70B_4XH100

REPO = Path(__file__).resolve().parents[2]
BUILDERS = REPO / "tests" / "data" / "builders"
NS = "team-a"


# --------------------------------------------------------------------------- pods as rendered
def render(spec: Mapping[str, Any], name: str = "chat", ns: str = NS) -> dict[str, Any]:
    """The model-server Deployment the product renders for a ModelDeployment spec."""
    doc = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"tier": "OnDemand", "replicas": {"min": 1, "max": 2}, **spec},
    }
    return _deployment(render_documents([doc], "static"), name)


def render_case(case: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((BUILDERS / case / "input.yaml").read_text()))
    provider = "static" if case.startswith("sim-") else "karpenter"
    name = docs[0]["metadata"]["name"]
    return _deployment(render_documents(docs, provider), name)


def _deployment(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


_uids = itertools.count(1)


def pod_of(
    dep: Mapping[str, Any],
    name: str,
    *,
    ip: str | None = "127.0.0.2",
    node: str | None = "n1",
    phase: str = "Running",
    ready: bool = False,
    port: int | None = None,
) -> dict[str, Any]:
    """A pod of the Deployment as the API would serve it once KWOK ran it (``port``: move the
    engine to another port, args and containerPort alike, so tests never collide)."""
    tmpl = copy.deepcopy(dep["spec"]["template"])
    meta = {
        **tmpl["metadata"],
        "name": name,
        "namespace": dep["metadata"]["namespace"],
        "uid": f"uid-{next(_uids)}",
    }
    spec = tmpl["spec"]
    if node:
        spec["nodeName"] = node
    if port is not None:
        c = spec["containers"][0]
        c["args"][c["args"].index("--port") + 1] = str(port)
        c["ports"][0]["containerPort"] = port
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
    status["conditions"] = [
        {"type": "Ready", "status": "True" if ready else "False"},
        {"type": "ContainersReady", "status": "True" if ready else "False"},
    ]
    status["containerStatuses"] = [
        {"name": c["name"], "image": c["image"], "ready": ready, "restartCount": 0}
        for c in spec["containers"]
    ]
    return {"metadata": meta, "spec": spec, "status": status}


def node(name: str = "n1", labels: Mapping[str, str] | None = None, **ann: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels or {}), "annotations": dict(ann)}}


_addr = itertools.count(random.randint(2, 120))


def address() -> tuple[str, int]:
    """A fresh 127.0.0.x address and a port free on it."""
    ip = f"127.0.{random.randint(1, 250)}.{next(_addr) % 250 + 2}"
    with socket.socket() as s:
        s.bind((ip, 0))
        return ip, int(s.getsockname()[1])


class JumpClock:
    """Real time that a test can move forward (to skip a modelled start-up)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def call(
    method: str, url: str, body: Any = None, raw: bytes | None = None, ctype: str = ""
) -> tuple[int, str]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", ctype or "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class World:
    emu: Emulator
    servers: PodServers
    clock: JumpClock

    up_all: bool = False

    def add(self, pod: dict[str, Any]) -> str:
        """Observe ``pod`` and serve it; returns its base URL."""
        self.emu.observe_pod(pod)
        self.servers.sync()
        if self.up_all:
            self.clock.offset += 10_000.0
        c = pod["spec"]["containers"][0]
        return f"http://{pod['status']['podIP']}:{c['ports'][0]['containerPort']}"

    def start_all(self) -> None:
        """Every modelled start-up is over, now and for pods added later."""
        self.up_all = True
        self.clock.offset += 10_000.0


@pytest.fixture
def world() -> Iterator[World]:
    clock = JumpClock()
    emu = Emulator(time_scale=1.0, clock=clock, seed=1)
    emu.observe_node(node("n1"))
    servers = PodServers(emu)
    try:
        yield World(emu, servers, clock)
    finally:
        servers.close()


# --------------------------------------------------------------------------- reading pods
@pytest.mark.parametrize(
    ("case", "engine", "served", "flags"),
    [
        ("sglang-qwen", Engine.SGLANG, ("qwen",), {"metrics": True}),
        ("embeddings", Engine.VLLM, ("nomic-embed",), {"embedding": True}),
        ("whisper", Engine.VLLM, ("whisper-turbo",), {"transcription": True}),
        ("chat-tools", Engine.VLLM, None, {"embedding": False, "lora": False}),
        ("llama-70b-fp8-h100", Engine.VLLM, None, {"tensor_parallel": 2, "gpus": 2}),
    ],
)
def test_engine_and_options_are_read_from_the_rendered_pod(
    case: str, engine: Engine, served: tuple[str, ...] | None, flags: dict[str, Any]
) -> None:
    dep = render_case(case)
    spec = server_spec(pod_of(dep, "p-0"))
    assert spec.engine == engine
    assert spec.port == 8000 and spec.declared_ports == (8000,) and spec.reachable
    assert spec.readiness.kind == "http" and spec.readiness.path == "/health"
    assert spec.readiness.port == 8000  # the named port "http" resolved
    if served:
        assert spec.served_names == served
    for k, v in flags.items():
        assert getattr(spec, k) == v, k
    assert spec.hf_id is not None and spec.warnings == ()


def test_tei_lora_and_aliases_from_rendered_pods() -> None:
    tei = server_spec(
        pod_of(
            render(
                {
                    "model": {"catalog": "nomic-embed-text-v1p5"},
                    "task": "Embedding",
                    "engine": {"type": "TEI"},
                }
            ),
            "t",
        )
    )
    assert tei.engine == Engine.TEI and tei.embedding and tei.port == 8000
    assert tei.hf_id == "nomic-ai/nomic-embed-text-v1.5"
    lora = server_spec(
        pod_of(
            render({"model": {"catalog": "llama-v3p1-8b-instruct"}, "engine": {"lora": {}}}), "x"
        )
    )
    assert lora.lora and lora.runtime_lora and lora.max_loras == 8
    sglang = server_spec(
        pod_of(
            render(
                {
                    "model": {"catalog": "llama-v3p1-8b-instruct"},
                    "engine": {"type": "SGLang", "lora": {}},
                }
            ),
            "s",
        )
    )
    assert sglang.engine == Engine.SGLANG and sglang.lora and sglang.runtime_lora
    # vLLM takes several names after --served-model-name; the first labels the metrics.
    a = parse_args(
        ["m/x", "--served-model-name", "a", "b", "--enable-lora", "--port=9"], Engine.VLLM
    )
    assert a.values("--served-model-name") == ("a", "b") and a.value("--port") == "9"
    assert a.positionals == ("m/x",) and a.has("--enable-lora")


def test_pods_the_emulator_cannot_run_are_reported_not_served() -> None:
    emu = Emulator(time_scale=0)
    dep = render_case("chat-tools")
    odd = pod_of(dep, "odd")
    odd["spec"]["containers"][0].update(image="busybox", command=["sleep", "1d"], args=[])
    emu.observe_pod(odd)
    # SGLang listens on 127.0.0.1 unless told otherwise: unreachable from outside the pod.
    lo = pod_of(render_case("sglang-qwen"), "lo", ip="127.0.0.3")
    args = lo["spec"]["containers"][0]["args"]
    del args[args.index("--host") : args.index("--host") + 2]
    emu.observe_pod(lo)
    recs = {r["name"]: r for r in emu.pods()}
    assert "no vLLM, SGLang or TEI container" in recs["odd"]["error"]
    assert recs["lo"]["reachable"] is False
    assert emu.listeners() == {}


# --------------------------------------------------------------------------- start-up
def test_start_up_follows_image_weights_and_warm_up() -> None:
    clock = FakeClock()
    emu = Emulator(time_scale=0.1, clock=clock)
    emu.sync_nodes([node("n1"), node("n2")])
    dep = render({"model": {"catalog": "llama-v3p1-8b-instruct"}})
    emu.observe_pod(pod_of(dep, "a", node="n1"))
    first = emu.pod(NS, "a")
    assert first["catalogModel"] == "llama-v3p1-8b-instruct"
    assert first["weightsGB"] == pytest.approx(16.06, abs=0.05)
    s = first["startup"]
    assert s["imagePullS"] == pytest.approx(20.0) and not first["imageCached"]
    assert s["weightLoadS"] == pytest.approx(16.06 / 2.0, abs=0.05)
    assert s["warmupS"] == 30.0 and s["scaledS"] == pytest.approx(0.1 * s["totalS"])
    assert not first["healthy"] and first["readyAt"] is None
    clock.t += 3.0  # the image is pulled after 20 s x 0.1
    emu.observe_pod(pod_of(dep, "b", node="n1"))
    emu.observe_pod(pod_of(dep, "c", node="n2"))
    assert emu.pod(NS, "b")["imageCached"] and emu.pod(NS, "b")["startup"]["imagePullS"] == 0
    assert not emu.pod(NS, "c")["imageCached"]
    clock.t += s["scaledS"]
    assert emu.pod(NS, "a")["healthy"] and emu.pod(NS, "a")["readyAt"]
    # FP8 served from a BF16 checkpoint: the load reads the checkpoint, the GPU holds half.
    fp8 = render(
        {"model": {"catalog": "llama-v3p3-70b-instruct"}, "engine": {"precision": "FP8"}}, "big"
    )
    emu.observe_pod(pod_of(fp8, "big-0", node="n2"))
    big = emu.pod(NS, "big-0")
    assert big["checkpointGB"] > 1.8 * big["weightsGB"]
    assert big["replicaModel"] == LLAMA3_70B_4XH100.name
    assert emu.pod(NS, "a")["replicaModel"] == LLAMA3_8B_H100.name


def _nodelocal() -> tuple[dict[str, Any], str]:
    dep = render_case("sim-nodelocal-warm")
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if "hostPath" in v)
    return dep, vol["hostPath"]["path"].rsplit("/", 1)[1]


def test_node_local_cache_hit_needs_the_mount_and_the_node_label() -> None:
    dep, key = _nodelocal()
    label = f"cache.modelplane.io/{key}"
    emu = Emulator(time_scale=0.01)
    emu.sync_nodes([node("warm-node", {label: "ready"}), node("cold-node")])
    emu.observe_pod(pod_of(dep, "w-hit", node="warm-node"))
    emu.observe_pod(pod_of(dep, "w-cold", node="cold-node"))
    hit, cold = emu.pod("default", "w-hit"), emu.pod("default", "w-cold")
    assert hit["cacheHit"] is True, hit["cache"]
    assert hit["cache"]["key"] == key and hit["cache"]["readOnly"]
    assert hit["cache"]["hostPath"] == f"{CACHE_ROOT}/{key}"
    assert "links /var/cache/modelplane/model" in hit["cache"]["reason"]
    assert hit["startup"]["weightLoadS"] == pytest.approx(hit["checkpointGB"] / 6.0, rel=1e-3)
    assert cold["cacheHit"] is False and f"no label {label}=ready" in cold["cache"]["reason"]
    assert cold["startup"]["weightLoadS"] == pytest.approx(cold["checkpointGB"] / 2.0, rel=1e-3)
    # Without the mount (as before NodeLocal reached the server), the label alone is no hit.
    bare = pod_of(dep, "w-bare", node="warm-node")
    bare["spec"]["containers"][0]["volumeMounts"] = [
        m for m in bare["spec"]["containers"][0]["volumeMounts"] if m["name"] != "node-cache"
    ]
    emu.observe_pod(bare)
    rec = emu.pod("default", "w-bare")
    assert rec["cacheHit"] is False and "mounts no node cache" in rec["cache"]["reason"]
    # A pod seen before its node waits for the node: its labels decide the start-up.
    emu.observe_pod(pod_of(dep, "w-late", node="late-node"))
    assert "startup" not in emu.pod("default", "w-late")
    emu.observe_node(node("late-node", {label: "ready"}))
    assert emu.pod("default", "w-late")["cacheHit"] is True
    # A node cache that records other weights is no hit either.
    record = json.dumps({"uri": "hf://someone/else"})
    emu.observe_node(node("other-node", {label: "ready"}, **{label: record}))
    emu.observe_pod(pod_of(dep, "w-other", node="other-node"))
    assert "holds hf://someone/else" in emu.pod("default", "w-other")["cache"]["reason"]


def test_a_cache_mounted_at_the_download_dir_is_read_directly() -> None:
    dep = render({"model": {"catalog": "llama-v3p1-8b-instruct"}})
    pod = pod_of(dep, "d", node="n9")
    spec = pod["spec"]
    spec["volumes"].append({"name": "nc", "hostPath": {"path": f"{CACHE_ROOT}/k1"}})
    spec["containers"][0]["volumeMounts"].append(
        {"name": "nc", "mountPath": "/var/cache/modelplane/weights", "readOnly": True}
    )
    emu = Emulator(time_scale=0.01)
    emu.observe_node(node("n9", {"cache.modelplane.io/k1": "ready"}))
    emu.observe_pod(pod)
    assert emu.pod(NS, "d")["cacheHit"] is True
    moved = copy.deepcopy(pod)
    moved["metadata"]["name"] = "e"
    moved["spec"]["containers"][0]["volumeMounts"][-1]["mountPath"] = "/elsewhere"
    emu.observe_pod(moved)
    rec = emu.pod(NS, "e")
    assert not rec["cacheHit"] and "mounted at /elsewhere" in rec["cache"]["reason"]


def test_cache_job_pods_succeed_after_the_download_and_leave_the_image() -> None:
    md = ModelDeployment.model_validate(
        {
            "metadata": {"name": "warm", "namespace": NS, "uid": "u", "generation": 1},
            "spec": {
                "tier": "OnDemand",
                "model": {"catalog": "llama-v3p1-8b-instruct"},
                "preload": {"mode": "NodeLocal"},
            },
        }
    )
    r = resolve(md, default_classes())
    job = preload.build_cache_job(r, "n1", BuildContext())
    tmpl = job["spec"]["template"]
    pod = {
        "metadata": {**tmpl["metadata"], "name": "cache-pod", "namespace": NS, "uid": "j1"},
        "spec": tmpl["spec"],
        "status": {"phase": "Running", "podIP": "10.0.0.9", "startTime": "2026-01-01T00:00:00Z"},
    }
    clock = FakeClock()
    emu = Emulator(time_scale=0.01, clock=clock)
    emu.observe_node(node("n1"))
    emu.observe_pod(pod)
    (rec,) = emu.cache_jobs()
    assert rec["hfId"] == "meta-llama/Llama-3.1-8B-Instruct" and rec["node"] == "n1"
    total = rec["imagePullS"] + rec["downloadS"]
    assert rec["downloadS"] == pytest.approx(rec["gb"] / 2.0, rel=1e-3)
    writer = FakeWriter()
    assert complete_cache_jobs(emu, writer) == 0
    clock.t += total * 0.01 + 0.001
    assert complete_cache_jobs(emu, writer) == 1
    ((ns, name, body),) = writer.pods
    assert (ns, name) == (NS, "cache-pod") and body["status"]["phase"] == "Succeeded"
    (cs,) = body["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["reason"] == "Completed"
    assert complete_cache_jobs(emu, writer) == 0  # once
    # The Job ran the engine image on n1: a server there does not pull it again.
    emu.observe_pod(pod_of(render({"model": {"catalog": "llama-v3p1-8b-instruct"}}), "s"))
    assert emu.pod(NS, "s")["imageCached"] is True


# --------------------------------------------------------------------------- engines over HTTP
def test_vllm_api_at_the_pod_address(world: World) -> None:
    ip, port = address()
    dep = render(
        {"model": {"catalog": "llama-v3p1-8b-instruct"}, "engine": {"maxContextLength": 4096}}
    )
    url = world.add(pod_of(dep, "chat-0", ip=ip, port=port))
    assert call("GET", f"{url}/health") == (503, "")
    code, body = call("POST", f"{url}/v1/completions", {"prompt": "hi"})
    assert code == 503
    world.start_all()
    assert call("GET", f"{url}/health") == (200, "")
    code, body = call("GET", f"{url}/v1/models")
    (m,) = json.loads(body)["data"]
    assert (m["id"], m["parent"], m["root"]) == ("chat", None, "meta-llama/Llama-3.1-8B-Instruct")
    chat = {"model": "chat", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 7}
    code, body = call("POST", f"{url}/v1/chat/completions", chat)
    out = json.loads(body)
    assert code == 200 and out["object"] == "chat.completion"
    assert out["usage"]["completion_tokens"] == 7 and 100 <= out["usage"]["prompt_tokens"] <= 110
    assert len(out["choices"][0]["message"]["content"].split()) == 7
    stream = {
        "model": "chat",
        "prompt": "hello",
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    code, body = call("POST", f"{url}/v1/completions", stream)
    events = [json.loads(line[6:]) for line in body.split("\n\n") if line.startswith("data: {")]
    assert code == 200 and body.rstrip().endswith("data: [DONE]")
    assert [e["choices"][0]["text"] for e in events[:-1]] == [
        "the",
        " model",
        " answers",
        " with",
        " emulated",
    ]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
    code, body = call("POST", f"{url}/v1/completions", {"model": "gpt-4", "prompt": "x"})
    err = json.loads(body)["error"]
    assert (
        code == 404
        and err["type"] == "NotFoundError"
        and "`gpt-4` does not exist" in err["message"]
    )
    code, body = call("POST", f"{url}/v1/completions", {"prompt": "x", "max_tokens": 5000})
    assert code == 400 and "maximum context length is 4096" in json.loads(body)["error"]["message"]
    assert call("POST", f"{url}/v1/embeddings", {"input": "x"})[0] == 400
    assert call("POST", f"{url}/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "b"}) == (
        404,
        '{"detail": "Not Found"}',
    )
    code, text = call("GET", f"{url}/metrics")
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ):
        assert f'{name}{{engine="0",model_name="chat"' in text
    snap = parse_vllm_metrics(text, 0.0, model_name="chat")
    assert snap.request_success_total == 2 and snap.generation_tokens_total == 12
    assert snap.prompt_tokens_total > 100


def test_vllm_lora_api_follows_the_args_and_env(world: World) -> None:
    world.start_all()
    lora = render({"model": {"catalog": "llama-v3p1-8b-instruct"}, "engine": {"lora": {}}}, "base")
    on = world.add(pod_of(lora, "base-0", ip=address()[0], port=8000))
    no_flag = pod_of(lora, "base-1", ip=address()[0], port=8000)
    args = no_flag["spec"]["containers"][0]["args"]
    args.remove("--enable-lora")
    off = world.add(no_flag)
    body = {"lora_name": "sql", "lora_path": "org/sql-lora"}
    code, text = call("POST", f"{on}/v1/load_lora_adapter", body)
    assert code == 200 and "added successfully" in text
    code, text = call("POST", f"{on}/v1/load_lora_adapter", body)
    assert code == 400 and "already been loaded" in json.loads(text)["error"]["message"]
    bad = {"lora_name": "bad", "lora_path": "s3://b/does-not-exist/x"}
    code, text = call("POST", f"{on}/v1/load_lora_adapter", bad)
    assert code == 404 and json.loads(text)["error"]["type"] == "NotFoundError"
    models = json.loads(call("GET", f"{on}/v1/models")[1])["data"]
    assert [(m["id"], m["parent"], m["root"]) for m in models] == [
        ("base", None, "meta-llama/Llama-3.1-8B-Instruct"),
        ("sql", "base", "org/sql-lora"),
    ]
    code, text = call(
        "POST",
        f"{on}/v1/chat/completions",
        {"model": "sql", "messages": [{"role": "user", "content": "q"}], "max_tokens": 2},
    )
    assert code == 200 and json.loads(text)["model"] == "sql"
    code, text = call("POST", f"{on}/v1/unload_lora_adapter", {"lora_name": "sql"})
    assert code == 200 and "removed successfully" in text
    assert call("POST", f"{on}/v1/unload_lora_adapter", {"lora_name": "sql"})[0] == 404
    # The runtime API is on (env) but LoRA is not (no --enable-lora): the engine refuses.
    code, text = call("POST", f"{off}/v1/load_lora_adapter", body)
    assert code == 400 and "--enable-lora" in json.loads(text)["error"]["message"]
    assert "vllm:lora_requests_info" in call("GET", f"{on}/metrics")[1]


def test_sglang_api_and_metrics(world: World) -> None:
    world.start_all()
    dep = render(
        {"model": {"catalog": "llama-v3p1-8b-instruct"}, "engine": {"type": "SGLang", "lora": {}}},
        "sg",
    )
    url = world.add(pod_of(dep, "sg-0", ip=address()[0], port=8000))
    assert call("GET", f"{url}/health_generate")[0] == 200
    code, body = call(
        "POST",
        f"{url}/v1/chat/completions",
        {"model": "sg", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert code == 200 and json.loads(body)["usage"]["completion_tokens"] == 3
    code, text = call("GET", f"{url}/metrics")
    for name in (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
    ):
        assert f'{name}{{model_name="sg"}}' in text
    assert "vllm:" not in text
    code, body = call("POST", f"{url}/load_lora_adapter", {"lora_name": "a", "lora_path": "o/a"})
    assert code == 200 and json.loads(body) == {
        "success": True,
        "error_message": None,
        "loaded_adapters": {"a": "o/a"},
    }
    code, body = call("POST", f"{url}/load_lora_adapter", {"lora_name": "a", "lora_path": "o/a"})
    assert code == 400 and json.loads(body)["success"] is False
    assert (
        call("POST", f"{url}/v1/load_lora_adapter", {"lora_name": "b", "lora_path": "o/b"})[0]
        == 404
    )
    # SGLang serves whatever `model` names (no served-name check in serving_base.py); an
    # adapter is selected as `<name>:<adapter>` and must be loaded.
    code, body = call("POST", f"{url}/v1/completions", {"model": "nope", "prompt": "x"})
    assert code == 200
    code, body = call("POST", f"{url}/v1/completions", {"model": "sg:nope", "prompt": "x"})
    assert code == 400 and json.loads(body)["object"] == "error"
    # Without --enable-metrics SGLang has no /metrics.
    plain = pod_of(dep, "sg-1", ip=address()[0], port=8000)
    plain["spec"]["containers"][0]["args"].remove("--enable-metrics")
    assert call("GET", f"{world.add(plain)}/metrics")[0] == 404


def test_tei_api_and_metrics(world: World) -> None:
    world.start_all()
    dep = render(
        {
            "model": {"catalog": "nomic-embed-text-v1p5"},
            "task": "Embedding",
            "engine": {"type": "TEI"},
        },
        "emb",
    )
    url = world.add(pod_of(dep, "emb-0", ip=address()[0], port=8000))
    assert call("GET", f"{url}/health")[0] == 200
    code, body = call("POST", f"{url}/embed", {"inputs": ["a", "bb"]})
    vecs = json.loads(body)
    assert code == 200 and len(vecs) == 2 and len(vecs[0]) == 768
    assert abs(sum(x * x for x in vecs[0]) - 1.0) < 1e-6
    code, body = call("POST", f"{url}/v1/embeddings", {"input": "a", "model": "whatever"})
    out = json.loads(body)
    assert code == 200 and out["data"][0]["embedding"] == vecs[0]
    code, text = call("GET", f"{url}/metrics")
    assert 'te_request_count{method="single"} 2.0' in text
    for name in ("te_queue_size", "te_request_success"):
        assert name in text
    assert json.loads(call("GET", f"{url}/info")[1])["model_id"] == "nomic-ai/nomic-embed-text-v1.5"
    assert call("POST", f"{url}/embed", {"inputs": 3})[0] == 400
    assert 'te_request_failure{method="single"} 1.0' in call("GET", f"{url}/metrics")[1]


def test_vllm_embeddings_and_transcriptions(world: World) -> None:
    world.start_all()
    emb = world.add(pod_of(render_case("embeddings"), "e-0", ip=address()[0], port=8000))
    code, body = call("POST", f"{emb}/v1/embeddings", {"model": "nomic-embed", "input": ["a", "b"]})
    out = json.loads(body)
    assert code == 200 and [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"]["prompt_tokens"] == 2
    assert (
        call(
            "POST", f"{emb}/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
        )[0]
        == 400
    )
    whisper = world.add(pod_of(render_case("whisper"), "w-0", ip=address()[0], port=8000))
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-turbo\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + b"\0" * 64000
        + f"\r\n--{boundary}--\r\n".encode()
    )
    code, body = call(
        "POST",
        f"{whisper}/v1/audio/transcriptions",
        raw=form,
        ctype=f"multipart/form-data; boundary={boundary}",
    )
    assert code == 200 and json.loads(body)["text"]
    assert (
        call("POST", f"{emb}/v1/audio/transcriptions", raw=form, ctype="multipart/form-data")[0]
        == 400
    )


def test_servers_stop_when_pods_go(world: World) -> None:
    ip, port = address()
    dep = render({"model": {"catalog": "llama-v3p1-8b-instruct"}})
    url = world.add(pod_of(dep, "gone", ip=ip, port=port))
    assert call("GET", f"{url}/health")[0] == 503
    world.emu.remove_pod(NS, "gone")
    world.servers.sync()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_the_products_pod_metrics_source_reads_the_emulated_engines(world: World) -> None:
    """The autoscaler's ``pods`` source scrapes each Ready pod at ``podIP:port/metrics``."""
    from modelplane.adapters.autoscaler import PodMetricsSource, PodState, Target

    world.start_all()
    ip0, port = address()
    ip1 = address()[0]
    dep = render({"model": {"catalog": "llama-v3p1-8b-instruct"}})
    for name, ip in (("chat-0", ip0), ("chat-1", ip1)):
        world.add(pod_of(dep, name, ip=ip, port=port, ready=True))
    world.emu.set_load(NS, "chat", {"requestsPerSecond": 40, "outputTokens": 50})
    source = PodMetricsSource(port=port)
    pods = [PodState("chat-0", ip0, True, True), PodState("chat-1", ip1, True, True)]
    samples = []
    for _ in range(8):
        time.sleep(0.15)
        world.emu.tick()
        samples.append(source.collect(Target(NS, "chat"), pods, time.monotonic()))
    last = samples[-1]
    assert last.sample.ready_replicas == 2 and set(last.in_flight) == {"chat-0", "chat-1"}
    assert last.sample.concurrent_requests > 2 and last.sample.requests_per_second > 5


# --------------------------------------------------------------------------- kubelet / gateway
@dataclass
class FakeWriter:
    pods: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    mds: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)

    def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.pods.append((namespace, name, dict(patch)))

    def patch_model_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        if name in self.missing:
            raise NotFoundError(name)
        self.mds.append((namespace, name, dict(patch)))


def _apply(pod: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """What the API would hold after a strategic-merge status patch (conditions by type)."""
    out = copy.deepcopy(pod)
    st = out["status"]
    conds = {c["type"]: c for c in st.get("conditions", [])}
    for c in patch["status"].get("conditions", []):
        conds[c["type"]] = c
    st["conditions"] = list(conds.values())
    st["containerStatuses"] = patch["status"]["containerStatuses"]
    return out


def test_readiness_follows_the_health_endpoint(world: World) -> None:
    ip, port = address()
    dep = render({"model": {"catalog": "llama-v3p1-8b-instruct"}})
    pod = pod_of(dep, "r-0", ip=ip, port=port)
    world.add(pod)
    writer = FakeWriter()
    prober = ReadinessProber(world.emu, writer)
    assert prober.probe_once() == 0  # starting: 503, and the API says not Ready already
    world.start_all()
    assert prober.probe_once() == 1
    ((ns, name, patch),) = writer.pods
    assert (ns, name) == (NS, "r-0")
    conds = {c["type"]: c["status"] for c in patch["status"]["conditions"]}
    assert conds == {"Ready": "True", "ContainersReady": "True"}
    (cs,) = patch["status"]["containerStatuses"]
    assert cs["name"] == "server" and cs["ready"] is True
    assert prober.probe_once() == 0  # no flip, no write
    pod = _apply(pod, patch)
    world.emu.observe_pod(pod)
    assert world.emu.pod(NS, "r-0")["serving"] is True
    # The engine stops answering: not Ready after failureThreshold (3) failed probes.
    world.servers.close()
    assert [prober.probe_once() for _ in range(3)] == [0, 0, 1]
    conds = {c["type"]: c for c in writer.pods[-1][2]["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ContainersNotReady"


def test_demand_is_published_while_requests_wait_and_zero_once_drained() -> None:
    clock, wall = FakeClock(), [1_767_225_600.0]  # 2026-01-01T00:00:00Z
    emu = Emulator(time_scale=0, clock=clock)
    writer = FakeWriter(missing={"ghost"})
    pub = DemandPublisher(emu, writer, clock=clock, wall=lambda: wall[0])
    assert pub.publish_once() == 0  # nothing waits: nothing to say
    emu.submit(NS, "chat", 100, 10, count=5)
    emu.submit(NS, "ghost", 100, 10)
    assert pub.publish_once() == 1
    ((ns, name, patch),) = writer.mds
    assert (ns, name) == (NS, "chat")
    assert patch == {
        "metadata": {
            "annotations": {ANNOTATION_PENDING: "5", ANNOTATION_PENDING_AT: "2026-01-01T00:00:00Z"}
        }
    }
    emu.submit(NS, "chat", 100, 10, count=2)
    clock.t += 0.5
    assert pub.publish_once() == 0  # at most once per second
    clock.t += 0.5
    wall[0] += 1
    assert pub.publish_once() == 1
    assert writer.mds[-1][2]["metadata"]["annotations"][ANNOTATION_PENDING] == "7"
    clock.t += 5
    assert pub.publish_once() == 0  # unchanged
    clock.t += 5
    assert pub.publish_once() == 1  # unchanged but re-published: the count stays fresh
    # A Ready replica drains the queue: "0", once.
    emu.observe_node(node("n1"))
    emu.observe_pod(
        pod_of(render({"model": {"catalog": "llama-v3p1-8b-instruct"}}), "c", ready=True)
    )
    emu.tick()
    clock.t += 1
    assert pub.publish_once() == 1
    assert writer.mds[-1][2]["metadata"]["annotations"][ANNOTATION_PENDING] == "0"
    clock.t += 30
    assert pub.publish_once() == 0
    assert pub.status()[f"{NS}/chat"]["published"] == 0
    assert pub.status()[f"{NS}/ghost"]["error"]


# --------------------------------------------------------------------------- control socket
@pytest.fixture
def control(world: World, tmp_path: Path) -> Iterator[ControlClient]:
    server = ControlServer(world.emu, tmp_path / "ctl.sock", demand=lambda: {"x": 1})
    try:
        yield ControlClient(tmp_path / "ctl.sock")
    finally:
        server.close()


def test_control_socket_api(world: World, control: ControlClient) -> None:
    assert control.get("/healthz") == {"ok": True}
    world.add(
        pod_of(
            render({"model": {"catalog": "llama-v3p1-8b-instruct"}}),
            "c-0",
            ip=address()[0],
            port=8000,
        )
    )
    (rec,) = control.get("/pods")
    assert rec["name"] == "c-0" and rec["engine"] == "vllm" and rec["cacheHit"] is False
    assert control.get(f"/pods/{NS}/c-0")["startup"]["totalS"] > 0
    out = control.put(f"/load/{NS}/chat", {"requestsPerSecond": 5})
    assert out["requestsPerSecond"] == 5 and out["readyReplicas"] == 0
    with pytest.raises(ControlError) as e:
        control.put(f"/load/{NS}/chat", {"rps": 5})
    assert e.value.status == 400 and "unknown load field" in str(e.value)
    out = control.post(
        f"/load/{NS}/chat/requests", {"count": 3, "promptTokens": 10, "outputTokens": 5}
    )
    assert out["gatewayQueue"] == 3 and out["arrivals"] == 3
    assert control.delete(f"/load/{NS}/chat")["requestsPerSecond"] == 0
    assert set(control.get("/load")) == {f"{NS}/chat"}
    assert control.get("/demand") == {"x": 1}
    assert control.get("/cache-jobs") == []
    control.put("/schedule", {f"{NS}/chat": {"requestsPerSecond": 2}})
    with pytest.raises(ControlError) as e:
        control.get("/nothing")
    assert e.value.status == 404


def test_gateway_holds_a_client_request_until_a_pod_is_ready(
    world: World, control: ControlClient
) -> None:
    result: dict[str, Any] = {}

    def client() -> None:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        result["out"] = control.post(f"/gateway/{NS}/chat/v1/chat/completions", body)

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 5
    while world.emu.pending().get((NS, "chat")) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.emu.pending()[(NS, "chat")] == 1  # counted as demand while it waits
    world.start_all()
    world.add(
        pod_of(
            render({"model": {"catalog": "llama-v3p1-8b-instruct"}}),
            "g-0",
            ip=address()[0],
            port=8000,
            ready=True,
        )
    )
    t.join(10)
    assert result["out"]["usage"]["completion_tokens"] == 3
    assert world.emu.pending()[(NS, "chat")] == 0
    with pytest.raises(ControlError) as e:
        control.post(f"/gateway/{NS}/none/v1/completions?timeout=0.1", {"prompt": "x"})
    assert e.value.status == 504


# --------------------------------------------------------------------------- the load model
def ready_pod(name: str, deployment: str = "chat") -> dict[str, Any]:
    dep = render({"model": {"catalog": "llama-v3p1-8b-instruct"}}, deployment)
    return pod_of(dep, name, ip=None, ready=True) | {
        "status": {
            "phase": "Running",
            "podIP": "10.9.9.9",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }


def run(emu: Emulator, clock: FakeClock, seconds: float, tick: float = 0.5) -> None:
    for _ in range(round(seconds / tick)):
        clock.t += tick
        emu.tick()


@pytest.fixture
def sim() -> tuple[Emulator, FakeClock]:
    clock = FakeClock()
    emu = Emulator(time_scale=0, clock=clock, seed=3)
    emu.observe_node(node("n1"))
    return emu, clock


def test_load_gives_littles_law_concurrency_and_rates(sim: tuple[Emulator, FakeClock]) -> None:
    emu, clock = sim
    emu.observe_pod(ready_pod("chat-a"))
    emu.set_load(NS, "chat", {"requestsPerSecond": 10, "promptTokens": 220, "outputTokens": 200})
    run(emu, clock, 20)
    collector = FleetCollector()
    samples = []
    for _ in range(40):
        run(emu, clock, 1)
        samples.append(collector.observe({"a": emu.metrics_text((NS, "chat-a"))}, clock.t))
    later = samples[1:]
    concurrency = sum(s.concurrent_requests for s in later) / len(later)
    rps = sum(s.requests_per_second for s in later) / len(later)
    gen = sum(s.tokens_generated_per_second for s in later) / len(later)
    # Little's law: 10 req/s x ~200 tokens x ~9 ms per token ~ 18 in flight.
    assert 12 < concurrency < 30
    assert 8 < rps < 12
    assert 1600 < gen < 2400
    assert all(s.queue_depth < 5 for s in later)


def test_overload_queues_and_more_replicas_absorb_it(sim: tuple[Emulator, FakeClock]) -> None:
    emu, clock = sim
    emu.observe_pod(ready_pod("chat-a"))
    emu.set_load(NS, "chat", {"requestsPerSecond": 60})  # ~36 req/s saturates one replica
    run(emu, clock, 20)
    snap = parse_vllm_metrics(emu.metrics_text((NS, "chat-a")), clock.t)
    assert snap.waiting + emu.load_status(NS, "chat")["gatewayQueue"] > 50
    for name in ("chat-b", "chat-c", "chat-d"):
        emu.observe_pod(ready_pod(name))
    run(emu, clock, 60)
    assert emu.load_status(NS, "chat")["gatewayQueue"] == 0
    per_pod = [
        parse_vllm_metrics(emu.metrics_text((NS, n)), clock.t)
        for n in ("chat-a", "chat-b", "chat-c", "chat-d")
    ]
    assert all(s.waiting < 5 for s in per_pod)
    running = [s.running for s in per_pod]
    assert min(running) > 0.4 * max(running)  # fewest-outstanding routing spreads the load


def test_only_ready_pods_take_generated_requests(sim: tuple[Emulator, FakeClock]) -> None:
    emu, clock = sim
    not_ready = ready_pod("chat-a")
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    emu.observe_pod(not_ready)
    emu.set_load(NS, "chat", {"requestsPerSecond": 4})
    run(emu, clock, 5)
    st = emu.load_status(NS, "chat")
    assert st["gatewayQueue"] > 5 and st["readyReplicas"] == 0
    assert emu.pending()[(NS, "chat")] == st["gatewayQueue"]
    emu.observe_pod(ready_pod("chat-a") | {"metadata": not_ready["metadata"]})
    run(emu, clock, 1)
    assert emu.load_status(NS, "chat")["gatewayQueue"] == 0
    # A pod that goes away loses what it had in flight; listings prune per namespace.
    emu.remove_pod(NS, "chat-a")
    assert emu.load_status(NS, "chat")["lost"] > 0
    emu.observe_pod(ready_pod("chat-b"))
    emu.sync_pods([], namespace="other")
    assert [p["name"] for p in emu.pods()] == ["chat-b"]
    emu.sync_pods([], namespace=NS)
    assert emu.pods() == []


def test_load_spec_schedule_and_trace(sim: tuple[Emulator, FakeClock], tmp_path: Path) -> None:
    emu, clock = sim
    spec = LoadSpec().updated({"requestsPerSecond": 3})
    assert spec == LoadSpec(3.0, 220, 200)
    assert spec.updated({"outputTokens": 50}).to_json() == {
        "requestsPerSecond": 3.0,
        "promptTokens": 220,
        "outputTokens": 50,
    }
    for bad in ({"requestsPerSecond": -1}, {"promptTokens": 0}, {"rps": 1}, {"outputTokens": "x"}):
        with pytest.raises(ControlError):
            LoadSpec().updated(bad)
    emu.set_schedule(
        {f"{NS}/chat": [{"at": 0, "requestsPerSecond": 2}, {"at": 10, "requestsPerSecond": 20}]}
    )
    run(emu, clock, 1)
    assert emu.load_status(NS, "chat")["requestsPerSecond"] == 2
    run(emu, clock, 10)
    assert emu.load_status(NS, "chat")["requestsPerSecond"] == 20
    with pytest.raises(ControlError):
        emu.set_schedule({"chat": {"requestsPerSecond": 1}})
    trace = tmp_path / "conv.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:48.6805900,100,10\n"
        "2023-11-16 18:15:56.6805900,200,20\n"
    )
    rows = load_trace(trace)
    assert rows[0] == (0.0, 374, 44) and rows[2][0] == pytest.approx(10.0)
    emu.replay(NS, "replay", rows, speed=2.0)
    run(emu, clock, 2)
    assert emu.load_status(NS, "replay")["arrivals"] == 2
    run(emu, clock, 4)
    assert emu.load_status(NS, "replay")["arrivals"] == 3


# --------------------------------------------------------------------------- the process
def test_process_prints_ready_serves_the_socket_and_exits_after_ttl(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"  # a closed port: the watches just retry
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {}}]\n"
    )
    sock = tmp_path / "emu.sock"
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane_testbed.emulator",
            "--kubeconfig",
            str(kubeconfig),
            "--control-socket",
            str(sock),
            "--ttl",
            "1.5",
            "--log-level",
            "CRITICAL",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == READY_LINE
        client = ControlClient(sock)
        assert client.get("/healthz") == {"ok": True}
        assert client.put(f"/load/{NS}/x", {"requestsPerSecond": 1})["requestsPerSecond"] == 1
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- KWOK stages
_FAKE_RELEASE = {
    "node/fast/node-initialize.yaml": {
        "metadata": {"name": "node-initialize"},
        "spec": {
            "resourceRef": {"kind": "Node"},
            "selector": {
                "matchExpressions": [
                    {"key": ".status.phase", "operator": "NotIn", "values": ["Running"]}
                ]
            },
            "next": {"statusTemplate": "phase: Running"},
        },
    },
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml": {
        "metadata": {"name": "node-heartbeat-with-lease"},
        "spec": {
            "resourceRef": {"kind": "Node"},
            "selector": {
                "matchExpressions": [
                    {"key": ".status.phase", "operator": "In", "values": ["Running"]}
                ]
            },
            "next": {"statusTemplate": "{}"},
        },
    },
    "pod/fast/pod-ready.yaml": {
        "metadata": {"name": "pod-ready"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                    {
                        "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
                        "operator": "NotIn",
                        "values": ["True"],
                    },
                ]
            },
            "next": {"statusTemplate": "phase: Running"},
        },
    },
    "pod/fast/pod-complete.yaml": {
        "metadata": {"name": "pod-complete"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                    {
                        "key": ".metadata.ownerReferences.[].kind",
                        "operator": "In",
                        "values": ["Job"],
                    },
                ]
            },
            "next": {"statusTemplate": "phase: Succeeded"},
        },
    },
    "pod/fast/pod-delete.yaml": {
        "metadata": {"name": "pod-delete"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
                ]
            },
            "next": {"delete": True},
        },
    },
}


def _jq(obj: Any, expr: str) -> list[Any]:
    """The few jq forms the stage selectors use (KWOK evaluates them with gojq)."""
    m = re.fullmatch(
        r'\.status\.conditions\.\[\] \| select\( \.type == "(\w+)" \) \| \.status', expr
    )
    if m:
        conds = (obj.get("status") or {}).get("conditions") or []
        return [c.get("status") for c in conds if c.get("type") == m.group(1)]
    vals = [obj]
    for tok in re.findall(r'\.\[\]|\["[^"]+"\]|\.[A-Za-z]+', expr):
        if tok == ".[]":
            vals = [x for v in vals if isinstance(v, list) for x in v]
        else:
            k = tok[2:-2] if tok.startswith("[") else tok[1:]
            vals = [v.get(k) if isinstance(v, dict) else None for v in vals]
    return vals


def _matching(stages: list[dict[str, Any]], pod: dict[str, Any]) -> list[str]:
    out = []
    for s in stages:
        if s["spec"]["resourceRef"]["kind"] != "Pod":
            continue
        ok = True
        for e in s["spec"]["selector"]["matchExpressions"]:
            vals = _jq(pod, e["key"])
            op = e["operator"]
            present = [v for v in vals if v is not None]
            if op == "In":
                ok = any(str(v) in e["values"] for v in present)
            elif op == "NotIn":
                ok = not any(str(v) in e["values"] for v in present)
            elif op == "Exists":
                ok = bool(present)
            else:
                ok = not present
            if not ok:
                break
        if ok:
            out.append(s["metadata"]["name"])
    return out


def _release_dirs(tmp_path: Path) -> list[Path]:
    fake = tmp_path / "stages"
    for rel, doc in _FAKE_RELEASE.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(
            yaml.safe_dump({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", **doc})
        )
    real = binaries.cache_dir() / "bin" / f"kwok-{binaries.versions()['KWOK_VERSION']}" / "stages"
    return [fake, real] if (real / "pod" / "fast" / "pod-ready.yaml").exists() else [fake]


def test_kwok_stages_leave_model_server_readiness_and_cache_jobs_to_the_emulator(
    tmp_path: Path,
) -> None:
    server = pod_of(render_case("chat-tools"), "s", phase="Pending", ip=None)
    server["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs"}]
    placeholder = {
        "metadata": {"name": "p", "labels": {"modelplane.io/warm-pool": "x"}},
        "spec": {"containers": [{"name": "placeholder", "image": "registry.k8s.io/pause:3.10"}]},
        "status": {"phase": "Pending"},
    }
    cache = {
        "metadata": {
            "name": "c",
            "labels": {"modelplane.io/cache-key": "abc"},
            "ownerReferences": [{"kind": "Job", "name": "cache-abc"}],
        },
        "status": {"phase": "Pending"},
    }
    job = {
        "metadata": {"name": "j", "ownerReferences": [{"kind": "Job", "name": "j"}]},
        "status": {"phase": "Pending"},
    }

    def running(p: dict[str, Any], ready: bool) -> dict[str, Any]:
        st = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}
        return {**p, "status": st}

    for stage_dir in _release_dirs(tmp_path):
        stages = kwok_stages(stage_dir)
        names = [s["metadata"]["name"] for s in stages]
        assert names[:2] == ["node-initialize", "node-heartbeat-with-lease"]
        assert SERVER_START_STAGE in names and len(names) == len(set(names))
        assert _matching(stages, server) == [SERVER_START_STAGE]
        assert _matching(stages, running(server, False)) == []  # readiness: the emulator's
        assert _matching(stages, running(server, True)) == []
        assert _matching(stages, placeholder) == ["pod-ready"]
        assert _matching(stages, cache) == ["pod-ready"]
        assert _matching(stages, running(cache, True)) == []  # completion: the emulator's
        assert _matching(stages, job) == ["pod-ready"]
        assert _matching(stages, running(job, True)) == ["pod-complete"]
        deleted = {
            **running(server, True),
            "metadata": {**server["metadata"], "deletionTimestamp": "t"},
        }
        assert _matching(stages, deleted) == ["pod-delete"]
        start = next(s for s in stages if s["metadata"]["name"] == SERVER_START_STAGE)
        template = start["spec"]["next"]["statusTemplate"]
        assert (
            "ready: false" in template
            and "ready: true" not in template.split("initContainerStatuses")[0]
        )
        assert "phase: Running" in template and "PodIPsWith" in template
        assert 'status: "False"\n  reason: ContainersNotReady\n  type: Ready' in template
        yaml.safe_dump_all(stages)  # what cluster.py writes to kwok.yaml
