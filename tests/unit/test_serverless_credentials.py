"""Serverless backends download gated weights with a mirror of one tenant's Secret key."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from modelplane.adapters import kube as kube_mod
from modelplane.adapters.kube import Kube
from modelplane.api.v1alpha1 import ModelDeployment
from modelplane.builders import serverless
from modelplane.builders.objects import BuildContext
from modelplane.commands import default_classes
from modelplane.reconcile.core import DeploymentView, Observed, Plan, plan

OPS = "mp-system"
NOW = "2026-01-01T00:00:00Z"
TOKEN_B64 = "aGZfc2VjcmV0"  # base64 of a token, as a Secret's data holds it


def tenant(
    name: str,
    namespace: str,
    *,
    secret: str | None = "hf",
    key: str | None = None,
    created: str = NOW,
) -> ModelDeployment:
    model: dict[str, Any] = {"catalog": "llama-v3p1-8b-instruct"}
    if secret is not None:
        model["credentialsSecretRef"] = {"name": secret, **({"key": key} if key else {})}
    return ModelDeployment.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"u-{name}",
                "generation": 1,
                "creationTimestamp": created,
            },
            "spec": {"tier": "Serverless", "model": model},
        }
    )


def creds(md: ModelDeployment, key: str = "token") -> serverless.BackendCredentials:
    return serverless.BackendCredentials(md, "hf", key, TOKEN_B64)


def observe(md: ModelDeployment, **extra: Any) -> Observed:
    return Observed(
        md,
        default_classes(),
        DeploymentView(exists=False),
        {},
        (),
        {},
        NOW,
        BuildContext(operator_namespace=OPS),
        **extra,
    )


def server_env(p: Plan) -> dict[str, Any]:
    dep = next(o for o in p.apply if o["kind"] == "Deployment")
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_backend_reads_a_mirror_of_the_tenant_secret_in_its_own_namespace() -> None:
    md = tenant("chat", "team-a")
    p = plan(observe(md, backend_credentials=creds(md, key="hf-token")))
    assert p.error is None and p.backend is not None
    secret = p.apply[0]  # before the Deployment, so its pods find it
    name = serverless.credentials_secret_name(p.backend.name)
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == OPS
    assert secret["metadata"]["name"] == name
    assert secret["data"] == {"token": TOKEN_B64}  # only the referenced key
    assert secret["metadata"]["labels"][serverless.LABEL_BACKEND] == p.backend.name
    assert "ownerReferences" not in secret["metadata"]  # no owner across namespaces
    assert secret["metadata"]["annotations"][serverless.ANNOTATION_CREDENTIALS_FROM] == (
        "team-a/chat: Secret hf, key hf-token"
    )
    assert server_env(p)["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}},
    }
    assert [o["kind"] for o in p.apply][:2] == ["Secret", "Deployment"]
    assert p.credentials is not None and p.credentials.source == "team-a/chat"
    assert TOKEN_B64 not in repr(p.credentials)  # never in a log line


def test_without_credentials_nothing_is_mirrored() -> None:
    p = plan(observe(tenant("chat", "team-a", secret=None)))
    assert p.error is None and "HF_TOKEN" not in server_env(p)
    assert not [o for o in p.apply if o["kind"] == "Secret"]


def test_an_applied_mirror_is_not_rewritten_and_a_stranger_at_its_name_is_a_conflict() -> None:
    md = tenant("chat", "team-a")
    first = plan(observe(md, backend_credentials=creds(md)))
    applied = first.apply[0]["metadata"]["annotations"]["modelplane.io/applied-hash"]
    obs = observe(md, backend_credentials=creds(md))
    again = plan(dataclasses.replace(obs, children_hashes={"CredentialsSecret": applied}))
    assert "Secret" not in [o["kind"] for o in again.apply]
    conflict = plan(
        observe(md, backend_credentials=creds(md), foreign=frozenset({"CredentialsSecret"}))
    )
    assert conflict.error is not None and conflict.error.reason == "ChildConflict"
    assert f"Secret {OPS}/{first.apply[0]['metadata']['name']}" in conflict.error.message


def test_the_oldest_tenant_with_credentials_is_chosen() -> None:
    tenants = [
        tenant("b", "team-b", created="2026-01-02T00:00:00Z"),
        tenant("none", "team-0", secret=None, created="2025-01-01T00:00:00Z"),
        tenant("a2", "team-a", created="2026-01-01T00:00:00Z"),
        tenant("a1", "team-a", created="2026-01-01T00:00:00Z"),
    ]
    order = [
        f"{m.metadata.namespace}/{m.metadata.name}"
        for m in serverless.credential_candidates(tenants)
    ]
    assert order == ["team-a/a1", "team-a/a2", "team-b/b"]


class FakeCore:
    """Secrets by (namespace, name); records every call (there is no list)."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]]) -> None:
        self.secrets = secrets
        self.calls: list[tuple[str, str]] = []

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.calls.append((namespace, name))
        if (namespace, name) == ("team-x", "hf"):
            raise ApiException(status=403, reason="Forbidden")
        if (namespace, name) not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=self.secrets[(namespace, name)])


def kube_with(core: Any) -> Kube:
    k = Kube.__new__(Kube)
    k.core = core
    return k


def test_the_adapter_reads_only_referenced_secrets_and_falls_back_to_the_next_tenant() -> None:
    tenants = [
        tenant("gone", "team-a", created="2026-01-01T00:00:00Z"),  # its Secret does not exist
        tenant("denied", "team-x", created="2026-01-01T00:00:01Z"),  # not readable
        tenant("nokey", "team-b", created="2026-01-01T00:00:02Z"),  # no such key
        tenant("ok", "team-c", key="hf-token", created="2026-01-01T00:00:03Z"),
        tenant("younger", "team-d", created="2026-01-01T00:00:04Z"),
    ]
    core = FakeCore(
        {
            ("team-b", "hf"): {"other": "eA=="},
            ("team-c", "hf"): {"hf-token": TOKEN_B64, "unrelated": "eQ=="},
            ("team-d", "hf"): {"token": "eg=="},
        }
    )
    got = kube_with(core)._backend_credentials("sls-x", tenants)
    assert got is not None and got.source == "team-c/ok"
    assert (got.secret, got.key, got.value) == ("hf", "hf-token", TOKEN_B64)
    assert core.calls == [("team-a", "hf"), ("team-x", "hf"), ("team-b", "hf"), ("team-c", "hf")]
    assert (
        kube_with(FakeCore({}))._backend_credentials("sls-x", [tenant("t", "n", secret=None)])
        is None
    )


def test_applying_the_mirror_tells_the_tenant_whose_secret_it_is() -> None:
    md = tenant("chat", "team-a")
    p = plan(observe(md, backend_credentials=creds(md)))
    k = Kube.__new__(Kube)
    applied: list[str] = []
    events: list[tuple[str, str, str]] = []
    k.apply = lambda obj, field_manager="modelplane": applied.append(obj["kind"])  # type: ignore[method-assign]
    k.post_event = lambda m, ev: events.append((m.metadata.name, ev.reason, ev.message))  # type: ignore[method-assign]
    k.carry_out(tenant("other", "team-z"), p)  # whichever tenant's reconcile applies it
    assert applied[0] == "Secret"
    [(who, reason, message)] = events
    assert (who, reason) == ("chat", "CredentialsShared") and "Secret hf" in message
    assert TOKEN_B64 not in message


def test_the_sweep_removes_mirrors_with_their_backend_or_their_last_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = tenant("kept", "team-a", created="2026-01-01T00:00:00Z")
    plain = tenant("plain", "team-b", secret=None)
    k = Kube.__new__(Kube)
    k.api = None
    backends = {"sls-kept": [kept], "sls-plain": [plain], "sls-gone": []}
    present = {(kind, f"{b}{suffix}") for b in backends for kind, suffix in (
        ("Secret", "-credentials"), ("Service", ""), ("PodDisruptionBudget", ""))}  # fmt: skip

    def labels_of(name: str) -> dict[str, str]:
        return {serverless.LABEL_BACKEND: name, "app.kubernetes.io/managed-by": "modelplane"}

    def reader(kind: str, suffix: str = "") -> Any:
        def read(name: str, namespace: str) -> Any:
            if (kind, name) not in present:
                raise ApiException(status=404, reason="Not Found")
            backend = name.removesuffix(suffix)
            return SimpleNamespace(
                metadata=SimpleNamespace(labels=labels_of(backend), annotations={})
            )

        return read

    k.core = SimpleNamespace(
        read_namespaced_secret=reader("Secret", "-credentials"),
        read_namespaced_service=reader("Service"),
    )
    monkeypatch.setattr(
        kube_mod.client,
        "PolicyV1Api",
        lambda api: SimpleNamespace(
            read_namespaced_pod_disruption_budget=reader("PodDisruptionBudget")
        ),
    )
    k.apps = SimpleNamespace(
        list_namespaced_deployment=lambda ns, label_selector: SimpleNamespace(
            items=[SimpleNamespace(metadata=SimpleNamespace(name=b)) for b in backends]
        )
    )
    k.accelerator_classes = lambda: {}  # type: ignore[method-assign]
    k._serverless_tenants = lambda classes: [  # type: ignore[method-assign]
        (md, b) for b, mds in backends.items() for md in mds
    ]
    deleted: list[tuple[str, str]] = []
    k.delete = lambda kind, name, ns: deleted.append((kind, name))  # type: ignore[method-assign]
    k.sweep_backends(OPS)
    assert ("CredentialsSecret", "sls-kept-credentials") not in deleted  # a tenant gives them
    assert ("CredentialsSecret", "sls-plain-credentials") in deleted  # none does any more
    assert ("Deployment", "sls-plain") not in deleted
    assert {("Deployment", "sls-gone"), ("CredentialsSecret", "sls-gone-credentials")} <= set(
        deleted
    )
