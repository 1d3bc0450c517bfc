//! The task that lists and watches the prefix and sends whole sets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::client::{Client, EventType, WatchResponse};
use super::value::parse;
use super::EtcdError;
use crate::discover::located::Located;

/// What the task tells the stream.
pub(super) enum Update {
    /// The whole set under the prefix.
    Set(HashMap<SocketAddr, Located>),
    /// etcd failed; the set stays.
    Error(EtcdError),
}

/// Counters the stream can read.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) lists: AtomicUsize,
    pub(super) watches: AtomicUsize,
}

/// What the task needs.
pub(super) struct Follow {
    pub(super) endpoints: Vec<String>,
    pub(super) prefix: String,
    pub(super) connect_timeout: Duration,
    pub(super) max_backoff: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) tx: mpsc::UnboundedSender<Update>,
}

/// The keys under the prefix and what each says.
type Entries = BTreeMap<Vec<u8>, (SocketAddr, Located)>;

impl Follow {
    /// Lists, then watches from the list's revision; after a disconnect,
    /// watches again from the revision after the last one seen; lists
    /// again only when that revision was compacted.
    pub(super) async fn run(self) {
        let mut entries = Entries::new();
        // The last revision applied; `None` until a list succeeds.
        let mut revision: Option<i64> = None;
        let mut failures: u32 = 0;
        let mut client: Option<Client> = None;
        loop {
            if self.tx.is_closed() {
                return;
            }
            match self.session(&mut client, &mut entries, &mut revision).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    client = None;
                    if self.tx.send(Update::Error(error)).is_err() {
                        return;
                    }
                }
            }
            let exponent = failures.saturating_sub(1).min(16);
            let pause = Duration::from_millis(50u64 << exponent).min(self.max_backoff);
            tokio::time::sleep(if failures == 0 {
                Duration::from_millis(1)
            } else {
                pause
            })
            .await;
        }
    }

    /// One connection: list if needed, then watch until the stream ends
    /// (`Ok`) or fails.
    async fn session(
        &self,
        client: &mut Option<Client>,
        entries: &mut Entries,
        revision: &mut Option<i64>,
    ) -> Result<(), EtcdError> {
        let client = match client {
            Some(client) => client,
            None => {
                let connected = tokio::time::timeout(
                    self.connect_timeout,
                    Client::connect(
                        &self.endpoints,
                        self.connect_timeout,
                        Some(self.connect_timeout),
                    ),
                )
                .await
                .map_err(|_| EtcdError::timeout("connect"))??;
                client.insert(connected)
            }
        };
        let prefix = self.prefix.as_bytes();
        if revision.is_none() {
            let listed = tokio::time::timeout(self.connect_timeout, client.list(prefix))
                .await
                .map_err(|_| EtcdError::timeout("list"))??;
            self.counters.lists.fetch_add(1, Ordering::Relaxed);
            let mut fresh = Entries::new();
            for kv in &listed.kvs {
                self.put(&mut fresh, &kv.key, &kv.value);
            }
            *entries = fresh;
            *revision = Some(listed.revision);
            self.send(entries)?;
        }
        let from = revision.unwrap_or(0) + 1;
        let mut watch = tokio::time::timeout(self.connect_timeout, client.watch(prefix, from))
            .await
            .map_err(|_| EtcdError::timeout("watch"))??;
        self.counters.watches.fetch_add(1, Ordering::Relaxed);
        loop {
            let Some(response) = watch.message().await? else {
                return Ok(());
            };
            if response.compact_revision > 0 {
                // The revision to resume from is gone: list again.
                tracing::info!(
                    prefix = %self.prefix,
                    compacted = response.compact_revision,
                    "etcd watch revision compacted; listing again"
                );
                *revision = None;
                return Ok(());
            }
            if response.canceled {
                // Not for compaction: list again, after the usual pause.
                *revision = None;
                return Err(EtcdError::protocol(
                    "watch",
                    format!("etcd cancelled the watch: {}", response.cancel_reason),
                ));
            }
            if self.apply(&response, entries, revision) {
                self.send(entries)?;
            }
        }
    }

    /// Applies one watch answer; whether a key changed.
    fn apply(
        &self,
        response: &WatchResponse,
        entries: &mut Entries,
        revision: &mut Option<i64>,
    ) -> bool {
        let mut seen = revision.unwrap_or(0);
        for event in &response.events {
            let Some(kv) = &event.kv else { continue };
            match event.r#type() {
                EventType::Put => self.put(entries, &kv.key, &kv.value),
                EventType::Delete => {
                    entries.remove(&kv.key);
                }
            }
            seen = seen.max(kv.mod_revision);
        }
        // A progress report (no events, not the answer to the create)
        // says every change up to its revision was sent. Other answers'
        // revisions may run ahead of events still to come: the answer to
        // the create carries the store's revision while older events are
        // being caught up on.
        if response.events.is_empty() && !response.created {
            if let Some(header) = &response.header {
                seen = seen.max(header.revision);
            }
        }
        *revision = Some(seen);
        !response.events.is_empty()
    }

    /// Records a key's value; a bad value keeps the key's last good one.
    fn put(&self, entries: &mut Entries, key: &[u8], value: &[u8]) {
        match parse(value) {
            Ok(entry) => {
                entries.insert(key.to_vec(), entry);
            }
            Err(error) => tracing::warn!(
                key = %String::from_utf8_lossy(key),
                %error,
                kept = entries.contains_key(key),
                "etcd value is not an endpoint; ignored (the key's last good value is kept)"
            ),
        }
    }

    fn send(&self, entries: &Entries) -> Result<(), EtcdError> {
        // Two keys for one address: the larger weight wins.
        let mut set: HashMap<SocketAddr, Located> = HashMap::new();
        for (addr, located) in entries.values() {
            match set.get(addr) {
                Some(seen) if seen.weight >= located.weight => {}
                _ => {
                    set.insert(*addr, located.clone());
                }
            }
        }
        self.tx
            .send(Update::Set(set))
            .map_err(|_| EtcdError::protocol("watch", "the discovery stream was dropped"))
    }
}
