"""The Helm chart rendered and linted by the project's helm binary (`helm template`, no cluster).

Needs the Go-built helm from tools/build.sh, hence integration; what can be checked without helm
is in tests/unit/test_chart.py. Per mode and provider: lint, labels, RBAC == permissions.py, the
operator Deployment, AcceleratorClasses, and the values schema as helm enforces it.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import pytest
import yaml

from modelplane import __version__, permissions
from modelplane.api.enums import CapacityProvider
from modelplane.api.v1alpha1 import AcceleratorClassSpec
from modelplane.catalog.accelerators import DEFAULT_ACCELERATORS
from modelplane_testbed.localcluster import ensure
from tests.unit.test_chart import BAD_VALUES, CHART, REPO

pytestmark = pytest.mark.integration

KUBE_VERSION = "v1.36.3"
RELEASE, NAMESPACE = "mp", "modelplane-system"
#: Tells `helm template` the cluster already serves the AcceleratorClass API (as a live install
#: after the first one would see it).
SERVED = ("--api-versions", "modelplane.io/v1alpha1/AcceleratorClass")
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ensure(build=False).helm), *args], capture_output=True, text=True, check=False
    )


@functools.cache
def _render(args: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    proc = helm(
        "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, *args
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(*sets: str, served: bool = True) -> list[dict[str, Any]]:
    args: list[str] = [*SERVED] if served else []
    for s in sets:
        args += ["--set", s]
    return list(_render(tuple(args)))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


MODES = {
    "default": (),
    "namespaced": ("watchNamespaces={team-a,team-b}",),
    "karpenter": ("capacityProvider=karpenter",),
    "namespaced-karpenter": ("watchNamespaces={team-a}", "capacityProvider=karpenter"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_helm_lint(mode: str) -> None:
    sets = [a for s in MODES[mode] for a in ("--set", s)]
    proc = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *sets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("mode", list(MODES))
def test_renders_standard_labels_and_one_operator(mode: str) -> None:
    docs = render(*MODES[mode])
    assert one(docs, "Deployment")["metadata"]["name"] == f"{RELEASE}-modelplane"
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "modelplane", d["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == __version__
        cluster_scoped = {"CustomResourceDefinition", "AcceleratorClass", "PriorityClass"}
        if d["kind"] not in cluster_scoped and not d["kind"].startswith("Cluster"):
            assert "namespace" in d["metadata"], d["kind"]


def test_kube_version_floor_enforced() -> None:
    proc = helm("template", RELEASE, str(CHART), "--kube-version", "v1.29.9")
    assert proc.returncode != 0
    assert ">=1.30.0-0" in proc.stderr


def test_rendered_crds_keep_the_spec_and_survive_uninstall() -> None:
    docs = of_kind(render(), "CustomResourceDefinition")
    repo = {
        d["metadata"]["name"]: d
        for p in (REPO / "crds").glob("*.yaml")
        for d in [yaml.safe_load(p.read_text())]
    }
    assert {d["metadata"]["name"] for d in docs} == set(repo)
    for d in docs:
        assert d["spec"] == repo[d["metadata"]["name"]]["spec"]
        assert d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not of_kind(render("installCRDs=false"), "CustomResourceDefinition")


@pytest.mark.parametrize(("value", "where", "message"), BAD_VALUES)
def test_bad_values_fail_with_the_schemas_message(value: str, where: str, message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--set", value)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert f"at '{where}'" in proc.stderr and message in proc.stderr, proc.stderr


def _rules(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in obj["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


def _required(
    provider: CapacityProvider, namespaced: bool | None, *, operator_namespace: bool = False
) -> dict[tuple[str, str], set[str]]:
    required = permissions.required(provider, operator_namespace=operator_namespace)
    return {
        (g, r): verbs
        for (g, r, ns), verbs in required.items()
        if namespaced is None or ns == namespaced
    }


def _merged(*rules: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        for k, v in r.items():
            out.setdefault(k, set()).update(v)
    return out


def _assert_least_privilege(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] not in {"ClusterRole", "Role"}:
            continue
        in_release = d["kind"] == "Role" and d["metadata"]["namespace"] == NAMESPACE
        for rule in d["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field] and not any("*" in v for v in rule[field])
            assert "configmaps" not in rule["resources"], rule
            if "secrets" in rule["resources"]:
                # Secrets are read by name only (the ones tenants reference; never listed or
                # watched) and written only in the release namespace (mirrored credentials).
                assert rule["resources"] == ["secrets"], rule
                assert set(rule["verbs"]) <= (
                    {"get", "create", "patch", "delete"} if in_release else {"get"}
                ), (d["kind"], rule)
            assert set(rule["verbs"]) <= set(ALL_VERBS)
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule


@pytest.mark.parametrize("provider", list(CapacityProvider))
def test_cluster_wide_rbac_is_exactly_permissions_py(provider: CapacityProvider) -> None:
    docs = render(f"capacityProvider={provider.value}")
    _assert_least_privilege(docs)
    role = one(docs, "ClusterRole")
    assert _rules(role) == _required(provider, None)
    # Only what is granted in the release namespace alone is a Role, there.
    operator_role = one(docs, "Role")
    assert operator_role["metadata"]["namespace"] == NAMESPACE
    assert _rules(operator_role) == _required(provider, None, operator_namespace=True)
    assert _rules(operator_role) == {
        ("", "secrets"): {"create", "patch", "delete"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    }
    operator_binding = one(docs, "RoleBinding")
    assert operator_binding["metadata"]["namespace"] == NAMESPACE
    assert operator_binding["roleRef"]["name"] == operator_role["metadata"]["name"]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


@pytest.mark.parametrize("provider", list(CapacityProvider))
def test_namespaced_rbac_splits_permissions_py_by_scope(provider: CapacityProvider) -> None:
    docs = render(f"capacityProvider={provider.value}", "watchNamespaces={team-b,team-a}")
    _assert_least_privilege(docs)
    cluster_role = one(docs, "ClusterRole")
    assert _rules(cluster_role) == _required(provider, False)
    assert ("modelplane.io", "acceleratorclasses") in _rules(cluster_role)
    roles = of_kind(docs, "Role")
    # every watched namespace, plus the release namespace for platform-owned objects
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(
        ["team-a", "team-b", NAMESPACE]
    )
    for role in roles:
        extra = role["metadata"]["namespace"] == NAMESPACE
        assert _rules(role) == _merged(
            _required(provider, True),
            _required(provider, None, operator_namespace=True) if extra else {},
        )
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(docs, "RoleBinding")}
    assert set(bindings) == {r["metadata"]["namespace"] for r in roles}
    for ns, b in bindings.items():
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"][0]["namespace"] == NAMESPACE, ns
    watched = next(r for r in roles if r["metadata"]["namespace"] == "team-a")
    assert _merged(_rules(cluster_role), _rules(watched)) == _required(provider, None)


def test_provider_permissions_only_with_their_provider() -> None:
    karpenter = _rules(one(render("capacityProvider=karpenter"), "ClusterRole"))
    static = _rules(one(render(), "ClusterRole"))
    assert ("karpenter.sh", "nodepools") in karpenter
    assert ("karpenter.sh", "nodepools") not in static
    assert static[("", "nodes")] == karpenter[("", "nodes")] == {"list", "patch"}


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


def test_deployment_shape_env_probes_and_security() -> None:
    docs = render(
        "capacityProvider=karpenter",
        "resyncIntervalSeconds=15",
        "logLevel=DEBUG",
        "watchNamespaces={team-a,team-b}",
    )
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    # Two replicas, one leader (Lease): a rolling update starts the new pod as a standby.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    c = _container(docs)
    assert c["command"] == ["modelplane", "run"]
    assert c["image"] == f"ghcr.io/modelplane/modelplane:{__version__}"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MODELPLANE_CAPACITY_PROVIDER"] == "karpenter"
    assert float(env["MODELPLANE_RESYNC_INTERVAL_SECONDS"]) == 15
    assert env["MODELPLANE_LOG_LEVEL"] == "DEBUG"
    assert env["MODELPLANE_NAMESPACES"] == "team-a,team-b"
    assert env["MODELPLANE_OPERATOR_NAMESPACE"] == NAMESPACE
    assert env["MODELPLANE_METRICS_HOST"] == env["MODELPLANE_HEALTH_HOST"] == "0.0.0.0"
    assert (env["MODELPLANE_METRICS_PORT"], env["MODELPLANE_HEALTH_PORT"]) == ("8080", "8081")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    pod_sc = spec["template"]["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_settings_read_what_the_chart_sets() -> None:
    from modelplane.settings import OperatorSettings

    docs = render("capacityProvider=karpenter", "watchNamespaces={team-a}")
    env = {e["name"]: e["value"] for e in _container(docs)["env"]}
    settings = OperatorSettings(
        **{k.removeprefix("MODELPLANE_").lower(): v for k, v in env.items() if "MODELPLANE_" in k}
    )
    assert settings.capacity_provider == CapacityProvider.KARPENTER
    assert settings.namespaces == ["team-a"]
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)
    assert settings.leader_election and settings.lease_name == f"{RELEASE}-modelplane"
    assert settings.operator_namespace == NAMESPACE
    assert (
        settings.lease_duration_seconds,
        settings.renew_deadline_seconds,
        settings.retry_period_seconds,
    ) == (15, 10, 2)


def test_operator_pdb_keeps_one_replica_and_selects_only_operator_pods() -> None:
    docs = render()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    (pdb,) = [
        d
        for d in of_kind(docs, "PodDisruptionBudget")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert pdb["spec"]["minAvailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "operator"
    single = render("replicas=1")
    assert next(d for d in single if d["kind"] == "Deployment")["spec"]["replicas"] == 1
    assert not of_kind(single, "PodDisruptionBudget")


def test_image_digest_wins_and_pod_placement_values_apply() -> None:
    digest = "sha256:" + "a" * 64
    docs = render(
        f"image.digest={digest}",
        "nodeSelector.pool=system",
        "podAnnotations.team=platform",
        "imagePullSecrets[0].name=registry",
    )
    assert _container(docs)["image"] == f"ghcr.io/modelplane/modelplane@{digest}"
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["metadata"]["annotations"] == {"team": "platform"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]


def test_metrics_service_and_optional_service_monitor() -> None:
    svc = one(render(), "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not of_kind(render(), "ServiceMonitor")
    monitor = one(render("serviceMonitor=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


def _classes(*sets: str, served: bool = True) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d for d in of_kind(render(*sets, served=served), "AcceleratorClass")
    }


@pytest.mark.parametrize("provider", list(CapacityProvider))
def test_default_accelerator_classes_valid_per_provider(provider: CapacityProvider) -> None:
    classes = _classes(f"capacityProvider={provider.value}", "karpenterNodeClass=gpu")
    assert list(classes) == [a.name for a in DEFAULT_ACCELERATORS]
    for acc in DEFAULT_ACCELERATORS:
        obj = classes[acc.name]
        assert "annotations" not in obj["metadata"]
        spec = AcceleratorClassSpec.model_validate(obj["spec"])
        assert spec.gpu_product == acc.gpu_product
        assert spec.gpus_per_node == acc.max_gpus_per_node
        assert spec.price_per_gpu_hour == str(acc.price_per_gpu_hour)
        prov = spec.provisioning
        if provider == CapacityProvider.KARPENTER:
            assert prov is not None and prov.karpenter is not None
            assert prov.karpenter.node_class_ref.name == "gpu"
            assert prov.karpenter.node_class_ref.kind == "EC2NodeClass"
        else:
            assert prov is None


def test_extra_accelerator_classes_and_defaults_off() -> None:
    classes = _classes(
        "defaultAcceleratorClasses=false",
        "acceleratorClasses[0].name=h100-spot",
        "acceleratorClasses[0].spec.displayName=H100 spot",
        "acceleratorClasses[0].spec.gpuProduct=NVIDIA-H100-80GB-HBM3",
        "acceleratorClasses[0].spec.gpuMemoryGiB=80",
        "acceleratorClasses[0].spec.gpusPerNode=8",
        "acceleratorClasses[0].spec.pricePerGPUHour=2.10",
    )
    assert list(classes) == ["h100-spot"]
    spec = AcceleratorClassSpec.model_validate(classes["h100-spot"]["spec"])
    assert spec.price_per_gpu_hour == "2.10" and spec.gpu_memory_gi_b == 80


def test_first_install_creates_classes_with_an_adoptable_hook() -> None:
    classes = _classes(served=False)
    assert len(classes) == len(DEFAULT_ACCELERATORS)
    for obj in classes.values():
        ann = obj["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "post-install,post-upgrade"
        assert ann["meta.helm.sh/release-name"] == RELEASE
        assert ann["meta.helm.sh/release-namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


# --------------------------------------------------------------------------- the gateway
def _gateway_docs(*sets: str) -> list[dict[str, Any]]:
    return [
        d
        for d in render("gateway.enabled=true", *sets)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
    ]


def test_gateway_is_off_by_default() -> None:
    assert not [
        d
        for d in render()
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
    ]


def test_gateway_deployment_pdb_service_and_settings() -> None:
    from modelplane.gateway.main import GatewaySettings, _Shared

    docs = _gateway_docs("watchNamespaces={team-a}", "gateway.holdSeconds=30")
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["modelplane", "gateway"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["terminationGracePeriodSeconds"] == 5 + 60 + 5  # drain + in flight + margin
    sa = one(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == f"{RELEASE}-modelplane-gateway"
    env = {e["name"]: e["value"] for e in c["env"]}
    s = GatewaySettings(
        **{
            k.removeprefix("MODELPLANE_GATEWAY_").lower(): v
            for k, v in env.items()
            if k.startswith("MODELPLANE_GATEWAY_")
        }
    )
    assert (s.port, s.hold_seconds, s.drain_seconds) == (8080, 30, 5)
    shared = _Shared(
        namespaces=env["MODELPLANE_NAMESPACES"],
        operator_namespace=env["MODELPLANE_OPERATOR_NAMESPACE"],
    )
    assert shared.namespaces == ["team-a"] and shared.operator_namespace == NAMESPACE
    # its pods are never selected by the operator's Deployment or metrics Service
    selector = spec["selector"]["matchLabels"]
    operator = next(d for d in render("gateway.enabled=true") if d["kind"] == "Deployment")
    assert operator["spec"]["selector"]["matchLabels"].items() - selector.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    svc = one(docs, "Service")
    assert svc["spec"]["selector"] == selector
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8080, "metrics": 9090}
    assert not of_kind(_gateway_docs("gateway.replicas=1"), "PodDisruptionBudget")


def test_gateway_rbac_is_exactly_gateway_permissions() -> None:
    want = {(g, r): v for (g, r, _), v in permissions.gateway_required().items()}
    docs = _gateway_docs()
    _assert_least_privilege(docs)
    role = one(docs, "ClusterRole")
    assert _rules(role) == want
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == f"{RELEASE}-modelplane-gateway"
    assert not of_kind(docs, "Role")
    docs = _gateway_docs("watchNamespaces={team-b,team-a}")
    assert not of_kind(docs, "ClusterRole")
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == [
        "modelplane-system",
        "team-a",
        "team-b",
    ]
    for r in roles:
        assert _rules(r) == want
    assert {b["metadata"]["namespace"] for b in of_kind(docs, "RoleBinding")} == {
        r["metadata"]["namespace"] for r in roles
    }
