// Wrapper module: builds helm v3 at a pinned release.
module modelplane.local/tools/helm

go 1.26.0

require helm.sh/helm/v3 v3.22.0
