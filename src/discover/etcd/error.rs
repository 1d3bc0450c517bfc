//! What can go wrong talking to etcd.

use std::fmt;

/// etcd could not be reached or answered wrongly; the last set is kept.
///
/// [`kind`](Self::kind) says what failed, [`during`](Self::during) at which
/// step; [`source`](std::error::Error::source) holds the transport error or
/// the gRPC status behind it, when there is one.
#[derive(Debug)]
pub struct EtcdError {
    during: &'static str,
    kind: EtcdErrorKind,
    detail: Detail,
}

/// What kind of failure an [`EtcdError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EtcdErrorKind {
    /// No connection: an endpoint URL that is not one, no endpoint given,
    /// or none of them could be reached.
    Connect,
    /// etcd answered the request with a gRPC error, or the connection
    /// broke while the request or stream was open.
    Status,
    /// The step did not finish in time.
    Timeout,
    /// An answer this client cannot use (a list without a revision, a
    /// lease etcd would not grant, a watch etcd cancelled), or the stream
    /// the answers were for was dropped.
    Protocol,
}

#[derive(Debug)]
enum Detail {
    None,
    Message(String),
    Transport(String, tonic::transport::Error),
    // Boxed: a status is large, and this error travels in `Result`s.
    Status(Box<tonic::Status>),
}

impl EtcdError {
    /// A connection to `url` failed.
    pub(super) fn transport(
        during: &'static str,
        url: &str,
        error: tonic::transport::Error,
    ) -> Self {
        // tonic's own message is only "transport error"; the cause says more.
        let cause = std::error::Error::source(&error)
            .map(|cause| cause.to_string())
            .unwrap_or_else(|| error.to_string());
        Self {
            during,
            kind: EtcdErrorKind::Connect,
            detail: Detail::Transport(format!("{url}: {cause}"), error),
        }
    }

    pub(super) fn no_endpoints() -> Self {
        Self {
            during: "connect",
            kind: EtcdErrorKind::Connect,
            detail: Detail::Message("no endpoint given".to_owned()),
        }
    }

    pub(super) fn status(during: &'static str, status: tonic::Status) -> Self {
        Self {
            during,
            kind: EtcdErrorKind::Status,
            detail: Detail::Status(Box::new(status)),
        }
    }

    pub(super) fn timeout(during: &'static str) -> Self {
        Self {
            during,
            kind: EtcdErrorKind::Timeout,
            detail: Detail::None,
        }
    }

    pub(super) fn protocol(during: &'static str, what: impl Into<String>) -> Self {
        Self {
            during,
            kind: EtcdErrorKind::Protocol,
            detail: Detail::Message(what.into()),
        }
    }

    /// What was being done: `connect`, `list`, `watch`, `grant`, `put`,
    /// `keep-alive`, `revoke`.
    pub fn during(&self) -> &'static str {
        self.during
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> EtcdErrorKind {
        self.kind
    }

    /// Whether the step timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == EtcdErrorKind::Timeout
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd {}: ", self.during)?;
        match &self.detail {
            Detail::None if self.kind == EtcdErrorKind::Timeout => f.write_str("timed out"),
            Detail::None => write!(f, "{:?}", self.kind),
            Detail::Message(what) => f.write_str(what),
            Detail::Transport(what, _) => write!(f, "cannot connect to {what}"),
            Detail::Status(status) if status.message().is_empty() => {
                write!(f, "gRPC status {:?}", status.code())
            }
            Detail::Status(status) => {
                write!(f, "gRPC status {:?}: {}", status.code(), status.message())
            }
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.detail {
            Detail::Transport(_, error) => Some(error),
            Detail::Status(status) => Some(&**status),
            Detail::None | Detail::Message(_) => None,
        }
    }
}
