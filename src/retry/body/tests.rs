use super::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn replay_yields_data_then_trailers_for_every_clone() {
    let mut trailers = HeaderMap::new();
    trailers.insert("checksum", "abc".parse().unwrap());
    let body: ReplayBody<String> = ReplayBody::replay(Bytes::from("hello"), Some(trailers));
    assert!(body.is_replayable());
    assert_eq!(body.size_hint().exact(), Some(5));
    let again = body.try_clone().unwrap();
    for body in [body, again] {
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["checksum"], "abc");
        assert_eq!(collected.to_bytes(), "hello");
    }
}

#[tokio::test]
async fn spilled_bodies_keep_every_byte() {
    let body = ReplayBody::spilled(Bytes::from("head-"), Box::pin(String::from("tail")));
    assert!(!body.is_replayable() && body.try_clone().is_none());
    assert_eq!(body.size_hint().exact(), Some(9));
    assert_eq!(body.collect().await.unwrap().to_bytes(), "head-tail");
    let streamed = ReplayBody::stream(String::from("once"));
    assert_eq!(streamed.collect().await.unwrap().to_bytes(), "once");
}

#[test]
fn collected_joins_only_when_needed() {
    let mut one = Collected::default();
    let bytes = Bytes::from_static(b"abc");
    one.push(bytes.clone());
    assert_eq!(one.into_bytes().as_ptr(), bytes.as_ptr(), "no copy");
    let mut many = Collected::default();
    for chunk in ["ab", "cd", "e"] {
        many.push(chunk.as_bytes());
    }
    assert_eq!(many.len(), 5);
    assert_eq!(many.into_bytes(), "abcde");
}
