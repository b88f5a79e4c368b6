"""The usage ledger on a real PostgreSQL server (Debian's `postgresql`, a throwaway cluster on
127.0.0.1): several writers (as several gateway replicas) recording the same request ids
concurrently count each exactly once, and the totals survive reconnecting."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelplane.gateway.ledger import PostgresLedger, open_ledger, usage_record
from modelplane.gateway.usage_report import run as usage_report
from modelplane_testbed.servers import postgres

pytestmark = pytest.mark.integration


def test_postgres_ledger_is_idempotent_across_writers(tmp_path: Path) -> None:
    with postgres(tmp_path / "pg") as url:
        ledgers = [open_ledger(url) for _ in range(3)]
        assert all(isinstance(led, PostgresLedger) for led in ledgers)
        accepted: list[int] = []

        def write(led: object, who: int) -> None:
            n = 0
            for i in range(200):  # every writer tries every id: only one may win each
                rec = usage_record(
                    f"req-{i}", "team-a" if i % 2 else "team-b", "llama-v3p3-70b-instruct",
                    "k1", 100, 10 + i % 7, deployment="chat",
                )  # fmt: skip
                n += led.record(rec)  # type: ignore[attr-defined]
            accepted.append(n)

        threads = [threading.Thread(target=write, args=(led, i)) for i, led in enumerate(ledgers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(accepted) == 200
        for led in ledgers:
            led.close()
        again = open_ledger(url)
        totals = {t.namespace: t for t in again.totals()}
        assert totals["team-a"].requests == 100 and totals["team-b"].requests == 100
        assert totals["team-a"].prompt_tokens == 100 * 100
        expected = sum(10 + i % 7 for i in range(200))
        assert totals["team-a"].completion_tokens + totals["team-b"].completion_tokens == expected
        cost = sum(t.cost_usd for t in totals.values())
        assert cost == pytest.approx((200 * 100 + expected) * 0.90 / 1e6)
        out = usage_report(again, 24, "team-a")
        assert "team-a" in out and "team-b" not in out and "llama-v3p3-70b-instruct" in out
        again.close()
