"""Leader election on a Lease: acquire, renew, expiry, takeover and fencing, with a fake Lease
store (optimistic concurrency like the apiserver's) and a fake clock per replica."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from modelplane.wiring import leader
from modelplane.wiring.leader import (
    Elector,
    LeaseConflictError,
    LeaseRecord,
    NotLeaderError,
)


class FakeStore:
    """One Lease object; every write bumps the version; a stale version is a conflict."""

    def __init__(self) -> None:
        self.rec: LeaseRecord | None = None
        self.n = 0
        self.down = False
        self.writes: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("apiserver unreachable")

    def get(self) -> LeaseRecord | None:
        self._check()
        return self.rec

    def _put(self, holder: str, duration_s: float, transitions: int) -> LeaseRecord:
        self.n += 1
        self.rec = LeaseRecord(holder, duration_s, transitions, str(self.n))
        self.writes.append(holder)
        return self.rec

    def create(self, holder: str, duration_s: float) -> LeaseRecord:
        self._check()
        if self.rec is not None:
            raise LeaseConflictError("exists")
        return self._put(holder, duration_s, 0)

    def update(
        self, prev: LeaseRecord, holder: str, duration_s: float, transitions: int, acquired: bool
    ) -> LeaseRecord:
        self._check()
        if self.rec is None or self.rec.version != prev.version:
            raise LeaseConflictError("stale")
        return self._put(holder, duration_s, transitions)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def elector(store: FakeStore, name: str, clock: Clock) -> Elector:
    return Elector(store, name, lease_duration=15, renew_deadline=10, retry_period=2, clock=clock)


def test_first_candidate_creates_the_lease_and_leads() -> None:
    store, clock = FakeStore(), Clock()
    a = elector(store, "a", clock)
    assert not a.is_leader()
    with pytest.raises(NotLeaderError, match="refusing to write"):
        a.ensure_leader()
    assert a.try_acquire_or_renew()
    assert a.is_leader() and store.rec is not None and store.rec.holder == "a"
    a.ensure_leader()


def test_standby_waits_the_full_lease_duration_on_its_own_clock() -> None:
    store, ca, cb = FakeStore(), Clock(0.0), Clock(5000.0)  # clocks far apart: skew is harmless
    a, b = elector(store, "a", ca), elector(store, "b", cb)
    assert a.try_acquire_or_renew()
    # b first sees a's record now; a dies (stops renewing).
    assert not b.try_acquire_or_renew()
    cb.t += 14.9
    assert not b.try_acquire_or_renew() and not b.is_leader()
    cb.t += 0.2  # 15.1 s after b first saw the unchanged record
    assert b.try_acquire_or_renew() and b.is_leader()
    assert store.rec is not None and store.rec.holder == "b" and store.rec.transitions == 1


def test_a_renewing_leader_is_never_taken_over() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = elector(store, "a", ca), elector(store, "b", cb)
    assert a.try_acquire_or_renew()
    for _ in range(50):
        ca.t += 2
        cb.t += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert store.writes.count("b") == 0


def test_fencing_the_leader_stops_writing_before_a_standby_can_take_over() -> None:
    """The apiserver becomes unreachable for the leader only: after renew_deadline it may not
    write, and that is strictly before lease_duration, when the standby may take over."""
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = elector(store, "a", ca), elector(store, "b", cb)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    store.down = True
    for step in range(1, 16):
        ca.t += 1
        cb.t += 1
        assert not (a.try_acquire_or_renew() and step >= 10)
        if step < 10:
            assert a.is_leader()
        else:
            assert not a.is_leader()
            with pytest.raises(NotLeaderError):
                a.ensure_leader()
    store.down = False
    cb.t += 0.1
    assert b.try_acquire_or_renew()
    # The old leader, back, sees the new holder and stays fenced.
    assert not a.try_acquire_or_renew() and not a.is_leader()


def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    store, ca = FakeStore(), Clock()
    a = elector(store, "a", ca)
    assert a.try_acquire_or_renew()
    assert store.rec is not None
    store.rec = LeaseRecord("intruder", 15, 1, "999")  # e.g. forced by hand
    assert not a.try_acquire_or_renew()
    assert not a.is_leader()


def test_lost_race_on_the_same_record_is_a_conflict_not_two_leaders() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = elector(store, "a", ca), elector(store, "b", cb)
    # Both read "no lease"; both try to create: exactly one wins.
    real_get = store.get
    store.get = lambda: None  # type: ignore[method-assign]
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    store.get = real_get  # type: ignore[method-assign]
    assert a.is_leader() and not b.is_leader()


def test_release_lets_a_standby_take_over_without_waiting() -> None:
    store, ca, cb = FakeStore(), Clock(), Clock()
    a, b = elector(store, "a", ca), elector(store, "b", cb)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader() and store.rec is not None and store.rec.holder == ""
    assert b.try_acquire_or_renew()


def test_keep_renewing_calls_on_lost_at_the_deadline() -> None:
    store, clock = FakeStore(), Clock()
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    store.down = True
    lost: list[float] = []
    stop = threading.Event()

    class Stepping(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:  # advance the fake clock instead
            clock.t += timeout or 0
            return stop.is_set()

    a.keep_renewing(Stepping(), lambda: lost.append(clock.t))
    assert lost == [1010.0]  # exactly renew_deadline after the last successful renew


def test_bad_timings_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="renewDeadline < leaseDuration"):
        Elector(FakeStore(), "a", lease_duration=10, renew_deadline=10, retry_period=2)


def test_fence_checks_leadership_before_every_write_only() -> None:
    store, clock = FakeStore(), Clock()
    a = elector(store, "a", clock)
    calls: list[str] = []
    lost: list[str] = []

    class Api:
        user_agent = ""

        def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> str:
            calls.append(method)
            return "ok"

    api = leader.fence(Api(), a, on_lost=lambda: lost.append("lost"))
    assert api.user_agent == "modelplane/a"
    assert api.call_api("GET", "/x") == "ok"
    with pytest.raises(NotLeaderError):
        api.call_api("PATCH", "/x")
    assert lost == ["lost"]
    assert a.try_acquire_or_renew()
    assert api.call_api("PATCH", "/x") == "ok" and api.call_api("DELETE", "/x") == "ok"
    clock.t += 10
    for m in ("POST", "PUT", "PATCH", "DELETE"):
        with pytest.raises(NotLeaderError):
            api.call_api(m, "/x")
    assert calls == ["GET", "PATCH", "DELETE"]
    assert len(lost) == 5


def test_without_leader_election_the_client_is_unchanged() -> None:
    sentinel = object()
    old = leader._current
    leader._current = None
    try:
        assert leader.fence(sentinel) is sentinel
        leader.check()  # nothing to check: does not exit
    finally:
        leader._current = old


def test_fence_wraps_the_real_kubernetes_client() -> None:
    """Every generated API method of the installed kubernetes client goes through the fence."""
    from kubernetes import client

    store, clock = FakeStore(), Clock()
    a = elector(store, "a", clock)
    api = client.ApiClient()
    sent: list[str] = []

    def fake_request(method: str, url: str, **kwargs: Any) -> Any:
        sent.append(method)
        raise RuntimeError("no server in a unit test")

    api.rest_client.request = fake_request  # type: ignore[method-assign]
    lost: list[bool] = []
    leader.fence(api, a, on_lost=lambda: lost.append(True))
    core = client.CoreV1Api(api)
    with pytest.raises(NotLeaderError):
        core.delete_namespaced_pod("p", "ns")
    with pytest.raises(NotLeaderError):
        core.patch_namespaced_pod_status("p", "ns", {"status": {}})
    assert sent == [] and lost == [True, True]
    with pytest.raises(RuntimeError, match="no server"):
        core.read_namespaced_pod("p", "ns")  # reads are never fenced
    assert sent == ["GET"]
    assert api.user_agent == "modelplane/a"


def test_a_leader_renews_with_one_write_and_rereads_only_on_conflict() -> None:
    store, clock = FakeStore(), Clock()
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew()
    reads: list[int] = []
    real_get = store.get

    def counting_get() -> LeaseRecord | None:
        reads.append(1)
        return real_get()

    store.get = counting_get  # type: ignore[method-assign]
    for _ in range(5):
        clock.t += 2
        assert a.try_acquire_or_renew()
    assert reads == [] and store.writes == ["a"] * 6
    # Someone else wrote the Lease: the blind renew conflicts, the read shows the new holder.
    assert store.rec is not None
    store.rec = LeaseRecord("b", 15, 1, "other")
    assert not a.try_acquire_or_renew() and not a.is_leader() and reads == [1]
