use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn err(text: &str) -> BackendsError {
    parse_backends(text).unwrap_err()
}

#[test]
fn parses_addresses_weights_comments_and_blanks() {
    let text = "\u{feff}# fleet\n\n  10.0.0.1:80  \n10.0.0.2:80@3 # big\r\n[::1]:9001 @ 2\n\t# end";
    assert_eq!(
        parse_backends(text).unwrap(),
        vec![
            (addr("10.0.0.1:80"), 1),
            (addr("10.0.0.2:80"), 3),
            (addr("[::1]:9001"), 2),
        ]
    );
    assert_eq!(parse_backends("").unwrap(), vec![]);
    assert_eq!(parse_backends("# only\n\n   \n").unwrap(), vec![]);
}

#[test]
fn single_backend() {
    assert_eq!(
        parse_backend("127.0.0.1:9001").unwrap(),
        (addr("127.0.0.1:9001"), 1)
    );
    assert_eq!(
        parse_backend("127.0.0.1:9001@4294967295").unwrap().1,
        u32::MAX
    );
    let error = parse_backend("127.0.0.1:9001 # no comments here").unwrap_err();
    assert_eq!(error.line(), None);
    assert!(matches!(error.kind(), BackendsErrorKind::BadAddress(_)));
}

#[test]
fn messages_name_the_line_and_the_problem() {
    let error = err("10.0.0.1:80\n\n10.0.0.2:80@x\n");
    assert_eq!(error.line(), Some(3));
    assert_eq!(error.to_string(), "line 3: weight `x` is not a number");

    assert_eq!(
        err("10.0.0.1:80@0").to_string(),
        "line 1: weight 0 is not allowed (weights start at 1; remove or comment out the line instead)"
    );
    assert_eq!(
        err("10.0.0.1:80@99999999999").to_string(),
        "line 1: weight `99999999999` is too large (at most 4294967295)"
    );
    assert_eq!(
        err("localhost:80").to_string(),
        "line 1: `localhost:80` is not a socket address (expected IP:PORT or [IPv6]:PORT)"
    );
    assert_eq!(
        err("10.0.0.1:80\n10.0.0.1:80@2").to_string(),
        "line 2: 10.0.0.1:80 is already listed on line 1"
    );
    let error = BackendsError::new(Some(2), BackendsErrorKind::LineTooLong)
        .with_path(PathBuf::from("backends.txt"));
    assert_eq!(
        error.to_string(),
        "backends.txt: line 2: line is longer than 1024 bytes"
    );
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let cases = [
        "@",
        "@@",
        "@1",
        "10.0.0.1:80@",
        "10.0.0.1:80@@1",
        "10.0.0.1:80@1@2",
        "10.0.0.1:80@-1",
        "10.0.0.1:80@1.5",
        "10.0.0.1:80@ 1 2",
        "10.0.0.1:80@٣",
        "10.0.0.1",
        "10.0.0.1:",
        "10.0.0.1:99999",
        ":80",
        "::1:80",
        "[::1]",
        "[::1:80",
        "10.0.0.256:80",
        "héllo wörld ✓",
        "\u{0}\u{1}\u{7f}",
        "10.0.0.1:80 10.0.0.2:80",
        "💥:💥@💥",
        "10.0.0.1:80@340282366920938463463374607431768211456",
    ];
    for case in cases {
        let error = parse_backends(case).expect_err(case);
        assert_eq!(error.line(), Some(1), "{case}");
        assert!(!error.to_string().is_empty());
        assert!(parse_backend(case).is_err(), "{case}");
    }
}

#[test]
fn caps_bound_the_work() {
    let long = format!("# {}", "x".repeat(MAX_LINE_LEN));
    let error = err(&format!("10.0.0.1:80\n{long}"));
    assert_eq!(error.line(), Some(2));
    assert!(matches!(error.kind(), BackendsErrorKind::LineTooLong));

    let big = "#\n".repeat(MAX_FILE_LEN / 2 + 1);
    let error = err(&big);
    assert_eq!(error.line(), None);
    assert!(matches!(error.kind(), BackendsErrorKind::FileTooLarge));

    let many: String = (0..=MAX_ENTRIES)
        .map(|i| format!("10.{}.{}.{}:80\n", i / 65536, i / 256 % 256, i % 256))
        .collect();
    let error = err(&many);
    assert_eq!(error.line(), Some(MAX_ENTRIES + 1));
    assert!(matches!(error.kind(), BackendsErrorKind::TooManyEntries));
}

#[test]
fn long_garbage_is_shortened_in_messages() {
    let text = format!("{}@1", "a".repeat(500));
    let message = err(&text).to_string();
    assert!(message.len() < 200, "{message}");
}

#[test]
fn control_characters_are_escaped_in_messages() {
    let message = err("bad\u{1b}[31maddr").to_string();
    assert!(!message.contains('\u{1b}'), "{message}");
}

#[test]
fn bytes_must_be_utf8() {
    let error = parse_backends_bytes(b"10.0.0.1:80\n10.0.0.2:80 # \xff\n").unwrap_err();
    assert_eq!(error.line(), Some(2));
    assert!(matches!(error.kind(), BackendsErrorKind::NotUtf8));
    assert_eq!(
        parse_backends_bytes(b"10.0.0.1:80@2\n").unwrap(),
        vec![Backend {
            addr: addr("10.0.0.1:80"),
            weight: 2,
            zone: None
        }]
    );
}

#[test]
fn io_errors_keep_their_source() {
    let io = io::Error::new(io::ErrorKind::NotFound, "gone");
    let error = BackendsError::new(None, BackendsErrorKind::Io(io)).with_path("b.txt".into());
    assert_eq!(error.to_string(), "b.txt: cannot read: gone");
    assert!(std::error::Error::source(&error).is_some());
    assert_eq!(error.path(), Some(std::path::Path::new("b.txt")));
}

#[test]
fn zones_are_a_field_of_the_line() {
    let text = "10.0.0.1:80 zone=a\n10.0.0.2:80@3   zone=eu-west/1b # comment\n10.0.0.3:80 @ 2\n";
    let backends = parse_backends_with_zones(text).unwrap();
    let zones: Vec<Option<&str>> = backends.iter().map(|b| b.zone.as_deref()).collect();
    assert_eq!(zones, [Some("a"), Some("eu-west/1b"), None]);
    assert_eq!(backends[1].weight, 3);
    assert_eq!(backends[2].weight, 2);
    // The plain parser accepts and drops the zone.
    assert_eq!(parse_backends(text).unwrap()[1].1, 3);
    assert_eq!(parse_backend("10.0.0.1:80@2 zone=a").unwrap().1, 2);

    for (line, message) in [
        ("10.0.0.1:80 zone=", "line 1: zone `` is not valid"),
        (
            "10.0.0.1:80 zone=a b",
            "line 1: `10.0.0.1:80 b` is not a socket address",
        ),
        (
            "10.0.0.1:80 zone=a\u{e9}",
            "line 1: zone `a\u{e9}` is not valid",
        ),
        ("10.0.0.1:80 rack=3", "line 1: unknown field `rack=3`"),
    ] {
        let error = parse_backends_with_zones(line).unwrap_err().to_string();
        assert!(error.starts_with(message), "{line}: {error}");
    }
    let long = format!("10.0.0.1:80 zone={}", "z".repeat(MAX_ZONE_LEN + 1));
    assert!(matches!(
        parse_backends_with_zones(&long).unwrap_err().kind(),
        BackendsErrorKind::BadZone(_)
    ));
}
