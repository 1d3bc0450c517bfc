//! What can go wrong talking to etcd.

use std::fmt;

/// etcd could not be reached or answered wrongly; the last set is kept.
#[derive(Debug)]
pub struct EtcdError {
    during: &'static str,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Client(etcd_client::Error),
    Timeout,
    Protocol(&'static str),
}

impl EtcdError {
    pub(super) fn client(during: &'static str, error: etcd_client::Error) -> Self {
        Self {
            during,
            kind: Kind::Client(error),
        }
    }

    pub(super) fn timeout(during: &'static str) -> Self {
        Self {
            during,
            kind: Kind::Timeout,
        }
    }

    pub(super) fn protocol(what: &'static str) -> Self {
        Self {
            during: "reading",
            kind: Kind::Protocol(what),
        }
    }

    /// What was being done: `connect`, `list`, `watch`, `grant`, `put`,
    /// `keep-alive`, `revoke`.
    pub fn during(&self) -> &'static str {
        self.during
    }

    /// Whether the step timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout)
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Client(error) => write!(f, "etcd {}: {error}", self.during),
            Kind::Timeout => write!(f, "etcd {}: timed out", self.during),
            Kind::Protocol(what) => write!(f, "etcd {}: {what}", self.during),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Client(error) => Some(error),
            _ => None,
        }
    }
}
