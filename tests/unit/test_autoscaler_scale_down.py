"""The pure scale-down choice: which pods go, what is marked, and when a scale-down waits."""

from __future__ import annotations

from modelplane.adapters.metric_sources import PodState
from modelplane.adapters.scale_down import VICTIM_DELETION_COST, choose_scale_down


def pod(name: str, *, ready: bool = True, scheduled: bool = True, **kw: object) -> PodState:
    return PodState(name, "10.0.0.1", scheduled=scheduled, ready=ready, **kw)  # type: ignore[arg-type]


def test_the_idlest_ready_pods_are_marked_and_a_stale_mark_is_removed() -> None:
    pods = [pod("a", created=1.0), pod("b", created=2.0), pod("c", deletion_cost="-1000")]
    down = choose_scale_down(pods, {"a": 0.0, "b": 0.0, "c": 5.0}, current=3, desired=1)
    assert down.desired == 1 and down.held_because is None
    assert down.victims == ("b", "a")  # equally idle: the newest first
    assert sorted(down.marks, key=lambda m: m[0]) == [
        ("a", VICTIM_DELETION_COST),
        ("b", VICTIM_DELETION_COST),
        ("c", None),
    ]


def test_a_marked_victim_is_not_written_again() -> None:
    pods = [pod("a", deletion_cost=str(VICTIM_DELETION_COST)), pod("b")]
    down = choose_scale_down(pods, {"a": 0.0, "b": 3.0}, current=2, desired=1)
    assert down.victims == ("a",) and down.marks == ()


def test_starting_pods_hold_the_scale_down_and_nothing_is_marked() -> None:
    pods = [pod("a"), pod("b", ready=False), pod("c", ready=False, scheduled=False)]
    down = choose_scale_down(pods, {}, current=3, desired=1)
    assert down.desired == 2 and down.victims == () and down.marks == ()
    assert down.held_because is not None and "1 replica(s) pending" in down.held_because


def test_unscheduled_pods_go_first_without_marks() -> None:
    pods = [pod("a"), pod("b"), pod("c", ready=False, scheduled=False)]
    down = choose_scale_down(pods, {}, current=3, desired=2)
    assert down == choose_scale_down(pods, {}, current=3, desired=2)
    assert down.desired == 2 and down.victims == () and down.marks == ()
