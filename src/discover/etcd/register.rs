//! A server's key under a lease that is kept alive.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::client::Client;
use super::{EtcdError, DEFAULT_CONNECT_TIMEOUT};

/// A server's registration: its key under the discovery prefix, attached
/// to a lease that a task keeps alive.
///
/// * [`register`](Self::register) grants a lease of `ttl` (at least one
///   second), puts the key with the lease, and spawns a task that renews
///   the lease every third of `ttl`. If etcd loses the lease (it was down
///   longer than `ttl`), the task grants a new one and puts the key again.
/// * [`stop`](Self::stop) revokes the lease, which deletes the key at
///   once: clients stop sending new requests.
/// * Dropping the registration stops the renewals and, inside a tokio
///   runtime, revokes the lease in the background; if the process dies,
///   the key goes when the lease runs out, after at most `ttl`.
pub struct Registration {
    client: Client,
    key: String,
    lease: Arc<AtomicU64>,
    renewals: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Registers `key` with `value` (see
    /// [`endpoint_value`](super::endpoint_value)) on the etcd cluster at
    /// `endpoints` (`http://host:port` URLs; the first that answers), under
    /// a lease of `ttl`.
    pub async fn register<E: AsRef<str>>(
        endpoints: &[E],
        key: impl Into<String>,
        value: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, EtcdError> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_owned()).collect();
        let mut client = Client::connect(&endpoints, DEFAULT_CONNECT_TIMEOUT, None).await?;
        let key = key.into();
        let value = value.into();
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = grant_and_put(&mut client, &key, &value, ttl_secs).await?;
        let lease = Arc::new(AtomicU64::new(lease as u64));
        let renewals = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(keep_alive(
            endpoints,
            client.clone(),
            key.clone(),
            value,
            ttl_secs,
            Arc::clone(&lease),
            Arc::clone(&renewals),
        ));
        Ok(Self {
            client,
            key,
            lease,
            renewals,
            task: Some(task),
        })
    }

    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current lease's id.
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Relaxed) as i64
    }

    /// How many times the lease has been renewed.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Stops the renewals and revokes the lease, deleting the key.
    pub async fn stop(mut self) -> Result<(), EtcdError> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let lease = self.lease_id();
        self.client.lease_revoke(lease).await
    }
}

async fn grant_and_put(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl_secs: i64,
) -> Result<i64, EtcdError> {
    let lease = client.lease_grant(ttl_secs).await?;
    client.put(key, value, lease).await?;
    Ok(lease)
}

/// Renews the lease every third of its time to live; when renewing fails
/// or the lease is gone, registers again under a new lease (on a new
/// connection, to the first endpoint that answers, if the old one broke).
async fn keep_alive(
    endpoints: Vec<String>,
    mut client: Client,
    key: String,
    value: String,
    ttl_secs: i64,
    lease: Arc<AtomicU64>,
    renewals: Arc<AtomicU64>,
) {
    let every = Duration::from_millis((ttl_secs as u64).saturating_mul(1000) / 3)
        .max(Duration::from_millis(100));
    loop {
        let id = lease.load(Ordering::Relaxed) as i64;
        let renewed = async {
            let mut renewal = client.lease_keep_alive(id).await?;
            loop {
                match renewal.renew().await? {
                    Some(_ttl) => {
                        renewals.fetch_add(1, Ordering::Relaxed);
                    }
                    // The lease is gone (expired while etcd was away).
                    None => return Ok::<(), EtcdError>(()),
                }
                tokio::time::sleep(every).await;
            }
        }
        .await;
        let broken = renewed.is_err();
        if let Err(error) = renewed {
            tracing::warn!(%key, %error, "etcd lease renewal failed; registering again");
        }
        tokio::time::sleep(every).await;
        if broken {
            match Client::connect(&endpoints, DEFAULT_CONNECT_TIMEOUT, None).await {
                Ok(connected) => client = connected,
                Err(error) => {
                    tracing::warn!(%key, %error, "etcd registration failed; retrying");
                    continue;
                }
            }
        }
        match grant_and_put(&mut client, &key, &value, ttl_secs).await {
            Ok(new) => {
                lease.store(new as u64, Ordering::Relaxed);
                // The old lease, if it still lives, goes.
                let _ = client.lease_revoke(id).await;
            }
            Err(error) => tracing::warn!(%key, %error, "etcd registration failed; retrying"),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let mut client = self.client.clone();
                let lease = self.lease_id();
                runtime.spawn(async move {
                    let _ = client.lease_revoke(lease).await;
                });
            }
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease_id())
            .field("renewals", &self.renewals())
            .finish_non_exhaustive()
    }
}
