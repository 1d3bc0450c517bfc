use std::convert::Infallible;

use tower::{service_fn, ServiceExt};

use super::*;

fn echo_uri() -> impl Service<Request<()>, Response = String, Error = Infallible> + Clone {
    service_fn(|req: Request<()>| async move { Ok::<_, Infallible>(req.uri().to_string()) })
}

#[tokio::test]
async fn rewrites_scheme_and_authority_and_keeps_the_path() {
    let endpoint = SetAuthority::http(echo_uri(), "127.0.0.1:9001").unwrap();
    for (sent, seen) in [
        ("/", "http://127.0.0.1:9001/"),
        ("/a/b?c=d", "http://127.0.0.1:9001/a/b?c=d"),
        ("http://elsewhere:80/x", "http://127.0.0.1:9001/x"),
        ("https://[::1]:443/y?z", "http://127.0.0.1:9001/y?z"),
    ] {
        let request = Request::get(sent).body(()).unwrap();
        let uri = endpoint.clone().oneshot(request).await.unwrap();
        assert_eq!(uri, seen, "sent {sent}");
    }
}

#[tokio::test]
async fn an_authority_only_uri_gets_the_root_path() {
    let endpoint = SetAuthority::http(echo_uri(), "[::1]:8080").unwrap();
    let request = Request::connect("elsewhere:443").body(()).unwrap();
    let uri = endpoint.oneshot(request).await.unwrap();
    assert_eq!(uri, "http://[::1]:8080/");
}

#[tokio::test]
async fn socket_addresses_become_authorities() {
    for addr in ["127.0.0.1:80", "[2001:db8::1]:8443", "[fe80::1%2]:9000"] {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let endpoint = SetAuthority::from_addr(echo_uri(), addr);
        assert_eq!(endpoint.authority().as_str(), addr.to_string());
    }
    let v6 = SetAuthority::from_addr(echo_uri(), "[2001:db8::1]:8443".parse().unwrap());
    let uri = v6
        .oneshot(Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(uri, "http://[2001:db8::1]:8443/x");
}

#[test]
fn a_bad_authority_is_a_typed_error() {
    for bad in ["", "a b", "host:port:x", "http://host", "/path"] {
        assert!(SetAuthority::http(echo_uri(), bad).is_err(), "{bad:?}");
    }
}
