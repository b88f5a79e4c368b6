"""One factory for ModelDeployments, shared by the tests and the benchmarks.

    md("chat", "team-a", spec(replicas={"min": 1, "max": 2}))            # a manifest (dict)
    model_deployment("m", "ns", spec(preload={"mode": "NodeLocal"}))    # the validated object

`spec(**fields)` is `CHAT` (Llama 3.1 8B, OnDemand, 8k context) with top-level fields replaced;
`spec(base=EMBEDDINGS, ...)` starts from another base. A manifest carries `uid`, `generation`
and `annotations` only when given (the apiserver sets the first two on a created object).
"""

from __future__ import annotations

import copy
from typing import Any

from modelplane.api.v1alpha1 import API_VERSION, ModelDeployment

#: Llama 3.1 8B on demand, every other field at its default.
LLAMA_8B: dict[str, Any] = {"tier": "OnDemand", "model": {"catalog": "llama-v3p1-8b-instruct"}}
#: The spec most tests serve: that small chat model at a short context.
CHAT: dict[str, Any] = {**LLAMA_8B, "engine": {"maxContextLength": 8192}}
#: A small embeddings model (fits any GPU class).
EMBEDDINGS: dict[str, Any] = {"tier": "OnDemand", "model": {"catalog": "nomic-embed-text-v1p5"}}
#: Llama 3.3 70B at FP8: the large model of the preload and cold-start runs.
LLAMA_70B_FP8: dict[str, Any] = {
    "tier": "OnDemand",
    "model": {"catalog": "llama-v3p3-70b-instruct"},
    "engine": {"precision": "FP8", "maxContextLength": 8192},
}


def spec(base: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A ModelDeployment spec: `base` (default `CHAT`, copied) with top-level `fields` set."""
    return {**copy.deepcopy(CHAT if base is None else base), **fields}


def md(
    name: str = "m",
    namespace: str = "ns",
    spec_: dict[str, Any] | None = None,
    *,
    uid: str | None = None,
    generation: int | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ModelDeployment manifest, as `kubectl apply` or the API client takes it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid is not None:
        metadata["uid"] = uid
    if generation is not None:
        metadata["generation"] = generation
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": metadata,
        "spec": spec() if spec_ is None else spec_,
    }


def model_deployment(
    name: str = "m",
    namespace: str = "ns",
    spec_: dict[str, Any] | None = None,
    *,
    uid: str = "u-1",
    generation: int = 1,
    annotations: dict[str, str] | None = None,
) -> ModelDeployment:
    """The validated object, as the operator sees one it watches (uid and generation set)."""
    manifest = md(name, namespace, spec_, uid=uid, generation=generation, annotations=annotations)
    return ModelDeployment.model_validate(manifest)
