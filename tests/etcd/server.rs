//! A real etcd on 127.0.0.1: Debian's `etcd-server` package, started with a
//! temporary data directory and stopped when dropped. Without an `etcd`
//! binary the tests fail, saying what to install: they never pass unrun.
//!
//! Tests set and read keys with [`Kv`], through etcd's HTTP/JSON gateway
//! on the client port, so the state they set up does not pass through the
//! client under test. `tests/proxy` includes this file too and uses part
//! of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// A running etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-lb-etcd-{}-{}",
            std::process::id(),
            free_port().port()
        ));
        let mut etcd = Self {
            child: None,
            dir,
            client: free_port(),
            peer: free_port(),
        };
        etcd.restart().await;
        etcd
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills etcd (its data stays) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, and waits until it
    /// answers.
    pub async fn restart(&mut self) {
        self.kill();
        let peer = format!("http://{}", self.peer);
        let child = Command::new("etcd")
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `etcd` ({error}): the etcd tests need a real etcd binary; \
                     install Debian's etcd-server package (`apt-get install etcd-server`), \
                     or run `scripts/test`, which installs it when missing"
                )
            });
        self.child = Some(child);
        // Wait until it answers a read, within the step bound.
        let kv = self.kv();
        let started = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let read = kv.call("/v3/kv/range", json!({ "key": b64("health-check") }));
                match tokio::time::timeout(Duration::from_secs(1), read).await {
                    Ok(Ok(_)) => return,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        assert!(started.is_ok(), "etcd did not answer within 20 s");
    }

    /// This etcd's keys, through its HTTP/JSON gateway.
    pub fn kv(&self) -> Kv {
        Kv {
            url: self.url(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// This etcd's keys, through its HTTP/JSON gateway ([`kv`](Self::kv)).
    pub async fn client(&self) -> Kv {
        self.kv()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The keys of one etcd through its HTTP/JSON gateway (`POST /v3/kv/put`,
/// `/v3/kv/range`, `/v3/kv/deleterange`; keys and values in base64).
/// Clones share the connections.
#[derive(Clone, Debug)]
pub struct Kv {
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Kv {
    /// Sets `key` to `value`, attached to `lease` if given.
    pub async fn put(
        &mut self,
        key: impl AsRef<str>,
        value: impl AsRef<str>,
        lease: Option<i64>,
    ) -> Result<(), String> {
        let mut body = json!({ "key": b64(key.as_ref()), "value": b64(value.as_ref()) });
        if let Some(lease) = lease {
            body["lease"] = Value::from(lease.to_string());
        }
        self.call("/v3/kv/put", body).await.map(drop)
    }

    /// Deletes `key`, or with `range_end` every key in `[key, range_end)`.
    pub async fn delete(
        &mut self,
        key: impl AsRef<str>,
        range_end: Option<&str>,
    ) -> Result<(), String> {
        let mut body = json!({ "key": b64(key.as_ref()) });
        if let Some(end) = range_end {
            body["range_end"] = Value::from(b64(end));
        }
        self.call("/v3/kv/deleterange", body).await.map(drop)
    }

    /// Deletes every key that starts with `prefix`.
    pub async fn delete_prefix(&mut self, prefix: &str) -> Result<(), String> {
        let end = prefix_end(prefix);
        self.delete(prefix, Some(&end)).await
    }

    /// The keys that start with `prefix`, with their values, in key order.
    pub async fn list_prefix(&mut self, prefix: &str) -> Result<Vec<(String, String)>, String> {
        let body = json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)) });
        let listed = self.call("/v3/kv/range", body).await?;
        // No `kvs` field when there is no key.
        let kvs = listed["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter()
            .map(|kv| Ok((unb64(&kv["key"])?, unb64(&kv["value"])?)))
            .collect()
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| format!("POST {path}: {error}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| format!("POST {path}: {error}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("POST {path}: {error}"))?
            .to_bytes();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!("POST {path}: {status} {text}"));
        }
        serde_json::from_slice(&bytes).map_err(|error| format!("POST {path}: {error}"))
    }
}

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

fn unb64(value: &Value) -> Result<String, String> {
    let text = value.as_str().unwrap_or_default();
    let bytes = STANDARD
        .decode(text)
        .map_err(|error| format!("{text:?}: {error}"))?;
    String::from_utf8(bytes).map_err(|error| error.to_string())
}

/// The end of the range of keys that start with `prefix`: its last
/// character raised by one (the tests' prefixes are ASCII, and end with
/// `/`).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    let last = end.pop().expect("a prefix");
    assert!(last.is_ascii() && last < '\x7f', "prefix {prefix:?}");
    end.push(char::from(last as u8 + 1));
    end
}
