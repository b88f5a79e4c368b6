"""Golden files: each tests/data/builders/<case>/input.yaml renders to expected.yaml.

Regenerate after an intended change with `UPDATE_GOLDEN=1 uv run pytest tests/unit/test_builders.py`
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.commands import render_documents

DATA = Path(__file__).resolve().parents[1] / "data" / "builders"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "input.yaml").exists())


def render(case: str) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all((DATA / case / "input.yaml").read_text()))
    provider = "static" if case.startswith("sim-") else "karpenter"
    return render_documents(docs, provider)


REGENERATE = "UPDATE_GOLDEN=1 uv run pytest tests/unit/test_builders.py"


def check_golden(expected: Path, got: str) -> None:
    """`got` must equal the committed `expected`; UPDATE_GOLDEN=1 rewrites it instead."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected.write_text(got)
        return
    if not expected.exists():
        pytest.fail(
            f"{expected} is missing: generate it with `{REGENERATE}`, review it and commit it"
        )
    assert got == expected.read_text(), f"{expected} differs: if intended, run `{REGENERATE}`"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(DATA / case / "expected.yaml", yaml.safe_dump_all(render(case), sort_keys=False))


def test_a_missing_expected_file_fails_and_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    expected = tmp_path / "expected.yaml"
    with pytest.raises(pytest.fail.Exception, match="UPDATE_GOLDEN=1"):
        check_golden(expected, "kind: Service\n")
    assert not expected.exists()
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    check_golden(expected, "kind: Service\n")
    assert expected.read_text() == "kind: Service\n"


def test_every_case_has_a_committed_expected_file() -> None:
    missing = [c for c in CASES if not (DATA / c / "expected.yaml").exists()]
    assert not missing, f"no expected.yaml for {missing}: run `{REGENERATE}`"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 8


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind)


def test_tensor_parallel_follows_gpu_count_and_gpus_are_requested() -> None:
    dep = _by_kind(render("llama-70b-fp8-h100"), "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    tp = int(c["args"][c["args"].index("--tensor-parallel-size") + 1])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(tp)
    assert "--quantization" in c["args"]


def test_secrets_only_by_reference() -> None:
    dep = _by_kind(render("llama-70b-fp8-h100"), "Deployment")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "HF_TOKEN")
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }


def test_pod_is_hardened_and_drains() -> None:
    pod = _by_kind(render("chat-tools"), "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    assert pod["automountServiceAccountToken"] is False
    shutdown = int(c["args"][c["args"].index("--shutdown-timeout") + 1])
    assert (
        pod["terminationGracePeriodSeconds"]
        >= c["lifecycle"]["preStop"]["sleep"]["seconds"] + shutdown
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    zones = [
        t
        for t in pod["topologySpreadConstraints"]
        if t["topologyKey"] == "topology.kubernetes.io/zone"
    ]
    assert zones and zones[0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])


def test_single_replica_has_no_pdb_and_multi_replica_does() -> None:
    assert not [o for o in render("pvc-uri") if o["kind"] == "PodDisruptionBudget"]
    assert [o for o in render("chat-tools") if o["kind"] == "PodDisruptionBudget"]
