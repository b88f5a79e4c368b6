"""The usage ledger (SQLite): idempotent by request id, totals per namespace and model, prices
from the catalog (batch at half price), durable across reopening the file."""

from __future__ import annotations

import pytest

from modelplane.gateway.ledger import (
    SqliteLedger,
    UsageRecord,
    cost,
    open_ledger,
    usage_record,
)


def test_record_is_idempotent_by_request_id(tmp_path: object) -> None:
    led = open_ledger(f"sqlite:///{tmp_path}/usage.db")
    rec = UsageRecord("r1", "team-a", "llama-v3p3-70b-instruct", "k1", 10, 5)
    assert led.record(rec) is True
    # the same request id again (a retry, another replica): not counted twice
    assert led.record(UsageRecord("r1", "team-a", "llama-v3p3-70b-instruct", "k1", 99, 99)) is False
    assert led.record(UsageRecord("r2", "team-a", "llama-v3p3-70b-instruct", "k1", 1, 2)) is True
    assert led.record(UsageRecord("r3", "team-b", "nomic-embed-text-v1p5", "k2", 7)) is True
    (a,) = led.totals("team-a")
    assert (a.requests, a.prompt_tokens, a.completion_tokens, a.tokens) == (2, 11, 7, 18)
    assert [(t.namespace, t.model) for t in led.totals()] == [
        ("team-a", "llama-v3p3-70b-instruct"),
        ("team-b", "nomic-embed-text-v1p5"),
    ]
    led.close()
    again = SqliteLedger(f"{tmp_path}/usage.db")  # what was recorded survives the process
    assert sum(t.requests for t in again.totals()) == 3
    assert again.totals(since=rec.at + 3600) == []


def test_prices_from_the_catalog_and_batch_half() -> None:
    assert cost("llama-v3p3-70b-instruct", 1_000_000, 1_000_000) == pytest.approx(1.80)
    assert cost("llama-v3p1-405b-instruct", 500_000, 500_000) == pytest.approx(3.00)
    assert cost("nomic-embed-text-v1p5", 1_000_000) == pytest.approx(0.008)
    assert cost("whisper-v3", audio_seconds=90) == pytest.approx(0.30)
    assert cost("llama-v3p3-70b-instruct", 1_000_000, 0, batch=True) == pytest.approx(0.45)
    assert cost("no-such-model", 10**9, 10**9) == 0.0
    rec = usage_record("r", "ns", "llama-v3p1-405b-instruct", "k", 2_000_000, 0, batch=True)
    assert rec.cost_usd == pytest.approx(3.00) and rec.batch


def test_unknown_ledger_url_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        open_ledger("mysql://x/y")
