"""Which pods a scale-down removes: a pure choice, carried out by the autoscaler loop.

The ReplicaSet controller deletes pods in this order (``ActivePodsWithRanks`` in
kube-controller-manager): unscheduled before scheduled, ``Pending`` before ``Running``, not
Ready before Ready, and only then the lower ``controller.kubernetes.io/pod-deletion-cost``.
A pod pending on a node or loading weights has paid for its node and most of its cold start,
so while any scheduled pod is not Ready a scale-down only goes as far as the unscheduled pods
and the rest waits. Among Ready pods, the ones with the fewest requests in flight (the newest
among equals) get a low deletion cost so the idle ones go and the busy ones keep serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modelplane.adapters.metric_sources import PodState

#: Deletion cost of the Ready pods chosen for removal (others carry none, i.e. 0).
VICTIM_DELETION_COST = -1000


@dataclass(frozen=True, slots=True)
class ScaleDown:
    desired: int  # the count to scale to (never below what keeps starting pods)
    victims: tuple[str, ...] = ()  # Ready pods chosen for removal
    #: Deletion-cost annotations to write first: (pod, cost or None to remove it).
    marks: tuple[tuple[str, int | None], ...] = ()
    held_because: str | None = None  # why fewer pods go than the policy asked


def choose_scale_down(
    pods: Sequence[PodState], in_flight: Mapping[str, float], current: int, desired: int
) -> ScaleDown:
    """Limit a scale-down from `current` to `desired` so no starting pod is removed, and pick
    the Ready pods to remove. `pods`: every non-terminating model-server pod."""
    unscheduled = [p for p in pods if not p.scheduled]
    starting = [p for p in pods if p.scheduled and not p.ready]
    if starting:
        floor = min(max(len(pods) - len(unscheduled), desired), current)
        if floor > desired:
            why = (
                f"holding {floor}: {len(starting)} replica(s) pending on a node or "
                "loading weights are never removed"
            )
            return ScaleDown(floor, held_because=why)
        return ScaleDown(desired)  # only unscheduled pods go: no marking needed
    remove = len(pods) - desired - len(unscheduled)
    if remove <= 0:
        return ScaleDown(desired)
    ready = [p for p in pods if p.ready]
    # Fewest requests in flight first; among equals the newest (coldest caches).
    order = sorted(ready, key=lambda p: (in_flight.get(p.name, 0.0), -p.created, p.name))
    victims = tuple(p.name for p in order[:remove])
    marks: list[tuple[str, int | None]] = []
    for p in ready:
        want = str(VICTIM_DELETION_COST) if p.name in victims else None
        if p.deletion_cost != want:
            marks.append((p.name, VICTIM_DELETION_COST if want is not None else None))
    return ScaleDown(desired, victims, tuple(marks))
