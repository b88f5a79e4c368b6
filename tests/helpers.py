"""Small helpers shared by the tests."""

from __future__ import annotations

import time
from typing import Any


def wait_for(
    fn: Any, timeout: float = 60.0, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll `fn` until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
