//! A small client of etcd's v3 gRPC API: just the calls discovery and
//! registration make.
//!
//! It speaks gRPC through tonic's generic client with prost's codec; the
//! messages are declared by hand in [`proto`], so building it needs no
//! `protoc` and generates no code. One client holds one HTTP/2 connection
//! to the first endpoint that answers; a caller that loses it connects
//! again.

mod proto;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;
use tonic_prost::ProstCodec;

pub(super) use self::proto::{EventType, KeyValue, WatchResponse};
use self::proto::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    WatchCreateRequest, WatchRequest, WatchRequestUnion,
};
use super::EtcdError;

const RANGE: &str = "/etcdserverpb.KV/Range";
const PUT: &str = "/etcdserverpb.KV/Put";
const WATCH: &str = "/etcdserverpb.Watch/Watch";
const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";

/// A connection to one etcd member. Clones share it.
#[derive(Clone, Debug)]
pub(super) struct Client {
    grpc: Grpc<Channel>,
}

/// The keys under a prefix, at one revision of the store.
#[derive(Debug)]
pub(super) struct Listed {
    pub(super) kvs: Vec<KeyValue>,
    pub(super) revision: i64,
}

impl Client {
    /// Connects to the first of `endpoints` (`http://host:port`) that
    /// answers within `connect_timeout`. With `keep_alive`, the connection
    /// pings etcd that often and is given up when a ping goes unanswered
    /// as long.
    pub(super) async fn connect(
        endpoints: &[String],
        connect_timeout: Duration,
        keep_alive: Option<Duration>,
    ) -> Result<Self, EtcdError> {
        let mut last = EtcdError::no_endpoints();
        for url in endpoints {
            let endpoint = match Endpoint::from_shared(url.clone()) {
                Ok(endpoint) => endpoint.connect_timeout(connect_timeout),
                Err(error) => {
                    last = EtcdError::transport("connect", url, error);
                    continue;
                }
            };
            let endpoint = match keep_alive {
                Some(every) => endpoint
                    .http2_keep_alive_interval(every)
                    .keep_alive_timeout(every),
                None => endpoint,
            };
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(Self {
                        grpc: Grpc::new(channel),
                    })
                }
                Err(error) => last = EtcdError::transport("connect", url, error),
            }
        }
        Err(last)
    }

    /// Every key that starts with `prefix` (`list`).
    pub(super) async fn list(&mut self, prefix: &[u8]) -> Result<Listed, EtcdError> {
        let request = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
        };
        let listed: RangeResponse = self.unary("list", RANGE, request).await?;
        let revision = listed
            .header
            .map(|header| header.revision)
            .ok_or_else(|| EtcdError::protocol("list", "a list without a revision"))?;
        if listed.more {
            return Err(EtcdError::protocol("list", "a list cut short"));
        }
        Ok(Listed {
            kvs: listed.kvs,
            revision,
        })
    }

    /// Sets `key` to `value`, attached to `lease` (`put`).
    pub(super) async fn put(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
    ) -> Result<(), EtcdError> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
        };
        let _: PutResponse = self.unary("put", PUT, request).await?;
        Ok(())
    }

    /// Watches every key that starts with `prefix`, from revision `from`
    /// on (`watch`); etcd also reports its progress now and then.
    pub(super) async fn watch(&mut self, prefix: &[u8], from: i64) -> Result<Watch, EtcdError> {
        let create = WatchRequest {
            request_union: Some(WatchRequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision: from,
                progress_notify: true,
            })),
        };
        let (requests, answers) = self.streaming("watch", WATCH, create).await?;
        Ok(Watch {
            _requests: requests,
            answers,
        })
    }

    /// A lease of `ttl_secs` seconds; its id (`grant`).
    pub(super) async fn lease_grant(&mut self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let request = LeaseGrantRequest { ttl: ttl_secs };
        let granted: LeaseGrantResponse = self.unary("grant", LEASE_GRANT, request).await?;
        if !granted.error.is_empty() {
            return Err(EtcdError::protocol("grant", granted.error));
        }
        if granted.ttl <= 0 {
            return Err(EtcdError::protocol(
                "grant",
                "a lease without a time to live",
            ));
        }
        Ok(granted.id)
    }

    /// Ends lease `id`, deleting its keys (`revoke`).
    pub(super) async fn lease_revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        let _: LeaseRevokeResponse = self
            .unary("revoke", LEASE_REVOKE, LeaseRevokeRequest { id })
            .await?;
        Ok(())
    }

    /// A stream of renewals of lease `id` (`keep-alive`); the first one is
    /// already asked for.
    pub(super) async fn lease_keep_alive(&mut self, id: i64) -> Result<KeepAlive, EtcdError> {
        let first = LeaseKeepAliveRequest { id };
        let (requests, answers) = self
            .streaming("keep-alive", LEASE_KEEP_ALIVE, first)
            .await?;
        Ok(KeepAlive {
            id,
            asked: true,
            requests,
            answers,
        })
    }

    async fn unary<Q, A>(
        &mut self,
        during: &'static str,
        path: &'static str,
        request: Q,
    ) -> Result<A, EtcdError>
    where
        Q: prost::Message + Send + 'static,
        A: prost::Message + Default + Send + 'static,
    {
        self.ready(during).await?;
        let codec = ProstCodec::<Q, A>::default();
        let path = PathAndQuery::from_static(path);
        self.grpc
            .unary(tonic::Request::new(request), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| EtcdError::status(during, status))
    }

    /// Opens a stream both ways, its first request sent: etcd answers
    /// (and so opens its side) only after reading one.
    async fn streaming<Q, A>(
        &mut self,
        during: &'static str,
        path: &'static str,
        first: Q,
    ) -> Result<(mpsc::UnboundedSender<Q>, Streaming<A>), EtcdError>
    where
        Q: prost::Message + Send + 'static,
        A: prost::Message + Default + Send + 'static,
    {
        self.ready(during).await?;
        let (requests, outbox) = mpsc::unbounded_channel();
        // The receiver is alive: it is the outbox below.
        let _ = requests.send(first);
        let codec = ProstCodec::<Q, A>::default();
        let path = PathAndQuery::from_static(path);
        let answers = self
            .grpc
            .streaming(tonic::Request::new(Outbox(outbox)), path, codec)
            .await
            .map_err(|status| EtcdError::status(during, status))?
            .into_inner();
        Ok((requests, answers))
    }

    async fn ready(&mut self, during: &'static str) -> Result<(), EtcdError> {
        self.grpc
            .ready()
            .await
            .map_err(|error| EtcdError::status(during, tonic::Status::from_error(error.into())))
    }
}

/// An open watch. Dropping it ends the watch.
#[derive(Debug)]
pub(super) struct Watch {
    // Kept open: a closed request side would end the stream.
    _requests: mpsc::UnboundedSender<WatchRequest>,
    answers: Streaming<WatchResponse>,
}

impl Watch {
    /// The next answer; `None` when etcd ended the stream.
    pub(super) async fn message(&mut self) -> Result<Option<WatchResponse>, EtcdError> {
        self.answers
            .message()
            .await
            .map_err(|status| EtcdError::status("watch", status))
    }
}

/// An open stream of lease renewals.
#[derive(Debug)]
pub(super) struct KeepAlive {
    id: i64,
    // Whether a renewal was asked for and its answer not yet read.
    asked: bool,
    requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
    answers: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    /// Renews the lease once: its new time to live in seconds, or `None`
    /// if the lease is gone (it ran out while etcd was away) or etcd ended
    /// the stream.
    pub(super) async fn renew(&mut self) -> Result<Option<i64>, EtcdError> {
        if !std::mem::take(&mut self.asked) {
            self.requests
                .send(LeaseKeepAliveRequest { id: self.id })
                .map_err(|_| EtcdError::protocol("keep-alive", "the request stream closed"))?;
        }
        let answer = self
            .answers
            .message()
            .await
            .map_err(|status| EtcdError::status("keep-alive", status))?;
        Ok(answer.map(|answer| answer.ttl).filter(|ttl| *ttl > 0))
    }
}

/// The requests of a stream, as tonic reads them.
struct Outbox<T>(mpsc::UnboundedReceiver<T>);

impl<T> Stream for Outbox<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// The end of the range of keys that start with `prefix`: the prefix with
/// its last byte below 0xff raised by one (and the 0xff bytes after it
/// dropped); `\0`, etcd's "every key from here on", when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    //! The client's messages against etcd's wire format, and its key ranges.

    use prost::Message;

    use super::prefix_end;
    use super::proto::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/svc/"), b"/svc0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    // Bytes as etcd's own (Go) encoder writes them, worked out by hand from
    // the field numbers: tag = field << 3 | wire type.
    #[test]
    fn encodes_with_etcds_field_numbers() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
        };
        assert_eq!(put.encode_to_vec(), [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 7]);
        let create = WatchRequest {
            request_union: Some(WatchRequestUnion::CreateRequest(WatchCreateRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_revision: 5,
                progress_notify: true,
            })),
        };
        assert_eq!(
            create.encode_to_vec(),
            [0x0a, 10, 0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5, 0x20, 1]
        );
        assert_eq!(LeaseGrantRequest { ttl: 3 }.encode_to_vec(), [0x08, 3]);
    }

    #[test]
    fn decodes_events_and_skips_unknown_fields() {
        // header {cluster_id: 9, revision: 12}, watch_id: 0 (left out),
        // events [{type: DELETE, kv {key: "k", mod_revision: 12}}],
        // fragment: true (field 7, unused here).
        let bytes = [
            0x0a, 4, 0x08, 9, 0x18, 12, // header
            0x38, 1, // fragment
            0x5a, 9, 0x08, 1, // an event: its type
            0x12, 5, 0x0a, 1, b'k', 0x18, 12, // its kv: key, mod_revision
        ];
        let response = WatchResponse::decode(&bytes[..]).unwrap();
        assert_eq!(response.header.unwrap().revision, 12);
        let event = &response.events[0];
        assert_eq!(event.r#type(), EventType::Delete);
        let kv = event.kv.as_ref().unwrap();
        assert_eq!((kv.key.as_slice(), kv.mod_revision), (&b"k"[..], 12));
    }
}
