"""Metered usage a gateway publishes on a ModelDeployment, for its `status.usage`.

The contract: the gateway's usage ledger (`modelplane.gateway.ledger`) is the source of truth.
Every `publish` period a gateway replica writes the ledger's totals for each ModelDeployment
that was used into one metadata annotation of that ModelDeployment:

* `modelplane.io/usage`: JSON `{"requests", "promptTokens", "generatedTokens", "audioSeconds",
  "costUSD", "since", "at"}` (`since`: the first recorded request, `at`: the latest, both
  RFC 3339 UTC; the value of an idle deployment therefore does not change).

With several gateway replicas the ledger is shared (PostgreSQL), so each writes the same totals
and the last write wins. The operator's single status writer copies it into `status.usage`
(`status_usage`); it never writes the annotation itself. An annotation that does not parse is
ignored (the previous status is kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ANNOTATION_USAGE = "modelplane.io/usage"

_INT = ("requests", "promptTokens", "generatedTokens")
_FLOAT = ("audioSeconds", "costUSD")


def parse_usage(annotations: Mapping[str, str]) -> dict[str, Any] | None:
    """The published totals in `status.usage` form, or None (absent or malformed)."""
    raw = annotations.get(ANNOTATION_USAGE)
    if not raw:
        return None
    try:
        obj = json.loads(raw)
        out: dict[str, Any] = {k: int(obj.get(k) or 0) for k in _INT}
        out |= {k: round(float(obj.get(k) or 0.0), 6) for k in _FLOAT}
    except (ValueError, TypeError, AttributeError):
        return None
    if any(v < 0 for v in out.values()):
        return None
    for k in ("since", "at"):
        if isinstance(obj.get(k), str):
            out[k] = obj[k]
    return out


def status_usage(
    annotations: Mapping[str, str], previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """`status.usage` of a metered (Serverless) ModelDeployment: the gateway's published
    totals, else what the status said before, else zeros since `now`."""
    published = parse_usage(annotations)
    if published is not None:
        return published
    if previous:
        return dict(previous)
    return {"requests": 0, "promptTokens": 0, "generatedTokens": 0, "since": now}
