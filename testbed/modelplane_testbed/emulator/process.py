"""``python -m modelplane_testbed.emulator``: the engine emulator as a process.

    python -m modelplane_testbed.emulator --kubeconfig K --control-socket PATH
        [--time-scale 0.05] [--tick 0.5] [--seed N] [--namespace NS ...]
        [--rate-file F] [--trace CSV --trace-deployment NS/NAME [--trace-speed X]]
        [--ttl S] [--replica-model auto|llama3-8b-h100|llama3-70b-4xh100]
        [--probe-period 0.5] [--log-level INFO]

It watches nodes and pods (every namespace, or the given ones), serves each model-server pod's
engine at ``podIP:<port>`` (so it must run where the pod IPs are local addresses: the local
cluster's network namespace), acts as the kubelet's readiness prober for them, completes
cache-fill Job pods after their modelled download, generates load, and publishes gateway
demand on ModelDeployments. The control API (``control``) is served on ``--control-socket``;
``EMULATOR_READY`` is printed on stdout once it answers. Exits on SIGTERM/SIGINT, when the
parent process dies (``PR_SET_PDEATHSIG`` plus a ``getppid`` check), or after ``--ttl``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelplane.api.refs import BackendRef
from modelplane_testbed.emulator.control import ControlServer
from modelplane_testbed.emulator.core import REPLICA_MODELS, ControlError, Emulator, load_trace
from modelplane_testbed.emulator.engine_http import PodServers
from modelplane_testbed.emulator.kube import (
    ApiWriter,
    DemandPublisher,
    ReadinessProber,
    complete_cache_jobs,
    watch_nodes,
    watch_pods,
)
from modelplane_testbed.emulator.pods import LABEL_CACHE_KEY, LABEL_DEPLOYMENT

__all__ = ["READY_LINE", "main"]

log = logging.getLogger("modelplane.emulator")

READY_LINE = "EMULATOR_READY"


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent exits (Linux); the tick loop also polls."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m modelplane_testbed.emulator",
        description="Emulated vLLM/SGLang/TEI engines at the pod addresses of a local cluster.",
    )
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to watch")
    p.add_argument("--control-socket", required=True, type=Path, help="Unix socket of the API")
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        help="multiplies modelled start-up and download times (serving runs at real time)",
    )
    p.add_argument("--tick", type=float, default=0.5, help="load/simulation tick in seconds")
    p.add_argument("--seed", type=int, help="random seed of the load generator")
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="only pods of this namespace (repeatable; default: all namespaces)",
    )
    p.add_argument("--rate-file", type=Path, help="load schedule (YAML/JSON), re-read on change")
    p.add_argument("--trace", type=Path, help="request trace CSV to replay")
    p.add_argument("--trace-deployment", metavar="NS/NAME", help="the trace's target deployment")
    p.add_argument("--trace-speed", type=float, default=1.0, help="replay this many times faster")
    p.add_argument("--ttl", type=float, default=0.0, help="exit after this many seconds (0: never)")
    p.add_argument(
        "--replica-model",
        choices=["auto", *sorted(REPLICA_MODELS)],
        default="auto",
        help="performance model of every replica (auto: by the served weights)",
    )
    p.add_argument("--probe-period", type=float, default=0.5, help="readiness probe period (s)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.trace and not args.trace_deployment:
        p.error("--trace needs --trace-deployment NS/NAME")
    if args.trace_deployment and "/" not in args.trace_deployment:
        p.error("--trace-deployment must be NS/NAME")
    if args.tick <= 0 or args.probe_period <= 0:
        p.error("--tick and --probe-period must be above 0")
    if args.time_scale < 0:
        p.error("--time-scale must be 0 or more")
    return args


def _read_schedule(path: Path) -> Mapping[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of 'namespace/name' to a load")
    return data


def watch_routes(emulator: Emulator, api_client: Any, stop: threading.Event) -> None:
    """Follow Serverless tenants to their shared backend (``status.backend``: ``ns/name``),
    as a gateway routing by model name would."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    while not stop.wait(1.0):
        try:
            items = custom.list_cluster_custom_object(
                "modelplane.io", "v1alpha1", "modeldeployments"
            )["items"]
        except Exception as e:
            log.debug("listing ModelDeployments failed: %s", e)
            continue
        routes = {}
        for md in items:
            ref = BackendRef.parse((md.get("status") or {}).get("backend"))
            if ref is not None:
                meta = md["metadata"]
                routes[(meta["namespace"], meta["name"])] = (ref.namespace, ref.name)
        emulator.set_routes(routes)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    parent = os.getppid()
    _die_with_parent()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    emulator = Emulator(
        time_scale=args.time_scale,
        seed=args.seed,
        replica_model=None if args.replica_model == "auto" else REPLICA_MODELS[args.replica_model],
    )
    schedule_mtime: float | None = None
    if args.rate_file:
        schedule_mtime = args.rate_file.stat().st_mtime
        emulator.set_schedule(_read_schedule(args.rate_file))
    if args.trace:
        ns, name = args.trace_deployment.split("/", 1)
        emulator.replay(ns, name, load_trace(args.trace), args.trace_speed)
    servers = PodServers(emulator)
    demand: DemandPublisher | None = None

    def demand_status() -> dict[str, Any]:
        return demand.status() if demand is not None else {}

    control = ControlServer(emulator, args.control_socket, demand=demand_status)
    print(READY_LINE, flush=True)
    started = time.monotonic()
    try:
        # The kubernetes client takes seconds to import: the control API serves meanwhile.
        from kubernetes import config

        api_client = config.new_client_from_config(config_file=str(args.kubeconfig))
        writer = ApiWriter(api_client)
        prober = ReadinessProber(emulator, writer)
        demand = DemandPublisher(emulator, writer)
        nodes_synced = threading.Event()
        threading.Thread(
            target=watch_nodes,
            args=(emulator, api_client, stop, nodes_synced),
            name="watch-nodes",
            daemon=True,
        ).start()
        # Pods start from their node's labels: list the nodes first (briefly; a pod seen
        # before its node waits for it anyway).
        deadline = time.monotonic() + 10.0
        while not nodes_synced.wait(0.1) and not stop.is_set():
            if time.monotonic() > deadline or (args.ttl and time.monotonic() - started >= args.ttl):
                break
        threads = [
            threading.Thread(
                target=prober.run, args=(stop, args.probe_period), name="prober", daemon=True
            ),
        ]
        for ns in args.namespace or [None]:
            for label in (LABEL_DEPLOYMENT, LABEL_CACHE_KEY):
                threads.append(
                    threading.Thread(
                        target=watch_pods,
                        args=(emulator, api_client, ns, label, stop, servers.sync),
                        name=f"watch-{label}-{ns or 'all'}",
                        daemon=True,
                    )
                )
        threads.append(
            threading.Thread(
                target=watch_routes,
                args=(emulator, api_client, stop),
                name="watch-routes",
                daemon=True,
            )
        )
        for t in threads:
            t.start()
        while not stop.wait(args.tick):
            if os.getppid() != parent:
                log.info("parent exited; stopping")
                break
            if args.ttl and time.monotonic() - started >= args.ttl:
                log.info("ttl of %ss reached; stopping", args.ttl)
                break
            if args.rate_file:
                try:
                    mtime = args.rate_file.stat().st_mtime
                    if mtime != schedule_mtime:
                        schedule_mtime = mtime
                        emulator.set_schedule(_read_schedule(args.rate_file))
                        log.info("reloaded %s", args.rate_file)
                except (OSError, ValueError, ControlError) as e:
                    log.warning("could not read %s: %s", args.rate_file, e)
            emulator.tick()
            servers.sync()
            try:
                demand.publish_once()
                complete_cache_jobs(emulator, writer)
            except Exception:
                log.exception("publishing to the API failed")
    finally:
        stop.set()
        control.close()
        servers.close()
    return 0
