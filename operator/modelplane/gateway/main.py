"""`modelplane gateway`: settings from MODELPLANE_GATEWAY_* (and MODELPLANE_NAMESPACES,
MODELPLANE_OPERATOR_NAMESPACE as the operator reads them), uvicorn, graceful drain.

SIGTERM: `/readyz` turns 503 at once, the gateway keeps serving for `drain_seconds` (so the
Service's endpoints drop it first), then stops accepting and waits up to
`shutdown_timeout_seconds` for the requests in flight (held ones included) before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelplane.settings import comma_list

log = logging.getLogger("modelplane.gateway")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPLANE_GATEWAY_", extra="ignore", frozen=True)

    host: str = Field(default="0.0.0.0", description="Address the API binds.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port of the OpenAI API.")
    metrics_host: str = Field(default="0.0.0.0", description="Address /metrics binds.")
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Prometheus; 0: off.")
    hold_seconds: float = Field(
        default=60.0, gt=0, description="Longest a request waits for a Ready replica."
    )
    max_held: int = Field(default=100, ge=0, description="Held requests per ModelDeployment.")
    refresh_seconds: float = Field(
        default=1.0, gt=0, description="Period of listing ModelDeployments, pods and keys."
    )
    drain_seconds: float = Field(
        default=5.0, ge=0, description="SIGTERM: keep serving this long with /readyz failing."
    )
    shutdown_timeout_seconds: float = Field(
        default=60.0, ge=0, description="SIGTERM: then wait this long for requests in flight."
    )
    data_dir: str = Field(
        default="",
        description="Directory of the Batch API's files and database (a volume); empty: the "
        "Files and Batches API is off.",
    )
    batch_concurrency: int = Field(
        default=64, ge=1, description="Batch requests in flight per gateway (all batches)."
    )
    batch_slots_per_replica: int = Field(
        default=16,
        ge=1,
        description="Requests per ready replica before batch requests wait (interactive first).",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    ledger_url: str = Field(
        default="sqlite:///var/lib/modelplane/usage.db",
        description="Usage ledger: sqlite:///path (one replica) or postgresql://user:pw@host/db "
        "(several replicas share it); empty: no ledger (metrics only).",
    )
    keepalive_seconds: float = Field(
        default=5.0, gt=0, description="Held streaming calls: an SSE comment this often."
    )
    namespace_requests_per_minute: int = Field(
        default=0, ge=0, description="Requests per minute per tenant namespace; 0: no limit."
    )
    namespace_tokens_per_minute: int = Field(
        default=0, ge=0, description="Tokens per minute per tenant namespace; 0: no limit."
    )
    usage_publish_seconds: float = Field(
        default=15.0, gt=0, description="Period of writing ledger totals for status.usage."
    )


class _Shared(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPLANE_", extra="ignore", frozen=True)

    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    operator_namespace: str = "modelplane-system"

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return comma_list(v)


def run() -> int:
    """The gateway process. Long because it is the wiring: settings, ledger, Kubernetes client,
    metrics server, the ASGI app and uvicorn with its graceful-drain hook, each built once, in
    order.
    """
    import uvicorn
    from prometheus_client import start_http_server

    from modelplane.gateway.app import Gateway, GatewayConfig
    from modelplane.gateway.kube import Kube, api_client
    from modelplane.gateway.ledger import open_ledger

    s, shared = GatewaySettings(), _Shared()
    logging.basicConfig(
        level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kube = Kube(api_client(), shared.namespaces, shared.operator_namespace)
    ledger = open_ledger(s.ledger_url) if s.ledger_url else None
    gw = Gateway(
        kube.snapshot,
        kube.publish_demand,
        GatewayConfig(
            hold_seconds=s.hold_seconds,
            max_held=s.max_held,
            usage_publish_seconds=s.usage_publish_seconds,
            keepalive_seconds=s.keepalive_seconds,
            namespace_requests_per_minute=s.namespace_requests_per_minute,
            namespace_tokens_per_minute=s.namespace_tokens_per_minute,
        ),
        refresh_seconds=s.refresh_seconds,
        ledger=ledger,
        publish_usage=kube.publish_annotations,
    )
    if s.data_dir:
        from modelplane.gateway.batches import BatchConfig, BatchService

        gw.extensions.append(
            BatchService(
                gw,
                s.data_dir,
                BatchConfig(
                    concurrency=s.batch_concurrency, slots_per_replica=s.batch_slots_per_replica
                ),
            )
        )
    if s.metrics_port:
        start_http_server(s.metrics_port, s.metrics_host, registry=gw.metrics.registry)
    config = uvicorn.Config(
        gw,
        host=s.host,
        port=s.port,
        lifespan="on",
        access_log=False,
        log_level=s.log_level.lower(),
        timeout_graceful_shutdown=int(s.shutdown_timeout_seconds),
        timeout_keep_alive=30,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if gw.state.draining or sig != signal.SIGTERM or not s.drain_seconds:
                super().handle_exit(sig, frame)
                return
            gw.state.draining = True
            log.info("SIGTERM: draining for %.0fs, then stopping", s.drain_seconds)
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(
                loop.call_later, s.drain_seconds, super().handle_exit, sig, frame
            )

    log.info(
        "gateway on %s:%d, namespaces %s, backends in %s",
        s.host, s.port, ",".join(shared.namespaces) or "all", shared.operator_namespace,
    )  # fmt: skip
    Server(config).run()
    return 0
