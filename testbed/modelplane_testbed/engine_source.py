"""The engines' own definitions, read from their released source without importing it.

``fetch(name, version)`` downloads one release of vLLM or SGLang from PyPI (the sdist when there
is one, else a wheel; checked against PyPI's sha256), keeps only its Python files and caches them
outside the repository, keyed by engine and version, like the Go builds:

    $MODELPLANE_CACHE/engines/<name>-<version>/      (default cache: ~/.cache/modelplane)

Nothing is installed or imported: ``read_engine(name, root)`` parses the files with ``ast`` and
rebuilds what the engine's argparse would accept, by the same rules the engine applies when it
turns its config dataclasses into CLI flags:

* vLLM: the explicit ``add_argument`` calls of ``EngineArgs.add_cli_args``,
  ``AsyncEngineArgs.add_cli_args`` and ``make_arg_parser`` (``vllm serve``), whose kwargs come
  from ``get_kwargs(<Config>)`` (``_compute_kwargs``: bool fields become ``--x/--no-x``, Literal
  fields choices, list fields ``nargs='+'``, dataclass fields JSON), and every field of
  ``FrontendArgs`` (``BaseFrontendArgs.add_cli_args``) with its ``_customize_cli_kwargs``;
* SGLang: every ``A[T, ...]`` field of the ``arg_groups/fields`` namespaces
  (``add_cli_args_from_dataclass``) plus the manual ``add_argument`` calls of
  ``ServerArgs.add_cli_args``.

The result (``EngineDefs``: flags with their arity, type and choices, JSON-valued flags with
their fields, tool-call parser names, deprecated quantization methods, metric names as exposed
and HTTP routes) is written to ``engine_args/<name>-<version>.json`` beside the emulator, which
refuses pods the engine would refuse (``engine_args.check_args``).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EngineDefs",
    "cache_dir",
    "fetch",
    "read_engine",
]

PYPI = "https://pypi.org/pypi"


def cache_dir() -> Path:
    env = os.environ.get("MODELPLANE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "modelplane") / "engines"


# --------------------------------------------------------------------------- fetching
def _release_files(name: str, version: str) -> list[dict[str, Any]]:
    """PyPI's file list of one release (the project JSON: mirrors may lack the per-version one)."""
    with urllib.request.urlopen(f"{PYPI}/{name}/json", timeout=120) as r:
        data = json.load(r)
    files: list[dict[str, Any]] = data.get("releases", {}).get(version) or []
    if not files:
        known = sorted(data.get("releases", {}))[-8:]
        raise RuntimeError(f"{name} {version} is not on PyPI (recent: {', '.join(known)})")
    return files


def _pick(files: list[dict[str, Any]]) -> dict[str, Any]:
    """The sdist (Python source, smallest for vLLM), else an x86_64 or pure wheel."""
    for f in files:
        if f["packagetype"] == "sdist":
            return f
    for f in files:
        n = f["filename"]
        if n.endswith(".whl") and ("x86_64" in n or n.endswith("-any.whl")):
            return f
    return files[0]


def _python_members(blob: bytes, filename: str, package: str) -> Iterator[tuple[str, bytes]]:
    """(path under the package's parent, content) of every .py file of ``package``."""
    if filename.endswith(".whl"):
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            for n in z.namelist():
                if n.startswith(f"{package}/") and n.endswith(".py"):
                    yield n, z.read(n)
        return
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as t:
        for m in t.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) == 2 and parts[1].startswith(f"{package}/") and m.name.endswith(".py"):
                fh = t.extractfile(m)
                if fh is not None:
                    yield parts[1], fh.read()


def fetch(name: str, version: str, *, quiet: bool = False) -> Path:
    """The release's Python files in the cache (downloaded once; atomic, sha256-checked)."""
    out = cache_dir() / f"{name}-{version}"
    if (out / ".complete").exists():
        return out
    files = _release_files(name, version)
    chosen = _pick(files)
    url = chosen["url"]
    if not url.startswith("http"):
        url = urllib.parse.urljoin(f"{PYPI}/{name}/json", url)
    if not quiet:
        print(f"[engine-source] downloading {chosen['filename']} ({chosen['size']} bytes)")
    with urllib.request.urlopen(url, timeout=600) as r:
        blob = r.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != chosen["digests"]["sha256"]:
        raise RuntimeError(f"{chosen['filename']}: sha256 {digest} does not match PyPI's")
    tmp = out.parent / f".{out.name}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    package = name.replace("-", "_")
    count = 0
    for rel, content in _python_members(blob, chosen["filename"], package):
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
        count += 1
    if not count:
        shutil.rmtree(tmp)
        raise RuntimeError(f"{chosen['filename']} holds no {package}/*.py")
    (tmp / "source.json").write_text(
        json.dumps(
            {"file": chosen["filename"], "sha256": digest, "size": chosen["size"], "files": count},
            indent=1,
        )
    )
    (tmp / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


# --------------------------------------------------------------------------- the definitions
@dataclass
class ArgDef:
    """One option as argparse would hold it."""

    flags: list[str]
    nargs: str | None = None  # None: one value; "0": none; "?", "*", "+"; "append"
    value_type: str = "str"  # str | int | float | json | bool
    choices: list[str] | None = None
    negatable: bool = False  # BooleanOptionalAction: --x and --no-x
    #: JSON-valued options (a config dataclass): field -> {"type", "choices"}
    json_fields: dict[str, dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"flags": self.flags, "nargs": self.nargs, "type": self.value_type}
        if self.choices is not None:
            d["choices"] = self.choices
        if self.negatable:
            d["negatable"] = True
        if self.json_fields is not None:
            d["jsonFields"] = self.json_fields
        return d


@dataclass
class EngineDefs:
    engine: str
    version: str
    source: dict[str, Any]
    args: list[ArgDef] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)
    tool_call_parsers: list[str] = field(default_factory=list)
    deprecated_quantization: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # sample names as exposed (counters _total)
    routes: list[str] = field(default_factory=list)  # "POST /v1/load_lora_adapter"

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "version": self.version,
            "source": self.source,
            "positionals": self.positionals,
            "args": [a.to_json() for a in sorted(self.args, key=lambda a: a.flags[0])],
            "toolCallParsers": sorted(self.tool_call_parsers),
            "deprecatedQuantization": sorted(self.deprecated_quantization),
            "metrics": sorted(set(self.metrics)),
            "routes": sorted(set(self.routes)),
        }


# --------------------------------------------------------------------------- ast plumbing
class _Source:
    """Lazily parsed modules of one package tree, with name resolution across imports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._trees: dict[str, ast.Module | None] = {}

    def path_of(self, module: str) -> Path | None:
        base = self.root / Path(*module.split("."))
        for p in (base.with_suffix(".py"), base / "__init__.py"):
            if p.exists():
                return p
        return None

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            p = self.path_of(module)
            self._trees[module] = ast.parse(p.read_text(encoding="utf-8")) if p else None
        return self._trees[module]

    def resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        """The definition of ``name`` as seen from ``module``: a ClassDef, FunctionDef, or the
        value expression of a top-level assignment; follows ``from x import name``."""
        tree = self.tree(module)
        if tree is None or depth > 12:
            return None
        found: tuple[str, ast.AST] | None = None
        for node in _toplevel(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
                found = (module, node)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id == name:
                        found = (module, node.value)
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == name
                and node.value is not None
            ):
                found = (module, node.value)
            elif (
                type(node).__name__ == "TypeAlias"
                and getattr(getattr(node, "name", None), "id", None) == name
            ):
                found = (module, node.value)  # type: ignore[attr-defined]
        if found is not None:
            return found
        for node in _toplevel(tree):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if (a.asname or a.name) == name:
                        src = _absolute(module, node, self.path_of(module))
                        if src is None:
                            continue
                        got = self.resolve(src, a.name, depth + 1)
                        if got is None and self.path_of(f"{src}.{a.name}"):
                            return None  # a submodule, not a name
                        if got is not None:
                            return got
        return None

    def find_class(self, module: str, name: str) -> tuple[str, ast.ClassDef] | None:
        got = self.resolve(module, name)
        if got and isinstance(got[1], ast.ClassDef):
            return got[0], got[1]
        return None


def _toplevel(tree: ast.Module) -> Iterator[ast.stmt]:
    """Top-level statements, including those under ``if TYPE_CHECKING:`` / try blocks."""
    for node in tree.body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            yield from [*node.body, *getattr(node, "orelse", [])]


def _absolute(module: str, node: ast.ImportFrom, path: Path | None) -> str | None:
    if node.level == 0:
        return node.module
    parts = module.split(".")
    is_pkg = path is not None and path.name == "__init__.py"
    base = parts if is_pkg else parts[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _const(node: ast.AST | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


# --------------------------------------------------------------------------- type evaluation
@dataclass(frozen=True)
class _T:
    """An evaluated type hint: kind in builtin | literal | dataclass | generic | other."""

    kind: str
    name: str = ""
    values: tuple[Any, ...] = ()
    args: tuple[_T, ...] = ()
    where: tuple[str, str] | None = None  # (module, class) of a dataclass


_BUILTINS = {"bool", "int", "float", "str", "dict", "list", "set", "tuple", "bytes", "None"}
_GENERIC_ALIASES = {
    "List": "list",
    "Dict": "dict",
    "Set": "set",
    "Tuple": "tuple",
    "Sequence": "list",
    "Mapping": "dict",
    "FrozenSet": "set",
    "frozenset": "set",
}


class _Types:
    def __init__(self, src: _Source) -> None:
        self.src = src

    def members(self, module: str, node: ast.AST | None, depth: int = 0) -> list[_T]:
        """The union members of a hint (Annotated and Optional unwrapped, aliases followed)."""
        if node is None or depth > 20:
            return [_T("other", "?")]
        if isinstance(node, ast.Constant):
            if node.value is None:
                return [_T("builtin", "None")]
            if isinstance(node.value, str):  # a forward reference
                try:
                    return self.members(module, ast.parse(node.value, mode="eval").body, depth + 1)
                except SyntaxError:
                    return [_T("other", node.value)]
            return [_T("other", repr(node.value))]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.members(module, node.left, depth + 1) + self.members(
                module, node.right, depth + 1
            )
        if isinstance(node, ast.Subscript):
            head = _name(node.value)
            inner = node.slice
            elts = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
            if head in ("Annotated", "A"):
                return self.members(module, elts[0], depth + 1)
            if head == "Optional":
                return [*self.members(module, elts[0], depth + 1), _T("builtin", "None")]
            if head == "Union":
                return [m for e in elts for m in self.members(module, e, depth + 1)]
            if head == "Literal":
                vals: list[Any] = []
                for e in elts:
                    v = _const(e)
                    if v is None and not (isinstance(e, ast.Constant) and e.value is None):
                        # a Literal of another alias
                        for m in self.members(module, e, depth + 1):
                            vals += list(m.values)
                    else:
                        vals.append(v)
                return [_T("literal", values=tuple(vals))]
            base = _GENERIC_ALIASES.get(head, head)
            args = tuple(
                _union(self.members(module, e, depth + 1)) for e in elts if _name(e) != "..."
            )
            if base in _BUILTINS:
                return [_T("generic", base, args=args)]
            return [_T("other", head)]
        name = _name(node)
        if name in _BUILTINS:
            return [_T("builtin", name)]
        if name in _GENERIC_ALIASES:
            return [_T("generic", _GENERIC_ALIASES[name])]
        if name in ("Any", "object"):
            return [_T("other", name)]
        if isinstance(node, ast.Name):
            got = self.src.resolve(module, node.id)
            if got is not None:
                mod, d = got
                if isinstance(d, ast.ClassDef):
                    if _is_dataclass(d):
                        return [_T("dataclass", d.name, where=(mod, d.name))]
                    if _is_dict_subclass(d):
                        return [_T("builtin", "dict")]
                    return [_T("other", d.name)]
                if isinstance(d, ast.FunctionDef):
                    return [_T("other", d.name)]
                return self.members(mod, d, depth + 1)
        return [_T("other", name or "?")]

    def fields(
        self, module: str, cls: ast.ClassDef, depth: int = 0
    ) -> dict[str, tuple[str, ast.AST]]:
        """Annotated fields of a dataclass (bases first), name -> (module, annotation node)."""
        out: dict[str, tuple[str, ast.AST]] = {}
        if depth < 8:
            for b in cls.bases:
                bn = _name(b)
                got = self.src.find_class(module, bn) if bn else None
                if got is not None:
                    out.update(self.fields(got[0], got[1], depth + 1))
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if _name(node.annotation) == "ClassVar" or (
                    isinstance(node.annotation, ast.Subscript)
                    and _name(node.annotation.value) == "ClassVar"
                ):
                    continue
                out[node.target.id] = (module, node.annotation)
        return out

    def dataclass_fields(self, where: tuple[str, str]) -> dict[str, dict[str, Any]]:
        """A JSON-valued option's fields: name -> {"type", "choices"} (one level deep)."""
        got = self.src.find_class(*where)
        if got is None:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for fname, (mod, ann) in self.fields(got[0], got[1]).items():
            ms = self.members(mod, ann)
            lits = [v for m in ms if m.kind == "literal" for v in m.values]
            strs = any(m.kind == "builtin" and m.name == "str" for m in ms)
            kinds = sorted(
                {m.name if m.kind in ("builtin", "generic") else m.kind for m in ms} - {"None"}
            )
            entry: dict[str, Any] = {"type": "|".join(kinds)}
            if lits and not strs:
                entry["choices"] = [str(v) for v in sorted(lits, key=str)]
            out[fname] = entry
        return out


def _union(ms: list[_T]) -> _T:
    return ms[0] if len(ms) == 1 else _T("generic", "union", args=tuple(ms))


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr if not isinstance(node.value, ast.Name) else f"{node.value.id}.{node.attr}"
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return "..."
    return ""


def _is_dataclass(cls: ast.ClassDef) -> bool:
    for d in cls.decorator_list:
        n = _name(d.func if isinstance(d, ast.Call) else d)
        if n.split(".")[-1] in ("dataclass", "config"):
            return True
    return any(_name(b).split(".")[-1] in ("Struct",) for b in cls.bases)


def _is_dict_subclass(cls: ast.ClassDef) -> bool:
    return any(_name(b).split(".")[-1] in ("dict", "TypedDict") for b in cls.bases)


# --------------------------------------------------------------------------- vLLM
def _vllm_kwargs(types: _Types, module: str, ann: ast.AST, name: str) -> ArgDef:
    """``_compute_kwargs`` for one field (vllm/engine/arg_utils.py)."""
    ms = types.members(module, ann)
    names = {m.name for m in ms if m.kind in ("builtin", "generic")}

    def has(n: str) -> bool:
        return n in names

    lits = [m for m in ms if m.kind == "literal"]
    dcs = [m for m in ms if m.kind == "dataclass"]
    a = ArgDef(flags=[])
    optional = has("None")
    if dcs:
        a.value_type = "json"
        assert dcs[0].where is not None
        a.json_fields = types.dataclass_fields(dcs[0].where)
    elif names - {"None"} == {"bool", "str"}:
        a.nargs, a.value_type = "?", "str"
    elif has("bool"):
        a.nargs, a.value_type, a.negatable = "0", "bool", True
    elif lits:
        vals = lits[0].values
        a.value_type = {bool: "bool", int: "int", float: "float"}.get(type(vals[0]), "str")
        if not has("str"):
            a.choices = [str(v) for v in sorted(vals)]
    elif names & {"tuple", "list", "set"}:
        coll = next(m for m in ms if m.kind == "generic" and m.name in ("tuple", "list", "set"))
        elem = coll.args[0] if coll.args else _T("builtin", "str")
        if elem.kind == "literal":
            a.choices = [str(v) for v in sorted(elem.values)]
            a.value_type = "int" if isinstance(elem.values[0], int) else "str"
        elif elem.kind == "builtin" and elem.name in ("int", "float"):
            a.value_type = elem.name
        a.nargs = "+"
    elif has("int"):
        a.value_type = "int" if name != "max_model_len" else "str"
    elif has("float"):
        a.value_type = "float"
    elif has("dict"):
        a.value_type = "json"
    del optional
    return a


def _kwargs_source(call: ast.Call) -> tuple[str, str] | None:
    """``**x_kwargs["field"]`` -> (x_kwargs, field)."""
    for kw in call.keywords:
        if kw.arg is None and isinstance(kw.value, ast.Subscript):
            var = _name(kw.value.value)
            key = _const(kw.value.slice)
            if var and isinstance(key, str):
                return var, key
    return None


def _explicit(call: ast.Call, a: ArgDef) -> ArgDef:
    """Apply explicit keyword arguments of an add_argument call over derived ones."""
    for kw in call.keywords:
        if kw.arg == "action":
            act = _const(kw.value) if isinstance(kw.value, ast.Constant) else _name(kw.value)
            if act in ("store_true", "store_false"):
                a.nargs, a.value_type, a.negatable = "0", "bool", False
            elif act and "BooleanOptionalAction" in str(act):
                a.nargs, a.value_type, a.negatable = "0", "bool", True
            elif act == "append":
                a.nargs = "append"
        elif kw.arg == "type":
            t = _name(kw.value)
            if t in ("int", "float", "str"):
                a.value_type = t
            elif "json" in t or "loads" in t:
                a.value_type = "json"
        elif kw.arg == "nargs":
            v = _const(kw.value)
            a.nargs = str(v) if v is not None else a.nargs
        elif kw.arg == "choices":
            v = _const(kw.value)
            if isinstance(v, list | tuple | set):
                a.choices = [str(x) for x in v]
    return a


def _calls(node: ast.AST, attr: str) -> Iterator[ast.Call]:
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr:
            yield n


def _method(src: _Source, module: str, cls: str, name: str) -> ast.FunctionDef | None:
    tree = src.tree(module)
    klass = next(
        (n for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef) and n.name == cls),
        None,
    )
    if klass is None:
        return None
    for node in klass.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _vllm(root: Path, version: str, source: dict[str, Any]) -> EngineDefs:
    src = _Source(root)
    types = _Types(src)
    defs = EngineDefs("vllm", version, source)
    au = "vllm.engine.arg_utils"
    fns = [
        _method(src, au, "EngineArgs", "add_cli_args"),
        _method(src, au, "AsyncEngineArgs", "add_cli_args"),
    ]
    common = "vllm.entrypoints.common.cli_args"
    tree = src.tree(common)
    assert tree is not None, "vllm/entrypoints/common/cli_args.py not found"
    make = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_arg_parser"
    )
    scopes: list[tuple[str, ast.FunctionDef]] = [(au, f) for f in fns if f is not None]
    fn: ast.FunctionDef | None
    scopes.append((common, make))
    for module, fn in scopes:
        # x_kwargs = get_kwargs(Config)
        sources: dict[str, str] = {}
        for n in ast.walk(fn):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call)
                and _name(n.value.func) == "get_kwargs"
                and n.value.args
            ):
                for t in n.targets:
                    if isinstance(t, ast.Name):
                        sources[t.id] = _name(n.value.args[0])
        for call in _calls(fn, "add_argument"):
            flags = [_const(a) for a in call.args]
            flags = [f for f in flags if isinstance(f, str)]
            if not flags:
                continue
            if not flags[0].startswith("-"):
                defs.positionals.append(flags[0])
                continue
            a = ArgDef(flags=flags)
            ks = _kwargs_source(call)
            if ks and ks[0] in sources:
                got = src.find_class(module, sources[ks[0]])
                if got is not None:
                    fields = types.fields(got[0], got[1])
                    if ks[1] in fields:
                        mod, ann = fields[ks[1]]
                        a = _vllm_kwargs(types, mod, ann, ks[1])
                        a.flags = flags
            defs.args.append(_explicit(call, a))
    # Type overrides written as statements: vllm_kwargs["speculative_config"]["type"] = ...
    for fn in fns:
        if fn is None:
            continue
        for n in ast.walk(fn):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.targets[0], ast.Subscript)
                and _const(n.targets[0].slice) == "type"
                and isinstance(n.targets[0].value, ast.Subscript)
            ):
                fname = _const(n.targets[0].value.slice)
                if isinstance(fname, str) and "json" in ast.unparse(n.value):
                    flag = "--" + fname.replace("_", "-")
                    for a in defs.args:
                        if flag in a.flags and a.value_type != "json":
                            a.value_type = "json"
    # FrontendArgs: every field, then _customize_cli_kwargs.
    got = src.find_class(common, "FrontendArgs")
    assert got is not None
    for fname, (mod, ann) in types.fields(got[0], got[1]).items():
        a = _vllm_kwargs(types, mod, ann, fname)
        a.flags = ["--" + fname.replace("_", "-")]
        if fname in ("allowed_origins", "allowed_methods", "allowed_headers"):
            a.nargs, a.value_type = None, "json"
        if fname in ("default_chat_template_kwargs", "reasoning_effort_map"):
            a.value_type = "json"
        if fname == "middleware":
            a.nargs, a.value_type = "append", "str"
        if fname == "disable_access_log_for_endpoints":
            a.nargs = None
        if fname == "lora_modules":
            a.nargs, a.value_type = "+", "str"
        defs.args.append(a)
    # Tool-call parsers registered by name.
    tp = src.resolve("vllm.tool_parsers", "_TOOL_PARSERS_TO_REGISTER")
    if tp is not None and isinstance(tp[1], ast.Dict):
        defs.tool_call_parsers = [k for k in (_const(x) for x in tp[1].keys) if isinstance(k, str)]
    quant = "vllm.model_executor.layers.quantization"
    dq = src.resolve(quant, "DEPRECATED_QUANTIZATION_METHODS")
    if dq is not None:
        defs.deprecated_quantization = list(_const(dq[1]) or [])
    qm = src.resolve(quant, "QuantizationMethods")
    if qm is not None:
        # --quantization takes any string (QuantizationMethods | str); the engine checks it
        # against this list at start-up: record it as the option's choices.
        methods = [v for m in types.members(qm[0], qm[1]) for v in m.values]
        for a in defs.args:
            if "--quantization" in a.flags:
                a.choices = [str(v) for v in methods]
    defs.metrics = _metrics(root / "vllm" / "v1" / "metrics", "vllm:")
    defs.routes = _routes(root / "vllm" / "entrypoints")
    return defs


# --------------------------------------------------------------------------- SGLang
def _sglang(root: Path, version: str, source: dict[str, Any]) -> EngineDefs:
    src = _Source(root)
    types = _Types(src)
    defs = EngineDefs("sglang", version, source)
    fields_dir = root / "sglang" / "srt" / "arg_groups" / "fields"
    for py in sorted(fields_dir.glob("*.py")):
        module = "sglang.srt.arg_groups.fields." + py.stem
        tree = src.tree(module)
        assert tree is not None
        for cls in tree.body:
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in cls.body:
                if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                    continue
                a = _sglang_field(types, module, node.target.id, node.annotation)
                if a is not None:
                    defs.args.append(a)
    fn = _method(src, "sglang.srt.server_args", "ServerArgs", "add_cli_args")
    assert fn is not None, "ServerArgs.add_cli_args not found"
    for call in _calls(fn, "add_argument"):
        flags = [f for f in (_const(a) for a in call.args) if isinstance(f, str)]
        if flags:
            defs.args = [a for a in defs.args if not set(a.flags) & set(flags)]
            a = _explicit(call, ArgDef(flags=flags))
            if flags[0] == "--tool-call-parser":
                a.choices = None  # ["auto"] + the registered names: checked below
            defs.args.append(a)
    names = src.resolve("sglang.srt.function_call.parser_names", "TOOL_CALL_PARSER_NAMES")
    if names is not None:
        defs.tool_call_parsers = ["auto", *(_const(names[1]) or [])]
    for a in defs.args:
        if a.flags[0] == "--tool-call-parser":
            a.choices = list(defs.tool_call_parsers)
    defs.metrics = _metrics(root / "sglang" / "srt" / "observability", "sglang:")
    defs.routes = _routes(root / "sglang" / "srt" / "entrypoints")
    return defs


def _sglang_field(types: _Types, module: str, name: str, ann: ast.AST) -> ArgDef | None:
    """``add_cli_args_from_dataclass`` for one ``A[T, meta]`` field."""
    if not (isinstance(ann, ast.Subscript) and _name(ann.value) in ("A", "Annotated")):
        return None
    elts = list(ann.slice.elts) if isinstance(ann.slice, ast.Tuple) else [ann.slice]
    if len(elts) < 2:
        return None
    meta: dict[str, ast.AST] = {}
    m = elts[1]
    if isinstance(m, ast.Call) and _name(m.func) == "Arg":
        meta = {kw.arg: kw.value for kw in m.keywords if kw.arg}
    elif not (isinstance(m, ast.Constant) and isinstance(m.value, str)) and not (
        isinstance(m, ast.JoinedStr | ast.BinOp)
    ):
        return None
    if _const(meta["no_cli"]) if "no_cli" in meta else False:
        return None
    cli = _const(meta["cli_name"]) if "cli_name" in meta else None
    flags = [cli or "--" + name.replace("_", "-"), *(_const(meta.get("aliases")) or [])]
    a = ArgDef(flags=[str(f) for f in flags])
    explicit_choices = _choice_list(types, module, meta.get("choices"))
    if "action" in meta:
        act = _name(meta["action"])
        akw = meta.get("action_kwargs")
        if act in ("store_true", "store_false") or _const(meta["action"]) in (
            "store_true",
            "store_false",
        ):
            a.nargs, a.value_type = "0", "bool"
        else:
            nargs = None
            if isinstance(akw, ast.Dict):
                for k, v in zip(akw.keys, akw.values, strict=True):
                    if k is not None and _const(k) == "nargs":
                        nargs = _const(v)
            a.nargs = nargs
        return a
    ms = types.members(module, elts[0])
    inner = [x for x in ms if not (x.kind == "builtin" and x.name == "None")]
    lits = [x for x in inner if x.kind == "literal"]
    nargs = _const(meta["nargs"]) if "nargs" in meta else None
    has_parser = "type_parser" in meta
    if lits and len(inner) == 1:
        vals = lits[0].values
        a.value_type = "int" if isinstance(vals[0], int) else "str"
        a.choices = explicit_choices or [str(v) for v in vals]
        return a
    lists = [x for x in inner if x.kind == "generic" and x.name == "list"]
    if len(inner) == 1 and lists and not has_parser:
        elem = lists[0].args[0] if lists[0].args else _T("builtin", "str")
        a.nargs = nargs or "+"
        a.value_type = (
            elem.name if elem.kind == "builtin" and elem.name in ("int", "float") else "str"
        )
        a.choices = explicit_choices
        return a
    if len(inner) == 1 and inner[0].kind == "builtin" and inner[0].name == "bool":
        a.nargs, a.value_type = "0", "bool"
        return a
    if len(inner) == 1 and inner[0].kind == "builtin" and inner[0].name in ("int", "float"):
        a.value_type = inner[0].name
    if has_parser:
        a.value_type = "str"
    a.choices = explicit_choices
    a.nargs = nargs
    return a


def _choice_list(types: _Types, module: str, node: ast.AST | None) -> list[str] | None:
    if node is None:
        return None
    v = _const(node)
    if isinstance(v, list | tuple | set):
        return [str(x) for x in v]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        out: list[str] = []
        for e in node.elts:
            c = _const(e)
            if c is None and isinstance(e, ast.Name):
                got = types.src.resolve(module, e.id)
                c = _const(got[1]) if got else None
            if isinstance(c, str | int | float):
                out.append(str(c))
        return out
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _choice_list(types, module, node.left) or []
        right = _choice_list(types, module, node.right) or []
        return left + right
    if isinstance(node, ast.Name):
        got = types.src.resolve(module, node.id)
        if got is not None:
            return _choice_list(types, got[0], got[1])
    if isinstance(node, ast.Call) and _name(node.func) in ("list", "sorted") and node.args:
        return _choice_list(types, module, node.args[0])
    return None


# --------------------------------------------------------------------------- metrics, routes
def _metrics(directory: Path, prefix: str) -> list[str]:
    """Sample names as exposed: ``name=`` of Counter/Gauge/Histogram constructions."""
    out: list[str] = []
    for py in sorted(directory.rglob("*.py")):
        try:
            tree = ast.parse(py.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call):
                continue
            name = next(
                (_const(k.value) for k in n.keywords if k.arg == "name"),
                _const(n.args[0]) if n.args else None,
            )
            if not (isinstance(name, str) and name.startswith(prefix)):
                continue
            kind = _name(n.func).lower()
            base = name.removesuffix("_total")
            if "counter" in kind:
                out.append(base + "_total")
            elif "histogram" in kind:
                out += [name + "_bucket", name + "_sum", name + "_count"]
            elif "gauge" in kind:
                out.append(name)
    return out


_METHODS = {"get": "GET", "post": "POST", "put": "PUT", "delete": "DELETE"}


def _routes(directory: Path) -> list[str]:
    """``METHOD /path`` of every FastAPI route decorator under ``directory``."""
    out: list[str] = []
    for py in sorted(directory.rglob("*.py")):
        try:
            tree = ast.parse(py.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for n in ast.walk(tree):
            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for d in n.decorator_list:
                if not (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)):
                    continue
                path = _const(d.args[0]) if d.args else None
                if not (isinstance(path, str) and path.startswith("/")):
                    continue
                attr = d.func.attr
                if attr in _METHODS:
                    out.append(f"{_METHODS[attr]} {path}")
                elif attr == "api_route":
                    methods = next(
                        (_const(k.value) for k in d.keywords if k.arg == "methods"), None
                    ) or ["GET"]
                    out += [f"{m} {path}" for m in methods]
    return out


def read_engine(name: str, root: Path, version: str) -> EngineDefs:
    """Every definition of the cached release at ``root`` (see the module doc)."""
    meta = json.loads((root / "source.json").read_text()) if (root / "source.json").exists() else {}
    source = {"pypi": f"{name}=={version}", **{k: meta[k] for k in ("file", "sha256") if k in meta}}
    if name == "vllm":
        return _vllm(root, version, source)
    if name == "sglang":
        return _sglang(root, version, source)
    raise ValueError(f"no reader for {name}")


def pinned() -> list[tuple[str, str]]:
    """(PyPI name, version) of every engine the catalog pins that is on PyPI."""
    from modelplane.catalog.engines import ENGINES

    return [(p.package, p.version) for p in ENGINES.values() if p.package in ("vllm", "sglang")]


def snapshot_path(name: str, version: str) -> Path:
    return Path(__file__).resolve().parent / "engine_args" / f"{name}-{version}.json"


def snapshot(name: str, version: str) -> str:
    """The committed definitions file of a release, as text (fetches the release if needed)."""
    defs = read_engine(name, fetch(name, version, quiet=True), version)
    return json.dumps(defs.to_json(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m modelplane_testbed.engine_source [fetch|write]``: fetch the pinned releases
    into the cache; ``write`` also regenerates engine_args/*.json."""
    import sys
    import time

    args = sys.argv[1:] if argv is None else argv
    for name, version in pinned():
        t = time.monotonic()
        root = fetch(name, version)
        print(f"{name} {version}: {root} ({time.monotonic() - t:.1f}s)")
        if args[:1] == ["write"]:
            path = snapshot_path(name, version)
            path.parent.mkdir(exist_ok=True)
            path.write_text(snapshot(name, version))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
