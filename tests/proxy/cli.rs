//! The command line: help, and every error path (status 2, one line).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::support::*;

#[test]
fn help_prints_the_usage_and_exits_0() {
    let long = run_to_exit(&["--help"]).stdout;
    for flag in ["--help", "-h"] {
        let run = run_to_exit(&[flag]);
        assert!(run.status.success(), "{flag}: {:?}", run.status);
        assert!(run.stderr.is_empty(), "{flag}: {}", run.stderr);
        // `-h` is no summary: both print the whole text.
        assert_eq!(run.stdout, long, "{flag}");
        for option in [
            "--listen",
            "--backend",
            "--backends-file",
            "--algorithm",
            "--hash-header",
            "--trusted-hops",
            "--health-path",
            "--health-interval",
            "--retries",
            "--admin",
            "--workers",
            "--attempt-timeout",
            "--drain-timeout",
            "--header-timeout",
            "--idle-timeout",
            "--max-connections",
            "--allow-empty-backends",
        ] {
            assert!(
                run.stdout.contains(option),
                "{flag} does not mention {option}"
            );
        }
    }
}

#[test]
fn every_bad_command_line_exits_2_with_one_line() {
    let dir = temp_dir("cli");
    let bad_file = dir.join("bad");
    std::fs::write(&bad_file, "127.0.0.1:9001\n127.0.0.1:9002@0\n").unwrap();
    let bad_file = bad_file.to_str().unwrap().to_owned();
    let missing = dir.join("missing").to_str().unwrap().to_owned();
    let ok = ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9001"];
    let with = |extra: &[&'static str]| [&ok[..], extra].concat();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            with(&["--algorithm", "fastest"]),
            "--algorithm: unknown algorithm `fastest` (expected round-robin",
        ),
        (
            vec!["--listen", "localhost:80", "--backend", "127.0.0.1:9001"],
            "--listen: `localhost:80` is not a socket address",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--backend", "127.0.0.1"],
            "--backend 127.0.0.1: `127.0.0.1` is not a socket address",
        ),
        (
            with(&["--backend", "127.0.0.1:9002@0"]),
            "weight 0 is not allowed",
        ),
        (
            with(&["--backend", "127.0.0.1:9002@x"]),
            "weight `x` is not a number",
        ),
        (
            with(&["--backend", "127.0.0.1:9002@99999999999"]),
            "weight `99999999999` is too large",
        ),
        (
            with(&["--backend", "127.0.0.1:9001"]),
            "--backend 127.0.0.1:9001 is given more than once",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--backends-file", &missing],
            "cannot read",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--backends-file", &bad_file],
            "line 2: weight 0 is not allowed",
        ),
        (
            vec!["--listen", "127.0.0.1:0"],
            "no backends: give --backend",
        ),
        (
            with(&["--backends-file", "x"]),
            "--backend and --backends-file cannot be combined",
        ),
        (vec!["--backend", "127.0.0.1:9001"], "missing --listen ADDR"),
        (
            with(&["--frobnicate", "1"]),
            "unknown option `--frobnicate`",
        ),
        (with(&["extra"]), "unexpected argument `extra`"),
        (with(&["--retries"]), "--retries needs a value"),
        (
            vec!["--listen", "--backend", "127.0.0.1:9001"],
            "--listen needs a value",
        ),
        (
            with(&["--listen", "127.0.0.1:1"]),
            "--listen is given more than once",
        ),
        (
            with(&["--retries", "-1"]),
            "--retries: `-1` is not a whole number",
        ),
        (
            with(&["--workers", "0"]),
            "--workers must be from 1 to 1024",
        ),
        (
            with(&["--max-connections", "0"]),
            "--max-connections must be from 1 to 1000000",
        ),
        (
            with(&["--attempt-timeout", "0s"]),
            "--attempt-timeout must be more than zero",
        ),
        (
            with(&["--drain-timeout", "soon"]),
            "--drain-timeout: `soon` is not a duration",
        ),
        (
            with(&["--allow-empty-backends"]),
            "--allow-empty-backends applies only to --backends-file",
        ),
        (
            with(&["--health-path", "/h", "--health-interval", "0s"]),
            "--health-interval must be more than zero",
        ),
        (
            with(&["--health-path", "/h", "--health-interval", "fast"]),
            "`fast` is not a duration",
        ),
        (
            with(&["--health-interval", "1s"]),
            "--health-interval needs --health-path",
        ),
        (
            with(&["--health-path", "health"]),
            "--health-path: `health` is not a path",
        ),
        (
            with(&["--hash-header", "x-user"]),
            "--hash-header applies only to --algorithm consistent-hash",
        ),
        (
            with(&[
                "--algorithm",
                "consistent-hash",
                "--hash-header",
                "bad header",
            ]),
            "`bad header` is not a header name",
        ),
        (
            with(&["--trusted-hops", "1"]),
            "--trusted-hops applies only to",
        ),
        (
            with(&["--admin", "127.0.0.1"]),
            "--admin: `127.0.0.1` is not a socket address",
        ),
        (
            with(&["--listen=127.0.0.1:2"]),
            "--listen is given more than once",
        ),
    ];
    // Arguments and file contents that are not UTF-8.
    let not_utf8 = dir.join("not-utf8");
    std::fs::write(&not_utf8, b"127.0.0.1:9001 # caf\xe9\n").unwrap();
    let too_large = dir.join("too-large");
    std::fs::write(&too_large, "#".repeat(1024 * 1024 + 1)).unwrap();
    let raw = |bytes: &[u8]| OsStr::from_bytes(bytes).to_owned();
    let os = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
    let mut os_cases: Vec<(Vec<OsString>, &str)> = cases
        .iter()
        .map(|(args, expected)| (os(args), *expected))
        .collect();
    os_cases.extend([
        (
            [os(&ok), vec![raw(b"\xff")]].concat(),
            "argument \"\\xFF\" is not valid UTF-8",
        ),
        (
            [os(&ok), os(&["--algorithm"]), vec![raw(b"p2\xff")]].concat(),
            "--algorithm: \"p2\\xFF\" is not valid UTF-8",
        ),
        (
            [
                os(&["--listen", "127.0.0.1:0", "--backends-file"]),
                vec![not_utf8.into()],
            ]
            .concat(),
            "not valid UTF-8",
        ),
        (
            [
                os(&["--listen", "127.0.0.1:0", "--backends-file"]),
                vec![too_large.into()],
            ]
            .concat(),
            "file is larger than 1048576 bytes",
        ),
        (
            os(&[
                "--listen",
                "127.0.0.1:8080",
                "--admin",
                "127.0.0.1:8080",
                "--backend",
                "127.0.0.1:9001",
            ]),
            "--admin and --listen must differ",
        ),
    ]);

    let mut wrong = Vec::new();
    for (args, expected) in &os_cases {
        let run = run_to_exit(args);
        let lines: Vec<&str> = run.stderr.lines().collect();
        let one_line = lines.len() == 1 && lines[0].starts_with("proxy: ");
        if run.status.code() != Some(2)
            || !one_line
            || !lines[0].contains(expected)
            || !run.stdout.is_empty()
        {
            wrong.push(format!(
                "{args:?}: {:?}, stderr {:?}",
                run.status.code(),
                run.stderr
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected exit 2 and one line:\n{}",
        wrong.join("\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_taken_address_exits_1_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = run_to_exit(&["--listen", &addr, "--backend", "127.0.0.1:9001"]);
    // Not a bad argument: a failure to start, status 1.
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!("proxy: cannot listen on {addr}: ")),
        "{}",
        run.stderr
    );
}
