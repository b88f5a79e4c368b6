"""EKS: network, cluster, Karpenter with a GPU EC2NodeClass, and the whole stack for one region."""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from modelplane import kubeconfig
from modelplane_infra import regions
from modelplane_infra.aws_iam import (
    INTERRUPTION_RULES,
    KarpenterScope,
    Policy,
    assume_role,
    interruption_queue_policy,
    karpenter_controller_policies,
    kms_for_cluster_role,
)
from modelplane_infra.config import AwsStack, AwsSystemNodes
from modelplane_infra.gpu import (
    KARPENTER_DISCOVERY_TAG,
    MANAGED_BY,
    NodeClassRef,
    accelerator_class_spec,
)
from modelplane_infra.kubernetes import (
    ModelplaneInstall,
    ModelplaneInstallArgs,
    NvidiaDevicePlugin,
    NvidiaDevicePluginArgs,
)

SYSTEM_NODE_LABEL = {"modelplane.io/node-role": "system"}
GPU_NODE_CLASS = "modelplane-gpu"
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_SERVICE_ACCOUNT = "karpenter"
#: Karpenter's node role policy set (getting-started CloudFormation, KarpenterNodeRole).
NODE_ROLE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)


def _managed(partition: pulumi.Input[str], policy: str) -> pulumi.Output[str]:
    return pulumi.Output.concat("arn:", partition, ":iam::aws:policy/", policy)


def subnet_plan(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """(private, public) CIDRs: large private subnets (the VPC CNI gives pods subnet IPs), small
    public ones for NAT gateways and internet-facing load balancers, carved from the last block."""
    net = ipaddress.IPv4Network(cidr)
    blocks = list(net.subnets(prefixlen_diff=3))
    private = [str(b) for b in blocks[:zones]]
    public = [str(b) for b in list(blocks[-1].subnets(prefixlen_diff=3))[:zones]]
    return private, public


@dataclass
class AwsNetworkArgs:
    cluster_name: str
    cidr: str
    zone_count: int
    availability_zones: Sequence[str] | None = None


class AwsNetwork(pulumi.ComponentResource):
    """A VPC across `zone_count` zones: private subnets for nodes (egress through one NAT
    gateway per zone) and public subnets for the NAT gateways and internet-facing LBs."""

    def __init__(
        self, name: str, args: AwsNetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:AwsNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster = args.cluster_name
        zones: list[pulumi.Output[str]]
        if args.availability_zones:
            zones = [pulumi.Output.from_input(z) for z in args.availability_zones]
        else:
            found = aws.get_availability_zones_output(
                state="available",
                filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
                opts=pulumi.InvokeOutputOptions(parent=self),
            )
            zones = [
                found.names.apply(functools.partial(_zone, i=i)) for i in range(args.zone_count)
            ]
        private_cidrs, public_cidrs = subnet_plan(args.cidr, args.zone_count)

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": cluster},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags={"Name": cluster}, opts=child
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{cluster}-public"},
            opts=child,
        )
        self.public_subnets: list[aws.ec2.Subnet] = []
        self.private_subnets: list[aws.ec2.Subnet] = []
        for i, zone in enumerate(zones):
            public = aws.ec2.Subnet(
                f"{name}-public-{i}",
                vpc_id=self.vpc.id,
                availability_zone=zone,
                cidr_block=public_cidrs[i],
                map_public_ip_on_launch=False,
                tags={"Name": f"{cluster}-public-{i}", "kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}", subnet_id=public.id, route_table_id=public_rt.id, opts=child
            )
            eip = aws.ec2.Eip(
                f"{name}-nat-{i}", domain="vpc", tags={"Name": f"{cluster}-nat-{i}"}, opts=child
            )
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{i}",
                allocation_id=eip.id,
                subnet_id=public.id,
                tags={"Name": f"{cluster}-nat-{i}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )
            private = aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=self.vpc.id,
                availability_zone=zone,
                cidr_block=private_cidrs[i],
                map_public_ip_on_launch=False,
                tags={
                    "Name": f"{cluster}-private-{i}",
                    "kubernetes.io/role/internal-elb": "1",
                    KARPENTER_DISCOVERY_TAG: cluster,
                },
                opts=child,
            )
            private_rt = aws.ec2.RouteTable(
                f"{name}-private-{i}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={"Name": f"{cluster}-private-{i}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}",
                subnet_id=private.id,
                route_table_id=private_rt.id,
                opts=child,
            )
            self.public_subnets.append(public)
            self.private_subnets.append(private)

        self.vpc_id = self.vpc.id
        self.private_subnet_ids = [s.id for s in self.private_subnets]
        self.public_subnet_ids = [s.id for s in self.public_subnets]
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )


def _policy_json(key: str, documents: dict[str, Policy]) -> str:
    return json.dumps(documents[key])


def _zone(names: Sequence[str], i: int) -> str:
    if i >= len(names):
        raise ValueError(
            f"the region has only {len(names)} usable availability zones; "
            "lower modelplane:network.zoneCount or list network.availabilityZones"
        )
    return names[i]


def eks_kubeconfig(
    cluster_name: pulumi.Input[str],
    endpoint: pulumi.Input[str],
    ca_data: pulumi.Input[str],
    region: str,
) -> pulumi.Output[str]:
    """A kubeconfig that authenticates with `aws eks get-token` (needs the AWS CLI)."""

    def render(args: list[str]) -> str:
        name, server, ca = args
        token_args = ["--region", region, "eks", "get-token", "--cluster-name", name]
        user = kubeconfig.exec_user("aws", [*token_args, "--output", "json"])
        return json.dumps(
            kubeconfig.render(server=server, ca_data=ca, user=user, cluster=name), indent=2
        )

    return pulumi.Output.secret(pulumi.Output.all(cluster_name, endpoint, ca_data).apply(render))


@dataclass
class EksClusterArgs:
    cluster_name: str
    region: str
    kubernetes_version: str
    subnet_ids: Sequence[pulumi.Input[str]]
    api_allowed_cidrs: Sequence[str]
    system_nodes: AwsSystemNodes
    deletion_protection: bool = True
    admin_principal_arns: Sequence[str] = field(default_factory=list)


class EksCluster(pulumi.ComponentResource):
    """The EKS control plane (secrets envelope-encrypted with a KMS key), a system node group in
    the private subnets, the Pod Identity agent, and access entries for administrators."""

    def __init__(
        self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster = args.cluster_name
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition

        self.kms_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets envelope encryption for {cluster}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets",
            name=f"alias/{cluster}-eks-secrets",
            target_key_id=self.kms_key.key_id,
            opts=child,
        )

        self.cluster_role = aws.iam.Role(
            f"{name}-cluster",
            assume_role_policy=json.dumps(assume_role("eks.amazonaws.com")),
            opts=child,
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=self.cluster_role.name,
            policy_arn=_managed(partition, "AmazonEKSClusterPolicy"),
            opts=child,
        )
        cluster_kms = aws.iam.RolePolicy(
            f"{name}-cluster-kms",
            role=self.cluster_role.id,
            policy=self.kms_key.arn.apply(lambda arn: json.dumps(kms_for_cluster_role(arn))),
            opts=child,
        )

        self.cluster = aws.eks.Cluster(
            f"{name}-control-plane",
            name=cluster,
            role_arn=self.cluster_role.arn,
            version=args.kubernetes_version,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.subnet_ids),
                endpoint_private_access=True,
                endpoint_public_access=True,
                public_access_cidrs=list(args.api_allowed_cidrs),
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=self.kms_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            deletion_protection=args.deletion_protection,
            tags={KARPENTER_DISCOVERY_TAG: cluster},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy, cluster_kms]),
        )
        # Karpenter's EC2NodeClass finds the security group for GPU nodes by this tag.
        aws.ec2.Tag(
            f"{name}-sg-discovery",
            resource_id=self.cluster.vpc_config.cluster_security_group_id,
            key=KARPENTER_DISCOVERY_TAG,
            value=cluster,
            opts=child,
        )

        self.node_role = aws.iam.Role(
            f"{name}-system-node",
            assume_role_policy=json.dumps(assume_role("ec2.amazonaws.com")),
            opts=child,
        )
        node_policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-system-node-{p.lower().replace('_', '-')}",
                role=self.node_role.name,
                policy_arn=_managed(partition, p),
                opts=child,
            )
            for p in NODE_ROLE_POLICIES
        ]
        nodes = args.system_nodes
        template = aws.ec2.LaunchTemplate(
            f"{name}-system",
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=nodes.disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            # IMDSv2 only; hop limit 2 so add-ons that read the region from IMDS keep working.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=2
            ),
            update_default_version=True,
            opts=child,
        )
        self.system_nodes = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster.name,
            node_group_name=f"{cluster}-system",
            node_role_arn=self.node_role.arn,
            subnet_ids=list(args.subnet_ids),
            instance_types=list(nodes.instance_types),
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=nodes.min_size, desired_size=nodes.desired_size, max_size=nodes.max_size
            ),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=SYSTEM_NODE_LABEL,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=node_policies,
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )
        self.pod_identity_agent = aws.eks.Addon(
            f"{name}-pod-identity",
            cluster_name=self.cluster.name,
            addon_name="eks-pod-identity-agent",
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_nodes]),
        )
        for i, arn in enumerate(args.admin_principal_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}",
                cluster_name=self.cluster.name,
                principal_arn=arn,
                type="STANDARD",
                opts=child,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=self.cluster.name,
                principal_arn=arn,
                policy_arn=pulumi.Output.concat(
                    "arn:", partition, ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
                ),
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

        self.cluster_name = self.cluster.name
        self.endpoint = self.cluster.endpoint
        self.kubeconfig = eks_kubeconfig(
            self.cluster.name,
            self.cluster.endpoint,
            self.cluster.certificate_authority.data,
            args.region,
        )
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "kmsKeyArn": self.kms_key.arn,
            }
        )


@dataclass
class KarpenterArgs:
    cluster_name: pulumi.Input[str]
    region: str
    chart_version: str
    ami_alias: str
    gpu_volume_gib: int
    #: Resources the controller needs before it starts (system nodes, Pod Identity agent).
    release_depends_on: Sequence[pulumi.Resource] = field(default_factory=list)
    node_class_name: str = GPU_NODE_CLASS


class Karpenter(pulumi.ComponentResource):
    """Karpenter: node and controller IAM (Pod Identity), the interruption queue fed by
    EventBridge, the Helm release, and the EC2NodeClass GPU NodePools point at.

    Needs an AWS and a Kubernetes provider in `opts.providers`. NodePools are not created here:
    the operator owns them, one per AcceleratorClass in use.
    """

    def __init__(
        self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id
        cluster = pulumi.Output.from_input(args.cluster_name)

        # Node role: what Karpenter-launched instances run as.
        self.node_role = aws.iam.Role(
            f"{name}-node",
            assume_role_policy=json.dumps(assume_role("ec2.amazonaws.com")),
            opts=child,
        )
        for p in NODE_ROLE_POLICIES:
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{p.lower().replace('_', '-')}",
                role=self.node_role.name,
                policy_arn=_managed(partition, p),
                opts=child,
            )
        # API authentication mode: nodes join through an EC2_LINUX access entry.
        aws.eks.AccessEntry(
            f"{name}-node",
            cluster_name=cluster,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            opts=child,
        )

        # Interruption handling: EventBridge -> SQS -> Karpenter drains before the node goes.
        self.queue = aws.sqs.Queue(
            f"{name}-interruption",
            name=cluster,
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruption",
            queue_url=self.queue.url,
            policy=self.queue.arn.apply(lambda arn: json.dumps(interruption_queue_policy(arn))),
            opts=child,
        )
        for short, source, detail_type in INTERRUPTION_RULES:
            rule = aws.cloudwatch.EventRule(
                f"{name}-{short}",
                event_pattern=json.dumps({"source": [source], "detail-type": [detail_type]}),
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{short}",
                rule=rule.name,
                target_id="KarpenterInterruptionQueueTarget",
                arn=self.queue.arn,
                opts=child,
            )

        # Controller role, assumed through EKS Pod Identity.
        self.controller_role = aws.iam.Role(
            f"{name}-controller",
            assume_role_policy=json.dumps(assume_role("pods.eks.amazonaws.com", tag_session=True)),
            opts=child,
        )
        documents = pulumi.Output.all(
            partition, account, cluster, self.queue.arn, self.node_role.arn
        ).apply(
            lambda a: karpenter_controller_policies(
                KarpenterScope(
                    partition=a[0],
                    region=args.region,
                    account=a[1],
                    cluster=a[2],
                    queue_arn=a[3],
                    node_role_arn=a[4],
                )
            )
        )
        attachments: list[pulumi.Resource] = []
        for short in (
            "NodeLifecycle",
            "IAMIntegration",
            "EKSIntegration",
            "Interruption",
            "ZonalShift",
            "ResourceDiscovery",
        ):
            policy = aws.iam.Policy(
                f"{name}-{short.lower()}",
                description=f"Karpenter controller: {short}",
                policy=documents.apply(functools.partial(_policy_json, short)),
                opts=child,
            )
            attachments.append(
                aws.iam.RolePolicyAttachment(
                    f"{name}-{short.lower()}",
                    role=self.controller_role.name,
                    policy_arn=policy.arn,
                    opts=child,
                )
            )
        pod_identity = aws.eks.PodIdentityAssociation(
            f"{name}-controller",
            cluster_name=cluster,
            namespace=KARPENTER_NAMESPACE,
            service_account=KARPENTER_SERVICE_ACCOUNT,
            role_arn=self.controller_role.arn,
            opts=child,
        )

        self.release = k8s.helm.v3.Release(
            f"{name}-chart",
            # Pinned: the ServiceAccount name follows the release name, and Pod Identity is
            # bound to kube-system/karpenter.
            name="karpenter",
            chart="oci://public.ecr.aws/karpenter/karpenter",
            version=args.chart_version,
            namespace=KARPENTER_NAMESPACE,
            values={
                "settings": {"clusterName": cluster, "interruptionQueue": self.queue.name},
                "serviceAccount": {"name": KARPENTER_SERVICE_ACCOUNT},
                "controller": {
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    }
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[pod_identity, *attachments, *args.release_depends_on],
            ),
        )

        self.node_class_name = args.node_class_name
        self.node_class = k8s.apiextensions.CustomResource(
            f"{name}-gpu-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": args.node_class_name, "labels": MANAGED_BY},
            spec={
                "role": self.node_role.name,
                # The al2023 alias resolves the NVIDIA AMI variant for GPU instance types.
                "amiSelectorTerms": [{"alias": args.ami_alias}],
                "subnetSelectorTerms": [{"tags": {KARPENTER_DISCOVERY_TAG: cluster}}],
                "securityGroupSelectorTerms": [{"tags": {KARPENTER_DISCOVERY_TAG: cluster}}],
                "blockDeviceMappings": [
                    {
                        "deviceName": "/dev/xvda",
                        "ebs": {
                            "volumeSize": f"{args.gpu_volume_gib}Gi",
                            "volumeType": "gp3",
                            "encrypted": True,
                            "deleteOnTermination": True,
                        },
                    }
                ],
                # Local NVMe (p4d/p5) becomes ephemeral storage for images and weight caches.
                "instanceStorePolicy": "RAID0",
                "metadataOptions": {
                    "httpEndpoint": "enabled",
                    "httpTokens": "required",
                    "httpPutResponseHopLimit": 1,
                },
                "tags": {"modelplane.io/node-class": args.node_class_name},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
        )
        self.node_class_ref = NodeClassRef(
            "karpenter.k8s.aws", "EC2NodeClass", args.node_class_name
        )
        self.register_outputs(
            {
                "nodeClassName": args.node_class_name,
                "interruptionQueue": self.queue.name,
                "controllerRoleArn": self.controller_role.arn,
            }
        )


@dataclass
class AwsGpuClusterArgs:
    config: AwsStack
    crds: Sequence[dict[str, object]]


class AwsGpuCluster(pulumi.ComponentResource):
    """One region: VPC, EKS, Karpenter + GPU node class, NVIDIA device plugin, modelplane.

    Uses its own AWS provider pinned to the stack's region, so two of these in one program (or
    two stacks) never share a resource.
    """

    def __init__(
        self, name: str, args: AwsGpuClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:AwsGpuCluster", name, None, opts)
        cfg = args.config
        self.aws_provider = aws.Provider(
            f"{name}-aws",
            region=cfg.region,
            default_tags=aws.ProviderDefaultTagsArgs(
                tags={
                    "modelplane.io/cluster": cfg.cluster_name,
                    "app.kubernetes.io/managed-by": "pulumi",
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_aws = pulumi.ResourceOptions(parent=self, providers=[self.aws_provider])

        self.network = AwsNetwork(
            f"{name}-net",
            AwsNetworkArgs(
                cluster_name=cfg.cluster_name,
                cidr=cfg.network.cidr,
                zone_count=cfg.zone_count,
                availability_zones=cfg.network.availability_zones,
            ),
            opts=on_aws,
        )
        self.eks = EksCluster(
            f"{name}-eks",
            EksClusterArgs(
                cluster_name=cfg.cluster_name,
                region=cfg.region,
                kubernetes_version=cfg.kubernetes_version,
                subnet_ids=self.network.private_subnet_ids,
                api_allowed_cidrs=cfg.api_allowed_cidrs,
                system_nodes=cfg.system_nodes,
                deletion_protection=cfg.deletion_protection,
                admin_principal_arns=cfg.admin_principal_arns,
            ),
            opts=on_aws,
        )
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.eks.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.eks.system_nodes]),
        )
        on_both = pulumi.ResourceOptions(
            parent=self, providers=[self.aws_provider, self.k8s_provider]
        )
        on_k8s = pulumi.ResourceOptions(parent=self, providers=[self.k8s_provider])

        self.karpenter = Karpenter(
            f"{name}-karpenter",
            KarpenterArgs(
                cluster_name=self.eks.cluster_name,
                region=cfg.region,
                chart_version=cfg.karpenter.chart_version,
                ami_alias=cfg.karpenter.ami_alias,
                gpu_volume_gib=cfg.karpenter.gpu_volume_gib,
                release_depends_on=[self.eks.system_nodes, self.eks.pod_identity_agent],
            ),
            opts=on_both,
        )
        self.device_plugin = NvidiaDevicePlugin(
            f"{name}-nvidia",
            NvidiaDevicePluginArgs(chart_version=cfg.nvidia_device_plugin.chart_version),
            opts=on_k8s,
        )
        classes = {
            gpu: accelerator_class_spec(
                acc,
                shapes=regions.aws_shapes(cfg.region, gpu),
                instance_types=[s.name for s in regions.aws_shapes(cfg.region, gpu)],
                karpenter=(self.karpenter.node_class_ref, cfg.karpenter.capacity_types),
            )
            for gpu, acc in zip(cfg.gpu_types, regions.accelerators(cfg.gpu_types), strict=True)
        }
        credentials = (
            pulumi.Output.secret(cfg.registry_credentials.get_secret_value())
            if cfg.registry_credentials
            else None
        )
        self.modelplane = ModelplaneInstall(
            f"{name}-modelplane",
            ModelplaneInstallArgs(
                operator=cfg.operator,
                capacity_provider=cfg.capacity_provider,
                crds=args.crds,
                accelerator_classes=classes,
                registry_credentials=credentials,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                providers=[self.k8s_provider],
                depends_on=[self.karpenter, self.device_plugin],
            ),
        )

        self.kubeconfig = self.eks.kubeconfig
        self.endpoint = self.eks.endpoint
        self.cluster_name = self.eks.cluster_name
        self.region = cfg.region
        self.gpu_node_class_names = [self.karpenter.node_class_name]
        self.register_outputs(
            {
                "kubeconfig": self.kubeconfig,
                "endpoint": self.endpoint,
                "clusterName": self.cluster_name,
                "region": self.region,
                "gpuNodeClassNames": self.gpu_node_class_names,
            }
        )
