use super::*;

#[test]
fn error_pauses_grow_to_a_cap() {
    assert_eq!(error_pause(1), Duration::from_millis(1));
    assert_eq!(error_pause(2), Duration::from_millis(2));
    assert_eq!(error_pause(5), Duration::from_millis(16));
    assert_eq!(error_pause(11), Duration::from_millis(1000));
    assert_eq!(error_pause(u32::MAX), MAX_ERROR_PAUSE);
}
