"""The committed CRDs are what the API types generate, and they are structural and bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.api import crdgen

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_generated_crds_equal_committed() -> None:
    generated = crdgen.all_crds()
    committed = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert committed == sorted(generated), "run `modelplane crds --write crds`"
    for name, crd in generated.items():
        assert (CRDS / name).read_text() == crdgen.render(crd), (
            f"{name} drifted: run `modelplane crds --write crds`"
        )


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for k, v in (node.get("properties") or {}).items():
        out += _walk(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("name", sorted(crdgen.all_crds()))
def test_schema_is_structural_and_bounded(name: str) -> None:
    crd = crdgen.all_crds()[name]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema, ""):
        if path in (".metadata", ".apiVersion", ".kind"):
            continue
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), (
            f"{path}: no type"
        )
        for banned in ("anyOf", "oneOf", "allOf", "$ref", "title", "default", "const", "nullable"):
            assert banned not in node, f"{path}: {banned} is not structural here"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: unbounded list (CEL cost)"
        if node.get("type") == "string" and "enum" not in node and not path.startswith(".status"):
            assert "maxLength" in node, f"{path}: unbounded string (CEL cost)"
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] and len(rule["message"]) > 20, (
                f"{path}: rule without a helpful message"
            )


def test_modeldeployment_crd_surface() -> None:
    crd = crdgen.model_deployment_crd()
    v = crd["spec"]["versions"][0]
    cols = [c["name"].upper() for c in v["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["TIER", "MODEL", "ACCEL", "READY", "PHASE", "ENDPOINT", "AGE"]
    assert crd["spec"]["names"]["shortNames"] == ["mdep"]
    assert v["subresources"]["status"] == {}
    assert v["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas.pinned"
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # the whole v1alpha1 surface is designed up front, incl. fields later issues reconcile
    assert {
        "tier",
        "model",
        "task",
        "engine",
        "accelerator",
        "replicas",
        "autoscaling",
        "preload",
        "base",
        "adapters",
        "adapterStrategy",
    } <= set(spec["properties"])
    targets = spec["properties"]["autoscaling"]["properties"]["loadTargets"]["properties"]
    assert set(targets) == {
        "concurrentRequests",
        "requestsPerSecond",
        "tokensGeneratedPerSecond",
        "promptTokensPerSecond",
        "kvCacheUtilization",
        "queueDepth",
    }
    conds = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    text = yaml.safe_dump(crd)
    assert "hf_" not in text.replace("hf_[", "")  # no example tokens leak into the schema
