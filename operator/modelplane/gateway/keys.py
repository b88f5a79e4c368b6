"""API keys: a key belongs to one namespace (the tenant) and is never stored in plain text.

A key is `mpk_<id>_<secret>` (id: 12 hex characters, secret: 32 random bytes, urlsafe). The
tenant namespace holds a ConfigMap `modelplane-key-<id>` labelled `modelplane.io/api-key=<id>`
with only `salt` and `sha256` (hex of sha256(salt || key)) and optionally `expires` (RFC 3339
UTC). The gateway therefore needs no access to Secrets (RBAC cannot limit Secret reads by
label), and a leaked ConfigMap does not leak a key: the secret part has 256 bits, so a salted
SHA-256 is as good as a slow hash here. `modelplane keys create` writes the ConfigMap and prints
the key once; revoking is deleting the ConfigMap (the gateway's next refresh drops it).
Keys are never logged: only their id.
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

LABEL_API_KEY = "modelplane.io/api-key"
PREFIX = "mpk_"
_KEY = re.compile(r"^mpk_([0-9a-f]{12})_([A-Za-z0-9_\-]{20,})$")


@dataclass(frozen=True)
class KeyRecord:
    id: str
    namespace: str
    salt: str
    digest: str
    expires: float | None = None


def digest(salt: str, key: str) -> str:
    return hashlib.sha256((salt + key).encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key)."""
    kid = secrets.token_hex(6)
    return kid, f"{PREFIX}{kid}_{secrets.token_urlsafe(32)}"


def config_map(namespace: str, key: str, kid: str, expires: str | None = None) -> dict[str, Any]:
    """The ConfigMap that lets the gateway recognise `key` (salted hash only)."""
    salt = secrets.token_hex(16)
    data = {"salt": salt, "sha256": digest(salt, key)}
    if expires:
        data["expires"] = expires
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"modelplane-key-{kid}",
            "namespace": namespace,
            "labels": {LABEL_API_KEY: kid, "app.kubernetes.io/managed-by": "modelplane"},
        },
        "data": data,
    }


def _time(value: str) -> float | None:
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def records(config_maps: Iterable[Mapping[str, Any]]) -> dict[str, KeyRecord]:
    """Key id -> record, from ConfigMaps (plain dicts). Malformed ones are skipped; a key id
    claimed by two ConfigMaps is refused in both (ids are random: a copy is a mistake)."""
    out: dict[str, KeyRecord] = {}
    clash: set[str] = set()
    for cm in config_maps:
        meta, data = cm.get("metadata") or {}, cm.get("data") or {}
        kid = (meta.get("labels") or {}).get(LABEL_API_KEY, "")
        if not re.fullmatch(r"[0-9a-f]{12}", kid) or not data.get("salt") or not data.get("sha256"):
            continue
        expires = _time(data["expires"]) if data.get("expires") else None
        if kid in out:
            clash.add(kid)
        out[kid] = KeyRecord(
            kid, meta.get("namespace") or "", data["salt"], data["sha256"], expires
        )
    for kid in clash:
        del out[kid]
    return out


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


def create(api: Any, namespace: str, expires: str | None = None) -> tuple[str, str]:
    """Create a key for `namespace` (its hash ConfigMap); returns (id, key). `api`: a
    kubernetes ApiClient."""
    from kubernetes import client

    kid, key = new_key()
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace, config_map(namespace, key, kid, expires)
    )
    return kid, key
