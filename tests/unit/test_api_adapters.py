"""FineTuned adapters have one strategy, MultiLoRA; Merged was removed with a fix-it message."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelplane.api import crdgen
from modelplane.api.v1alpha1 import ModelDeployment


def fine_tuned(**extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "sql", "namespace": "team-c"},
        "spec": {
            "tier": "FineTuned",
            "base": {"catalog": "llama-v3p1-8b-instruct"},
            "adapters": [{"name": "sql", "uri": "hf://example-org/llama3.1-8b-sql-lora"}],
            **extra,
        },
    }


def test_the_crd_rejects_merged_with_a_message_saying_what_to_use() -> None:
    crd = crdgen.all_crds()["modelplane.io_modeldeployments.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    field = spec["properties"]["adapterStrategy"]
    # No enum: the apiserver skips CEL rules after an enum violation, hiding the message.
    assert "enum" not in field and field["type"] == "string" and field["maxLength"] == 32
    [rule] = field["x-kubernetes-validations"]
    assert rule["rule"] == "self == 'MultiLoRA'"
    assert "Merged is not supported" in rule["message"] and "model.uri" in rule["message"]


def test_the_operator_refuses_a_stored_merged_object() -> None:
    assert ModelDeployment.model_validate(fine_tuned()).spec.adapter_strategy == "MultiLoRA"
    ModelDeployment.model_validate(fine_tuned(adapterStrategy="MultiLoRA"))
    with pytest.raises(ValidationError, match="must be MultiLoRA"):
        ModelDeployment.model_validate(fine_tuned(adapterStrategy="Merged"))
