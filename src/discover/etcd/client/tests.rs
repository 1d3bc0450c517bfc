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
