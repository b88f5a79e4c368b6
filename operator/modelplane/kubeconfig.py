"""One kubeconfig renderer: a single cluster, user and context, as a kubeconfig document.

The infra program's EKS and GKE kubeconfigs (exec credentials) and the local cluster's
(client certificates, bearer tokens) all come from here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


def render(
    *,
    server: str,
    ca_data: str,
    user: Mapping[str, Any],
    cluster: str,
    user_name: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig (as a dict, ready for JSON or YAML) with one cluster at `server` whose CA
    is `ca_data` (base64 PEM), one user with the credentials `user` (e.g. `{"token": ...}`,
    client certificate data, or `exec_user(...)`), and one context, current, joining them.
    The user and context are named `user_name` and `context`, by default like the cluster."""
    uname = user_name or cluster
    ctx = context or cluster
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "contexts": [{"name": ctx, "context": {"cluster": cluster, "user": uname}}],
        "current-context": ctx,
        "users": [{"name": uname, "user": dict(user)}],
    }


def exec_user(command: str, args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Credentials from an exec plugin (`aws eks get-token`, `gke-gcloud-auth-plugin`) that
    never prompts."""
    spec: dict[str, Any] = {"apiVersion": EXEC_API_VERSION, "command": command}
    if args:
        spec["args"] = list(args)
    spec.update(extra)
    spec["interactiveMode"] = "Never"
    return {"exec": spec}
