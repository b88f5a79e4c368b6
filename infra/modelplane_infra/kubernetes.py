"""Cluster add-ons that are the same on every cloud: the modelplane install and the NVIDIA
device plugin. Both expect a Kubernetes provider in `opts.providers`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from modelplane.catalog.accelerators import LABEL_ACCELERATOR_CLASS
from modelplane_infra.config import Operator
from modelplane_infra.gpu import (
    ACCELERATOR_CLASS_API_VERSION,
    ACCELERATOR_CLASS_KIND,
    KARPENTER_GPU_MANUFACTURER,
    MANAGED_BY,
    gpu_toleration,
)

PULL_SECRET_NAME = "modelplane-registry"


def chart_values(
    operator: Operator, capacity_provider: str, pull_secret: str | None = None
) -> dict[str, Any]:
    """Values for charts/modelplane (flat camelCase keys, as the chart defines them).

    The chart's own default AcceleratorClasses are switched off: Pulumi creates the classes this
    stack's capacity can actually serve.
    """
    values: dict[str, Any] = {
        "capacityProvider": capacity_provider,
        "resyncIntervalSeconds": operator.resync_interval_seconds,
        "logLevel": operator.log_level,
        # Pulumi applies the CRDs itself (server-side, kept on destroy) and creates the classes.
        "installCRDs": False,
        "defaultAcceleratorClasses": False,
        "image": {"repository": operator.image.repository, "tag": operator.image.tag},
        "serviceMonitor": operator.service_monitor,
    }
    if pull_secret:
        values["imagePullSecrets"] = [{"name": pull_secret}]
    return values


@dataclass
class ModelplaneInstallArgs:
    operator: Operator
    capacity_provider: str
    crds: Sequence[Mapping[str, Any]]
    #: AcceleratorClass name -> spec.
    accelerator_classes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: A docker config JSON for a private registry, already a secret Output.
    registry_credentials: pulumi.Output[str] | None = None


class ModelplaneInstall(pulumi.ComponentResource):
    """The modelplane CRDs (server-side applied), the chart with its CRDs skipped, and the
    AcceleratorClasses this cluster offers."""

    def __init__(
        self, name: str, args: ModelplaneInstallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:ModelplaneInstall", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        op = args.operator

        self.crds: list[k8s.apiextensions.v1.CustomResourceDefinition] = []
        for doc in args.crds:
            crd_name = doc["metadata"]["name"]
            metadata = {**doc["metadata"]}
            metadata["labels"] = {**metadata.get("labels", {}), **MANAGED_BY}
            self.crds.append(
                k8s.apiextensions.v1.CustomResourceDefinition(
                    f"{name}-crd-{crd_name}",
                    metadata=cast(k8s.meta.v1.ObjectMetaArgsDict, metadata),
                    spec=cast(
                        k8s.apiextensions.v1.CustomResourceDefinitionSpecArgsDict, doc["spec"]
                    ),
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
                )
            )

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": op.namespace, "labels": MANAGED_BY}, opts=child
        )

        pull_secret: str | None = None
        secret_deps: list[pulumi.Resource] = []
        if args.registry_credentials is not None:
            secret = k8s.core.v1.Secret(
                f"{name}-registry",
                metadata={
                    "name": PULL_SECRET_NAME,
                    "namespace": op.namespace,
                    "labels": MANAGED_BY,
                },
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": args.registry_credentials},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace]),
            )
            pull_secret = PULL_SECRET_NAME
            secret_deps.append(secret)

        self.values = chart_values(op, args.capacity_provider, pull_secret)
        self.release = k8s.helm.v3.Release(
            f"{name}-chart",
            name=op.release,
            chart=op.chart,
            version=op.chart_version,
            namespace=op.namespace,
            skip_crds=True,
            atomic=True,
            values=self.values,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*self.crds, self.namespace, *secret_deps]
            ),
        )

        self.accelerator_classes = [
            k8s.apiextensions.CustomResource(
                f"{name}-accel-{class_name}",
                api_version=ACCELERATOR_CLASS_API_VERSION,
                kind=ACCELERATOR_CLASS_KIND,
                metadata={"name": class_name, "labels": MANAGED_BY},
                spec=dict(spec),
                opts=pulumi.ResourceOptions(parent=self, depends_on=self.crds),
            )
            for class_name, spec in args.accelerator_classes.items()
        ]

        self.register_outputs(
            {
                "release": self.release.name,
                "acceleratorClasses": list(args.accelerator_classes),
                "crds": [c.metadata.name for c in self.crds],
            }
        )


@dataclass
class NvidiaDevicePluginArgs:
    chart_version: str
    namespace: str = "nvidia-device-plugin"


def device_plugin_values() -> dict[str, Any]:
    """Tolerate the GPU taint and run only on GPU nodes.

    Chart 0.15+ requires an NFD/GFD label by default, which Karpenter nodes do not carry, so
    the affinity is replaced with Karpenter's GPU manufacturer label or modelplane's class label.
    """
    return {
        "tolerations": [
            gpu_toleration(),
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": KARPENTER_GPU_MANUFACTURER,
                                    "operator": "In",
                                    "values": ["nvidia"],
                                }
                            ]
                        },
                        {
                            "matchExpressions": [
                                {"key": LABEL_ACCELERATOR_CLASS, "operator": "Exists"}
                            ]
                        },
                    ]
                }
            }
        },
    }


class NvidiaDevicePlugin(pulumi.ComponentResource):
    """NVIDIA's device plugin DaemonSet, which advertises `nvidia.com/gpu` on GPU nodes."""

    def __init__(
        self, name: str, args: NvidiaDevicePluginArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("modelplane:infra:NvidiaDevicePlugin", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-chart",
            name="nvidia-device-plugin",
            chart="nvidia-device-plugin",
            version=args.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                repo="https://nvidia.github.io/k8s-device-plugin"
            ),
            namespace=args.namespace,
            create_namespace=True,
            values=device_plugin_values(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release": self.release.name})
