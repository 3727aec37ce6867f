//! `fulgur serve`: recovery, the pipeline, and the HTTP listener.
//!
//! Endpoints (the Binance-compatible API comes with the `ws-api` crate):
//! - `GET /health`: `{"status":"ok","last_seq":N}`.
//! - `GET /metrics`: Prometheus text.
//! - `POST /fulgur/v1/commands`: one engine `Command` as JSON (`docs/api.md`), answered with
//!   its sequence number and events once it is durable. Loopback clients only: it can do
//!   anything an operator can.
//!
//! Replies are routed without a shared map: a handler registers its reply channel with the
//! router thread through a bounded lock-free queue, then submits; the router is a pipeline
//! reader, so it sees a command only after it is durable, and completes the reply. The
//! engine and journal threads never touch the async runtime or a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crossbeam_queue::ArrayQueue;
use fulgur_engine::journal::{FsyncPolicy, JournalConfig};
use fulgur_engine::{Command, Event};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::{Config, Fsync};
use crate::pipeline::{Batch, EngineThread, Origin, Pipeline, Reader, Stats};
use crate::recovery::{recover, FileSnapshotter};

use fulgur_ws_api::{BatchItem, Feed};
pub use fulgur_ws_api::{Reply, SubmitError};

/// Replies waiting for their command; bounds the requests in flight.
const MAX_IN_FLIGHT: usize = 65_536;
/// Largest request body.
const MAX_BODY_BYTES: usize = 64 * 1024;

type Registration = (Origin, oneshot::Sender<Reply>);

/// The running exchange: pipeline plus reply router.
pub struct Exchange {
    pub pipeline: Pipeline,
    registrations: Arc<ArrayQueue<Registration>>,
    /// The API's read model, updated from every batch before its replies go out.
    pub feed: Arc<Feed>,
    next_request: AtomicU64,
    router: Option<std::thread::JoinHandle<()>>,
    /// Set when shutdown begins: `submit` answers `Stopped` from then on.
    stopping: std::sync::atomic::AtomicBool,
    /// Held while the exchange runs: one process per data directory.
    _lock: std::fs::File,
}

impl Exchange {
    /// Recovers the data directory and starts the pipeline and the reply router. A new data
    /// directory starts with `initial` (the demo markets), journaled like any command; a
    /// setup a crash interrupted is completed.
    pub fn start(cfg: &Config, initial: Vec<Command>) -> Result<Exchange, String> {
        let lock = crate::recovery::lock_data_dir(&cfg.data_dir)?;
        let fsync = match cfg.journal.fsync {
            Fsync::Batch => FsyncPolicy::EveryBatch,
            Fsync::Interval => FsyncPolicy::EveryMillis(cfg.journal.fsync_every_ms),
            Fsync::Never => FsyncPolicy::Never,
        };
        let journal_cfg = JournalConfig {
            segment_size_limit_bytes: cfg.journal.segment_bytes,
            fsync,
        };
        let (exchange, last_seq, writer, report) =
            recover(&cfg.data_dir, cfg.engine.engine_config(), journal_cfg)?;
        tracing::info!(data_dir = %cfg.data_dir.display(), "recovered: {report}");
        let feed = Feed::new(fulgur_ws_api::view::View::from_exchange(
            &exchange,
            last_seq,
            fulgur_ws_api::now_ms(),
        ));
        let snapshots = FileSnapshotter {
            data_dir: cfg.data_dir.clone(),
            keep: cfg.snapshot.keep as usize,
        };
        let pipeline = Pipeline::start(
            cfg.pipeline_config(),
            EngineThread::new(exchange, last_seq, Box::new(writer), Box::new(snapshots)),
        );
        let reader = pipeline
            .subscribe()
            .ok_or("no reader slot for the reply router")?;
        let registrations = Arc::new(ArrayQueue::new(MAX_IN_FLIGHT));
        let regs = registrations.clone();
        let router_feed = feed.clone();
        let router = std::thread::Builder::new()
            .name("fulgur-replies".into())
            .spawn(move || route_replies(reader, regs, router_feed))
            .map_err(|e| e.to_string())?;
        let ex = Exchange {
            pipeline,
            registrations,
            feed,
            next_request: AtomicU64::new(1),
            router: Some(router),
            stopping: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        };
        // The setup commands are the data directory's first commands, submitted one by one,
        // each durable before the next, before anything else can submit: a crash in the
        // middle leaves exactly the first `last_seq` of them, and the rest resumes here.
        let done = (last_seq as usize).min(initial.len());
        if done < initial.len() {
            if done > 0 {
                tracing::warn!(done, of = initial.len(), "resuming an interrupted setup");
            }
            for c in initial.into_iter().skip(done) {
                let r = ex.submit_blocking(c)?;
                if let Some(e) = r.events.iter().find(|e| {
                    matches!(
                        e,
                        Event::CommandRejected { .. } | Event::OrderRejected { .. }
                    )
                }) {
                    return Err(format!("initial setup refused: {e:?}"));
                }
            }
            tracing::info!("new data directory: demo assets and markets created");
        }
        Ok(ex)
    }

    /// Submits a command; the receiver yields its reply once it is durable.
    pub fn submit(&self, command: Command) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let gateways = self.pipeline.gateways();
        let origin = Origin {
            gateway: (request % gateways as u64) as u16,
            request,
        };
        let (tx, rx) = oneshot::channel();
        // Registered before it is submitted, so the router knows it when the reply comes.
        self.registrations
            .push((origin, tx))
            .map_err(|_| SubmitError::Busy)?;
        match self
            .pipeline
            .gateway(origin.gateway)
            .submit(request, command)
        {
            Ok(()) => Ok(rx),
            // The registration is left behind; its receiver is dropped with `rx`, and the
            // router prunes closed registrations (`Pending::register`).
            Err(_) => Err(SubmitError::Busy),
        }
    }

    /// Submits and waits (outside async code): setup, tests, the demo.
    pub fn submit_blocking(&self, command: Command) -> Result<Reply, String> {
        match self.submit(command) {
            Ok(rx) => rx
                .blocking_recv()
                .map_err(|_| "the exchange stopped".to_string()),
            Err(SubmitError::Busy) => Err("server busy".into()),
            Err(SubmitError::Stopped) => Err("the exchange stopped".into()),
        }
    }

    /// Refuses new commands from now on (those already queued still complete).
    pub fn stop_taking(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn stats(&self) -> &Stats {
        &self.pipeline.stats
    }

    /// Drains, makes durable, snapshots; returns the final state hash and sequence number.
    pub fn shutdown(mut self) -> (u64, u64) {
        let e = self.pipeline.shutdown();
        if let Some(r) = self.router.take() {
            let _ = r.join();
        }
        (e.exchange.state_hash(), e.last_seq)
    }
}

impl fulgur_ws_api::Backend for Exchange {
    fn submit(&self, command: Command) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        Exchange::submit(self, command)
    }
}

/// Replies waiting for their command, keyed by origin; owned by the router thread alone.
struct Pending {
    map: HashMap<Origin, oneshot::Sender<Reply>>,
    /// Past this many entries, those nobody waits for any more are dropped.
    limit: usize,
}

impl Pending {
    fn new(limit: usize) -> Self {
        Pending {
            map: HashMap::with_capacity(1024),
            limit,
        }
    }

    fn register(&mut self, origin: Origin, tx: oneshot::Sender<Reply>) {
        self.map.insert(origin, tx);
        // A submit refused as busy leaves a registration no batch will ever answer; its
        // client has gone (the receiver is closed). Under overload, when busy answers are
        // frequent and the pipeline is never idle, this is what keeps the map bounded.
        if self.map.len() > self.limit {
            self.prune();
        }
    }

    fn prune(&mut self) {
        self.map.retain(|_, tx| !tx.is_closed());
    }

    fn deliver(&mut self, b: &Batch) {
        for e in &b.entries {
            if let Some(tx) = self.map.remove(&e.origin) {
                let _ = tx.send(Reply {
                    seq: e.seq,
                    ts_ns: e.ts_ns,
                    events: b.events_of(e).to_vec(),
                });
            }
        }
    }
}

/// The reply router: a pipeline reader completing registered replies.
fn route_replies(reader: Reader, registrations: Arc<ArrayQueue<Registration>>, feed: Arc<Feed>) {
    let mut pending = Pending::new(MAX_IN_FLIGHT);
    // Ends when the pipeline stops (every reader is cut off then).
    while let Ok(batch) = reader.next_timeout(Duration::from_millis(50)) {
        while let Some((origin, tx)) = registrations.pop() {
            pending.register(origin, tx);
        }
        match batch {
            Some(b) => {
                // The read model first: a client holding its reply finds its order.
                let items: Vec<BatchItem<'_>> = b
                    .commands
                    .iter()
                    .zip(&b.entries)
                    .map(|(c, e)| BatchItem {
                        seq: e.seq,
                        ts_ns: e.ts_ns,
                        command: &c.command,
                        events: b.events_of(e),
                    })
                    .collect();
                feed.on_batch(&items);
                pending.deliver(&b);
            }
            None => pending.prune(),
        }
    }
    if !pending.map.is_empty() {
        tracing::warn!(pending = pending.map.len(), "replies dropped at shutdown");
    }
}

#[derive(Clone)]
struct AppState {
    exchange: Arc<Exchange>,
    /// The custody service, when `[bitcoin]` is configured.
    custody: Option<Arc<fulgur_custody::Custody>>,
    /// Settlement and the Lightning node, when `[lightning]` is configured.
    settlement: Option<Arc<fulgur_settlement::service::Settlement>>,
    /// `<data dir>/admin-token`: the operator's endpoints want it.
    admin_token: Arc<str>,
    /// HTTP requests being served now.
    in_flight: Arc<AtomicU64>,
    /// TCP connections accepted so far.
    connections: Arc<AtomicU64>,
}

/// Counts requests in flight for `/metrics`.
async fn count_requests(
    State(s): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The API reads the client's address as a plain `SocketAddr` (rate limits by IP).
    if let Some(ConnectInfo(Peer(addr))) = req.extensions().get::<ConnectInfo<Peer>>().copied() {
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    s.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = next.run(req).await;
    s.in_flight.fetch_sub(1, Ordering::Relaxed);
    r
}

#[derive(Serialize)]
struct ErrorBody {
    code: i32,
    msg: String,
}

fn error(status: StatusCode, code: i32, msg: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code,
            msg: msg.to_string(),
        }),
    )
        .into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    let last = s.exchange.stats().last_seq.load(Ordering::Relaxed);
    Json(serde_json::json!({"status": "ok", "last_seq": last})).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let st = s.exchange.stats();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "fulgur_commands_total",
        "counter",
        "Commands sequenced and applied.",
        g(&st.commands).to_string(),
    );
    metric(
        "fulgur_batches_total",
        "counter",
        "Batches through the engine thread.",
        g(&st.batches).to_string(),
    );
    metric(
        "fulgur_busy_rejections_total",
        "counter",
        "Commands refused because a gateway queue was full.",
        g(&st.busy_rejections).to_string(),
    );
    metric(
        "fulgur_readers_cut_off_total",
        "counter",
        "Event readers cut off for being too slow.",
        g(&st.readers_cut_off).to_string(),
    );
    metric(
        "fulgur_last_seq",
        "gauge",
        "Sequence number of the last command applied.",
        g(&st.last_seq).to_string(),
    );
    metric(
        "fulgur_queue_depth",
        "gauge",
        "Requests waiting in the gateway queues.",
        s.exchange.pipeline.queue_depth().to_string(),
    );
    metric(
        "fulgur_http_requests_in_flight",
        "gauge",
        "HTTP requests being served.",
        g(&s.in_flight).to_string(),
    );
    metric(
        "fulgur_http_connections_total",
        "counter",
        "TCP connections accepted.",
        g(&s.connections).to_string(),
    );
    metric(
        "fulgur_journal_fsync_seconds_sum",
        "counter",
        "Time spent in journal fsync.",
        format!("{:.9}", g(&st.sync_ns_total) as f64 / 1e9),
    );
    metric(
        "fulgur_journal_fsync_total",
        "counter",
        "Journal fsyncs.",
        g(&st.syncs).to_string(),
    );
    metric(
        "fulgur_engine_apply_seconds_sum",
        "counter",
        "Time the engine spent applying batches.",
        format!("{:.9}", g(&st.apply_ns_total) as f64 / 1e9),
    );
    out.push_str(
        &st.fsync_histogram
            .prometheus("fulgur_journal_fsync_seconds", "Journal fsync latency."),
    );
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// Why an operator request is refused, if it is: the operator endpoints want a loopback client holding the data directory's admin token
/// (any local process can reach loopback; only the directory's owner reads the token).
fn operator_refusal(
    s: &AppState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> Option<Response> {
    if !peer.ip().is_loopback() {
        return Some(error(
            StatusCode::FORBIDDEN,
            -2015,
            "The command endpoint is for loopback clients only.",
        ));
    }
    let token = headers
        .get("x-fulgur-admin-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !fulgur_ws_api::auth::admin_token_matches(&s.admin_token, token) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            -1002,
            "You are not authorized to execute this request.",
        ));
    }
    None
}

async fn command(
    State(s): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = operator_refusal(&s, peer, &headers) {
        return r;
    }
    let command: Command = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                -1100,
                &format!("Illegal command: {e}"),
            )
        }
    };
    let rx = match s.exchange.submit(command) {
        Ok(rx) => rx,
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                -1003,
                "Server busy, try again.",
            )
        }
    };
    match rx.await {
        Ok(reply) => Json(reply).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            -1001,
            "The exchange is stopping.",
        ),
    }
}

type OpResult = Result<serde_json::Value, (u16, i32, String)>;

/// An operator's request (loopback + admin token, a JSON body): `f` runs on the blocking
/// pool with the body.
async fn operator_call(
    s: &AppState,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    f: impl FnOnce(serde_json::Value) -> OpResult + Send + 'static,
) -> Response {
    if let Some(r) = operator_refusal(s, peer, headers) {
        return r;
    }
    let args: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    -1100,
                    &format!("Illegal body: {e}"),
                )
            }
        }
    };
    match tokio::task::spawn_blocking(move || f(args)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err((st, code, msg))) => error(
            StatusCode::from_u16(st).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            &msg,
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, -1000, &e.to_string()),
    }
}

/// `POST /fulgur/v1/admin/custody/<action>` (loopback + admin token): `status`, `batch`
/// (send the withdrawal batch now), `proof` (`{"message":..,"cold_keys":[FILE..]}`),
/// `verify` (`{"reserves":<proofs.json's reserves>}`: checked against today's UTXOs),
/// `cold-psbt` (`{"address":..,"amount_sat":N}`), `broadcast` (`{"psbt":BASE64}`); and
/// `POST /fulgur/v1/admin/lightning/<action>`: see `crate::settlement::admin`.
async fn area_admin(
    State(s): State<AppState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    axum::extract::Path((area, action)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (custody, settlement) = (s.custody.clone(), s.settlement.clone());
    operator_call(&s, peer, &headers, &body, move |args| {
        let off = |what: &str, section: &str| {
            let msg =
                format!("{what} is not enabled (no [{section}] section in the configuration).");
            (400, -4019, msg)
        };
        match (area.as_str(), custody, settlement) {
            ("custody", Some(c), _) => custody_action(&c, &action, &args),
            ("custody", None, _) => Err(off("Custody", "bitcoin")),
            ("lightning", _, Some(st)) => crate::settlement::admin(&st, &action, &args),
            ("lightning", _, None) => Err(off("Lightning", "lightning")),
            _ => Err((404, -1000, format!("no operator area '{area}'"))),
        }
    })
    .await
}

fn custody_action(
    c: &Arc<fulgur_custody::Custody>,
    action: &str,
    args: &serde_json::Value,
) -> OpResult {
    let internal = |e: String| (500u16, -1000, e);
    let custody_err = |e: fulgur_custody::CustodyError| (e.status, e.code, e.msg);
    match action {
        "status" => Ok(serde_json::json!({
            "balances": c.balances(),
            "last_error": *c.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })),
        "batch" => c
            .batch_now()
            .map(|_| serde_json::json!({"ok": true}))
            .map_err(internal),
        "proof" => {
            let message = args["message"]
                .as_str()
                .unwrap_or("Fulgur proof of reserves");
            let keys = args["cold_keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .map(|f| fulgur_custody::keys::read_key(std::path::Path::new(f)))
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap_or(Ok(Vec::new()))
                .map_err(|e| (400, -1100, e))?;
            crate::custody::make_proofs(c, message, &keys).map_err(internal)
        }
        "verify" => {
            let p: fulgur_custody::proof::ReservesProof =
                serde_json::from_value(args["reserves"].clone())
                    .map_err(|e| (400, -1100, format!("not a proof of reserves: {e}")))?;
            c.verify_reserves(&p)
                .map(|sat| serde_json::json!({"reserves_sat": sat}))
                .map_err(|e| (400, -4032, e))
        }
        "cold-psbt" => {
            let address = args["address"].as_str().unwrap_or("");
            let amount = args["amount_sat"].as_u64().unwrap_or(0);
            c.cold_psbt(address, amount)
                .map(|p| serde_json::json!({"psbt": p}))
                .map_err(custody_err)
        }
        "broadcast" => c
            .broadcast_psbt(args["psbt"].as_str().unwrap_or(""))
            .map(|t| serde_json::json!({"txid": t}))
            .map_err(custody_err),
        _ => Err((404, -1000, format!("no custody action '{action}'"))),
    }
}

/// Serves until SIGTERM, Ctrl-C, or `run_for` has passed; then stops taking requests,
/// answers those in flight, drains the queues, makes everything durable and snapshots.
pub fn serve(
    cfg: Config,
    initial: Vec<Command>,
    run_for: Option<Duration>,
    demo_key: Option<crate::web::DemoKey>,
    on_ready: impl FnOnce(&Arc<Exchange>) + Send + 'static,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The engine and journal threads need the cores; the listener needs little.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let exchange = Arc::new(Exchange::start(&cfg, initial)?);
    let custody = crate::custody::start(cfg.bitcoin.as_ref(), &cfg.data_dir, &exchange)?;
    let settlement = crate::settlement::start(&cfg, &exchange, custody.as_ref())?;
    let state = AppState {
        exchange: exchange.clone(),
        custody: custody.clone(),
        settlement: settlement.clone(),
        admin_token: fulgur_ws_api::auth::admin_token(&cfg.data_dir)?.into(),
        in_flight: Arc::default(),
        connections: Arc::default(),
    };
    let connections = state.connections.clone();
    let api = fulgur_ws_api::Api::new(cfg.api_config(), exchange.clone(), exchange.feed.clone())?;
    let _ = api.capital.set(Arc::new(crate::custody::CustodyApi {
        custody: custody.clone(),
        settlement: settlement.clone(),
        feed: exchange.feed.clone(),
    }));
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/fulgur/v1/commands", post(command))
        .route("/fulgur/v1/admin/{area}/{action}", post(area_admin))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone())
        .merge(crate::web::routes(demo_key))
        .merge(fulgur_ws_api::router(api))
        .layer(axum::middleware::from_fn_with_state(state, count_requests));
    let listen = cfg.listen;
    let ready = exchange.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("listen on {listen}: {e}"))?;
        tracing::info!(%listen, "listening");
        on_ready(&ready);
        drop(ready);
        let listener = CountingListener {
            inner: listener,
            accepted: connections,
        };
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(stop_signal(run_for))
            .await
            .map_err(|e| e.to_string())
    })?;
    // The listener is closed and in-flight requests are answered: settlement and custody
    // stop (they hold the exchange), then drain and snapshot.
    if let Some(s) = &settlement {
        crate::settlement::stop(s);
    }
    drop(settlement);
    if let Some(c) = custody {
        c.stop();
    }
    exchange.stop_taking();
    rt.shutdown_timeout(Duration::from_secs(5));
    // Whatever `on_ready` started (the demo's flow) lets go of its handle when it sees the
    // exchange stop taking commands; give it a moment.
    let mut exchange = exchange;
    for _ in 0..500 {
        match Arc::try_unwrap(exchange) {
            Ok(e) => {
                let (hash, seq) = e.shutdown();
                tracing::info!(last_seq = seq, state_hash = %format!("{hash:016x}"), "stopped");
                return Ok(());
            }
            Err(shared) => {
                exchange = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Err("the exchange is still shared at shutdown".into())
}

/// The client's address, as the listener saw it.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CountingListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CountingListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The TCP listener, counting accepted connections.
struct CountingListener {
    inner: tokio::net::TcpListener,
    accepted: Arc<AtomicU64>,
}

impl axum::serve::Listener for CountingListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let c = axum::serve::Listener::accept(&mut self.inner).await;
        self.accepted.fetch_add(1, Ordering::Relaxed);
        c
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn stop_signal(run_for: Option<Duration>) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let timer = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: stopping"),
        _ = timer => tracing::info!("run time over: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulgur_engine::Command;

    fn cfg(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    fn deposits(n: u32) -> Vec<Command> {
        let mut v = vec![Command::AddAsset(Box::new(fulgur_engine::AssetSpec {
            symbol: "USD".into(),
            decimals: 2,
            class: fulgur_engine::AssetClass::Stablecoin,
        }))];
        v.extend((1..=n).map(|a| Command::Deposit {
            account: a,
            asset: 0,
            amount: 100,
        }));
        v
    }

    #[test]
    fn registrations_of_refused_submits_do_not_accumulate() {
        let mut p = Pending::new(100);
        let mut waiting = Vec::new();
        for request in 0..10_000u64 {
            let (tx, rx) = oneshot::channel();
            p.register(
                Origin {
                    gateway: 0,
                    request,
                },
                tx,
            );
            if request % 1_000 == 0 {
                waiting.push(rx); // a client still waiting
            } // else: refused as busy, the client gave up (rx dropped)
        }
        assert!(p.map.len() <= 101, "{} registrations kept", p.map.len());
        // The ones still waiting are kept.
        for r in (0..10_000u64).step_by(1_000) {
            assert!(p.map.contains_key(&Origin {
                gateway: 0,
                request: r
            }));
        }
        drop(waiting);
    }

    #[test]
    fn an_interrupted_setup_is_completed_and_a_finished_one_is_not_repeated() {
        let dir = std::env::temp_dir().join(format!("fulgur-setup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A first start that got through 3 of the 6 setup commands.
        let ex = Exchange::start(&cfg(&dir), deposits(5)[..3].to_vec()).unwrap();
        assert_eq!(ex.shutdown().1, 3);
        // The next start completes it...
        let ex = Exchange::start(&cfg(&dir), deposits(5)).unwrap();
        let (hash, seq) = ex.shutdown();
        assert_eq!(seq, 6);
        // ...to the state a start that was never interrupted reaches,
        let fresh = dir.join("fresh");
        let ex = Exchange::start(&cfg(&fresh), deposits(5)).unwrap();
        assert_eq!(ex.shutdown(), (hash, 6));
        // and a finished setup is not run again.
        let ex = Exchange::start(&cfg(&dir), deposits(5)).unwrap();
        assert_eq!(ex.shutdown(), (hash, 6));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
