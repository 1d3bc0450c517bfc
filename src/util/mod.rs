//! Small helpers every layer of the crate uses: a seedable random generator,
//! stable hashing, and the mapping of a `Discover` stream's services.

mod discover;
mod hash;
pub(crate) mod rng;

pub(crate) use self::discover::poll_wrapped;
pub use self::hash::{hash_bytes, hash_value};
pub(crate) use self::rng::{mix64, reduce, LocalRng, Rng};
