"""The resync loop and the worker survive any error (issue #15: both died of a urllib3
MaxRetryError while the apiserver restarted), logging it and retrying."""

from __future__ import annotations

import threading
from typing import Any

from urllib3.exceptions import MaxRetryError

from modelplane.builders.objects import BuildContext
from modelplane.settings import OperatorSettings
from modelplane.wiring import operator as wiring

DOWN = MaxRetryError(None, "/apis/modelplane.io/v1alpha1/modeldeployments", "connection refused")  # type: ignore[arg-type]


class FlakyKube:
    """Down for the first `failures` list calls, then lists one ModelDeployment."""

    def __init__(self, stop: threading.Event, failures: int) -> None:
        self.stop, self.failures, self.lists, self.sweeps = stop, failures, 0, 0

    def model_deployment_bodies(self, namespaces: Any = ()) -> list[dict[str, Any]]:
        self.lists += 1
        if self.lists <= self.failures:
            raise DOWN
        return [{"metadata": {"namespace": "ns", "name": "m"}}]

    def sweep_backends(self, namespace: str) -> int:
        self.sweeps += 1
        self.stop.set()  # one good round is all the test needs
        return 0


def runtime(kube: Any) -> wiring.Runtime:
    return wiring.Runtime(
        settings=OperatorSettings(resync_interval_seconds=0.01),
        kube=kube,
        ctx=BuildContext(),
    )


def test_the_resync_loop_survives_connection_errors_and_resyncs_after() -> None:
    stop = threading.Event()
    kube = FlakyKube(stop, failures=2)
    rt = runtime(kube)
    rt.stop = stop
    thread = threading.Thread(target=wiring._resync_loop, args=(rt,), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and stop.is_set()
    assert kube.lists == 3 and kube.sweeps == 1
    assert "ns/m" in rt.pending


class UnreachableCustom:
    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        raise DOWN


class UnreachableKube:
    custom = UnreachableCustom()


def test_the_worker_keeps_a_key_it_could_not_read_and_goes_on() -> None:
    rt = runtime(UnreachableKube())
    rt.trigger("ns", "a", delay=0)
    rt.trigger("ns", "b", delay=0)
    due_before = set(rt.pending)
    wiring.work_due(rt)  # raised MaxRetryError (and killed the worker thread) before
    assert set(rt.pending) == due_before, "both keys are queued again, for a retry"
