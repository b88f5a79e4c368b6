"""API keys: a key belongs to one namespace (the tenant) and is never stored in plain text.

A key is `mpk_<id>_<secret>` (id: 12 hex characters, secret: 32 random bytes, urlsafe). The
tenant namespace holds `ApiKey mpk-<id>` (`api/apikey.py`) with only `salt` and `sha256`
(hex of sha256(salt || key)) and optionally `expires`. The gateway therefore needs no access to
Secrets or ConfigMaps (RBAC cannot limit reads by label), and a leaked ApiKey does not leak a
key: the secret part has 256 bits, so a salted SHA-256 is as good as a slow hash here.
`modelplane keys create` writes the ApiKey and prints the key once; revoking is deleting the
ApiKey (the gateway's next refresh, within seconds, drops it). Keys are never logged: only ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.api.apikey import KIND, NAME_PREFIX, PLURAL
from modelplane.api.v1alpha1 import API_VERSION, GROUP, VERSION

PREFIX = "mpk_"
_KEY = re.compile(r"^mpk_([0-9a-f]{12})_([A-Za-z0-9_\-]{20,})$")


@dataclass(frozen=True)
class KeyRecord:
    id: str
    namespace: str
    salt: str
    digest: str
    expires: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


def digest(salt: str, key: str) -> str:
    return hashlib.sha256((salt + key).encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key)."""
    kid = secrets.token_hex(6)
    return kid, f"{PREFIX}{kid}_{secrets.token_urlsafe(32)}"


def api_key(
    namespace: str,
    key: str,
    kid: str,
    expires: str | None = None,
    description: str | None = None,
    limits: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ApiKey that lets the gateway recognise `key` (salted hash only). `limits`:
    `requestsPerMinute` / `tokensPerMinute`."""
    salt = secrets.token_hex(16)
    spec: dict[str, Any] = {"salt": salt, "sha256": digest(salt, key)}
    if limits:
        spec["limits"] = dict(limits)
    if expires:
        spec["expires"] = expires
    if description:
        spec["description"] = description
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": f"{NAME_PREFIX}{kid}",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "modelplane"},
        },
        "spec": spec,
    }


def _time(value: str) -> float | None:
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def records(objects: Iterable[Mapping[str, Any]]) -> dict[str, KeyRecord]:
    """Key id -> record, from ApiKey objects (plain dicts). Malformed ones are skipped; a key id
    present in two namespaces is refused in both (ids are random: a copy is a mistake)."""
    out: dict[str, KeyRecord] = {}
    clash: set[str] = set()
    for obj in objects:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        kid = str(meta.get("name") or "").removeprefix(NAME_PREFIX)
        if not re.fullmatch(r"[0-9a-f]{12}", kid) or not spec.get("salt") or not spec.get("sha256"):
            continue
        expires = _time(spec["expires"]) if spec.get("expires") else None
        if kid in out:
            clash.add(kid)
        limits = spec.get("limits") or {}
        out[kid] = KeyRecord(
            kid,
            meta.get("namespace") or "",
            spec["salt"],
            spec["sha256"],
            expires,
            _positive(limits.get("requestsPerMinute")),
            _positive(limits.get("tokensPerMinute")),
        )
    for kid in clash:
        del out[kid]
    return out


def _positive(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def key_id(key: str) -> str | None:
    m = _KEY.match(key)
    return m.group(1) if m else None


def verify(key: str, table: Mapping[str, KeyRecord], now: float) -> KeyRecord | None:
    """The record `key` matches (constant-time compare), or None (unknown, wrong, expired)."""
    kid = key_id(key)
    rec = table.get(kid) if kid else None
    if rec is None or not hmac.compare_digest(digest(rec.salt, key), rec.digest):
        return None
    if rec.expires is not None and now >= rec.expires:
        return None
    return rec


def create(
    api: Any,
    namespace: str,
    expires: str | None = None,
    description: str | None = None,
    limits: Mapping[str, int] | None = None,
) -> tuple[str, str]:
    """Create a key for `namespace` (its ApiKey); returns (id, key). `api`: a kubernetes
    ApiClient."""
    from kubernetes import client

    kid, key = new_key()
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        api_key(namespace, key, kid, expires, description, limits),
    )
    return kid, key
