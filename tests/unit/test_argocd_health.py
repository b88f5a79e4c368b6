"""The Argo CD health check for ModelDeployments, run in Lua 5.1 (the dialect Argo CD embeds).

Each fixture in tests/data/argocd/*.yaml is one case:

    expected: {status: Healthy|Progressing|Degraded|Suspended, message: <substring>}
    object: <a ModelDeployment as `kubectl get mdep -o yaml` prints it>

Add captured objects the same way; every file found is a test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from modelplane.api.enums import FailureReason
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders.resolve import ResolveError
from modelplane.commands import default_classes
from modelplane.reconcile.core import (
    AdapterView,
    DeploymentView,
    Observed,
    Plan,
    PodView,
    compute_status,
    plan,
)
from modelplane_testbed import factories

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "examples" / "gitops" / "argocd"
SCRIPT = ARGOCD / "health-modelplane.io_ModelDeployment.lua"
FIXTURES = sorted((REPO / "tests" / "data" / "argocd").glob("*.yaml"))
CM_KEY = "resource.customizations.health.modelplane.io_ModelDeployment"
STATES = {"Healthy", "Progressing", "Degraded", "Suspended"}


def health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Run the check the way Argo CD does: `obj` is a global, the chunk returns a table."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script if script is not None else SCRIPT.read_text())
    return {k: result[k] for k in ("status", "message")}


def test_there_are_enough_fixtures_covering_every_state() -> None:
    assert len(FIXTURES) >= 6
    covered = {yaml.safe_load(p.read_text())["expected"]["status"] for p in FIXTURES}
    assert covered == STATES


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_health_of_fixture(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    got = health(case["object"])
    assert got["status"] == case["expected"]["status"], got
    assert case["expected"]["message"] in got["message"], got


def test_ready_true_is_not_healthy_before_the_generation_is_observed() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "m", "generation": 2},
        "status": {
            "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
        },
    }
    assert health(obj)["status"] == "Progressing"  # no observedGeneration at all
    obj["status"]["observedGeneration"] = 2
    assert health(obj)["status"] == "Healthy"


def test_non_terminal_ready_false_is_progressing_not_degraded() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "m", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}],
        },
    }
    assert health(obj)["status"] == "Progressing"
    obj["status"]["conditions"][0]["reason"] = "ModelTooLarge"
    assert health(obj) == {"status": "Degraded", "message": "ModelTooLarge"}


# --------------------------------------------------------------------------- terminal reasons
OPERATOR = REPO / "operator" / "modelplane"


def emitted_failure_reasons() -> set[str]:
    """Reasons the operator's code can put in Ready=False for good: the first argument of every
    ResolveError/NoFit, and every literal `reason=` keyword (the LoRA loop's)."""

    def literals(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return literals(node.body) + literals(node.orelse)
        if isinstance(node, ast.Attribute) and node.attr == "value":
            return literals(node.value)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "FailureReason"
        ):
            return [FailureReason[node.attr].value]
        return []

    out: set[str] = set()
    for path in OPERATOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("ResolveError", "NoFit") and node.args:
                out.update(literals(node.args[0]))
            for kw in node.keywords:
                if kw.arg == "reason":
                    out.update(literals(kw.value))
    return out


def lua_terminal_table(script: str) -> set[str]:
    block = re.search(r"^local TERMINAL = \{\n(.*?)^\}", script, re.M | re.S)
    assert block, "no TERMINAL table in the health check"
    return set(re.findall(r"^\s+(\w+) = true,$", block.group(1), re.M))


def test_failure_reason_enum_is_what_the_operator_emits() -> None:
    emitted = emitted_failure_reasons()
    assert {r.value for r in FailureReason} == emitted, (
        f"add to FailureReason: {sorted(emitted - set(FailureReason))}; "
        f"remove: {sorted(set(FailureReason) - emitted)}"
    )


def test_lua_terminal_table_is_the_failure_reason_enum() -> None:
    table = lua_terminal_table(SCRIPT.read_text())
    want = {r.value for r in FailureReason}
    assert table == want, (
        f"{SCRIPT.name}: add {sorted(want - table)}, remove {sorted(table - want)} "
        "(then copy the script into argocd-cm.yaml)"
    )


def _md(spec: dict[str, Any]) -> ModelDeployment:
    return factories.model_deployment("m", "ns", spec, uid="u", generation=3)


def _object(md: ModelDeployment, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "m", "generation": 3}, "status": status}


@pytest.mark.parametrize("reason", sorted(FailureReason))
def test_every_failure_the_operator_reports_is_degraded_by_its_reason(reason: str) -> None:
    """The status is the operator's own (compute_status), so the terminal branch is reachable:
    the message is the condition's reason and message, not the phase's fallback."""
    md = _md({"tier": "OnDemand", "model": {"catalog": "llama-v3p1-8b-instruct"}})
    obs = Observed(md, default_classes(), DeploymentView(exists=False), {}, (), {}, "t")
    status, _ = compute_status(obs, Plan(resolved=None, error=ResolveError(reason, "fix it")))
    assert status["phase"] == "Failed"
    assert health(_object(md, status)) == {"status": "Degraded", "message": f"{reason}: fix it"}


def test_adapter_load_failure_as_the_operator_reports_it_is_degraded() -> None:
    md = _md(
        {
            "tier": "FineTuned",
            "base": {"catalog": "llama-v3p1-8b-instruct"},
            "adapters": [{"name": "sql", "uri": "hf://org/sql-lora"}],
            "engine": {"maxContextLength": 8192},
            "replicas": {"min": 1, "max": 1},
        }
    )
    dep = DeploymentView(
        exists=True,
        replicas=1,
        status_replicas=1,
        ready_replicas=1,
        updated_replicas=1,
        observed_generation=1,
        generation=1,
    )
    pod = PodView("p", "Running", ready=True, scheduled=True, node="n")
    failed = AdapterView("sql", "m--sql", 0, 1, "AdapterLoadFailed", "404 not found")
    obs = Observed(md, default_classes(), dep, {}, (pod,), {}, "t", adapters=(failed,))
    p = plan(obs)
    p.apply = []
    status, _ = compute_status(obs, p)
    assert status["phase"] == "Degraded"
    got = health(_object(md, status))
    assert got["status"] == "Degraded"
    assert got["message"].startswith("AdapterLoadFailed: adapter sql"), got


def test_fixtures_and_tests_use_reasons_the_operator_emits() -> None:
    sources = [p.read_text() for p in sorted((OPERATOR / "reconcile").glob("*.py"))]
    known = {r.value for r in FailureReason} | {
        n.value
        for src in sources
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    for path in FIXTURES:
        status = yaml.safe_load(path.read_text())["object"].get("status") or {}
        for c in status.get("conditions", []):
            assert c["reason"] in known, f"{path.name}: {c['reason']} is never emitted"


def test_argocd_cm_snippet_is_the_lua_file() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][CM_KEY] == SCRIPT.read_text()
    case = yaml.safe_load((REPO / "tests" / "data" / "argocd" / "healthy.yaml").read_text())
    assert health(case["object"], cm["data"][CM_KEY])["status"] == "Healthy"


def test_gitops_examples_are_well_formed() -> None:
    kinds: dict[str, dict[str, Any]] = {}
    for path in sorted((REPO / "examples" / "gitops").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kinds[f"{path.parent.name}/{doc['kind']}/{doc['metadata']['name']}"] = doc
    models = kinds["argocd/Application/modelplane-models"]["spec"]
    assert models["source"]["path"] == "examples"
    assert kinds["argocd/Application/modelplane"]["spec"]["source"]["path"] == "charts/modelplane"
    source = kinds["flux/GitRepository/modelplane"]
    kustomization = kinds["flux/Kustomization/modelplane-models"]["spec"]
    assert kustomization["sourceRef"] == {"kind": "GitRepository", "name": "modelplane"}
    assert kustomization["path"] == "./examples" and kustomization["wait"] is True
    # the source keeps the GitOps manifests themselves out of the models' artifact
    assert "/examples/gitops/" in source["spec"]["ignore"].splitlines()
    release = kinds["flux/HelmRelease/modelplane"]["spec"]
    assert release["chart"]["spec"]["sourceRef"]["name"] == "modelplane"
