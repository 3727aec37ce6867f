//! # fulgur-ws-api
//!
//! Fulgur's Binance-compatible Spot API on one port: REST (`/api/v3/...`), market-data
//! streams (`/ws/...`, `/stream?streams=...`) and the WebSocket API (`/ws-api/v3`). It owns
//! authentication (API keys, HMAC-SHA256 and Ed25519 signatures), rate limits, sessions,
//! and the read model the queries and streams are served from (`view`).
//!
//! It knows the engine only through its commands and events: orders go out through a
//! [`Backend`] (the root package's pipeline), and every durable batch comes back through
//! [`Api::on_batch`], which updates the read model and fans market data and user events out
//! before the batch's replies are delivered, so a client that has its answer finds its
//! order in every query.

pub mod auth;
pub mod capital;
pub mod error;
pub mod orders;
pub mod params;
pub mod ratelimit;
pub mod rest;
pub mod streams;
pub mod view;
pub mod wsapi;

use fulgur_engine::{Command, Event};
use tokio::sync::oneshot;

/// A command's outcome, sent once it is durable.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reply {
    pub seq: u64,
    /// Sequencer time, ns since the Unix epoch (Binance `transactTime` is this in ms).
    pub ts_ns: u64,
    pub events: Vec<Event>,
}

/// Why a command was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// A queue is full: try again later.
    Busy,
    /// The exchange is stopping.
    Stopped,
}

/// Where commands go: the pipeline, in the root package.
pub trait Backend: Send + Sync + 'static {
    /// Submits a command; the receiver yields its reply once the command is durable.
    fn submit(&self, command: Command) -> Result<oneshot::Receiver<Reply>, SubmitError>;
}

/// One sequenced command of a durable batch, with its events.
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    pub seq: u64,
    pub ts_ns: u64,
    pub command: &'a Command,
    pub events: &'a [Event],
}

use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use error::ApiError;
use ratelimit::{RateLimitConfig, RateLimiter};
use view::View;

/// The API's settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Where `api-keys.json` and `admin-token` live.
    pub data_dir: PathBuf,
    pub limits: RateLimitConfig,
    /// Longest wait for a command's reply before answering -1007.
    pub reply_timeout: Duration,
}

/// Where durable batches come in: the read model (and the stream fan-out). It exists from
/// recovery on, before anything is submitted, so it sees every batch after the state it
/// started from.
pub struct Feed {
    view: RwLock<View>,
    /// Market-data streams.
    pub market: streams::Hub,
    /// User-data events (WS API subscriptions, listen keys).
    pub users: wsapi::UserHub,
}

impl Feed {
    pub fn new(view: View) -> Arc<Feed> {
        Arc::new(Feed {
            view: RwLock::new(view),
            market: streams::Hub::new(),
            users: wsapi::UserHub::new(),
        })
    }

    /// The read model, for a query. Held briefly: the batch writer waits for readers.
    pub fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a durable batch to the read model and fans it out. Called by the pipeline's
    /// reply router for every batch, in order, before the batch's replies are delivered.
    pub fn on_batch(&self, items: &[BatchItem<'_>]) {
        let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
        v.apply(items);
        self.market.publish(&v, items);
        self.users.publish(&v);
    }
}

/// The API: keys, limits, the read model, and the way to the pipeline.
pub struct Api {
    pub cfg: ApiConfig,
    backend: Arc<dyn Backend>,
    pub feed: Arc<Feed>,
    pub keys: auth::KeyStore,
    pub limits: RateLimiter,
    pub admin_token: String,
    /// Deposits and withdrawals (the custody service), once the server wires it in.
    pub capital: std::sync::OnceLock<Arc<dyn capital::Capital>>,
}

impl Api {
    pub fn new(
        cfg: ApiConfig,
        backend: Arc<dyn Backend>,
        feed: Arc<Feed>,
    ) -> Result<Arc<Api>, String> {
        let keys = auth::KeyStore::open(&cfg.data_dir.join("api-keys.json"))?;
        let admin_token = auth::admin_token(&cfg.data_dir)?;
        Ok(Arc::new(Api {
            limits: RateLimiter::new(cfg.limits.clone()),
            cfg,
            backend,
            feed,
            keys,
            admin_token,
            capital: std::sync::OnceLock::new(),
        }))
    }

    pub fn view(&self) -> RwLockReadGuard<'_, View> {
        self.feed.view()
    }

    /// Submits a command and waits for its durable reply.
    pub async fn execute(&self, command: Command) -> Result<Reply, ApiError> {
        let rx = self.backend.submit(command).map_err(|e| match e {
            SubmitError::Busy => ApiError::overloaded(),
            SubmitError::Stopped => ApiError::disconnected(),
        })?;
        match tokio::time::timeout(self.cfg.reply_timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ApiError::disconnected()),
            Err(_) => Err(ApiError::new(
                503,
                -1007,
                "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
            )),
        }
    }
}

/// A WebSocket connection's read buffer. tungstenite's default (128 KiB) is zeroed on
/// every read: for messages of a few hundred bytes that memset was a tenth of the server's
/// CPU time (`perf`, bench ws).
pub const WS_READ_BUFFER_BYTES: usize = 4096;

/// Every route of the API: REST, market-data streams, WebSocket API.
pub fn router(api: Arc<Api>) -> axum::Router {
    rest::routes(api.clone())
        .merge(capital::routes(api.clone()))
        .merge(streams::routes(api.clone()))
        .merge(wsapi::routes(api))
}

/// Wall-clock milliseconds since the Unix epoch (the API's clock: timestamps, windows).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
