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
pub mod error;
pub mod ratelimit;
pub mod streams;
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
