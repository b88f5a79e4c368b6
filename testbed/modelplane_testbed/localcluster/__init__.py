"""The local GPU cluster: a real control plane (etcd, kube-apiserver, controller-manager,
scheduler) built from Go modules, with KWOK playing the kubelet for simulated GPU nodes."""

from modelplane_testbed.localcluster.binaries import Binaries, BuildError, ensure
from modelplane_testbed.localcluster.cluster import (
    ClusterError,
    LocalCluster,
    default_state_root,
    listening_sockets,
    running,
)
from modelplane_testbed.localcluster.nodes import NodeConfigError, NodeLayout, load_layout

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
