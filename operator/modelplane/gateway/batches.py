"""The Batch API in the gateway: `/v1/files` and `/v1/batches` in OpenAI's shapes, validation up
front, durable state in SQLite, and an executor that runs the lines on spare capacity.

Lifecycle: `create` stores the batch `validating`; the executor reads the input file and checks
every line (JSON, `custom_id` present and unique, `method`/`url`/`body`, the batch's endpoint,
a model the key's namespace serves, the line and file size limits). Any bad line fails the batch
with one error per bad line (its number, what is wrong and how to fix it) and nothing runs.
Otherwise the lines are stored as requests and the batch is `in_progress`.

Execution: requests go through the gateway's own routing (replica choice, retries, holding at
zero, metering), in the order of their prompt text so requests sharing a prefix run together
and reuse the engine's prefix cache. Batch traffic has the lower priority: a request starts
only while the route's ready replicas have spare slots (`slots_per_replica` minus the
interactive requests outstanding on them), so interactive requests never wait behind a batch.
A route with no ready replica gets one batch request at a time, held like any request: that is
the demand that scales a deployment up from zero; once the batch has no request left, it holds
nothing, so a finished batch never keeps a deployment above zero.

Durability and exactly once: each request's result is written in the same SQLite transaction
that marks it done (only a `pending` row can become `done`), the output and error files are
built from those rows at the end, under ids derived from the batch's id. A gateway killed at any
point resumes on start: `validating` batches are validated again, `in_progress` ones run their
`pending` rows, `finalizing`/`cancelling` ones are finalized again (the same files, replaced),
so every `custom_id` appears once across the output and error files.

Cancel: `cancelling` stops starting requests, waits for those in flight, then writes the files
of what finished and ends `cancelled`. Past `expires_at` (24 h) the rest are error lines
(`batch_expired`) and the batch ends `expired`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from modelplane.gateway import keys as keymod
from modelplane.gateway.app import (
    Gateway,
    HttpError,
    Receive,
    Scope,
    Send,
    UnavailableError,
    _header,
    _json,
    _read_body,
)
from modelplane.gateway.files import PURPOSES, FileStore, StoredFile, multipart

if TYPE_CHECKING:
    from modelplane.gateway.routing import Route

log = logging.getLogger("modelplane.gateway.batches")

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
DONE = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class BatchConfig:
    #: the largest input file, line and line count accepted (OpenAI: 200 MB, 50,000 lines)
    max_file_bytes: int = 200 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    max_lines: int = 50_000
    #: batch requests in flight per gateway, all batches together
    concurrency: int = 64
    #: requests a ready replica takes before batch requests wait (interactive ones count first)
    slots_per_replica: int = 16
    #: attempts per request when no replica could take it (503, hold timeout)
    attempts: int = 5
    poll_seconds: float = 0.5


# ---------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Line:
    index: int  # 1-based line number in the input file
    custom_id: str
    model: str
    body: dict[str, Any]
    group: str  # the prompt text: requests are run sorted by it (shared prefixes together)


def _prompt_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("messages"), list):
        parts = []
        for m in body["messages"]:
            c = m.get("content") if isinstance(m, dict) else None
            parts.append(c if isinstance(c, str) else json.dumps(c, sort_keys=True))
        return "\n".join(parts)[:4096]
    for k in ("prompt", "input"):
        v = body.get(k)
        if v is not None:
            return (v if isinstance(v, str) else json.dumps(v))[:4096]
    return ""


def validate(
    data: bytes,
    endpoint: str,
    serves: Any,
    models_hint: Iterable[str],
    namespace: str,
    cfg: BatchConfig,
) -> tuple[list[Line], list[dict[str, Any]]]:
    """(the lines, the errors: one per bad line, OpenAI's `{code, message, param, line}`).
    `serves(model) -> bool` says whether the key's namespace may use a model.
    Long because every check of a line (size, JSON, custom_id, duplicate, method, endpoint, body,
    model, stream) appends its own message naming the line and the fix; split apart, the checks
    would pass the same state back and forth."""
    errors: list[dict[str, Any]] = []

    def err(code: str, line: int | None, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "line": line, "message": message, "param": param})

    if len(data) > cfg.max_file_bytes:
        err(
            "file_too_large", None,
            f"The input file has {len(data)} bytes, over the limit of {cfg.max_file_bytes}; "
            "split it into several files and create one batch per file.",
        )  # fmt: skip
        return [], errors
    raw_lines = [ln.removesuffix(b"\r") for ln in data.split(b"\n")]
    while raw_lines and not raw_lines[-1].strip():
        raw_lines.pop()
    if not raw_lines:
        err("empty_file", None, "The input file has no lines; write one JSON request per line.")
        return [], errors
    if len(raw_lines) > cfg.max_lines:
        err(
            "too_many_lines", None,
            f"The input file has {len(raw_lines)} lines, over the limit of {cfg.max_lines}; "
            "split it into several files and create one batch per file.",
        )  # fmt: skip
        return [], errors
    names = ", ".join(sorted(models_hint)[:20]) or "none yet"
    seen: dict[str, int] = {}
    lines: list[Line] = []
    for n, raw in enumerate(raw_lines, start=1):
        if len(raw) > cfg.max_line_bytes:
            err(
                "line_too_large", n,
                f"Line {n} has {len(raw)} bytes, over the limit of {cfg.max_line_bytes} per "
                "line; shorten its prompt or send it as an interactive request.",
            )  # fmt: skip
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            err(
                "invalid_json", n,
                f"Line {n} is not valid JSON ({e}); write each request as one JSON object on "
                'one line: {"custom_id": "...", "method": "POST", "url": "' + endpoint
                + '", "body": {...}}.',
            )  # fmt: skip
            continue
        if not isinstance(obj, dict):
            err("invalid_request", n, f"Line {n} is not a JSON object; write one object a line.")
            continue
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            err(
                "missing_custom_id", n,
                f"Line {n} has no `custom_id`; give every line a unique string `custom_id` "
                "(it names the line's answer in the output file).",
                "custom_id",
            )  # fmt: skip
            continue
        if cid in seen:
            err(
                "duplicate_custom_id", n,
                f"Line {n} repeats the custom_id `{cid}` of line {seen[cid]}; make each "
                "custom_id unique in the file.",
                "custom_id",
            )  # fmt: skip
            continue
        seen[cid] = n
        method, url, body = obj.get("method", "POST"), obj.get("url"), obj.get("body")
        if str(method).upper() != "POST":
            err("invalid_method", n, f"Line {n} has method `{method}`; use POST.", "method")
            continue
        if url != endpoint:
            err(
                "mismatched_endpoint", n,
                f"Line {n} has url `{url}` but the batch's endpoint is `{endpoint}`; one batch "
                f"takes one endpoint: set `url` to `{endpoint}` or put the line in a batch of "
                "its own endpoint.",
                "url",
            )  # fmt: skip
            continue
        if not isinstance(body, dict):
            err("invalid_request", n, f"Line {n} has no `body` object; put the request there.",
                "body")  # fmt: skip
            continue
        model = body.get("model")
        if not isinstance(model, str) or not model:
            err("missing_model", n, f"Line {n}'s body has no `model`; name a model.", "body.model")
            continue
        if not serves(model):
            err(
                "model_not_found", n,
                f"Line {n} asks for model `{model}`, which namespace {namespace} (your key's) "
                f"does not serve; use one of: {names} (GET /v1/models lists them).",
                "body.model",
            )  # fmt: skip
            continue
        if body.get("stream") is True:
            body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        lines.append(Line(n, cid, model, body, _prompt_text(body)))
    return lines, errors


# ---------------------------------------------------------------------------------- store

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    final TEXT,
    obj TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    ok INTEGER,
    result TEXT,
    PRIMARY KEY (batch_id, line),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS requests_state ON requests (batch_id, state);
"""


class BatchStore:
    """Batches and their requests in SQLite (WAL: a killed process loses no committed row)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, stmts: Iterable[tuple[str, tuple[Any, ...]]]) -> int:
        changed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in stmts:
                    changed += self._db.execute(sql, args).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return changed

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def insert(self, namespace: str, key_id: str, obj: dict[str, Any]) -> None:
        self._tx([(
            "INSERT INTO batches (id, namespace, key_id, created_at, obj) VALUES (?, ?, ?, ?, ?)",
            (obj["id"], namespace, key_id, obj["created_at"], json.dumps(obj)),
        )])  # fmt: skip

    def get(self, batch_id: str) -> tuple[str, str, str | None, dict[str, Any]] | None:
        """(namespace, key id, final status, object)."""
        rows = self._query(
            "SELECT namespace, key_id, final, obj FROM batches WHERE id = ?", (batch_id,)
        )
        if not rows:
            return None
        ns, kid, final, obj = rows[0]
        return ns, kid, final, json.loads(obj)

    def put(self, obj: dict[str, Any], final: str | None = None, expect: str | None = None) -> bool:
        """Write the object; with `expect`, only while the stored status is still that."""
        sql = "UPDATE batches SET obj = ?, final = COALESCE(?, final) WHERE id = ?"
        args: tuple[Any, ...] = (json.dumps(obj), final, obj["id"])
        if expect is not None:
            sql += " AND json_extract(obj, '$.status') = ?"
            args += (expect,)
        return self._tx([(sql, args)]) == 1

    def listing(self, namespace: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT obj FROM batches WHERE namespace = ? ORDER BY created_at DESC, id DESC",
            (namespace,),
        )
        return [json.loads(r[0]) for r in rows]

    def active(self) -> list[str]:
        rows = self._query(
            "SELECT id FROM batches WHERE json_extract(obj, '$.status') IN (?, ?, ?, ?)"
            " ORDER BY created_at",
            ACTIVE,
        )
        return [r[0] for r in rows]

    def add_requests(self, obj: dict[str, Any], lines: list[Line]) -> bool:
        """Store the requests and move the batch to `in_progress` in one transaction (only
        from `validating`: a cancel in between wins)."""
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM requests WHERE batch_id = ?", (obj["id"],))
        ]
        stmts += [
            (
                "INSERT INTO requests (batch_id, line, custom_id, grp, body, state)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                (obj["id"], ln.index, ln.custom_id, ln.group, json.dumps(ln.body)),
            )
            for ln in lines
        ]
        stmts.append(
            (
                "UPDATE batches SET obj = ? WHERE id = ? AND json_extract(obj, '$.status') = ?",
                (json.dumps(obj), obj["id"], "validating"),
            )
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in stmts[:-1]:
                    self._db.execute(sql, args)
                if self._db.execute(*stmts[-1]).rowcount != 1:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def pending(self, batch_id: str) -> list[tuple[int, str, str]]:
        """(line, custom_id, body) of the requests not done, in prompt order."""
        return [
            (r[0], r[1], r[2])
            for r in self._query(
                "SELECT line, custom_id, body FROM requests WHERE batch_id = ? AND state = "
                "'pending' ORDER BY grp, line",
                (batch_id,),
            )
        ]

    def finish(self, batch_id: str, line: int, ok: bool, result: dict[str, Any]) -> bool:
        """Record one request's result; False when it was recorded already."""
        sql = (
            "UPDATE requests SET state = 'done', ok = ?, result = ? WHERE batch_id = ? AND "
            "line = ? AND state = 'pending'"
        )
        return self._tx([(sql, (int(ok), json.dumps(result), batch_id, line))]) == 1

    def finish_rest(self, batch_id: str, code: str, message: str) -> None:
        rows = self._query(
            "SELECT line, custom_id FROM requests WHERE batch_id = ? AND state = 'pending'",
            (batch_id,),
        )
        self._tx(
            (
                "UPDATE requests SET state = 'done', ok = 0, result = ? WHERE batch_id = ? AND "
                "line = ? AND state = 'pending'",
                (json.dumps(_error_line(cid, code, message)), batch_id, line),
            )
            for line, cid in rows
        )

    def counts(self, batch_id: str) -> dict[str, int]:
        rows = self._query(
            "SELECT COUNT(*), SUM(state = 'done' AND ok = 1), SUM(state = 'done' AND ok = 0)"
            " FROM requests WHERE batch_id = ?",
            (batch_id,),
        )
        total, completed, failed = rows[0]
        return {"total": total or 0, "completed": completed or 0, "failed": failed or 0}

    def results(self, batch_id: str) -> list[tuple[bool, str]]:
        return [
            (bool(r[0]), r[1])
            for r in self._query(
                "SELECT ok, result FROM requests WHERE batch_id = ? AND state = 'done' "
                "ORDER BY line",
                (batch_id,),
            )
        ]


def _error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "id": "batch_req_" + secrets.token_hex(12),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def new_batch(
    batch_id: str, input_file_id: str, endpoint: str, metadata: Any, now: int
) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": WINDOW,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + WINDOW_SECONDS,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
    }


# ---------------------------------------------------------------------------------- service


class _Capture:
    """An ASGI `send` that keeps the status and body of a non-streaming answer."""

    def __init__(self) -> None:
        self.status = 0
        self.chunks: list[bytes] = []

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()  # never: a batch request has no client to leave
        return {"type": "http.disconnect"}

    async def send(self, msg: Any) -> None:
        if msg["type"] == "http.response.start":
            self.status = msg["status"]
        elif msg["type"] == "http.response.body":
            self.chunks.append(msg.get("body", b""))


class BatchService:
    """The `/v1/files` and `/v1/batches` routes of a Gateway and the executor behind them."""

    prefixes = ("/v1/files", "/v1/batches")

    def __init__(self, gw: Gateway, data_dir: str | Path, cfg: BatchConfig | None = None) -> None:
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.gw = gw
        self.cfg = cfg or BatchConfig()
        self.files = FileStore(root / "files")
        self.store = BatchStore(root / "batches.sqlite")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._slots = asyncio.Semaphore(self.cfg.concurrency)
        #: batch requests in flight (held ones too) per (namespace, route name)
        self.busy: dict[tuple[str, str], int] = {}
        self._loop: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._tasks.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()

    async def _supervise(self) -> None:
        while True:
            try:
                if self.gw.state.synced:
                    for bid in self.store.active():
                        t = self._tasks.get(bid)
                        if t is None or t.done():
                            self._tasks[bid] = asyncio.create_task(self._drive(bid))
            except Exception as e:
                log.warning("batch supervisor: %s", e)
            await asyncio.sleep(self.cfg.poll_seconds)

    # ------------------------------------------------------------------ HTTP
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rec = self.gw._auth(scope)
        ns = rec.namespace
        method = scope["method"]
        parts = scope["path"].rstrip("/").split("/")[2:]  # ["files", id?, "content"?]
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        kind, rest = parts[0], parts[1:]
        if kind not in ("files", "batches"):
            raise HttpError(404, f"Unknown path {scope['path']}.", code="not_found")
        if kind == "files":
            if not rest and method == "POST":
                await _json(send, 200, await self._upload(scope, receive, ns))
            elif not rest and method == "GET":
                metas = await asyncio.to_thread(self.files.listing, ns, query.get("purpose"))
                data = [m.object() for m in metas]
                await _json(send, 200, _page(data, query))
            elif len(rest) == 1 and method == "GET":
                meta = await asyncio.to_thread(self.files.get, ns, rest[0])
                await _json(send, 200, self._need_file(meta, rest[0]).object())
            elif len(rest) == 1 and method == "DELETE":
                if not await asyncio.to_thread(self.files.delete, ns, rest[0]):
                    self._need_file(None, rest[0])
                await _json(send, 200, {"id": rest[0], "object": "file", "deleted": True})
            elif len(rest) == 2 and rest[1] == "content" and method == "GET":
                content = await asyncio.to_thread(self.files.content, ns, rest[0])
                if content is None:
                    self._need_file(None, rest[0])
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")],
                    }
                )
                await send({"type": "http.response.body", "body": content})
            else:
                raise HttpError(405, f"{method} {scope['path']} is not part of the Files API.")
            return
        if not rest and method == "POST":
            await _json(send, 200, await self._create(rec, receive))
        elif not rest and method == "GET":
            data = [self._view(o) for o in self.store.listing(ns)]
            await _json(send, 200, _page(data, query))
        elif len(rest) == 1 and method == "GET":
            await _json(send, 200, self._view(self._batch(ns, rest[0])))
        elif len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            await _json(send, 200, self._cancel(ns, rest[0]))
        else:
            raise HttpError(405, f"{method} {scope['path']} is not part of the Batch API.")

    def _need_file(self, meta: StoredFile | None, file_id: str) -> StoredFile:
        if meta is None:
            raise HttpError(
                404,
                f"No file `{file_id}` in your key's namespace; GET /v1/files lists yours.",
                code="file_not_found",
            )
        return meta

    async def _upload(self, scope: Scope, receive: Receive, ns: str) -> dict[str, Any]:
        raw = await _read_limited(receive, self.cfg.max_file_bytes + 64 * 1024)
        try:
            parts = multipart(_header(scope, b"content-type") or "", raw)
        except ValueError as e:
            raise HttpError(400, f"Cannot read the upload: {e}.") from None
        purpose = parts.get("purpose", (None, b""))[1].decode(errors="replace").strip()
        if purpose not in PURPOSES - {"batch_output"}:
            raise HttpError(
                400, f"`purpose` is `{purpose}`; upload batch input with purpose=batch.",
                param="purpose",
            )  # fmt: skip
        if "file" not in parts:
            raise HttpError(400, "The upload has no `file` part; send the JSONL as `file`.",
                            param="file")  # fmt: skip
        filename, data = parts["file"]
        meta = await asyncio.to_thread(self.files.put, ns, filename or "input.jsonl", purpose, data)
        return meta.object()

    async def _create(self, rec: keymod.KeyRecord, receive: Receive) -> dict[str, Any]:
        try:
            body = json.loads(await _read_body(receive))
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"The request body is not valid JSON: {e}.") from None
        if not isinstance(body, dict):
            raise HttpError(400, "The request body must be a JSON object.")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise HttpError(
                400, f"`endpoint` is {endpoint!r}; use one of {', '.join(ENDPOINTS)}.",
                param="endpoint",
            )  # fmt: skip
        if body.get("completion_window") != WINDOW:
            raise HttpError(
                400,
                f"`completion_window` is {body.get('completion_window')!r}; the only window "
                f"is `{WINDOW}`.",
                param="completion_window",
            )
        fid = body.get("input_file_id")
        meta = await asyncio.to_thread(self.files.get, rec.namespace, str(fid))
        meta = self._need_file(meta, str(fid))
        if meta.purpose != "batch":
            raise HttpError(400, f"File `{fid}` has purpose `{meta.purpose}`; upload the input "
                            "with purpose=batch.", param="input_file_id")  # fmt: skip
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise HttpError(400, "`metadata` must be an object of strings.", param="metadata")
        obj = new_batch("batch_" + secrets.token_hex(12), meta.id, endpoint, metadata,
                        int(time.time()))  # fmt: skip
        self.store.insert(rec.namespace, rec.id, obj)
        self._tasks[obj["id"]] = asyncio.create_task(self._drive(obj["id"]))
        return obj

    def _batch(self, ns: str, batch_id: str) -> dict[str, Any]:
        got = self.store.get(batch_id)
        if got is None or got[0] != ns:
            raise HttpError(
                404,
                f"No batch `{batch_id}` in your key's namespace; GET /v1/batches lists yours.",
                code="batch_not_found",
            )
        return got[3]

    def _view(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["status"] in ("in_progress", "cancelling", "finalizing"):
            obj = {**obj, "request_counts": self.store.counts(obj["id"])}
        return obj

    def _cancel(self, ns: str, batch_id: str) -> dict[str, Any]:
        for _ in range(5):
            obj = self._batch(ns, batch_id)
            status = obj["status"]
            if status in ("cancelling", "cancelled"):
                return self._view(obj)
            if status not in ("validating", "in_progress"):
                raise HttpError(
                    409, f"Batch `{batch_id}` is {status}; only a validating or in_progress "
                    "batch can be cancelled.", code="batch_not_cancellable",
                )  # fmt: skip
            new = {**obj, "status": "cancelling", "cancelling_at": int(time.time())}
            if self.store.put(new, expect=status):
                if batch_id in self._wake:
                    self._wake[batch_id].set()
                return self._view(new)
        raise HttpError(409, f"Batch `{batch_id}` changed while cancelling; retry.")

    # ------------------------------------------------------------------ executor
    async def _drive(self, batch_id: str) -> None:
        try:
            while True:
                got = self.store.get(batch_id)
                if got is None:
                    return
                ns, kid, final, obj = got
                status = obj["status"]
                if status == "validating":
                    await self._validate(ns, obj)
                elif status == "in_progress":
                    await self._execute(ns, kid, obj)
                elif status in ("finalizing", "cancelling"):
                    await self._finalize(obj, final)
                else:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s", batch_id)
            await asyncio.sleep(self.cfg.poll_seconds)  # the supervisor starts it again

    async def _validate(self, ns: str, obj: dict[str, Any]) -> None:
        data = await asyncio.to_thread(self.files.content, ns, obj["input_file_id"])
        now = int(time.time())
        if data is None:
            errors = [{"code": "file_not_found", "line": None, "param": "input_file_id",
                       "message": f"The input file {obj['input_file_id']} was deleted before "
                       "the batch started; upload it again and create a new batch."}]  # fmt: skip
            lines: list[Line] = []
        else:
            table = self.gw.state.table
            lines, errors = validate(
                data, obj["endpoint"], lambda m: table.lookup(ns, m) is not None,
                table.names(ns), ns, self.cfg,
            )  # fmt: skip
        if errors:
            new = {**obj, "status": "failed", "failed_at": now,
                   "errors": {"object": "list", "data": errors}}  # fmt: skip
            self.store.put(new, expect="validating")
            log.info("batch %s failed validation: %d error(s)", obj["id"], len(errors))
            return
        counts = {"total": len(lines), "completed": 0, "failed": 0}
        new = {**obj, "status": "in_progress", "in_progress_at": now, "request_counts": counts}
        self.store.add_requests(new, lines)

    async def _execute(self, ns: str, kid: str, obj: dict[str, Any]) -> None:
        bid = obj["id"]
        wake = self._wake.setdefault(bid, asyncio.Event())
        queue: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
        for item in self.store.pending(bid):
            queue.put_nowait(item)
        stop = asyncio.Event()

        def current() -> str:
            got = self.store.get(bid)
            return got[3]["status"] if got else "gone"

        async def worker() -> None:
            while not stop.is_set():
                try:
                    line, cid, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self._run(ns, kid, obj, line, cid, body, stop)

        async def watch() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                wake.clear()
                if current() != "in_progress" or time.time() >= obj["expires_at"]:
                    stop.set()

        watcher = asyncio.create_task(watch())
        workers = [asyncio.create_task(worker()) for _ in range(self.cfg.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            stop.set()
            watcher.cancel()
            for w in workers:
                w.cancel()
            await asyncio.gather(watcher, *workers, return_exceptions=True)
        now = int(time.time())
        if current() != "in_progress":
            return  # cancelling: _drive finalizes
        final = None
        if now >= obj["expires_at"] and self.store.pending(bid):
            self.store.finish_rest(bid, "batch_expired",
                                   "The batch's 24h window ended before this request ran.")  # fmt: skip
            final = "expired"
        got = self.store.get(bid)
        assert got is not None
        new = {**got[3], "status": "finalizing", "finalizing_at": now}
        self.store.put(new, final=final or "completed", expect="in_progress")

    async def _run(
        self,
        ns: str,
        kid: str,
        obj: dict[str, Any],
        line: int,
        cid: str,
        body: str,
        stop: asyncio.Event,
    ) -> None:
        bid, path = obj["id"], obj["endpoint"]
        model = json.loads(body).get("model", "")
        rec = self.gw.state.keys.get(kid) or keymod.KeyRecord(kid, ns, "", "")
        last = ""
        for attempt in range(self.cfg.attempts):
            route = self.gw.state.table.lookup(ns, model)
            if route is None:
                self.store.finish(bid, line, False, _error_line(
                    cid, "model_not_found",
                    f"The model `{model}` is no longer served in namespace {ns}.",
                ))  # fmt: skip
                return
            async with self._slots:
                if not await self._spare(route, stop):
                    return  # cancelled or expired while waiting: stays pending
                key = (route.namespace, route.name)
                self.busy[key] = self.busy.get(key, 0) + 1
                try:
                    rid = f"{bid}_{line}"  # the same on a re-run: billed once
                    status, data = await self._call(route, rec, path, body.encode(), rid)
                finally:
                    self.busy[key] -= 1
            if status in (502, 503):
                last = data.decode(errors="replace")[:500]
                await asyncio.sleep(min(2.0**attempt, 30.0))
                continue
            try:
                answer: Any = json.loads(data)
            except ValueError:
                answer = {"raw": data.decode(errors="replace")[:2000]}
            result = {
                "id": "batch_req_" + secrets.token_hex(12),
                "custom_id": cid,
                "response": {
                    "status_code": status,
                    "request_id": "req_" + secrets.token_hex(12),
                    "body": answer,
                },
                "error": None,
            }
            self.store.finish(bid, line, status == 200, result)
            return
        self.store.finish(bid, line, False, _error_line(
            cid, "upstream_unavailable",
            f"No replica of `{model}` took the request in {self.cfg.attempts} attempts: {last}",
        ))  # fmt: skip

    async def _spare(self, route: Route, stop: asyncio.Event) -> bool:
        """Wait until the route has a slot no interactive request uses (False: stopped)."""
        key = (route.namespace, route.name)
        while not stop.is_set():
            route = self.gw.state.table.lookup(*key) or route
            eps = self.gw.state.table.ready(route)
            mine = self.busy.get(key, 0)
            if not eps:
                if mine == 0:  # one request held: the demand that scales from zero
                    return True
            else:
                total = sum(self.gw.state.outstanding.get(e, 0) for e in eps)
                interactive = max(0, total - mine)
                if mine < len(eps) * self.cfg.slots_per_replica - interactive:
                    return True
            await asyncio.sleep(0.02)
        return False

    async def _call(
        self, route: Route, rec: keymod.KeyRecord, path: str, raw: bytes, rid: str
    ) -> tuple[int, bytes]:
        failed: set[str] = set()
        for _ in range(3):
            cap = _Capture()
            try:
                eps = await self.gw._wait_ready(route, failed)
                status = await self.gw._forward(
                    route, rec, eps, path, raw, "application/json", False, False,
                    cap.receive, cap.send, rid,
                )  # fmt: skip
                return status, b"".join(cap.chunks)
            except UnavailableError as e:
                failed.update(e.tried)
                await self.gw._next_refresh()
            except HttpError as e:
                return e.status, json.dumps(e.body()).encode()
        return 503, b'{"error": {"message": "no replica took the request"}}'

    async def _finalize(self, obj: dict[str, Any], final: str | None) -> None:
        bid = obj["id"]
        cancelling = obj["status"] == "cancelling"
        if cancelling:
            await self._drained(bid)
        got = self.store.get(bid)
        assert got is not None
        ns, obj = got[0], got[3]
        results = self.store.results(bid)
        out = b"".join(r.encode() + b"\n" for ok, r in results if ok)
        err = b"".join(r.encode() + b"\n" for ok, r in results if not ok)
        stem = bid.removeprefix("batch_")
        new = dict(obj)
        if out:
            m = await asyncio.to_thread(self.files.put, ns, f"{bid}_output.jsonl",
                                        "batch_output", out, f"file-{stem}-output")  # fmt: skip
            new["output_file_id"] = m.id
        if err:
            m = await asyncio.to_thread(self.files.put, ns, f"{bid}_error.jsonl",
                                        "batch_output", err, f"file-{stem}-errors")  # fmt: skip
            new["error_file_id"] = m.id
        now = int(time.time())
        status = "cancelled" if cancelling else (final or "completed")
        new["status"] = status
        new[f"{status}_at"] = now
        new["request_counts"] = self.store.counts(bid)
        self.store.put(new, expect=obj["status"])
        self._wake.pop(bid, None)
        log.info("batch %s %s: %s", bid, status, new["request_counts"])

    async def _drained(self, bid: str) -> None:
        """Wait for this batch's executor task to stop its requests in flight."""
        task = self._tasks.get(bid)
        me = asyncio.current_task()
        if task is not None and task is not me and not task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _page(data: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    after = query.get("after")
    if after:
        ids = [d["id"] for d in data]
        data = data[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = max(1, min(int(query.get("limit", "20")), 10_000))
    except ValueError:
        limit = 20
    page = data[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(data) > limit,
    }


async def _read_limited(receive: Receive, limit: int) -> bytes:
    return await _read_body(receive, limit, f"The upload exceeds {limit} bytes; split the file.")
