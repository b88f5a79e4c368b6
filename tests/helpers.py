"""Small helpers shared by the tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from modelplane_testbed.harness import OperatorProcess, audit_writes


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


REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "OperatorProcess", "audit_writes", "wait_for"]


def put_load(control: Any, namespace: str, name: str, rps: float) -> None:
    """Set the stand-in clients' request rate for one ModelDeployment (engine emulator)."""
    control.put(
        f"/load/{namespace}/{name}",
        {"requestsPerSecond": rps, "promptTokens": 220, "outputTokens": 200},
    )
