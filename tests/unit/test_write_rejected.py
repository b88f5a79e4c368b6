"""A 4xx from a child write fails the ModelDeployment (Ready=False, WriteRejected, the
apiserver's message) and is not tried again until the spec changes (issue #15)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.rest import ApiException

from modelplane.adapters.kube import Kube, rejected
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders.objects import BuildContext
from modelplane.commands import default_classes
from modelplane.reconcile.core import DeploymentView, Event, Observed
from modelplane.settings import OperatorSettings
from modelplane.wiring import operator as wiring

APISERVER_SAYS = 'Deployment.apps "m" is invalid: spec.template.spec.nodeSelector: Invalid value'


def _error(status: int, reason: str) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "message": APISERVER_SAYS, "code": status})
    return e


class RefusingKube(Kube):
    """Real `carry_out`; the apiserver refuses every apply with a 422."""

    def __init__(self) -> None:  # no API connection
        self.applies = 0
        self.statuses: list[dict[str, Any]] = []
        self.events: list[Event] = []

    def observe(self, md: ModelDeployment, raw_status: dict[str, Any], *_: Any) -> Observed:
        prev = self.statuses[-1] if self.statuses else raw_status
        return Observed(md, default_classes(), DeploymentView(exists=False), {}, (), prev, "t")

    def apply(self, obj: dict[str, Any], field_manager: str = "") -> None:
        self.applies += 1
        raise _error(422, "Unprocessable Entity")

    def write_status(self, md: ModelDeployment, old: dict[str, Any], new: dict[str, Any]) -> bool:
        self.statuses.append(new)
        return True

    def post_event(self, md: ModelDeployment, ev: Event) -> None:
        self.events.append(ev)


def _body(generation: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {
            "tier": "OnDemand",
            "model": {"catalog": "llama-v3p1-8b-instruct"},
            "engine": {"maxContextLength": 8192},
            "replicas": {"min": 1, "max": 1},
        },
    }


def test_a_refused_write_fails_the_object_once_and_waits_for_a_new_spec() -> None:
    kube = RefusingKube()
    rt = wiring.Runtime(settings=OperatorSettings(), kube=kube, ctx=BuildContext())
    wiring.reconcile(rt, _body(1))  # raised kopf.TemporaryError("API error 422") before
    status = kube.statuses[-1]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Failed" and ready["status"] == "False"
    assert ready["reason"] == "WriteRejected" and APISERVER_SAYS in ready["message"]
    assert [(e.type, e.reason) for e in kube.events] == [("Warning", "WriteRejected")]
    assert kube.applies == 1
    wiring.reconcile(rt, _body(1))  # a resync: same spec, no retry, no second Event
    assert kube.applies == 1 and len(kube.events) == 1
    wiring.reconcile(rt, _body(2))  # the spec changed: tried again
    assert kube.applies == 2


def test_only_final_4xx_answers_are_rejections() -> None:
    refused = rejected(_error(400, "Bad Request"), "Service ns/m")
    assert refused is not None and str(refused).endswith(APISERVER_SAYS)
    assert "Service ns/m" in str(refused) and "400 Bad Request" in str(refused)
    for status in (404, 409, 429, 500, 503):
        assert rejected(_error(status, "x"), "Service ns/m") is None, status
