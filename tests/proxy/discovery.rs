//! Backends files that cannot hurt (issue 12, findings 3 and 4): an empty
//! file or a FIFO keeps the set, and a later valid file applies.

use std::process::Command;

use http::StatusCode;
use tokio::task::block_in_place;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_keeps_the_set_and_a_later_valid_file_applies() {
    let [a, b] = <[Backend; 2]>::try_from(backends(&["a", "b"]).await)
        .ok()
        .unwrap();
    let dir = temp_dir("empty-file");
    let file = dir.join("backends");
    write_atomically(&file, &format!("{}\n", a.addr()));
    let path = file.to_str().expect("a UTF-8 path");
    let proxy = block_in_place(|| Proxy::start(&["--backends-file", path]));
    let client = client();

    // In place, as `cat good > backends` does: empty for a moment, and
    // comments only.
    for text in ["", "# nothing here\n"] {
        std::fs::write(&file, text).expect("write");
        block_in_place(|| proxy.wait_for_log("lists no backend", PATIENCE));
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), "a");
    }
    write_atomically(&file, &format!("{}\n", b.addr()));
    eventually("b replaces a", || async {
        let report = status(&client, &proxy).await;
        report.len() == 1 && report[0].address == b.addr()
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_keeps_the_set_and_a_later_valid_file_applies() {
    let [a, b] = <[Backend; 2]>::try_from(backends(&["a", "b"]).await)
        .ok()
        .unwrap();
    let dir = temp_dir("fifo");
    let file = dir.join("backends");
    write_atomically(&file, &format!("{}\n", a.addr()));
    let path = file.to_str().expect("a UTF-8 path");
    let proxy = block_in_place(|| Proxy::start(&["--backends-file", path]));
    let client = client();

    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::fs::rename(&fifo, &file).expect("a FIFO in place of the file");
    block_in_place(|| proxy.wait_for_log("not a regular file", PATIENCE));
    let answer = get(&client, &proxy.url("/")).await.expect("an answer");
    assert_eq!(answer.text(), "a");

    write_atomically(&file, &format!("{}\n", b.addr()));
    eventually("b replaces a", || async {
        let report = status(&client, &proxy).await;
        report.len() == 1 && report[0].address == b.addr()
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_fifo_at_start_is_refused_at_once() {
    let dir = temp_dir("fifo-start");
    let fifo = dir.join("backends");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let finished = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--backends-file",
        fifo.to_str().expect("UTF-8"),
    ]);
    assert_eq!(finished.status.code(), Some(2));
    assert!(
        finished.stderr.contains("not a regular file"),
        "{}",
        finished.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_empty_file_at_start_needs_allow_empty_backends() {
    let dir = temp_dir("empty-start");
    let file = dir.join("backends");
    std::fs::write(&file, "# none yet\n").expect("write");
    let path = file.to_str().expect("UTF-8");
    let finished = run_to_exit(&["--listen", "127.0.0.1:0", "--backends-file", path]);
    assert_eq!(finished.status.code(), Some(2));
    assert!(
        finished.stderr.contains("--allow-empty-backends"),
        "{}",
        finished.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `count` backends on ports from `first`, one a line.
fn many_backends(first: u16, count: u16) -> String {
    (0..count)
        .map(|i| format!("127.0.0.1:{}\n", first + i))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_between_two_large_files_logs_a_line_a_change() {
    let dir = temp_dir("flip");
    let file = dir.join("backends");
    let (one, two) = (many_backends(20_000, 10_000), many_backends(40_000, 10_000));
    write_atomically(&file, &one);
    let path = file.to_str().expect("a UTF-8 path");
    let proxy = block_in_place(|| Proxy::start(&["--backends-file", path]));
    let client = client();
    let before = proxy.log().len();
    for (n, text) in [&two, &one, &two, &one].into_iter().enumerate() {
        write_atomically(&file, text);
        let first = if n % 2 == 0 { 40_000 } else { 20_000 };
        eventually("the other file applies", || async {
            let report = status(&client, &proxy).await;
            report.len() == 10_000
                && report[0].address.port() >= first
                && report[0].address.port() < first + 10_000
        })
        .await;
    }
    let logged = proxy.log().len() - before;
    // Four changes of 20,000 endpoints each: a few lines, not 80,000.
    assert!(
        logged < 16 * 1024,
        "{logged} bytes of logs:\n{}",
        proxy.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}
