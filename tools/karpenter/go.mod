// Wrapper module: pins Karpenter so its CRDs (karpenter.sh/v1 NodePool, NodeClaim) can be taken
// from the module and installed on the local cluster; nothing is compiled from it.
module modelplane.local/tools/karpenter

go 1.26.0

require sigs.k8s.io/karpenter v1.14.1
