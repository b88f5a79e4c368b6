"""The mocked resource graph of the GKE stack."""

from __future__ import annotations

import json
from collections.abc import Callable

from pulumi_harness import Graph, run_stack

from modelplane.catalog.accelerators import (
    ACCELERATORS_BY_NAME,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    LABEL_ACCELERATOR_CLASS,
    LABEL_INSTANCE_TYPE,
)
from modelplane_infra import regions

GraphFn = Callable[[str], Graph]
POOL = "gcp:container/nodePool:NodePool"
STACK = "gcp-us-central1"


def gpu_pools(g: Graph) -> dict[str, dict]:
    return {r.inputs["name"]: r.inputs for r in g.all(POOL) if r.inputs["name"] != "system"}


def test_gke_cluster_is_private_with_workload_identity_and_kms(stack_graph: GraphFn) -> None:
    g = stack_graph(STACK)
    c = g.one("gcp:container/cluster:Cluster").inputs
    assert c["name"] == "modelplane-usc1"
    assert c["location"] == "us-central1"
    assert c["privateClusterConfig"]["enablePrivateNodes"] is True
    assert c["workloadIdentityConfig"] == {"workloadPool": "modelplane-prod.svc.id.goog"}
    assert c["removeDefaultNodePool"] is True
    assert c["releaseChannel"] == {"channel": "REGULAR"}
    assert c["masterAuthorizedNetworksConfig"]["cidrBlocks"][0]["cidrBlock"] == "203.0.113.0/24"
    key = g.one("gcp:kms/cryptoKey:CryptoKey")
    assert c["databaseEncryption"] == {"state": "ENCRYPTED", "keyName": f"{key.name}-id"}
    assert key.inputs["rotationPeriod"] == "7776000s"
    grant = g.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember").inputs
    assert grant["cryptoKeyId"] == f"{key.name}-id"
    assert grant["member"] == (
        "serviceAccount:service-424242424242@container-engine-robot.iam.gserviceaccount.com"
    )
    # Nodes have no public IPs, so egress needs Cloud NAT.
    assert g.one("gcp:compute/routerNat:RouterNat").inputs["natIpAllocateOption"] == "AUTO_ONLY"
    assert g.one("gcp:compute/subnetwork:Subnetwork").inputs["privateIpGoogleAccess"] is True


def test_gpu_pools_are_tainted_labelled_and_get_the_driver(stack_graph: GraphFn) -> None:
    g = stack_graph(STACK)
    pools = gpu_pools(g)
    assert set(pools) == {"gpu-g2-standard-4", "gpu-g2-standard-48", "gpu-a3-highgpu-8g"}
    for pool in pools.values():
        node = pool["nodeConfig"]
        acc_name = node["labels"][LABEL_ACCELERATOR_CLASS]
        acc = ACCELERATORS_BY_NAME[acc_name]
        shape = next(s for s in acc.shapes if s.gcp_equivalent == node["machineType"])
        assert node["taints"] == [
            {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NO_SCHEDULE"}
        ]
        expected = acc.node_labels(shape)
        del expected[LABEL_INSTANCE_TYPE]
        assert node["labels"] == expected
        (gpu,) = node["guestAccelerators"]
        assert gpu["count"] == shape.gpus
        assert gpu["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "LATEST"}
        assert pool["nodeLocations"] == list(regions.gcp_zones("us-central1", acc_name))
        assert pool["autoscaling"]["totalMaxNodeCount"] == 4
        assert pool["autoscaling"]["totalMinNodeCount"] == 0
        assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    types = {p["nodeConfig"]["guestAccelerators"][0]["type"] for p in pools.values()}
    assert types == {"nvidia-l4", "nvidia-h100-80gb"}


def test_system_pool_is_untainted_and_uses_a_dedicated_service_account(
    stack_graph: GraphFn,
) -> None:
    g = stack_graph(STACK)
    system = next(r.inputs for r in g.all(POOL) if r.inputs["name"] == "system")
    assert "taints" not in system["nodeConfig"]
    assert "guestAccelerators" not in system["nodeConfig"]
    sa = g.one("gcp:serviceaccount/account:Account").inputs
    for pool in g.all(POOL):
        assert pool.inputs["nodeConfig"]["serviceAccount"].startswith(sa["accountId"])
    roles = {r.inputs["role"] for r in g.all("gcp:projects/iAMMember:IAMMember")}
    assert roles == {"roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader"}


def test_gke_installs_modelplane_with_static_capacity(stack_graph: GraphFn) -> None:
    g = stack_graph(STACK)
    mp = next(
        r.inputs for r in g.all("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "modelplane"
    )
    assert mp["skipCrds"] is True
    assert mp["values"]["capacityProvider"] == "static"
    # GKE installs the driver and device plugin itself: no NVIDIA chart, no Karpenter.
    assert len(g.all("kubernetes:helm.sh/v3:Release")) == 1
    classes = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in g.all("kubernetes:modelplane.io/v1alpha1:AcceleratorClass")
    }
    assert set(classes) == {"nvidia-l4-24gb", "nvidia-h100-80gb"}
    pool_labels = [p["nodeConfig"]["labels"] for p in gpu_pools(g).values()]
    for name, spec in classes.items():
        assert "provisioning" not in spec
        # Each class selects nodes that a GPU pool actually labels.
        assert any(
            all(labels.get(k) == v for k, v in spec["nodeSelector"].items())
            for labels in pool_labels
        ), name
    # Registration order under mocks is not declaration order (registrations are async).
    assert sorted(g.result["gpu_node_class_names"]) == sorted(gpu_pools(g))
    kube = json.loads(g.result["kubeconfig"])
    assert kube["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert g.result["kubeconfig_secret"] is True


def test_gcp_values_from_config() -> None:
    g = run_stack(
        STACK,
        {
            "modelplane:gpuTypes": ["nvidia-a100-40gb"],
            "modelplane:gpuNodes": {"maxNodes": 2, "spot": True, "driverVersion": "DEFAULT"},
        },
    )
    (pool,) = gpu_pools(g).values()
    assert pool["nodeConfig"]["machineType"] == "a2-highgpu-8g"
    assert pool["nodeConfig"]["spot"] is True
    assert pool["nodeConfig"]["guestAccelerators"][0]["type"] == "nvidia-tesla-a100"
    assert pool["nodeConfig"]["guestAccelerators"][0]["gpuDriverInstallationConfig"] == {
        "gpuDriverVersion": "DEFAULT"
    }
    assert pool["autoscaling"]["totalMaxNodeCount"] == 2
    assert g.one("pulumi:providers:gcp").inputs["project"] == "modelplane-prod"
