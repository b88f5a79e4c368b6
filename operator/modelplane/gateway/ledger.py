"""The usage ledger: one append-only row per answered request, keyed by its request id.

`Ledger.record(rec)` inserts a `UsageRecord` and returns False when that request id is already
in the ledger (a retry of the same write, a second gateway replica, a batch job re-run): the
row is never counted twice and never updated. SQLite is the embedded default (one gateway
replica, a file on its volume); PostgreSQL is for several replicas sharing one ledger. Both
keep the same table:

    usage(request_id PRIMARY KEY, at, namespace, model, key_id, prompt_tokens,
          completion_tokens, audio_seconds, batch, cost_usd)

`open_ledger(url)` picks the backend: `sqlite:///path/to/usage.db` (or a bare path),
`sqlite://:memory:`, `postgresql://user@host:port/db`.

Costs come from `cost()` with the per-model prices of `modelplane.catalog.prices`; batch
requests are charged half (`batch=True`). The writer computes `cost_usd` once, when it records:
a later price change does not rewrite history.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelplane.catalog.prices import Price, price_of

#: Batch requests are charged this fraction of the on-line price.
BATCH_DISCOUNT = 0.5

_COLUMNS = (
    "request_id",
    "at",
    "namespace",
    "model",
    "key_id",
    "prompt_tokens",
    "completion_tokens",
    "audio_seconds",
    "batch",
    "cost_usd",
    "deployment",
)


@dataclass(frozen=True)
class UsageRecord:
    """What one answered request used. `model` is the catalog model id (what prices key on);
    `deployment` the ModelDeployment of `namespace` the request was for (a Serverless tenant,
    an OnDemand deployment; empty when unknown): `status.usage` sums per deployment."""

    request_id: str
    namespace: str
    model: str
    key_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    batch: bool = False
    cost_usd: float = 0.0
    at: float = field(default_factory=time.time)
    deployment: str = ""

    def row(self) -> tuple[Any, ...]:
        return (
            self.request_id,
            self.at,
            self.namespace,
            self.model,
            self.key_id,
            int(self.prompt_tokens),
            int(self.completion_tokens),
            float(self.audio_seconds),
            1 if self.batch else 0,
            float(self.cost_usd),
            self.deployment,
        )


@dataclass(frozen=True)
class Total:
    """Sums over the ledger's rows of one (namespace, deployment, model, batch or not)."""

    namespace: str
    deployment: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    cost_usd: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    batch: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def cost(
    model: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    audio_seconds: float = 0.0,
    batch: bool = False,
    price: Price | None = None,
) -> float:
    """US dollars for one request of catalog model `model` (0 when it has no price)."""
    p = price or price_of(model)
    if p is None:
        return 0.0
    usd = (
        prompt_tokens * p.input_per_million / 1e6
        + completion_tokens * p.output_per_million / 1e6
        + audio_seconds / 60.0 * p.audio_per_minute
    )
    return usd * (BATCH_DISCOUNT if batch else 1.0)


def usage_record(
    request_id: str,
    namespace: str,
    model: str,
    key_id: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    audio_seconds: float = 0.0,
    batch: bool = False,
    deployment: str = "",
) -> UsageRecord:
    """A `UsageRecord` with its cost computed from the catalog's prices."""
    return UsageRecord(
        request_id,
        namespace,
        model,
        key_id,
        prompt_tokens,
        completion_tokens,
        audio_seconds,
        batch,
        cost(model, prompt_tokens, completion_tokens, audio_seconds, batch),
        deployment=deployment,
    )


class Ledger(Protocol):
    def record(self, rec: UsageRecord) -> bool:
        """Append `rec` durably; False if its request id was already recorded (nothing
        written). Blocking: call it from a thread in async code."""
        ...

    def totals(self, namespace: str | None = None, since: float | None = None) -> list[Total]:
        """Per (namespace, model) sums, optionally of one namespace, rows at or after `since`."""
        ...

    def close(self) -> None: ...


_TOTALS = (
    "SELECT namespace, deployment, model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
    "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(audio_seconds), 0), "
    "COALESCE(SUM(cost_usd), 0), MIN(at), MAX(at), MAX(batch) FROM usage"
)
#: batch rows are summed apart from interactive ones (`modelplane usage` shows them apart)
_GROUP = (
    " GROUP BY namespace, deployment, model, batch ORDER BY namespace, deployment, model, batch"
)


def _totals(rows: Iterable[tuple[Any, ...]]) -> list[Total]:
    return [
        Total(
            str(r[0]),
            str(r[1]),
            str(r[2]),
            int(r[3]),
            int(r[4]),
            int(r[5]),
            float(r[6]),
            float(r[7]),
            None if r[8] is None else float(r[8]),
            None if r[9] is None else float(r[9]),
            batch=bool(r[10]),
        )
        for r in rows
    ]


def _where(namespace: str | None, since: float | None, mark: str) -> tuple[str, list[Any]]:
    conds: list[str] = []
    args: list[Any] = []
    if namespace is not None:
        conds.append(f"namespace = {mark}")
        args.append(namespace)
    if since is not None:
        conds.append(f"at >= {mark}")
        args.append(since)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    return where + _GROUP, args


class SqliteLedger:
    """The embedded ledger: one SQLite file in WAL mode; every `record` is its own committed
    transaction (a process killed right after keeps it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 10000")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS usage ("
            "request_id TEXT PRIMARY KEY, at REAL NOT NULL, namespace TEXT NOT NULL, "
            "model TEXT NOT NULL, key_id TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
            "completion_tokens INTEGER NOT NULL, audio_seconds REAL NOT NULL, "
            "batch INTEGER NOT NULL, cost_usd REAL NOT NULL, deployment TEXT NOT NULL DEFAULT '')"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS usage_ns_at ON usage (namespace, at)")

    def record(self, rec: UsageRecord) -> bool:
        with self._lock:
            cur = self._db.execute(
                f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING",
                rec.row(),
            )
            return cur.rowcount == 1

    def totals(self, namespace: str | None = None, since: float | None = None) -> list[Total]:
        where, args = _where(namespace, since, "?")
        with self._lock:
            return _totals(self._db.execute(_TOTALS + where, args).fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresLedger:
    """The shared ledger for several gateway replicas (PostgreSQL, driver pg8000). One
    connection per ledger, serialized; each `record` commits on its own."""

    def __init__(self, url: str) -> None:
        from urllib.parse import unquote, urlsplit

        import pg8000.native  # type: ignore[import-untyped]

        u = urlsplit(url)
        self._lock = threading.Lock()
        self._db = pg8000.native.Connection(
            user=unquote(u.username or "postgres"),
            password=unquote(u.password) if u.password else None,
            host=u.hostname or "127.0.0.1",
            port=u.port or 5432,
            database=(u.path or "/").lstrip("/") or None,
        )
        self._db.run(
            "CREATE TABLE IF NOT EXISTS usage ("
            "request_id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, namespace TEXT NOT NULL, "
            "model TEXT NOT NULL, key_id TEXT NOT NULL, prompt_tokens BIGINT NOT NULL, "
            "completion_tokens BIGINT NOT NULL, audio_seconds DOUBLE PRECISION NOT NULL, "
            "batch SMALLINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, "
            "deployment TEXT NOT NULL DEFAULT '')"
        )
        self._db.run("CREATE INDEX IF NOT EXISTS usage_ns_at ON usage (namespace, at)")

    def record(self, rec: UsageRecord) -> bool:
        params = dict(zip(_COLUMNS, rec.row(), strict=True))
        with self._lock:
            rows = self._db.run(
                f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join(':' + c for c in _COLUMNS)}) "
                "ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
                **params,
            )
        return bool(rows)

    def totals(self, namespace: str | None = None, since: float | None = None) -> list[Total]:
        conds: list[str] = []
        params: dict[str, Any] = {}
        if namespace is not None:
            conds.append("namespace = :ns")
            params["ns"] = namespace
        if since is not None:
            conds.append("at >= :since")
            params["since"] = since
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        with self._lock:
            rows = self._db.run(_TOTALS + where + _GROUP, **params)
        return _totals(rows or [])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_ledger(url: str) -> Ledger:
    """`sqlite:///abs/path`, `sqlite://:memory:`, a bare file path, or `postgresql://...`."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url)
    if url.startswith("sqlite://"):
        rest = url.removeprefix("sqlite://")
        return SqliteLedger(":memory:" if rest in ("", ":memory:", "/:memory:") else rest)
    if "://" in url:
        raise ValueError(
            f"Unknown ledger URL {url!r}: use sqlite:///path/usage.db or "
            "postgresql://user:password@host:5432/db."
        )
    return SqliteLedger(url)
