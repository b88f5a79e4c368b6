"""Demand a gateway publishes on a ModelDeployment: requests it holds for want of a replica.

The contract (docs/architecture.md, "Scale from zero"): a gateway in front of the model servers
(`modelplane gateway`; the test bed's emulator for its stand-in clients) that holds requests
because no replica can take them sets two metadata annotations on the ModelDeployment the
requests are for:

* `modelplane.io/pending-requests`: how many requests it holds now, a non-negative integer
  string (`"0"` when it holds none; removing both annotations means the same);
* `modelplane.io/pending-requests-at`: when that count was observed, RFC 3339 in UTC
  (`2026-01-01T12:00:00Z`).

The autoscaler counts a fresh, positive count as requests queued at the gateway: they add to
the fleet's concurrency and queue depth, and wake a deployment at zero replicas. A count older
than the freshness limit is ignored (a gateway that stopped publishing must not keep replicas
up), and so is a malformed one; the autoscaler's log says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

ANNOTATION_PENDING_REQUESTS = "modelplane.io/pending-requests"
ANNOTATION_PENDING_REQUESTS_AT = "modelplane.io/pending-requests-at"
#: A count is fresh for this many autoscaler intervals, and at least MIN_FRESH_SECONDS.
FRESH_INTERVALS = 3
MIN_FRESH_SECONDS = 30.0


def freshness_limit(interval_seconds: float) -> float:
    """Oldest age (seconds) at which a published count still counts."""
    return max(FRESH_INTERVALS * interval_seconds, MIN_FRESH_SECONDS)


@dataclass(frozen=True)
class GatewayDemand:
    """What the annotations say: requests that count, and why a published count did not."""

    pending: int = 0
    ignored: str | None = None


def _parse_time(value: str) -> float:
    t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if t.tzinfo is None or t.utcoffset() != dt.timedelta(0):
        raise ValueError("not UTC")
    return t.timestamp()


def gateway_demand(annotations: Mapping[str, str], now: float, max_age: float) -> GatewayDemand:
    """The held requests `annotations` publish at wall-clock `now` (epoch seconds)."""
    raw = annotations.get(ANNOTATION_PENDING_REQUESTS)
    if raw is None or raw.strip() == "0":
        return GatewayDemand()
    at_raw = annotations.get(ANNOTATION_PENDING_REQUESTS_AT)
    try:
        pending = int(raw.strip())
        if pending < 0:
            raise ValueError
    except ValueError:
        return GatewayDemand(
            ignored=f"{ANNOTATION_PENDING_REQUESTS}={raw!r} is not a non-negative integer"
        )
    if at_raw is None:
        return GatewayDemand(ignored=f"{ANNOTATION_PENDING_REQUESTS_AT} is missing")
    try:
        at = _parse_time(at_raw)
    except ValueError:
        return GatewayDemand(
            ignored=f"{ANNOTATION_PENDING_REQUESTS_AT}={at_raw!r} is not an RFC 3339 UTC time"
        )
    age = now - at
    if age > max_age:
        return GatewayDemand(
            ignored=f"{pending} pending request(s) published at {at_raw} are {age:.0f}s old "
            f"(older than {max_age:.0f}s)"
        )
    if age < -max_age:
        return GatewayDemand(
            ignored=f"{ANNOTATION_PENDING_REQUESTS_AT}={at_raw} is {-age:.0f}s in the future"
        )
    return GatewayDemand(pending=pending)
