use super::*;

fn response(status: u16, grpc: Option<&str>) -> Response<()> {
    let mut builder = Response::builder().status(status);
    if let Some(code) = grpc {
        builder = builder.header("grpc-status", code);
    }
    builder.body(()).unwrap()
}

#[test]
fn server_errors_fail() {
    let classify = ServerErrors;
    assert!(classify.is_failure(&response(503, None)));
    assert!(classify.is_failure(&response(500, None)));
    assert!(!classify.is_failure(&response(404, None)));
    assert!(!classify.is_failure(&response(200, None)));
}

#[cfg(feature = "http")]
#[test]
fn grpc_status_in_the_head_fails() {
    let classify = tower_http::classify::GrpcErrorsAsFailures::new();
    assert!(classify.is_failure(&response(200, Some("14"))));
    assert!(!classify.is_failure(&response(200, Some("0"))));
    // The status will come in trailers: judged a success at the head.
    assert!(!classify.is_failure(&response(200, None)));
}

#[test]
fn pushback_reads_retry_after_and_grpc_pushback() {
    let with = |status: u16, name: &str, value: &str| {
        Response::builder()
            .status(status)
            .header(name, value)
            .body(())
            .unwrap()
    };
    assert_eq!(
        pushback(&with(429, "retry-after", "3")),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        pushback(&with(503, "retry-after", " 0 ")),
        Some(Duration::ZERO)
    );
    // Only 429 and 503 ask for a pause with Retry-After.
    assert_eq!(pushback(&with(500, "retry-after", "3")), None);
    assert_eq!(pushback(&with(429, "retry-after", "soon")), None);
    assert_eq!(pushback(&with(429, "retry-after", "-1")), None);
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_eq!(pushback(&with(503, "retry-after", past)), None);
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let pause = pushback(&with(503, "retry-after", &later)).unwrap();
    assert!(pause > Duration::from_secs(100) && pause <= Duration::from_secs(120));
    let grpc = with(200, "grpc-retry-pushback-ms", "250");
    assert_eq!(pushback(&grpc), Some(Duration::from_millis(250)));
    assert_eq!(pushback(&with(200, "grpc-retry-pushback-ms", "-5")), None);
    assert_eq!(
        ServerErrors.pushback(&with(429, "retry-after", "1")),
        Some(Duration::from_secs(1))
    );
    assert_eq!(ErrorsOnly.pushback(&with(429, "retry-after", "1")), None);
}

#[test]
fn request_faults_are_found_anywhere_in_the_chain() {
    #[derive(Debug)]
    struct Outer(BoxError);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }
    let plain = std::io::Error::other("reset");
    assert!(!is_request_fault(&plain));
    let fault = RequestFault::new("the body stream ended early");
    assert!(is_request_fault(&fault));
    assert!(fault.to_string().contains("ended early"));
    let wrapped = Outer(Box::new(RequestFault::new(plain)));
    assert!(is_request_fault(&wrapped));
    assert!(!is_request_fault(&Outer("endpoint".into())));
}

#[test]
fn errors_only_passes_every_response() {
    assert!(!ErrorsOnly.is_failure(&response(503, None)));
    assert!(!ErrorsOnly.is_failure(&"anything"));
}
