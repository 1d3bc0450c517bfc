use super::*;

#[test]
fn srv_weight_zero_is_one() {
    assert_eq!(srv_weight(0), 1);
    assert_eq!(srv_weight(1), 1);
    assert_eq!(srv_weight(u16::MAX), 65535);
}
