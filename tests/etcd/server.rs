//! A real etcd on 127.0.0.1: Debian's `etcd-server` package, started with a
//! temporary data directory and stopped when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
                    "cannot run `etcd` ({error}): these tests need a real etcd; \
                     install Debian's etcd-server package (apt-get install etcd-server)"
                )
            });
        self.child = Some(child);
        // Wait until it answers a request, within the step bound.
        let url = self.url();
        let started = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let ready = async {
                    let mut client = etcd_client::Client::connect([&url], None).await?;
                    client.get("health-check", None).await
                };
                match tokio::time::timeout(Duration::from_secs(1), ready).await {
                    Ok(Ok(_)) => return,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        assert!(started.is_ok(), "etcd did not answer within 20 s");
    }

    /// A client of this etcd.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url()], None)
            .await
            .unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
