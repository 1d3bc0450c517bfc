use super::*;
use http_body::SizeHint;

/// A body that only reports a size hint.
struct Hinted(SizeHint);
impl Body for Hinted {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }
    fn size_hint(&self) -> SizeHint {
        self.0
    }
}

#[test]
fn bodies_are_planned_by_their_size_hint() {
    let rules = BodyRules {
        limit: 100,
        unknown_length: false,
    };
    let plain = HeaderMap::new();
    let mut grpc = HeaderMap::new();
    grpc.insert("content-type", "application/grpc+proto".parse().unwrap());
    let plan_for = |headers: &HeaderMap, rules: &BodyRules, lower: u64, upper: Option<u64>| {
        let mut hint = SizeHint::new();
        hint.set_lower(lower);
        if let Some(upper) = upper {
            hint.set_upper(upper);
        }
        match rules.plan(headers, &Hinted(hint)) {
            Plan::Empty => "empty",
            Plan::Buffer { wait: true } => "buffer",
            Plan::Buffer { wait: false } => "what is ready",
            Plan::Stream => "stream",
        }
    };
    let plan = |rules: &BodyRules, lower, upper| plan_for(&plain, rules, lower, upper);
    assert_eq!(plan(&rules, 100, Some(100)), "buffer");
    assert_eq!(plan(&rules, 101, Some(101)), "stream");
    assert_eq!(plan(&rules, 0, Some(5000)), "stream");
    assert_eq!(plan(&rules, 0, None), "stream");
    assert_eq!(plan(&rules, 500, None), "stream");
    let buffering = BodyRules {
        unknown_length: true,
        ..rules
    };
    assert_eq!(plan(&buffering, 0, None), "buffer");
    assert_eq!(plan(&buffering, 500, None), "stream");
    assert!(matches!(rules.plan(&plain, &String::new()), Plan::Empty));
    // gRPC calls of unknown length: what is ready, unless told to wait.
    assert_eq!(plan_for(&grpc, &rules, 0, None), "what is ready");
    assert_eq!(plan_for(&grpc, &rules, 500, None), "stream");
    assert_eq!(plan_for(&grpc, &rules, 10, Some(10)), "buffer");
    assert_eq!(plan_for(&grpc, &buffering, 0, None), "buffer");
}
