// Wrapper module: builds the LeaderWorkerSet controller manager (sigs.k8s.io/lws/cmd, binary
// `lws-controller`) and keeps its CRDs and webhook manifests beside it, so multi-node replicas run
// on the real LWS controller in the local cluster. The module proxy refuses the version list of
// sigs.k8s.io/lws but resolves exact versions; v0.9.0 is the newest whose source it serves
// (v0.10.0 has an .info but no .zip). LWS v0.9.0 needs Go >= 1.26.0.
module modelplane.local/tools/lws

go 1.26.0

require sigs.k8s.io/lws v0.9.0
