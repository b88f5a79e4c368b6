"""The Pulumi program: validate config, then declare one region's GPU cluster, or modelplane on
an existing cluster (`cloud: local`)."""

from __future__ import annotations

from pathlib import Path

import pulumi

from modelplane_infra import config as stack_config
from modelplane_infra.aws import AwsGpuCluster, AwsGpuClusterArgs
from modelplane_infra.config import AwsStack, GcpStack, LocalStack, StackConfig
from modelplane_infra.crds import REPO_CRDS_DIR, load_crds
from modelplane_infra.gcp import GkeGpuCluster, GkeGpuClusterArgs
from modelplane_infra.local import ExistingCluster, LocalClusterArgs


def build(
    cfg: StackConfig, crds_dir: Path = REPO_CRDS_DIR
) -> AwsGpuCluster | GkeGpuCluster | ExistingCluster:
    """Declare the stack's resources from a validated config and export its outputs."""
    crds = load_crds(crds_dir)
    name = cfg.cluster_name
    if isinstance(cfg, LocalStack):
        local = ExistingCluster(name, LocalClusterArgs(config=cfg, crds=crds))
        pulumi.export("cloud", cfg.cloud)
        pulumi.export("clusterName", local.cluster_name)
        pulumi.export("release", local.release)
        pulumi.export("acceleratorClasses", list(cfg.gpu_types))
        return local
    cluster: AwsGpuCluster | GkeGpuCluster
    if isinstance(cfg, AwsStack):
        cluster = AwsGpuCluster(name, AwsGpuClusterArgs(config=cfg, crds=crds))
    else:
        assert isinstance(cfg, GcpStack)
        cluster = GkeGpuCluster(name, GkeGpuClusterArgs(config=cfg, crds=crds))
    pulumi.export("cloud", cfg.cloud)
    pulumi.export("region", cluster.region)
    pulumi.export("clusterName", cluster.cluster_name)
    pulumi.export("endpoint", cluster.endpoint)
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("gpuNodeClassNames", cluster.gpu_node_class_names)
    pulumi.export("acceleratorClasses", list(cfg.gpu_types))
    return cluster


def main(crds_dir: Path = REPO_CRDS_DIR) -> AwsGpuCluster | GkeGpuCluster | ExistingCluster:
    """Entry point: config errors surface before any resource is declared."""
    return build(stack_config.load(), crds_dir)
