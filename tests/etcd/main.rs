//! etcd discovery.
