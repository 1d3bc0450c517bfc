//! `--discovery etcd:URL/PREFIX` with `--zone`: the proxy follows a real
//! etcd (Debian's `etcd-server`) and keeps requests in its zone until the
//! zone has no backend left; `--subset` and `--discovery` mistakes exit 2.

use http::StatusCode;
use tokio::task::block_in_place;

use crate::support::*;

#[path = "../etcd/server.rs"]
mod etcd_server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_etcd_and_prefers_its_zone() {
    let [a, b] = <[Backend; 2]>::try_from(backends(&["a", "b"]).await)
        .ok()
        .unwrap();
    let etcd = etcd_server::Etcd::start().await;
    let mut kv = etcd.client().await;
    kv.put("/svc/web/a", format!("{} zone=z1", a.addr()), None)
        .await
        .unwrap();
    kv.put("/svc/web/b", format!("{} zone=z2", b.addr()), None)
        .await
        .unwrap();
    let spec = format!("etcd:{}/svc/web/", etcd.url());
    let proxy = block_in_place(|| Proxy::start(&["--discovery", &spec, "--zone", "z1"]));
    let client = client();
    eventually("both backends are in", || async {
        status(&client, &proxy).await.len() == 2
    })
    .await;
    for _ in 0..20 {
        let answer = get(&client, &proxy.url("/")).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), "a", "z1 is preferred");
    }
    // The zone's only backend leaves: requests spill to z2.
    kv.delete("/svc/web/a", None).await.unwrap();
    eventually("a is gone", || async {
        let report = status(&client, &proxy).await;
        report.len() == 1 && report[0].address == b.addr()
    })
    .await;
    let answer = get(&client, &proxy.url("/")).await.expect("an answer");
    assert_eq!(answer.text(), "b");
}

#[test]
fn bad_discovery_flags_exit_2() {
    for (args, message) in [
        (vec!["--discovery", "consul:web"], "names no registry"),
        (
            vec!["--discovery", "etcd:127.0.0.1:2379/x"],
            "is not etcd:http://HOST:PORT/PREFIX",
        ),
        (
            vec!["--backend", "127.0.0.1:9001", "--subset", "3"],
            "--subset applies only to --discovery",
        ),
        (
            vec![
                "--discovery",
                "etcd:http://127.0.0.1:1/x/",
                "--backend",
                "127.0.0.1:9001",
            ],
            "--discovery cannot be combined",
        ),
        (
            vec!["--backend", "127.0.0.1:9001", "--zone", "a b"],
            "not a zone name",
        ),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let run = run_to_exit(&all);
        assert_eq!(run.status.code(), Some(2), "{all:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{all:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}
