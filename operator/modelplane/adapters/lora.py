"""FineTuned (MultiLoRA): keep every Ready replica of a base serving exactly the adapters asked for.

Every few seconds, for each `tier: FineTuned` ModelDeployment (adapters are always MultiLoRA),
the loop lists the Ready pods of its base (the base ModelDeployment's Deployment, or its own when
the base is a catalog model) and, through the runtime API of the engine those pods run (the
routes are the engine's contract, ``catalog.engines``: vLLM's `/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`; SGLang's `/load_lora_adapter`, `/unload_lora_adapter`; both list
adapters in `/v1/models` with a `parent`), loads the adapters a pod lacks — replicas added later by scale-out included — and unloads adapters no ModelDeployment
asks for any more. Adapter names are `<ModelDeployment>--<adapter>`, so what we manage is told
apart from anything else loaded. Per-adapter results (loaded replicas / total, reason) go to the
operator's runtime, and the reconciler reports them in status (one status writer).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modelplane.adapters.kube import pod_view
from modelplane.adapters.ports import LoraCluster, LoraRuntime
from modelplane.api.enums import EngineType, Tier
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders.resolve import engine_type_of
from modelplane.catalog.engines import EngineProfile, engine_profile
from modelplane.reconcile.core import AdapterView

log = logging.getLogger("modelplane.lora")

SEPARATOR = "--"


class EngineError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EngineAPI(Protocol):
    def loaded(self, namespace: str, pod: Any, engine: EngineProfile) -> set[str]: ...
    def load(
        self, namespace: str, pod: Any, name: str, path: str, engine: EngineProfile
    ) -> None: ...
    def unload(self, namespace: str, pod: Any, name: str, engine: EngineProfile) -> None: ...


@dataclass(frozen=True)
class HttpEngine:
    """The engine's runtime LoRA API over HTTP, on each pod: `http://<podIP>:<port>` (the
    operator needs network access to the pods, as for scraping their metrics)."""

    port: int = 8000
    timeout: float = 10.0

    def _base(self, namespace: str, pod: Any) -> str:
        ip = pod.status.pod_ip if pod.status else None
        if not ip:
            raise EngineError(0, "pod has no IP yet")
        host = f"[{ip}]" if ":" in ip else ip
        return f"http://{host}:{self.port}"

    def _call(self, url: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                text = r.read().decode() or "null"
                try:
                    return json.loads(text)
                except ValueError:
                    return text
        except urllib.error.HTTPError as e:
            raise EngineError(e.code, e.read().decode(errors="replace")[:500]) from None
        except OSError as e:
            raise EngineError(0, f"engine unreachable: {e}") from None

    @staticmethod
    def _route(engine: EngineProfile, path: str | None, what: str) -> str:
        if not path:
            raise EngineError(0, f"{engine.engine.value} has no runtime LoRA API ({what})")
        return path

    def loaded(self, namespace: str, pod: Any, engine: EngineProfile) -> set[str]:
        path = self._route(engine, engine.lora_list_path, "list")
        out = self._call(f"{self._base(namespace, pod)}{path}")
        return {m["id"] for m in out.get("data", []) if m.get("parent")}

    def load(self, namespace: str, pod: Any, name: str, path: str, engine: EngineProfile) -> None:
        route = self._route(engine, engine.lora_load_path, "load")
        out = self._call(
            f"{self._base(namespace, pod)}{route}", {"lora_name": name, "lora_path": path}
        )
        if isinstance(out, dict) and out.get("success") is False:  # SGLang answers 200 + success
            raise EngineError(400, str(out.get("error_message") or out))

    def unload(self, namespace: str, pod: Any, name: str, engine: EngineProfile) -> None:
        route = self._route(engine, engine.lora_unload_path, "unload")
        out = self._call(f"{self._base(namespace, pod)}{route}", {"lora_name": name})
        if isinstance(out, dict) and out.get("success") is False:
            raise EngineError(400, str(out.get("error_message") or out))


def adapter_path(uri: str) -> str:
    """What the engine's lora_path gets: a Hugging Face repo id, or the object-store URI."""
    scheme, _, rest = uri.partition("://")
    return rest if scheme == "hf" else uri


def target_deployment(md: ModelDeployment) -> str:
    base = md.spec.base
    return base.deployment if base is not None and base.deployment else md.metadata.name


class LoraLoop:
    def __init__(
        self,
        kube: LoraCluster,
        engine: EngineAPI,
        rt: LoraRuntime,
        namespaces: Sequence[str] = (),
    ) -> None:
        self.kube = kube
        self.engine = engine
        self.rt = rt
        self.namespaces = tuple(namespaces)

    def _mds(self) -> list[ModelDeployment]:
        mds: list[ModelDeployment] = self.kube.model_deployments(self.namespaces)
        return mds

    def round(self) -> None:
        """One pass: load and unload adapters on every target's Ready pods, report per object.
        Long because the wanted set, per-pod load/unload and the report share the state."""
        mds = self._mds()
        tuned = [m for m in mds if m.spec.tier == Tier.FINE_TUNED]
        # (namespace, target deployment) -> adapter name -> path, over every FineTuned object.
        wanted: dict[tuple[str, str], dict[str, str]] = {}
        by_name = {(m.metadata.namespace or "default", m.metadata.name): m for m in mds}
        engines: dict[tuple[str, str], EngineType] = {}
        for m in tuned:
            ns = m.metadata.namespace or "default"
            where = (ns, target_deployment(m))
            base = by_name.get(where) if m.spec.base and m.spec.base.deployment else m
            engines[where] = engine_type_of(base) if base is not None else EngineType.VLLM
            per = wanted.setdefault(where, {})
            for a in m.spec.adapters:
                per[f"{m.metadata.name}{SEPARATOR}{a.name}"] = adapter_path(a.uri)
        # Targets that lost their last FineTuned object still get their adapters unloaded.
        with self.rt.guard:
            previous = set(self.rt.lora_targets)
            self.rt.lora_targets = set(wanted)
        results: dict[str, dict[str, AdapterView]] = {}
        for ns, target in sorted(set(wanted) | previous):
            want = wanted.get((ns, target), {})
            engine = engine_profile(engines.get((ns, target), EngineType.VLLM))
            pods = self.kube.server_pods(ns, target)
            ready = [p for p in pods if _ready(p)]
            loaded_on: dict[str, int] = dict.fromkeys(want, 0)
            failures: dict[str, str] = {}
            for pod in ready:
                try:
                    have = self.engine.loaded(ns, pod, engine)
                except EngineError as e:
                    log.info("cannot list adapters of %s/%s: %s", ns, pod.metadata.name, e.message)
                    continue
                for name in sorted(set(want) - have):
                    try:
                        self.engine.load(ns, pod, name, want[name], engine)
                        have.add(name)
                        log.info("loaded adapter %s into %s/%s", name, ns, pod.metadata.name)
                    except EngineError as e:
                        failures[name] = f"{pod.metadata.name}: HTTP {e.status}: {e.message}"
                for name in sorted(n for n in have - set(want) if SEPARATOR in n):
                    try:
                        self.engine.unload(ns, pod, name, engine)
                        log.info("unloaded adapter %s from %s/%s", name, ns, pod.metadata.name)
                    except EngineError as e:
                        log.info(
                            "unload of %s from %s failed: %s", name, pod.metadata.name, e.message
                        )
                for name in want:
                    loaded_on[name] += name in have
            for name in want:
                md_name, adapter = name.split(SEPARATOR, 1)
                key = f"{ns}/{md_name}"
                fail = failures.get(name)
                results.setdefault(key, {})[adapter] = AdapterView(
                    name=adapter,
                    served_name=name,
                    loaded_replicas=loaded_on[name],
                    total_replicas=len(ready),
                    reason="AdapterLoadFailed" if fail else None,
                    message=fail,
                )
        for m in tuned:
            key = f"{m.metadata.namespace}/{m.metadata.name}"
            views = tuple(results.get(key, {}).values())
            with self.rt.guard:
                changed = self.rt.adapters.get(key) != views
                self.rt.adapters[key] = views
            if changed:
                self.rt.trigger(m.metadata.namespace or "default", m.metadata.name, delay=0)

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        while not stop.wait(interval):
            try:
                self.round()
            except Exception:
                log.exception("LoRA adapter round failed")


def _ready(pod: Any) -> bool:
    v = pod_view(pod)
    return v.ready and v.scheduled and not v.terminating
