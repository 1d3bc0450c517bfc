use super::*;

fn boxed(e: impl Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

/// An error that wraps another, as client errors wrap io errors.
#[derive(Debug)]
struct Wrap(BoxError);
impl fmt::Display for Wrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapped")
    }
}
impl Error for Wrap {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

#[test]
fn errors_are_classified_through_their_sources() {
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    assert_eq!(
        classify_error(&boxed(Wrap(boxed(refused)))),
        Some(RetryReason::ConnectionRefused)
    );
    let reset = io::Error::from(io::ErrorKind::ConnectionReset);
    assert_eq!(classify_error(&boxed(reset)), Some(RetryReason::Error));
    assert_eq!(
        classify_error(&boxed(tower::timeout::error::Elapsed::new())),
        Some(RetryReason::Timeout)
    );
    assert_eq!(
        classify_error(&boxed(tower::load_shed::error::Overloaded::new())),
        Some(RetryReason::NotSent)
    );
    let none = NoEndpoints {
        waited: std::time::Duration::ZERO,
        known: 0,
    };
    assert_eq!(classify_error(&boxed(Wrap(boxed(none)))), None);
    let down = NoHealthyEndpoints { known: 3 };
    assert_eq!(classify_error(&boxed(down)), None);
    assert_eq!(classify_error(&"plain".into()), Some(RetryReason::Error));
}

#[test]
fn idempotent_methods() {
    for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        assert!(is_idempotent(&m.parse().unwrap()), "{m}");
    }
    for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
        assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
    }
}

#[test]
fn status_sets() {
    let set = StatusSet::new([StatusCode::BAD_GATEWAY, StatusCode::from_u16(999).unwrap()]);
    assert!(set.contains(StatusCode::BAD_GATEWAY));
    assert!(set.contains(StatusCode::from_u16(999).unwrap()));
    assert!(!set.contains(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(format!("{set:?}"), "{502, 999}");
}
