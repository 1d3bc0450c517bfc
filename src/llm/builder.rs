//! Builds a [`Router`]: servers, picker, health, retries, load reports,
//! bodies and flow control.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use http::HeaderValue;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::discover::Change;
use tower_layer::Layer;

use super::disagg::{learn_ports, Disaggregation, Pd, PdParts, PdProtocol, Ports, Role};
use super::failover::Failover;
use super::queue::{FlowControl, Queue};
use super::router::{Admission, Lb, Router, Server, Shared, Tasks};
use super::served_by::MarkServer;
use super::{Endpoint, HttpClient, Picker};
use crate::balance::BalanceLayer;
use crate::classify::{LateFailures, ServerErrors};
use crate::endpoint::{Endpoint as _, PrefillConfig, PrefillState, Report, ReportCell, Weighted};
use crate::health::HealthRegistry;
use crate::health::{
    ActiveChecks, HealthConfig, HealthDiscover, HttpProbe, InvalidHealthConfig, OutlierDetection,
};
use crate::http::source::{AddrStream, Source};
use crate::http::{AddRequestInfoLayer, ResponseTimeout, SetAuthority, DEFAULT_MAX_BODY};
use crate::load::{InFlight, Prefill};
use crate::pick::llm::{Saturation, Scored};
use crate::pick::{BoxPick, Pick};
use crate::report::{OrcaLayer, PrometheusPoller};
use crate::retry::{RetryLayer, RetryPolicy};

/// Idle connections kept to each server: after a burst of N requests at
/// once, the other N - 32 connections and their buffers close at once
/// instead of lingering for the pool's idle timeout (a flood of 2,000
/// client connections otherwise left the router's memory up for 90 s).
const MAX_IDLE_PER_SERVER: usize = 32;

/// Why a [`Router`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// No server and no discovery source was given.
    NoServers,
    /// A server is not `http://HOST:PORT`; the text is the one given.
    BadServer(String),
    /// A health setting cannot work.
    Health(InvalidHealthConfig),
    /// A setting cannot work; the text says which.
    Invalid(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoServers => {
                f.write_str("no model servers: give at least one, or a discovery source")
            }
            Self::BadServer(text) => write!(f, "{text:?} is not http://HOST:PORT"),
            Self::Health(error) => write!(f, "health checks: {error}"),
            Self::Invalid(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Health(error) => Some(error),
            _ => None,
        }
    }
}

impl From<InvalidHealthConfig> for BuildError {
    fn from(error: InvalidHealthConfig) -> Self {
        Self::Health(error)
    }
}

/// Builds a [`Router`]; see [the module docs](super) for an example.
///
/// Defaults: no disaggregation (see [`prefill_server`](Self::prefill_server)),
/// [`Scored::ttft`], passive outlier detection and no active
/// probe, one retry within the retry budget, ORCA load reports asked for
/// in every request, no Prometheus polling, 4 MiB JSON bodies, usage asked
/// for in every streamed answer, [`FlowControl::new`], other paths passed
/// through, 30 s per attempt for the answer's head (a non-streamed answer
/// may take 100 ms per `max_tokens`), 30 s of silence in an answer's body.
#[must_use]
pub struct Builder {
    source: Source,
    bad_server: Option<String>,
    server_models: Vec<(SocketAddr, String)>,
    models: Vec<String>,
    picker: Option<Picker>,
    health_path: Option<String>,
    health_interval: Duration,
    health_timeout: Duration,
    outlier: OutlierDetection,
    retry: RetryPolicy,
    load_reports: bool,
    metrics_path: Option<String>,
    metrics_interval: Duration,
    max_body: usize,
    ask_for_usage: bool,
    require_json: bool,
    attempt_timeout: Duration,
    time_per_token: Option<Duration>,
    stream_idle: Option<Duration>,
    connect_timeout: Duration,
    wait: Duration,
    flow: FlowControl,
    saturation: Saturation,
    pass_through: bool,
    failovers: u32,
    /// Disaggregated serving: the prefill pool, bootstrap ports, roles.
    prefill: Source,
    bootstrap: HashMap<SocketAddr, u16>,
    roles: HashMap<SocketAddr, Role>,
    disaggregation: Option<Disaggregation>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("source", &self.source)
            .field("models", &self.models)
            .field("picker", &self.picker.as_ref().map(|_| ".."))
            .field("health_path", &self.health_path)
            .field("retry", &self.retry)
            .field("metrics_path", &self.metrics_path)
            .field("max_body", &self.max_body)
            .field("flow", &self.flow)
            .field("prefill", &self.prefill)
            .field("disaggregation", &self.disaggregation)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            source: Source::None,
            bad_server: None,
            server_models: Vec::new(),
            models: Vec::new(),
            picker: None,
            health_path: None,
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            outlier: OutlierDetection::new(),
            retry: RetryPolicy::new().max_attempts(2),
            load_reports: true,
            metrics_path: None,
            metrics_interval: Duration::from_millis(100),
            max_body: DEFAULT_MAX_BODY,
            ask_for_usage: true,
            require_json: true,
            attempt_timeout: Duration::from_secs(30),
            time_per_token: Some(Duration::from_millis(100)),
            stream_idle: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(2),
            wait: Duration::from_secs(1),
            flow: FlowControl::new(),
            saturation: Saturation::default(),
            pass_through: true,
            failovers: 1,
            prefill: Source::None,
            bootstrap: HashMap::new(),
            roles: HashMap::new(),
            disaggregation: None,
        }
    }
}

/// `http://HOST:PORT` (or `HOST:PORT`) as an address.
fn address(url: &str) -> Option<SocketAddr> {
    let host = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    host.parse()
        .ok()
        .or_else(|| host.to_socket_addrs().ok()?.next())
}

impl Builder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a model server, `http://HOST:PORT`.
    pub fn server(mut self, url: &str) -> Self {
        match address(url) {
            Some(addr) => self.source.push(addr, 1),
            None => {
                self.bad_server.get_or_insert_with(|| url.to_owned());
            }
        }
        self
    }

    /// Adds model servers, `http://HOST:PORT` each.
    pub fn servers<'a>(mut self, urls: impl IntoIterator<Item = &'a str>) -> Self {
        for url in urls {
            self = self.server(url);
        }
        self
    }

    /// Adds a model server that serves `model` alone: requests for other
    /// models do not go there, and `/v1/models` lists it.
    pub fn server_for_model(mut self, url: &str, model: &str) -> Self {
        if let Some(addr) = address(url) {
            self.server_models.push((addr, model.to_owned()));
        }
        self = self.server(url);
        self.model(model)
    }

    /// Takes the servers from any `Discover` keyed by address (DNS, a
    /// [`channel`](crate::discover::channel) of `()`, your own): its
    /// weights are used, its services are not. Replaces servers given
    /// before.
    pub fn discover<D>(mut self, discover: D) -> Self
    where
        D: tower::discover::Discover<Key = SocketAddr> + Send + 'static,
        D::Service: crate::endpoint::Endpoint,
        D::Error: Into<crate::BoxError>,
    {
        self.source = Source::Stream(crate::http::source::addresses(discover));
        self
    }

    /// The prefill servers of disaggregated serving from any `Discover` of
    /// addresses: a Kubernetes Service that selects the prefill pods by
    /// their labels, an etcd prefix of prefill servers, a backends file
    /// ([`discover`](Self::discover) gives the decode servers the same
    /// way). Under SGLang's protocol each one's bootstrap port is asked of
    /// it as it joins (`/get_server_info`). Replaces the prefill servers
    /// given one by one.
    pub fn prefill_discover<D>(mut self, discover: D) -> Self
    where
        D: tower::discover::Discover<Key = SocketAddr> + Send + 'static,
        D::Service: crate::endpoint::Endpoint,
        D::Error: Into<crate::BoxError>,
    {
        self.prefill = Source::Stream(crate::http::source::addresses(discover));
        self
    }

    /// A model the router serves: `/v1/models` answers the models given
    /// here and with [`server_for_model`](Self::server_for_model), and a
    /// request for another one gets 404. Without any, every model is
    /// passed on and `/v1/models` is asked of a server.
    pub fn model(mut self, model: &str) -> Self {
        if !self.models.iter().any(|m| m == model) {
            self.models.push(model.to_owned());
        }
        self
    }

    /// The picker ([`Scored::ttft`] by default): any picker over the
    /// router's [`Endpoint`]s, say a [`Scored`] with weighted scorers.
    pub fn picker<P>(mut self, picker: P) -> Self
    where
        P: Pick<http::Request<super::UpstreamBody>, Endpoint>,
    {
        self.picker = Some(BoxPick::new(picker));
        self
    }

    /// Probes `GET path` on every server (2xx is healthy); without it only
    /// passive outlier detection runs.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = Some(path.into());
        self
    }

    /// Time between health probes (1 s by default).
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// How long a health probe may take (1 s by default).
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Passive outlier detection's settings (by default the first
    /// ejection lasts 30 s, later ones longer up to 300 s). A server whose
    /// ejection is over comes back on probation; a failure seen in an
    /// answer's body (a stalled stream, see
    /// [`stream_idle_timeout`](Self::stream_idle_timeout)) counts too.
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outlier = detection;
        self
    }

    /// Retries on another server after a failed attempt, within the retry
    /// budget (1 by default).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retry = self.retry.max_attempts(retries.saturating_add(1));
        self
    }

    /// The whole retry policy (replaces [`retries`](Self::retries)).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Asks every server for an ORCA load report in its answers
    /// (`endpoint-load-metrics-format: TEXT`; on by default). Reports
    /// servers send unasked are read either way.
    pub fn load_reports(mut self, ask: bool) -> Self {
        self.load_reports = ask;
        self
    }

    /// Polls each server's Prometheus page at `path` (vLLM, SGLang or TGI
    /// names) every [`metrics_interval`](Self::metrics_interval).
    pub fn metrics_path(mut self, path: impl Into<String>) -> Self {
        self.metrics_path = Some(path.into());
        self
    }

    /// How often to poll the metrics page (100 ms by default).
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval;
        self
    }

    /// Request bodies larger than this get 413 (4 MiB by default).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Asks servers for the usage of every streamed answer, kept from
    /// clients that did not ask, to learn what their caches reused (on by
    /// default).
    pub fn ask_for_usage(mut self, ask: bool) -> Self {
        self.ask_for_usage = ask;
        self
    }

    /// Bodies of the OpenAI routes must be JSON: one declared as something
    /// else, or that does not parse, gets 415 (on by default).
    pub fn require_json(mut self, require: bool) -> Self {
        self.require_json = require;
        self
    }

    /// How long one attempt waits for the answer's head once the request
    /// is sent (30 s by default). A timeout is a failure of the server.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// A non-streamed answer arrives whole, once generated: its attempt may
    /// take its `max_tokens` times this (no limit without `max_tokens`)
    /// when that is longer than the [attempt timeout](Self::attempt_timeout),
    /// and running out of it is not held against the server (100 ms by
    /// default; `None`: the attempt timeout for every answer).
    pub fn time_per_token(mut self, per_token: Option<Duration>) -> Self {
        self.time_per_token = per_token;
        self
    }

    /// An answer's body without a new frame for this long ends: a stream of
    /// server-sent events with an error event, any other body with an
    /// error; the stall counts as the server's failure (30 s by default;
    /// `None`: no limit).
    pub fn stream_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.stream_idle = idle;
        self
    }

    /// How long connecting to a server may take (2 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request waits for an available server before 503 (1 s by
    /// default).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Flow control ([`FlowControl::new`] by default).
    pub fn flow_control(mut self, flow: FlowControl) -> Self {
        self.flow = flow;
        self
    }

    /// When a server's fresh report makes it saturated, for flow control
    /// ([`Saturation::default`]: a queue above 5 or KV cache above 0.8).
    pub fn saturation(mut self, saturation: Saturation) -> Self {
        self.saturation = saturation;
        self
    }

    /// Adds a server of a [`Role`] in disaggregated serving (see
    /// [`disaggregation`](Self::disaggregation)): prefill servers form the
    /// prefill pool, decode servers the decode pool (the router's other
    /// servers), and servers of role both are in both. `bootstrap_port`
    /// is a prefill server's SGLang bootstrap port (`null` in the legs
    /// without it).
    pub fn server_with_role(mut self, url: &str, role: Role, bootstrap_port: Option<u16>) -> Self {
        let Some(addr) = address(url) else {
            self.bad_server.get_or_insert_with(|| url.to_owned());
            return self;
        };
        if matches!(role, Role::Prefill | Role::Both) {
            self.prefill.push(addr, 1);
            if let Some(port) = bootstrap_port {
                self.bootstrap.insert(addr, port);
            }
        }
        if matches!(role, Role::Decode | Role::Both) {
            self.source.push(addr, 1);
        }
        // A server given once as prefill and once as decode takes both.
        let role = match self.roles.get(&addr) {
            Some(&given) if given != role => Role::Both,
            _ => role,
        };
        self.roles.insert(addr, role);
        self
    }

    /// Adds a prefill server, `http://HOST:PORT`, with its SGLang
    /// bootstrap port if it has one; turns disaggregated serving on (with
    /// [`PdProtocol::Sglang`] unless [`disaggregation`](Self::disaggregation)
    /// says otherwise).
    pub fn prefill_server(self, url: &str, bootstrap_port: Option<u16>) -> Self {
        self.server_with_role(url, Role::Prefill, bootstrap_port)
    }

    /// Adds a decode server, `http://HOST:PORT` (as [`server`](Self::server)
    /// does, with its role recorded).
    pub fn decode_server(self, url: &str) -> Self {
        self.server_with_role(url, Role::Decode, None)
    }

    /// Disaggregated serving's protocol, decider and attempts; see
    /// [`Disaggregation`]. It is on when a prefill server is given; with
    /// this and no prefill server, the build fails.
    pub fn disaggregation(mut self, settings: Disaggregation) -> Self {
        self.disaggregation = Some(settings);
        self
    }

    /// Passes paths other than the OpenAI routes on to a server (on by
    /// default); off, they get 404.
    pub fn pass_through(mut self, pass: bool) -> Self {
        self.pass_through = pass;
        self
    }

    /// How many times one answer may be continued on another server when
    /// its server's stream is cut before its end, or asked again when a
    /// whole answer's body breaks off (1 by default; 0: off, and a cut
    /// stream ends with an error event). A request may lower it with the
    /// [`FAILOVER_HEADER`](super::FAILOVER_HEADER) header. See
    /// [the module docs](super#failover).
    pub fn failovers(mut self, failovers: u32) -> Self {
        self.failovers = failovers;
        self
    }

    /// Builds the router and starts its discovery worker, health tasks,
    /// pollers and queue timer on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build(self) -> Result<Router, BuildError> {
        if let Some(bad) = self.bad_server {
            return Err(BuildError::BadServer(bad));
        }
        if self.attempt_timeout.is_zero()
            || self.metrics_interval.is_zero()
            || self.stream_idle.is_some_and(|d| d.is_zero())
        {
            return Err(BuildError::Invalid(
                "the attempt timeout, the metrics interval and the stream idle timeout must not be zero",
            ));
        }
        let changes = self.source.into_stream().ok_or(BuildError::NoServers)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(MAX_IDLE_PER_SERVER)
            .build(connector);

        let stack = Stack {
            client,
            server_models: self.server_models.into(),
            timeout: self.attempt_timeout,
            load_reports: self.load_reports,
            poller: self.metrics_path.map(|path| {
                PrometheusPoller::new()
                    .path(path)
                    .interval(self.metrics_interval)
            }),
            outlier: self.outlier,
            health_path: self.health_path,
            health_interval: self.health_interval,
            health_timeout: self.health_timeout,
            wait: self.wait,
            // A configured limit per server is its slots for the TTFT model.
            prefill: PrefillConfig {
                slots: self.flow.server_limit.filter(|_| self.flow.enabled),
                ..PrefillConfig::default()
            },
        };
        let servers: Arc<Mutex<Vec<Server>>> = Arc::default();
        let picker = self
            .picker
            .unwrap_or_else(|| BoxPick::new(Scored::<_, Endpoint>::ttft()));
        let (balance, registry) = stack.pool(changes, picker, Arc::clone(&servers))?;
        let core = RetryLayer::new(self.retry)
            .body_limit(self.max_body)
            .layer(balance.clone());
        let decode_pool = balance.clone();

        let pd = match (self.disaggregation, self.prefill.into_stream()) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(BuildError::Invalid(
                    "disaggregated serving needs at least one prefill server",
                ))
            }
            (settings, Some(prefill)) => {
                let settings = settings.unwrap_or(Disaggregation::new(PdProtocol::Sglang));
                let ports: Ports = Arc::new(RwLock::new(self.bootstrap));
                let prefill = match settings.protocol {
                    PdProtocol::Sglang => learn_ports(prefill, Arc::clone(&ports)),
                    PdProtocol::Vllm => prefill,
                };
                let prefill_servers: Arc<Mutex<Vec<Server>>> = Arc::default();
                let picker = BoxPick::new(Scored::<_, Endpoint>::ttft());
                let (pool, health) = stack.pool(prefill, picker, Arc::clone(&prefill_servers))?;
                Some(Arc::new(Pd::new(PdParts {
                    prefill: pool,
                    decode: decode_pool,
                    direct: core.clone(),
                    settings,
                    bootstrap: ports,
                    roles: self.roles,
                    attempt_timeout: self.attempt_timeout,
                    wait: self.wait,
                    servers: prefill_servers,
                    health,
                })))
            }
        };
        let mut tasks = Tasks::default();
        let queue = self.flow.enabled.then(|| {
            let (limit, saturation) = (self.flow.server_limit, self.saturation);
            // Under disaggregated serving a request holds a prefill server,
            // then a decode server: the fleet takes both pools' worth, so
            // prefills go on while decode slots are full.
            let prefill_pool = pd.as_ref().map(|pd| pd.parts.prefill.clone());
            let capacity = move || {
                let decode =
                    balance.read_endpoints(|_, services| capacity(services, limit, &saturation));
                let prefill = prefill_pool.as_ref().map_or(0, |pool| {
                    pool.read_endpoints(|_, services| capacity(services, limit, &saturation))
                });
                decode.saturating_add(prefill)
            };
            let queue = Queue::new(self.flow.clone(), Box::new(capacity));
            let weak = Arc::downgrade(&queue);
            tasks.0.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(queue) => queue.poke(),
                        None => return,
                    }
                }
            }));
            queue
        });
        let models: Arc<[String]> = self.models.into();
        let mut info = AddRequestInfoLayer::new()
            .max_body(self.max_body)
            .require_json(self.require_json)
            .ask_for_usage(self.ask_for_usage);
        if let Some(per_token) = self.time_per_token {
            info = info.time_per_token(per_token);
        }
        let routed = info.layer(Admission {
            pd: pd.clone(),
            inner: core.clone(),
            queue: queue.clone(),
            models: Arc::clone(&models),
        });
        Ok(Router {
            shared: Arc::new(Shared {
                routed,
                core,
                models,
                pass_through: self.pass_through,
                stream_idle: self.stream_idle,
                failover: Arc::new(Failover::new(self.failovers, self.max_body)),
                queue,
                servers,
                health: registry,
                pd,
                _tasks: tasks,
            }),
        })
    }
}

/// What every server's stack is made of, the same in each pool.
struct Stack {
    client: HttpClient,
    server_models: Arc<[(SocketAddr, String)]>,
    timeout: Duration,
    load_reports: bool,
    poller: Option<PrometheusPoller>,
    outlier: OutlierDetection,
    health_path: Option<String>,
    health_interval: Duration,
    health_timeout: Duration,
    wait: Duration,
    prefill: PrefillConfig,
}

impl Stack {
    /// A balancer over the servers `changes` brings, each wrapped in the
    /// whole stack and recorded in `record`, with health checks.
    fn pool(
        &self,
        changes: AddrStream,
        picker: Picker,
        record: Arc<Mutex<Vec<Server>>>,
    ) -> Result<(Lb, HealthRegistry<SocketAddr>), BuildError> {
        let client = self.client.clone();
        let server_models = Arc::clone(&self.server_models);
        let (timeout, load_reports) = (self.timeout, self.load_reports);
        let poller = self.poller.clone();
        let prefill_config = self.prefill;
        let endpoints = changes.map(move |change| {
            change.map(|change| match change {
                Change::Insert(addr, weight) => {
                    let model = server_models
                        .iter()
                        .find(|(a, _)| *a == addr)
                        .map(|(_, m)| m.clone());
                    let cell = ReportCell::new();
                    if let Some(model) = &model {
                        cell.record(&Report {
                            models: Some(vec![model.as_str().into()]),
                            ..Report::default()
                        });
                    }
                    let poller = poller.as_ref().and_then(|poller| {
                        let base = format!("http://{addr}").parse().ok()?;
                        Some(poller.spawn(base, cell.clone()))
                    });
                    let format = load_reports.then(|| HeaderValue::from_static("TEXT"));
                    let service =
                        OrcaLayer::new(cell.clone())
                            .format(format)
                            .layer(MarkServer::new(
                                ResponseTimeout::new(
                                    SetAuthority::from_addr(client.clone(), addr),
                                    timeout,
                                ),
                                addr,
                            ));
                    let prefill = PrefillState::new(prefill_config).with_report(cell.clone());
                    let service = InFlight::new(Prefill::new(service, prefill.clone()));
                    let mut list = record.lock().unwrap_or_else(|e| e.into_inner());
                    list.retain(|s| s.addr != addr);
                    list.push(Server {
                        addr,
                        model,
                        _poller: poller,
                    });
                    Change::Insert(
                        addr,
                        Weighted::new(service, weight)
                            .with_report(cell)
                            .with_prefill(prefill),
                    )
                }
                Change::Remove(addr) => {
                    let mut list = record.lock().unwrap_or_else(|e| e.into_inner());
                    list.retain(|s| s.addr != addr);
                    Change::Remove(addr)
                }
            })
        });
        let mut health = HealthConfig::new()
            .passive(self.outlier)
            .classify(LateFailures(ServerErrors));
        if let Some(path) = &self.health_path {
            health = health.active(
                ActiveChecks::new(HttpProbe::get(path.clone()))
                    .interval(self.health_interval)
                    .timeout(self.health_timeout),
            );
        }
        let healthy = HealthDiscover::new(endpoints, health)?;
        let registry = healthy.registry();
        let balance = BalanceLayer::new(picker).wait(self.wait).spawn(healthy);
        Ok((balance, registry))
    }
}

/// How many requests the fleet takes at once: over the available servers
/// whose fresh report is not saturated, each one's limit; `usize::MAX`
/// without any available server (the balancer then answers).
fn capacity(services: &[Endpoint], limit: Option<u32>, saturation: &Saturation) -> usize {
    let mut any = false;
    let mut total = 0usize;
    for service in services.iter().filter(|s| s.is_available()) {
        any = true;
        let report = service.report().and_then(ReportCell::current);
        if report.is_some_and(|r| {
            r.queue > saturation.max_queue || r.kv_cache_use > saturation.max_kv_cache
        }) {
            continue;
        }
        let limit = limit.unwrap_or_else(|| {
            let slots = service.prefill().map_or(0, |p| p.stats().slots);
            let running = report.map_or(0, |r| r.running);
            slots.max(running) + 1
        });
        total += limit as usize;
    }
    if any {
        total
    } else {
        usize::MAX
    }
}
