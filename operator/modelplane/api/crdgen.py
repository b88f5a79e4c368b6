"""Generate the CRDs from the pydantic API types.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema. The
conversion inlines `$ref`s, turns `Optional[X]` into plain X (absent means unset; we never send
null), drops titles and pydantic defaults (the operator applies defaults, so the stored object
stays what the user wrote and GitOps diffs stay empty), rewrites numeric exclusive bounds to the
OpenAPI 3.0 form, removes `additionalProperties: false` (structural schemas prune unknown fields
instead), and keeps `x-kubernetes-*` extensions and descriptions.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from modelplane.api import apikey
from modelplane.api.names import NAME_RULES
from modelplane.api.v1alpha1 import (
    GROUP,
    VERSION,
    AcceleratorClassSpec,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)

Schema = dict[str, Any]
_DROP = {"title", "default", "examples"}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # Optional[X] -> X
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"]
            if len(options) == 1:
                extra = {k: v for k, v in node.items() if k != key}
                merged = {**options[0], **extra}
                # Rules attached to the field and to the model both apply.
                rules = options[0].get("x-kubernetes-validations", []) + extra.get(
                    "x-kubernetes-validations", []
                )
                if rules:
                    merged["x-kubernetes-validations"] = rules
                node = merged
            else:
                raise ValueError(f"unions are not structural: {node}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
        node.setdefault("type", "string")
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if (
        node.get("type") == "object"
        and "properties" not in node
        and "additionalProperties" not in node
    ):
        node["x-kubernetes-preserve-unknown-fields"] = True
    out = {k: _structural(v) for k, v in node.items() if k not in _DROP}
    if "properties" in node:
        out["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
    if "required" in out and not out["required"]:
        del out["required"]
    return out


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of a pydantic model (aliases as field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _structural(_resolve(raw, defs))
    return schema


def _conditions_as_map(status: Schema) -> Schema:
    conds = status["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    conds["maxItems"] = 16
    return status


#: `kubectl get mdep` (priority 1: only with -o wide); Age is added.
MODEL_DEPLOYMENT_COLUMNS: list[dict[str, Any]] = [
    {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "Accel", "type": "string", "jsonPath": ".status.accelerator.class"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.url"},
    {"name": "Cost/h", "type": "string", "jsonPath": ".status.cost.gpuHourly", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
]

#: `kubectl get accel`; Age is added.
ACCELERATOR_CLASS_COLUMNS: list[dict[str, Any]] = [
    {"name": "GPU", "type": "string", "jsonPath": ".spec.gpuProduct"},
    {"name": "Memory", "type": "integer", "jsonPath": ".spec.gpuMemoryGiB"},
    {"name": "Per-Node", "type": "integer", "jsonPath": ".spec.gpusPerNode"},
    {"name": "$/GPU-h", "type": "string", "jsonPath": ".spec.pricePerGPUHour"},
]

#: `kubectl get apikeys`; Age is added.
API_KEY_COLUMNS: list[dict[str, Any]] = [
    {"name": "Expires", "type": "string", "jsonPath": ".spec.expires"},
    {"name": "Description", "type": "string", "jsonPath": ".spec.description"},
]

AGE_COLUMN: dict[str, Any] = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
}


def _printer_columns(columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The columns with Age after the default ones, before the -o wide ones (kubectl's habit)."""
    narrow = [c for c in columns if not c.get("priority")]
    wide = [c for c in columns if c.get("priority")]
    return [*narrow, dict(AGE_COLUMN), *wide]


def _version(
    spec: Schema,
    status: Schema | None,
    columns: list[dict[str, Any]],
    scale: bool,
    root_rules: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    props: Schema = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if status is not None:
        props["status"] = status
    root: Schema = {"type": "object", "required": ["spec"], "properties": props}
    if root_rules:
        # Only the root can read self.metadata.name (and generateName).
        root["x-kubernetes-validations"] = root_rules
    v: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "additionalPrinterColumns": _printer_columns(columns),
    }
    sub: dict[str, Any] = {}
    if status is not None:
        sub["status"] = {}
    if scale:
        sub["scale"] = {
            "specReplicasPath": ".spec.replicas.pinned",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    if sub:
        v["subresources"] = sub
    return v


def model_deployment_crd() -> dict[str, Any]:
    version = _version(
        openapi_schema(ModelDeploymentSpec),
        _conditions_as_map(openapi_schema(ModelDeploymentStatus)),
        MODEL_DEPLOYMENT_COLUMNS,
        scale=True,
        root_rules=NAME_RULES,
    )
    return _crd("ModelDeployment", "modeldeployments", "Namespaced", version, short_name="mdep")


def accelerator_class_crd() -> dict[str, Any]:
    version = _version(
        openapi_schema(AcceleratorClassSpec), None, ACCELERATOR_CLASS_COLUMNS, scale=False
    )
    return _crd("AcceleratorClass", "acceleratorclasses", "Cluster", version, short_name="accel")


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, as committed in crds/."""
    return {
        f"{GROUP}_modeldeployments.yaml": model_deployment_crd(),
        f"{GROUP}_acceleratorclasses.yaml": accelerator_class_crd(),
        f"{GROUP}_apikeys.yaml": api_key_crd(),
    }


def api_key_crd() -> dict[str, Any]:
    version = _version(openapi_schema(apikey.ApiKeySpec), None, API_KEY_COLUMNS, scale=False)
    return _crd(apikey.KIND, apikey.PLURAL, "Namespaced", version)


def _crd(
    kind: str, plural: str, scope: str, version: dict[str, Any], short_name: str | None = None
) -> dict[str, Any]:
    """A CustomResourceDefinition of our group with one version, in the `modelplane` category."""
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if short_name:
        names["shortNames"] = [short_name]
    names["categories"] = ["modelplane"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": scope, "names": names, "versions": [version]},
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated from modelplane.api (modelplane crds --write). Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)
