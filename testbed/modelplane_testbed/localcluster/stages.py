"""The KWOK Stages of the local cluster: KWOK plays the kubelet, except for what the emulator does.

KWOK's release stages (``pod/fast``) make every pod Running *and Ready* at once and complete Job
pods at once. With the engine emulator (``modelplane_testbed.emulator``) that is wrong for two
kinds of pods, so ``kwok_stages`` returns the release stages adjusted:

- **model-server pods** (label ``modelplane.io/deployment``): ``modelplane-server-start`` makes
  them Running with their containers started, an IP (``podIP`` from KWOK's ``--cidr``) and the
  ``Initialized`` condition, but **not Ready** (``Ready``/``ContainersReady`` False,
  ``containerStatuses[].ready: false``). Readiness is the emulator's: it probes the pod's
  readinessProbe at the pod IP and patches the status when the engine answers. The release
  ``pod-ready`` stage skips these pods.
- **cache-fill Job pods** (label ``modelplane.io/cache-key``): still made Running and Ready by
  ``pod-ready``, but ``pod-complete`` skips them: the emulator reports them ``Succeeded`` after
  the modelled download.

Everything else (warm-node placeholders ``registry.k8s.io/pause``, other Jobs, system pods,
nodes, deletion) behaves as with the release stages. Stage API: kwok.sigs.k8s.io
(``kwok.x-k8s.io/v1alpha1`` ``Stage``; selector ``matchExpressions`` keys are jq expressions
over the object, ``DoesNotExist`` matching a missing or null value).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CACHE_KEY_LABEL",
    "MODEL_SERVER_LABEL",
    "RELEASE_STAGES",
    "SERVER_START_STAGE",
    "StageError",
    "kwok_stages",
]

MODEL_SERVER_LABEL = "modelplane.io/deployment"
CACHE_KEY_LABEL = "modelplane.io/cache-key"
SERVER_START_STAGE = "modelplane-server-start"

#: Release stage files used (paths under the KWOK release's ``stages/`` directory).
RELEASE_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


class StageError(RuntimeError):
    """The KWOK release's stage files are not what this module expects."""


def _label(key: str) -> str:
    return f'.metadata.labels["{key}"]'


def _without_label(key: str) -> dict[str, Any]:
    return {"key": _label(key), "operator": "DoesNotExist"}


_SERVER_START_TEMPLATE = """\
{{ $now := Now }}

conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady

containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}

initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  {{ if eq .restartPolicy "Always" }}
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
  {{ else }}
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
  {{ end }}
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _load(stage_dir: Path, rel: str) -> dict[str, Any]:
    path = stage_dir / rel
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise StageError(f"KWOK stage file {path} is missing: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Stage":
        raise StageError(f"{path} is not a KWOK Stage")
    return doc


def _expressions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    selector = doc.setdefault("spec", {}).setdefault("selector", {})
    exprs: list[dict[str, Any]] = selector.setdefault("matchExpressions", [])
    return exprs


def kwok_stages(stage_dir: Path) -> list[dict[str, Any]]:
    """The Stage documents for KWOK's ``--config`` (``stage_dir``: the release's ``stages/``).

    Order: node stages, ``modelplane-server-start``, then the release pod stages (``pod-ready``
    without model-server pods, ``pod-complete`` without cache-fill pods, ``pod-delete``).
    """
    stage_dir = Path(stage_dir)
    docs = {rel: _load(stage_dir, rel) for rel in RELEASE_STAGES}
    ready = docs["pod/fast/pod-ready.yaml"]
    complete = docs["pod/fast/pod-complete.yaml"]
    if ready["metadata"].get("name") != "pod-ready":
        raise StageError("pod/fast/pod-ready.yaml is not the pod-ready stage")
    if complete["metadata"].get("name") != "pod-complete":
        raise StageError("pod/fast/pod-complete.yaml is not the pod-complete stage")

    start = copy.deepcopy(ready)
    start["metadata"] = {"name": SERVER_START_STAGE}
    _expressions(start).append({"key": _label(MODEL_SERVER_LABEL), "operator": "Exists"})
    start["spec"]["next"] = {"statusTemplate": _SERVER_START_TEMPLATE}
    start["spec"].pop("delay", None)

    _expressions(ready).append(_without_label(MODEL_SERVER_LABEL))
    _expressions(complete).append(_without_label(CACHE_KEY_LABEL))
    return [
        docs["node/fast/node-initialize.yaml"],
        docs["node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"],
        start,
        ready,
        complete,
        docs["pod/fast/pod-delete.yaml"],
    ]
