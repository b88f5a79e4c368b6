"""Where the local cluster's binaries live, and building them when they are missing.

The binaries are built by `tools/build.sh` from pinned Go modules and cached outside the
repository, keyed by tool and version (`~/.cache/modelplane/bin/<tool>-<version>/`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class BuildError(RuntimeError):
    """A tool could not be built; the message says why and what to do."""


def repo_root() -> Path:
    """The source checkout (operator/modelplane/localcluster -> repository root)."""
    env = os.environ.get("MODELPLANE_REPO")
    return Path(env) if env else Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    env = os.environ.get("MODELPLANE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "modelplane"


def versions() -> dict[str, str]:
    """The pins in tools/versions.env."""
    out: dict[str, str] = {}
    for line in (repo_root() / "tools" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    helm: Path
    karpenter_crds: Path
    lws: Path
    lws_crds: Path
    lws_webhook: Path
    kubernetes_version: str

    @property
    def bin_dirs(self) -> list[Path]:
        return sorted({p.parent for p in (self.etcd, self.kube_apiserver, self.kwok, self.helm)})


_TOOLS = {
    "kubernetes": "KUBERNETES_VERSION",
    "etcd": "ETCD_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
    "karpenter": "KARPENTER_VERSION",
    "lws": "LWS_VERSION",
}


def _dirs() -> dict[str, Path]:
    v = versions()
    return {t: cache_dir() / "bin" / f"{t}-{v[key]}" for t, key in _TOOLS.items()}


def missing() -> list[str]:
    return [t for t, d in _dirs().items() if not (d / ".complete").exists()]


def ensure(*, build: bool = True, quiet: bool = False) -> Binaries:
    """The cached binaries; builds the missing ones first (progress on stderr) when `build`."""
    need = missing()
    if need:
        if not build:
            raise BuildError(
                f"local cluster binaries not built: {', '.join(need)}. "
                "Run `modelplane cluster build` (or tools/build.sh) first."
            )
        if shutil.which("go") is None:
            raise BuildError(
                "Go is not installed or not on PATH, and the local cluster's binaries "
                f"({', '.join(need)}) are not cached yet. Install Go >= 1.26 and run again."
            )
        script = repo_root() / "tools" / "build.sh"
        proc = subprocess.run(
            ["bash", str(script), *need],
            stdout=subprocess.DEVNULL if quiet else sys.stderr,
            stderr=sys.stderr,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"tools/build.sh {' '.join(need)} failed (exit {proc.returncode}).")
    d = _dirs()
    k = d["kubernetes"]
    return Binaries(
        etcd=d["etcd"] / "etcd",
        kube_apiserver=k / "kube-apiserver",
        kube_controller_manager=k / "kube-controller-manager",
        kube_scheduler=k / "kube-scheduler",
        kubectl=k / "kubectl",
        kwok=d["kwok"] / "kwok",
        kwok_stages=d["kwok"] / "stages",
        helm=d["helm"] / "helm",
        karpenter_crds=d["karpenter"] / "crds",
        lws=d["lws"] / "lws-controller",
        lws_crds=d["lws"] / "crds",
        lws_webhook=d["lws"] / "webhook",
        kubernetes_version=versions()["KUBERNETES_VERSION"],
    )
