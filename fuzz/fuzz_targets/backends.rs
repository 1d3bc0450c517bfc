//! `ADDR[@WEIGHT]` lines and backends files: any text gives a list or an
//! error, never a panic; a list is valid and survives a round trip; an
//! error message stays one short line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_lb::discover::{parse_backend, parse_backends, MAX_ENTRIES, MAX_LINE_LEN};

fuzz_target!(|text: &str| {
    let one = parse_backend(text);
    match &one {
        Ok((_, weight)) => assert!(*weight >= 1),
        Err(error) => short_line(&error.to_string()),
    }

    match parse_backends(text) {
        Ok(list) => {
            assert!(list.len() <= MAX_ENTRIES);
            for (i, (addr, weight)) in list.iter().enumerate() {
                assert!(*weight >= 1);
                assert!(
                    list[..i].iter().all(|(other, _)| other != addr),
                    "{addr} twice"
                );
            }
            // What was read, written back in the same format, reads the same.
            let written: String = list.iter().map(|(a, w)| format!("{a}@{w}\n")).collect();
            assert_eq!(
                parse_backends(&written).expect("our own output parses"),
                list
            );
        }
        Err(error) => {
            short_line(&error.to_string());
            if let Some(line) = error.line() {
                assert!(line >= 1 && line <= text.lines().count().max(1));
            }
        }
    }

    // A single line without a comment is a one-entry file.
    let single = !text.contains(['\n', '#']) && !text.starts_with('\u{feff}');
    if single && text.len() <= MAX_LINE_LEN && !text.trim().is_empty() {
        match (parse_backends(text), one) {
            (Ok(list), Ok(entry)) => assert_eq!(list, [entry]),
            (Err(_), Err(_)) => {}
            (file, line) => panic!("file {file:?} but line {line:?} for {text:?}"),
        }
    }
});

/// Error messages quote at most 64 characters of the input, escaped.
fn short_line(message: &str) {
    assert!(!message.contains('\n'), "{message:?}");
    assert!(message.len() <= 1024, "{} bytes", message.len());
}
