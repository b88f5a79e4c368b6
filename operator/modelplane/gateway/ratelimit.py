"""Rate limits: requests/min and tokens/min per API key and per namespace (the tenant).

Each limit is a token bucket holding one minute's allowance that refills continuously
(`limit / 60` per second). A request takes 1 from each request bucket and a reservation from
each token bucket: its prompt estimate (a quarter of the body's bytes) plus `max_tokens`
(`max_completion_tokens`, else `default_max_tokens`). It is admitted only if every bucket can
give its share (all or nothing); else `429` with `Retry-After`, the seconds until they can.
When the answer's `usage` is known the reservation is settled: the difference to the real count
is given back or charged (a bucket may go below zero, delaying the next requests), so what is
counted over time is exactly the metered tokens.

`LocalLimiter` is exact for one gateway replica (one event loop: no locks needed). Several
replicas need one shared state (Redis): not implemented yet; each replica then enforces its own
buckets, so the effective limit is `replicas x limit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """One bucket: `key` (e.g. `key:<id>:tpm`), `per_minute` allowance, `amount` to take."""

    key: str
    per_minute: float
    amount: float


@dataclass
class _Bucket:
    level: float
    at: float


class LocalLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, per_minute: float, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(per_minute, now)
        else:
            b.level = min(per_minute, b.level + (now - b.at) * per_minute / 60.0)
            b.at = now
        return b

    def acquire(self, limits: Sequence[Limit]) -> float:
        """Take every limit's amount and return 0, or take nothing and return the seconds to
        wait until all could be taken."""
        now = self.clock()
        wait = 0.0
        buckets = [(lim, self._bucket(lim.key, lim.per_minute, now)) for lim in limits]
        for lim, b in buckets:
            # a request larger than the whole allowance is admitted on a full bucket
            need = min(lim.amount, lim.per_minute)
            if b.level < need:
                wait = max(wait, (need - b.level) * 60.0 / lim.per_minute)
        if wait > 0:
            return wait
        for lim, b in buckets:
            b.level -= lim.amount
        return 0.0

    def settle(self, key: str, per_minute: float, delta: float) -> None:
        """Charge `delta` more (negative: give back) to bucket `key`."""
        b = self._bucket(key, per_minute, self.clock())
        b.level = min(per_minute, b.level - delta)


def retry_after(wait: float) -> int:
    return max(1, math.ceil(wait))
