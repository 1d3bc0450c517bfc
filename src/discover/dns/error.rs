//! Why a DNS discovery could not resolve its name.

use std::fmt;

use crate::error::BoxError;

/// A resolution of a [`DnsDiscover`](super::DnsDiscover) failed: a timeout,
/// a server failure (`SERVFAIL`, `REFUSED`), no reachable server, or a setup
/// that cannot work (an invalid name, no name servers, an unreadable system
/// configuration).
///
/// An empty answer (`NXDOMAIN`, or a name with no records of the type) is
/// not an error: it is an answer, handled by [`OnEmpty`](super::OnEmpty).
#[derive(Debug)]
pub struct ResolveError {
    name: String,
    record: &'static str,
    permanent: bool,
    source: BoxError,
}

impl ResolveError {
    pub(super) fn lookup(name: &str, record: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            name: name.to_owned(),
            record,
            permanent: false,
            source: source.into(),
        }
    }

    pub(super) fn setup(name: &str, record: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            permanent: true,
            ..Self::lookup(name, record, source)
        }
    }

    /// The name being resolved.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the discovery gave up: its setup cannot work (an invalid
    /// name, no name servers, no readable system configuration), so the
    /// stream ends after this error. Other errors are retried.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.permanent {
            write!(
                f,
                "DNS discovery of `{}` ({}) cannot start: {}",
                self.name.escape_debug(),
                self.record,
                self.source
            )
        } else {
            write!(
                f,
                "cannot resolve `{}` ({}): {}",
                self.name.escape_debug(),
                self.record,
                self.source
            )
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
