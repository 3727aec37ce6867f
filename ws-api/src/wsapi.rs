//! (being written) The WebSocket API (`/ws-api/v3`) and user-data delivery.
#![allow(unused_variables, dead_code)]

use std::sync::Arc;

use axum::Router;
use fulgur_engine::AccountId;

use crate::view::View;
use crate::Api;

/// User events (`executionReport`, `outboundAccountPosition`, `balanceUpdate`) per account.
#[derive(Default)]
pub struct UserHub {}

/// One subscriber's user events, each a Binance event object as JSON text (no envelope).
/// Dropping it unsubscribes.
pub struct UserSubscription {
    pub rx: tokio::sync::mpsc::Receiver<Arc<str>>,
}

impl UserHub {
    pub fn new() -> UserHub {
        UserHub::default()
    }

    /// Called with the write lock on the view held, after a batch was applied to it: its
    /// `exec_updates` and `balance_updates` are that batch's. Must never block.
    pub fn publish(&self, view: &View) {}

    /// Subscribes to an account's user events; `None` past the subscriber limit.
    pub fn subscribe(&self, account: AccountId, capacity: usize) -> Option<UserSubscription> {
        None
    }

    /// The account of a live listen key (`POST /api/v3/userDataStream`).
    pub fn listen_key_account(&self, key: &str) -> Option<AccountId> {
        None
    }
}

/// `/ws-api/v3` and the listen-key endpoints `/api/v3/userDataStream`.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new().with_state(api)
}
