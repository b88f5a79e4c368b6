"""The status write uses optimistic concurrency: a status computed from an older version of the
ModelDeployment is refused (409 Conflict) instead of overwriting a newer one, and the object is
re-read and reconciled again at once."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import kopf
import pytest
from kubernetes.client.rest import ApiException

from modelplane.adapters.kube import Kube
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders.objects import BuildContext
from modelplane.commands import default_classes
from modelplane.reconcile.core import DeploymentView, Observed, Plan
from modelplane.settings import OperatorSettings
from modelplane.wiring import operator as wiring


def _conflict() -> ApiException:
    e = ApiException(status=409, reason="Conflict")
    e.body = json.dumps({"reason": "Conflict", "code": 409})
    return e


class FakeStatusAPI:
    """The apiserver's /status merge patch, with its resourceVersion precondition."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[dict[str, Any]] = []

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, ns: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.patches.append(copy.deepcopy(body))
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != self.obj["metadata"]["resourceVersion"]:
            raise _conflict()
        status = self.obj.setdefault("status", {})
        for k, v in body["status"].items():
            if v is None:
                status.pop(k, None)
            else:
                status[k] = v
        self.obj["metadata"]["resourceVersion"] = str(
            int(self.obj["metadata"]["resourceVersion"]) + 1
        )
        return self.obj


def _body(rv: str, phase: str = "Pending") -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": rv,
        },
        "spec": {"tier": "OnDemand", "model": {"catalog": "llama-v3p1-8b-instruct"}},
        "status": {"phase": phase},
    }


def _kube(stored: dict[str, Any]) -> tuple[Kube, FakeStatusAPI]:
    kube = Kube.__new__(Kube)  # no API connection: only the status client is used
    fake = FakeStatusAPI(stored)
    kube.custom = fake  # type: ignore[assignment]
    return kube, fake


def test_the_status_patch_carries_the_observed_resource_version() -> None:
    kube, fake = _kube(_body("7"))
    md = ModelDeployment.model_validate(_body("7"))
    assert kube.write_status(md, {"phase": "Pending"}, {"phase": "Ready"})
    assert fake.patches[0]["metadata"] == {"resourceVersion": "7"}
    assert fake.obj["status"]["phase"] == "Ready"


def test_a_status_from_a_stale_body_is_refused_and_changes_nothing() -> None:
    stored = _body("9", phase="Ready")  # someone wrote after our read
    kube, fake = _kube(stored)
    stale = ModelDeployment.model_validate(_body("7"))
    with pytest.raises(ApiException) as e:
        kube.write_status(stale, {"phase": "Pending"}, {"phase": "Loading"})
    assert e.value.status == 409
    assert (
        fake.obj["status"] == {"phase": "Ready"} and fake.obj["metadata"]["resourceVersion"] == "9"
    )


class ConflictingKube:
    """Observe works; the status write meets a newer object."""

    def __init__(self) -> None:
        self.status_writes = 0

    def observe(self, md: ModelDeployment, raw_status: dict[str, Any], *_: Any) -> Observed:
        return Observed(
            md, default_classes(), DeploymentView(exists=False), {}, (), raw_status, "t"
        )

    def carry_out(self, md: ModelDeployment, p: Plan) -> int:
        return 0

    def write_status(self, md: ModelDeployment, old: dict[str, Any], new: dict[str, Any]) -> bool:
        self.status_writes += 1
        raise _conflict()


def test_a_conflict_requeues_the_object_for_an_immediate_fresh_reconcile() -> None:
    rt = wiring.Runtime(
        settings=OperatorSettings(),
        kube=ConflictingKube(),  # type: ignore[arg-type]
        ctx=BuildContext(),
    )
    with pytest.raises(kopf.TemporaryError):
        wiring.reconcile(rt, _body("7"))
    assert rt.kube.status_writes == 1  # type: ignore[attr-defined]
    # The worker re-reads the object (GET) and recomputes the status without waiting out
    # a retry delay: it is due already.
    assert "ns/m" in rt.pending and rt.pending["ns/m"] <= time.monotonic()
