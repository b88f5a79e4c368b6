// Wrapper module: builds Karpenter with its KWOK cloud provider (sigs.k8s.io/karpenter/kwok, the
// provider Karpenter ships for its own tests) so the local cluster's NodePools provision simulated
// GPU nodes with the real Karpenter scheduler, consolidation and NodeClaim lifecycle. Same pin as
// tools/karpenter (whose CRDs the cluster installs). Karpenter v1.14.1 needs Go >= 1.26.6.
module modelplane.local/tools/karpenter-kwok

go 1.26.6

require sigs.k8s.io/karpenter v1.14.1
