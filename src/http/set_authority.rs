//! Points every request of one endpoint service at that endpoint's address.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{Authority, InvalidUri, PathAndQuery, Scheme, Uri};
use http::Request;
use pin_project_lite::pin_project;
use tower::Service;

use crate::error::BoxError;

/// Sets the scheme and authority of each request's URI before calling
/// `inner`, so that one shared client (a hyper-util `Client`, which pools
/// connections per host) becomes one endpoint per backend address.
///
/// The balancer's callers send requests that carry only a path (`/v1/chat`)
/// or a URI for some other host; whichever endpoint is picked rewrites it to
/// its own address. The path and query are kept, the `Host` header is left as
/// the caller set it (hyper fills it from the URI when absent).
///
/// Cloning is cheap when `inner` is (an `Authority` is reference counted).
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use tower::{service_fn, Service, ServiceExt};
/// use tower_lb::http::SetAuthority;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_lb::BoxError> {
/// // A stand-in for `hyper_util::client::legacy::Client`: it answers the URI it was asked.
/// let client = service_fn(|req: http::Request<()>| async move {
///     Ok::<_, Infallible>(req.uri().to_string())
/// });
/// let mut endpoint = SetAuthority::http(client, "10.0.0.7:8080")?;
/// let request = http::Request::get("/v1/models?limit=2").body(())?;
/// let uri = endpoint.ready().await?.call(request).await?;
/// assert_eq!(uri, "http://10.0.0.7:8080/v1/models?limit=2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SetAuthority<S> {
    inner: S,
    scheme: Scheme,
    authority: Authority,
}

impl<S> fmt::Debug for SetAuthority<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetAuthority")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl<S> SetAuthority<S> {
    /// Sends every request to `scheme://authority`.
    pub fn new(inner: S, scheme: Scheme, authority: Authority) -> Self {
        Self {
            inner,
            scheme,
            authority,
        }
    }

    /// Sends every request to `http://authority`; `authority` is `host:port`
    /// (a `SocketAddr` written with `to_string()` fits).
    ///
    /// # Errors
    ///
    /// When `authority` is not a valid URI authority.
    pub fn http(inner: S, authority: impl AsRef<str>) -> Result<Self, InvalidUri> {
        let authority = authority.as_ref().parse::<Authority>()?;
        Ok(Self::new(inner, Scheme::HTTP, authority))
    }

    /// Sends every request to `http://addr`; infallible, for the `make`
    /// closures of [`FileDiscover`](crate::discover::FileDiscover) and DNS
    /// discovery, which hand over socket addresses.
    pub fn from_addr(inner: S, addr: std::net::SocketAddr) -> Self {
        // A socket address prints as a valid authority, an IPv6 zone
        // (`%2`) included; should one ever not, the address without its zone
        // still names the host.
        let authority = Authority::try_from(addr.to_string().as_str()).unwrap_or_else(|_| {
            let plain = std::net::SocketAddr::new(addr.ip(), addr.port());
            Authority::try_from(format!("[{}]:{}", plain.ip(), plain.port()).as_str())
                .unwrap_or_else(|_| Authority::from_static("invalid.invalid"))
        });
        Self::new(inner, Scheme::HTTP, authority)
    }

    /// The address requests are sent to.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the client.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn rewrite(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

impl<S, B> Service<Request<B>> for SetAuthority<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.rewrite(request.uri()) {
            Ok(uri) => {
                *request.uri_mut() = uri;
                ResponseFuture {
                    inner: Some(self.inner.call(request)),
                    error: None,
                }
            }
            // Unreachable with a valid authority and path, but a bad URI is
            // the request's error, never a panic.
            Err(error) => ResponseFuture {
                inner: None,
                error: Some(error.into()),
            },
        }
    }
}

pin_project! {
    /// The future of [`SetAuthority`]: the inner client's, with its error
    /// boxed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        error: Option<BoxError>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(this
                .error
                .take()
                .unwrap_or_else(|| "set-authority future polled after completion".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
