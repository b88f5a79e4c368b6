"""Would the real engine start with these arguments? Checked against its own definitions.

The definitions are the ones ``engine_source`` reads from the released source of vLLM and SGLang
(committed here as ``engine_args/<engine>-<version>.json``, regenerated and compared by
tests/unit/test_engine_contract.py whenever a pin moves) and, for TEI (not on PyPI), the facts the
product's catalog pins from TEI's router source (``clap`` arguments of ``router/src/main.rs``).

``check_args(defs, tokens, ...)`` parses like the engine's own parser and returns its errors in
the engine's words: argparse's ``unrecognized arguments: ...``, ``argument --x: invalid choice:
...``, ``argument --x: expected one argument``; clap's ``unexpected argument '--x' found``; then
the start-up checks the engines run right after parsing (vLLM's tool-call parser registry, its
quantization list and deprecated methods, SGLang's LoRA initialisation assertion). An empty list
means the engine gets past argument handling. The engine emulator refuses to start pods that fail
here, and the contract test runs every rendered spec through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from modelplane.api.enums import EngineType
from modelplane.catalog.engines import ENGINES, EngineProfile

__all__ = ["DEFS_DIR", "Defs", "check_args", "defs_for", "load_defs", "tei_defs"]

DEFS_DIR = Path(__file__).resolve().parent / "engine_args"


@dataclass(frozen=True)
class Opt:
    flags: tuple[str, ...]
    nargs: str | None
    value_type: str
    choices: tuple[str, ...] | None
    negatable: bool
    json_fields: Mapping[str, Mapping[str, Any]] | None


@dataclass(frozen=True)
class Defs:
    engine: str  # vllm | sglang | tei
    version: str
    options: Mapping[str, Opt]  # every option string -> its option
    positionals: tuple[str, ...]
    tool_call_parsers: tuple[str, ...]
    deprecated_quantization: tuple[str, ...]
    metrics: frozenset[str]
    routes: frozenset[str]
    source: Mapping[str, Any]

    @property
    def style(self) -> str:
        return "clap" if self.engine == "tei" else "argparse"


def _from_json(data: Mapping[str, Any]) -> Defs:
    options: dict[str, Opt] = {}
    for a in data["args"]:
        o = Opt(
            flags=tuple(a["flags"]),
            nargs=a.get("nargs"),
            value_type=a.get("type", "str"),
            choices=tuple(a["choices"]) if a.get("choices") is not None else None,
            negatable=bool(a.get("negatable")),
            json_fields=a.get("jsonFields"),
        )
        for f in o.flags:
            options[f] = o
        if o.negatable:
            for f in o.flags:
                if f.startswith("--"):
                    options["--no-" + f[2:]] = Opt(
                        (f"--no-{f[2:]}",), "0", "bool", None, False, None
                    )
    return Defs(
        engine=data["engine"],
        version=data["version"],
        options=options,
        positionals=tuple(data.get("positionals", ())),
        tool_call_parsers=tuple(data.get("toolCallParsers", ())),
        deprecated_quantization=tuple(data.get("deprecatedQuantization", ())),
        metrics=frozenset(data.get("metrics", ())),
        routes=frozenset(data.get("routes", ())),
        source=data.get("source", {}),
    )


def load_defs(path: Path) -> Defs:
    return _from_json(json.loads(path.read_text()))


def tei_defs(profile: EngineProfile) -> Defs:
    """TEI's arguments as the catalog pins them (TEI is a Rust binary, not on PyPI)."""
    args = [
        {
            "flags": [f.name],
            "nargs": "0" if f.takes == "none" else None,
            "type": "bool" if f.takes == "none" else "str",
            **({"choices": list(f.choices)} if f.choices else {}),
        }
        for f in profile.engine_flags
    ]
    return _from_json(
        {
            "engine": "tei",
            "version": profile.version,
            "args": args,
            "metrics": sorted(profile.metrics.all_names),
            "routes": [],
            "source": {"pinned": profile.source},
        }
    )


@cache
def defs_for(engine: EngineType) -> Defs:
    """The definitions of the pinned version of ``engine``."""
    p = ENGINES[engine]
    if engine == EngineType.TEI:
        return tei_defs(p)
    return load_defs(DEFS_DIR / f"{p.package}-{p.version}.json")


# --------------------------------------------------------------------------- parsing
def _is_option(tok: str) -> bool:
    if not tok.startswith("-") or tok in ("-", "--"):
        return False
    try:
        float(tok)
    except ValueError:
        return True
    return False


def _choices_text(defs: Defs, choices: Sequence[str]) -> str:
    if defs.style == "clap":
        return ", ".join(choices)
    return ", ".join(repr(c) for c in choices)


def _value_error(defs: Defs, flag: str, opt: Opt, value: str) -> str | None:
    if opt.value_type in ("int", "float"):
        try:
            (int if opt.value_type == "int" else float)(value)
        except ValueError:
            if defs.style == "clap":
                return f"error: invalid value '{value}' for '{flag}': invalid digit found in string"
            return f"argument {'/'.join(opt.flags)}: invalid {opt.value_type} value: {value!r}"
    if opt.value_type == "json" and opt.json_fields is not None:
        try:
            obj = json.loads(value)
        except ValueError as e:
            return f"argument {'/'.join(opt.flags)}: invalid loads value: {value!r} ({e})"
        if not isinstance(obj, dict):
            return f"argument {'/'.join(opt.flags)}: expected a JSON object, got {value!r}"
        for k, v in obj.items():
            err = _field_error(opt, k, v)
            if err:
                return f"argument {'/'.join(opt.flags)}: {err}"
    if opt.choices is not None and value not in opt.choices:
        if defs.style == "clap":
            return (
                f"error: invalid value '{value}' for '{flag} <{flag[2:].upper()}>'\n"
                f"  [possible values: {_choices_text(defs, opt.choices)}]"
            )
        if opt.value_type in ("int", "float"):  # argparse converts before it compares
            shown, listed = value, ", ".join(opt.choices)
        else:
            shown, listed = repr(value), _choices_text(defs, opt.choices)
        return f"argument {'/'.join(opt.flags)}: invalid choice: {shown} (choose from {listed})"
    return None


def _field_error(opt: Opt, key: str, value: Any) -> str | None:
    assert opt.json_fields is not None
    spec = opt.json_fields.get(key)
    if spec is None:
        return f"unknown field {key!r} (fields: {', '.join(sorted(opt.json_fields))})"
    choices = spec.get("choices")
    if choices is not None and str(value) not in choices:
        return f"{key}: input should be {' or '.join(repr(c) for c in choices)}, got {value!r}"
    return None


@dataclass(frozen=True)
class Parsed:
    options: Mapping[str, tuple[str, ...]]  # canonical (first) flag -> values
    positionals: tuple[str, ...]

    def has(self, flag: str) -> bool:
        return flag in self.options

    def value(self, flag: str) -> str | None:
        v = self.options.get(flag)
        return v[-1] if v else None


def parse(defs: Defs, tokens: Sequence[str]) -> tuple[Parsed, list[str]]:
    """Split ``tokens`` as the engine's parser would; (what it read, errors)."""
    errors: list[str] = []
    unrecognized: list[str] = []
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if not _is_option(tok):
            positionals.append(tok)
            continue
        name, eq, inline = tok.partition("=")
        sub = None
        opt = defs.options.get(name)
        if opt is None and "." in name and defs.style == "argparse":
            base, _, sub = name.partition(".")
            opt = defs.options.get(base)
            if opt is None or opt.json_fields is None:
                opt = None
        if opt is None:
            unrecognized.append(tok)
            # Its values become unrecognized too (argparse reports them together).
            while not eq and i < len(tokens) and not _is_option(tokens[i]):
                unrecognized.append(tokens[i])
                i += 1
            continue
        key = opt.flags[0] if not name.startswith("--no-") else name
        got = options.setdefault(key, [])
        if opt.nargs == "0":
            if eq:
                errors.append(
                    f"argument {'/'.join(opt.flags)}: ignored explicit argument {inline!r}"
                )
            continue
        values: list[str] = []
        if eq:
            values = [inline]
        else:
            while i < len(tokens) and not _is_option(tokens[i]):
                values.append(tokens[i])
                i += 1
        if opt.nargs in (None, "append"):
            if not values:
                errors.append(
                    f"error: a value is required for '{name}' but none was supplied"
                    if defs.style == "clap"
                    else f"argument {'/'.join(opt.flags)}: expected one argument"
                )
                continue
            positionals += values[1:]
            values = values[:1]
        elif opt.nargs == "+" and not values:
            errors.append(f"argument {'/'.join(opt.flags)}: expected at least one argument")
            continue
        elif opt.nargs == "?":
            values = values[:1]
        for v in values:
            if sub is not None:
                assert opt.json_fields is not None
                err = _field_error(opt, sub, v)
                err = f"argument {'/'.join(opt.flags)}: {err}" if err else None
            else:
                err = _value_error(defs, name, opt, v)
            if err:
                errors.append(err)
        got += values
    allowed = len(defs.positionals)
    if len(positionals) > allowed:
        unrecognized += positionals[allowed:]
        positionals = positionals[:allowed]
    if unrecognized:
        if defs.style == "clap":
            errors.insert(0, f"error: unexpected argument '{unrecognized[0]}' found")
        else:
            errors.insert(0, f"unrecognized arguments: {' '.join(unrecognized)}")
    return Parsed({k: tuple(v) for k, v in options.items()}, tuple(positionals)), errors


def check_args(
    defs: Defs, tokens: Sequence[str], *, checkpoint_quantization: str | None = None
) -> list[str]:
    """The errors the engine stops with for ``tokens`` (its own arguments, after the program):
    argument parsing first, then its start-up checks of those arguments. ``[]``: it starts."""
    parsed, errors = parse(defs, tokens)
    if errors:
        return errors
    if defs.engine == "vllm":
        if parsed.has("--enable-auto-tool-choice"):
            parser = parsed.value("--tool-call-parser")
            if parser not in defs.tool_call_parsers:
                errors.append(
                    f"KeyError: 'invalid tool call parser: {parser} "
                    f"(chose from {{ {','.join(defs.tool_call_parsers)} }})'"
                )
        method = parsed.value("--quantization") or checkpoint_quantization
        if method in defs.deprecated_quantization and not parsed.has(
            "--allow-deprecated-quantization"
        ):
            errors.append(
                f"ValueError: The quantization method {method} is deprecated and will be "
                "removed in future versions of vLLM. To bypass, set "
                "`--allow-deprecated-quantization`."
            )
    if (
        defs.engine == "sglang"
        and parsed.has("--enable-lora")
        and not parsed.options.get("--lora-paths")
        and not (parsed.value("--max-lora-rank") and parsed.options.get("--lora-target-modules"))
    ):
        errors.append(
            "AssertionError: When no initial --lora-paths is provided, you need to specify "
            "both --max-lora-rank and --lora-target-modules for LoRA initialization."
        )
    return errors
