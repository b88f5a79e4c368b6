"""The `local` stack (cloud: local): modelplane on an existing cluster through its kubeconfig,
with the same ModelplaneInstall as the EKS and GKE stacks, under mocks."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_harness import REPO, Graph, crds_dir, run_program, stack_config

from modelplane.catalog.accelerators import LABEL_ACCELERATOR_CLASS
from modelplane_infra import config
from modelplane_infra.config import ConfigError, LocalStack
from modelplane_infra.crds import load_crds
from modelplane_testbed.localcluster.binaries import versions

RELEASE = "kubernetes:helm.sh/v3:Release"
ACCEL = "kubernetes:modelplane.io/v1alpha1:AcceleratorClass"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def raw() -> dict[str, Any]:
    prefix = "modelplane:"
    return {k[len(prefix) :]: v for k, v in stack_config("local").items() if k.startswith(prefix)}


def local_graph(**overrides: Any) -> Graph:
    from modelplane_infra.program import build

    cfg = stack_config("local")
    cfg.update({f"modelplane:{k}": v for k, v in overrides.items()})

    def program() -> None:
        build(config.load(), crds_dir())

    return run_program("local", program, cfg)


def test_committed_local_stack_validates() -> None:
    cfg = config.validate(raw())
    assert isinstance(cfg, LocalStack)
    assert cfg.capacity_provider == "static"
    assert cfg.operator.release == "modelplane"
    assert cfg.kubeconfig and cfg.kubeconfig.endswith("admin.kubeconfig")


def test_local_stack_refuses_cloud_keys_and_unknown_gpus() -> None:
    data = raw() | {"region": "us-east-1", "gpuTypes": ["nvidia-x1"]}
    with pytest.raises(ConfigError) as err:
        config.validate(data)
    msg = str(err.value)
    assert "modelplane:region: unknown key for cloud local" in msg
    assert "unknown GPU type(s) ['nvidia-x1']" in msg


def test_local_graph_is_the_kubernetes_layer_only() -> None:
    g = local_graph(kubeconfig="/tmp/cluster/admin.kubeconfig")
    clouds = {t.split(":", 1)[0] for t in g.types()} - {"kubernetes", "pulumi", "modelplane"}
    assert not clouds, clouds
    provider = g.one("pulumi:providers:kubernetes").raw
    assert provider["kubeconfig"] == "/tmp/cluster/admin.kubeconfig"
    release = g.one(RELEASE).inputs
    assert release["name"] == "modelplane"
    assert release["skipCrds"] is True
    assert release["values"]["capacityProvider"] == "static"
    assert release["values"]["installCRDs"] is False
    assert len(g.all(CRD)) == len(load_crds(crds_dir()))
    classes = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in g.all(ACCEL)}
    assert set(classes) == {"nvidia-l4-24gb", "nvidia-h100-80gb"}
    for name, spec in classes.items():
        # The local cluster's GPU nodes carry the catalog's class label.
        assert spec["nodeSelector"] == {LABEL_ACCELERATOR_CLASS: name}
        assert "provisioning" not in spec


def test_release_name_is_configurable() -> None:
    op = {**stack_config("local")["modelplane:operator"], "release": "mp-x", "namespace": "mp-x"}
    release = local_graph(operator=op).one(RELEASE).inputs
    assert (release["name"], release["namespace"]) == ("mp-x", "mp-x")


def test_wrapper_modules_pin_the_pulumi_versions() -> None:
    v = versions()
    cli = (REPO / "tools/pulumi/go.mod").read_text()
    assert f"github.com/pulumi/pulumi/pkg/v3 v{v['PULUMI_VERSION']}" in cli
    k8s = (REPO / "tools/pulumi-kubernetes/go.mod").read_text()
    assert f"provider/v4 {v['PULUMI_KUBERNETES_MODULE']}" in k8s
    # The plugin reports the version the Python SDK in uv.lock asks for.
    lock = (REPO / "uv.lock").read_text()
    assert f'name = "pulumi-kubernetes"\nversion = "{v["PULUMI_KUBERNETES_VERSION"]}"' in lock
