//! Maglev table sizes: primes, checked when configured and grown with the
//! endpoint count.

use std::error::Error;
use std::fmt;

/// The table size unless set otherwise: a prime, as the permutations need.
pub(crate) const DEFAULT_TABLE_SIZE: usize = 65_537;

/// The smallest table size accepted.
pub(crate) const MIN_TABLE_SIZE: usize = 97;

/// The largest table size: the largest prime below 2²⁴ (64 MiB of `u32`
/// entries).
pub(crate) const MAX_TABLE_SIZE: usize = 16_777_213;

/// Table entries wanted per endpoint, so that each endpoint's share of an
/// equal-weight table is within 1 % of its fair share.
pub(crate) const ENTRIES_PER_ENDPOINT: usize = 100;

/// A Maglev table size that is not a prime between 97 and 16 777 213.
///
/// Returned by [`Maglev::with_table_size`](crate::pick::Maglev::with_table_size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidTableSize {
    size: usize,
}

impl InvalidTableSize {
    /// The size that was refused.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl fmt::Display for InvalidTableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid Maglev table size {}: it must be a prime between {MIN_TABLE_SIZE} and {MAX_TABLE_SIZE}",
            self.size
        )
    }
}

impl Error for InvalidTableSize {}

pub(crate) fn check(size: usize) -> Result<usize, InvalidTableSize> {
    if (MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&size) && is_prime(size) {
        Ok(size)
    } else {
        Err(InvalidTableSize { size })
    }
}

/// The size a table for `endpoints` endpoints gets: the configured size, or
/// the first prime above 100 entries an endpoint when that is larger, up to
/// [`MAX_TABLE_SIZE`].
pub(crate) fn effective(configured: usize, endpoints: usize) -> usize {
    let wanted = endpoints.saturating_mul(ENTRIES_PER_ENDPOINT);
    if wanted <= configured {
        configured
    } else if wanted >= MAX_TABLE_SIZE {
        MAX_TABLE_SIZE
    } else {
        // Prime gaps below 2²⁴ are under 200, and MAX_TABLE_SIZE is prime.
        (wanted..=MAX_TABLE_SIZE)
            .find(|&n| is_prime(n))
            .unwrap_or(MAX_TABLE_SIZE)
    }
}

/// Trial division: sizes stay below 2²⁴, so at most about 2000 divisions.
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let small: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(MIN_TABLE_SIZE));
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(!is_prime(65_536));
        assert!(!is_prime(65_539 * 3));
    }

    #[test]
    fn sizes_are_checked() {
        for bad in [
            0,
            1,
            2,
            7,
            96,
            100,
            65_536,
            65_535,
            MAX_TABLE_SIZE + 2,
            usize::MAX,
        ] {
            assert_eq!(check(bad), Err(InvalidTableSize { size: bad }), "{bad}");
        }
        for good in [97, 101, 65_537, 1_000_003, MAX_TABLE_SIZE] {
            assert_eq!(check(good), Ok(good));
        }
        let message = check(100).unwrap_err().to_string();
        assert!(
            message.contains("100") && message.contains("prime"),
            "{message}"
        );
    }

    #[test]
    fn tables_grow_with_the_endpoint_count() {
        assert_eq!(effective(97, 0), 97);
        assert_eq!(effective(65_537, 655), 65_537);
        assert_eq!(effective(97, 10), 1009);
        assert_eq!(effective(65_537, 1000), 100_003);
        assert_eq!(effective(65_537, 1 << 20), MAX_TABLE_SIZE);
        assert_eq!(effective(65_537, usize::MAX), MAX_TABLE_SIZE);
    }
}
