//! Binance's capital endpoints (`/sapi/v1/capital/...`): deposit addresses, deposit and
//! withdrawal history, withdrawals, the coin list; and `GET /fulgur/v1/proof/liabilities`
//! (an account's inclusion proof in the latest proof of liabilities). The API only checks
//! the signature and the weight; what these mean is the [`Capital`] behind them (the
//! custody service, wired in by the server). Without one every endpoint answers
//! -4019 "not enabled". Also the self-custody settlement endpoints
//! (`/fulgur/v1/settlement/destination`, `/fulgur/v1/settlement/epochs`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fulgur_engine::AccountId;
use serde_json::Value;

use crate::error::ApiError;
use crate::params::Params;
use crate::rest::{answer, Req};
use crate::Api;

/// What answers the capital endpoints. Calls may block (bitcoind, the ledger): they run
/// on the blocking pool.
pub trait Capital: Send + Sync + 'static {
    /// Whether deposits and withdrawals are on (`canDeposit` of `/api/v3/account`).
    fn enabled(&self) -> bool;
    fn deposit_address(&self, account: AccountId, p: &Params) -> Result<Value, ApiError>;
    fn deposit_history(&self, account: AccountId, p: &Params) -> Result<Value, ApiError>;
    fn withdraw(&self, account: AccountId, p: &Params) -> Result<Value, ApiError>;
    fn withdraw_history(&self, account: AccountId, p: &Params) -> Result<Value, ApiError>;
    fn coins(&self, account: AccountId) -> Result<Value, ApiError>;
    fn liabilities_proof(&self, account: AccountId) -> Result<Value, ApiError>;
    /// `/fulgur/v1/settlement/<action>` by `method`: the account's self-custody payout
    /// destination (`destination`: GET, POST, DELETE) and its settlement reports (`epochs`).
    fn settlement(
        &self,
        account: AccountId,
        method: &str,
        action: &str,
        p: &Params,
    ) -> Result<Value, ApiError>;
}

/// Custody is off: `[bitcoin]` is not configured.
pub fn not_enabled() -> ApiError {
    ApiError::new(
        400,
        -4019,
        "Deposits and withdrawals are not enabled on this exchange (no [bitcoin] section in its configuration).",
    )
}

pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/sapi/v1/capital/deposit/address", get(deposit_address))
        .route("/sapi/v1/capital/deposit/hisrec", get(deposit_history))
        .route("/sapi/v1/capital/withdraw/apply", post(withdraw))
        .route("/sapi/v1/capital/withdraw/history", get(withdraw_history))
        .route("/sapi/v1/capital/config/getall", get(coins))
        .route("/fulgur/v1/proof/liabilities", get(liabilities))
        .route(
            "/fulgur/v1/settlement/destination",
            get(destination_get)
                .post(destination_post)
                .delete(destination_delete),
        )
        .route("/fulgur/v1/settlement/epochs", get(epochs))
        .with_state(api)
}

/// Signed request → the capital call on the blocking pool → answer.
async fn call<F>(api: Arc<Api>, r: Req, weight: u32, f: F) -> Response
where
    F: FnOnce(&dyn Capital, AccountId, &Params) -> Result<Value, ApiError> + Send + 'static,
{
    let res = match api.signed(&r, weight) {
        Err(e) => Err(e),
        Ok((p, account)) => match api.capital.get().cloned() {
            None => Err(not_enabled()),
            Some(c) => tokio::task::spawn_blocking(move || f(c.as_ref(), account, &p))
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(e.to_string()))),
        },
    };
    answer(&api, r.ip, res, None)
}

async fn deposit_address(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 10, |c, a, p| c.deposit_address(a, p)).await
}

async fn deposit_history(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 1, |c, a, p| c.deposit_history(a, p)).await
}

/// Binance charges a withdrawal 1 of IP weight (its 900 are of a per-user pool this
/// server does not keep; the withdrawal queue has its own limit).
async fn withdraw(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 1, |c, a, p| c.withdraw(a, p)).await
}

async fn withdraw_history(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 1, |c, a, p| c.withdraw_history(a, p)).await
}

async fn coins(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 10, |c, a, _| c.coins(a)).await
}

async fn liabilities(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 10, |c, a, _| c.liabilities_proof(a)).await
}

async fn destination_get(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 1, |c, a, p| {
        c.settlement(a, "GET", "destination", p)
    })
    .await
}

async fn destination_post(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 1, |c, a, p| {
        c.settlement(a, "POST", "destination", p)
    })
    .await
}

async fn destination_delete(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 1, |c, a, p| {
        c.settlement(a, "DELETE", "destination", p)
    })
    .await
}

async fn epochs(State(api): State<Arc<Api>>, r: Req) -> Response {
    call(api, r, 5, |c, a, p| c.settlement(a, "GET", "epochs", p)).await
}
