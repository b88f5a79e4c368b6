"""The local GPU cluster: a real control plane (etcd, kube-apiserver, controller-manager,
scheduler) built from Go modules, with KWOK playing the kubelet for simulated GPU nodes."""

from modelplane.localcluster.binaries import Binaries, BuildError, ensure
from modelplane.localcluster.cluster import (
    ClusterError,
    LocalCluster,
    default_state_root,
    listening_sockets,
    running,
)
from modelplane.localcluster.nodes import NodeConfigError, NodeLayout, load_layout

__all__ = [
    "Binaries",
    "BuildError",
    "ClusterError",
    "LocalCluster",
    "NodeConfigError",
    "NodeLayout",
    "default_state_root",
    "ensure",
    "listening_sockets",
    "load_layout",
    "running",
]
