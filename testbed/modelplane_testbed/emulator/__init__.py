"""The engine emulator: model-server pods of the local cluster answer like vLLM, SGLang or TEI.

KWOK pods run no containers. The emulator gives every model-server pod the product created
(label ``modelplane.io/deployment``) an emulated engine at the pod's own address:

- ``pods``: what the pod asks for, read from the pod as created (engine from the image and
  command, model, served names, port, LoRA, pooling, mounts, probes) and its start-up derived
  from it and the node's labels (``simulator.ColdStartModel``: image pull unless the image is
  on the node, weight load from the catalog size, at local speed only from a mounted node
  cache the node is labelled ready for, warm-up);
- ``core``: the state: start-up on the emulator's clock (scaled by ``--time-scale``), one
  ``simulator`` replica model per started engine, load generation, gateway queues, LoRA
  adapters, Prometheus text per engine;
- ``engine_http``: the engines' HTTP APIs at ``podIP:<port>``;
- ``kube``: pod and node watches, the kubelet's readiness prober (patches ``Ready``), demand
  annotations on ModelDeployments, cache-fill Jobs reported ``Succeeded``;
- ``control``: the control API over a Unix socket, and ``ControlClient``;
- ``process``: ``python -m modelplane_testbed.emulator`` (see its doc for the flags).

``modelplane_testbed.localcluster.stages.kwok_stages`` are the KWOK stages that leave
readiness of model-server pods, and completion of cache-fill Job pods, to the emulator.
"""

from modelplane_testbed.emulator.control import ControlClient, ControlServer
from modelplane_testbed.emulator.core import (
    REPLICA_MODELS,
    ControlError,
    Emulator,
    EngineError,
    LoadSpec,
    load_trace,
)
from modelplane_testbed.emulator.engine_http import PodServers
from modelplane_testbed.emulator.kube import (
    ANNOTATION_PENDING,
    ANNOTATION_PENDING_AT,
    DemandPublisher,
    ReadinessProber,
    complete_cache_jobs,
)
from modelplane_testbed.emulator.pods import Engine, ServerSpec, derive_startup, server_spec
from modelplane_testbed.emulator.process import READY_LINE, main

__all__ = [
    "ANNOTATION_PENDING",
    "ANNOTATION_PENDING_AT",
    "READY_LINE",
    "REPLICA_MODELS",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "DemandPublisher",
    "Emulator",
    "Engine",
    "EngineError",
    "LoadSpec",
    "PodServers",
    "ReadinessProber",
    "ServerSpec",
    "complete_cache_jobs",
    "derive_startup",
    "load_trace",
    "main",
    "server_spec",
]
