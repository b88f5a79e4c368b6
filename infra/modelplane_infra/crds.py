"""Read the modelplane CRDs (generated into the repository's crds/ directory) at program time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: The repository's crds/ directory (infra/modelplane_infra/crds.py -> repo root).
REPO_CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
CRD_API_VERSION = "apiextensions.k8s.io/v1"


class CrdError(ValueError):
    """The CRD directory is empty or holds something that is not a CRD."""


def load_crds(directory: Path = REPO_CRDS_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in `directory/*.yaml`, ordered by name.

    Raises CrdError when there is none (a cluster without the CRDs cannot run the operator) or
    when a document is not a v1 CRD.
    """
    files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    crds: dict[str, dict[str, Any]] = {}
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is None:
                continue
            kind, api = doc.get("kind"), doc.get("apiVersion")
            name = (doc.get("metadata") or {}).get("name")
            if kind != "CustomResourceDefinition" or api != CRD_API_VERSION or not name:
                raise CrdError(
                    f"{path.name}: expected {CRD_API_VERSION} CustomResourceDefinition with a "
                    f"metadata.name, got {api}/{kind} {name!r}"
                )
            if name in crds:
                raise CrdError(f"{path.name}: CRD {name} is defined twice")
            crds[name] = doc
    if not crds:
        raise CrdError(
            f"no CustomResourceDefinitions found in {directory.name}/*.yaml; generate the CRDs "
            "before deploying (the chart is installed with its CRDs skipped)"
        )
    return [crds[n] for n in sorted(crds)]
