"""The mocked resource graph of the EKS stacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_harness import Graph, crds_dir, is_secret_input, run_program, run_stack, stack_config

from modelplane.catalog.accelerators import (
    ACCELERATORS_BY_NAME,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    LABEL_ACCELERATOR_CLASS,
)
from modelplane_infra import config, regions
from modelplane_infra.aws import AwsGpuCluster, AwsGpuClusterArgs
from modelplane_infra.aws_iam import REGIONAL_READ_ACTIONS, UNSCOPABLE_ACTIONS
from modelplane_infra.crds import load_crds

GraphFn = Callable[[str], Graph]
RELEASE = "kubernetes:helm.sh/v3:Release"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
ACCEL = "kubernetes:modelplane.io/v1alpha1:AcceleratorClass"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
SUBNET = "aws:ec2/subnet:Subnet"

#: Actions AWS does not allow to scope to a resource ARN, so `Resource: "*"` is required; the
#: program's own list, never restated here.
UNSCOPABLE = UNSCOPABLE_ACTIONS


def test_unscopable_actions_are_reads_only() -> None:
    """Only reads may go unscoped: a write (Create/Run/Terminate/Pass...) on "*" is refused."""
    verbs = ("Describe", "Get", "List")
    writes = sorted(a for a in UNSCOPABLE_ACTIONS if not a.split(":", 1)[1].startswith(verbs))
    assert not writes, f"unscoped write actions: {writes}"
    assert len(UNSCOPABLE_ACTIONS) == len(REGIONAL_READ_ACTIONS) + 3


def release(g: Graph, helm_name: str) -> dict[str, Any]:
    found = [r.inputs for r in g.all(RELEASE) if r.inputs.get("name") == helm_name]
    assert len(found) == 1, [r.inputs.get("name") for r in g.all(RELEASE)]
    return found[0]


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def test_us_east_1_graph_has_cluster_karpenter_nodeclass_device_plugin_and_modelplane(
    stack_graph: GraphFn,
) -> None:
    g = stack_graph("aws-us-east-1")
    eks = g.one("aws:eks/cluster:Cluster")
    assert eks.inputs["name"] == "modelplane-use1"
    assert eks.inputs["version"] == "1.34"

    karpenter = release(g, "karpenter")
    assert karpenter["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert karpenter["version"] == "1.14.1"
    assert karpenter["namespace"] == "kube-system"

    nodeclass = g.one(NODECLASS)
    assert nodeclass.inputs["metadata"]["name"] == "modelplane-gpu"
    assert nodeclass.inputs["spec"]["amiSelectorTerms"] == [{"alias": "al2023@latest"}]

    nvdp = release(g, "nvidia-device-plugin")
    assert nvdp["repositoryOpts"]["repo"] == "https://nvidia.github.io/k8s-device-plugin"
    assert nvdp["version"] == "0.20.0"

    crd_names = sorted(r.inputs["metadata"]["name"] for r in g.all(CRD))
    assert crd_names == sorted(c["metadata"]["name"] for c in load_crds(crds_dir()))
    assert "acceleratorclasses.modelplane.io" in crd_names
    # CRDs are applied by Pulumi with server-side apply; the chart skips its own copy.
    assert g.one("pulumi:providers:kubernetes").inputs["enableServerSideApply"] == "true"
    mp = release(g, "modelplane")
    assert mp["skipCrds"] is True
    assert mp["chart"].endswith("charts/modelplane")

    # GPU taints/labels match the operator's defaults.
    classes = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in g.all(ACCEL)}
    assert set(classes) == {"nvidia-h100-80gb", "nvidia-l4-24gb"}
    for name, spec in classes.items():
        acc = ACCELERATORS_BY_NAME[name]
        assert spec["tolerations"] == [
            {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}
        ]
        assert spec["nodeSelector"] == {LABEL_ACCELERATOR_CLASS: name}
        assert spec["gpuProduct"] == acc.gpu_product
        assert spec["provisioning"]["karpenter"]["nodeClassRef"] == {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": "modelplane-gpu",
        }
    tolerations = nvdp["values"]["tolerations"]
    assert {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT} in tolerations


def test_every_resource_is_a_child_of_a_modelplane_component(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-east-1")
    top = "modelplane:infra:AwsGpuCluster"
    for urn in g.urns:
        qualified, name = urn.split("::")[2], urn.split("::")[3]
        parent_type, _, typ = qualified.rpartition("$")
        if typ == "pulumi:pulumi:Stack":
            continue
        if typ == top:
            assert parent_type == "pulumi:pulumi:Stack"
        else:
            assert parent_type.startswith("modelplane:infra:"), urn
        assert name.startswith("modelplane-use1"), urn  # child names derive from the component
    assert len(set(g.urns)) == len(g.urns)
    components = {r.typ for r in g.resources if r.typ.startswith("modelplane:infra:")}
    assert components == {
        top,
        "modelplane:infra:AwsNetwork",
        "modelplane:infra:EksCluster",
        "modelplane:infra:Karpenter",
        "modelplane:infra:NvidiaDevicePlugin",
        "modelplane:infra:ModelplaneInstall",
    }


def test_aws_resources_use_the_stack_region_provider(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-west-2")
    provider = g.one("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-west-2"
    for r in g.resources:
        if r.typ.startswith("aws:"):
            assert r.provider_id == f"{provider.name}-id", r.name
        if r.typ.startswith("kubernetes:"):
            assert r.provider_id == "modelplane-usw2-k8s-id", r.name


def test_nodes_run_in_private_subnets_across_zones(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-east-1")
    subnets = {f"{r.name}-id": r.inputs for r in g.all(SUBNET)}
    private = {k for k, v in subnets.items() if "-private-" in k}
    public = set(subnets) - private
    assert len(private) == len(public) == 3
    zones = {subnets[s]["availabilityZone"] for s in private}
    assert len(zones) == 3
    assert all(z.startswith("us-east-1") for z in zones)
    for s in private:
        assert subnets[s]["mapPublicIpOnLaunch"] is False
        assert subnets[s]["tags"]["karpenter.sh/discovery"] == "modelplane-use1"
    for s in public:
        assert "karpenter.sh/discovery" not in subnets[s]["tags"]
    # System nodes and the control plane ENIs only in private subnets.
    assert set(g.one("aws:eks/nodeGroup:NodeGroup").inputs["subnetIds"]) == private
    assert set(g.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]["subnetIds"]) == private
    # Private route tables send egress to a NAT gateway, never straight to the internet gateway.
    for rt in g.all("aws:ec2/routeTable:RouteTable"):
        routes = rt.inputs["routes"]
        if "-private-" in rt.name:
            assert all("natGatewayId" in r and "gatewayId" not in r for r in routes)
        else:
            assert all("gatewayId" in r for r in routes)
    # GPU nodes: the node class selects only the discovery-tagged (private) subnets.
    spec = g.one(NODECLASS).inputs["spec"]
    assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "modelplane-use1"}}]


def _statements(g: Graph) -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for r in g.all("aws:iam/policy:Policy") + g.all("aws:iam/rolePolicy:RolePolicy"):
        docs.append((r.name, json.loads(r.inputs["policy"])))
    for r in g.all("aws:iam/role:Role"):
        docs.append((r.name, json.loads(r.inputs["assumeRolePolicy"])))
    docs.append(("queue", json.loads(g.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])))
    return [(name, st) for name, doc in docs for st in doc["Statement"]]


def test_iam_has_no_wildcard_actions_and_star_resources_only_where_aws_requires(
    stack_graph: GraphFn,
) -> None:
    g = stack_graph("aws-us-east-1")
    statements = _statements(g)
    assert len(statements) > 15
    for name, st in statements:
        if st["Effect"] != "Allow":
            continue
        actions = as_list(st["Action"])
        assert all("*" not in a for a in actions), (name, actions)
        if "*" in as_list(st.get("Resource", [])):
            assert set(actions) <= UNSCOPABLE, (name, actions)
    # The one Deny is the queue's refusal of plain HTTP.
    denies = [st for _, st in statements if st["Effect"] == "Deny"]
    assert denies == [
        {
            "Sid": "DenyHTTP",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": denies[0]["Resource"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]


def test_karpenter_writes_are_scoped_to_this_cluster(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-east-1")
    lifecycle = json.loads(g.one("aws:iam/policy:Policy", "nodelifecycle").inputs["policy"])
    for st in lifecycle["Statement"]:
        for arn in as_list(st["Resource"]):
            assert arn.startswith("arn:aws:ec2:us-east-1:"), arn
    deletion = next(s for s in lifecycle["Statement"] if s["Sid"] == "AllowScopedDeletion")
    assert deletion["Condition"]["StringEquals"] == {
        "aws:ResourceTag/kubernetes.io/cluster/modelplane-use1": "owned"
    }
    iam = json.loads(g.one("aws:iam/policy:Policy", "iamintegration").inputs["policy"])
    pass_role = next(s for s in iam["Statement"] if s["Sid"] == "AllowPassingInstanceRole")
    node_role = g.one("aws:iam/role:Role", "karpenter-node")
    assert pass_role["Resource"].endswith(node_role.name)
    queue_policy = json.loads(g.one("aws:iam/policy:Policy", "interruption").inputs["policy"])
    assert queue_policy["Statement"][0]["Resource"].endswith("Queue/modelplane-use1")


def test_karpenter_identity_queue_and_release_agree(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-east-1")
    controller = g.one("aws:iam/role:Role", "karpenter-controller")
    trust = json.loads(controller.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert trust["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assoc = g.one("aws:eks/podIdentityAssociation:PodIdentityAssociation").inputs
    values = release(g, "karpenter")["values"]
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("kube-system", "karpenter")
    assert values["serviceAccount"]["name"] == assoc["serviceAccount"]
    assert assoc["roleArn"].endswith(controller.name)
    assert g.one("aws:eks/addon:Addon").inputs["addonName"] == "eks-pod-identity-agent"

    queue = g.one("aws:sqs/queue:Queue").inputs
    assert queue["sqsManagedSseEnabled"] is True
    assert queue["messageRetentionSeconds"] == 300
    assert values["settings"] == {
        "clusterName": "modelplane-use1",
        "interruptionQueue": queue["name"],
    }
    patterns = sorted(
        (
            json.loads(r.inputs["eventPattern"])["source"][0],
            json.loads(r.inputs["eventPattern"])["detail-type"][0],
        )
        for r in g.all("aws:cloudwatch/eventRule:EventRule")
    )
    assert len(patterns) == 5
    assert ("aws.ec2", "EC2 Spot Instance Interruption Warning") in patterns
    assert ("aws.health", "AWS Health Event") in patterns
    targets = g.all("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == 5
    assert {t.inputs["arn"] for t in targets} == {
        "arn:aws:mock:us-east-1:123456789012:Queue/modelplane-use1"
    }
    # Karpenter-launched nodes can join: EC2_LINUX access entry for the node role.
    entry = g.one("aws:eks/accessEntry:AccessEntry").inputs
    assert entry["type"] == "EC2_LINUX"
    assert entry["principalArn"].endswith("karpenter-node")


def test_secrets_and_volumes_are_encrypted_at_rest(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-east-1")
    key = g.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    enc = g.one("aws:eks/cluster:Cluster").inputs["encryptionConfig"]
    assert enc["resources"] == ["secrets"]
    assert enc["provider"]["keyArn"].endswith(f"Key/{key.name}")
    kms_policy = json.loads(g.one("aws:iam/rolePolicy:RolePolicy", "cluster-kms").inputs["policy"])
    assert kms_policy["Statement"][0]["Resource"].endswith(f"Key/{key.name}")
    lt = g.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    assert lt["metadataOptions"]["httpTokens"] == "required"
    gpu_disk = g.one(NODECLASS).inputs["spec"]["blockDeviceMappings"][0]["ebs"]
    assert gpu_disk["encrypted"] is True
    assert gpu_disk["volumeSize"] == "500Gi"


def test_chart_values_come_from_stack_config() -> None:
    cfg = stack_config("aws-us-east-1")
    operator = {
        "image": {"repository": "registry.example/mp", "tag": "1.2.3"},
        "logLevel": "DEBUG",
        "resyncIntervalSeconds": 120,
        "serviceMonitor": True,
        "namespace": "mp-system",
    }
    g = run_stack(
        "aws-us-east-1", {"modelplane:operator": {**cfg["modelplane:operator"], **operator}}
    )
    mp = release(g, "modelplane")
    assert mp["namespace"] == "mp-system"
    assert mp["values"] == {
        "capacityProvider": "karpenter",
        "resyncIntervalSeconds": 120,
        "logLevel": "DEBUG",
        "installCRDs": False,
        "defaultAcceleratorClasses": False,
        "image": {"repository": "registry.example/mp", "tag": "1.2.3"},
        "serviceMonitor": True,
    }
    # The values are valid for the chart's own schema (the typed model behind values.schema.json).
    from modelplane.chartvalues import ChartValues

    ChartValues.model_validate(mp["values"])
    assert g.one("kubernetes:core/v1:Namespace").inputs["metadata"]["name"] == "mp-system"


def test_accelerator_classes_follow_region_table_and_capacity_types(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-west-2")
    classes = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in g.all(ACCEL)}
    assert set(classes) == {"nvidia-l40s-48gb", "nvidia-a10g-24gb"}
    for name, spec in classes.items():
        reqs = {r["key"]: r for r in spec["provisioning"]["karpenter"]["requirements"]}
        offered = list(regions.offer("aws", "us-west-2").gpus[name])
        assert reqs["node.kubernetes.io/instance-type"]["values"] == offered
        assert spec["instanceTypes"] == offered
        assert reqs["karpenter.sh/capacity-type"]["values"] == ["on-demand", "spot"]
        assert reqs["karpenter.k8s.aws/instance-gpu-name"]["values"] == list(
            ACCELERATORS_BY_NAME[name].karpenter_values
        )
        assert reqs["karpenter.k8s.aws/instance-gpu-memory"]["values"] == [
            str(ACCELERATORS_BY_NAME[name].memory_mib)
        ]
    assert g.one(NODECLASS).inputs["spec"]["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "300Gi"


def test_kubeconfig_output_is_secret_and_uses_aws_cli(stack_graph: GraphFn) -> None:
    g = stack_graph("aws-us-west-2")
    assert g.result["kubeconfig_secret"] is True
    kube = json.loads(g.result["kubeconfig"])
    exec_ = kube["users"][0]["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"][:2] == ["--region", "us-west-2"]
    assert "modelplane-usw2" in exec_["args"]
    assert kube["clusters"][0]["cluster"]["server"] == g.result["endpoint"]
    assert g.result["region"] == "us-west-2"
    assert g.result["gpu_node_class_names"] == ["modelplane-gpu"]
    # The kubeconfig reaches the Kubernetes provider as a secret.
    assert is_secret_input(g.one("pulumi:providers:kubernetes").raw["kubeconfig"])


def test_registry_credentials_become_a_secret_pull_secret() -> None:
    creds = '{"auths": {"registry.example": {"auth": "dXNlcjpwYXNz"}}}'
    g = run_stack(
        "aws-us-east-1",
        {"modelplane:registryCredentials": creds},
        secret_keys=("modelplane:registryCredentials",),
    )
    secret = g.one("kubernetes:core/v1:Secret")
    assert secret.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert secret.inputs["stringData"] == {".dockerconfigjson": creds}
    data = secret.raw["stringData"]
    assert is_secret_input(data) or is_secret_input(data[".dockerconfigjson"])
    assert creds not in json.dumps(release(g, "modelplane"))
    assert release(g, "modelplane")["values"]["imagePullSecrets"] == [
        {"name": secret.inputs["metadata"]["name"]}
    ]


def test_admin_principals_get_cluster_admin_access_entries() -> None:
    arn = "arn:aws:iam::123456789012:role/platform-admins"
    g = run_stack("aws-us-east-1", {"modelplane:adminPrincipalArns": [arn]})
    entries = [r.inputs for r in g.all("aws:eks/accessEntry:AccessEntry")]
    assert {"STANDARD", "EC2_LINUX"} == {e["type"] for e in entries}
    assoc = g.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation").inputs
    assert assoc["principalArn"] == arn
    assert assoc["policyArn"].endswith("cluster-access-policy/AmazonEKSClusterAdminPolicy")
    assert assoc["accessScope"] == {"type": "cluster"}


def test_explicit_availability_zones_are_used() -> None:
    zones = ["us-east-1b", "us-east-1d"]
    g = run_stack(
        "aws-us-east-1", {"modelplane:network": {"cidr": "10.9.0.0/16", "availabilityZones": zones}}
    )
    private = [r.inputs for r in g.all(SUBNET) if "-private-" in r.name]
    assert [s["availabilityZone"] for s in private] == zones
    assert [s["cidrBlock"] for s in private] == ["10.9.0.0/19", "10.9.32.0/19"]
    assert not [c for c in g.mocks.calls if "getAvailabilityZones" in c[0]]


def test_two_regions_give_two_independent_clusters() -> None:
    def raw(stack: str) -> dict[str, Any]:
        return {
            k.split(":", 1)[1]: v
            for k, v in stack_config(stack).items()
            if k.startswith("modelplane:")
        }

    east = config.validate(raw("aws-us-east-1"))
    west = config.validate(raw("aws-us-west-2"))
    assert isinstance(east, config.AwsStack)
    assert isinstance(west, config.AwsStack)
    crds = load_crds(crds_dir())

    def program() -> list[AwsGpuCluster]:
        return [
            AwsGpuCluster(c.cluster_name, AwsGpuClusterArgs(config=c, crds=crds))
            for c in (east, west)
        ]

    g = run_program("multi", program, {})
    providers = {r.inputs["region"]: f"{r.name}-id" for r in g.all("pulumi:providers:aws")}
    assert set(providers) == {"us-east-1", "us-west-2"}
    clusters = {r.inputs["name"]: r for r in g.all("aws:eks/cluster:Cluster")}
    assert set(clusters) == {"modelplane-use1", "modelplane-usw2"}
    assert clusters["modelplane-use1"].provider_id == providers["us-east-1"]
    assert clusters["modelplane-usw2"].provider_id == providers["us-west-2"]
    # Every AWS resource belongs to exactly one region, named after its cluster.
    for r in g.resources:
        if r.typ.startswith("aws:"):
            owner = "us-east-1" if r.name.startswith("modelplane-use1") else "us-west-2"
            assert r.provider_id == providers[owner], r.name
    # Subnets only reference their own VPC; two VPCs, two queues, two k8s providers.
    vpcs = {f"{r.name}-id" for r in g.all("aws:ec2/vpc:Vpc")}
    assert len(vpcs) == 2
    for s in g.all(SUBNET):
        assert s.inputs["vpcId"].split("-net-")[0] == s.name.split("-net-")[0]
    assert len(g.all("aws:sqs/queue:Queue")) == 2
    assert len(g.all("pulumi:providers:kubernetes")) == 2
    assert len({r.inputs["name"] for r in g.all("aws:sqs/queue:Queue")}) == 2
    assert len(g.urns) == len(set(g.urns))
    assert g.result["all"][1]["region"] == "us-west-2"


@pytest.mark.parametrize("stack", ["aws-us-east-1", "aws-us-west-2"])
def test_graph_per_stack(stack_graph: GraphFn, stack: str) -> None:
    """The shape of each AWS stack: counts per type that a refactor must not lose."""
    g = stack_graph(stack)
    count = {t: len(g.all(t)) for t in g.types()}
    n_gpus = len(
        config.validate(
            {
                k.split(":", 1)[1]: v
                for k, v in stack_config(stack).items()
                if k.startswith("modelplane:")
            }
        ).gpu_types
    )
    assert count["aws:eks/cluster:Cluster"] == 1
    assert count["aws:eks/nodeGroup:NodeGroup"] == 1
    assert count[SUBNET] == 6
    assert count["aws:ec2/natGateway:NatGateway"] == 3
    assert count["aws:iam/policy:Policy"] == 6
    assert count["aws:cloudwatch/eventRule:EventRule"] == 5
    assert count[NODECLASS] == 1
    assert count[RELEASE] == 3
    assert count[ACCEL] == n_gpus
    assert "kubernetes:karpenter.sh/v1:NodePool" not in count  # the operator owns NodePools
