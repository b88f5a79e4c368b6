"""The Argo CD health check for ModelDeployments, run in Lua 5.1 (the dialect Argo CD embeds).

Each fixture in tests/data/argocd/*.yaml is one case:

    expected: {status: Healthy|Progressing|Degraded|Suspended, message: <substring>}
    object: <a ModelDeployment as `kubectl get mdep -o yaml` prints it>

Add captured objects the same way; every file found is a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

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
    obj["status"]["conditions"][0]["reason"] = "InvalidSpec"
    assert health(obj) == {"status": "Degraded", "message": "InvalidSpec"}


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
