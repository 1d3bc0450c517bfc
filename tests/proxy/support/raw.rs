//! Backends and clients that speak HTTP/1.1 by hand, for what axum and
//! hyper would not do on purpose: never answer, answer with a
//! Content-Length beside chunked framing, switch protocols and echo bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::PATIENCE;

/// What a [`RawBackend`] does with each request head it reads.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Reads the head, then holds the connection without a byte in answer.
    Hang,
    /// Writes these bytes, then closes.
    Answer(&'static str),
    /// If the head asks for `Upgrade: websocket`, answers 101 and echoes
    /// every byte after it; otherwise 400.
    UpgradeEcho,
    /// Answers 200 with a chunked body that never ends, written as fast as
    /// the proxy takes it.
    Endless,
}

/// A hand-written HTTP/1.1 backend on 127.0.0.1.
pub struct RawBackend {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let server = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                while open.try_join_next().is_some() {}
                open.spawn(serve(stream, behaviour));
            }
        });
        Self {
            addr,
            connections,
            server,
        }
    }

    pub fn arg(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    match behaviour {
        Behaviour::Hang => {
            // Holds the socket open until the proxy gives up on it.
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
        Behaviour::Answer(text) => {
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Behaviour::Endless => {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
            chunk.extend_from_slice(&[b'z'; 64 * 1024]);
            chunk.extend_from_slice(b"\r\n");
            while stream.write_all(&chunk).await.is_ok() {}
        }
        Behaviour::UpgradeEcho => {
            let lower = head.to_ascii_lowercase();
            if !lower.contains("\r\nupgrade: websocket") || !lower.contains("connection: upgrade") {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
            let switched = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
            if stream.write_all(switched.as_bytes()).await.is_err() {
                return;
            }
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        }
    }
}

/// Reads up to the end of a request or response head; `None` if the peer
/// closes first.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Sends `request` on a new connection and reads until the proxy closes
/// it (at most [`PATIENCE`]): everything it answered.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    read_to_close(&mut stream).await
}

/// Reads until the peer closes (or resets) the connection, for at most
/// [`PATIENCE`].
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the proxy closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

/// How long the peer of `stream` took to close it, reading (and dropping)
/// whatever it sent; at most [`PATIENCE`].
pub async fn time_to_close(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    read_to_close(stream).await;
    started.elapsed()
}
