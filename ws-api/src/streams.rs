//! Market-data streams as Binance serves them: `/ws`, `/ws/<streams>` (raw payloads),
//! `/stream?streams=a/b/c` (combined envelope), and live SUBSCRIBE / UNSUBSCRIBE /
//! LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.
//!
//! Fan-out: [`Hub::publish`] runs on the reply router thread with the read model's write lock
//! held, so it never waits on a client: each message is formatted once and handed to every
//! subscriber's bounded queue with `try_send` (a reference-counted clone); a connection whose
//! queue is full is cut off, so a slow client can neither hold memory without bound nor slow
//! anybody else. Time-windowed streams (diff depth, partial depth, tickers, klines)
//! accumulate in `publish` and are flushed by one tokio task every 100 ms.
//!
//! Lock order: the view, then the hub's registry; never the other way round (the registry
//! is taken with the view's write lock held by `publish`).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fulgur_engine::{Event, MarketId, Side, TradeId};
use futures_util::SinkExt;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::rest::{book_ticker_json, depth_json, kline_row, ticker_json};
use crate::view::{Kline, MarketView, View, INTERVALS};
use crate::{now_ms, Api, BatchItem, Feed};

/// Streams one connection may listen to (Binance: 1024).
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;
/// Incoming frames (text, binary, ping, pong) a connection may send per second; one more
/// closes it (Binance: 5).
pub const MAX_INCOMING_PER_S: usize = 5;
/// Open stream connections, all clients together.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Connection attempts per IP per `CONNECT_WINDOW_MS` (Binance: 300 per 5 minutes).
pub const MAX_CONNECTS_PER_IP: u32 = 300;
pub const CONNECT_WINDOW_MS: u64 = 300_000;
/// Largest incoming message or frame (requests are a few hundred bytes).
pub const MAX_INCOMING_BYTES: usize = 64 * 1024;
/// Messages queued for one connection; a full queue means the client reads too slowly.
pub const QUEUE_LEN_MESSAGES: usize = 1024;
/// The server pings every 20 s and closes a connection that has not answered a ping within
/// 60 s; a connection lives at most 24 h (Binance's current values).
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
pub const PONG_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(24 * 3600);
/// The flush cadence of `@100ms` streams; `@1000ms` ones flush every tenth tick.
const FLUSH_INTERVAL_MS: u64 = 100;
const SLOW_EVERY_TICKS: u64 = 10;
/// Queued messages written per flush of the socket.
const WRITE_BATCH_MESSAGES: usize = 256;
/// IPs remembered for the connection-attempt limit before stale ones are pruned.
const MAX_TRACKED_IPS: usize = 65_536;

/// What a stream carries, per market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Trade,
    AggTrade,
    BookTicker,
    /// `@depth` (1000 ms) or `@depth@100ms`.
    Diff {
        fast: bool,
    },
    /// `@depth5/10/20`, optionally `@100ms`.
    Partial {
        levels: u8,
        fast: bool,
    },
    /// Index into `INTERVALS`.
    Kline {
        interval: u8,
    },
    Ticker,
    MiniTicker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stream {
    Market(MarketId, Kind),
    AllTickers,
    AllMiniTickers,
}

/// A stream name as Binance spells it: lowercase symbol, `@`, the kind.
fn parse_stream(view: &View, name: &str) -> Option<Stream> {
    match name {
        "!ticker@arr" => return Some(Stream::AllTickers),
        "!miniTicker@arr" => return Some(Stream::AllMiniTickers),
        _ => {}
    }
    let (symbol, kind) = name.split_once('@')?;
    if symbol.is_empty() || symbol.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let market = view.market(&symbol.to_ascii_uppercase())?.id;
    let kind = match kind {
        "trade" => Kind::Trade,
        "aggTrade" => Kind::AggTrade,
        "bookTicker" => Kind::BookTicker,
        "ticker" => Kind::Ticker,
        "miniTicker" => Kind::MiniTicker,
        "depth" => Kind::Diff { fast: false },
        "depth@100ms" => Kind::Diff { fast: true },
        _ => {
            if let Some(iv) = kind.strip_prefix("kline_") {
                let i = crate::view::interval_index(iv)?;
                Kind::Kline { interval: i as u8 }
            } else {
                let rest = kind.strip_prefix("depth")?;
                let (levels, fast) = match rest.split_once('@') {
                    Some((l, "100ms")) => (l, true),
                    Some(_) => return None,
                    None => (rest, false),
                };
                let levels = match levels {
                    "5" => 5,
                    "10" => 10,
                    "20" => 20,
                    _ => return None,
                };
                Kind::Partial { levels, fast }
            }
        }
    };
    Some(Stream::Market(market, kind))
}

/// One connection's outgoing queue, and the way to cut it off.
struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    kicked: AtomicBool,
    kick: Notify,
}

impl Outbox {
    fn kick(&self) {
        if !self.kicked.swap(true, Ordering::AcqRel) {
            // `notify_one` keeps a permit if the connection is not waiting right now.
            self.kick.notify_one();
        }
    }
}

struct Sub {
    conn: u64,
    out: Arc<Outbox>,
    combined: bool,
}

/// A stream with subscribers.
struct Topic {
    name: Arc<str>,
    subs: Vec<Sub>,
    /// A subscriber joined: time-windowed streams send at their next flush even if nothing
    /// changed, so it does not wait for a change for its first message.
    fresh: bool,
    /// Partial depth: the book's update id last sent.
    sent_update_id: u64,
    /// Kline: open time of the kline last sent, and whether its closing (`x: true`) was.
    kline: Option<(u64, bool)>,
}

impl Topic {
    /// Hands one message to every subscriber: the raw payload, or the combined envelope,
    /// each built at most once. Subscribers whose queue is full are cut off.
    fn deliver(&mut self, raw: String) {
        let Topic { name, subs, .. } = self;
        let combined = subs
            .iter()
            .any(|s| s.combined)
            .then(|| Utf8Bytes::from(format!("{{\"stream\":\"{name}\",\"data\":{raw}}}")));
        let plain = subs
            .iter()
            .any(|s| !s.combined)
            .then(|| Utf8Bytes::from(raw));
        subs.retain(|s| {
            if s.out.kicked.load(Ordering::Acquire) {
                return false;
            }
            let msg = if s.combined { &combined } else { &plain };
            let Some(msg) = msg.clone() else {
                return true;
            };
            match s.out.tx.try_send(msg) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.out.kick();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// Book levels changed in one window of a diff-depth stream: final quantity per level.
#[derive(Default)]
struct DiffWindow {
    /// A `@depth` stream of this speed has subscribers: accumulate.
    on: bool,
    /// First and last `BookLevel` update id in the window (0: empty).
    first_id: u64,
    last_id: u64,
    bids: BTreeMap<u64, u64>,
    asks: BTreeMap<u64, u64>,
}

impl DiffWindow {
    fn add(&mut self, side: Side, price: u64, lots: u64, update_id: u64) {
        if self.first_id == 0 {
            self.first_id = update_id;
        }
        self.last_id = update_id;
        match side {
            Side::Buy => self.bids.insert(price, lots),
            Side::Sell => self.asks.insert(price, lots),
        };
    }

    /// The window's content, leaving it empty (and still on).
    fn take(&mut self) -> DiffWindow {
        std::mem::replace(
            self,
            DiffWindow {
                on: self.on,
                ..DiffWindow::default()
            },
        )
    }
}

/// What `publish` accumulates per market between flushes.
#[derive(Default)]
struct MarketAcc {
    /// `[1000 ms, 100 ms]`.
    diff: [DiffWindow; 2],
    /// Best bid, its lots, best ask, its lots: last seen, for `@bookTicker`.
    top: Option<(u64, u64, u64, u64)>,
    /// A trade or a change of the top of book since the last ticker flush.
    ticker_dirty: bool,
    /// A trade since the last flush (mini ticker, klines).
    traded: bool,
    /// In the batch being published: the book changed / the first trade id.
    touched: bool,
    first_trade: Option<TradeId>,
}

#[derive(Default)]
struct Registry {
    topics: HashMap<Stream, Topic>,
    markets: Vec<MarketAcc>,
    /// Markets touched by the batch being published (kept for its capacity).
    touched: Vec<MarketId>,
}

impl Registry {
    fn add(&mut self, stream: Stream, name: &Arc<str>, sub: Sub) {
        if let Stream::Market(m, Kind::Diff { fast }) = stream {
            if self.markets.len() <= m as usize {
                self.markets.resize_with(m as usize + 1, MarketAcc::default);
            }
            self.markets[m as usize].diff[fast as usize].on = true;
        }
        let topic = self.topics.entry(stream).or_insert_with(|| Topic {
            name: name.clone(),
            subs: Vec::new(),
            fresh: false,
            sent_update_id: 0,
            kline: None,
        });
        topic.fresh = true;
        topic.subs.push(sub);
    }

    fn remove(&mut self, stream: Stream, conn: u64) {
        let Some(topic) = self.topics.get_mut(&stream) else {
            return;
        };
        topic.subs.retain(|s| s.conn != conn);
        if topic.subs.is_empty() {
            self.topics.remove(&stream);
            if let Stream::Market(m, Kind::Diff { fast }) = stream {
                if let Some(acc) = self.markets.get_mut(m as usize) {
                    acc.diff[fast as usize] = DiffWindow::default();
                }
            }
        }
    }

    fn topic(&mut self, stream: Stream) -> Option<&mut Topic> {
        self.topics.get_mut(&stream).filter(|t| !t.subs.is_empty())
    }
}

/// Fans market data out to stream subscribers.
#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    connections: AtomicUsize,
    flusher_started: AtomicBool,
    /// IP → (window start ms, connection attempts in it).
    attempts: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open stream connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Called with the write lock on the view held, after `items` were applied to it.
    /// Must never block or wait on a subscriber.
    pub fn publish(&self, view: &View, items: &[BatchItem<'_>]) {
        let mut guard = self.lock();
        let reg = &mut *guard;
        if reg.markets.len() < view.markets.len() {
            reg.markets
                .resize_with(view.markets.len(), MarketAcc::default);
        }
        let now = now_ms();
        for it in items {
            let time_ms = it.ts_ns / 1_000_000;
            for e in it.events {
                match *e {
                    Event::BookLevel {
                        market,
                        side,
                        price,
                        total_qty,
                        update_id,
                        ..
                    } => {
                        let Some(acc) = reg.markets.get_mut(market as usize) else {
                            continue;
                        };
                        if !acc.touched {
                            acc.touched = true;
                            reg.touched.push(market);
                        }
                        for w in acc.diff.iter_mut().filter(|w| w.on) {
                            w.add(side, price, total_qty, update_id);
                        }
                    }
                    Event::Trade {
                        trade_id,
                        market,
                        price,
                        qty,
                        maker_order,
                        taker_order,
                        taker_side,
                        ..
                    } => {
                        let (Some(acc), Some(m)) = (
                            reg.markets.get_mut(market as usize),
                            view.markets.get(market as usize),
                        ) else {
                            continue;
                        };
                        if !acc.touched {
                            acc.touched = true;
                            reg.touched.push(market);
                        }
                        acc.first_trade.get_or_insert(trade_id);
                        acc.traded = true;
                        acc.ticker_dirty = true;
                        if let Some(t) = reg.topic(Stream::Market(market, Kind::Trade)) {
                            let buys = taker_side == Side::Buy;
                            let (buyer, seller) = if buys {
                                (taker_order, maker_order)
                            } else {
                                (maker_order, taker_order)
                            };
                            t.deliver(format!(
                                "{{\"e\":\"trade\",\"E\":{now},\"s\":\"{}\",\"t\":{trade_id},\
                                 \"p\":\"{}\",\"q\":\"{}\",\"b\":{buyer},\"a\":{seller},\
                                 \"T\":{time_ms},\"m\":{},\"M\":true}}",
                                m.spec.symbol,
                                m.price(price),
                                m.qty(qty as u128),
                                !buys,
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        let touched = std::mem::take(&mut reg.touched);
        for &market in &touched {
            let m = &view.markets[market as usize];
            let acc = &mut reg.markets[market as usize];
            acc.touched = false;
            let first_trade = acc.first_trade.take();
            let (bid, bid_q) = m.best_bid().unwrap_or((0, 0));
            let (ask, ask_q) = m.best_ask().unwrap_or((0, 0));
            let top = Some((bid, bid_q, ask, ask_q));
            let top_changed = acc.top != top;
            if top_changed {
                acc.top = top;
                acc.ticker_dirty = true;
                if let Some(t) = reg.topic(Stream::Market(market, Kind::BookTicker)) {
                    t.deliver(book_ticker_msg(m));
                }
            }
            if let (Some(first), Some(t)) = (
                first_trade,
                reg.topic(Stream::Market(market, Kind::AggTrade)),
            ) {
                // Aggregates never span commands, so this batch's are complete.
                let new = m
                    .agg_trades
                    .iter()
                    .rev()
                    .take_while(|a| a.first_trade >= first)
                    .count();
                for a in m.agg_trades.iter().skip(m.agg_trades.len() - new) {
                    t.deliver(format!(
                        "{{\"e\":\"aggTrade\",\"E\":{now},\"s\":\"{}\",\"a\":{},\"p\":\"{}\",\
                         \"q\":\"{}\",\"f\":{},\"l\":{},\"T\":{},\"m\":{},\"M\":true}}",
                        m.spec.symbol,
                        a.id,
                        m.price(a.price),
                        m.qty(a.qty as u128),
                        a.first_trade,
                        a.last_trade,
                        a.time_ms,
                        a.is_buyer_maker,
                    ));
                }
            }
        }
        reg.touched = touched;
        reg.touched.clear();
    }

    /// Sends what the time-windowed streams accumulated: `@100ms` ones every call, the
    /// 1000 ms ones (and tickers, klines) when `slow`.
    fn flush(&self, view: &View, slow: bool, now: u64) {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let Registry {
            topics, markets, ..
        } = reg;
        for (i, acc) in markets.iter_mut().enumerate() {
            let Some(m) = view.markets.get(i) else {
                continue;
            };
            for fast in [true, false] {
                let w = &mut acc.diff[fast as usize];
                if (!fast && !slow) || w.first_id == 0 {
                    continue;
                }
                let w = w.take();
                let stream = Stream::Market(i as MarketId, Kind::Diff { fast });
                if let Some(t) = topics.get_mut(&stream) {
                    t.deliver(diff_msg(m, &w, now));
                }
            }
        }
        // Tickers are built once per market and flush, for every stream that wants them.
        let mut tickers: HashMap<(MarketId, bool), String> = HashMap::new();
        let mut ticker = |m: &MarketView, full: bool| -> String {
            tickers
                .entry((m.id, full))
                .or_insert_with(|| ticker_msg(m, now, full))
                .clone()
        };
        for (stream, t) in topics.iter_mut() {
            if t.subs.is_empty() {
                continue;
            }
            match *stream {
                Stream::Market(mi, kind) => {
                    let (Some(m), Some(acc)) =
                        (view.markets.get(mi as usize), markets.get(mi as usize))
                    else {
                        continue;
                    };
                    match kind {
                        // Only when the book changed (or for a new subscriber).
                        Kind::Partial { levels, fast }
                            if (fast || slow) && (t.fresh || t.sent_update_id != m.update_id) =>
                        {
                            t.sent_update_id = m.update_id;
                            t.fresh = false;
                            t.deliver(partial_msg(m, levels as usize));
                        }
                        Kind::Ticker | Kind::MiniTicker if slow => {
                            let full = kind == Kind::Ticker;
                            let dirty = if full { acc.ticker_dirty } else { acc.traded };
                            if t.fresh || dirty {
                                t.fresh = false;
                                t.deliver(ticker(m, full));
                            }
                        }
                        Kind::Kline { interval } if slow => {
                            flush_kline(t, m, interval as usize, acc.traded, now);
                            t.fresh = false;
                        }
                        _ => {}
                    }
                }
                Stream::AllTickers | Stream::AllMiniTickers if slow => {
                    let full = *stream == Stream::AllTickers;
                    let mut arr = String::from("[");
                    for (m, acc) in view.markets.iter().zip(markets.iter()) {
                        let dirty = if full { acc.ticker_dirty } else { acc.traded };
                        if t.fresh || dirty {
                            if arr.len() > 1 {
                                arr.push(',');
                            }
                            arr.push_str(&ticker(m, full));
                        }
                    }
                    t.fresh = false;
                    if arr.len() > 1 {
                        arr.push(']');
                        t.deliver(arr);
                    }
                }
                _ => {}
            }
        }
        if slow {
            for acc in markets.iter_mut() {
                acc.ticker_dirty = false;
                acc.traded = false;
            }
        }
    }

    /// Counts a connection attempt: `Err` past the total or the per-IP limit.
    fn admit(&self, ip: IpAddr, now: u64) -> Result<(), ApiError> {
        if self.connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            return Err(ApiError::new(
                503,
                -1003,
                "Too many connections; please try again later.",
            ));
        }
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if attempts.len() >= MAX_TRACKED_IPS {
            attempts.retain(|_, (start, _)| now.saturating_sub(*start) < CONNECT_WINDOW_MS);
            // Still full: forget everyone rather than grow without bound (the total limit
            // still holds).
            if attempts.len() >= MAX_TRACKED_IPS {
                attempts.clear();
            }
        }
        let e = attempts.entry(ip).or_insert((now, 0));
        if now.saturating_sub(e.0) >= CONNECT_WINDOW_MS {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 > MAX_CONNECTS_PER_IP {
            return Err(ApiError::new(
                429,
                -1003,
                format!(
                    "Too many connection attempts; at most {MAX_CONNECTS_PER_IP} per IP per 5 minutes."
                ),
            ));
        }
        Ok(())
    }
}

/// Sends a kline stream's update: the closing of the kline last sent once its interval is
/// over (`x: true`), then the current kline if it changed (or the subscriber is new). A
/// kline that opened and closed between two flushes is sent once, closed.
fn flush_kline(t: &mut Topic, m: &MarketView, i: usize, traded: bool, now: u64) {
    let len_ms = INTERVALS[i].1;
    let series = &m.klines[i];
    let last = series.back();
    if let Some((open, false)) = t.kline {
        let over = open + len_ms <= now || last.is_some_and(|k| k.open_time_ms > open);
        if over {
            if let Some(k) = series.iter().rev().find(|k| k.open_time_ms == open) {
                t.deliver(kline_msg(m, k, i, true, now));
            }
            t.kline = Some((open, true));
        }
    }
    let Some(k) = last else {
        return;
    };
    let closed = k.open_time_ms + len_ms <= now;
    match t.kline {
        Some((open, _)) if open == k.open_time_ms => {
            if !closed && (traded || t.fresh) {
                t.deliver(kline_msg(m, k, i, false, now));
            }
        }
        _ => {
            if !closed || traded {
                t.deliver(kline_msg(m, k, i, closed, now));
                t.kline = Some((k.open_time_ms, closed));
            }
        }
    }
}

fn levels_json(out: &mut String, m: &MarketView, levels: &BTreeMap<u64, u64>, best_high: bool) {
    out.push('[');
    let mut first = true;
    let mut put = |p: u64, q: u64| {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "[\"{}\",\"{}\"]", m.price(p), m.qty(q as u128));
    };
    if best_high {
        levels.iter().rev().for_each(|(p, q)| put(*p, *q));
    } else {
        levels.iter().for_each(|(p, q)| put(*p, *q));
    }
    out.push(']');
}

fn diff_msg(m: &MarketView, w: &DiffWindow, now: u64) -> String {
    let mut s = String::with_capacity(96 + 48 * (w.bids.len() + w.asks.len()));
    let _ = write!(
        s,
        "{{\"e\":\"depthUpdate\",\"E\":{now},\"s\":\"{}\",\"U\":{},\"u\":{},\"b\":",
        m.spec.symbol, w.first_id, w.last_id
    );
    levels_json(&mut s, m, &w.bids, true);
    s.push_str(",\"a\":");
    levels_json(&mut s, m, &w.asks, false);
    s.push('}');
    s
}

/// The REST depth answer, keys in Binance's order.
fn partial_msg(m: &MarketView, levels: usize) -> String {
    let v = depth_json(m, levels);
    format!(
        "{{\"lastUpdateId\":{},\"bids\":{},\"asks\":{}}}",
        v["lastUpdateId"], v["bids"], v["asks"]
    )
}

fn book_ticker_msg(m: &MarketView) -> String {
    let v = book_ticker_json(m);
    format!(
        "{{\"u\":{},\"s\":{},\"b\":{},\"B\":{},\"a\":{},\"A\":{}}}",
        m.update_id, v["symbol"], v["bidPrice"], v["bidQty"], v["askPrice"], v["askQty"]
    )
}

fn kline_msg(m: &MarketView, k: &Kline, i: usize, closed: bool, now: u64) -> String {
    let (name, len_ms) = INTERVALS[i];
    let r = kline_row(m, k, len_ms);
    format!(
        "{{\"e\":\"kline\",\"E\":{now},\"s\":\"{sym}\",\"k\":{{\"t\":{},\"T\":{},\"s\":\"{sym}\",\
         \"i\":\"{name}\",\"f\":{},\"L\":{},\"o\":{},\"c\":{},\"h\":{},\"l\":{},\"v\":{},\"n\":{},\
         \"x\":{closed},\"q\":{},\"V\":{},\"Q\":{},\"B\":\"0\"}}}}",
        r[0],
        r[6],
        k.first_trade,
        k.last_trade,
        r[1],
        r[4],
        r[2],
        r[3],
        r[5],
        r[8],
        r[7],
        r[9],
        r[10],
        sym = m.spec.symbol,
    )
}

/// `24hrTicker` (full) or `24hrMiniTicker`, from the REST ticker.
fn ticker_msg(m: &MarketView, now: u64, full: bool) -> String {
    let v = ticker_json(m, now, full);
    if full {
        format!(
            "{{\"e\":\"24hrTicker\",\"E\":{now},\"s\":{},\"p\":{},\"P\":{},\"w\":{},\"x\":{},\
             \"c\":{},\"Q\":{},\"b\":{},\"B\":{},\"a\":{},\"A\":{},\"o\":{},\"h\":{},\"l\":{},\
             \"v\":{},\"q\":{},\"O\":{},\"C\":{},\"F\":{},\"L\":{},\"n\":{}}}",
            v["symbol"],
            v["priceChange"],
            v["priceChangePercent"],
            v["weightedAvgPrice"],
            v["prevClosePrice"],
            v["lastPrice"],
            v["lastQty"],
            v["bidPrice"],
            v["bidQty"],
            v["askPrice"],
            v["askQty"],
            v["openPrice"],
            v["highPrice"],
            v["lowPrice"],
            v["volume"],
            v["quoteVolume"],
            v["openTime"],
            v["closeTime"],
            v["firstId"],
            v["lastId"],
            v["count"],
        )
    } else {
        format!(
            "{{\"e\":\"24hrMiniTicker\",\"E\":{now},\"s\":{},\"c\":{},\"o\":{},\"h\":{},\"l\":{},\
             \"v\":{},\"q\":{}}}",
            v["symbol"],
            v["lastPrice"],
            v["openPrice"],
            v["highPrice"],
            v["lowPrice"],
            v["volume"],
            v["quoteVolume"],
        )
    }
}

/// The flusher: one task for the whole hub, started with the first connection (the router
/// is built before the runtime runs). It holds the feed weakly, so it ends with it.
async fn flush_loop(feed: Weak<Feed>) {
    let mut tick = tokio::time::interval(Duration::from_millis(FLUSH_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(feed) = feed.upgrade() else {
            return;
        };
        n += 1;
        let view = feed.view();
        feed.market
            .flush(&view, n.is_multiple_of(SLOW_EVERY_TICKS), now_ms());
    }
}

/// `/ws`, `/ws/<streams>`, `/stream?streams=`.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/ws", get(ws_bare))
        .route("/ws/", get(ws_bare))
        .route("/ws/{*streams}", get(ws_raw))
        .route("/stream", get(ws_combined))
        .with_state(api)
}

/// The client's IP as the server saw it (loopback if the server did not say).
struct PeerIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip()),
        ))
    }
}

async fn ws_bare(State(api): State<Arc<Api>>, ip: PeerIp, ws: WebSocketUpgrade) -> Response {
    open(api, ip.0, ws, "", false)
}

async fn ws_raw(
    State(api): State<Arc<Api>>,
    Path(streams): Path<String>,
    ip: PeerIp,
    ws: WebSocketUpgrade,
) -> Response {
    open(api, ip.0, ws, &streams, false)
}

async fn ws_combined(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
    ip: PeerIp,
    ws: WebSocketUpgrade,
) -> Response {
    let query = query.unwrap_or_default();
    let streams = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "streams")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    open(api, ip.0, ws, &streams, true)
}

fn invalid_stream() -> ApiError {
    ApiError::new(400, 2, "Invalid request: invalid stream")
}

fn too_many_streams() -> ApiError {
    ApiError::new(
        400,
        2,
        format!("Invalid request: too many streams (at most {MAX_STREAMS_PER_CONNECTION} per connection)"),
    )
}

/// Checks the limits and the streams named in the URL before upgrading, so a bad request
/// is an HTTP error the client sees at once.
fn open(api: Arc<Api>, ip: IpAddr, ws: WebSocketUpgrade, path: &str, combined: bool) -> Response {
    if let Err(e) = api.feed.market.admit(ip, now_ms()) {
        return e.into_response();
    }
    // `/ws/<listenKey>`: the account's user-data events, as Binance's listen-key streams.
    if !combined && !path.contains('/') {
        if let Some(account) = api.feed.users.listen_key_account(path) {
            let key = path.to_string();
            return ws
                .max_message_size(MAX_INCOMING_BYTES)
                .max_frame_size(MAX_INCOMING_BYTES)
                .read_buffer_size(crate::WS_READ_BUFFER_BYTES)
                .on_upgrade(move |socket| serve_user(api, socket, key, account));
        }
    }
    let mut streams: Vec<(Stream, Arc<str>)> = Vec::new();
    {
        let view = api.view();
        // A number is a connection's name, not a stream: ccxt opens `/ws/0`, `/ws/1`, ...
        // and subscribes on them, as Binance allows.
        for name in path
            .split('/')
            .filter(|s| !s.is_empty() && !s.bytes().all(|c| c.is_ascii_digit()))
        {
            let Some(s) = parse_stream(&view, name) else {
                return invalid_stream().into_response();
            };
            if !streams.iter().any(|(x, _)| *x == s) {
                streams.push((s, Arc::from(name)));
            }
        }
    }
    if streams.len() > MAX_STREAMS_PER_CONNECTION {
        return too_many_streams().into_response();
    }
    ws.max_message_size(MAX_INCOMING_BYTES)
        .max_frame_size(MAX_INCOMING_BYTES)
        .read_buffer_size(crate::WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(api, socket, streams, combined))
}

/// One connection's subscriptions. Dropping it unsubscribes everything.
struct Conn {
    id: u64,
    feed: Arc<Feed>,
    out: Arc<Outbox>,
    /// In subscription order (LIST_SUBSCRIPTIONS).
    streams: Vec<(Stream, Arc<str>)>,
    combined: bool,
}

impl Conn {
    fn subscribe(&mut self, new: Vec<(Stream, Arc<str>)>) {
        let mut reg = self.feed.market.lock();
        for (s, name) in new {
            if self.streams.iter().any(|(x, _)| *x == s) {
                continue;
            }
            let sub = Sub {
                conn: self.id,
                out: self.out.clone(),
                combined: self.combined,
            };
            reg.add(s, &name, sub);
            self.streams.push((s, name));
        }
    }

    fn unsubscribe(&mut self, gone: &[Stream]) {
        let mut reg = self.feed.market.lock();
        let id = self.id;
        self.streams.retain(|(s, _)| {
            let keep = !gone.contains(s);
            if !keep {
                reg.remove(*s, id);
            }
            keep
        });
    }

    fn set_combined(&mut self, combined: bool) {
        self.combined = combined;
        let mut reg = self.feed.market.lock();
        for (s, _) in &self.streams {
            if let Some(t) = reg.topics.get_mut(s) {
                for sub in t.subs.iter_mut().filter(|x| x.conn == self.id) {
                    sub.combined = combined;
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let gone: Vec<Stream> = self.streams.iter().map(|(s, _)| *s).collect();
        self.unsubscribe(&gone);
        self.feed.market.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most `MAX_INCOMING_PER_S` frames in any second.
struct IncomingRate {
    recent: [Option<Instant>; MAX_INCOMING_PER_S],
    next: usize,
}

impl IncomingRate {
    fn new() -> IncomingRate {
        IncomingRate {
            recent: [None; MAX_INCOMING_PER_S],
            next: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        // The slot to overwrite holds the frame `MAX_INCOMING_PER_S` frames back.
        let ok =
            self.recent[self.next].is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        self.recent[self.next] = Some(now);
        self.next = (self.next + 1) % MAX_INCOMING_PER_S;
        ok
    }
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 0..WRITE_BATCH_MESSAGES {
        match rx.try_recv() {
            Ok(m) => socket.feed(Message::Text(m)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

/// A listen-key connection: the account's user events, bare, until the key expires or is
/// deleted (checked every few seconds), the client goes, or it cannot keep up.
async fn serve_user(api: Arc<Api>, mut socket: WebSocket, key: String, account: u32) {
    let Some(mut sub) = api.feed.users.subscribe(account, QUEUE_LEN_MESSAGES) else {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: 1013,
                reason: Utf8Bytes::from_static("too many user-data subscribers"),
            })))
            .await;
        return;
    };
    let started = Instant::now();
    let mut ping = tokio::time::interval_at(started + PING_INTERVAL, PING_INTERVAL);
    let mut check_key = tokio::time::interval(Duration::from_secs(5));
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            ev = sub.rx.recv() => match ev {
                Some(text) => {
                    if socket.send(Message::Text(Utf8Bytes::from(&*text))).await.is_err() {
                        return;
                    }
                }
                // Cut off for being slow, or the hub went away.
                None => break,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Nothing is asked on a user stream; anything else is ignored.
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if last_pong.elapsed() >= PONG_TIMEOUT || started.elapsed() >= MAX_CONNECTION_AGE {
                    break;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = check_key.tick() => {
                if api.feed.users.listen_key_account(&key) != Some(account) {
                    let _ = socket
                        .send(Message::Text(Utf8Bytes::from(
                            format!(r#"{{"e":"listenKeyExpired","E":{},"listenKey":"{key}"}}"#, now_ms()),
                        )))
                        .await;
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn serve(
    api: Arc<Api>,
    mut socket: WebSocket,
    streams: Vec<(Stream, Arc<str>)>,
    combined: bool,
) {
    let feed = api.feed.clone();
    let hub = &feed.market;
    hub.connections.fetch_add(1, Ordering::Relaxed);
    if !hub.flusher_started.swap(true, Ordering::AcqRel) {
        tokio::spawn(flush_loop(Arc::downgrade(&feed)));
    }
    let (tx, mut rx) = mpsc::channel(QUEUE_LEN_MESSAGES);
    let out = Arc::new(Outbox {
        tx,
        kicked: AtomicBool::new(false),
        kick: Notify::new(),
    });
    let mut conn = Conn {
        id: hub.next_conn.fetch_add(1, Ordering::Relaxed),
        feed: feed.clone(),
        out: out.clone(),
        streams: Vec::new(),
        combined,
    };
    conn.subscribe(streams);

    let started = Instant::now();
    let mut ping = tokio::time::interval_at(started + PING_INTERVAL, PING_INTERVAL);
    // When the oldest unanswered ping went out.
    let mut ping_unanswered: Option<Instant> = None;
    let mut rate = IncomingRate::new();
    let age_limit = tokio::time::sleep_until(started + MAX_CONNECTION_AGE);
    tokio::pin!(age_limit);

    let end = loop {
        tokio::select! {
            _ = out.kick.notified() => {
                break End::Close(close_frame(1008, "Too much data queued: the client reads too slowly."));
            }
            Some(first) = rx.recv() => {
                tokio::select! {
                    r = write_batch(&mut socket, first, &mut rx) => if r.is_err() { break End::Quiet },
                    // Cut off while blocked writing: nothing more can be written cleanly.
                    _ = out.kick.notified() => break End::Drop,
                }
            }
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { break End::Quiet };
                if !rate.allow(Instant::now()) {
                    break End::Close(close_frame(1008, "Too many requests"));
                }
                let text = match msg {
                    Message::Text(t) => t.as_str().to_owned(),
                    Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    Message::Pong(_) => {
                        ping_unanswered = None;
                        continue;
                    }
                    // tungstenite answers pings and close frames itself.
                    Message::Ping(_) => continue,
                    Message::Close(_) => break End::Quiet,
                };
                let reply = handle_request(&api, &mut conn, &text);
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break End::Quiet;
                }
            }
            _ = ping.tick() => {
                let now = Instant::now();
                if ping_unanswered.is_some_and(|t| now.duration_since(t) >= PONG_TIMEOUT) {
                    break End::Close(close_frame(1008, "Pong timeout"));
                }
                ping_unanswered.get_or_insert(now);
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break End::Quiet;
                }
            }
            _ = &mut age_limit => {
                break End::Close(close_frame(1000, "Connection age limit (24 h) reached"));
            }
        }
    };
    drop(conn);
    let grace = Duration::from_secs(1);
    match end {
        End::Close(frame) => {
            let _ = tokio::time::timeout(grace, socket.send(frame)).await;
        }
        // Flushes tungstenite's own reply to a client's close frame, if any.
        End::Quiet => {
            let _ = tokio::time::timeout(grace, socket.flush()).await;
        }
        End::Drop => {}
    }
}

/// How a connection ends.
enum End {
    /// The client closed or the socket failed.
    Quiet,
    /// We close, saying why.
    Close(Message),
    /// We drop the socket: it cannot take even a close frame.
    Drop,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Method {
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
    SetProperty,
    GetProperty,
}

#[derive(serde::Deserialize)]
struct Request {
    method: Method,
    #[serde(default)]
    params: Option<Vec<Value>>,
}

fn error_reply(code: i32, msg: &str, id: &Value) -> String {
    let msg = Value::String(msg.to_owned());
    format!("{{\"error\":{{\"code\":{code},\"msg\":{msg}}},\"id\":{id}}}")
}

/// A request id as Binance takes it: a 64-bit signed integer, an alphanumeric string of at
/// most 36 characters, or null.
fn valid_id(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::Number(n) => n.is_i64(),
        Value::String(s) => s.len() <= 36 && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        _ => false,
    }
}

/// Answers one control message; errors are messages too, and the connection lives on.
fn handle_request(api: &Api, conn: &mut Conn, text: &str) -> String {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return error_reply(3, &format!("Invalid JSON: {e}"), &Value::Null),
    };
    // serde's own texts, as Binance's server answers them ("unknown variant ...").
    let req: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return error_reply(2, &format!("Invalid request: {e}"), &Value::Null),
    };
    let id = match v.get("id") {
        Some(id) if valid_id(id) => id.clone(),
        _ => {
            return error_reply(
                2,
                "Invalid request: request ID must be an unsigned integer",
                &Value::Null,
            )
        }
    };
    let params = req.params.unwrap_or_default();
    let ok = |result: Value| format!("{{\"result\":{result},\"id\":{id}}}");
    match req.method {
        Method::Subscribe | Method::Unsubscribe => {
            let mut streams = Vec::with_capacity(params.len());
            {
                let view = api.view();
                for p in &params {
                    let Some(s) = p.as_str().and_then(|n| Some((parse_stream(&view, n)?, n)))
                    else {
                        return error_reply(2, "Invalid request: invalid stream", &id);
                    };
                    streams.push((s.0, Arc::<str>::from(s.1)));
                }
            }
            if matches!(req.method, Method::Unsubscribe) {
                let gone: Vec<Stream> = streams.iter().map(|(s, _)| *s).collect();
                conn.unsubscribe(&gone);
                return ok(Value::Null);
            }
            let mut total = conn.streams.len();
            for (i, (s, _)) in streams.iter().enumerate() {
                let dup = conn.streams.iter().any(|(x, _)| x == s)
                    || streams[..i].iter().any(|(x, _)| x == s);
                total += usize::from(!dup);
            }
            if total > MAX_STREAMS_PER_CONNECTION {
                return error_reply(2, &too_many_streams().msg, &id);
            }
            conn.subscribe(streams);
            ok(Value::Null)
        }
        Method::ListSubscriptions => {
            if !params.is_empty() {
                return error_reply(2, "Invalid request: too many parameters", &id);
            }
            let names: Vec<Value> = conn
                .streams
                .iter()
                .map(|(_, n)| Value::String(n.to_string()))
                .collect();
            ok(Value::Array(names))
        }
        Method::SetProperty | Method::GetProperty => {
            let set = matches!(req.method, Method::SetProperty);
            if params.len() > if set { 2 } else { 1 } {
                return error_reply(2, "Invalid request: too many parameters", &id);
            }
            let Some(name) = params.first().and_then(Value::as_str) else {
                return error_reply(2, "Invalid request: property name must be a string", &id);
            };
            if name != "combined" {
                return error_reply(0, "Unknown property", &id);
            }
            if !set {
                return ok(Value::Bool(conn.combined));
            }
            let Some(on) = params.get(1).and_then(Value::as_bool) else {
                return error_reply(1, "Invalid value type: expected Boolean", &id);
            };
            conn.set_combined(on);
            ok(Value::Null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_rate_allows_five_per_second() {
        let mut r = IncomingRate::new();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(r.allow(t0 + Duration::from_millis(i * 10)));
        }
        assert!(!r.allow(t0 + Duration::from_millis(900)));
        let mut r = IncomingRate::new();
        for i in 0..20 {
            assert!(r.allow(t0 + Duration::from_millis(i * 200)));
        }
    }

    #[test]
    fn diff_window_keeps_final_quantity_and_id_range() {
        let mut w = DiffWindow {
            on: true,
            ..DiffWindow::default()
        };
        w.add(Side::Buy, 100, 5, 7);
        w.add(Side::Buy, 100, 0, 8);
        w.add(Side::Sell, 101, 3, 9);
        let t = w.take();
        assert_eq!((t.first_id, t.last_id), (7, 9));
        assert_eq!(t.bids.get(&100), Some(&0));
        assert_eq!(t.asks.get(&101), Some(&3));
        assert!(w.on && w.first_id == 0 && w.bids.is_empty());
    }

    #[test]
    fn request_errors_are_binance_texts() {
        let e = serde_json::from_str::<Request>(r#"{"method":"SUBSCRIBX","id":1}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("unknown variant `SUBSCRIBX`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"), "{e}");
        assert!(valid_id(&serde_json::json!(-5)));
        assert!(valid_id(&serde_json::json!("abc123")));
        assert!(!valid_id(&serde_json::json!("a-b")));
        assert!(!valid_id(&serde_json::json!(1.5)));
    }
}
