//! The WebSocket API (`/ws-api/v3`), user-data delivery ([`UserHub`]) and the listen-key
//! endpoints (`POST/PUT/DELETE /api/v3/userDataStream`), as Binance has them.
//!
//! A connection reads JSON requests `{"id","method","params"}` and answers each with
//! `{"id","status","result"|"error","rateLimits"}`. Requests are charged their REST weight
//! against the client's IP before anything else; order methods also count against the
//! account's ORDERS limits. Requests that wait for the engine run concurrently (at most
//! [`MAX_PENDING_REQUESTS`] per connection), the others are answered in order.
//!
//! User events are formatted once per batch by [`UserHub::publish`] on the engine's reply
//! thread and handed to bounded queues; a subscriber whose queue is full is cut off rather
//! than ever making that thread wait. WS API subscribers get them wrapped as
//! `{"subscriptionId":N,"event":{...}}`, listen-key streams (served by `streams`) bare.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fulgur_engine::AccountId;
use futures_util::SinkExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::auth::{self, ApiKey, KeyKind};
use crate::error::ApiError;
use crate::orders;
use crate::params::{check_symbol, Params};
use crate::rest::{self, Req};
use crate::view::{quote_decimal, BalanceUpdate, ExecUpdate, MarketView, OrderStatus, View};
use crate::{now_ms, Api};

/// Largest request message a connection takes; a larger one closes the connection.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Requests of one connection waiting for the engine at once; more are refused (-1003).
pub const MAX_PENDING_REQUESTS: usize = 64;
/// Active user-data subscriptions per connection (Binance allows 1000; nobody needs that
/// many on one socket here).
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 64;
/// Subscription ids one connection may use over its life (Binance's 65,535, -2042 past it).
const MAX_SUBSCRIPTION_IDS: u32 = 65_535;
/// Events queued for one WS API subscription before it is cut off as too slow.
pub const EVENT_QUEUE_LEN: usize = 4096;
/// User-event subscribers per account and in all (WS API and listen-key streams).
pub const MAX_SUBSCRIBERS_PER_ACCOUNT: usize = 64;
pub const MAX_SUBSCRIBERS: usize = 16_384;
/// Largest queue a subscriber may ask for.
pub const MAX_QUEUE_LEN: usize = 65_536;
/// A listen key lives this long after its creation or last keep-alive (Binance: 60 min).
pub const LISTEN_KEY_TTL_MS: u64 = 60 * 60 * 1000;
/// Live listen keys at most (one per account anyway: POST returns the account's key).
pub const MAX_LISTEN_KEYS: usize = 10_000;
const LISTEN_KEY_CHARS: usize = 60;
/// The server pings every 20 s and drops a connection it has heard nothing from in 60 s.
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// Opening a connection costs weight, as on Binance.
const CONNECT_WEIGHT: u32 = 2;
/// Weight of the listen-key endpoints.
const USER_STREAM_WEIGHT: u32 = 2;

// ---- user events ----

/// User events (`executionReport`, `outboundAccountPosition`, `balanceUpdate`) per account,
/// and the listen keys that name accounts.
#[derive(Default)]
pub struct UserHub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    subscribers: HashMap<AccountId, Vec<mpsc::Sender<Arc<str>>>>,
    count: usize,
    listen_keys: HashMap<String, ListenKey>,
    /// Binance's `I` (execution id) of the next `executionReport`.
    next_execution_id: u64,
}

struct ListenKey {
    account: AccountId,
    expires_ms: u64,
}

/// One subscriber's user events, each a Binance event object as JSON text (no envelope).
/// Dropping it unsubscribes.
pub struct UserSubscription {
    pub rx: tokio::sync::mpsc::Receiver<Arc<str>>,
}

impl HubInner {
    /// Queues an event for every subscriber of the account. A full queue is a reader that
    /// cannot keep up: its sender is dropped (the reader sees its stream end) rather than
    /// making the caller wait.
    fn send(&mut self, account: AccountId, text: Arc<str>) {
        let Some(list) = self.subscribers.get_mut(&account) else {
            return;
        };
        let before = list.len();
        list.retain(|tx| tx.try_send(text.clone()).is_ok());
        self.count -= before - list.len();
        if list.is_empty() {
            self.subscribers.remove(&account);
        }
    }

    /// Forgets subscribers that dropped their receiver.
    fn prune(&mut self, account: Option<AccountId>) {
        let mut removed = 0;
        self.subscribers.retain(|a, list| {
            if account.is_none_or(|x| x == *a) {
                let before = list.len();
                list.retain(|tx| !tx.is_closed());
                removed += before - list.len();
            }
            !list.is_empty()
        });
        self.count -= removed;
    }
}

impl UserHub {
    pub fn new() -> UserHub {
        UserHub::default()
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // Every critical section leaves the maps consistent, so a panic elsewhere cannot
        // have left them half changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called with the write lock on the view held, after a batch was applied to it: its
    /// `exec_updates` and `balance_updates` are that batch's. Must never block: it only
    /// formats and `try_send`s. Events are formatted only for accounts with subscribers.
    pub fn publish(&self, view: &View) {
        if view.exec_updates.is_empty() && view.balance_updates.is_empty() {
            return;
        }
        let mut hub = self.lock();
        if hub.count == 0 {
            return;
        }
        for u in &view.exec_updates {
            let account = u.order.account;
            if !hub.subscribers.contains_key(&account) {
                continue;
            }
            for report in execution_reports(view, u, &mut hub.next_execution_id) {
                hub.send(account, report.into());
            }
        }
        for b in &view.balance_updates {
            if !hub.subscribers.contains_key(&b.account) {
                continue;
            }
            if let Some(delta) = b.delta {
                hub.send(b.account, balance_update(view, b, delta).into());
            }
            hub.send(b.account, account_position(view, b).into());
        }
    }

    /// Subscribes to an account's user events with a queue of `capacity` events (clamped to
    /// 1..=[`MAX_QUEUE_LEN`]); `None` past the subscriber limits.
    pub fn subscribe(&self, account: AccountId, capacity: usize) -> Option<UserSubscription> {
        let mut hub = self.lock();
        hub.prune(Some(account));
        if hub.count >= MAX_SUBSCRIBERS {
            hub.prune(None);
        }
        let per_account = hub.subscribers.get(&account).map_or(0, Vec::len);
        if hub.count >= MAX_SUBSCRIBERS || per_account >= MAX_SUBSCRIBERS_PER_ACCOUNT {
            return None;
        }
        let (tx, rx) = mpsc::channel(capacity.clamp(1, MAX_QUEUE_LEN));
        hub.subscribers.entry(account).or_default().push(tx);
        hub.count += 1;
        Some(UserSubscription { rx })
    }

    /// The account of a live listen key (`POST /api/v3/userDataStream`).
    pub fn listen_key_account(&self, key: &str) -> Option<AccountId> {
        let now = now_ms();
        self.lock()
            .listen_keys
            .get(key)
            .filter(|k| k.expires_ms > now)
            .map(|k| k.account)
    }

    /// The account's live listen key, extended, or a new one.
    fn create_listen_key(&self, account: AccountId, now: u64) -> Result<String, ApiError> {
        let mut hub = self.lock();
        hub.listen_keys.retain(|_, k| k.expires_ms > now);
        if let Some((key, k)) = hub
            .listen_keys
            .iter_mut()
            .find(|(_, k)| k.account == account)
        {
            k.expires_ms = now + LISTEN_KEY_TTL_MS;
            return Ok(key.clone());
        }
        if hub.listen_keys.len() >= MAX_LISTEN_KEYS {
            return Err(ApiError::overloaded());
        }
        let key = random_alnum(LISTEN_KEY_CHARS)?;
        hub.listen_keys.insert(
            key.clone(),
            ListenKey {
                account,
                expires_ms: now + LISTEN_KEY_TTL_MS,
            },
        );
        Ok(key)
    }

    /// Extends (`close` false) or deletes a live listen key of the account.
    fn touch_listen_key(
        &self,
        key: &str,
        account: AccountId,
        now: u64,
        close: bool,
    ) -> Result<(), ApiError> {
        let mut hub = self.lock();
        match hub.listen_keys.get_mut(key) {
            Some(k) if k.account == account && k.expires_ms > now => {
                if close {
                    hub.listen_keys.remove(key);
                } else {
                    k.expires_ms = now + LISTEN_KEY_TTL_MS;
                }
                Ok(())
            }
            _ => Err(ApiError::new(400, -1125, "This listenKey does not exist.")),
        }
    }
}

/// `n` random characters of A-Z, a-z, 0-9, uniformly (bytes >= 248 = 4 * 62 are dropped).
fn random_alnum(n: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 96];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|_| ApiError::internal("no randomness from the OS"))?;
        for &b in buf.iter().filter(|&&b| b < 248).take(n - out.len()) {
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `executionReport`s of one order update: one, or for an amend that lost its time
/// priority a `CANCELED` and a `NEW` (the order went to the back of the queue, as a
/// cancel-replace does, though it keeps its id).
pub fn execution_reports(view: &View, u: &ExecUpdate, next_execution_id: &mut u64) -> Vec<String> {
    let mut next = |x: &str, status: &str| {
        *next_execution_id += 1;
        execution_report(view, u, x, status, *next_execution_id)
    };
    // An update of a market the view does not know (it cannot happen: markets come before
    // their orders) yields nothing rather than a broken event.
    let status = u.order.status.as_str();
    match (u.exec_type, u.priority_kept) {
        ("REPLACED", Some(false)) => [next("CANCELED", "CANCELED"), next("NEW", status)]
            .into_iter()
            .flatten()
            .collect(),
        // Binance's execution type for an order expired by self-trade prevention.
        ("EXPIRED", _) if u.order.status == OrderStatus::ExpiredInMatch => {
            next("TRADE_PREVENTION", status).into_iter().collect()
        }
        (x, _) => next(x, status).into_iter().collect(),
    }
}

/// One Binance `executionReport`, every field of Binance's payload in its order.
fn execution_report(
    view: &View,
    u: &ExecUpdate,
    exec_type: &str,
    status: &str,
    execution_id: u64,
) -> Option<String> {
    let o = &u.order;
    let m = view.markets.get(o.market as usize)?;
    let (last_qty, last_price, commission, commission_asset, trade_id, maker, last_quote) =
        match &u.fill {
            Some(f) => {
                let asset = view.assets.get(f.commission_asset as usize);
                (
                    m.qty(f.qty as u128),
                    m.price(f.price),
                    orders::commission(f.commission, asset.map_or(8, |a| a.decimals)),
                    asset.map_or("null".into(), |a| js(&a.symbol)),
                    f.trade_id as i64,
                    f.is_maker,
                    m.quote_amount(m.notional(f.price, f.qty)),
                )
            }
            None => (
                m.qty(0),
                m.price(0),
                "0".to_string(),
                "null".to_string(),
                -1,
                false,
                m.quote_amount(0),
            ),
        };
    let resting = o.price.is_some()
        && matches!(
            o.tif,
            fulgur_engine::TimeInForce::Gtc | fulgur_engine::TimeInForce::Gtd { .. }
        );
    let on_book = resting && o.status.is_open();
    let client = js(o.client_order_id.as_str());
    // Binance names the cancelled order's client id in `C`.
    let orig_client = if exec_type == "CANCELED" {
        client.clone()
    } else {
        "\"\"".to_string()
    };
    let t = u.event_time_ms;
    Some(format!(
        concat!(
            "{{\"e\":\"executionReport\",\"E\":{},\"s\":{},\"c\":{},\"S\":\"{}\",\"o\":\"{}\",",
            "\"f\":\"{}\",\"q\":\"{}\",\"p\":\"{}\",\"P\":\"{}\",\"F\":\"{}\",\"g\":-1,\"C\":{},",
            "\"x\":\"{}\",\"X\":\"{}\",\"r\":\"NONE\",\"i\":{},\"l\":\"{}\",\"z\":\"{}\",",
            "\"L\":\"{}\",\"n\":\"{}\",\"N\":{},\"T\":{},\"t\":{},\"v\":{},\"I\":{},\"w\":{},",
            "\"m\":{},\"M\":{},\"O\":{},\"Z\":\"{}\",\"Y\":\"{}\",\"Q\":\"{}\",\"W\":{},",
            "\"V\":\"{}\"}}"
        ),
        t,
        js(&m.spec.symbol),
        client,
        orders::side_str(o.side),
        orders::type_str(o.order_type),
        orders::tif_str(o.tif),
        m.qty(o.orig_qty as u128),
        o.price.map_or_else(|| m.price(0), |p| m.price(p)),
        m.price(0),
        m.qty(0),
        orig_client,
        exec_type,
        status,
        o.order_id,
        last_qty,
        m.qty(o.executed as u128),
        last_price,
        commission,
        commission_asset,
        t,
        trade_id,
        // `v`: prevented match id; Fulgur's STP expires orders without keeping one.
        -1,
        execution_id,
        on_book,
        maker,
        // `M`: "ignore" in Binance's docs; true when the report is of a trade, as there.
        u.fill.is_some(),
        o.time_ms,
        m.quote_amount(o.cumm_quote),
        last_quote,
        m.quote_amount(o.quote_order_qty.unwrap_or(0) as u128),
        o.working_time_ms,
        orders::stp_str(o.stp),
    ))
}

/// `outboundAccountPosition`: the balances one command changed.
pub fn account_position(view: &View, b: &BalanceUpdate) -> String {
    let balances: Vec<String> = b
        .balances
        .iter()
        .filter_map(|&(asset, free, locked)| {
            let a = view.assets.get(asset as usize)?;
            Some(format!(
                "{{\"a\":{},\"f\":\"{}\",\"l\":\"{}\"}}",
                js(&a.symbol),
                quote_decimal(free as u128, a.decimals),
                quote_decimal(locked as u128, a.decimals)
            ))
        })
        .collect();
    format!(
        "{{\"e\":\"outboundAccountPosition\",\"E\":{},\"u\":{},\"B\":[{}]}}",
        b.event_time_ms,
        b.event_time_ms,
        balances.join(",")
    )
}

/// `balanceUpdate`: a deposit's or withdrawal's signed delta.
pub fn balance_update(view: &View, b: &BalanceUpdate, (asset, delta): (u32, i128)) -> String {
    let (symbol, decimals) = view
        .assets
        .get(asset as usize)
        .map_or(("", 8), |a| (a.symbol.as_str(), a.decimals));
    format!(
        "{{\"e\":\"balanceUpdate\",\"E\":{},\"a\":{},\"d\":\"{}\",\"T\":{}}}",
        b.event_time_ms,
        js(symbol),
        orders::commission(delta, decimals),
        b.event_time_ms
    )
}

/// An event as a WS API subscription delivers it.
pub fn envelope(subscription_id: u32, event: &str) -> String {
    format!("{{\"subscriptionId\":{subscription_id},\"event\":{event}}}")
}

/// The event a subscription ends with (unsubscribe, logout, or cut off for being slow).
fn stream_terminated(subscription_id: u32, now: u64) -> String {
    envelope(
        subscription_id,
        &format!("{{\"e\":\"eventStreamTerminated\",\"E\":{now}}}"),
    )
}

// ---- requests and responses ----

/// The WS API signature payload: every parameter but `signature`, sorted by name, as
/// `name=value` joined by `&`. Values as sent: strings without quotes, numbers and booleans
/// as their JSON text; nulls are left out, as they are from the parameters.
pub fn signature_payload(params: &Map<String, Value>) -> String {
    let mut items: Vec<(&String, &Value)> = params
        .iter()
        .filter(|(k, v)| *k != "signature" && !v.is_null())
        .collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (k, v) in items {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// A response frame: `{"id","status","result"|"error","rateLimits"}`.
pub fn response_text(
    id: &Value,
    result: Result<Value, ApiError>,
    rate_limits: Option<Value>,
) -> String {
    let mut s = format!("{{\"id\":{id}");
    match result {
        Ok(v) => s.push_str(&format!(",\"status\":200,\"result\":{v}")),
        Err(e) => {
            let mut body = e.body();
            if let (Some(secs), None) = (e.retry_after_s, &e.data) {
                // Binance's WS API says when to retry in `data`, in ms since the epoch.
                let now = now_ms();
                body["data"] = json!({"serverTime": now, "retryAfter": now + secs * 1000});
            }
            s.push_str(&format!(",\"status\":{},\"error\":{body}", e.status));
        }
    }
    if let Some(rl) = rate_limits {
        s.push_str(&format!(",\"rateLimits\":{rl}"));
    }
    s.push('}');
    s
}

/// A frame that is not a JSON object, or not text.
fn malformed(detail: &str) -> ApiError {
    ApiError::new(400, -1013, format!("Malformed request: {detail}."))
}

fn unknown_method(method: &str) -> ApiError {
    let shown: String = method.chars().take(64).collect();
    ApiError::new(400, -1013, format!("Unknown method '{shown}'."))
}

fn too_many_queued() -> ApiError {
    ApiError::new(429, -1003, "Too many requests queued.")
}

fn subscription_active() -> ApiError {
    ApiError::new(400, -2035, "User Data Stream subscription already active.")
}

fn subscription_inactive() -> ApiError {
    ApiError::new(400, -2036, "User Data Stream subscription not active.")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Ping,
    Time,
    ExchangeInfo,
    Depth,
    SessionLogon,
    SessionStatus,
    SessionLogout,
    SessionSubscriptions,
    OrderPlace,
    OrderTest,
    OrderStatus,
    OrderCancel,
    OrderCancelReplace,
    OrderAmendKeepPriority,
    OpenOrdersStatus,
    OpenOrdersCancelAll,
    AllOrders,
    MyTrades,
    AccountStatus,
    UserDataStreamSubscribe,
    UserDataStreamSubscribeSignature,
    UserDataStreamUnsubscribe,
}

const METHODS: [(&str, Method); 22] = [
    ("ping", Method::Ping),
    ("time", Method::Time),
    ("exchangeInfo", Method::ExchangeInfo),
    ("depth", Method::Depth),
    ("session.logon", Method::SessionLogon),
    ("session.status", Method::SessionStatus),
    ("session.logout", Method::SessionLogout),
    ("session.subscriptions", Method::SessionSubscriptions),
    ("order.place", Method::OrderPlace),
    ("order.test", Method::OrderTest),
    ("order.status", Method::OrderStatus),
    ("order.cancel", Method::OrderCancel),
    ("order.cancelReplace", Method::OrderCancelReplace),
    ("order.amend.keepPriority", Method::OrderAmendKeepPriority),
    ("openOrders.status", Method::OpenOrdersStatus),
    ("openOrders.cancelAll", Method::OpenOrdersCancelAll),
    ("allOrders", Method::AllOrders),
    ("myTrades", Method::MyTrades),
    ("account.status", Method::AccountStatus),
    ("userDataStream.subscribe", Method::UserDataStreamSubscribe),
    (
        "userDataStream.subscribe.signature",
        Method::UserDataStreamSubscribeSignature,
    ),
    (
        "userDataStream.unsubscribe",
        Method::UserDataStreamUnsubscribe,
    ),
];

impl Method {
    fn parse(name: &str) -> Option<Method> {
        // Binance takes an explicit version prefix: "v3/order.place".
        let name = name.strip_prefix("v3/").unwrap_or(name);
        METHODS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    /// Request weight, as the REST endpoint of the same request. Read leniently from the
    /// raw parameters: a malformed value is refused later with its own error.
    fn weight(self, raw: &Map<String, Value>) -> u32 {
        use Method::*;
        match self {
            Ping | Time | OrderPlace | OrderCancel | OrderCancelReplace | OpenOrdersCancelAll => 1,
            SessionLogon | SessionStatus | SessionLogout | SessionSubscriptions => 2,
            UserDataStreamSubscribe
            | UserDataStreamSubscribeSignature
            | UserDataStreamUnsubscribe => 2,
            OrderTest if raw_bool(raw, "computeCommissionRates") == Some(true) => 20,
            OrderTest => 1,
            OrderStatus | OrderAmendKeepPriority => 4,
            OpenOrdersStatus if raw.get("symbol").is_some_and(|v| !v.is_null()) => 6,
            OpenOrdersStatus => 80,
            ExchangeInfo | AllOrders | MyTrades | AccountStatus => 20,
            Depth => depth_weight(raw_u64(raw, "limit").unwrap_or(100)),
        }
    }

    /// Methods that wait for the engine: run concurrently with later requests.
    fn waits_for_engine(self) -> bool {
        use Method::*;
        matches!(
            self,
            OrderPlace
                | OrderTest
                | OrderCancel
                | OrderCancelReplace
                | OrderAmendKeepPriority
                | OpenOrdersCancelAll
        )
    }

    /// Methods that count against the account's ORDERS limits (as REST).
    fn counts_orders(self) -> bool {
        use Method::*;
        matches!(
            self,
            OrderPlace | OrderCancelReplace | OrderAmendKeepPriority
        )
    }
}

/// Binance's depth weights by limit (as REST's).
fn depth_weight(limit: u64) -> u32 {
    match limit {
        0..=100 => 5,
        101..=500 => 25,
        501..=1000 => 50,
        _ => 250,
    }
}

fn raw_u64(raw: &Map<String, Value>, k: &str) -> Option<u64> {
    match raw.get(k)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn raw_bool(raw: &Map<String, Value>, k: &str) -> Option<bool> {
    match raw.get(k)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `exchangeInfo` with the WS API's `symbol` or `symbols` (a JSON array).
fn exchange_info(api: &Api, raw: &Map<String, Value>) -> Result<Value, ApiError> {
    let view = api.view();
    let one = |s: &Value, name: &str| -> Result<&MarketView, ApiError> {
        let s = s
            .as_str()
            .ok_or_else(|| ApiError::illegal_chars(name, "^[A-Z0-9-_.]{1,20}$"))?;
        check_symbol(s)?;
        view.market(s).ok_or_else(ApiError::invalid_symbol)
    };
    let present = |k: &str| raw.get(k).filter(|v| !v.is_null());
    let markets: Vec<&MarketView> = match (present("symbol"), present("symbols")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                400,
                -1128,
                "Combination of optional parameters invalid.",
            ))
        }
        (Some(s), None) => vec![one(s, "symbol")?],
        (None, Some(Value::Array(list))) => {
            if list.len() > 100 {
                return Err(ApiError::new(
                    400,
                    -1101,
                    "Too many values sent for parameter 'symbols', maximum allowed up to 100.",
                ));
            }
            list.iter()
                .map(|s| one(s, "symbols"))
                .collect::<Result<_, _>>()?
        }
        (None, Some(_)) => {
            return Err(ApiError::illegal_chars(
                "symbols",
                "an array of symbols, such as [\"BTCUSDT\"]",
            ))
        }
        (None, None) => view.markets.iter().collect(),
    };
    Ok(json!({
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": api.limits.exchange_info_limits(),
        "exchangeFilters": [],
        "symbols": markets.into_iter().map(rest::symbol_info).collect::<Vec<_>>(),
    }))
}

fn depth(api: &Api, p: &Params) -> Result<Value, ApiError> {
    let limit = p.bounded("limit", 100, 1, 5000)?;
    let view = api.view();
    Ok(rest::depth_json(orders::market(&view, p)?, limit as usize))
}

/// Timestamp and recvWindow of a signed request.
fn check_time(now: u64, p: &Params) -> Result<(), ApiError> {
    let ts = p
        .u64("timestamp")?
        .ok_or_else(|| ApiError::mandatory("timestamp"))?;
    auth::check_timestamp(now, ts, p.get("recvWindow"))
}

// ---- a connection ----

/// The key a session logged on with.
struct Logon {
    api_key: String,
    account: AccountId,
    since_ms: u64,
}

/// A user-data subscription of a connection.
struct Subscription {
    id: u32,
    account: AccountId,
    /// Made by `userDataStream.subscribe` (ends with the session's logon), not `.signature`.
    from_logon: bool,
    rx: mpsc::Receiver<Arc<str>>,
}

/// One WS API connection's state. Owned by its task; nothing here is shared.
struct Connection {
    api: Arc<Api>,
    ip: IpAddr,
    connected_ms: u64,
    /// The connection's default for `returnRateLimits` (the URL's).
    return_rate_limits: bool,
    logon: Option<Logon>,
    subs: Vec<Subscription>,
    /// Subscription ids handed out so far (ids are 0, 1, 2, ...).
    subscription_ids: u32,
    /// Where polling the subscriptions starts next, so that a busy one cannot starve others.
    poll_from: usize,
    /// Requests waiting for the engine; each task yields its response frame.
    pending: JoinSet<String>,
    /// Their request ids, to answer a task that failed.
    pending_ids: HashMap<tokio::task::Id, Value>,
    /// Frames to send, in order.
    out: Vec<String>,
}

/// What woke the connection up.
enum Wake {
    Frame(Option<Result<Message, axum::Error>>),
    Done(Result<(tokio::task::Id, String), tokio::task::JoinError>),
    Event(usize, Option<Arc<str>>),
    Tick,
}

fn poll_subscriptions(
    subs: &mut [Subscription],
    from: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<(usize, Option<Arc<str>>)> {
    let n = subs.len();
    for k in 0..n {
        let i = (*from + k) % n;
        if let Poll::Ready(ev) = subs[i].rx.poll_recv(cx) {
            *from = (i + 1) % n;
            return Poll::Ready((i, ev));
        }
    }
    Poll::Pending
}

impl Connection {
    async fn run(mut self, mut socket: WebSocket) {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut heard = Instant::now();
        loop {
            let wake = tokio::select! {
                frame = socket.recv() => Wake::Frame(frame),
                Some(done) = self.pending.join_next_with_id(), if !self.pending.is_empty() => {
                    Wake::Done(done)
                }
                (i, ev) = std::future::poll_fn(|cx| {
                    poll_subscriptions(&mut self.subs, &mut self.poll_from, cx)
                }), if !self.subs.is_empty() => Wake::Event(i, ev),
                _ = ping.tick() => Wake::Tick,
            };
            match wake {
                Wake::Frame(None) | Wake::Frame(Some(Err(_))) => return,
                Wake::Frame(Some(Ok(msg))) => {
                    heard = Instant::now();
                    match msg {
                        Message::Text(t) => self.on_request(t.as_str()),
                        Message::Binary(_) => self.refuse(
                            &Value::Null,
                            malformed("requests are JSON in text frames"),
                            false,
                        ),
                        Message::Ping(_) | Message::Pong(_) => {}
                        Message::Close(_) => return,
                    }
                }
                Wake::Done(Ok((task, text))) => {
                    self.pending_ids.remove(&task);
                    self.out.push(text);
                }
                Wake::Done(Err(e)) => {
                    let id = self.pending_ids.remove(&e.id()).unwrap_or(Value::Null);
                    let err = ApiError::internal("The request failed; its outcome is unknown.");
                    self.out.push(response_text(&id, Err(err), None));
                }
                Wake::Event(i, Some(ev)) => {
                    self.out.push(envelope(self.subs[i].id, &ev));
                }
                Wake::Event(i, None) => {
                    // The hub cut this subscription off: its queue was full.
                    let s = self.subs.remove(i);
                    self.out.push(stream_terminated(s.id, now_ms()));
                }
                Wake::Tick => {
                    if heard.elapsed() >= SILENCE_LIMIT {
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame {
                                code: 1001,
                                reason: "no pong or message for 60 s".into(),
                            })))
                            .await;
                        return;
                    }
                    self.out.push(String::new());
                }
            }
            // Every answer already done goes out with this one: one write for a burst.
            while let Some(done) = self.pending.try_join_next_with_id() {
                match done {
                    Ok((task, text)) => {
                        self.pending_ids.remove(&task);
                        self.out.push(text);
                    }
                    Err(e) => {
                        let id = self.pending_ids.remove(&e.id()).unwrap_or(Value::Null);
                        let err = ApiError::internal("The request failed; its outcome is unknown.");
                        self.out.push(response_text(&id, Err(err), None));
                    }
                }
            }
            let n = self.out.len();
            for text in self.out.drain(..) {
                // An empty frame in the queue stands for the keep-alive ping.
                let msg = if text.is_empty() {
                    Message::Ping(Bytes::new())
                } else {
                    Message::Text(text.into())
                };
                if socket.feed(msg).await.is_err() {
                    return;
                }
            }
            if n > 0 && socket.flush().await.is_err() {
                return;
            }
        }
    }

    /// Parses one request frame and answers it (or starts it, if it waits for the engine).
    fn on_request(&mut self, text: &str) {
        let req = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return self.refuse(&Value::Null, malformed("not a JSON object"), false),
            Err(e) => {
                // The position only: serde's message may quote the input.
                let detail = format!(
                    "invalid JSON ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                );
                return self.refuse(&Value::Null, malformed(&detail), false);
            }
        };
        let id = match req.get("id") {
            None => return self.refuse(&Value::Null, ApiError::mandatory("id"), false),
            Some(v @ Value::Null) => v.clone(),
            Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => v.clone(),
            Some(v @ Value::String(s)) if (1..=36).contains(&s.len()) => v.clone(),
            Some(_) => {
                let e = ApiError::illegal_chars(
                    "id",
                    "an integer, null, or a string of 1 to 36 characters",
                );
                return self.refuse(&Value::Null, e, false);
            }
        };
        let method = match req.get("method") {
            Some(Value::String(m)) => m.as_str(),
            None | Some(Value::Null) => {
                return self.refuse(&id, ApiError::mandatory("method"), false)
            }
            Some(_) => {
                let e = ApiError::illegal_chars("method", "a method name such as order.place");
                return self.refuse(&id, e, false);
            }
        };
        let raw = match req.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => {
                let e = ApiError::illegal_chars("params", "a JSON object");
                return self.refuse(&id, e, false);
            }
        };
        let rate_limits = raw_bool(&raw, "returnRateLimits").unwrap_or(self.return_rate_limits);
        let Some(m) = Method::parse(method) else {
            return self.refuse(&id, unknown_method(method), rate_limits);
        };
        if m.waits_for_engine() && self.pending.len() >= MAX_PENDING_REQUESTS {
            return self.fail(&id, too_many_queued(), rate_limits);
        }
        // Weight first, as REST: a request over the limit is refused before any work.
        if let Err(e) = self.api.limits.request(self.ip, m.weight(&raw), now_ms()) {
            return self.fail(&id, e, rate_limits);
        }
        let result = self.call(m, &id, raw, rate_limits);
        if let Some((result, orders)) = result {
            let rl = rate_limits.then(|| self.rate_limits(orders));
            self.out.push(response_text(&id, result, rl));
        }
    }

    fn rate_limits(&self, orders: Option<(u32, u32)>) -> Value {
        rate_limits_now(&self.api, self.ip, orders)
    }

    /// Answers a frame that names no method it can run. It still costs weight 1, so that
    /// a client cannot send garbage for free; past the limit the limiter's error answers.
    fn refuse(&mut self, id: &Value, e: ApiError, rate_limits: bool) {
        let e = match self.api.limits.request(self.ip, 1, now_ms()) {
            Ok(_) => e,
            Err(limited) => limited,
        };
        self.fail(id, e, rate_limits);
    }

    fn fail(&mut self, id: &Value, e: ApiError, rate_limits: bool) {
        let rl = rate_limits.then(|| self.rate_limits(None));
        self.out.push(response_text(id, Err(e), rl));
    }

    /// Runs a method: Some(result, order counts) now, or None if it was started as a task
    /// that answers when the engine has.
    #[allow(clippy::type_complexity)]
    fn call(
        &mut self,
        m: Method,
        id: &Value,
        raw: Map<String, Value>,
        rate_limits: bool,
    ) -> Option<(Result<Value, ApiError>, Option<(u32, u32)>)> {
        use Method::*;
        let api = self.api.clone();
        let now = now_ms();
        let params = || Params::from_json(&raw);
        let result = match m {
            Ping => Ok(json!({})),
            Time => Ok(json!({"serverTime": now})),
            ExchangeInfo => exchange_info(&api, &raw),
            Depth => params().and_then(|p| depth(&api, &p)),
            SessionLogon => params().and_then(|p| self.logon(&raw, &p, now)),
            SessionStatus => Ok(self.status_json(now)),
            SessionLogout => {
                self.logout(now);
                Ok(self.status_json(now))
            }
            SessionSubscriptions => Ok(Value::Array(
                self.subs
                    .iter()
                    .map(|s| json!({"subscriptionId": s.id}))
                    .collect(),
            )),
            UserDataStreamSubscribe => self.subscribe_logon(),
            UserDataStreamSubscribeSignature => params().and_then(|p| {
                let key = self.verified_key(&raw, &p)?;
                check_time(now, &p)?;
                self.add_subscription(key.account, false)
            }),
            UserDataStreamUnsubscribe => params().and_then(|p| self.unsubscribe(&p, now)),
            OrderStatus | OpenOrdersStatus | AllOrders | MyTrades | AccountStatus => params()
                .and_then(|p| {
                    let account = self.authorize(&raw, &p, now)?;
                    match m {
                        OrderStatus => orders::query(&api, account, &p),
                        OpenOrdersStatus => orders::open_orders(&api, account, &p),
                        AllOrders => orders::all_orders(&api, account, &p),
                        MyTrades => orders::my_trades(&api, account, &p),
                        _ => orders::account(&api, account, &p),
                    }
                }),
            OrderPlace
            | OrderTest
            | OrderCancel
            | OrderCancelReplace
            | OrderAmendKeepPriority
            | OpenOrdersCancelAll => {
                let started = params().and_then(|p| {
                    let account = self.authorize(&raw, &p, now)?;
                    Ok((p, account))
                });
                let (p, account) = match started {
                    Ok(x) => x,
                    Err(e) => return Some((Err(e), None)),
                };
                let counts = if m.counts_orders() {
                    match api.limits.order(account, now) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            let counts = api.limits.order_counts(account, now);
                            return Some((Err(e), Some(counts)));
                        }
                    }
                } else {
                    None
                };
                let task = async move {
                    match m {
                        OrderPlace => orders::place(&api, account, &p, false).await,
                        OrderTest => orders::place(&api, account, &p, true).await,
                        OrderCancel => orders::cancel(&api, account, &p).await,
                        OrderCancelReplace => orders::cancel_replace(&api, account, &p).await,
                        OrderAmendKeepPriority => {
                            orders::amend_keep_priority(&api, account, &p).await
                        }
                        _ => orders::cancel_all(&api, account, &p).await,
                    }
                };
                self.start(id.clone(), rate_limits, counts, task);
                return None;
            }
        };
        Some((result, None))
    }

    /// Starts a request that waits for the engine; its task answers it.
    fn start(
        &mut self,
        id: Value,
        rate_limits: bool,
        orders: Option<(u32, u32)>,
        task: impl Future<Output = Result<Value, ApiError>> + Send + 'static,
    ) {
        let api = self.api.clone();
        let ip = self.ip;
        let task_id = id.clone();
        let handle = self.pending.spawn(async move {
            let result = task.await;
            let rl = rate_limits.then(|| rate_limits_now(&api, ip, orders));
            response_text(&task_id, result, rl)
        });
        self.pending_ids.insert(handle.id(), id);
    }

    /// The key named by `apiKey`, if `signature` is its signature of the parameters.
    fn verified_key(&self, raw: &Map<String, Value>, p: &Params) -> Result<ApiKey, ApiError> {
        let name = p.req("apiKey")?;
        if name.len() > 128 {
            return Err(ApiError::bad_api_key_format());
        }
        let key = self
            .api
            .keys
            .lookup(name)
            .ok_or_else(ApiError::invalid_api_key)?;
        let signature = p.req("signature")?;
        if !auth::verify_signature(&key, signature_payload(raw).as_bytes(), signature) {
            return Err(ApiError::bad_signature());
        }
        Ok(key)
    }

    /// The account a SIGNED request acts for: its own `apiKey` and `signature`, or the
    /// session's logon. Either way `timestamp` is checked.
    fn authorize(
        &mut self,
        raw: &Map<String, Value>,
        p: &Params,
        now: u64,
    ) -> Result<AccountId, ApiError> {
        if p.has("apiKey") || p.has("signature") {
            let key = self.verified_key(raw, p)?;
            check_time(now, p)?;
            return Ok(key.account);
        }
        let account = self.session_account(now)?;
        check_time(now, p)?;
        Ok(account)
    }

    /// The logged-on account. The key is looked up again: a key deleted since the logon
    /// ends the session at its next request, as Binance revokes it.
    fn session_account(&mut self, now: u64) -> Result<AccountId, ApiError> {
        let Some(logon) = &self.logon else {
            return Err(ApiError::mandatory("apiKey"));
        };
        match self.api.keys.lookup(&logon.api_key) {
            Some(k) if k.account == logon.account => Ok(logon.account),
            _ => {
                self.logout(now);
                Err(ApiError::invalid_api_key())
            }
        }
    }

    fn logon(&mut self, raw: &Map<String, Value>, p: &Params, now: u64) -> Result<Value, ApiError> {
        let name = p.req("apiKey")?;
        // Session logon takes Ed25519 keys only, as Binance's.
        if self
            .api
            .keys
            .lookup(name)
            .is_some_and(|k| !matches!(k.kind, KeyKind::Ed25519 { .. }))
        {
            return Err(ApiError::invalid_api_key());
        }
        let key = self.verified_key(raw, p)?;
        check_time(now, p)?;
        if self
            .logon
            .as_ref()
            .is_some_and(|l| l.account != key.account)
        {
            // The subscriptions of the previous logon were for another account.
            self.logout(now);
        }
        self.logon = Some(Logon {
            api_key: key.api_key,
            account: key.account,
            since_ms: now,
        });
        Ok(self.status_json(now))
    }

    /// Forgets the logon and ends the subscriptions it made.
    fn logout(&mut self, now: u64) {
        self.logon = None;
        let (ended, kept): (Vec<_>, Vec<_>) = self.subs.drain(..).partition(|s| s.from_logon);
        self.subs = kept;
        for s in ended {
            self.out.push(stream_terminated(s.id, now));
        }
    }

    fn status_json(&self, now: u64) -> Value {
        json!({
            "apiKey": self.logon.as_ref().map(|l| l.api_key.clone()),
            "authorizedSince": self.logon.as_ref().map(|l| l.since_ms),
            "connectedSince": self.connected_ms,
            "returnRateLimits": self.return_rate_limits,
            "serverTime": now,
            "userDataStream": !self.subs.is_empty(),
        })
    }

    fn subscribe_logon(&mut self) -> Result<Value, ApiError> {
        if self.logon.is_none() {
            return Err(ApiError::unauthorized());
        }
        let account = self.session_account(now_ms())?;
        self.add_subscription(account, true)
    }

    fn add_subscription(
        &mut self,
        account: AccountId,
        from_logon: bool,
    ) -> Result<Value, ApiError> {
        if self.subs.iter().any(|s| s.account == account) {
            return Err(subscription_active());
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Err(ApiError::new(
                400,
                -1191,
                format!(
                    "Too many subscriptions. Connection may create up to '{MAX_SUBSCRIPTIONS_PER_CONNECTION}' subscriptions at a time."
                ),
            ));
        }
        if self.subscription_ids >= MAX_SUBSCRIPTION_IDS {
            return Err(ApiError::new(
                400,
                -2042,
                "Maximum subscription ID reached for this connection.",
            ));
        }
        let sub = self
            .api
            .feed
            .users
            .subscribe(account, EVENT_QUEUE_LEN)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    -1191,
                    "Too many subscriptions. The server keeps no more user data subscribers for this account.",
                )
            })?;
        let id = self.subscription_ids;
        self.subscription_ids += 1;
        self.subs.push(Subscription {
            id,
            account,
            from_logon,
            rx: sub.rx,
        });
        Ok(json!({"subscriptionId": id}))
    }

    /// `subscriptionId`: that subscription; none: all of them.
    fn unsubscribe(&mut self, p: &Params, now: u64) -> Result<Value, ApiError> {
        let ended: Vec<Subscription> = match p.u64("subscriptionId")? {
            Some(id) => {
                let i = self
                    .subs
                    .iter()
                    .position(|s| u64::from(s.id) == id)
                    .ok_or_else(subscription_inactive)?;
                vec![self.subs.remove(i)]
            }
            None if self.subs.is_empty() => return Err(subscription_inactive()),
            None => self.subs.drain(..).collect(),
        };
        for s in ended {
            self.out.push(stream_terminated(s.id, now));
        }
        Ok(json!({}))
    }
}

fn rate_limits_now(api: &Api, ip: IpAddr, orders: Option<(u32, u32)>) -> Value {
    api.limits
        .ws_rate_limits(api.limits.used_weight(ip, now_ms()), orders)
}

// ---- routes ----

/// The client's IP, as the server's connect info has it (loopback when there is none, as
/// in tests that call the router directly).
struct PeerIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip()),
        ))
    }
}

/// `/ws-api/v3` and the listen-key endpoints `/api/v3/userDataStream`.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/ws-api/v3", get(ws_api))
        .route(
            "/api/v3/userDataStream",
            post(listen_key_new)
                .put(listen_key_keep_alive)
                .delete(listen_key_close),
        )
        .layer(axum::extract::DefaultBodyLimit::max(rest::MAX_BODY_BYTES))
        .with_state(api)
}

async fn ws_api(
    State(api): State<Arc<Api>>,
    PeerIp(ip): PeerIp,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let now = now_ms();
    if let Err(e) = api.limits.request(ip, CONNECT_WEIGHT, now) {
        return e.into_response();
    }
    let return_rate_limits = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "returnRateLimits")
        .is_none_or(|(_, v)| !v.eq_ignore_ascii_case("false"));
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(crate::WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            Connection {
                api,
                ip,
                connected_ms: now,
                return_rate_limits,
                logon: None,
                subs: Vec::new(),
                subscription_ids: 0,
                poll_from: 0,
                pending: JoinSet::new(),
                pending_ids: HashMap::new(),
                out: Vec::new(),
            }
            .run(socket)
        })
}

/// The account of a USER_STREAM request: `X-MBX-APIKEY` only, no signature.
fn user_stream_account(api: &Api, r: &Req) -> Result<AccountId, ApiError> {
    let name = r
        .headers
        .get("x-mbx-apikey")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(ApiError::bad_api_key_format)?;
    Ok(api
        .keys
        .lookup(name)
        .ok_or_else(ApiError::invalid_api_key)?
        .account)
}

fn listen_key_answer(api: &Api, ip: IpAddr, result: Result<Value, ApiError>) -> Response {
    let mut r = match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    };
    let used = api.limits.used_weight(ip, now_ms());
    if let Ok(v) = HeaderValue::from_str(&used.to_string()) {
        r.headers_mut().insert("x-mbx-used-weight", v.clone());
        r.headers_mut().insert("x-mbx-used-weight-1m", v);
    }
    r
}

async fn listen_key_new(State(api): State<Arc<Api>>, r: Req) -> Response {
    let now = now_ms();
    let res = api
        .limits
        .request(r.ip, USER_STREAM_WEIGHT, now)
        .and_then(|_| user_stream_account(&api, &r))
        .and_then(|account| api.feed.users.create_listen_key(account, now))
        .map(|key| json!({"listenKey": key}));
    listen_key_answer(&api, r.ip, res)
}

/// PUT (extend) or DELETE (close) of a listen key.
fn listen_key_touch(api: &Api, r: &Req, close: bool) -> Result<Value, ApiError> {
    let now = now_ms();
    api.limits.request(r.ip, USER_STREAM_WEIGHT, now)?;
    let account = user_stream_account(api, r)?;
    let p = Params::parse(&r.query, &r.body)?;
    api.feed
        .users
        .touch_listen_key(p.req("listenKey")?, account, now, close)?;
    Ok(json!({}))
}

async fn listen_key_keep_alive(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = listen_key_touch(&api, &r, false);
    listen_key_answer(&api, r.ip, res)
}

async fn listen_key_close(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = listen_key_touch(&api, &r, true);
    listen_key_answer(&api, r.ip, res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchItem;
    use fulgur_engine::*;
    use hmac::{Hmac, Mac};

    #[test]
    fn signature_payload_is_binance_example() {
        // The HMAC example of Binance's WebSocket API docs, with its signature.
        let params: Map<String, Value> = serde_json::from_str(
            r#"{"symbol":"BTCUSDT","side":"SELL","type":"LIMIT","timeInForce":"GTC",
                "quantity":"0.01000000","price":"52000.00","newOrderRespType":"ACK",
                "recvWindow":100,"timestamp":1645423376532,
                "apiKey":"vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
                "signature":"ignored","unset":null}"#,
        )
        .unwrap();
        let payload = signature_payload(&params);
        assert_eq!(
            payload,
            "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&newOrderRespType=ACK&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(
            b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
        )
        .unwrap();
        mac.update(payload.as_bytes());
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"
        );
        // Booleans as their JSON text; sorted by byte, so capitals first.
        let p: Map<String, Value> = serde_json::from_str(r#"{"b":true,"a":1,"Z":"x"}"#).unwrap();
        assert_eq!(signature_payload(&p), "Z=x&a=1&b=true");
    }

    #[test]
    fn responses_have_binance_shape() {
        let ok = response_text(&json!("a1"), Ok(json!({})), Some(json!([])));
        assert_eq!(
            ok,
            r#"{"id":"a1","status":200,"result":{},"rateLimits":[]}"#
        );
        let err = response_text(&json!(7), Err(ApiError::bad_signature()), None);
        let v: Value = serde_json::from_str(&err).unwrap();
        assert_eq!(
            v,
            json!({"id": 7, "status": 400,
                   "error": {"code": -1022, "msg": "Signature for this request is not valid."}})
        );
        let mut limited = ApiError::new(429, -1003, "Too much request weight used.");
        limited.retry_after_s = Some(2);
        let v: Value =
            serde_json::from_str(&response_text(&Value::Null, Err(limited), None)).unwrap();
        let data = &v["error"]["data"];
        assert_eq!(
            data["retryAfter"].as_u64().unwrap() - data["serverTime"].as_u64().unwrap(),
            2000
        );
        assert_eq!(v["id"], Value::Null);
        assert_eq!(
            envelope(3, r#"{"e":"x"}"#),
            r#"{"subscriptionId":3,"event":{"e":"x"}}"#
        );
    }

    #[test]
    fn methods_and_weights() {
        assert_eq!(Method::parse("v3/order.place"), Some(Method::OrderPlace));
        assert_eq!(Method::parse("order.Place"), None);
        let raw = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        assert_eq!(Method::Depth.weight(&raw(r#"{"limit":5000}"#)), 250);
        assert_eq!(Method::Depth.weight(&raw(r#"{"limit":"bad"}"#)), 5);
        assert_eq!(
            Method::OpenOrdersStatus.weight(&raw(r#"{"symbol":"X"}"#)),
            6
        );
        assert_eq!(Method::OpenOrdersStatus.weight(&raw("{}")), 80);
        assert_eq!(
            Method::OrderTest.weight(&raw(r#"{"computeCommissionRates":true}"#)),
            20
        );
        for (name, m) in METHODS {
            assert_eq!(Method::parse(name), Some(m), "{name}");
        }
    }

    const BTC: AssetId = 0;
    const USDT: AssetId = 1;
    const MAKER: AccountId = 3;
    const TAKER: AccountId = 4;

    /// An engine and its read model, kept in step as the server keeps them.
    struct Market {
        ex: Exchange,
        view: View,
        seq: u64,
    }

    impl Market {
        fn new() -> Market {
            let ex = Exchange::new(EngineConfig {
                max_accounts: 16,
                max_assets: 4,
                max_markets: 2,
                max_orders: 1024,
                max_orders_per_market: 1024,
                max_levels_per_side: 256,
                max_gtd_orders: 16,
                max_pending_withdrawals: 16,
                max_pending_deposits: 16,
                fee_account: 0,
            });
            let mut m = Market {
                ex,
                view: View::default(),
                seq: 0,
            };
            for symbol in ["BTC", "USDT"] {
                m.apply(Command::AddAsset(Box::new(AssetSpec {
                    symbol: symbol.into(),
                    decimals: 8,
                    class: AssetClass::Crypto,
                })));
            }
            m.apply(Command::AddMarket(Box::new(MarketSpec {
                symbol: "BTCUSDT".into(),
                base: BTC,
                quote: USDT,
                // 0.01 USDT and 0.00001 BTC.
                tick_size: 1_000_000,
                lot_size: 1_000,
                min_price_ticks: 1,
                max_price_ticks: 1 << 40,
                min_qty_lots: 1,
                max_qty_lots: 1 << 40,
                min_notional: 0,
                max_notional: u64::MAX,
                price_band_bps: 0,
                max_open_orders: 100,
                status: MarketStatus::Trading,
                fees: FeeSchedule {
                    maker_fee_bps: 0,
                    taker_fee_bps: 10,
                },
                required_permission: None,
            })));
            m
        }

        fn apply(&mut self, command: Command) {
            self.seq += 1;
            let c = Sequenced {
                seq: self.seq,
                ts_ns: 1_700_000_000_000_000_000 + self.seq * 1_000_000,
                command,
            };
            let mut events = Vec::new();
            self.ex.apply(&c, &mut events);
            self.view.apply(&[BatchItem {
                seq: c.seq,
                ts_ns: c.ts_ns,
                command: &c.command,
                events: &events,
            }]);
        }

        fn limit(&mut self, account: AccountId, side: Side, tif: TimeInForce, client: &str) {
            self.apply(Command::PlaceOrder(PlaceOrder {
                account,
                market: 0,
                side,
                order_type: OrderType::Limit,
                tif,
                // 0.001 BTC at 50,000.00 USDT.
                quantity: Quantity::Base(100),
                price: Some(5_000_000),
                client_order_id: ClientOrderId::new(client).unwrap(),
                stp: StpMode::None,
            }));
        }
    }

    fn events(rx: &mut mpsc::Receiver<Arc<str>>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(serde_json::from_str(&e).expect("events are JSON"));
        }
        out
    }

    #[test]
    fn user_events_of_a_trade() {
        let hub = UserHub::new();
        let mut m = Market::new();
        let mut maker = hub.subscribe(MAKER, 64).unwrap().rx;
        let mut taker = hub.subscribe(TAKER, 64).unwrap().rx;

        m.apply(Command::Deposit {
            account: MAKER,
            asset: BTC,
            amount: 100_000_000,
        });
        hub.publish(&m.view);
        let ev = events(&mut maker);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0]["e"], "balanceUpdate");
        assert_eq!(
            (ev[0]["a"].as_str(), ev[0]["d"].as_str()),
            (Some("BTC"), Some("1.00000000"))
        );
        assert_eq!(ev[1]["e"], "outboundAccountPosition");
        assert_eq!(
            ev[1]["B"],
            json!([{"a": "BTC", "f": "1.00000000", "l": "0.00000000"}])
        );
        m.apply(Command::Deposit {
            account: TAKER,
            asset: USDT,
            amount: 100_000 * 100_000_000,
        });
        hub.publish(&m.view);
        assert_eq!(events(&mut taker).len(), 2);

        m.limit(MAKER, Side::Sell, TimeInForce::Gtc, "maker-1");
        hub.publish(&m.view);
        let ev = events(&mut maker);
        assert_eq!(ev.len(), 2, "{ev:?}");
        let new = &ev[0];
        for (k, v) in [
            ("e", json!("executionReport")),
            ("s", json!("BTCUSDT")),
            ("c", json!("maker-1")),
            ("S", json!("SELL")),
            ("o", json!("LIMIT")),
            ("f", json!("GTC")),
            ("q", json!("0.00100000")),
            ("p", json!("50000.00000000")),
            ("x", json!("NEW")),
            ("X", json!("NEW")),
            ("l", json!("0.00000000")),
            ("z", json!("0.00000000")),
            ("n", json!("0")),
            ("N", Value::Null),
            ("t", json!(-1)),
            ("g", json!(-1)),
            ("C", json!("")),
            ("w", json!(true)),
            ("m", json!(false)),
            ("V", json!("NONE")),
        ] {
            assert_eq!(new[k], v, "{k} in {new}");
        }
        // Every field letter of Binance's payload is there.
        for k in [
            "e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X", "r", "i",
            "l", "z", "L", "n", "N", "T", "t", "v", "I", "w", "m", "M", "O", "Z", "Y", "Q", "W",
            "V",
        ] {
            assert!(new.get(k).is_some(), "{k} missing from {new}");
        }
        assert_eq!(ev[1]["e"], "outboundAccountPosition");
        assert_eq!(
            ev[1]["B"],
            json!([{"a": "BTC", "f": "0.99900000", "l": "0.00100000"}])
        );
        let maker_order = new["i"].as_u64().unwrap();

        m.limit(TAKER, Side::Buy, TimeInForce::Ioc, "taker-1");
        hub.publish(&m.view);
        let ev = events(&mut maker);
        let trade = ev
            .iter()
            .find(|e| e["x"] == "TRADE")
            .expect("the maker's fill");
        assert_eq!(trade["i"].as_u64(), Some(maker_order));
        assert_eq!(trade["X"], "FILLED");
        assert_eq!(trade["l"], "0.00100000");
        assert_eq!(trade["L"], "50000.00000000");
        assert_eq!(trade["Y"], "50.00000000");
        assert_eq!(trade["Z"], "50.00000000");
        assert_eq!(trade["m"], true);
        assert_eq!(trade["w"], false);
        assert_eq!(trade["N"], "USDT");
        assert!(trade["t"].as_i64().unwrap() >= 0);
        assert!(ev.iter().any(|e| e["e"] == "outboundAccountPosition"));

        let ev = events(&mut taker);
        let kinds: Vec<&str> = ev
            .iter()
            .map(|e| e["x"].as_str().unwrap_or(e["e"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds[..2], ["NEW", "TRADE"], "{ev:?}");
        assert_eq!(ev[1]["X"], "FILLED");
        assert_eq!(
            (ev[1]["m"].as_bool(), ev[1]["N"].as_str()),
            (Some(false), Some("BTC"))
        );
        assert_eq!(ev[1]["f"], "IOC");
        assert!(kinds.contains(&"outboundAccountPosition"));
        // Each report has its own execution id.
        assert!(ev[1]["I"].as_u64() > ev[0]["I"].as_u64());
    }

    #[test]
    fn cancels_amends_and_expiry() {
        let hub = UserHub::new();
        let mut m = Market::new();
        let mut rx = hub.subscribe(MAKER, 64).unwrap().rx;
        m.apply(Command::Deposit {
            account: MAKER,
            asset: BTC,
            amount: 100_000_000,
        });
        m.limit(MAKER, Side::Sell, TimeInForce::Gtc, "a-1");
        hub.publish(&m.view);
        let id = events(&mut rx)
            .iter()
            .find_map(|e| e["i"].as_u64())
            .unwrap();

        m.apply(Command::AmendOrder {
            account: MAKER,
            market: 0,
            target: OrderRef::Id(id),
            new_qty: 50,
            new_price: None,
        });
        hub.publish(&m.view);
        let ev = events(&mut rx);
        assert_eq!(
            (ev[0]["x"].as_str(), ev[0]["X"].as_str()),
            (Some("REPLACED"), Some("NEW"))
        );
        assert_eq!(ev[0]["q"], "0.00050000");

        // An amend that loses its place reads as a cancel and a new order.
        let u = ExecUpdate {
            exec_type: "REPLACED",
            order: m.view.orders[&id].clone(),
            fill: None,
            priority_kept: Some(false),
            event_time_ms: 1,
        };
        let mut next = 0;
        let pair: Vec<Value> = execution_reports(&m.view, &u, &mut next)
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(pair[0]["x"], "CANCELED");
        assert_eq!(pair[0]["X"], "CANCELED");
        assert_eq!(pair[0]["C"], "a-1");
        assert_eq!(
            (pair[1]["x"].as_str(), pair[1]["X"].as_str()),
            (Some("NEW"), Some("NEW"))
        );
        assert_eq!(next, 2);

        m.apply(Command::CancelOrder {
            account: MAKER,
            market: 0,
            target: OrderRef::Id(id),
        });
        hub.publish(&m.view);
        let ev = events(&mut rx);
        assert_eq!(
            (ev[0]["x"].as_str(), ev[0]["X"].as_str()),
            (Some("CANCELED"), Some("CANCELED"))
        );
        assert_eq!(ev[0]["C"], "a-1");
        assert_eq!(ev[0]["w"], false);
    }

    #[test]
    fn chain_deposits_reversals_and_the_freeze() {
        let hub = UserHub::new();
        let mut m = Market::new();
        let mut rx = hub.subscribe(MAKER, 64).unwrap().rx;
        m.apply(Command::DepositCredit {
            deposit: 1,
            account: MAKER,
            asset: BTC,
            amount: 100_000_000,
        });
        hub.publish(&m.view);
        let ev = events(&mut rx);
        assert_eq!(
            (ev[0]["e"].as_str(), ev[0]["d"].as_str()),
            (Some("balanceUpdate"), Some("1.00000000"))
        );
        assert_eq!(ev[1]["e"], "outboundAccountPosition");

        // The money is sold and withdrawn but for one order's hold, then the chain drops
        // the deposit: the order is cancelled, its 0.001 BTC taken, 0.999 BTC owed.
        m.limit(MAKER, Side::Sell, TimeInForce::Gtc, "s-1");
        m.apply(Command::WithdrawHold {
            account: MAKER,
            asset: BTC,
            amount: 99_900_000,
            withdrawal: 1,
        });
        m.apply(Command::WithdrawFinalize { withdrawal: 1 });
        hub.publish(&m.view);
        events(&mut rx);
        m.apply(Command::DepositReverse { deposit: 1 });
        hub.publish(&m.view);
        let ev = events(&mut rx);
        assert_eq!(
            (
                ev[0]["x"].as_str(),
                ev[0]["X"].as_str(),
                ev[0]["c"].as_str()
            ),
            (Some("CANCELED"), Some("CANCELED"), Some("s-1"))
        );
        assert_eq!(
            (ev[1]["e"].as_str(), ev[1]["d"].as_str()),
            (Some("balanceUpdate"), Some("-0.00100000"))
        );
        assert_eq!(
            ev[2]["B"],
            json!([{"a": "BTC", "f": "0.00000000", "l": "0.00000000"}])
        );
        let a = &m.view.accounts[&MAKER];
        assert_eq!(a.deficits.get(&BTC), Some(&99_900_000));
        assert!(a.is_frozen() && !m.view.accounts.contains_key(&TAKER));
        assert!(m.view.open_orders(MAKER).is_empty());

        // A restarted read model knows the deficit too; the account shows it may not
        // withdraw, and may still trade (sell).
        let restarted = View::from_exchange(&m.ex, m.seq, 0);
        assert_eq!(restarted.accounts[&MAKER].deficits, a.deficits);
        struct Stopped;
        impl crate::Backend for Stopped {
            fn submit(
                &self,
                _: Command,
            ) -> Result<tokio::sync::oneshot::Receiver<crate::Reply>, crate::SubmitError>
            {
                Err(crate::SubmitError::Stopped)
            }
        }
        let dir = std::env::temp_dir().join(format!("fulgur-wsapi-frozen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let api = crate::Api::new(
            crate::ApiConfig {
                data_dir: dir.clone(),
                limits: Default::default(),
                reply_timeout: std::time::Duration::from_secs(1),
            },
            Arc::new(Stopped),
            crate::Feed::new(restarted),
        )
        .unwrap();
        let p = crate::params::Params::default();
        let acct = orders::account(&api, MAKER, &p).unwrap();
        assert_eq!(
            (&acct["canTrade"], &acct["canWithdraw"]),
            (&json!(true), &json!(false))
        );
        let acct = orders::account(&api, TAKER, &p).unwrap();
        assert_eq!(
            (&acct["canTrade"], &acct["canWithdraw"]),
            (&json!(true), &json!(true))
        );
        std::fs::remove_dir_all(&dir).unwrap();
        for e in [
            orders::place_rejection(RejectReason::AccountFrozen, OrderType::Limit),
            orders::cancel_rejection(RejectReason::AccountFrozen),
        ] {
            assert_eq!(
                (e.code, e.msg.as_str()),
                (
                    -2010,
                    "This account is frozen until its deficit is covered."
                )
            );
        }

        // A deposit pays the deficit first: only the rest reaches the balance, and its
        // balanceUpdate says so.
        m.apply(Command::Deposit {
            account: MAKER,
            asset: BTC,
            amount: 100_000_000,
        });
        hub.publish(&m.view);
        let ev = events(&mut rx);
        assert_eq!(ev[0]["d"], "0.00100000");
        assert!(!m.view.accounts[&MAKER].is_frozen());
    }

    #[test]
    fn slow_and_gone_subscribers_are_dropped() {
        let hub = UserHub::new();
        let mut m = Market::new();
        let mut slow = hub.subscribe(MAKER, 1).unwrap().rx;
        let gone = hub.subscribe(MAKER, 8).unwrap();
        drop(gone);
        m.apply(Command::Deposit {
            account: MAKER,
            asset: BTC,
            amount: 1,
        });
        // Two events for a queue of one: the second cuts the subscriber off.
        hub.publish(&m.view);
        assert!(slow.try_recv().is_ok());
        assert!(matches!(
            slow.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(hub.lock().count, 0);
        assert!(hub.lock().subscribers.is_empty());

        let subs: Vec<_> = (0..MAX_SUBSCRIBERS_PER_ACCOUNT)
            .map(|_| hub.subscribe(TAKER, 1).unwrap())
            .collect();
        assert!(hub.subscribe(TAKER, 1).is_none());
        drop(subs);
        assert!(hub.subscribe(TAKER, 1).is_some());
    }

    #[test]
    fn listen_keys() {
        let hub = UserHub::new();
        let now = now_ms();
        let k = hub.create_listen_key(MAKER, now).unwrap();
        assert_eq!(k.len(), LISTEN_KEY_CHARS);
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(hub.create_listen_key(MAKER, now).unwrap(), k);
        assert_ne!(hub.create_listen_key(TAKER, now).unwrap(), k);
        assert_eq!(hub.listen_key_account(&k), Some(MAKER));
        assert_eq!(
            hub.touch_listen_key(&k, TAKER, now, false)
                .unwrap_err()
                .code,
            -1125
        );
        hub.touch_listen_key(&k, MAKER, now, false).unwrap();
        hub.touch_listen_key(&k, MAKER, now, true).unwrap();
        assert_eq!(hub.listen_key_account(&k), None);
        assert!(hub.touch_listen_key(&k, MAKER, now, true).is_err());
        // Expired keys are gone: an hour later the account gets a new one.
        let k2 = hub
            .create_listen_key(TAKER, now + LISTEN_KEY_TTL_MS)
            .unwrap();
        assert_eq!(hub.lock().listen_keys.len(), 1);
        assert_eq!(hub.listen_key_account(&k2), Some(TAKER));
    }
}
