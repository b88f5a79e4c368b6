"""The engine contract, checked against the engines' own released code.

vLLM and SGLang at the versions the catalog pins are fetched from PyPI once (sdist or wheel,
sha256-checked, Python files only, never installed or imported) into
``~/.cache/modelplane/engines/<name>-<version>`` and read with ``ast``
(``modelplane_testbed.engine_source``). Bumping a pin in ``catalog/engines.py`` fetches and
checks the new release. TEI is not on PyPI: its facts are pinned in the catalog with their
source and date, and checked here against the per-architecture images' documented entrypoint.

A matrix of specs covering every API option, tier and engine is rendered by the builders;
every flag and value is checked against the engine's definitions, and the contract's metric
names and LoRA routes against the engine's source.
"""

from __future__ import annotations

import itertools
import json
import time
from functools import cache
from typing import Any

import pytest

from modelplane.api.enums import EngineType
from modelplane.catalog.engines import ENGINES, SGLANG, TEI, VLLM, EngineProfile
from modelplane.catalog.models import CATALOG
from modelplane.commands import render_documents
from modelplane_testbed import engine_source, factories
from modelplane_testbed.emulator.pods import refusal
from modelplane_testbed.engine_args import Defs, check_args, defs_for, load_defs, tei_defs

PYPI_ENGINES = [p for p in ENGINES.values() if p.package in ("vllm", "sglang")]


@cache
def source_defs(engine: EngineType) -> Defs:
    """Definitions read now from the cached release (fetched on first use)."""
    p = ENGINES[engine]
    if engine == EngineType.TEI:
        return tei_defs(p)
    start = time.monotonic()
    root = engine_source.fetch(p.package, p.version, quiet=True)
    got = engine_source.read_engine(p.package, root, p.version).to_json()
    print(f"{p.package} {p.version}: fetched/read in {time.monotonic() - start:.1f}s")
    path = engine_source.cache_dir() / "defs" / f"{p.package}-{p.version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(got))
    return load_defs(path)


# --------------------------------------------------------------------------- the matrix
def md(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return factories.md(name, "m", spec)


def _chat(engine: str, **engine_opts: Any) -> dict[str, Any]:
    return {"type": engine, **engine_opts}


def matrix() -> list[tuple[str, list[dict[str, Any]]]]:
    """(case, documents): every API option, tier and engine the builders render."""
    cases: list[tuple[str, list[dict[str, Any]]]] = []
    for engine in ("VLLM", "SGLang"):
        for n, opts in enumerate(
            [
                {},
                {"precision": "FP8"},
                {"precision": "BF16", "maxContextLength": 8192, "gpuMemoryUtilization": 0.85},
                {"toolCalling": {"enabled": True}},
                {"structuredOutputs": True},
                {"lora": {"maxAdapters": 4, "maxRank": 64}},
                {"tensorParallelSize": 2, "pipelineParallelSize": 2},
                {"speculativeDecoding": {"mode": "NGram", "numTokens": 4}}
                if engine == "VLLM"
                else {"structuredOutputs": False},
                {
                    "speculativeDecoding": {
                        "mode": "DraftModel",
                        "draftModel": "hf://meta-llama/Llama-3.2-1B-Instruct",
                    }
                }
                if engine == "VLLM"
                else {"args": []},
            ]
        ):
            acc = (
                {"class": "nvidia-h100-80gb", "count": 4} if "pipelineParallelSize" in opts else {}
            )
            spec: dict[str, Any] = {
                "tier": "OnDemand",
                "model": {
                    "catalog": "llama-v3p1-8b-instruct",
                    "servedName": "chat",
                    "aliases": ["gpt-4o", "chat-old"],
                    "revision": "0e9e39f",
                },
                "engine": _chat(engine, **opts),
                "replicas": {"min": 1, "max": 3},
            }
            if acc:
                spec["accelerator"] = acc
            cases.append((f"{engine}-opt{n}", [md(f"c{n}", spec)]))
        # Catalog models whose default engine is this one or that it also serves.
        for mid, m in sorted(CATALOG.items()):
            if EngineType(engine) not in m.engines:
                continue
            cases.append(
                (
                    f"{engine}-{mid}",
                    [
                        md(
                            "cat",
                            {
                                "tier": "OnDemand",
                                "model": {"catalog": mid},
                                "engine": {"type": engine},
                            },
                        )
                    ],
                )
            )
        cases.append(
            (
                f"{engine}-embedding",
                [
                    md(
                        "emb",
                        {
                            "tier": "OnDemand",
                            "model": {"catalog": "e5-mistral-7b-instruct"},
                            "task": "Embedding",
                            "engine": {"type": engine},
                        },
                    )
                ],
            )
        )
        # Preload modes and weight sources.
        for pre in ("NodeLocal", "SharedVolume"):
            cases.append(
                (
                    f"{engine}-{pre}",
                    [
                        md(
                            "pre",
                            {
                                "tier": "OnDemand",
                                "model": {"catalog": "llama-v3p1-8b-instruct"},
                                "engine": {"type": engine},
                                "preload": {"mode": pre},
                            },
                        )
                    ],
                )
            )
        cases.append(
            (
                f"{engine}-s3",
                [
                    md(
                        "s3",
                        {
                            "tier": "OnDemand",
                            "model": {"uri": "s3://bucket/llama"},
                            "engine": {"type": engine, "maxContextLength": 4096},
                            "accelerator": {"class": "nvidia-l40s-48gb", "count": 1},
                        },
                    )
                ],
            )
        )
        # Serverless: two tenants on one backend; FineTuned on a catalog base and on a base.
        cases.append(
            (
                f"{engine}-serverless",
                [
                    md(
                        f"t{i}",
                        {
                            "tier": "Serverless",
                            "model": {"catalog": "llama-v3p1-8b-instruct", "aliases": [f"a{i}"]},
                            "engine": {"type": engine},
                        },
                    )
                    for i in (1, 2)
                ],
            )
        )
        cases.append(
            (
                f"{engine}-finetuned",
                [
                    md(
                        "ft",
                        {
                            "tier": "FineTuned",
                            "base": {"catalog": "llama-v3p1-8b-instruct"},
                            "adapters": [{"name": "sql", "uri": "hf://org/sql-lora"}],
                            "engine": {"type": engine},
                        },
                    )
                ],
            )
        )
    # TEI on every GPU kind (one image per architecture).
    for cls in ("nvidia-a10g-24gb", "nvidia-l4-24gb", "nvidia-a100-80gb", "nvidia-h100-80gb"):
        for mid in ("nomic-embed-text-v1p5", "e5-mistral-7b-instruct"):
            cases.append(
                (
                    f"TEI-{mid}-{cls}",
                    [
                        md(
                            "emb",
                            {
                                "tier": "OnDemand",
                                "model": {"catalog": mid, "aliases": ["embed"]},
                                "task": "Embedding",
                                "engine": {"type": "TEI"},
                                "accelerator": {"class": cls, "count": 1},
                            },
                        )
                    ],
                )
            )
    # The catalog's own engine choice for every model (Whisper, vision, 405B FP8, ...).
    for mid in sorted(CATALOG):
        cases.append((f"default-{mid}", [md("d", {"tier": "OnDemand", "model": {"catalog": mid}})]))
    return cases


def render(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return render_documents(json.loads(json.dumps(docs)), "static")


def containers(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for o in objs
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
        if c["name"] == "server"
    ]


def engine_of(c: dict[str, Any]) -> EngineProfile:
    for p in ENGINES.values():
        if list(c["command"]) == list(p.command):
            return p
    raise AssertionError(f"no engine runs {c['command']}")


def problems(c: dict[str, Any], defs_of: Any = source_defs) -> list[str]:
    """Everything wrong with one rendered server container, against the engine's own code."""
    p = engine_of(c)
    args = [str(a) for a in c["args"]]
    model = next((a for a in args if a.count("/") == 1 and not a.startswith("-")), None)
    cat = next((m for m in CATALOG.values() if m.hf_repo == model), None)
    out = [f"contract: {e}" for e in p.check_args(args)]
    out += check_args(
        defs_of(p.engine),
        args,
        checkpoint_quantization=cat.checkpoint_quantization if cat else None,
    )
    return out


MATRIX = matrix()


def test_the_matrix_covers_every_engine_tier_and_option() -> None:
    rendered = [(case, render(docs)) for case, docs in MATRIX]
    engines = {engine_of(c).engine for _, objs in rendered for c in containers(objs)}
    assert engines == set(EngineType)
    flags = {
        a.split("=")[0]
        for _, objs in rendered
        for c in containers(objs)
        for a in c["args"]
        if str(a).startswith("--")
    }
    declared = {f.name for p in (VLLM, SGLANG) for f in p.engine_flags} | {
        "--model-id",
        "--hostname",
        "--port",
        "--served-model-name",
        "--revision",
        "--huggingface-hub-cache",
        "--dtype",
        "--pooling",
    }
    # Every flag of the vLLM and SGLang contracts is rendered by some spec of the matrix.
    assert declared - flags == set(), declared - flags
    assert len(MATRIX) >= 60


@pytest.mark.parametrize(("case", "docs"), MATRIX, ids=[c for c, _ in MATRIX])
def test_every_rendered_flag_and_value_is_accepted_by_the_engine(
    case: str, docs: list[dict[str, Any]]
) -> None:
    cs = containers(render(docs))
    assert cs, f"{case}: nothing rendered"
    for c in cs:
        assert problems(c) == [], f"{case}: {engine_of(c).engine.value} {c['args']}"
        # The emulator starts it (same definitions, committed snapshot).
        assert refusal(c, _emulated(c), list(c["args"])) is None


def _emulated(c: dict[str, Any]) -> Any:
    from modelplane_testbed.emulator.pods import Engine

    return {
        EngineType.VLLM: Engine.VLLM,
        EngineType.SGLANG: Engine.SGLANG,
        EngineType.TEI: Engine.TEI,
    }[engine_of(c).engine]


def test_a_wrong_flag_or_value_fails_the_check() -> None:
    """Shown once: a builder output with one wrong flag and one wrong value is reported."""
    cases = dict(MATRIX)
    c = containers(render(cases["VLLM-opt5"]))[0]  # vLLM with LoRA
    assert problems(c) == []
    args = [str(a) for a in c["args"]]
    wrong_value = list(args)
    wrong_value[wrong_value.index("--max-lora-rank") + 1] = "48"
    got = problems({**c, "args": wrong_value})
    assert any("invalid choice: 48" in e for e in got), got
    wrong_flag = [*args, "--enable-lora-bias"]
    got = problems({**c, "args": wrong_flag})
    assert any("unrecognized arguments: --enable-lora-bias" in e for e in got), got
    s = containers(render(cases["SGLang-opt0"]))[0]
    two_names = [*s["args"]]
    i = two_names.index("--served-model-name")
    two_names[i + 2 : i + 2] = ["an-alias"]
    assert any("unrecognized arguments: an-alias" in e for e in problems({**s, "args": two_names}))


# --------------------------------------------------------------------------- source facts
@pytest.mark.parametrize("profile", PYPI_ENGINES, ids=[p.package for p in PYPI_ENGINES])
def test_committed_definitions_are_the_release(profile: EngineProfile) -> None:
    """The emulator's definitions file is what the pinned release defines (regenerate with
    `uv run python -m modelplane_testbed.engine_source write` after a bump)."""
    path = engine_source.snapshot_path(profile.package, profile.version)
    assert path.exists(), f"{path} missing: run python -m modelplane_testbed.engine_source write"
    assert path.read_text() == engine_source.snapshot(profile.package, profile.version)


@pytest.mark.parametrize("profile", PYPI_ENGINES, ids=[p.package for p in PYPI_ENGINES])
def test_contract_flags_choices_metrics_and_routes_are_in_the_source(
    profile: EngineProfile,
) -> None:
    d = source_defs(profile.engine)
    for f in profile.engine_flags:
        base = f.name.split(".", 1)[0]
        opt = d.options.get(base)
        assert opt is not None, f"{profile.package} {profile.version} has no {base}"
        if "." in f.name:
            assert opt.json_fields and f.name.split(".", 1)[1] in opt.json_fields
            allowed = opt.json_fields[f.name.split(".", 1)[1]].get("choices")
        else:
            allowed = opt.choices
            want = {"none": "0", "many": "+"}.get(f.takes)
            if f.takes == "many":
                assert opt.nargs in ("+", "*"), f"{f.name} takes one value in the engine"
            elif want:
                assert opt.nargs == want, f"{f.name}: {opt.nargs}"
            else:
                assert opt.nargs in (None, "?"), f"{f.name}: nargs {opt.nargs}"
        if f.choices and allowed is not None:
            assert set(f.choices) <= set(allowed), f"{f.name}: {set(f.choices) - set(allowed)}"
    assert profile.tool_call_parsers <= set(d.tool_call_parsers)
    assert profile.deprecated_quantization <= set(d.deprecated_quantization)
    assert profile.metrics.all_names <= d.metrics, profile.metrics.all_names - d.metrics
    assert f"POST {profile.lora_load_path}" in d.routes
    assert f"POST {profile.lora_unload_path}" in d.routes
    assert f"GET {profile.lora_list_path}" in d.routes
    assert f"GET {profile.health_path}" in d.routes
    if profile.lora_ranks:
        assert (
            tuple(int(r) for r in d.options["--max-lora-rank"].choices or ()) == profile.lora_ranks
        )
    if profile.max_served_names == 1:
        assert d.options["--served-model-name"].nargs is None
    else:
        assert d.options["--served-model-name"].nargs == "+"
    assert d.options[profile.lora_enable_args[0]].nargs == "0"


def test_vllm_quantization_values_are_current() -> None:
    d = source_defs(EngineType.VLLM)
    methods = d.options["--quantization"].choices or ()
    assert set(VLLM.online_quantization.values()) <= set(methods)
    for m in CATALOG.values():
        if m.checkpoint_quantization:
            assert m.checkpoint_quantization in methods


def test_tei_facts_match_the_per_architecture_images() -> None:
    """TEI: the cuda- (all-architecture) image has no `text-embeddings-router` (its binaries
    are suffixed per compute capability); the per-architecture tags do."""
    assert TEI.command == ("text-embeddings-router",)
    for _, image in TEI.images_by_gpu:
        tag = image.rpartition(":")[2]
        assert not tag.startswith("cuda-") and tag.endswith(TEI.version)
    bad = {"image": f"ghcr.io/huggingface/text-embeddings-inference:cuda-{TEI.version}"}
    why = refusal({**bad, "command": ["text-embeddings-router"]}, _tei(), ["--model-id", "a/b"])
    assert why and "executable file not found" in why
    assert "--served-model-name" in TEI.flags and TEI.max_served_names == 1
    assert TEI.metrics.all_names == {"te_queue_size", "te_request_success"}
    assert TEI.source and "2026" in TEI.source


def _tei() -> Any:
    from modelplane_testbed.emulator.pods import Engine

    return Engine.TEI


def test_emulator_definitions_are_the_checked_ones() -> None:
    for p in PYPI_ENGINES:
        assert defs_for(p.engine).options.keys() == source_defs(p.engine).options.keys()


def test_every_engine_option_combination_of_the_api_is_rendered_or_refused() -> None:
    """No option is dropped: each (engine, option) either renders args the engine accepts or
    is refused with a reason naming the field and the fix."""
    opts: dict[str, dict[str, Any]] = {
        "speculative": {"speculativeDecoding": {"mode": "NGram"}},
        "pp": {"pipelineParallelSize": 2},
        "tp": {"tensorParallelSize": 2},
        "lora": {"lora": {}},
        "lora-rank-48": {"lora": {"maxRank": 48}},
        "so-true": {"structuredOutputs": True},
        "so-false": {"structuredOutputs": False},
    }
    for engine, (name, o) in itertools.product(("VLLM", "SGLang", "TEI"), opts.items()):
        mid = "nomic-embed-text-v1p5" if engine == "TEI" else "llama-v3p1-8b-instruct"
        doc = md(
            "x",
            {
                "tier": "OnDemand",
                "model": {"catalog": mid},
                "engine": {"type": engine, **o},
                "accelerator": {"class": "nvidia-h100-80gb", "count": 2},
            },
        )
        try:
            cs = containers(render([doc]))
        except SystemExit as e:
            message = str(e)
        else:
            message = ""
        if message:
            assert "EngineOptionUnsupported" in message or "InvalidParallelism" in message
            assert "structuredOutputs" in message or not name.startswith("so-"), message
            continue
        for c in cs:
            assert problems(c) == [], (engine, name, c["args"])
