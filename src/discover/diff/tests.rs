use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn drain(diff: &mut Diff) -> Vec<String> {
    std::iter::from_fn(|| diff.next_change(|addr| addr.port()))
        .map(|change| match change {
            Change::Insert(addr, svc) => {
                use crate::endpoint::Endpoint;
                format!("+{}@{}", addr.port(), svc.weight())
            }
            Change::Remove(addr) => format!("-{}", addr.port()),
        })
        .collect()
}

#[test]
fn yields_only_differences() {
    let mut diff = Diff::default();
    diff.update([(addr(2), 1), (addr(1), 1)]);
    assert_eq!(drain(&mut diff), ["+1@1", "+2@1"]);

    diff.update([(addr(1), 1), (addr(2), 1)]);
    assert!(drain(&mut diff).is_empty());

    diff.update([(addr(1), 1), (addr(2), 5), (addr(3), 1)]);
    assert_eq!(drain(&mut diff), ["+2@5", "+3@1"]);

    diff.update([(addr(3), 1)]);
    assert_eq!(drain(&mut diff), ["-1", "-2"]);
    assert_eq!(diff.len(), 1);

    diff.update([]);
    assert_eq!(drain(&mut diff), ["-3"]);
}

#[test]
fn an_error_comes_before_the_changes() {
    let mut diff = Diff::default();
    diff.update([(addr(1), 1)]);
    let mut error = Some("failed");
    let mut next = || diff.next_item(&mut error, |addr| addr.port());
    assert!(matches!(next(), Some(Err("failed"))));
    assert!(matches!(next(), Some(Ok(Change::Insert(_, _)))));
    assert!(next().is_none());
}
