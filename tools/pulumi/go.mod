// Wrapper module: builds the Pulumi CLI (engine and file backend) at a pinned release.
module modelplane.local/tools/pulumi

go 1.26.0

require github.com/pulumi/pulumi/pkg/v3 v3.274.1
