//! Client-side load balancing as tower middleware.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod balance;
pub mod discover;
pub mod error;
pub mod load;
pub mod pick;

pub use crate::balance::{Balance, BalanceLayer};
pub use crate::error::{BoxError, NoEndpoints};
