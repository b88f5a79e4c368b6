"""Operator settings: one typed, documented field per setting, read from MODELPLANE_* env vars.

The Helm chart sets these from its values (capacityProvider -> MODELPLANE_CAPACITY_PROVIDER, ...).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelplane.api.enums import CapacityProvider


def comma_list(v: object) -> object:
    """An environment variable's `a, b,c` as `["a", "b", "c"]`; anything else unchanged."""
    if isinstance(v, str):
        return [n.strip() for n in v.split(",") if n.strip()]
    return v


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPLANE_", extra="ignore", frozen=True)

    capacity_provider: CapacityProvider = Field(
        default=CapacityProvider.STATIC,
        description="How GPU capacity is obtained: karpenter (emit NodePools) or static "
        "(pre-provisioned node groups or a cluster autoscaler; only reported).",
    )
    resync_interval_seconds: float = Field(
        default=60.0, gt=0, description="Period of the level-based resync of every ModelDeployment."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch (comma-separated in the env var); empty: cluster-wide.",
    )
    operator_namespace: str = Field(
        default="modelplane-system",
        description="Where platform-owned objects live (shared Serverless backends).",
    )
    metrics_port: int = Field(
        default=8080, ge=0, le=65535, description="Prometheus /metrics; 0: off."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the metrics server binds (0.0.0.0 in a pod)."
    )
    health_port: int = Field(
        default=8081, ge=0, le=65535, description="kopf liveness /healthz; 0: off."
    )
    health_host: str = Field(
        default="127.0.0.1", description="Address the health endpoint binds (0.0.0.0 in a pod)."
    )
    metrics_source: str = Field(
        default="pods",
        pattern=r"^(pods(:[0-9]+)?|prometheus:https?://.+)$",
        description="Where the autoscaler reads engine metrics: pods (scrape each Ready pod at "
        "http://<podIP>:8000/metrics), pods:<port>, or prometheus:<url> (the Prometheus HTTP "
        "API). The LoRA adapter loop always talks to each pod at http://<podIP>:8000.",
    )
    autoscaler_interval_seconds: float = Field(
        default=5.0, gt=0, description="Period of the autoscaler loop."
    )
    placeholder_priority_class: str = Field(
        default="modelplane-placeholder",
        description="PriorityClass of warm-node placeholder pods (the chart installs it).",
    )
    shared_volume_storage_class: str = Field(
        default="", description="StorageClass of SharedVolume weight claims; empty: the default."
    )
    cluster_domain: str = Field(
        default="cluster.local", description="DNS suffix for endpoint URLs."
    )
    leader_election: bool = Field(
        default=True,
        description="Elect one leader among replicas on a Lease in operator_namespace; only the "
        "leader reconciles.",
    )
    lease_name: str = Field(default="modelplane-operator", description="Name of the leader Lease.")
    lease_duration_seconds: float = Field(default=15.0, gt=0, description="Lease duration.")
    renew_deadline_seconds: float = Field(
        default=10.0, gt=0, description="The leader stops writing when not renewed for this long."
    )
    retry_period_seconds: float = Field(
        default=2.0, gt=0, description="Seconds between renewals and between attempts."
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return comma_list(v)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log level must be one of DEBUG, INFO, WARNING, ERROR")
        return v
