// Wrapper module: builds the Pulumi Kubernetes provider plugin (pulumi-resource-kubernetes).
// The module proxy serves the provider only as a pseudo-version; its go.mod replaces the SDK
// module with a sibling directory (../sdk), which a dependent module cannot see, so the SDK is
// pinned here to a released version the proxy serves (the binary does not import it).
module modelplane.local/tools/pulumi-kubernetes

go 1.26.0

require github.com/pulumi/pulumi-kubernetes/provider/v4 v4.0.0-20260115033456-f47bc2d6f199

replace github.com/pulumi/pulumi-kubernetes/sdk/v4 => github.com/pulumi/pulumi-kubernetes/sdk/v4 v4.29.0
