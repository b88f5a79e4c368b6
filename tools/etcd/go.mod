// Wrapper module: builds the etcd server from go.etcd.io/etcd/server/v3 at a pinned release.
module modelplane.local/tools/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 v3.6.16
