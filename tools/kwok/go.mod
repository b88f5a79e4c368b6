// Wrapper module: builds the KWOK controller (simulated kubelets for GPU nodes and pods).
module modelplane.local/tools/kwok

go 1.26.0

require sigs.k8s.io/kwok v0.8.0
