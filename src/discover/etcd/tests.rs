//! The error's words and causes.

use super::{EtcdError, EtcdErrorKind};
use std::error::Error as _;

#[test]
fn says_the_step_and_keeps_the_cause() {
    let error = EtcdError::status("watch", tonic::Status::unavailable("gone"));
    assert_eq!(
        error.to_string(),
        "etcd watch: gRPC status Unavailable: gone"
    );
    assert_eq!(error.kind(), EtcdErrorKind::Status);
    assert!(error.source().is_some());
    let error = EtcdError::timeout("list");
    assert_eq!(error.to_string(), "etcd list: timed out");
    assert!(error.is_timeout() && error.source().is_none());
    let error = EtcdError::protocol("grant", "lease refused");
    assert_eq!(error.to_string(), "etcd grant: lease refused");
    assert_eq!(EtcdError::no_endpoints().kind(), EtcdErrorKind::Connect);
}
