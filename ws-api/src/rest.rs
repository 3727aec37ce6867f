//! REST: `/api/v3/...` as Binance serves it, and the operator's deposit endpoint.
//!
//! Every request is charged its Binance weight against its IP before anything else, and
//! every answer carries `X-MBX-USED-WEIGHT-1M`; orders are also counted against their
//! account (`X-MBX-ORDER-COUNT-10S`, `-1D`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use fulgur_engine::{AccountId, Command, MarketStatus};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::auth;
use crate::error::ApiError;
use crate::orders;
use crate::params::{check_symbol, Params};
use crate::view::{fixed, interval_index, quote_decimal, MarketView, View, INTERVALS};
use crate::{now_ms, Api};

/// Largest request body (Binance's requests are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What a REST handler needs of the request.
pub struct Req {
    pub ip: IpAddr,
    pub method: Method,
    pub query: String,
    pub body: String,
    pub headers: HeaderMap,
}

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let method = req.method().clone();
        let query = req.uri().query().unwrap_or("").to_string();
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| {
                ApiError::new(413, -1101, "Too many parameters sent for this endpoint.")
                    .into_response()
            })?;
        let body = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::new(400, -1100, "Illegal characters found in a parameter.").into_response()
        })?;
        Ok(Req {
            ip,
            method,
            query,
            body,
            headers,
        })
    }
}

/// The routes, to be merged into the server's router.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v3/ping", get(ping))
        .route("/api/v3/time", get(time))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/depth", get(depth))
        .route("/api/v3/trades", get(trades))
        .route("/api/v3/historicalTrades", get(trades))
        .route("/api/v3/aggTrades", get(agg_trades))
        .route("/api/v3/klines", get(klines))
        .route("/api/v3/uiKlines", get(klines))
        .route("/api/v3/ticker/24hr", get(ticker_24hr))
        .route("/api/v3/ticker/price", get(ticker_price))
        .route("/api/v3/ticker/bookTicker", get(book_ticker))
        .route("/api/v3/avgPrice", get(avg_price))
        .route(
            "/api/v3/order",
            post(order_new).get(order_get).delete(order_delete),
        )
        .route("/api/v3/order/test", post(order_test))
        .route("/api/v3/order/cancelReplace", post(cancel_replace))
        .route("/api/v3/order/amend/keepPriority", put(amend))
        .route(
            "/api/v3/openOrders",
            get(open_orders).delete(cancel_open_orders),
        )
        .route("/api/v3/allOrders", get(all_orders))
        .route("/api/v3/myTrades", get(my_trades))
        .route("/api/v3/account", get(account))
        .route("/api/v3/rateLimit/order", get(order_rate_limit))
        .route("/fulgur/v1/admin/deposit", post(admin_deposit))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

/// An answer with the rate-limit headers.
pub(crate) fn answer(
    api: &Api,
    ip: IpAddr,
    result: Result<Value, ApiError>,
    orders: Option<(u32, u32)>,
) -> Response {
    let used = api.limits.used_weight(ip, now_ms());
    let mut r = match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    };
    let h = r.headers_mut();
    let mut put = |k: &'static str, v: u32| {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(k, v);
        }
    };
    put("x-mbx-used-weight", used);
    put("x-mbx-used-weight-1m", used);
    if let Some((c10, c1d)) = orders {
        put("x-mbx-order-count-10s", c10);
        put("x-mbx-order-count-1d", c1d);
    }
    r
}

impl Api {
    /// Charges the IP and parses the parameters of a public request.
    fn public(&self, r: &Req, weight: u32) -> Result<Params, ApiError> {
        self.limits.request(r.ip, weight, now_ms())?;
        Params::parse(&r.query, &r.body)
    }

    /// Charges the IP, then checks key, signature and timing of a SIGNED request: the
    /// parameters and the key's account.
    pub fn signed(&self, r: &Req, weight: u32) -> Result<(Params, AccountId), ApiError> {
        let now = now_ms();
        self.limits.request(r.ip, weight, now)?;
        let key = r
            .headers
            .get("x-mbx-apikey")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= 128)
            .ok_or_else(ApiError::bad_api_key_format)?;
        let key = self
            .keys
            .lookup(key)
            .ok_or_else(ApiError::invalid_api_key)?;
        let (payload, signature) = auth::signed_payload(&r.query, &r.body)?;
        if !auth::verify_signature(&key, payload.as_bytes(), &signature) {
            return Err(ApiError::bad_signature());
        }
        let p = Params::parse(&r.query, &r.body)?;
        let ts = p
            .u64("timestamp")?
            .ok_or_else(|| ApiError::mandatory("timestamp"))?;
        auth::check_timestamp(now, ts, p.get("recvWindow"))?;
        Ok((p, key.account))
    }
}

async fn ping(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 1).map(|_| json!({}));
    answer(&api, r.ip, res, None)
}

async fn time(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 1).map(|_| json!({"serverTime": now_ms()}));
    answer(&api, r.ip, res, None)
}

/// The markets a request names: `symbol`, `symbols` (a JSON array), or all.
fn selected<'v>(view: &'v View, p: &Params) -> Result<Vec<&'v MarketView>, ApiError> {
    if p.has("symbol") && p.has("symbols") {
        return Err(ApiError::new(
            400,
            -1128,
            "Combination of optional parameters invalid.",
        ));
    }
    if p.has("symbol") {
        return Ok(vec![orders::market(view, p)?]);
    }
    if let Some(list) = p.get("symbols") {
        let names: Vec<String> = serde_json::from_str(list).map_err(|_| {
            ApiError::illegal_chars(
                "symbols",
                "^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$",
            )
        })?;
        if names.len() > 100 {
            return Err(ApiError::new(
                400,
                -1101,
                "Too many values sent for parameter 'symbols', maximum allowed up to 100.",
            ));
        }
        return names
            .iter()
            .map(|s| {
                check_symbol(s)?;
                view.market(s).ok_or_else(ApiError::invalid_symbol)
            })
            .collect();
    }
    Ok(view.markets.iter().collect())
}

fn status_str(s: MarketStatus) -> &'static str {
    match s {
        MarketStatus::Trading => "TRADING",
        MarketStatus::Halted => "HALT",
        MarketStatus::CancelOnly => "BREAK",
    }
}

/// One symbol as `exchangeInfo` lists it.
pub fn symbol_info(m: &MarketView) -> Value {
    let s = &m.spec;
    let band = Decimal::new(s.price_band_bps as i64, 4);
    let (up, down) = if s.price_band_bps == 0 {
        ("5".to_string(), "0.2".to_string())
    } else {
        (
            (Decimal::ONE + band).normalize().to_string(),
            (Decimal::ONE - band)
                .max(Decimal::ZERO)
                .normalize()
                .to_string(),
        )
    };
    let lot = |lots: u64| m.qty(lots as u128);
    let qd = m.quote.decimals;
    json!({
        "symbol": s.symbol,
        "status": status_str(s.status),
        "baseAsset": m.base.symbol,
        "baseAssetPrecision": m.base.decimals,
        "quoteAsset": m.quote.symbol,
        "quotePrecision": qd,
        "quoteAssetPrecision": qd,
        "baseCommissionPrecision": m.base.decimals,
        "quoteCommissionPrecision": qd,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": true,
        "amendAllowed": true,
        "pegInstructionsAllowed": false,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": m.price(s.min_price_ticks),
             "maxPrice": m.price(s.max_price_ticks), "tickSize": m.price(1)},
            {"filterType": "LOT_SIZE", "minQty": lot(s.min_qty_lots),
             "maxQty": lot(s.max_qty_lots), "stepSize": lot(1)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": lot(s.min_qty_lots),
             "maxQty": lot(s.max_qty_lots), "stepSize": lot(1)},
            {"filterType": "NOTIONAL", "minNotional": quote_decimal(s.min_notional as u128, qd),
             "applyMinToMarket": true, "maxNotional": quote_decimal(s.max_notional as u128, qd),
             "applyMaxToMarket": false, "avgPriceMins": 5},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": up,
             "bidMultiplierDown": down, "askMultiplierUp": up, "askMultiplierDown": down,
             "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": s.max_open_orders},
        ],
        "permissions": [],
        // Binance's rule: the account needs one permission of each set.
        "permissionSets": match s.required_permission {
            None => json!([["SPOT"]]),
            Some(p) => json!([["SPOT"], [permission_name(p)]]),
        },
        "fulgurBaseAssetClass": asset_class_str(m.base.class),
        "defaultSelfTradePreventionMode": orders::stp_str(orders::DEFAULT_STP),
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

/// An engine permission as Binance names trading groups: `TRD_GRP_000` for permission 0.
pub fn permission_name(p: fulgur_engine::PermissionId) -> String {
    format!("TRD_GRP_{p:03}")
}

fn asset_class_str(c: fulgur_engine::AssetClass) -> &'static str {
    match c {
        fulgur_engine::AssetClass::Crypto => "CRYPTO",
        fulgur_engine::AssetClass::Stablecoin => "STABLECOIN",
        fulgur_engine::AssetClass::Rwa => "RWA",
    }
}

async fn exchange_info(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 20).and_then(|p| {
        let view = api.view();
        let symbols: Vec<Value> = selected(&view, &p)?.into_iter().map(symbol_info).collect();
        Ok(json!({
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": api.limits.exchange_info_limits(),
            "exchangeFilters": [],
            "symbols": symbols,
        }))
    });
    answer(&api, r.ip, res, None)
}

/// Binance's depth weights by limit.
fn depth_weight(limit: u64) -> u32 {
    match limit {
        0..=100 => 5,
        101..=500 => 25,
        501..=1000 => 50,
        _ => 250,
    }
}

pub fn depth_json(m: &MarketView, limit: usize) -> Value {
    let (bids, asks) = m.depth(limit);
    let side = |v: Vec<(u64, u64)>| -> Vec<[String; 2]> {
        v.into_iter()
            .map(|(p, q)| [m.price(p), m.qty(q as u128)])
            .collect()
    };
    json!({"lastUpdateId": m.update_id, "bids": side(bids), "asks": side(asks)})
}

async fn depth(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = (|| {
        let p = Params::parse(&r.query, &r.body)?;
        let limit = p.bounded("limit", 100, 1, 5000)?;
        api.limits.request(r.ip, depth_weight(limit), now_ms())?;
        let view = api.view();
        let m = orders::market(&view, &p)?;
        Ok(depth_json(m, limit as usize))
    })();
    answer(&api, r.ip, res, None)
}

pub fn trade_json(m: &MarketView, t: &crate::view::TradeRec) -> Value {
    json!({
        "id": t.id,
        "price": m.price(t.price),
        "qty": m.qty(t.qty as u128),
        "quoteQty": m.quote_amount(m.notional(t.price, t.qty)),
        "time": t.time_ms,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": true,
    })
}

async fn trades(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 25).and_then(|p| {
        let limit = p.bounded("limit", 500, 1, 1000)? as usize;
        let from_id = p.u64("fromId")?;
        let view = api.view();
        let m = orders::market(&view, &p)?;
        let v: Vec<&crate::view::TradeRec> = match from_id {
            Some(id) => m.trades.iter().filter(|t| t.id >= id).take(limit).collect(),
            None => m
                .trades
                .iter()
                .skip(m.trades.len().saturating_sub(limit))
                .collect(),
        };
        Ok(Value::Array(
            v.into_iter().map(|t| trade_json(m, t)).collect(),
        ))
    });
    answer(&api, r.ip, res, None)
}

async fn agg_trades(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 4).and_then(|p| {
        let limit = p.bounded("limit", 500, 1, 1000)? as usize;
        let from_id = p.u64("fromId")?;
        let start = p.u64("startTime")?;
        let end = p.u64("endTime")?;
        let view = api.view();
        let m = orders::market(&view, &p)?;
        let v: Vec<&crate::view::AggTrade> = m
            .agg_trades
            .iter()
            .filter(|a| from_id.is_none_or(|id| a.id >= id))
            .filter(|a| start.is_none_or(|s| a.time_ms >= s))
            .filter(|a| end.is_none_or(|e| a.time_ms <= e))
            .collect();
        let v = crate::params::page(v, limit, from_id.is_some() || start.is_some());
        Ok(Value::Array(
            v.into_iter()
                .map(|a| {
                    json!({"a": a.id, "p": m.price(a.price), "q": m.qty(a.qty as u128),
                           "f": a.first_trade, "l": a.last_trade, "T": a.time_ms,
                           "m": a.is_buyer_maker, "M": true})
                })
                .collect(),
        ))
    });
    answer(&api, r.ip, res, None)
}

pub fn kline_row(m: &MarketView, k: &crate::view::Kline, len_ms: u64) -> Value {
    json!([
        k.open_time_ms,
        m.price(k.open),
        m.price(k.high),
        m.price(k.low),
        m.price(k.close),
        m.qty(k.volume),
        k.open_time_ms + len_ms - 1,
        m.quote_amount(k.quote_volume),
        k.trades,
        m.qty(k.taker_buy_volume),
        m.quote_amount(k.taker_buy_quote_volume),
        "0"
    ])
}

async fn klines(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 2).and_then(|p| {
        let view = api.view();
        let m = orders::market(&view, &p)?;
        let i = interval_index(p.req("interval")?).ok_or_else(ApiError::invalid_interval)?;
        let limit = p.bounded("limit", 500, 1, 1000)? as usize;
        let start = p.u64("startTime")?;
        let end = p.u64("endTime")?;
        let len_ms = INTERVALS[i].1;
        let v: Vec<&crate::view::Kline> = m.klines[i]
            .iter()
            .filter(|k| start.is_none_or(|s| k.open_time_ms + len_ms > s))
            .filter(|k| end.is_none_or(|e| k.open_time_ms <= e))
            .collect();
        let v = crate::params::page(v, limit, start.is_some());
        Ok(Value::Array(
            v.into_iter().map(|k| kline_row(m, k, len_ms)).collect(),
        ))
    });
    answer(&api, r.ip, res, None)
}

/// A 24 h rolling-window ticker, FULL or MINI, as Binance's REST and `@ticker` show it.
pub fn ticker_json(m: &MarketView, now: u64, full: bool) -> Value {
    let s = m.stats(now, 86_400_000);
    let zero = m.price(0);
    let last = m.last_price.unwrap_or(0);
    let open = s.open.unwrap_or(last);
    let (high, low) = if s.count == 0 {
        (0, 0)
    } else {
        (s.high, s.low)
    };
    let mut v = json!({
        "symbol": m.spec.symbol,
        "openPrice": if s.count == 0 { zero.clone() } else { m.price(open) },
        "highPrice": m.price(high),
        "lowPrice": m.price(low),
        "lastPrice": m.price(last),
        "volume": m.qty(s.volume),
        "quoteVolume": m.quote_amount(s.quote_volume),
        "openTime": s.open_time_ms,
        "closeTime": s.close_time_ms,
        "firstId": s.first_trade.map_or(-1, |x| x as i64),
        "lastId": s.last_trade.map_or(-1, |x| x as i64),
        "count": s.count,
    });
    if full {
        let scale = crate::view::print_scale(m.quote.decimals);
        let p =
            |t: u64| fulgur_engine::spec::steps_to_decimal(t, m.spec.tick_size, m.quote.decimals);
        let (change, pct) = if s.count == 0 {
            (Decimal::ZERO, Decimal::ZERO)
        } else {
            let c = p(last) - p(open);
            let pct = if open == 0 {
                Decimal::ZERO
            } else {
                (c * Decimal::from(100) / p(open)).round_dp(3)
            };
            (c, pct)
        };
        let wavg = if s.volume == 0 {
            Decimal::ZERO
        } else {
            let base = Decimal::from_i128_with_scale(
                (s.volume * m.spec.lot_size as u128).min(i64::MAX as u128) as i128,
                m.base.decimals as u32,
            );
            let quote = Decimal::from_i128_with_scale(
                s.quote_volume.min(i64::MAX as u128) as i128,
                m.quote.decimals as u32,
            );
            (quote / base).round_dp(scale)
        };
        let (bid, bid_q) = m.best_bid().unwrap_or((0, 0));
        let (ask, ask_q) = m.best_ask().unwrap_or((0, 0));
        let o = v.as_object_mut().expect("object");
        for (k, x) in [
            ("priceChange", json!(fixed(change, scale))),
            ("priceChangePercent", json!(fixed(pct, 3))),
            ("weightedAvgPrice", json!(fixed(wavg, scale))),
            (
                "prevClosePrice",
                json!(if s.count == 0 {
                    zero.clone()
                } else {
                    m.price(open)
                }),
            ),
            ("lastQty", json!(m.qty(m.last_qty as u128))),
            ("bidPrice", json!(m.price(bid))),
            ("bidQty", json!(m.qty(bid_q as u128))),
            ("askPrice", json!(m.price(ask))),
            ("askQty", json!(m.qty(ask_q as u128))),
        ] {
            o.insert(k.into(), x);
        }
    }
    v
}

/// One object for `symbol`, an array otherwise.
fn one_or_many(p: &Params, v: Vec<Value>) -> Value {
    if p.has("symbol") {
        v.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(v)
    }
}

async fn ticker_24hr(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = (|| {
        let p = Params::parse(&r.query, &r.body)?;
        let full = match p.get("type") {
            None | Some("FULL") => true,
            Some("MINI") => false,
            Some(_) => return Err(ApiError::illegal_chars("type", "FULL, MINI")),
        };
        let view = api.view();
        let ms = selected(&view, &p)?;
        let weight = match ms.len() {
            0..=20 => 2,
            21..=100 => 40,
            _ => 80,
        };
        api.limits.request(r.ip, weight, now_ms())?;
        let now = now_ms();
        let v = ms.into_iter().map(|m| ticker_json(m, now, full)).collect();
        Ok(one_or_many(&p, v))
    })();
    answer(&api, r.ip, res, None)
}

async fn ticker_price(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 2).and_then(|p| {
        let view = api.view();
        let v = selected(&view, &p)?
            .into_iter()
            .map(|m| json!({"symbol": m.spec.symbol, "price": m.price(m.last_price.unwrap_or(0))}))
            .collect();
        Ok(one_or_many(&p, v))
    });
    answer(&api, r.ip, res, None)
}

pub fn book_ticker_json(m: &MarketView) -> Value {
    let (bid, bid_q) = m.best_bid().unwrap_or((0, 0));
    let (ask, ask_q) = m.best_ask().unwrap_or((0, 0));
    json!({
        "symbol": m.spec.symbol,
        "bidPrice": m.price(bid),
        "bidQty": m.qty(bid_q as u128),
        "askPrice": m.price(ask),
        "askQty": m.qty(ask_q as u128),
    })
}

async fn book_ticker(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 2).and_then(|p| {
        let view = api.view();
        let v = selected(&view, &p)?
            .into_iter()
            .map(book_ticker_json)
            .collect();
        Ok(one_or_many(&p, v))
    });
    answer(&api, r.ip, res, None)
}

async fn avg_price(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.public(&r, 2).and_then(|p| {
        let view = api.view();
        let m = orders::market(&view, &p)?;
        let now = now_ms();
        let s = m.stats(now, 300_000);
        let price = if s.volume == 0 {
            m.price(m.last_price.unwrap_or(0))
        } else {
            let base = Decimal::from_i128_with_scale(
                (s.volume * m.spec.lot_size as u128).min(i64::MAX as u128) as i128,
                m.base.decimals as u32,
            );
            let quote = Decimal::from_i128_with_scale(
                s.quote_volume.min(i64::MAX as u128) as i128,
                m.quote.decimals as u32,
            );
            let scale = crate::view::print_scale(m.quote.decimals);
            fixed((quote / base).round_dp(scale), scale)
        };
        Ok(json!({"mins": 5, "price": price, "closeTime": now}))
    });
    answer(&api, r.ip, res, None)
}

/// The signed requests that act on orders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Place,
    Test,
    Cancel,
    CancelAll,
    CancelReplace,
    Amend,
}

/// A signed order request: checked, counted against the account's order limits when it
/// places an order, and answered with the order-count headers then.
async fn signed_op(api: Arc<Api>, r: Req, weight: u32, op: Op) -> Response {
    let (p, account) = match api.signed(&r, weight) {
        Ok(x) => x,
        Err(e) => return answer(&api, r.ip, Err(e), None),
    };
    let counts = if matches!(op, Op::Place | Op::CancelReplace | Op::Amend) {
        match api.limits.order(account, now_ms()) {
            Ok(c) => Some(c),
            Err(e) => return answer(&api, r.ip, Err(e), None),
        }
    } else {
        None
    };
    let res = match op {
        Op::Place => orders::place(&api, account, &p, false).await,
        Op::Test => orders::place(&api, account, &p, true).await,
        Op::Cancel => orders::cancel(&api, account, &p).await,
        Op::CancelAll => orders::cancel_all(&api, account, &p).await,
        Op::CancelReplace => orders::cancel_replace(&api, account, &p).await,
        Op::Amend => orders::amend_keep_priority(&api, account, &p).await,
    };
    answer(&api, r.ip, res, counts)
}

async fn order_new(State(api): State<Arc<Api>>, r: Req) -> Response {
    signed_op(api, r, 1, Op::Place).await
}

async fn order_test(State(api): State<Arc<Api>>, r: Req) -> Response {
    signed_op(api, r, 1, Op::Test).await
}

async fn order_get(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api
        .signed(&r, 4)
        .and_then(|(p, account)| orders::query(&api, account, &p));
    answer(&api, r.ip, res, None)
}

async fn order_delete(State(api): State<Arc<Api>>, r: Req) -> Response {
    signed_op(api, r, 1, Op::Cancel).await
}

async fn cancel_replace(State(api): State<Arc<Api>>, r: Req) -> Response {
    signed_op(api, r, 1, Op::CancelReplace).await
}

async fn amend(State(api): State<Arc<Api>>, r: Req) -> Response {
    signed_op(api, r, 4, Op::Amend).await
}

async fn open_orders(State(api): State<Arc<Api>>, r: Req) -> Response {
    let weight = if Params::parse(&r.query, &r.body).is_ok_and(|p| p.has("symbol")) {
        6
    } else {
        80
    };
    let res = api
        .signed(&r, weight)
        .and_then(|(p, account)| orders::open_orders(&api, account, &p));
    answer(&api, r.ip, res, None)
}

async fn cancel_open_orders(State(api): State<Arc<Api>>, r: Req) -> Response {
    signed_op(api, r, 1, Op::CancelAll).await
}

async fn all_orders(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api
        .signed(&r, 20)
        .and_then(|(p, account)| orders::all_orders(&api, account, &p));
    answer(&api, r.ip, res, None)
}

async fn my_trades(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api
        .signed(&r, 20)
        .and_then(|(p, account)| orders::my_trades(&api, account, &p));
    answer(&api, r.ip, res, None)
}

async fn account(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api
        .signed(&r, 20)
        .and_then(|(p, account)| orders::account(&api, account, &p));
    answer(&api, r.ip, res, None)
}

async fn order_rate_limit(State(api): State<Arc<Api>>, r: Req) -> Response {
    let res = api.signed(&r, 40).map(|(_, account)| {
        let (c10, c1d) = api.limits.order_counts(account, now_ms());
        let cfg = &api.cfg.limits;
        json!([
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
             "limit": cfg.orders_per_10s, "count": c10},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
             "limit": cfg.orders_per_day, "count": c1d},
        ])
    });
    answer(&api, r.ip, res, None)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositRequest {
    account: AccountId,
    asset: String,
    amount: String,
}

/// `POST /fulgur/v1/admin/deposit`: credits an account, for operators (loopback clients
/// with the data directory's admin token) until custody does it.
async fn admin_deposit(State(api): State<Arc<Api>>, r: Req) -> Response {
    match deposit(&api, &r).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn deposit(api: &Api, r: &Req) -> Result<Value, ApiError> {
    {
        if !r.ip.is_loopback() {
            return Err(ApiError::new(
                403,
                -1002,
                "You are not authorized to execute this request.",
            ));
        }
        let token = r
            .headers
            .get("x-fulgur-admin-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::admin_token_matches(&api.admin_token, token) {
            return Err(ApiError::unauthorized());
        }
        let req: DepositRequest = serde_json::from_str(&r.body)
            .map_err(|e| ApiError::new(400, -1100, format!("Illegal deposit request: {e}")))?;
        let (asset, amount) = {
            let view = api.view();
            let a = view.asset_by_symbol(&req.asset).ok_or_else(|| {
                ApiError::new(400, -1130, "Invalid data sent for a parameter: 'asset'.")
            })?;
            let v = crate::params::parse_decimal("amount", &req.amount)?;
            if v.normalize().scale() > a.decimals as u32 {
                return Err(ApiError::too_much_precision("amount"));
            }
            let amount = fulgur_engine::spec::decimal_to_steps(v, 1, a.decimals)
                .map_err(|_| ApiError::invalid_data("amount"))?;
            (a.id, amount)
        };
        if req.account >= api.view().max_accounts {
            return Err(ApiError::invalid_data("account"));
        }
        let reply = api
            .execute(Command::Deposit {
                account: req.account,
                asset,
                amount,
            })
            .await?;
        if let Some(fulgur_engine::Event::CommandRejected { reason }) = reply.events.first() {
            return Err(ApiError::new(
                400,
                -1130,
                format!("Deposit refused: {reason:?}"),
            ));
        }
        let view = api.view();
        let a = &view.assets[asset as usize];
        let (free, locked) = view
            .accounts
            .get(&req.account)
            .and_then(|x| x.balances.get(&asset).copied())
            .unwrap_or((0, 0));
        Ok(json!({
            "seq": reply.seq,
            "account": req.account,
            "asset": a.symbol,
            "free": quote_decimal(free as u128, a.decimals),
            "locked": quote_decimal(locked as u128, a.decimals),
        }))
    }
}
