//! The trading page at `/`: the files `build.rs` built from `web/` and embedded in the
//! binary, and, under `fulgur demo`, the demo key the page trades with.
//!
//! The page is static: everything it shows comes from the Binance-compatible REST API,
//! the market-data streams and a listen key's user-data stream, as for any other client.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

mod files {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// An API key of the demo's web account, handed to the page by `GET /fulgur/v1/demo/key`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoKey {
    pub account: u32,
    pub api_key: String,
    pub secret_key: String,
}

/// The page's routes; `demo_key` only under `fulgur demo` (elsewhere the key endpoint
/// answers 204 No Content).
pub fn routes(demo_key: Option<DemoKey>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{file}", get(asset))
        .route("/fulgur/v1/demo/key", get(demo_key_handler))
        .with_state(Arc::new(demo_key))
}

fn file(path: &str) -> Option<(&'static str, &'static [u8])> {
    files::FILES
        .iter()
        .find(|f| f.0 == path)
        .map(|f| (f.1, f.2))
}

async fn index() -> Response {
    let (kind, body) = file("index.html").expect("the build always makes index.html");
    // Re-checked on every visit: it names the assets of the binary that serves it.
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match file(&format!("assets/{name}")) {
        // Content-hashed names: a changed file has a new name.
        Some((kind, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            body,
        )
            .into_response(),
        None => not_found(),
    }
}

/// The API's own answer to an unknown path (Binance's -1099).
fn not_found() -> Response {
    fulgur_ws_api::error::ApiError::not_found().into_response()
}

/// The demo key, to a browser on this machine only: the demo binds to loopback by default,
/// and a demo started on another address does not give its funded account to the network.
async fn demo_key_handler(
    State(key): State<Arc<Option<DemoKey>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    match key.as_ref() {
        // Not an error: the page asks, and a browser logs every 4xx answer as one.
        None => StatusCode::NO_CONTENT.into_response(),
        Some(_) if !peer.ip().is_loopback() => fulgur_ws_api::error::ApiError::new(
            403,
            -2015,
            "The demo key is only given to clients on the same machine.",
        )
        .into_response(),
        Some(k) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(k.clone()),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded() {
        let (kind, body) = file("index.html").unwrap();
        assert!(kind.starts_with("text/html"));
        let html = std::str::from_utf8(body).unwrap();
        // Every asset the page names is embedded (a placeholder page names none).
        for name in html.split("assets/").skip(1) {
            let name = name.split('"').next().unwrap();
            assert!(file(&format!("assets/{name}")).is_some(), "{name}");
        }
    }
}
