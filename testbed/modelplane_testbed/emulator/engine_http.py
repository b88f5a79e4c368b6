"""The engines' own HTTP APIs, served at each pod's address (``podIP:<engine port>``).

One ``ThreadingHTTPServer`` per pod; ``PodServers.sync()`` starts and stops them to match
``Emulator.listeners()``. What each engine answers (vLLM 0.33, SGLang 0.5, TEI 1.9; see
/work/shared/notes/engines.md):

- vLLM: ``GET /health`` (200 once started, 503 before), ``/ping``, ``/version``,
  ``GET /v1/models`` (served names, then loaded adapters with ``parent``), ``GET /metrics``,
  ``POST /v1/chat/completions`` and ``/v1/completions`` (JSON or SSE with ``stream``; a final
  usage chunk with ``stream_options.include_usage``), ``POST /v1/embeddings`` (pooling runner
  only), ``POST /v1/audio/transcriptions`` (Whisper), and, only with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, ``POST /v1/load_lora_adapter`` and
  ``/v1/unload_lora_adapter`` (400 unless ``--enable-lora``). Errors use vLLM's
  ``{"error": {"message", "type", "param", "code"}}``; unknown routes FastAPI's
  ``{"detail": "Not Found"}``.
- SGLang: ``/health``, ``/health_generate``, ``/v1/models``, ``/get_model_info``,
  ``/get_server_info``, ``/metrics`` (only with ``--enable-metrics``), chat/completions,
  ``/v1/embeddings`` (``--is-embedding``), ``POST /load_lora_adapter`` and
  ``/unload_lora_adapter`` (``{"success", "error_message", "loaded_adapters"}``).
- TEI: ``/health``, ``/info``, ``/metrics``, ``POST /embed``, ``POST /v1/embeddings``.

Inference requests run on the pod's replica model: the answer comes when the modelled request
finishes (real time), tokens of a stream as they are modelled. Usage counts prompt tokens as
about one per four characters (plus a few per chat message) and completion tokens as
``max_tokens`` (``max_completion_tokens``), default 16.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import random
import re
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from modelplane_testbed.emulator.core import Emulator, EngineError, Key
from modelplane_testbed.emulator.pods import Engine, ServerSpec, catalog_model

__all__ = ["DEFAULT_MAX_TOKENS", "PodServers", "prompt_tokens"]

log = logging.getLogger("modelplane.emulator.http")

DEFAULT_MAX_TOKENS = 16
_WORDS = ("the", "model", "answers", "with", "emulated", "tokens", "for", "this", "request")


def prompt_tokens(text: str) -> int:
    """A rough token count: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _version(image: str, default: str) -> str:
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    return tag.lstrip("v") or default


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], emulator: Emulator, key: Key) -> None:
        self.emulator = emulator
        self.key = key
        super().__init__(addr, _Handler)


class _ReplyError(Exception):
    """Answer the request with this (status, body) and stop handling it."""

    def __init__(self, status: int, body: Any, content_type: str = "application/json") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


class _StreamedError(Exception):
    """The response was streamed already."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    @property
    def key(self) -> Key:
        return self.server.key

    def version_string(self) -> str:
        return "uvicorn"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s/%s: " + format, *self.key, *args)

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str) and content_type != "application/json":
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _raw_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self, spec: ServerSpec) -> dict[str, Any]:
        raw = self._raw_body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise _ReplyError(*self._error(spec, 400, f"body is not JSON: {e}")) from None
        if not isinstance(body, dict):
            raise _ReplyError(*self._error(spec, 400, "the body must be a JSON object"))
        return body

    @staticmethod
    def _error(
        spec: ServerSpec, status: int, message: str, kind: str = "BadRequestError"
    ) -> tuple[int, Any]:
        if spec.engine == Engine.VLLM:
            return status, {
                "error": {"message": message, "type": kind, "param": None, "code": status}
            }
        if spec.engine == Engine.SGLANG:
            return status, {
                "object": "error",
                "message": message,
                "type": kind,
                "param": None,
                "code": status,
            }
        return status, {"error": message, "error_type": kind}

    @staticmethod
    def _not_found(spec: ServerSpec) -> tuple[int, Any]:
        if spec.engine == Engine.TEI:
            return 404, b""
        return 404, {"detail": "Not Found"}

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            spec, up = self.emu.engine(*self.key)
        except EngineError:
            self._send(503, b"", "text/plain")
            return
        try:
            self._dispatch(method, path, spec, up)
        except _ReplyError as r:
            self._send(r.status, r.body, r.content_type)
        except _StreamedError:
            pass
        except EngineError as e:
            status, body = self._error(spec, e.status, str(e), e.kind)
            self._send(status, body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # report, keep serving
            log.exception("error serving %s %s on %s/%s", method, self.path, *self.key)
            status, body = self._error(spec, 500, str(e), "InternalServerError")
            with contextlib.suppress(OSError):
                self._send(status, body)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    # ------------------------------------------------------------------ routes
    def _dispatch(self, method: str, path: str, spec: ServerSpec, up: bool) -> None:
        health = {
            Engine.VLLM: ("/health", "/ping"),
            Engine.SGLANG: ("/health", "/health_generate"),
            Engine.TEI: ("/health", "/ping"),
        }[spec.engine]
        if path in health and method in ("GET", "POST"):
            if up:
                raise _ReplyError(200, b"", "text/plain")
            if spec.engine == Engine.TEI:
                raise _ReplyError(503, {"error": "unhealthy", "error_type": "unhealthy"})
            raise _ReplyError(503, b"", "text/plain")
        if not up:
            # The server answers, but the engine is still loading.
            raise _ReplyError(
                *self._error(spec, 503, "The server is starting", "ServiceUnavailable")
            )
        auth = self.headers.get("Authorization")
        if spec.api_key and path.startswith("/v1") and auth != f"Bearer {spec.api_key}":
            raise _ReplyError(401, {"error": "Unauthorized"})
        if spec.engine == Engine.TEI:
            self._tei(method, path, spec)
        else:
            self._openai(method, path, spec)
        raise _ReplyError(*self._not_found(spec))

    def _openai(self, method: str, path: str, spec: ServerSpec) -> None:
        vllm = spec.engine == Engine.VLLM
        if method == "GET":
            if path == "/metrics":
                if not spec.metrics:
                    raise _ReplyError(*self._not_found(spec))
                text = self.emu.metrics_text(self.key)
                raise _ReplyError(200, text, "text/plain; version=0.0.4; charset=utf-8")
            if path == "/v1/models":
                raise _ReplyError(200, self._models(spec))
            if vllm and path == "/version":
                raise _ReplyError(200, {"version": _version(spec.image, "0.33.0")})
            if not vllm and path == "/get_model_info":
                raise _ReplyError(
                    200,
                    {
                        "model_path": spec.model,
                        "tokenizer_path": spec.model,
                        "is_generation": not spec.embedding,
                    },
                )
            if not vllm and path == "/get_server_info":
                raise _ReplyError(
                    200,
                    {
                        "served_model_name": spec.base_name,
                        "model_path": spec.model,
                        "version": _version(spec.image, "0.5.23"),
                    },
                )
            return
        if path == "/v1/chat/completions":
            self._generate(spec, chat=True)
        if path == "/v1/completions":
            self._generate(spec, chat=False)
        if path == "/v1/embeddings":
            if not spec.embedding:
                raise _ReplyError(
                    *self._error(spec, 400, "The model does not support Embeddings API")
                )
            self._embeddings(spec, self._json_body(spec), tei=False)
        if vllm and path == "/v1/audio/transcriptions":
            if not spec.transcription:
                raise _ReplyError(
                    *self._error(spec, 400, "The model does not support Transcriptions API")
                )
            self._transcribe(spec)
        lora_paths = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
        if not vllm:
            lora_paths = ("/load_lora_adapter", "/unload_lora_adapter")
        if path in lora_paths:
            if not spec.runtime_lora and vllm:
                # Without VLLM_ALLOW_RUNTIME_LORA_UPDATING the routes do not exist.
                raise _ReplyError(*self._not_found(spec))
            self._lora(spec, load=path == lora_paths[0])

    def _tei(self, method: str, path: str, spec: ServerSpec) -> None:
        if method == "GET" and path == "/metrics":
            raise _ReplyError(200, self.emu.metrics_text(self.key), "text/plain; version=0.0.4")
        if method == "GET" and path == "/info":
            raise _ReplyError(
                200,
                {
                    "model_id": spec.model,
                    "model_type": {"embedding": {"pooling": spec.args.value("--pooling", "cls")}},
                    "max_client_batch_size": 32,
                    "max_batch_tokens": 16384,
                    "version": _version(spec.image, "1.9.3"),
                },
            )
        if method == "POST" and path in ("/embed", "/v1/embeddings"):
            try:
                self._embeddings(spec, self._json_body(spec), tei=path == "/embed")
            except _ReplyError as r:
                self.emu.record_request(self.key, ok=r.status == 200)
                raise

    def _models(self, spec: ServerSpec) -> dict[str, Any]:
        created = int(time.time())
        owner = "vllm" if spec.engine == Engine.VLLM else "sglang"
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": owner,
                    "root": root,
                    "parent": parent,
                    "max_model_len": spec.max_model_len,
                    "permission": [],
                }
                for name, root, parent in self.emu.models(self.key)
            ],
        }

    # ------------------------------------------------------------------ inference
    def _check_model(self, spec: ServerSpec, body: Mapping[str, Any]) -> str:
        requested = body.get("model")
        if requested is not None and not isinstance(requested, str):
            raise _ReplyError(*self._error(spec, 400, "model must be a string"))
        self.emu.served_model(self.key, requested)  # 404 for an unknown name
        return requested or spec.base_name

    def _run(self, prompt: int, output: int) -> Iterator[int]:
        """Run one request on the replica; yields the token count as it grows (ends finished)."""
        req = self.emu.admit(self.key, prompt, output)
        seen = -1
        while True:
            done, finished = self.emu.progress(self.key, req)
            if done != seen:
                seen = done
                yield done
            if finished:
                return
            time.sleep(0.005 if done == 0 else 0.01)

    def _generate(self, spec: ServerSpec, *, chat: bool) -> None:
        if spec.embedding or spec.transcription:
            api = "Chat Completions" if chat else "Completions"
            raise _ReplyError(*self._error(spec, 400, f"The model does not support {api} API"))
        body = self._json_body(spec)
        model = self._check_model(spec, body)
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _ReplyError(*self._error(spec, 400, "messages must be a non-empty list"))
            text = " ".join(
                _content_text(m.get("content")) for m in messages if isinstance(m, Mapping)
            )
            prompt = prompt_tokens(text) + 4 * len(messages)
        else:
            p = body.get("prompt")
            if isinstance(p, list) and p and all(isinstance(t, int) for t in p):
                prompt = len(p)
            elif isinstance(p, list):
                prompt = sum(prompt_tokens(str(x)) for x in p)
            elif isinstance(p, str):
                prompt = prompt_tokens(p)
            else:
                raise _ReplyError(*self._error(spec, 400, "prompt must be a string or a list"))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is None:
            limit = DEFAULT_MAX_TOKENS
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _ReplyError(
                *self._error(spec, 400, f"max_tokens must be at least 1, got {limit!r}")
            )
        if spec.max_model_len and prompt + limit > spec.max_model_len:
            raise _ReplyError(
                *self._error(
                    spec,
                    400,
                    f"This model's maximum context length is {spec.max_model_len} tokens. "
                    f"However, you requested {prompt + limit} tokens ({prompt} in the messages, "
                    f"{limit} in the completion). Please reduce the length of the messages or "
                    "completion.",
                )
            )
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt,
            "total_tokens": prompt + limit,
            "completion_tokens": limit,
        }
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            self._stream(spec, rid, created, model, chat, prompt, limit, usage, opts)
            raise _StreamedError
        for _ in self._run(prompt, limit):
            pass
        text_out = " ".join(_WORDS[i % len(_WORDS)] for i in range(limit))
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "length"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text_out, "tool_calls": []}
        else:
            choice["text"] = text_out
        choice["stop_reason"] = None
        raise _ReplyError(
            200,
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            },
        )

    def _stream(
        self,
        spec: ServerSpec,
        rid: str,
        created: int,
        model: str,
        chat: bool,
        prompt: int,
        limit: int,
        usage: dict[str, int],
        opts: Mapping[str, Any],
    ) -> None:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, role: bool = False) -> bytes:
            c: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
            if chat:
                d: dict[str, Any] = {"role": "assistant"} if role else {}
                if delta is not None:
                    d["content"] = delta
                c["delta"] = d
            else:
                c["text"] = delta or ""
            data = {"id": rid, "object": kind, "created": created, "model": model, "choices": [c]}
            return f"data: {json.dumps(data)}\n\n".encode()

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        for done in self._run(prompt, limit):
            if done == 0:
                continue
            if sent == 0 and chat:
                self.wfile.write(chunk("", None, role=True))
            while sent < done:
                word = ("" if sent == 0 else " ") + _WORDS[sent % len(_WORDS)]
                sent += 1
                self.wfile.write(chunk(word, "length" if sent == limit else None))
            self.wfile.flush()
        if opts.get("include_usage"):
            final = {
                "id": rid,
                "object": kind,
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _embeddings(self, spec: ServerSpec, body: Mapping[str, Any], *, tei: bool) -> None:
        raw = body.get("inputs") if tei and "inputs" in body else body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = [str(x) for x in raw]
        else:
            if tei:
                raise _ReplyError(
                    400,
                    {
                        "error": "`inputs` must be a string or a list of strings",
                        "error_type": "Validation",
                    },
                )
            raise _ReplyError(
                *self._error(spec, 400, "input must be a string or a list of strings")
            )
        # TEI serves one model whatever the request names.
        tei_engine = spec.engine == Engine.TEI
        model = spec.base_name if tei_engine else self._check_model(spec, body)
        tokens = [prompt_tokens(x) for x in inputs]
        runs = [self._run(n, 1) for n in tokens]
        for run in runs:
            for _ in run:
                pass
        cat = catalog_model(spec.hf_id)
        dim = min(cat.arch.hidden_size, 4096) if cat else 768
        vectors = [_vector(x, dim) for x in inputs]
        if tei and "inputs" in body:
            raise _ReplyError(200, vectors)
        b64 = body.get("encoding_format") == "base64"
        data = [
            {
                "index": i,
                "object": "embedding",
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                if b64
                else v,
            }
            for i, v in enumerate(vectors)
        ]
        total = sum(tokens)
        out: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
        if not tei:
            out["id"] = "embd-" + uuid.uuid4().hex
            out["created"] = int(time.time())
            out["usage"]["completion_tokens"] = 0
        raise _ReplyError(200, out)

    def _transcribe(self, spec: ServerSpec) -> None:
        raw = self._raw_body()
        # Multipart, read loosely: the `model` field if present; the file's size as audio.
        m = re.search(rb'name="model"\r\n\r\n([^\r\n]*)\r\n', raw)
        requested = m.group(1).decode(errors="replace") if m else None
        self._check_model(spec, {"model": requested} if requested else {})
        seconds = max(1.0, len(raw) / 32000.0)  # 16 kHz, 16-bit mono
        output = min(64, max(1, int(seconds * 3)))
        for _ in self._run(300, output):
            pass
        text = " ".join(_WORDS[i % len(_WORDS)] for i in range(output))
        raise _ReplyError(
            200, {"text": text, "usage": {"type": "duration", "seconds": math.ceil(seconds)}}
        )

    def _lora(self, spec: ServerSpec, *, load: bool) -> None:
        body = self._json_body(spec)
        if spec.engine == Engine.SGLANG:
            try:
                if load:
                    self.emu.load_lora(self.key, body)
                else:
                    self.emu.unload_lora(self.key, body)
            except EngineError as e:
                raise _ReplyError(400, {"success": False, "error_message": str(e)}) from None
            adapters = self.emu.adapters(self.key)
            raise _ReplyError(
                200, {"success": True, "error_message": None, "loaded_adapters": adapters}
            )
        if load:
            name = self.emu.load_lora(self.key, body)
            raise _ReplyError(
                200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain"
            )
        name = self.emu.unload_lora(self.key, body)
        raise _ReplyError(
            200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain"
        )


def _vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


# --------------------------------------------------------------------------- the servers
class PodServers:
    """One HTTP server per emulated engine, bound to the pod's IP and the engine's port."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._lock = threading.Lock()
        self._servers: dict[Key, tuple[tuple[str, int], _Server]] = {}
        self.errors: dict[Key, str] = {}

    def sync(self) -> None:
        """Start servers for new engines, stop those of pods that are gone or moved."""
        wanted = self.emulator.listeners()
        with self._lock:
            for key, (addr, server) in list(self._servers.items()):
                if wanted.get(key) != addr:
                    del self._servers[key]
                    self._stop(server)
                    log.info("stopped the engine of %s/%s at %s:%s", *key, *addr)
            for key, addr in wanted.items():
                if key in self._servers:
                    continue
                try:
                    server = _Server(addr, self.emulator, key)
                except OSError as e:
                    msg = f"cannot listen on {addr[0]}:{addr[1]}: {e}"
                    if self.errors.get(key) != msg:
                        log.warning("pod %s/%s: %s", *key, msg)
                    self.errors[key] = msg
                    continue
                self.errors.pop(key, None)
                threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.1},
                    name=f"engine-{key[0]}/{key[1]}",
                    daemon=True,
                ).start()
                self._servers[key] = (addr, server)
                log.info("engine of %s/%s listens on %s:%s", *key, *addr)
            for key in list(self.errors):
                if key not in wanted:
                    del self.errors[key]

    @staticmethod
    def _stop(server: _Server) -> None:
        server.shutdown()
        server.server_close()

    def addresses(self) -> dict[Key, tuple[str, int]]:
        with self._lock:
            return {k: addr for k, (addr, _) in self._servers.items()}

    def close(self) -> None:
        with self._lock:
            servers = [s for _, s in self._servers.values()]
            self._servers.clear()
        for s in servers:
            self._stop(s)
