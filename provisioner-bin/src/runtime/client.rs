//! The Kubernetes client of a provisioner process: from a kubeconfig or the in-cluster
//! service account, with a client-side rate limit and every request counted.
//!
//! kube-rs has no client-side rate limiter (client-go has `--kube-api-qps`/`--kube-api-burst`),
//! so [`ApiClientLayer`] adds one to kube's tower stack, outside its request buffer: requests
//! queue in the buffer while the bucket is empty. The same layer counts each request by
//! verb, resource and response code (`kubernetes_client_requests_total`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::Client;
use kube::client::ClientBuilder;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use super::rate_limit::TokenBucket;
use super::request_kind::{RequestKind, classify};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account is available.
    #[error("no Kubernetes configuration (set KUBECONFIG, or run in a pod): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The configuration could not be turned into a client.
    #[error("building the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// How to reach the API server and how fast.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// A kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Sustained requests per second; 0 or less: unlimited.
    pub qps: f32,
    /// Requests that may be sent at once after a quiet period.
    pub burst: u32,
}

/// Reads the client configuration.
pub async fn load_config(kubeconfig: Option<&PathBuf>) -> Result<Config, ClientError> {
    match kubeconfig {
        Some(path) => {
            let wrap = |source| ClientError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(wrap)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(wrap)
        }
        None => Ok(Config::infer().await?),
    }
}

/// Builds the client with the rate limit of `settings`, counting requests into `metrics`.
pub async fn build_client(
    settings: &ClientSettings,
    metrics: &ClientMetrics,
) -> Result<Client, ClientError> {
    let config = load_config(settings.kubeconfig.as_ref()).await?;
    let layer = ApiClientLayer::new(settings.qps, settings.burst, Some(metrics.clone()));
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

/// Counts of the requests a client sent, and how long the rate limiter held them.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    requests: Family<RequestLabels, Counter>,
    limiter_wait: Histogram,
}

impl ClientMetrics {
    /// Creates the metrics and registers them in `registry`:
    /// `kubernetes_client_requests_total{verb, resource, code}` (code: the HTTP status, or
    /// `error` when no response came) and `kubernetes_client_rate_limiter_duration_seconds`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            limiter_wait: Histogram::new(exponential_buckets(0.001, 4.0, 8)),
        };
        registry.register(
            "kubernetes_client_requests",
            "Requests this process sent to the Kubernetes API, watches and lists included. Broken down by verb, resource and response code",
            metrics.requests.clone(),
        );
        registry.register(
            "kubernetes_client_rate_limiter_duration_seconds",
            "How long requests waited for the client-side rate limiter",
            metrics.limiter_wait.clone(),
        );
        metrics
    }

    fn record(&self, kind: RequestKind, code: String) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: kind.verb,
                resource: kind.resource,
                code,
            })
            .inc();
    }
}

/// A tower layer for kube's client stack: a token-bucket rate limit and request counting.
#[derive(Clone, Debug)]
pub struct ApiClientLayer {
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    metrics: Option<ClientMetrics>,
}

impl ApiClientLayer {
    /// Limits to `qps` requests a second with bursts of `burst` (no limit when `qps` is
    /// not positive); counts into `metrics` if given.
    pub fn new(qps: f32, burst: u32, metrics: Option<ClientMetrics>) -> Self {
        let bucket = (qps > 0.0).then(|| {
            Arc::new(Mutex::new(TokenBucket::new(
                f64::from(qps),
                burst,
                tokio::time::Instant::now().into_std(),
            )))
        });
        Self { bucket, metrics }
    }
}

impl<S> Layer<S> for ApiClientLayer {
    type Service = ApiClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiClientService {
            inner,
            bucket: self.bucket.clone(),
            metrics: self.metrics.clone(),
            reserved: false,
            delay: None,
        }
    }
}

/// The service of [`ApiClientLayer`]. It waits for a token in `poll_ready`, so requests
/// stay queued in kube's buffer (in order) while the bucket is empty.
pub struct ApiClientService<S> {
    inner: S,
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    metrics: Option<ClientMetrics>,
    /// A token is reserved for the next call.
    reserved: bool,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> std::fmt::Debug for ApiClientService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClientService")
            .field("limited", &self.bucket.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiClientService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(bucket) = &self.bucket
            && !self.reserved
        {
            let wait = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                // tokio's clock, the one the wait below sleeps on.
                .reserve(tokio::time::Instant::now().into_std());
            self.reserved = true;
            if !wait.is_zero() {
                if let Some(metrics) = &self.metrics {
                    metrics.limiter_wait.observe(wait.as_secs_f64());
                }
                self.delay = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        if let Some(delay) = &mut self.delay {
            ready!(delay.as_mut().poll(cx));
            self.delay = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.reserved = false;
        let kind = self.metrics.as_ref().map(|_| {
            classify(
                request.method(),
                request.uri().path(),
                request.uri().query(),
            )
        });
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            if let (Some(metrics), Some(kind)) = (metrics, kind) {
                let code = match &result {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                };
                metrics.record(kind, code);
            }
            result
        })
    }
}

/// The default client-side limit: 500 requests a second sustained, bursts of 1,000. See
/// [`CommonArgs`](super::CommonArgs) for why.
pub const DEFAULT_QPS: f32 = 500.0;
/// See [`DEFAULT_QPS`].
pub const DEFAULT_BURST: u32 = 1000;

/// How long [`build_client`] may take at most is bounded by kube's own connect timeouts;
/// this is the limit the runtime puts on reading the service-account namespace file.
pub(crate) const FILE_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt as _;

    use super::*;

    /// Answers every request with 200 at once, counting them.
    #[derive(Clone, Default)]
    struct Answer(Arc<AtomicUsize>);

    impl Service<Request<()>> for Answer {
        type Response = Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<()>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(())))
        }
    }

    fn request(method: http::Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn holds_requests_beyond_the_burst_until_tokens_refill() {
        let answered = Answer::default();
        let mut service = ApiClientLayer::new(10.0, 5, None).layer(answered.clone());
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            service
                .ready()
                .await
                .unwrap()
                .call(request(http::Method::GET, "/api/v1/persistentvolumes/a"))
                .await
                .unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst passes at once");
        for _ in 0..10 {
            service
                .ready()
                .await
                .unwrap()
                .call(request(http::Method::GET, "/api/v1/persistentvolumes/a"))
                .await
                .unwrap();
        }
        assert_eq!(answered.0.load(Ordering::SeqCst), 15);
        // Ten more at 10 a second: one second.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(999) && waited < Duration::from_millis(1100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_when_qps_is_zero() {
        let mut service = ApiClientLayer::new(0.0, 0, None).layer(Answer::default());
        let start = tokio::time::Instant::now();
        for _ in 0..1000 {
            service
                .ready()
                .await
                .unwrap()
                .call(request(http::Method::GET, "/api/v1/nodes"))
                .await
                .unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn counts_requests_by_verb_resource_and_code() {
        let mut registry = Registry::default();
        let metrics = ClientMetrics::new(&mut registry);
        let mut service = ApiClientLayer::new(0.0, 0, Some(metrics)).layer(Answer::default());
        for (method, uri) in [
            (
                http::Method::PUT,
                "/api/v1/namespaces/a/persistentvolumeclaims/c",
            ),
            (
                http::Method::PUT,
                "/api/v1/namespaces/b/persistentvolumeclaims/d",
            ),
            (http::Method::GET, "/api/v1/persistentvolumes?watch=true"),
        ] {
            service
                .ready()
                .await
                .unwrap()
                .call(request(method, uri))
                .await
                .unwrap();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"kubernetes_client_requests_total{verb="update",resource="persistentvolumeclaims",code="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kubernetes_client_requests_total{verb="watch",resource="persistentvolumes",code="200"} 1"#),
            "{text}"
        );
    }
}
