"""GKE: private network, cluster with KMS database encryption and Workload Identity, a system
node pool, one GPU node pool per GPU machine type (tainted, GFD-style labels, driver installed
by GKE), and modelplane."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from modelplane import kubeconfig
from modelplane.catalog.accelerators import Accelerator, InstanceShape
from modelplane_infra import regions
from modelplane_infra.config import GcpStack
from modelplane_infra.gpu import (
    GKE_ACCELERATOR_TYPES,
    accelerator_class_spec,
    gke_gpu_taint,
    gke_node_labels,
)
from modelplane_infra.kubernetes import ModelplaneInstall, ModelplaneInstallArgs

SYSTEM_NODE_LABEL = {"modelplane.io/node-role": "system"}
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Least-privilege node service account roles (GKE hardening guide).
NODE_SA_ROLES = ("roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader")


def _gke_metadata() -> gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs:
    """Pods see the GKE metadata server (Workload Identity), never the node's credentials."""
    return gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA")


def gpu_pool_name(shape: InstanceShape) -> str:
    """GKE node pool name of a GPU machine type, e.g. gpu-a3-highgpu-8g (at most 40 chars)."""
    return f"gpu-{shape.gcp_equivalent}"


def gke_kubeconfig(
    cluster_name: pulumi.Input[str], endpoint: pulumi.Input[str], ca: pulumi.Input[str]
) -> pulumi.Output[str]:
    """A kubeconfig that authenticates with gke-gcloud-auth-plugin."""

    def render(args: list[str]) -> str:
        name, server, ca_data = args
        user = kubeconfig.exec_user("gke-gcloud-auth-plugin", provideClusterInfo=True)
        doc = kubeconfig.render(
            server=f"https://{server}", ca_data=ca_data, user=user, cluster=name
        )
        return json.dumps(doc, indent=2)

    return pulumi.Output.secret(pulumi.Output.all(cluster_name, endpoint, ca).apply(render))


@dataclass
class GkeClusterArgs:
    config: GcpStack


class GkeCluster(pulumi.ComponentResource):
    """Network, KMS key, node service account, the GKE cluster and its node pools.

    Needs a GCP provider in `opts.providers`.
    """

    def __init__(
        self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:GkeCluster", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        cluster = cfg.cluster_name
        net = cfg.network

        # Network: nodes get private addresses only; Cloud NAT gives them egress.
        self.network = gcp.compute.Network(
            f"{name}-net", name=cluster, auto_create_subnetworks=False, opts=child
        )
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-nodes",
            name=f"{cluster}-nodes",
            network=self.network.id,
            region=cfg.region,
            ip_cidr_range=net.node_cidr,
            private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(
                    range_name="pods", ip_cidr_range=net.pod_cidr
                ),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(
                    range_name="services", ip_cidr_range=net.service_cidr
                ),
            ],
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router",
            name=f"{cluster}-router",
            network=self.network.id,
            region=cfg.region,
            opts=child,
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            name=f"{cluster}-nat",
            router=router.name,
            region=cfg.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            opts=child,
        )

        # etcd application-layer encryption with a customer key.
        project = gcp.organizations.get_project_output(
            project_id=cfg.project, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        ring = gcp.kms.KeyRing(
            f"{name}-keyring", name=f"{cluster}-gke", location=cfg.region, opts=child
        )
        self.kms_key = gcp.kms.CryptoKey(
            f"{name}-secrets",
            name=f"{cluster}-secrets",
            key_ring=ring.id,
            purpose="ENCRYPT_DECRYPT",
            rotation_period="7776000s",
            opts=child,
        )
        key_access = gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-gke",
            crypto_key_id=self.kms_key.id,
            role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
            member=project.number.apply(
                lambda n: (
                    f"serviceAccount:service-{n}@container-engine-robot.iam.gserviceaccount.com"
                )
            ),
            opts=child,
        )

        self.node_sa = gcp.serviceaccount.Account(
            f"{name}-nodes",
            account_id=f"{cluster}-nodes"[:30],
            display_name=f"GKE nodes of {cluster}",
            opts=child,
        )
        member = self.node_sa.email.apply(lambda e: f"serviceAccount:{e}")
        for role in NODE_SA_ROLES:
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.split('/')[-1].lower()}",
                project=cfg.project,
                role=role,
                member=member,
                opts=child,
            )

        self.cluster = gcp.container.Cluster(
            f"{name}-gke",
            name=cluster,
            location=cfg.region,
            network=self.network.id,
            subnetwork=self.subnet.id,
            remove_default_node_pool=True,
            initial_node_count=1,
            deletion_protection=cfg.deletion_protection,
            min_master_version=cfg.kubernetes_version,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=cfg.release_channel),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{cfg.project}.svc.id.goog"
            ),
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=False,
                master_ipv4_cidr_block=net.master_cidr,
            ),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[
                    gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                        cidr_block=c, display_name=f"allowed-{i}"
                    )
                    for i, c in enumerate(cfg.api_allowed_cidrs)
                ]
            ),
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name="pods", services_secondary_range_name="services"
            ),
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED", key_name=self.kms_key.id
            ),
            enable_shielded_nodes=True,
            # The default pool is deleted right away; even so it must not use the default
            # compute service account.
            node_config=gcp.container.ClusterNodeConfigArgs(
                service_account=self.node_sa.email,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(
                    mode="GKE_METADATA"
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[key_access]),
        )

        sysn = cfg.system_nodes
        self.system_pool = gcp.container.NodePool(
            f"{name}-system",
            name="system",
            cluster=self.cluster.id,
            location=cfg.region,
            initial_node_count=sysn.min_nodes_per_zone or 1,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                min_node_count=sysn.min_nodes_per_zone, max_node_count=sysn.max_nodes_per_zone
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=sysn.machine_type,
                disk_size_gb=sysn.disk_gib,
                disk_type="pd-balanced",
                service_account=self.node_sa.email,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                workload_metadata_config=_gke_metadata(),
                shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True
                ),
                labels=SYSTEM_NODE_LABEL,
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["initialNodeCount"]),
        )

        gpu = cfg.gpu_nodes
        self.gpu_pools: list[gcp.container.NodePool] = []
        self.gpu_pool_names: list[str] = []
        for acc in regions.accelerators(cfg.gpu_types):
            for shape in regions.gcp_shapes(acc.name):
                pool_name = gpu_pool_name(shape)
                self.gpu_pools.append(
                    self._gpu_pool(name, pool_name, acc, shape, cfg, gpu.driver_version)
                )
                self.gpu_pool_names.append(pool_name)

        self.cluster_name = self.cluster.name
        self.endpoint = self.cluster.endpoint
        self.kubeconfig = gke_kubeconfig(
            self.cluster.name,
            self.cluster.endpoint,
            self.cluster.master_auth.cluster_ca_certificate,
        )
        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "gpuNodePools": self.gpu_pool_names,
            }
        )

    def _gpu_pool(
        self,
        name: str,
        pool_name: str,
        acc: Accelerator,
        shape: InstanceShape,
        cfg: GcpStack,
        driver_version: str,
    ) -> gcp.container.NodePool:
        gpu = cfg.gpu_nodes
        return gcp.container.NodePool(
            f"{name}-{pool_name}",
            name=pool_name,
            cluster=self.cluster.id,
            location=cfg.region,
            node_locations=list(regions.gcp_zones(cfg.region, acc.name)),
            initial_node_count=0,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=0, total_max_node_count=gpu.max_nodes, location_policy="ANY"
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=shape.gcp_equivalent,
                guest_accelerators=[
                    gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                        type=GKE_ACCELERATOR_TYPES[acc.name],
                        count=shape.gpus,
                        gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                            gpu_driver_version=driver_version
                        ),
                    )
                ],
                labels=gke_node_labels(acc, shape),
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(**gke_gpu_taint())],
                spot=gpu.spot,
                disk_size_gb=gpu.disk_gib,
                disk_type="pd-balanced",
                service_account=self.node_sa.email,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                workload_metadata_config=_gke_metadata(),
                shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["initialNodeCount"]),
        )


@dataclass
class GkeGpuClusterArgs:
    config: GcpStack
    crds: Sequence[dict[str, object]]


class GkeGpuCluster(pulumi.ComponentResource):
    """One GCP region: GKE with GPU pools and modelplane (capacity provider `static`: GKE's
    autoscaler grows the pre-declared GPU pools; GKE installs the driver and device plugin)."""

    def __init__(
        self, name: str, args: GkeGpuClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:GkeGpuCluster", name, None, opts)
        cfg = args.config
        self.gcp_provider = gcp.Provider(
            f"{name}-gcp",
            project=cfg.project,
            region=cfg.region,
            default_labels={"modelplane-cluster": cfg.cluster_name, "managed-by": "pulumi"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.gke = GkeCluster(
            f"{name}-gke",
            GkeClusterArgs(config=cfg),
            opts=pulumi.ResourceOptions(parent=self, providers=[self.gcp_provider]),
        )
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.gke.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gke.system_pool]),
        )
        classes = {
            acc.name: accelerator_class_spec(
                acc,
                shapes=regions.gcp_shapes(acc.name),
                instance_types=[str(s.gcp_equivalent) for s in regions.gcp_shapes(acc.name)],
            )
            for acc in regions.accelerators(cfg.gpu_types)
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
            opts=pulumi.ResourceOptions(parent=self, providers=[self.k8s_provider]),
        )
        self.kubeconfig = self.gke.kubeconfig
        self.endpoint = self.gke.endpoint
        self.cluster_name = self.gke.cluster_name
        self.region = cfg.region
        self.gpu_node_class_names = list(self.gke.gpu_pool_names)
        self.register_outputs(
            {
                "kubeconfig": self.kubeconfig,
                "endpoint": self.endpoint,
                "clusterName": self.cluster_name,
                "region": self.region,
                "gpuNodeClassNames": self.gpu_node_class_names,
            }
        )
