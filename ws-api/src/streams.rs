//! (being written) Market-data streams: `/ws/<streams>`, `/stream?streams=`, live
//! SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS.
#![allow(unused_variables, dead_code)]

use std::sync::Arc;

use axum::Router;

use crate::view::View;
use crate::{Api, BatchItem};

/// Fans market data out to stream subscribers.
#[derive(Default)]
pub struct Hub {}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Called with the write lock on the view held, after `items` were applied to it.
    /// Must never block or wait on a subscriber.
    pub fn publish(&self, view: &View, items: &[BatchItem<'_>]) {}
}

/// `/ws`, `/ws/<streams>`, `/stream`.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new().with_state(api)
}
