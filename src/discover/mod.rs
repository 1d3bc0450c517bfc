//! Discovery.
mod weighted;
pub use self::weighted::{Weight, Weighted};
