"""ApiKey (modelplane.io/v1alpha1, namespaced): one API key of the gateway, as a salted hash.

The namespace of the object is the tenant: the key reaches the ModelDeployments of that
namespace only. The object never holds the key: `modelplane keys create -n <ns>` makes a key
`mpk_<id>_<secret>` (id: 12 hex characters, secret: 32 random bytes), prints it once and stores
`ApiKey mpk-<id>` with `salt` and `sha256` = hex(sha256(salt || key)). Revoking is deleting the
object. With 256 random bits in the secret a salted SHA-256 is as strong as a slow hash, and the
gateway reads ApiKeys rather than Secrets (RBAC cannot limit Secret reads by label).
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from modelplane.api.v1alpha1 import Model, cel, k8s

KIND = "ApiKey"
PLURAL = "apikeys"
NAME_PREFIX = "mpk-"
SPEC_RULES = k8s(
    cel(
        "self == oldSelf",
        "an ApiKey is immutable: create a new key (modelplane keys create) and delete this one",
    )
)


class ApiKeyLimits(Model):
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per minute (then 429 with Retry-After)."
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Prompt + completion tokens per minute: reserved from max_tokens when a "
        "request starts, charged from the answer's usage.",
    )


class ApiKeySpec(Model):
    model_config = ConfigDict(json_schema_extra=SPEC_RULES)

    salt: str = Field(
        max_length=32, pattern=r"^[0-9a-f]{32}$", description="Random salt, 32 hex characters."
    )
    sha256: str = Field(
        max_length=64,
        pattern=r"^[0-9a-f]{64}$",
        description="hex(sha256(salt || key)): the key itself is never stored.",
    )
    expires: str | None = Field(
        default=None,
        max_length=64,
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 time after which the gateway refuses the key; unset: never.",
    )
    description: str | None = Field(
        default=None, max_length=256, description="What the key is for (who holds it)."
    )
    limits: ApiKeyLimits | None = Field(
        default=None, description="Per-key rate limits at the gateway; unset: none."
    )
