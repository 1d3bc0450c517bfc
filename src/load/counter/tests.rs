use super::*;

#[test]
fn handles_count_until_dropped() {
    let counter = Counter::new();
    let a = counter.start();
    let b = counter.clone().start();
    assert_eq!(counter.in_flight(), 2);
    drop(a);
    assert_eq!(counter.in_flight(), 1);
    assert!(b.counter().same_as(&counter));
    drop(b);
    assert_eq!(counter.in_flight(), 0);
    assert_eq!(counter.requests(), 2);
    assert!(!counter.same_as(&Counter::new()));
}

#[test]
fn counts_across_threads() {
    let counter = Counter::new();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let counter = counter.clone();
            scope.spawn(move || {
                for _ in 0..1000 {
                    let _handle = counter.start();
                }
            });
        }
    });
    assert_eq!(counter.in_flight(), 0);
    assert_eq!(counter.requests(), 4000);
}
