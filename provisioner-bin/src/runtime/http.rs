//! The HTTP endpoints of a provisioner process, on one address: `/healthz` (the process
//! answers), `/readyz` (every readiness check passes: caches synced, backend reachable) and
//! `/metrics` (OpenMetrics text). Served by every replica, leader or not.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// A readiness check: `Ok` when ready, else why not. Called on every `/readyz` request,
/// under [`CHECK_TIMEOUT`].
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The OpenMetrics content type prometheus-client encodes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints report.
#[derive(Clone)]
pub struct Endpoints {
    registry: Arc<Registry>,
    checks: Vec<(String, ReadinessCheck)>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field(
                "checks",
                &self.checks.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Serves `registry` on `/metrics`; `/readyz` passes until checks are added.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            checks: Vec::new(),
        }
    }

    /// Adds a readiness check, reported as `name` when it fails.
    #[must_use]
    pub fn readiness_check(mut self, name: impl Into<String>, check: ReadinessCheck) -> Self {
        self.checks.push((name.into(), check));
        self
    }

    /// The answer to one request.
    pub async fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match path {
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                let failures = self.failed_checks().await;
                if failures.is_empty() {
                    text(StatusCode::OK, "ok\n".into())
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, failures.join("\n") + "\n")
                }
            }
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, OPENMETRICS)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default(),
                    Err(error) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("encoding metrics: {error}\n"),
                    ),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// `name: reason` of every failing check, all run concurrently.
    async fn failed_checks(&self) -> Vec<String> {
        let runs = self.checks.iter().map(|(name, check)| async move {
            match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(format!("{name}: {reason}")),
                Err(_) => Some(format!("{name}: no answer within {CHECK_TIMEOUT:?}")),
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Binds `address` (port 0 picks a free port; the bound address is returned).
pub async fn bind(address: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Serves `endpoints` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send,
) {
    let endpoints = Arc::new(endpoints);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let endpoints = endpoints.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        endpoints
                            .respond(request.method(), request.uri().path())
                            .await,
                    )
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "HTTP connection failed"),
                Err(_) => {
                    tracing::debug!(%peer, "HTTP connection closed after {CONNECTION_TIMEOUT:?}");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn check(result: Result<(), &'static str>) -> ReadinessCheck {
        Arc::new(move || async move { result.map_err(str::to_owned) }.boxed())
    }

    fn endpoints() -> Endpoints {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc();
        registry.register("demo", "A demo counter", counter);
        Endpoints::new(Arc::new(registry))
    }

    #[tokio::test]
    async fn healthz_always_answers() {
        let response = endpoints()
            .readiness_check("backend", check(Err("unreachable")))
            .respond(&Method::GET, "/healthz")
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_passes_only_when_every_check_passes_and_names_the_failures() {
        let ready = endpoints()
            .readiness_check("caches", check(Ok(())))
            .readiness_check("backend", check(Ok(())));
        assert_eq!(
            ready.respond(&Method::GET, "/readyz").await.status(),
            StatusCode::OK
        );

        let not_ready = endpoints()
            .readiness_check("caches", check(Err("not synced yet")))
            .readiness_check("backend", check(Ok(())));
        let response = not_ready.respond(&Method::GET, "/readyz").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(response).await, "caches: not synced yet\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_fails_readiness_after_the_timeout() {
        let hangs: ReadinessCheck = Arc::new(|| std::future::pending().boxed());
        let response = endpoints()
            .readiness_check("backend", hangs)
            .respond(&Method::GET, "/readyz")
            .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body(response)
                .await
                .starts_with("backend: no answer within")
        );
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let response = endpoints().respond(&Method::GET, "/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let text = body(response).await;
        assert!(text.contains("demo_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_refused() {
        let endpoints = endpoints();
        assert_eq!(
            endpoints.respond(&Method::GET, "/").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            endpoints.respond(&Method::POST, "/metrics").await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn serves_over_tcp_until_shut_down() {
        let (listener, address) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, endpoints(), async {
            let _ = stopped.await;
        }));
        let response = tokio::time::timeout(Duration::from_secs(30), get(address, "/healthz"))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .unwrap()
            .unwrap();
    }

    /// A minimal HTTP/1.1 GET, reading until the server closes.
    async fn get(address: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
