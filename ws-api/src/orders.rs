//! The order operations both REST and the WebSocket API serve: Binance parameters in, an
//! engine command out, and the reply rendered as Binance renders it.

use fulgur_engine::spec::{decimal_to_steps, UnitError};
use fulgur_engine::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::view::{quote_decimal, Fill, MarketView, OrderRec, View};
use crate::{Api, Reply};

/// Binance's legal range for client order ids.
const CLIENT_ID_RANGE: &str = "^[\\.A-Z\\:/a-z0-9_-]{1,36}$";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespType {
    Ack,
    Result,
    Full,
}

/// A new order, checked and converted, ready to submit.
pub struct NewOrder {
    pub place: PlaceOrder,
    pub resp: RespType,
    pub symbol: String,
}

fn side(p: &Params) -> Result<Side, ApiError> {
    match p.req("side")? {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(ApiError::new(400, -1117, "Invalid side.")),
    }
}

pub fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

pub fn type_str(t: OrderType) -> &'static str {
    match t {
        OrderType::Limit => "LIMIT",
        OrderType::Market => "MARKET",
        OrderType::LimitMaker => "LIMIT_MAKER",
    }
}

pub fn tif_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
        TimeInForce::Gtd { .. } => "GTD",
    }
}

pub fn stp_str(s: StpMode) -> &'static str {
    match s {
        StpMode::None => "NONE",
        StpMode::ExpireTaker => "EXPIRE_TAKER",
        StpMode::ExpireMaker => "EXPIRE_MAKER",
        StpMode::ExpireBoth => "EXPIRE_BOTH",
    }
}

/// Binance's default STP mode for new symbols.
pub const DEFAULT_STP: StpMode = StpMode::ExpireMaker;

fn stp(p: &Params) -> Result<StpMode, ApiError> {
    match p.get("selfTradePreventionMode") {
        None => Ok(DEFAULT_STP),
        Some("NONE") => Ok(StpMode::None),
        Some("EXPIRE_TAKER") => Ok(StpMode::ExpireTaker),
        Some("EXPIRE_MAKER") => Ok(StpMode::ExpireMaker),
        Some("EXPIRE_BOTH") => Ok(StpMode::ExpireBoth),
        Some(_) => Err(ApiError::new(
            400,
            -1100,
            "Illegal characters found in parameter 'selfTradePreventionMode'; legal range is 'NONE, EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH'.",
        )),
    }
}

/// A client order id given by the client, checked against Binance's range.
pub fn client_id(p: &Params, name: &str) -> Result<Option<ClientOrderId>, ApiError> {
    p.get(name)
        .map(|s| ClientOrderId::new(s).map_err(|_| ApiError::illegal_chars(name, CLIENT_ID_RANGE)))
        .transpose()
}

/// A fresh client order id, as Binance makes one when none is sent: 22 random characters.
pub fn generated_client_id() -> ClientOrderId {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 22];
    getrandom::fill(&mut raw).expect("the OS random source works");
    let s: String = raw
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    ClientOrderId::new(&s).expect("alphanumeric")
}

/// Converts a decimal to steps of a market, with Binance's errors: too many decimals for
/// the asset is -1111, not a multiple of the step or out of range is the filter's -1013.
fn steps(
    param: &str,
    v: Decimal,
    step_minor: u64,
    decimals: u8,
    filter: &str,
) -> Result<u64, ApiError> {
    if v.normalize().scale() > decimals as u32 {
        return Err(ApiError::too_much_precision(param));
    }
    match decimal_to_steps(v, step_minor, decimals) {
        Ok(n) => Ok(n),
        Err(UnitError::NotAMultiple) | Err(UnitError::OutOfRange) => Err(ApiError::filter(filter)),
    }
}

pub fn market<'v>(view: &'v View, p: &Params) -> Result<&'v MarketView, ApiError> {
    view.market(p.symbol()?)
        .ok_or_else(ApiError::invalid_symbol)
}

/// Parameters Binance takes for order types Fulgur does not have; sending one is an error,
/// never silently ignored.
const UNSUPPORTED: [&str; 6] = [
    "stopPrice",
    "icebergQty",
    "trailingDelta",
    "pegPriceType",
    "pegOffsetValue",
    "pegOffsetType",
];

/// Checks a new order's parameters and builds its command (nothing is submitted).
pub fn new_order(view: &View, account: AccountId, p: &Params) -> Result<NewOrder, ApiError> {
    let m = market(view, p)?;
    let side = side(p)?;
    let order_type = match p.req("type")? {
        "LIMIT" => OrderType::Limit,
        "MARKET" => OrderType::Market,
        "LIMIT_MAKER" => OrderType::LimitMaker,
        _ => return Err(ApiError::new(400, -1116, "Invalid orderType.")),
    };
    for u in UNSUPPORTED {
        if p.has(u) {
            return Err(ApiError::not_required(u));
        }
    }
    let tif = match (order_type, p.get("timeInForce")) {
        (OrderType::Limit, None) => return Err(ApiError::mandatory("timeInForce")),
        (OrderType::Limit, Some("GTC")) => TimeInForce::Gtc,
        (OrderType::Limit, Some("IOC")) => TimeInForce::Ioc,
        (OrderType::Limit, Some("FOK")) => TimeInForce::Fok,
        (OrderType::Limit, Some(_)) => {
            return Err(ApiError::new(400, -1115, "Invalid timeInForce."))
        }
        (OrderType::Market, None) => TimeInForce::Ioc,
        (OrderType::LimitMaker, None) => TimeInForce::Gtc,
        (_, Some(_)) => return Err(ApiError::not_required("timeInForce")),
    };
    let qd = m.quote.decimals;
    let price = match (order_type, p.decimal("price")?) {
        (OrderType::Market, Some(_)) => return Err(ApiError::not_required("price")),
        (OrderType::Market, None) => None,
        (_, None) => return Err(ApiError::mandatory("price")),
        (_, Some(v)) => Some(steps("price", v, m.spec.tick_size, qd, "PRICE_FILTER")?),
    };
    let lot_filter = if order_type == OrderType::Market {
        "MARKET_LOT_SIZE"
    } else {
        "LOT_SIZE"
    };
    let quantity = match (p.decimal("quantity")?, p.decimal("quoteOrderQty")?) {
        (Some(q), None) => Quantity::Base(steps(
            "quantity",
            q,
            m.spec.lot_size,
            m.base.decimals,
            lot_filter,
        )?),
        (None, Some(a)) if order_type == OrderType::Market => {
            if a.normalize().scale() > qd as u32 {
                return Err(ApiError::too_much_precision("quoteOrderQty"));
            }
            Quantity::Quote(decimal_to_steps(a, 1, qd).map_err(|_| ApiError::filter("NOTIONAL"))?)
        }
        (None, Some(_)) => return Err(ApiError::not_required("quoteOrderQty")),
        (Some(_), Some(_)) => return Err(ApiError::not_required("quoteOrderQty")),
        (None, None) if order_type == OrderType::Market => {
            return Err(ApiError::new(
                400,
                -1102,
                "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
            ))
        }
        (None, None) => return Err(ApiError::mandatory("quantity")),
    };
    // A zero quantity is a filter failure in Binance too.
    if quantity == Quantity::Base(0) {
        return Err(ApiError::filter(lot_filter));
    }
    let client_order_id = client_id(p, "newClientOrderId")?.unwrap_or_else(generated_client_id);
    let resp = match p.get("newOrderRespType") {
        None if order_type == OrderType::LimitMaker => RespType::Ack,
        None => RespType::Full,
        Some("ACK") => RespType::Ack,
        Some("RESULT") => RespType::Result,
        Some("FULL") => RespType::Full,
        Some(_) => {
            return Err(ApiError::new(
                400,
                -1100,
                "Illegal characters found in parameter 'newOrderRespType'; legal range is 'ACK, RESULT, FULL'.",
            ))
        }
    };
    Ok(NewOrder {
        place: PlaceOrder {
            account,
            market: m.id,
            side,
            order_type,
            tif,
            quantity,
            price,
            client_order_id,
            stp: stp(p)?,
        },
        resp,
        symbol: m.spec.symbol.clone(),
    })
}

/// Why an account with a deficit may not buy (nor withdraw).
pub const ACCOUNT_FROZEN: &str = "This account is frozen until its deficit is covered.";

/// The error for an engine rejection of a new order.
pub fn place_rejection(reason: RejectReason, order_type: OrderType) -> ApiError {
    match reason {
        RejectReason::AccountFrozen => ApiError::order_rejected(ACCOUNT_FROZEN),
        RejectReason::UnknownMarket => ApiError::invalid_symbol(),
        RejectReason::UnknownAccount => ApiError::unauthorized(),
        RejectReason::MarketHalted | RejectReason::MarketCancelOnly => {
            ApiError::order_rejected("Market is closed.")
        }
        RejectReason::NotPermitted => {
            ApiError::order_rejected("This symbol is not permitted for this account.")
        }
        RejectReason::PriceFilter => ApiError::filter("PRICE_FILTER"),
        RejectReason::LotSize if order_type == OrderType::Market => {
            ApiError::filter("MARKET_LOT_SIZE")
        }
        RejectReason::LotSize => ApiError::filter("LOT_SIZE"),
        RejectReason::Notional => ApiError::filter("NOTIONAL"),
        RejectReason::PercentPrice => ApiError::filter("PERCENT_PRICE_BY_SIDE"),
        RejectReason::InsufficientBalance => {
            ApiError::order_rejected("Account has insufficient balance for requested action.")
        }
        RejectReason::PostOnlyWouldCross => {
            ApiError::order_rejected("Order would immediately match and take.")
        }
        RejectReason::TooManyOpenOrders => ApiError::filter("MAX_NUM_ORDERS"),
        RejectReason::CapacityExceeded => ApiError::filter("EXCHANGE_MAX_NUM_ORDERS"),
        RejectReason::DuplicateClientOrderId => ApiError::order_rejected("Duplicate order sent."),
        RejectReason::InvalidClientOrderId => {
            ApiError::illegal_chars("newClientOrderId", CLIENT_ID_RANGE)
        }
        RejectReason::InvalidTimeInForce => ApiError::new(400, -1115, "Invalid timeInForce."),
        RejectReason::UnknownOrder => ApiError::no_such_order(),
        _ => ApiError::unsupported_combination(),
    }
}

/// The error for an engine rejection of a cancel or amend.
pub fn cancel_rejection(reason: RejectReason) -> ApiError {
    match reason {
        // An amend that raises a buy of a frozen account.
        RejectReason::AccountFrozen => ApiError::order_rejected(ACCOUNT_FROZEN),
        RejectReason::UnknownMarket => ApiError::invalid_symbol(),
        RejectReason::UnknownAccount => ApiError::unauthorized(),
        RejectReason::MarketHalted => ApiError::new(400, -2011, "Market is closed."),
        RejectReason::MarketCancelOnly => ApiError::order_rejected("Market is closed."),
        RejectReason::InvalidClientOrderId => {
            ApiError::illegal_chars("origClientOrderId", CLIENT_ID_RANGE)
        }
        RejectReason::PriceFilter => ApiError::filter("PRICE_FILTER"),
        RejectReason::LotSize => ApiError::filter("LOT_SIZE"),
        RejectReason::Notional => ApiError::filter("NOTIONAL"),
        RejectReason::PercentPrice => ApiError::filter("PERCENT_PRICE_BY_SIDE"),
        RejectReason::InsufficientBalance => {
            ApiError::order_rejected("Account has insufficient balance for requested action.")
        }
        RejectReason::PostOnlyWouldCross => {
            ApiError::order_rejected("Order would immediately match and take.")
        }
        RejectReason::CapacityExceeded => ApiError::filter("EXCHANGE_MAX_NUM_ORDERS"),
        RejectReason::InvalidAmend => ApiError::new(
            400,
            -2038,
            "Order amend (quantity increase) is not supported.",
        ),
        _ => ApiError::cancel_rejected(),
    }
}

/// The first rejection in a reply, as an API error.
pub fn rejection(reply: &Reply, order_type: OrderType) -> Option<ApiError> {
    reply.events.iter().find_map(|e| match *e {
        Event::OrderRejected { reason, .. } => Some(place_rejection(reason, order_type)),
        Event::CancelRejected { reason, .. } => Some(cancel_rejection(reason)),
        Event::CommandRejected { reason } => Some(place_rejection(reason, order_type)),
        _ => None,
    })
}

fn ms(ts_ns: u64) -> u64 {
    ts_ns / 1_000_000
}

/// A fill as Binance's `fills` entry.
pub fn fill_json(view: &View, m: &MarketView, f: &Fill) -> Value {
    let asset = &view.assets[f.commission_asset as usize];
    json!({
        "price": m.price(f.price),
        "qty": m.qty(f.qty as u128),
        "commission": commission(f.commission, asset.decimals),
        "commissionAsset": asset.symbol,
        "tradeId": f.trade_id,
    })
}

/// A commission, negative for a rebate.
pub fn commission(minor: i128, decimals: u8) -> String {
    let s = quote_decimal(minor.unsigned_abs(), decimals);
    if minor < 0 {
        format!("-{s}")
    } else {
        s
    }
}

fn price_or_zero(m: &MarketView, o: &OrderRec) -> String {
    o.price.map_or_else(|| m.price(0), |p| m.price(p))
}

fn orig_quote(m: &MarketView, o: &OrderRec) -> String {
    m.quote_amount(o.quote_order_qty.unwrap_or(0) as u128)
}

/// The answer to a new order, in the requested response type.
pub fn order_response(
    view: &View,
    m: &MarketView,
    o: &OrderRec,
    fills: &[Fill],
    transact_ms: u64,
    resp: RespType,
) -> Value {
    let mut v = json!({
        "symbol": m.spec.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id.as_str(),
        "transactTime": transact_ms,
    });
    if resp == RespType::Ack {
        return v;
    }
    let obj = v.as_object_mut().expect("object");
    for (k, x) in [
        ("price", json!(price_or_zero(m, o))),
        ("origQty", json!(m.qty(o.orig_qty as u128))),
        ("executedQty", json!(m.qty(o.executed as u128))),
        ("origQuoteOrderQty", json!(orig_quote(m, o))),
        ("cummulativeQuoteQty", json!(m.quote_amount(o.cumm_quote))),
        ("status", json!(o.status.as_str())),
        ("timeInForce", json!(tif_str(o.tif))),
        ("type", json!(type_str(o.order_type))),
        ("side", json!(side_str(o.side))),
        ("workingTime", json!(o.working_time_ms)),
        ("selfTradePreventionMode", json!(stp_str(o.stp))),
    ] {
        obj.insert(k.into(), x);
    }
    if resp == RespType::Full {
        let f: Vec<Value> = fills.iter().map(|f| fill_json(view, m, f)).collect();
        obj.insert("fills".into(), Value::Array(f));
    }
    v
}

/// An order as `GET /api/v3/order` shows it.
pub fn order_json(m: &MarketView, o: &OrderRec) -> Value {
    json!({
        "symbol": m.spec.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id.as_str(),
        "price": price_or_zero(m, o),
        "origQty": m.qty(o.orig_qty as u128),
        "executedQty": m.qty(o.executed as u128),
        "cummulativeQuoteQty": m.quote_amount(o.cumm_quote),
        "status": o.status.as_str(),
        "timeInForce": tif_str(o.tif),
        "type": type_str(o.order_type),
        "side": side_str(o.side),
        "stopPrice": m.price(0),
        "icebergQty": m.qty(0),
        "time": o.time_ms,
        "updateTime": o.update_time_ms,
        "isWorking": true,
        "workingTime": o.working_time_ms,
        "origQuoteOrderQty": orig_quote(m, o),
        "selfTradePreventionMode": stp_str(o.stp),
    })
}

/// An order as a cancel answers it.
pub fn cancel_json(
    m: &MarketView,
    o: &OrderRec,
    cancel_client_id: &str,
    transact_ms: u64,
) -> Value {
    json!({
        "symbol": m.spec.symbol,
        "origClientOrderId": o.client_order_id.as_str(),
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": transact_ms,
        "price": price_or_zero(m, o),
        "origQty": m.qty(o.orig_qty as u128),
        "executedQty": m.qty(o.executed as u128),
        "origQuoteOrderQty": orig_quote(m, o),
        "cummulativeQuoteQty": m.quote_amount(o.cumm_quote),
        "status": o.status.as_str(),
        "timeInForce": tif_str(o.tif),
        "type": type_str(o.order_type),
        "side": side_str(o.side),
        "selfTradePreventionMode": stp_str(o.stp),
    })
}

/// `orderId` or `origClientOrderId` (one is required; `orderId` wins when both are sent).
pub fn order_ref(p: &Params) -> Result<OrderRef, ApiError> {
    if let Some(id) = p.u64("orderId")? {
        return Ok(OrderRef::Id(id));
    }
    match client_id(p, "origClientOrderId")? {
        Some(c) => Ok(OrderRef::Client(c)),
        None => Err(ApiError::new(
            400,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        )),
    }
}

pub fn find_order(view: &View, account: AccountId, r: OrderRef) -> Option<&OrderRec> {
    match r {
        OrderRef::Id(id) => view.order(account, id),
        OrderRef::Client(c) => view.order_by_client(account, &c),
    }
}

/// Places an order (or, with `test`, only checks it): the Binance answer and the account's
/// order counts.
pub async fn place(
    api: &Api,
    account: AccountId,
    p: &Params,
    test: bool,
) -> Result<Value, ApiError> {
    let order = {
        let view = api.view();
        new_order(&view, account, p)?
    };
    if test {
        return Ok(test_response(p));
    }
    let order_type = order.place.order_type;
    let reply = api.execute(Command::PlaceOrder(order.place)).await?;
    if let Some(e) = rejection(&reply, order_type) {
        return Err(e);
    }
    let view = api.view();
    let m = &view.markets[order.place.market as usize];
    let (o, fills) = crate::view::order_from_events(m, &reply.events, reply.ts_ns)
        .ok_or_else(|| ApiError::internal("the order's events are missing"))?;
    Ok(order_response(
        &view,
        m,
        &o,
        &fills,
        ms(reply.ts_ns),
        order.resp,
    ))
}

/// `order/test` answers `{}`, or commission rates with `computeCommissionRates=true`.
fn test_response(p: &Params) -> Value {
    if p.get("computeCommissionRates") == Some("true") {
        json!({
            "standardCommissionForOrder": {"maker": "0.00000000", "taker": "0.00000000"},
            "taxCommissionForOrder": {"maker": "0.00000000", "taker": "0.00000000"},
            "discount": {"enabledForAccount": false, "enabledForSymbol": false,
                         "discountAsset": "", "discount": "0.00000000"},
        })
    } else {
        json!({})
    }
}

/// Cancels one order.
pub async fn cancel(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let (market, target, cancel_id) = {
        let view = api.view();
        let m = market(&view, p)?;
        let target = order_ref(p)?;
        let cancel_id = client_id(p, "newClientOrderId")?.unwrap_or_else(generated_client_id);
        (m.id, target, cancel_id)
    };
    let reply = api
        .execute(Command::CancelOrder {
            account,
            market,
            target,
        })
        .await?;
    cancelled_answer(api, &reply, market, target, account, cancel_id.as_str())
}

fn cancelled_answer(
    api: &Api,
    reply: &Reply,
    market: MarketId,
    target: OrderRef,
    account: AccountId,
    cancel_id: &str,
) -> Result<Value, ApiError> {
    if let Some(e) = rejection(reply, OrderType::Limit) {
        // An order that exists but is closed, or does not exist: both -2011, as Binance.
        return Err(e);
    }
    let view = api.view();
    let m = &view.markets[market as usize];
    let id = reply.events.iter().find_map(|e| match *e {
        Event::OrderCancelled { order_id, .. } => Some(order_id),
        _ => None,
    });
    let o = id
        .and_then(|id| view.order(account, id))
        .or_else(|| find_order(&view, account, target))
        .ok_or_else(ApiError::cancel_rejected)?;
    Ok(cancel_json(m, o, cancel_id, ms(reply.ts_ns)))
}

/// Cancels every open order of the account in the symbol: the cancelled orders.
pub async fn cancel_all(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let market = {
        let view = api.view();
        market(&view, p)?.id
    };
    let reply = api
        .execute(Command::CancelAll {
            account,
            market: Some(market),
        })
        .await?;
    if let Some(e) = rejection(&reply, OrderType::Limit) {
        return Err(e);
    }
    let view = api.view();
    let m = &view.markets[market as usize];
    let out: Vec<Value> = reply
        .events
        .iter()
        .filter_map(|e| match *e {
            Event::OrderCancelled { order_id, .. } => view.order(account, order_id),
            _ => None,
        })
        .map(|o| cancel_json(m, o, generated_client_id().as_str(), ms(reply.ts_ns)))
        .collect();
    if out.is_empty() {
        // Binance answers an empty cancel-all with -2011.
        return Err(ApiError::cancel_rejected());
    }
    Ok(Value::Array(out))
}

/// `GET order`.
pub fn query(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let view = api.view();
    let m = market(&view, p)?;
    let o = find_order(&view, account, order_ref(p)?)
        .filter(|o| o.market == m.id)
        .ok_or_else(ApiError::no_such_order)?;
    Ok(order_json(m, o))
}

/// Open orders of the account, in one symbol or all.
pub fn open_orders(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let view = api.view();
    let only = if p.has("symbol") {
        Some(market(&view, p)?.id)
    } else {
        None
    };
    let out: Vec<Value> = view
        .open_orders(account)
        .into_iter()
        .filter(|o| only.is_none_or(|m| o.market == m))
        .map(|o| order_json(&view.markets[o.market as usize], o))
        .collect();
    Ok(Value::Array(out))
}

/// `allOrders`: open and kept closed orders of one symbol, from `orderId` or in a time
/// range, at most `limit` (default 500, max 1000).
pub fn all_orders(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let view = api.view();
    let m = market(&view, p)?;
    let limit = p.bounded("limit", 500, 1, 1000)? as usize;
    let from_id = p.u64("orderId")?;
    let start = p.u64("startTime")?;
    let end = p.u64("endTime")?;
    let v: Vec<&OrderRec> = view
        .all_orders(account)
        .into_iter()
        .filter(|o| o.market == m.id)
        .filter(|o| from_id.is_none_or(|id| o.order_id >= id))
        .filter(|o| start.is_none_or(|s| o.time_ms >= s))
        .filter(|o| end.is_none_or(|e| o.time_ms <= e))
        .collect();
    let v = crate::params::page(v, limit, from_id.is_some());
    Ok(Value::Array(
        v.into_iter().map(|o| order_json(m, o)).collect(),
    ))
}

/// `myTrades` of one symbol.
pub fn my_trades(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let view = api.view();
    let m = market(&view, p)?;
    let limit = p.bounded("limit", 500, 1, 1000)? as usize;
    let order_id = p.u64("orderId")?;
    let from_id = p.u64("fromId")?;
    let start = p.u64("startTime")?;
    let end = p.u64("endTime")?;
    let Some(acct) = view.accounts.get(&account) else {
        return Ok(json!([]));
    };
    let v: Vec<&Fill> = acct
        .trades
        .iter()
        .filter(|f| f.market == m.id)
        .filter(|f| order_id.is_none_or(|id| f.order_id == id))
        .filter(|f| from_id.is_none_or(|id| f.trade_id >= id))
        .filter(|f| start.is_none_or(|s| f.time_ms >= s))
        .filter(|f| end.is_none_or(|e| f.time_ms <= e))
        .collect();
    let v = crate::params::page(v, limit, from_id.is_some());
    let out = v
        .into_iter()
        .map(|f| {
            let asset = &view.assets[f.commission_asset as usize];
            json!({
                "symbol": m.spec.symbol,
                "id": f.trade_id,
                "orderId": f.order_id,
                "orderListId": -1,
                "price": m.price(f.price),
                "qty": m.qty(f.qty as u128),
                "quoteQty": m.quote_amount(m.notional(f.price, f.qty)),
                "commission": commission(f.commission, asset.decimals),
                "commissionAsset": asset.symbol,
                "time": f.time_ms,
                "isBuyer": f.is_buyer,
                "isMaker": f.is_maker,
                "isBestMatch": true,
            })
        })
        .collect();
    Ok(Value::Array(out))
}

/// `account`: balances of every asset (or the non-zero ones with `omitZeroBalances`).
pub fn account(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let omit_zero = p.bool("omitZeroBalances")?.unwrap_or(false);
    let view = api.view();
    let acct = view.accounts.get(&account);
    // A frozen account still trades (sells), but withdraws nothing until it pays.
    let frozen = acct.is_some_and(|a| a.is_frozen());
    let granted = acct.map_or(0, |a| a.permissions);
    let permissions: Vec<String> = std::iter::once("SPOT".to_string())
        .chain(
            (0..64)
                .filter(|p| granted & (1u64 << p) != 0)
                .map(|p| crate::rest::permission_name(p as fulgur_engine::PermissionId)),
        )
        .collect();
    let balances: Vec<Value> = view
        .assets
        .iter()
        .filter_map(|a| {
            let (free, locked) = acct
                .and_then(|x| x.balances.get(&a.id).copied())
                .unwrap_or((0, 0));
            if omit_zero && free == 0 && locked == 0 {
                return None;
            }
            Some(json!({
                "asset": a.symbol,
                "free": quote_decimal(free as u128, a.decimals),
                "locked": quote_decimal(locked as u128, a.decimals),
            }))
        })
        .collect();
    Ok(json!({
        "makerCommission": 0,
        "takerCommission": 0,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": "0.00000000", "taker": "0.00000000",
                            "buyer": "0.00000000", "seller": "0.00000000"},
        "canTrade": true,
        "canWithdraw": !frozen,
        "canDeposit": api.capital.get().is_some_and(|c| c.enabled()),
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": acct.map_or(0, |a| a.update_time_ms),
        "accountType": "SPOT",
        "balances": balances,
        "permissions": permissions,
        "uid": account,
    }))
}

/// `order/cancelReplace`: cancel, then place, as Binance's STOP_ON_FAILURE /
/// ALLOW_FAILURE modes. Two commands: between them another command may run, as on
/// Binance, where the two are not atomic either.
pub async fn cancel_replace(api: &Api, account: AccountId, p: &Params) -> Result<Value, ApiError> {
    let mode = p.req("cancelReplaceMode")?;
    let allow_failure = match mode {
        "STOP_ON_FAILURE" => false,
        "ALLOW_FAILURE" => true,
        _ => {
            return Err(ApiError::new(
                400,
                -1100,
                "Illegal characters found in parameter 'cancelReplaceMode'; legal range is 'STOP_ON_FAILURE, ALLOW_FAILURE'.",
            ))
        }
    };
    // The new order is checked before anything is cancelled.
    let (order, market, target) = {
        let view = api.view();
        let order = new_order(&view, account, p)?;
        let target = if let Some(id) = p.u64("cancelOrderId")? {
            OrderRef::Id(id)
        } else if let Some(c) = client_id(p, "cancelOrigClientOrderId")? {
            OrderRef::Client(c)
        } else {
            return Err(ApiError::new(
                400,
                -1102,
                "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but both were empty/null!",
            ));
        };
        let market = order.place.market;
        (order, market, target)
    };
    let cancel_id = client_id(p, "cancelNewClientOrderId")?.unwrap_or_else(generated_client_id);
    let creply = api
        .execute(Command::CancelOrder {
            account,
            market,
            target,
        })
        .await?;
    let cancel = cancelled_answer(api, &creply, market, target, account, cancel_id.as_str());
    if let (Err(e), false) = (&cancel, allow_failure) {
        return Err(cancel_replace_error(
            json!({
                "cancelResult": "FAILURE",
                "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": e.body(),
                "newOrderResponse": Value::Null,
            }),
            400,
        ));
    }
    let order_type = order.place.order_type;
    let nreply = api.execute(Command::PlaceOrder(order.place)).await?;
    let new = match rejection(&nreply, order_type) {
        Some(e) => Err(e),
        None => {
            let view = api.view();
            let m = &view.markets[market as usize];
            crate::view::order_from_events(m, &nreply.events, nreply.ts_ns)
                .map(|(o, fills)| {
                    order_response(&view, m, &o, &fills, ms(nreply.ts_ns), order.resp)
                })
                .ok_or_else(|| ApiError::internal("the order's events are missing"))
        }
    };
    match (cancel, new) {
        (Ok(c), Ok(n)) => Ok(json!({
            "cancelResult": "SUCCESS",
            "newOrderResult": "SUCCESS",
            "cancelResponse": c,
            "newOrderResponse": n,
        })),
        (c, n) => {
            let (cr, cb) = match c {
                Ok(v) => ("SUCCESS", v),
                Err(e) => ("FAILURE", e.body()),
            };
            let (nr, nb) = match n {
                Ok(v) => ("SUCCESS", v),
                Err(e) => ("FAILURE", e.body()),
            };
            // Binance: 409 when one of the two succeeded, 400 when both failed.
            let status = if cr == "SUCCESS" || nr == "SUCCESS" {
                409
            } else {
                400
            };
            Err(cancel_replace_error(
                json!({
                    "cancelResult": cr,
                    "newOrderResult": nr,
                    "cancelResponse": cb,
                    "newOrderResponse": nb,
                }),
                status,
            ))
        }
    }
}

/// Binance's -2021/-2022 answer, with the two results in `data`.
fn cancel_replace_error(data: Value, status: u16) -> ApiError {
    let (code, msg) = if status == 409 {
        (-2021, "Order cancel-replace partially failed.")
    } else {
        (-2022, "Order cancel-replace failed.")
    };
    let mut e = ApiError::new(status, code, msg);
    e.data = Some(data);
    e
}

/// `order/amend/keepPriority`: reduces an open order's quantity, keeping its place.
pub async fn amend_keep_priority(
    api: &Api,
    account: AccountId,
    p: &Params,
) -> Result<Value, ApiError> {
    let (market, target, new_qty, before) = {
        let view = api.view();
        let m = market(&view, p)?;
        let target = order_ref(p)?;
        let q = p
            .decimal("newQty")?
            .ok_or_else(|| ApiError::mandatory("newQty"))?;
        let new_qty = steps("newQty", q, m.spec.lot_size, m.base.decimals, "LOT_SIZE")?;
        let before = find_order(&view, account, target)
            .filter(|o| o.market == m.id && o.status.is_open())
            .ok_or_else(ApiError::no_such_order)?;
        if new_qty == 0 || new_qty >= before.orig_qty {
            return Err(ApiError::new(
                400,
                -2038,
                "Order amend (quantity increase) is not supported.",
            ));
        }
        (m.id, target, new_qty, before.order_id)
    };
    let reply = api
        .execute(Command::AmendOrder {
            account,
            market,
            target,
            new_qty,
            new_price: None,
        })
        .await?;
    if let Some(e) = rejection(&reply, OrderType::Limit) {
        return Err(e);
    }
    let view = api.view();
    let m = &view.markets[market as usize];
    let o = view
        .order(account, before)
        .ok_or_else(ApiError::no_such_order)?;
    Ok(json!({
        "transactTime": ms(reply.ts_ns),
        "executionId": reply.seq,
        "amendedOrder": {
            "symbol": m.spec.symbol,
            "orderId": o.order_id,
            "orderListId": -1,
            "origClientOrderId": o.client_order_id.as_str(),
            "clientOrderId": o.client_order_id.as_str(),
            "price": price_or_zero(m, o),
            "qty": m.qty(o.orig_qty as u128),
            "executedQty": m.qty(o.executed as u128),
            "preventedQty": m.qty(0),
            "quoteOrderQty": orig_quote(m, o),
            "cumulativeQuoteQty": m.quote_amount(o.cumm_quote),
            "status": o.status.as_str(),
            "timeInForce": tif_str(o.tif),
            "type": type_str(o.order_type),
            "side": side_str(o.side),
            "workingTime": o.working_time_ms,
            "selfTradePreventionMode": stp_str(o.stp),
        }
    }))
}
