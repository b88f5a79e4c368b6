"""The gateway's file store for the Batch API: `/v1/files` objects in OpenAI's shape.

Files belong to the namespace of the key that uploaded them; another namespace's key sees a
404. By default they live in a directory (the gateway's volume): `<root>/<id>` holds the bytes
and `<root>/<id>.json` the object, each written to a temporary name first and renamed, so a
crash leaves either the whole file or none. The methods block: call them in a thread.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ID_RE = re.compile(r"file-[0-9a-zA-Z_-]{1,64}")
PURPOSES = {"batch", "batch_output"}


def new_id() -> str:
    return "file-" + secrets.token_hex(12)


@dataclass(frozen=True)
class StoredFile:
    id: str
    namespace: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class FileStore:
    """Files in a directory (created when missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, file_id: str) -> Path:
        if not ID_RE.fullmatch(file_id):
            raise KeyError(file_id)
        return self.root / file_id

    def put(
        self,
        namespace: str,
        filename: str,
        purpose: str,
        data: bytes,
        file_id: str | None = None,
    ) -> StoredFile:
        """Store `data`; with `file_id`, under that id (replacing it: finalizing a batch twice
        after a crash writes the same output file again, not a second one)."""
        fid = file_id or new_id()
        path = self._path(fid)
        meta = StoredFile(fid, namespace, filename, purpose, len(data), int(time.time()))
        _write(path, data)
        _write(path.with_suffix(".json"), json.dumps(meta.__dict__).encode())
        return meta

    def get(self, namespace: str, file_id: str) -> StoredFile | None:
        try:
            raw = self._path(file_id).with_suffix(".json").read_bytes()
        except (KeyError, FileNotFoundError):
            return None
        meta = StoredFile(**json.loads(raw))
        return meta if meta.namespace == namespace else None

    def content(self, namespace: str, file_id: str) -> bytes | None:
        if self.get(namespace, file_id) is None:
            return None
        try:
            return self._path(file_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, namespace: str, file_id: str) -> bool:
        if self.get(namespace, file_id) is None:
            return False
        path = self._path(file_id)
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return True

    def listing(self, namespace: str, purpose: str | None = None) -> list[StoredFile]:
        out = []
        for p in self.root.glob("file-*.json"):
            try:
                meta = StoredFile(**json.loads(p.read_bytes()))
            except (OSError, ValueError, TypeError):
                continue
            if meta.namespace == namespace and (purpose is None or meta.purpose == purpose):
                out.append(meta)
        return sorted(out, key=lambda m: (-m.created_at, m.id))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def multipart(ctype: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename or None, bytes)."""
    kind, _, params = ctype.partition(";")
    boundary = ""
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if kind.strip().lower() != "multipart/form-data" or not boundary:
        raise ValueError(
            "send the file as multipart/form-data with a `file` part and a `purpose` field"
        )
    out: dict[str, tuple[str | None, bytes]] = {}
    delim = b"--" + boundary.encode()
    for part in raw.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = ""
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                disposition = line
        m = re.search(r'\bname="([^"]*)"', disposition)
        if not m:
            continue
        fn = re.search(r'\bfilename="([^"]*)"', disposition)
        out[m.group(1)] = (fn.group(1) if fn else None, value.removesuffix(b"\r\n"))
    return out
