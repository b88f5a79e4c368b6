"""What a model-server pod asks for, read from the pod as created (no hints from the product).

``server_spec(pod)`` finds the engine container and reads what the real engine would read: the
command line (engine, model, served names, port and host, precision, LoRA, pooling), the env
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, ``PORT``, ``HUGGINGFACE_HUB_CACHE``), the volume mounts
and the readiness probe. ``derive_startup(spec, pod, node, ...)`` turns that and the node's
labels into a start-up time with ``simulator.ColdStartModel``:

- image pull: skipped when the image is already on the node (pulled by an earlier pod or cache
  Job this emulator ran there); a pull in progress on the node is shared;
- weight load: the checkpoint size from the product's model catalog (looked up by the Hugging
  Face id in the args; precision flags give the served size), 10 GB when unknown; read at local
  NVMe speed **only** when the pod mounts the node cache that holds the weights: a hostPath
  volume under ``/var/lib/modelplane/cache/<key>`` mounted where the engine reads weights from
  (``--download-dir``, the model path, TEI's hub cache) **and** the node carries
  ``cache.modelplane.io/<key>=ready``;
- engine warm-up (CUDA graphs, compile): per engine.

Engine facts (flags, defaults) follow /work/shared/notes/engines.md: vLLM 0.33, SGLang 0.5.23,
TEI 1.9.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from modelplane.api.enums import EngineType, Precision, Task
from modelplane.catalog.engines import ENGINES
from modelplane.catalog.models import CATALOG, CatalogModel
from modelplane.catalog.sizing import GB_PER_GIB, weights_gib
from modelplane_testbed.engine_args import check_args, defs_for
from modelplane_testbed.simulator import ColdStartBreakdown, ColdStartModel

__all__ = [
    "CACHE_LABEL_PREFIX",
    "CACHE_ROOT",
    "DEFAULT_WEIGHTS_GB",
    "LABEL_CACHE_KEY",
    "LABEL_DEPLOYMENT",
    "CacheCheck",
    "Engine",
    "EngineRefusedError",
    "ParsedArgs",
    "Probe",
    "ServerSpec",
    "SpecError",
    "StartupPlan",
    "catalog_model",
    "check_node_cache",
    "derive_startup",
    "download_plan",
    "parse_args",
    "server_spec",
]

LABEL_DEPLOYMENT = "modelplane.io/deployment"
LABEL_CACHE_KEY = "modelplane.io/cache-key"
CACHE_ROOT = "/var/lib/modelplane/cache"
CACHE_LABEL_PREFIX = "cache.modelplane.io/"
DEFAULT_WEIGHTS_GB = 10.0


class Engine(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    TEI = "tei"


class SpecError(ValueError):
    """The pod is not something the emulator can run (unknown engine, unreadable args)."""


class EngineRefusedError(SpecError):
    """The real engine would not start with this pod: the message is the engine's own error
    (argparse / clap, its start-up checks, a missing binary or extra), as its log would show."""


# --------------------------------------------------------------------------- argument parsing
#: Flags that take no value (the next token is not theirs).
_BOOL_FLAGS = frozenset(
    {
        "--enable-lora",
        "--allow-deprecated-quantization",
        "--trust-remote-code",
        "--enable-auto-tool-choice",
        "--enable-metrics",
        "--is-embedding",
        "--enable-sleep-mode",
        "--fully-sharded-loras",
        "--auto-truncate",
        "--enable-prefix-caching",
        "--no-enable-prefix-caching",
        "--enforce-eager",
        "--disable-log-requests",
        "--disable-log-stats",
        "--enable-chunked-prefill",
        "--disable-radix-cache",
        "--enable-torch-compile",
        "--skip-server-warmup",
        "--json",
    }
)
#: Flags that take one or more values (``nargs='+'``): everything up to the next flag.
_MULTI_FLAGS = {
    Engine.VLLM: frozenset({"--served-model-name", "--lora-modules", "--middleware"}),
    Engine.SGLANG: frozenset({"--lora-paths", "--lora-target-modules"}),
    Engine.TEI: frozenset[str](),
}


@dataclass(frozen=True)
class ParsedArgs:
    """An engine command line: positionals and ``--flag -> values`` (repeats accumulate)."""

    positionals: tuple[str, ...]
    flags: Mapping[str, tuple[str, ...]]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def value(self, flag: str, default: str | None = None) -> str | None:
        vals = self.flags.get(flag)
        return vals[-1] if vals else default

    def values(self, flag: str) -> tuple[str, ...]:
        return self.flags.get(flag, ())


_ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size"}


def _is_flag(token: str) -> bool:
    if not token.startswith("-") or token in ("-", "--"):
        return False
    try:
        float(token)  # a negative number is a value
    except ValueError:
        return True
    return False


def parse_args(tokens: Sequence[str], engine: Engine) -> ParsedArgs:
    """Split ``tokens`` like the engine's argparse would (well enough for what we read)."""
    multi = _MULTI_FLAGS[engine]
    positionals: list[str] = []
    flags: dict[str, list[str]] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if not _is_flag(tok):
            positionals.append(tok)
            continue
        name, eq, inline = tok.partition("=")
        name = _ALIASES.get(name, name)
        got = flags.setdefault(name, [])
        if eq:
            got.append(inline)
            continue
        if name in _BOOL_FLAGS:
            continue
        following: list[str] = []
        while i < len(tokens) and not _is_flag(tokens[i]):
            following.append(tokens[i])
            i += 1
        if name in multi:
            got += following
        elif following:
            got.append(following[0])
            positionals += following[1:]
    return ParsedArgs(tuple(positionals), {k: tuple(v) for k, v in flags.items()})


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Probe:
    """A kubelet probe as far as the emulator runs it."""

    kind: str  # "http", "tcp" or "none"
    path: str = "/"
    port: int = 0
    period_s: float = 10.0
    failure_threshold: int = 3
    success_threshold: int = 1
    timeout_s: float = 1.0

    @property
    def budget_s(self) -> float:
        return self.period_s * self.failure_threshold


@dataclass(frozen=True)
class ServerSpec:
    """One model server, as its engine would understand the pod."""

    engine: Engine
    container: str
    image: str
    model: str  # the model argument: a Hugging Face id or a local path
    hf_id: str | None  # the Hugging Face id of the weights, when the pod names one
    served_names: tuple[str, ...]
    port: int  # where the engine listens (its --port / env / default)
    host: str | None  # --host / --hostname; None: the engine's default
    declared_ports: tuple[int, ...]
    download_dir: str | None
    revision: str | None
    dtype: str | None
    quantization: str | None
    tensor_parallel: int
    gpus: int
    lora: bool  # LoRA support enabled on the command line
    runtime_lora: bool  # the runtime load/unload API is on
    max_loras: int
    static_adapters: Mapping[str, str] = field(default_factory=dict)
    embedding: bool = False
    transcription: bool = False
    metrics: bool = True  # SGLang serves /metrics only with --enable-metrics
    api_key: str | None = None
    max_model_len: int | None = None
    readiness: Probe = Probe("none")
    startup_probe: Probe | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    args: ParsedArgs = ParsedArgs((), {})
    warnings: tuple[str, ...] = ()

    @property
    def base_name(self) -> str:
        return self.served_names[0]

    @property
    def reachable(self) -> bool:
        """False when the engine listens on loopback only (unreachable from outside the pod)."""
        return self.host not in ("127.0.0.1", "localhost", "::1")

    def weight_paths(self) -> list[str]:
        """Where the engine reads (or downloads) the weights from."""
        if self.model.startswith("/"):
            return [self.model]  # a local path: loaded from there, nothing downloaded
        return [self.download_dir] if self.download_dir else []


_DEFAULT_PORT = {Engine.VLLM: 8000, Engine.SGLANG: 30000, Engine.TEI: 80}


def _tokens(container: Mapping[str, Any]) -> list[str]:
    command = [str(t) for t in container.get("command") or []]
    args = [str(t) for t in container.get("args") or []]
    if len(command) >= 2 and posixpath.basename(command[0]) in ("sh", "bash") and "-c" in command:
        script = command[command.index("-c") + 1] if command.index("-c") + 1 < len(command) else ""
        return shlex.split(script) + args
    return command + args


def _engine_of(container: Mapping[str, Any]) -> tuple[Engine, list[str]] | None:
    """The engine a container runs, and its own arguments (after the program / subcommand)."""
    tokens = _tokens(container)
    for i, tok in enumerate(tokens):
        base = posixpath.basename(tok)
        if base == "vllm" and i + 1 < len(tokens) and tokens[i + 1] == "serve":
            return Engine.VLLM, tokens[i + 2 :]
        if tok == "vllm.entrypoints.openai.api_server":
            return Engine.VLLM, tokens[i + 1 :]
        if tok == "sglang.launch_server":
            return Engine.SGLANG, tokens[i + 1 :]
        if base == "text-embeddings-router":
            return Engine.TEI, tokens[i + 1 :]
    if container.get("command"):
        return None
    image = str(container.get("image") or "")
    # No command: the image's entrypoint runs with `args`.
    if "vllm-openai" in image or image.startswith("vllm/"):
        return Engine.VLLM, tokens
    if "sglang" in image:
        return Engine.SGLANG, tokens
    if "text-embeddings-inference" in image:
        return Engine.TEI, tokens
    return None


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    """Plain env values (secrets are not resolved: only their presence is kept, as "")."""
    out: dict[str, str] = {}
    for e in container.get("env") or []:
        out[str(e.get("name"))] = "" if e.get("value") is None else str(e.get("value"))
    return out


def _port_number(port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise SpecError(f"probe port {port!r} is not a port of container {container.get('name')}")


def _probe(raw: Mapping[str, Any] | None, container: Mapping[str, Any]) -> Probe | None:
    if not raw:
        return None
    common = {
        "period_s": float(raw.get("periodSeconds", 10)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "timeout_s": float(raw.get("timeoutSeconds", 1)),
    }
    if "httpGet" in raw:
        http = raw["httpGet"]
        return Probe(
            "http",
            path=str(http.get("path") or "/"),
            port=_port_number(http.get("port"), container),
            **common,  # type: ignore[arg-type]
        )
    if "tcpSocket" in raw:
        return Probe("tcp", port=_port_number(raw["tcpSocket"].get("port"), container), **common)  # type: ignore[arg-type]
    return Probe("none", **common)  # type: ignore[arg-type]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _gpus(container: Mapping[str, Any]) -> int:
    res = container.get("resources") or {}
    for part in ("limits", "requests"):
        value = (res.get(part) or {}).get("nvidia.com/gpu")
        if value is not None:
            return int(str(value))
    return 0


def _adapters(values: Iterable[str]) -> dict[str, str]:
    """``--lora-modules`` / ``--lora-paths`` entries: ``name=path``, JSON, or a bare path."""
    out: dict[str, str] = {}
    for v in values:
        v = v.strip()
        if v.startswith("{"):
            try:
                d = json.loads(v)
            except ValueError:
                continue
            name = d.get("name") or d.get("lora_name")
            path = d.get("path") or d.get("lora_path")
            if name and path:
                out[str(name)] = str(path)
        elif "=" in v:
            name, _, path = v.partition("=")
            out[name] = path
        elif v:
            out[v] = v
    return out


def _hf_id(model: str) -> str | None:
    if model.startswith("/") or "://" in model or model.count("/") != 1:
        return None
    return model


def catalog_model(hf_id: str | None) -> CatalogModel | None:
    """The product's catalog entry whose weights are ``hf_id`` (org/repo), if any."""
    if not hf_id:
        return None
    for m in CATALOG.values():
        if m.hf_repo.lower() == hf_id.lower():
            return m
    return None


def _engine_container(pod: Mapping[str, Any]) -> tuple[Mapping[str, Any], Engine, list[str]]:
    containers = (pod.get("spec") or {}).get("containers") or []
    for c in containers:
        found = _engine_of(c)
        if found is not None:
            return c, found[0], found[1]
    images = ", ".join(str(c.get("image")) for c in containers) or "no containers"
    raise SpecError(f"no vLLM, SGLang or TEI container ({images})")


#: The product's engine type of each emulated engine (the definitions checked against).
_ENGINE_TYPE = {
    Engine.VLLM: EngineType.VLLM,
    Engine.SGLANG: EngineType.SGLANG,
    Engine.TEI: EngineType.TEI,
}


def refusal(container: Mapping[str, Any], engine: Engine, tokens: Sequence[str]) -> str | None:
    """Why the real engine would not start this container, in its own words (None: it starts).

    Checks the arguments against the engine's own definitions (``engine_args``: read from the
    released vLLM / SGLang source, TEI's pinned clap table), the binary the image ships, and the
    optional extras a model needs."""
    image = str(container.get("image") or "")
    command = [str(t) for t in container.get("command") or []]
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    if engine == Engine.TEI and command and tag.startswith("cuda-"):
        binary = posixpath.basename(command[0])
        if binary == "text-embeddings-router":
            return (
                f'exec: "{binary}": executable file not found in $PATH (the {tag} image ships '
                "text-embeddings-router-{75,80,90,100,120} and entrypoint.sh)"
            )
    hf = None
    for t in tokens:
        if _hf_id(t):
            hf = t
            break
    cat = catalog_model(hf)
    defs = defs_for(_ENGINE_TYPE[engine])
    errors = check_args(
        defs, tokens, checkpoint_quantization=cat.checkpoint_quantization if cat else None
    )
    if errors:
        prog = {Engine.VLLM: "vllm serve", Engine.SGLANG: "launch_server"}.get(engine)
        if defs.style == "argparse" and not errors[0].startswith(
            ("KeyError", "ValueError", "Assert")
        ):
            return f"{prog}: error: {errors[0]}"
        return errors[0]
    if cat is not None and "audio" in cat.engine_extras and engine == Engine.VLLM:
        audio = ENGINES[EngineType.VLLM].extra_images.get("audio")
        if image != audio and "audio" not in image:
            return (
                "ImportError: Please install vllm[audio] for audio support "
                f"({image} is the stock image, without the audio extra)"
            )
    return None


def server_spec(pod: Mapping[str, Any]) -> ServerSpec:
    """Read a model-server pod (a dict as the API serves it) the way its engine would.
    ``EngineRefusedError`` when the real engine would not start it."""
    container, engine, tokens = _engine_container(pod)
    refused = refusal(container, engine, tokens)
    if refused:
        raise EngineRefusedError(f"{engine.value}: {refused}")
    a = parse_args(tokens, engine)
    env = _env(container)
    warnings: list[str] = []
    if engine == Engine.VLLM:
        model = a.value("--model") or (a.positionals[0] if a.positionals else None)
    elif engine == Engine.SGLANG:
        model = a.value("--model-path") or a.value("--model")
    else:
        model = a.value("--model-id") or env.get("MODEL_ID")
    if not model:
        raise SpecError(f"{engine.value}: no model on the command line")
    port_arg = a.value("--port") or (env.get("PORT") if engine == Engine.TEI else None)
    try:
        port = int(port_arg) if port_arg else _DEFAULT_PORT[engine]
    except ValueError:
        raise SpecError(f"{engine.value}: --port {port_arg!r} is not a number") from None
    host = a.value("--hostname" if engine == Engine.TEI else "--host")
    if engine == Engine.SGLANG and host is None:
        host = "127.0.0.1"  # SGLang's default: unreachable from outside the pod
    declared = tuple(int(p["containerPort"]) for p in container.get("ports") or [])
    if declared and port not in declared:
        warnings.append(f"engine listens on {port}, container declares {list(declared)}")
    if engine == Engine.VLLM:
        served = a.values("--served-model-name") or (model,)
    else:
        name = a.value("--served-model-name")
        served = (name,) if name else (model,)
    download_dir: str | None
    if engine == Engine.TEI:
        download_dir = a.value("--huggingface-hub-cache") or env.get(
            "HUGGINGFACE_HUB_CACHE", "/data"
        )
    else:
        download_dir = a.value("--download-dir")
    hf = _hf_id(model)
    if hf is None:
        # A local path: the merge init container (Merged adapters) names the base it reads.
        for ic in (pod.get("spec") or {}).get("initContainers") or []:
            for arg in ic.get("args") or []:
                if _hf_id(str(arg)) and catalog_model(str(arg)):
                    hf = str(arg)
                    break
            if hf:
                break
    cat = catalog_model(hf)
    lora = a.has("--enable-lora")
    if engine == Engine.VLLM:
        runtime_lora = _truthy(env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING"))
        adapters = _adapters(a.values("--lora-modules"))
        max_loras = int(a.value("--max-loras") or 1)
        runner = a.value("--runner") or "auto"
        task = a.value("--task") or a.value("--convert") or a.value("--pooler-config.task")
        embedding = runner == "pooling" or task in ("embed", "embedding")
        if runner == "auto" and cat is not None and cat.task == Task.EMBEDDING:
            embedding = True  # --runner auto picks pooling for an embedding architecture
        transcription = "whisper" in model.lower() or (
            cat is not None and cat.task == Task.TRANSCRIPTION
        )
    elif engine == Engine.SGLANG:
        runtime_lora = lora
        adapters = _adapters(a.values("--lora-paths"))
        max_loras = int(a.value("--max-loras-per-batch") or 8)
        embedding = a.has("--is-embedding")
        transcription = False
    else:
        runtime_lora = False
        adapters = {}
        max_loras = 0
        embedding = True
        transcription = False
    readiness = _probe(container.get("readinessProbe"), container) or Probe("none")
    tp = a.value("--tensor-parallel-size") or a.value("--tp-size") or a.value("--tp")
    max_len = a.value("--max-model-len") or a.value("--context-length")
    return ServerSpec(
        engine=engine,
        container=str(container.get("name")),
        image=str(container.get("image") or ""),
        model=model,
        hf_id=hf,
        served_names=tuple(served),
        port=port,
        host=host,
        declared_ports=declared,
        download_dir=download_dir,
        revision=a.value("--revision"),
        dtype=a.value("--dtype"),
        quantization=a.value("--quantization"),
        tensor_parallel=int(tp) if tp and tp.isdigit() else 1,
        gpus=_gpus(container),
        lora=lora,
        runtime_lora=runtime_lora,
        max_loras=max_loras,
        static_adapters=adapters,
        embedding=embedding,
        transcription=transcription,
        metrics=engine != Engine.SGLANG or a.has("--enable-metrics"),
        api_key=a.value("--api-key") or (env.get("API_KEY") if engine == Engine.TEI else None),
        max_model_len=int(max_len) if max_len and max_len.isdigit() else None,
        readiness=readiness,
        startup_probe=_probe(container.get("startupProbe"), container),
        env=env,
        args=a,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- sizes
def _served_precision(spec: ServerSpec, cat: CatalogModel) -> Precision:
    q = (spec.quantization or "").lower()
    if q.startswith("fp8"):
        return Precision.FP8
    if q in ("fp4", "nvfp4", "mxfp4", "modelopt_fp4"):
        return Precision.FP4
    d = (spec.dtype or "auto").lower()
    if d in ("bfloat16", "bf16"):
        return Precision.BF16
    if d in ("float16", "half", "fp16"):
        return Precision.FP16
    return cat.checkpoint_precision


def _sizes(spec: ServerSpec) -> tuple[float, float, CatalogModel | None]:
    """(GB read from storage at start-up = the checkpoint, GB served on the GPUs, catalog entry)."""
    cat = catalog_model(spec.hf_id)
    if cat is None:
        return DEFAULT_WEIGHTS_GB, DEFAULT_WEIGHTS_GB, None
    checkpoint = weights_gib(cat, cat.checkpoint_precision) * GB_PER_GIB
    served = weights_gib(cat, _served_precision(spec, cat)) * GB_PER_GIB
    return checkpoint, served, cat


# --------------------------------------------------------------------------- node cache
@dataclass(frozen=True)
class CacheCheck:
    hit: bool
    reason: str
    key: str | None = None
    host_path: str | None = None
    mount_path: str | None = None
    read_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "hit": self.hit,
            "reason": self.reason,
            "key": self.key,
            "hostPath": self.host_path,
            "mountPath": self.mount_path,
            "readOnly": self.read_only,
        }


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/")


def _linked_by_init(
    pod_spec: Mapping[str, Any], mount: Mapping[str, Any], paths: Sequence[str]
) -> tuple[str, str] | None:
    """(init container, engine path) when an init container links an engine path to the cache.

    The pattern: an init container mounts the same node-cache volume at the same path as the
    server (so a link to it resolves in the server) and is handed both that mount path and the
    path the engine loads from (it links one to the other once the cache is complete, as the
    product's ``node-cache`` init container does).
    """
    for ic in pod_spec.get("initContainers") or []:
        same = any(
            m.get("name") == mount.get("name") and m.get("mountPath") == mount.get("mountPath")
            for m in ic.get("volumeMounts") or []
        )
        args = [str(a) for a in (ic.get("command") or []) + (ic.get("args") or [])]
        if not same or str(mount.get("mountPath")) not in args:
            continue
        for p in paths:
            if p in args:
                return str(ic.get("name")), p
    return None


def check_node_cache(
    spec: ServerSpec, pod: Mapping[str, Any], node: Mapping[str, Any] | None
) -> CacheCheck:
    """Is the engine going to read its weights from the node's local cache?

    A hit needs all of: a hostPath volume under ``CACHE_ROOT/<key>`` mounted in the engine
    container; the engine reading its weights from it (a weight path under the mount, or linked
    to it by an init container); the node labelled ``cache.modelplane.io/<key>=ready`` (the
    cache Job completed there); and, when the node records what it caches, the same weights.
    """
    pod_spec = pod.get("spec") or {}
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    container: Mapping[str, Any] = next(
        (c for c in pod_spec.get("containers") or [] if c.get("name") == spec.container), {}
    )
    paths = spec.weight_paths()
    found: CacheCheck | None = None
    for m in container.get("volumeMounts") or []:
        host = (volumes.get(m.get("name")) or {}).get("hostPath")
        hp = str((host or {}).get("path") or "")
        if not host or not _under(hp, CACHE_ROOT) or hp.rstrip("/") == CACHE_ROOT:
            continue
        c = CacheCheck(
            False,
            "",
            key=hp[len(CACHE_ROOT) + 1 :].split("/")[0],
            host_path=hp,
            mount_path=str(m.get("mountPath")),
            read_only=bool(m.get("readOnly")),
        )
        direct = [p for p in paths if c.mount_path and _under(p, c.mount_path)]
        if direct:
            found = replace(c, reason=f"the engine reads {direct[0]} from it")
            break
        linked = _linked_by_init(pod_spec, m, paths)
        if linked:
            found = replace(c, reason=f"init container {linked[0]} links {linked[1]} to it")
            break
        if found is None:
            where = ", ".join(paths) or "the Hugging Face cache"
            found = replace(
                c, reason=f"node cache mounted at {c.mount_path}, but the engine reads {where}"
            )
    if found is None:
        return CacheCheck(False, f"the pod mounts no node cache (hostPath under {CACHE_ROOT})")
    if found.reason.startswith("node cache mounted"):
        return found
    meta = (node or {}).get("metadata") or {}
    node_name = meta.get("name") or "?"
    label = CACHE_LABEL_PREFIX + str(found.key)
    if (meta.get("labels") or {}).get(label) != "ready":
        return replace(
            found, reason=f"node {node_name} has no label {label}=ready: its cache is not filled"
        )
    record = (meta.get("annotations") or {}).get(label)
    if record and spec.hf_id:
        try:
            uri = str(json.loads(record).get("uri") or "")
        except (ValueError, AttributeError):
            uri = ""
        if uri.startswith("hf://") and uri[5:].lower() != spec.hf_id.lower():
            return replace(
                found, reason=f"node cache {found.key} holds {uri}, the engine serves {spec.hf_id}"
            )
    return replace(found, hit=True, reason=f"{found.reason}; node {node_name} is {label}=ready")


# --------------------------------------------------------------------------- start-up
#: Engine image sizes (GB, compressed, ⚠ estimates) and warm-up seconds (CUDA graphs, compile).
IMAGE_GB = {Engine.VLLM: 10.0, Engine.SGLANG: 12.0, Engine.TEI: 2.0}
WARMUP_S = {Engine.VLLM: 30.0, Engine.SGLANG: 30.0, Engine.TEI: 5.0}


@dataclass(frozen=True)
class StartupPlan:
    """The modelled start-up of one pod (seconds are unscaled; ``scaled_s`` is wall time)."""

    breakdown: ColdStartBreakdown
    checkpoint_gb: float
    served_gb: float
    catalog_id: str | None
    cache: CacheCheck
    image_cached: bool
    time_scale: float

    @property
    def total_s(self) -> float:
        return self.breakdown.total_s

    @property
    def scaled_s(self) -> float:
        return self.breakdown.total_s * self.time_scale

    def to_json(self) -> dict[str, Any]:
        b = self.breakdown
        return {
            "imagePullS": round(b.image_s, 3),
            "weightLoadS": round(b.weights_s, 3),
            "warmupS": round(b.warmup_s, 3),
            "totalS": round(b.total_s, 3),
            "timeScale": self.time_scale,
            "scaledS": round(self.scaled_s, 3),
            "imageCached": self.image_cached,
        }


def derive_startup(
    spec: ServerSpec,
    pod: Mapping[str, Any],
    node: Mapping[str, Any] | None,
    *,
    image_wait_s: float | None,
    time_scale: float,
    cold: ColdStartModel | None = None,
) -> StartupPlan:
    """The start-up of ``pod`` on ``node``.

    ``image_wait_s``: None when the image is not on the node (a full pull), else the modelled
    seconds still to wait for it (0: present; >0: a pull in progress on the node, shared).
    """
    checkpoint, served, cat = _sizes(spec)
    cache = check_node_cache(spec, pod, node)
    model = cold or ColdStartModel()
    model = ColdStartModel(
        node_provision_s=model.node_provision_s,
        image_gb=IMAGE_GB[spec.engine],
        image_pull_gb_per_s=model.image_pull_gb_per_s,
        weight_load_gb_per_s=model.weight_load_gb_per_s,
        local_weight_load_gb_per_s=model.local_weight_load_gb_per_s,
        engine_warmup_s=WARMUP_S[spec.engine],
    )
    b = model.breakdown(
        checkpoint, warm_node=True, image_cached=image_wait_s is not None, weights_cached=cache.hit
    )
    if image_wait_s:
        b = ColdStartBreakdown(b.node_s, image_wait_s, b.weights_s, b.warmup_s)
    return StartupPlan(
        breakdown=b,
        checkpoint_gb=checkpoint,
        served_gb=served,
        catalog_id=cat.id if cat else None,
        cache=cache,
        image_cached=image_wait_s is not None,
        time_scale=time_scale,
    )


def download_plan(pod: Mapping[str, Any]) -> tuple[str | None, float, str]:
    """A cache-fill Job pod: (Hugging Face id, checkpoint GB to download, image)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        return None, DEFAULT_WEIGHTS_GB, ""
    c = containers[0]
    args = [str(a) for a in c.get("args") or []]
    hf = args[0] if args and _hf_id(args[0]) else None
    cat = catalog_model(hf)
    gb = weights_gib(cat, cat.checkpoint_precision) * GB_PER_GIB if cat else DEFAULT_WEIGHTS_GB
    return hf, gb, str(c.get("image") or "")
