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
