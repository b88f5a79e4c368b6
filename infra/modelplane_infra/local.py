"""An existing cluster reached through a kubeconfig: the Kubernetes layer only.

The local GPU cluster (`modelplane cluster up`) is the first such cluster: `pulumi up` on a
`cloud: local` stack installs modelplane there with the very component the EKS and GKE stacks
use (`ModelplaneInstall`: CRDs server-side applied, the chart as a Helm release, the
AcceleratorClasses), so the engine and the Kubernetes provider plan and apply it for real.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from modelplane_infra import regions
from modelplane_infra.config import LocalStack
from modelplane_infra.gpu import accelerator_class_spec
from modelplane_infra.kubernetes import ModelplaneInstall, ModelplaneInstallArgs


@dataclass
class LocalClusterArgs:
    config: LocalStack
    crds: Sequence[dict[str, object]]


class ExistingCluster(pulumi.ComponentResource):
    """modelplane on a cluster that exists already (capacity provider `static`: the cluster's
    own GPU nodes, which carry the catalog's node labels)."""

    def __init__(
        self, name: str, args: LocalClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:ExistingCluster", name, None, opts)
        cfg = args.config
        # The provider reads the file itself: the stack's state keeps its path, never the
        # credentials inside it.
        kubeconfig = os.path.expanduser(cfg.kubeconfig) if cfg.kubeconfig else None
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kubeconfig,
            context=cfg.context,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        classes = {
            acc.name: accelerator_class_spec(
                acc, shapes=acc.shapes, instance_types=[s.name for s in acc.shapes]
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
        self.cluster_name = cfg.cluster_name
        self.release = self.modelplane.release.name
        self.register_outputs({"clusterName": self.cluster_name, "release": self.release})
