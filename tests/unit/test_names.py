"""The longest and the allowed ModelDeployment names: every object built from one is valid.

The children are built by the real planner, so a new child named after the ModelDeployment (or a
new label carrying its name) is checked here without anyone remembering to add it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from modelplane.api import crdgen
from modelplane.api.names import (
    MAX_NAME_LENGTH,
    NAME_RULES,
    OLDEST_KUBERNETES,
    name_problem,
)
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders.objects import BuildContext
from modelplane.commands import default_classes
from modelplane.reconcile.core import DeploymentView, Observed, plan
from modelplane_testbed import factories

REPO = Path(__file__).resolve().parents[2]
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _md(name: str, **spec: Any) -> ModelDeployment:
    preload = {"mode": "NodeLocal", "warmNodes": 1}
    base = factories.spec(replicas={"min": 1, "max": 2}, preload=preload) | spec
    return factories.model_deployment(name, "ns", base, uid="u")


def children(name: str) -> list[dict[str, Any]]:
    """Every object the planner writes for an OnDemand (with PDB and warm pool) and a
    Serverless ModelDeployment called `name`."""
    out: list[dict[str, Any]] = []
    serverless = _md(name, tier="Serverless", replicas=None, preload=None)
    serverless = serverless.model_copy(
        update={"spec": serverless.spec.model_copy(update={"replicas": None, "preload": None})}
    )
    for m in (_md(name), serverless):
        obs = Observed(
            m,
            default_classes(),
            DeploymentView(exists=False),
            {},
            (),
            {},
            "2026-01-01T00:00:00Z",
            BuildContext(),
        )
        # Build what the name would make even where the planner refuses it (InvalidName).
        with mock.patch("modelplane.reconcile.planning.name_problem", return_value=None):
            p = plan(obs)
        assert p.error is None, p.error.message
        out += p.apply
    kinds = {(o["kind"], o["metadata"]["name"]) for o in out}
    assert ("Deployment", f"{name}-warm") in kinds and ("PodDisruptionBudget", name) in kinds
    assert sum(1 for k, n in kinds if k == "Service" and n == name) == 1  # the tenant's
    return out


def _labels(node: Any) -> list[dict[str, str]]:
    """Every labels / matchLabels / selector map in an object."""
    found: list[dict[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if (k in ("labels", "matchLabels") and isinstance(v, dict)) or (
                k == "selector"
                and isinstance(v, dict)
                and all(isinstance(x, str) for x in v.values())
            ):
                found.append(v)
            else:
                found += _labels(v)
    elif isinstance(node, list):
        for v in node:
            found += _labels(v)
    return found


def invalid(objs: list[dict[str, Any]]) -> list[str]:
    """What Kubernetes (the oldest supported version) would reject in `objs`."""
    bad = []
    for o in objs:
        name = o["metadata"]["name"]
        if o["kind"] == "Service":
            if len(name) > 63 or not DNS1035_LABEL.match(name):
                bad.append(f"Service name {name!r}")
        elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            bad.append(f"{o['kind']} name {name!r}")
        for labels in _labels(o):
            for k, v in labels.items():
                if len(v) > 63 or not LABEL_VALUE.match(v):
                    bad.append(f"{o['kind']} {name}: label {k}={v!r}")
    return bad


def _name(length: int) -> str:
    return ("m" + "odel-" * 20)[: length - 1].rstrip("-").ljust(length - 1, "x") + "z"


def test_the_longest_allowed_name_makes_only_valid_objects() -> None:
    name = _name(MAX_NAME_LENGTH)
    assert len(name) == MAX_NAME_LENGTH and name_problem(name) is None
    assert invalid(children(name)) == []


def test_one_character_more_would_make_invalid_objects() -> None:
    name = _name(MAX_NAME_LENGTH + 1)
    assert invalid(children(name)), "MAX_NAME_LENGTH is not the longest safe name: raise it"
    assert name_problem(name) is not None
    assert str(MAX_NAME_LENGTH) in (name_problem(name) or "")


@pytest.mark.parametrize("name", ["8b-chat", "my.model", "a.b"])
def test_names_the_oldest_supported_service_validation_rejects(name: str) -> None:
    """Valid ModelDeployment names (DNS subdomains), but not RFC 1035 Service names."""
    assert DNS1123_SUBDOMAIN.match(name)
    assert invalid(children(name))
    problem = name_problem(name)
    assert problem is not None and "1.36" in problem and OLDEST_KUBERNETES in problem


def test_a_leading_digit_is_a_dns_label_but_not_an_rfc_1035_one() -> None:
    assert DNS1123_LABEL.match("8b-chat") and not DNS1035_LABEL.match("8b-chat")


def test_the_crd_enforces_the_same_rules_at_its_root() -> None:
    schema = crdgen.model_deployment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["x-kubernetes-validations"] == NAME_RULES
    assert str(MAX_NAME_LENGTH) in NAME_RULES[0]["message"]


def test_the_charts_kubernetes_floor_is_the_one_names_are_checked_against() -> None:
    chart = yaml.safe_load((REPO / "charts" / "modelplane" / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={OLDEST_KUBERNETES}.0-0"


def test_the_operator_writes_nothing_for_a_name_stored_before_the_rule() -> None:
    m = _md("8b-chat")
    p = plan(
        Observed(
            m, default_classes(), DeploymentView(exists=False), {}, (), {}, "t", BuildContext()
        )
    )
    assert p.apply == [] and p.error is not None and p.error.reason == "InvalidName"
    assert "8b-chat" in p.error.message
