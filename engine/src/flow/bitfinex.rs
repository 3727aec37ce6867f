//! Bitfinex raw-book (L3, `prec: "R0"`) WebSocket recordings as a flow, streamed message by
//! message from any `BufRead`.
//!
//! A recording is one JSON array of the messages as they came: event objects (`info`,
//! `subscribed`, ...), then `[chanId, [[id, price, amount], ...]]` (the snapshot), then
//! updates `[chanId, [id, price, amount]]`, with heartbeats `[chanId, "hb"]` and checksums
//! `[chanId, "cs", n]` in between. `amount > 0` is a bid, `< 0` an ask, `price == 0` deletes
//! the order; a known id with a new price or amount is a change of that order.
//!
//! The array is never held whole: a small scanner finds each top-level element's bytes
//! (tracking strings and nesting), and `serde_json` parses that element alone, numbers kept
//! as their text (`RawValue`), so prices and amounts convert to ticks and lots exactly
//! (`rust_decimal`, then `spec::decimal_to_steps`; exponents such as `-1.5e-07` included).
//!
//! Units. With BTC at 8 decimals, Bitfinex prices need up to 8 decimals and amounts 8; exact
//! notionals of both would need quote minor units of 10^-16 USD, where a `u64` supply holds
//! only about 1,844 USD, so that cannot be. The defaults keep every amount (lot = 1 satoshi;
//! amounts use all 8 decimals) and put the tick at 1 USD, where most orders are (five
//! significant digits at this price level; the off-grid prices have 4 to 8 decimals, so no
//! finer tick that fits would catch more of them). `USD` then has 8 decimals
//! (`price_decimals + amount_decimals`, so one tick times one lot is one quote minor unit).
//! Orders off that grid (10,616 of the 37,059 orders of the tBTCUSD recording) are skipped
//! and counted, and so are later messages of those orders until they come back onto the
//! grid. `BitfinexOptions` chooses other grids.
//!
//! | message | command |
//! |---|---|
//! | unknown id, price ≠ 0 | `PlaceOrder` limit GTC, side from the sign, account `1 + id % accounts` |
//! | known id, same side and price, new amount | `AmendOrder` to the new amount (the new total: the loader cannot know engine fills) |
//! | known id, new price or side | `CancelOrder` + `PlaceOrder` (new flow order id), counted |
//! | known id, price 0 | `CancelOrder` |
//! | unknown id, price 0 | skipped, counted |
//!
//! The feed shows only the top 25 levels and no trades, so the engine's book is not
//! Bitfinex's: a new order can cross an order the engine still holds and trade. Then a later
//! amend or cancel of an order the engine filled is rejected (`UnknownOrder`, or
//! `InvalidAmend` when the new amount is not above what the engine filled). Those
//! rejections keep the flow's ids right (a refused cancel or amend consumes no id) and are
//! for the replay to count.
//!
//! No timestamps: `ts_ns` is `seq` µs, as in `flow::sequence`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, BufRead};

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::Flow;
use crate::command::{Command, OrderRef, PlaceOrder, Sequenced};
use crate::spec::{decimal_to_steps, AssetClass, AssetSpec, MarketSpec, UnitError};
use crate::types::*;

pub const DEFAULT_ACCOUNTS: u32 = 1_000;
/// The loader keeps a funding bound per account.
pub const MAX_ACCOUNTS: u32 = 1 << 20;
/// 2^51 minor units of each asset per account (about 22.5 million USD at 10^-8): above the
/// worst case of any account of the tBTCUSD recording (13.1 million USD, `load` checks), and
/// 1,000 accounts × 2^51 leaves room for 8 replays under the `u64` supply limit.
pub const DEFAULT_FUNDING: u64 = 1 << 51;
/// Bounds of the market's PRICE_FILTER and LOT_SIZE (ticks, lots).
pub const MAX_PRICE_TICKS: u64 = 1 << 56;
pub const MAX_QTY_LOTS: u64 = 1 << 56;
/// A top-level message larger than this is refused (a snapshot of 250 orders is ~12 KB).
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// JSON nesting allowed inside one message (a snapshot needs 3).
const MAX_DEPTH: u32 = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitfinexOptions {
    /// Base and quote assets: 1-16 chars of `[A-Z0-9]`; the market is their concatenation.
    pub base: String,
    pub quote: String,
    pub base_decimals: u8,
    /// Tick = 10^-price_decimals quote units.
    pub price_decimals: u8,
    /// Lot = 10^-amount_decimals base units (at most `base_decimals`).
    pub amount_decimals: u8,
    /// Orders are spread over accounts `1..=accounts` by Bitfinex order id.
    pub accounts: u32,
    /// Minor units of each asset every account gets.
    pub funding: u64,
}

impl BitfinexOptions {
    /// BTC (8 decimals) against USD: tick 1 USD, lot 1 satoshi (see the module doc).
    pub fn btcusd() -> Self {
        BitfinexOptions {
            base: "BTC".into(),
            quote: "USD".into(),
            base_decimals: 8,
            price_decimals: 0,
            amount_decimals: 8,
            accounts: DEFAULT_ACCOUNTS,
            funding: DEFAULT_FUNDING,
        }
    }

    /// Quote decimals: `price_decimals + amount_decimals`, so that one tick times one lot is
    /// exactly one quote minor unit.
    pub fn quote_decimals(&self) -> u8 {
        self.price_decimals.saturating_add(self.amount_decimals)
    }
}

/// One command of the flow and the (1-based) number of the message that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub command: Sequenced,
    pub message: u64,
}

#[derive(Debug)]
pub enum LoadError {
    /// Reading failed while reading message `message` (1-based).
    Io { message: u64, source: io::Error },
    /// Not the JSON this loader reads: message number (1-based; 0 = before the first) and
    /// the byte offset where that message starts.
    Malformed {
        message: u64,
        offset: u64,
        reason: String,
    },
    /// The options cannot make a valid market.
    Options(String),
    /// The funding does not cover what one account may need (sum of its buy notionals, or of
    /// its sell quantities).
    Underfunded {
        account: AccountId,
        asset: String,
        needed: u128,
        funding: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { message, source } => {
                write!(f, "Bitfinex message {message}: read error: {source}")
            }
            LoadError::Malformed {
                message,
                offset,
                reason,
            } => write!(f, "Bitfinex message {message} (byte {offset}): {reason}"),
            LoadError::Options(m) => write!(f, "Bitfinex options: {m}"),
            LoadError::Underfunded {
                account,
                asset,
                needed,
                funding,
            } => write!(
                f,
                "Bitfinex: account {account} may need {needed} minor units of {asset}, \
                 funding is {funding}"
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a message (or one order of a snapshot) produced no command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    Event,
    ErrorEvent,
    Heartbeat,
    Checksum,
    OtherStringMessage,
    OtherChannel,
    DeleteUnknown,
    DeleteOffGrid,
    PriceOffTick,
    AmountOffLot,
    OutOfRange,
    UpdateOffGrid,
    ZeroAmount,
    Unchanged,
}

impl Skip {
    pub const ALL: [Skip; 14] = [
        Skip::Event,
        Skip::ErrorEvent,
        Skip::Heartbeat,
        Skip::Checksum,
        Skip::OtherStringMessage,
        Skip::OtherChannel,
        Skip::DeleteUnknown,
        Skip::DeleteOffGrid,
        Skip::PriceOffTick,
        Skip::AmountOffLot,
        Skip::OutOfRange,
        Skip::UpdateOffGrid,
        Skip::ZeroAmount,
        Skip::Unchanged,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Skip::Event => "event object (info, subscribed, ...)",
            Skip::ErrorEvent => "error event",
            Skip::Heartbeat => "heartbeat",
            Skip::Checksum => "checksum",
            Skip::OtherStringMessage => "other channel message with a string payload",
            Skip::OtherChannel => "message of another channel",
            Skip::DeleteUnknown => "delete of an unknown order",
            Skip::DeleteOffGrid => "delete of an order skipped for its price or amount",
            Skip::PriceOffTick => "new order: price not a multiple of the tick",
            Skip::AmountOffLot => "new order: amount not a multiple of the lot",
            Skip::OutOfRange => "new order: price or amount outside the market's filters",
            Skip::UpdateOffGrid => "update of an order skipped for its price or amount",
            Skip::ZeroAmount => "amount 0 with a price",
            Skip::Unchanged => "update repeating the order's price and amount",
        }
    }
}

/// A message mapped to something other than its plain reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rewrite {
    PriceChange,
    SideFlip,
    LeftGrid,
    BackOnGrid,
}

impl Rewrite {
    pub const ALL: [Rewrite; 4] = [
        Rewrite::PriceChange,
        Rewrite::SideFlip,
        Rewrite::LeftGrid,
        Rewrite::BackOnGrid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rewrite::PriceChange => "price change of a known order -> cancel + new order",
            Rewrite::SideFlip => "side flip of a known order -> cancel + new order",
            Rewrite::LeftGrid => "known order moved off the tick/lot grid -> cancel",
            Rewrite::BackOnGrid => "skipped order moved onto the tick/lot grid -> new order",
        }
    }
}

/// What the loader has read so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Top-level messages read.
    pub messages: u64,
    /// Book entries read: snapshot orders plus updates.
    pub book_entries: u64,
    /// Skipped messages or snapshot orders by reason (non-zero counts, `Skip::ALL` order).
    pub skipped: Vec<(String, u64)>,
    /// Messages mapped otherwise than plainly, by kind (non-zero counts).
    pub rewritten: Vec<(String, u64)>,
}

/// An order of the loader's book.
#[derive(Clone, Copy, Debug)]
struct Live {
    id: OrderId,
    account: AccountId,
    side: Side,
    price_ticks: u64,
    qty_lots: u64,
}

/// Finds the top-level elements of one big JSON array without holding the array.
struct Elements<R> {
    reader: R,
    /// The current element's bytes.
    buf: Vec<u8>,
    /// Bytes consumed so far.
    offset: u64,
    /// Elements returned so far (= the current element's 1-based number).
    count: u64,
    state: ScanState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ScanState {
    Start,
    First,
    Rest,
    Done,
}

/// `fill_buf`, retried when interrupted.
fn fill<R: BufRead>(r: &mut R) -> io::Result<&[u8]> {
    loop {
        match r.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    r.fill_buf()
}

impl<R: BufRead> Elements<R> {
    fn new(reader: R) -> Self {
        Elements {
            reader,
            buf: Vec::new(),
            offset: 0,
            count: 0,
            state: ScanState::Start,
        }
    }

    fn malformed(&self, message: u64, offset: u64, reason: impl Into<String>) -> LoadError {
        LoadError::Malformed {
            message,
            offset,
            reason: reason.into(),
        }
    }

    fn io(&self, source: io::Error) -> LoadError {
        LoadError::Io {
            message: self.count + 1,
            source,
        }
    }

    fn skip_ws(&mut self) -> Result<(), LoadError> {
        loop {
            let chunk = match fill(&mut self.reader) {
                Ok(c) => c,
                Err(e) => return Err(self.io(e)),
            };
            let n = chunk
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            let all = n == chunk.len();
            let empty = chunk.is_empty();
            self.reader.consume(n);
            self.offset += n as u64;
            if empty || !all {
                return Ok(());
            }
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, LoadError> {
        match fill(&mut self.reader) {
            Ok(c) => Ok(c.first().copied()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn bump(&mut self) {
        self.reader.consume(1);
        self.offset += 1;
    }

    /// The next element's bytes in `self.buf` (its number is `self.count`), or `None` after
    /// the closing `]`.
    fn next(&mut self) -> Result<Option<u64>, LoadError> {
        loop {
            match self.state {
                ScanState::Done => return Ok(None),
                ScanState::Start => {
                    self.skip_ws()?;
                    match self.peek()? {
                        Some(b'[') => {
                            self.bump();
                            self.state = ScanState::First;
                        }
                        Some(_) => {
                            return Err(self.malformed(0, self.offset, "want a JSON array"));
                        }
                        None => return Err(self.malformed(0, self.offset, "empty input")),
                    }
                }
                ScanState::First | ScanState::Rest => {
                    self.skip_ws()?;
                    let at = self.offset;
                    match self.peek()? {
                        None => {
                            return Err(self.malformed(
                                self.count + 1,
                                at,
                                "input ends inside the top-level array",
                            ))
                        }
                        Some(b']') => {
                            self.bump();
                            self.skip_ws()?;
                            self.state = ScanState::Done;
                            if self.peek()?.is_some() {
                                return Err(self.malformed(
                                    self.count + 1,
                                    self.offset,
                                    "data after the top-level array",
                                ));
                            }
                            return Ok(None);
                        }
                        Some(b',') if self.state == ScanState::Rest => {
                            self.bump();
                            self.skip_ws()?;
                        }
                        Some(_) if self.state == ScanState::Rest => {
                            return Err(self.malformed(
                                self.count + 1,
                                at,
                                "want ',' or ']' between messages",
                            ))
                        }
                        Some(_) => {}
                    }
                    self.state = ScanState::Rest;
                    self.count += 1;
                    let start = self.offset;
                    self.read_element(start)?;
                    return Ok(Some(start));
                }
            }
        }
    }

    /// Reads one array or object into `self.buf`, tracking strings and nesting.
    fn read_element(&mut self, start: u64) -> Result<(), LoadError> {
        let message = self.count;
        self.buf.clear();
        match self.peek()? {
            Some(b'[' | b'{') => {}
            Some(_) => return Err(self.malformed(message, start, "want an array or an object")),
            None => return Err(self.malformed(message, start, "input ends before a message")),
        }
        let (mut depth, mut in_str, mut escaped) = (0u32, false, false);
        loop {
            let chunk = match fill(&mut self.reader) {
                Ok(c) => c,
                Err(e) => {
                    return Err(LoadError::Io { message, source: e });
                }
            };
            if chunk.is_empty() {
                return Err(self.malformed(message, start, "input ends inside a message"));
            }
            let mut used = 0;
            let mut done = false;
            for &b in chunk {
                used += 1;
                if in_str {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_str = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err(LoadError::Malformed {
                                message,
                                offset: start,
                                reason: format!("nested deeper than {MAX_DEPTH}"),
                            });
                        }
                    }
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            done = true;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            self.buf.extend_from_slice(&chunk[..used]);
            self.reader.consume(used);
            self.offset += used as u64;
            if self.buf.len() > MAX_MESSAGE_BYTES {
                return Err(self.malformed(
                    message,
                    start,
                    format!("message longer than {MAX_MESSAGE_BYTES} bytes"),
                ));
            }
            if done {
                return Ok(());
            }
        }
    }
}

/// A number's text (JSON grammar, exponent allowed) as an exact decimal.
fn parse_decimal(text: &str) -> Option<Decimal> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let body = mantissa.strip_prefix('-').unwrap_or(mantissa);
    if body.is_empty()
        || !body.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        || body.starts_with('.')
        || body.ends_with('.')
    {
        return None;
    }
    let mut d = Decimal::from_str_exact(mantissa).ok()?;
    if exp < 0 {
        let scale = d.scale().checked_add(exp.unsigned_abs())?;
        if scale > 28 {
            return None;
        }
        d.set_scale(scale).ok()?;
    } else if exp > 0 {
        if exp > 28 {
            return None;
        }
        let factor = Decimal::try_from_i128_with_scale(10i128.pow(exp as u32), 0).ok()?;
        d = d.checked_mul(factor)?;
    }
    Some(d)
}

fn parse_id(raw: &RawValue) -> Option<u64> {
    let t = raw.get().trim();
    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Why a price or amount has no exact tick or lot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OffGrid {
    Price,
    Amount,
    Range,
}

/// The streaming loader: `next_command` (or the `Iterator`) yields one command at a time.
pub struct BitfinexLoader<R> {
    elements: Elements<R>,
    options: BitfinexOptions,
    tick_size: u64,
    lot_size: u64,
    /// Commands made but not yet returned (a snapshot, or a cancel + new pair).
    pending: VecDeque<Loaded>,
    seq: u64,
    next_order_id: OrderId,
    live: HashMap<u64, Live>,
    /// Bitfinex ids of orders skipped for their price or amount, still in Bitfinex's book.
    off_grid: HashSet<u64>,
    channel: Option<u64>,
    snapshot_seen: bool,
    book_entries: u64,
    skipped: [u64; Skip::ALL.len()],
    rewritten: [u64; Rewrite::ALL.len()],
    /// Per account: upper bounds of the base and quote minor units it may spend or lock.
    need: Vec<[u128; 2]>,
    done: bool,
}

impl<R: BufRead> BitfinexLoader<R> {
    pub fn new(reader: R, options: BitfinexOptions) -> Result<Self, LoadError> {
        let o = &options;
        let sym = |s: &str| {
            !s.is_empty()
                && s.len() <= 16
                && s.bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        if !sym(&o.base) || !sym(&o.quote) || o.base == o.quote || o.base.len() + o.quote.len() > 20
        {
            return Err(LoadError::Options(format!(
                "symbols {:?}/{:?}: want two different 1-16 chars of [A-Z0-9], 20 together",
                o.base, o.quote
            )));
        }
        let qd = o.price_decimals as u32 + o.amount_decimals as u32;
        if o.base_decimals > 18 || o.amount_decimals > o.base_decimals || qd > 18 {
            return Err(LoadError::Options(format!(
                "decimals: base {}, price {}, amount {}: want amount <= base <= 18 and \
                 price + amount <= 18",
                o.base_decimals, o.price_decimals, o.amount_decimals
            )));
        }
        if !(1..=MAX_ACCOUNTS).contains(&o.accounts) || o.funding == 0 {
            return Err(LoadError::Options(format!(
                "want 1 to {MAX_ACCOUNTS} accounts and a positive funding"
            )));
        }
        if o.accounts as u128 * o.funding as u128 > u64::MAX as u128 {
            return Err(LoadError::Options(format!(
                "{} accounts × {} exceeds the u64 supply of an asset",
                o.accounts, o.funding
            )));
        }
        let tick_size = 10u64.pow(o.amount_decimals as u32);
        let lot_size = 10u64.pow((o.base_decimals - o.amount_decimals) as u32);
        let need = vec![[0; 2]; o.accounts as usize + 1];
        Ok(BitfinexLoader {
            elements: Elements::new(reader),
            options,
            tick_size,
            lot_size,
            pending: VecDeque::new(),
            seq: 0,
            next_order_id: 1,
            live: HashMap::new(),
            off_grid: HashSet::new(),
            channel: None,
            snapshot_seen: false,
            book_entries: 0,
            skipped: [0; Skip::ALL.len()],
            rewritten: [0; Rewrite::ALL.len()],
            need,
            done: false,
        })
    }

    /// `[base, quote]`.
    pub fn assets(&self) -> Vec<AssetSpec> {
        vec![
            AssetSpec {
                symbol: self.options.base.clone(),
                decimals: self.options.base_decimals,
                class: AssetClass::Crypto,
            },
            AssetSpec {
                symbol: self.options.quote.clone(),
                decimals: self.options.quote_decimals(),
                class: AssetClass::Stablecoin,
            },
        ]
    }

    /// `<base><quote>` on the options' grid: one tick times one lot is one quote minor unit.
    pub fn markets(&self) -> Vec<MarketSpec> {
        let symbol = format!("{}{}", self.options.base, self.options.quote);
        vec![MarketSpec {
            tick_size: self.tick_size,
            lot_size: self.lot_size,
            max_price_ticks: MAX_PRICE_TICKS,
            max_qty_lots: MAX_QTY_LOTS,
            ..super::plain_market(&symbol)
        }]
    }

    pub fn accounts(&self) -> u32 {
        self.options.accounts
    }

    pub fn funding(&self) -> u64 {
        self.options.funding
    }

    pub fn stats(&self) -> Stats {
        Stats {
            messages: self.elements.count,
            book_entries: self.book_entries,
            skipped: Skip::ALL
                .iter()
                .zip(self.skipped)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s.label().to_string(), n))
                .collect(),
            rewritten: Rewrite::ALL
                .iter()
                .zip(self.rewritten)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.label().to_string(), n))
                .collect(),
        }
    }

    /// Checks that `funding` covers every account's worst case over what was read: the sum
    /// of the notionals of its buys and of the lots of its sells (each placement, and each
    /// size increase), which no sequence of fills can exceed.
    pub fn check_funding(&self) -> Result<(), LoadError> {
        let funding = self.options.funding;
        for (account, need) in self.need.iter().enumerate() {
            for (asset, &needed) in need.iter().enumerate() {
                if needed > funding as u128 {
                    return Err(LoadError::Underfunded {
                        account: account as AccountId,
                        asset: self.assets()[asset].symbol.clone(),
                        needed,
                        funding,
                    });
                }
            }
        }
        Ok(())
    }

    /// The next command, `None` at the end of the input (or after an error).
    pub fn next_command(&mut self) -> Result<Option<Loaded>, LoadError> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Ok(Some(l));
            }
            if self.done {
                return Ok(None);
            }
            let start = match self.elements.next() {
                Ok(Some(start)) => start,
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            let message = self.elements.count;
            if let Err(reason) = self.message() {
                self.done = true;
                self.pending.clear();
                return Err(LoadError::Malformed {
                    message,
                    offset: start,
                    reason,
                });
            }
        }
    }

    fn skip(&mut self, s: Skip) {
        if let Some(i) = Skip::ALL.iter().position(|&x| x == s) {
            self.skipped[i] += 1;
        }
    }

    fn note(&mut self, r: Rewrite) {
        if let Some(i) = Rewrite::ALL.iter().position(|&x| x == r) {
            self.rewritten[i] += 1;
        }
    }

    fn emit(&mut self, command: Command) {
        self.seq += 1;
        self.pending.push_back(Loaded {
            command: Sequenced {
                seq: self.seq,
                ts_ns: self.seq * 1_000,
                command,
            },
            message: self.elements.count,
        });
    }

    /// Reads the element in the scanner's buffer into `pending`; `Err(reason)` if malformed.
    fn message(&mut self) -> Result<(), String> {
        let buf = std::mem::take(&mut self.elements.buf);
        let result = self.parse_message(&buf);
        self.elements.buf = buf;
        result
    }

    fn parse_message(&mut self, buf: &[u8]) -> Result<(), String> {
        if buf.first() == Some(&b'{') {
            let obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(buf).map_err(|e| format!("bad JSON object: {e}"))?;
            let event = obj
                .get("event")
                .and_then(|v| v.as_str())
                .ok_or("an object without an \"event\" string")?;
            match event {
                "error" => self.skip(Skip::ErrorEvent),
                "subscribed" => {
                    if obj.get("channel").and_then(|v| v.as_str()) == Some("book") {
                        let chan = obj
                            .get("chanId")
                            .and_then(|v| v.as_u64())
                            .ok_or("a book subscription without an integer chanId")?;
                        if self.channel.is_some_and(|c| c != chan) {
                            return Err("a second book subscription".into());
                        }
                        self.channel = Some(chan);
                    }
                    self.skip(Skip::Event);
                }
                _ => self.skip(Skip::Event),
            }
            return Ok(());
        }
        let parts: Vec<&RawValue> =
            serde_json::from_slice(buf).map_err(|e| format!("bad JSON array: {e}"))?;
        let (Some(chan), Some(payload)) = (parts.first(), parts.get(1)) else {
            return Err("want [chanId, payload, ...]".into());
        };
        let chan = parse_id(chan).ok_or("chanId is not a non-negative integer")?;
        let payload = payload.get().trim_start();
        if payload.starts_with('"') {
            let s: String = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            match s.as_str() {
                "hb" => self.skip(Skip::Heartbeat),
                "cs" => self.skip(Skip::Checksum),
                _ => self.skip(Skip::OtherStringMessage),
            }
            return Ok(());
        }
        if parts.len() != 2 {
            return Err(format!(
                "a book message has 2 elements [chanId, data], found {}",
                parts.len()
            ));
        }
        if self.channel.is_some_and(|c| c != chan) {
            self.skip(Skip::OtherChannel);
            return Ok(());
        }
        let entries: Vec<&RawValue> =
            serde_json::from_str(payload).map_err(|e| format!("book data is not an array: {e}"))?;
        let is_snapshot = entries
            .first()
            .is_none_or(|e| e.get().trim_start().starts_with('['));
        if is_snapshot {
            if self.snapshot_seen {
                return Err("a second snapshot (resubscription) is not supported".into());
            }
            self.snapshot_seen = true;
            for (i, e) in entries.iter().enumerate() {
                let entry: Vec<&RawValue> = serde_json::from_str(e.get())
                    .map_err(|err| format!("snapshot entry {i}: not an array: {err}"))?;
                self.book_entry(&entry)
                    .map_err(|why| format!("snapshot entry {i}: {why}"))?;
            }
        } else {
            self.book_entry(&entries)?;
        }
        Ok(())
    }

    /// One `[id, price, amount]`.
    fn book_entry(&mut self, entry: &[&RawValue]) -> Result<(), String> {
        let [id, price, amount] = entry else {
            return Err(format!(
                "want [id, price, amount], found {} elements",
                entry.len()
            ));
        };
        self.book_entries += 1;
        let id = parse_id(id).ok_or_else(|| format!("order id {}: not an integer", cut(id)))?;
        let price_d = parse_decimal(price.get())
            .ok_or_else(|| format!("price {}: not a number", cut(price)))?;
        let amount_d = parse_decimal(amount.get())
            .ok_or_else(|| format!("amount {}: not a number", cut(amount)))?;
        if price_d.is_sign_negative() && !price_d.is_zero() {
            return Err(format!("price {}: negative", price.get()));
        }
        if price_d.is_zero() {
            if let Some(o) = self.live.remove(&id) {
                self.emit(cancel(&o));
            } else if self.off_grid.remove(&id) {
                self.skip(Skip::DeleteOffGrid);
            } else {
                self.skip(Skip::DeleteUnknown);
            }
            return Ok(());
        }
        if amount_d.is_zero() {
            self.skip(Skip::ZeroAmount);
            return Ok(());
        }
        let side = if amount_d.is_sign_negative() {
            Side::Sell
        } else {
            Side::Buy
        };
        let grid = self.to_grid(price_d, amount_d.abs());
        match (self.live.get(&id).copied(), grid) {
            (Some(o), Err(_)) => {
                self.note(Rewrite::LeftGrid);
                self.live.remove(&id);
                self.off_grid.insert(id);
                self.emit(cancel(&o));
            }
            (Some(o), Ok((p, q))) if o.side != side || o.price_ticks != p => {
                self.note(if o.side != side {
                    Rewrite::SideFlip
                } else {
                    Rewrite::PriceChange
                });
                self.emit(cancel(&o));
                self.place(id, side, p, q);
            }
            (Some(o), Ok((_, q))) if q == o.qty_lots => self.skip(Skip::Unchanged),
            (Some(o), Ok((p, q))) => {
                if q > o.qty_lots {
                    self.add_need(o.account, side, p, q - o.qty_lots);
                }
                if let Some(l) = self.live.get_mut(&id) {
                    l.qty_lots = q;
                }
                self.emit(Command::AmendOrder {
                    account: o.account,
                    market: 0,
                    target: OrderRef::Id(o.id),
                    new_qty: q,
                    new_price: None,
                });
            }
            (None, Ok((p, q))) => {
                if self.off_grid.remove(&id) {
                    self.note(Rewrite::BackOnGrid);
                }
                self.place(id, side, p, q);
            }
            (None, Err(why)) => {
                if self.off_grid.insert(id) {
                    self.skip(match why {
                        OffGrid::Price => Skip::PriceOffTick,
                        OffGrid::Amount => Skip::AmountOffLot,
                        OffGrid::Range => Skip::OutOfRange,
                    });
                } else {
                    self.skip(Skip::UpdateOffGrid);
                }
            }
        }
        Ok(())
    }

    /// Price and amount in ticks and lots, exactly, within the market's filters.
    fn to_grid(&self, price: Decimal, amount: Decimal) -> Result<(u64, u64), OffGrid> {
        let o = &self.options;
        let steps = |v, step, decimals| match decimal_to_steps(v, step, decimals) {
            Err(UnitError::NotAMultiple) => Err(false),
            Err(UnitError::OutOfRange) => Err(true),
            Ok(n) => Ok(n),
        };
        let p = steps(price, self.tick_size, o.quote_decimals()).map_err(|range| {
            if range {
                OffGrid::Range
            } else {
                OffGrid::Price
            }
        })?;
        let q = steps(amount, self.lot_size, o.base_decimals).map_err(|range| {
            if range {
                OffGrid::Range
            } else {
                OffGrid::Amount
            }
        })?;
        if !(1..=MAX_PRICE_TICKS).contains(&p) || !(1..=MAX_QTY_LOTS).contains(&q) {
            return Err(OffGrid::Range);
        }
        Ok((p, q))
    }

    fn place(&mut self, id: u64, side: Side, price_ticks: u64, qty_lots: u64) {
        let account = 1 + (id % self.options.accounts as u64) as AccountId;
        self.add_need(account, side, price_ticks, qty_lots);
        let order = Live {
            id: self.next_order_id,
            account,
            side,
            price_ticks,
            qty_lots,
        };
        self.next_order_id += 1;
        self.live.insert(id, order);
        self.emit(Command::PlaceOrder(PlaceOrder {
            account,
            market: 0,
            side,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            quantity: Quantity::Base(qty_lots),
            price: Some(price_ticks),
            client_order_id: ClientOrderId::NONE,
            stp: StpMode::None,
        }));
    }

    fn add_need(&mut self, account: AccountId, side: Side, price_ticks: u64, qty_lots: u64) {
        let lot = self.lot_size as u128;
        if let Some(n) = self.need.get_mut(account as usize) {
            // One tick times one lot is one quote minor unit.
            match side {
                Side::Buy => n[1] = n[1].saturating_add(price_ticks as u128 * qty_lots as u128),
                Side::Sell => n[0] = n[0].saturating_add(qty_lots as u128 * lot),
            }
        }
    }
}

fn cancel(o: &Live) -> Command {
    Command::CancelOrder {
        account: o.account,
        market: 0,
        target: OrderRef::Id(o.id),
    }
}

/// A JSON value for an error message, cut short.
fn cut(raw: &RawValue) -> String {
    raw.get().chars().take(40).collect()
}

impl<R: BufRead> Iterator for BitfinexLoader<R> {
    type Item = Result<Loaded, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_command().transpose()
    }
}

/// Reads a whole Bitfinex raw-book recording into a `Flow` (see the module doc).
pub fn load(reader: impl BufRead, options: BitfinexOptions) -> Result<Flow, LoadError> {
    load_with_stats(reader, options).map(|(flow, _)| flow)
}

/// `load`, plus what was read, skipped and rewritten.
pub fn load_with_stats(
    reader: impl BufRead,
    options: BitfinexOptions,
) -> Result<(Flow, Stats), LoadError> {
    let mut loader = BitfinexLoader::new(reader, options)?;
    let mut commands = Vec::new();
    while let Some(loaded) = loader.next_command()? {
        commands.push(loaded.command);
    }
    loader.check_funding()?;
    let stats = loader.stats();
    let flow = Flow {
        name: "bitfinex".into(),
        assets: loader.assets(),
        markets: loader.markets(),
        accounts: loader.accounts(),
        funding: loader.funding(),
        commands,
        warmup: 0,
        skipped: stats.skipped.clone(),
        expected_makers: Vec::new(),
    };
    Ok((flow, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineConfig, Event, Exchange, RejectReason};
    use std::io::BufReader;

    const SMALL: &str = include_str!("../../../fixtures/bitfinex_small.json");

    fn load_str(s: &str) -> Result<(Flow, Stats), LoadError> {
        load_with_stats(s.as_bytes(), BitfinexOptions::btcusd())
    }

    /// (message, reason) of a `Malformed` error.
    fn malformed(s: &str) -> (u64, String) {
        match load_str(s) {
            Err(LoadError::Malformed {
                message, reason, ..
            }) => (message, reason),
            other => panic!("want Malformed for {s:?}, got {other:?}"),
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn numbers_parse_exactly() {
        assert_eq!(parse_decimal("60945"), Some(d("60945")));
        assert_eq!(parse_decimal("60940.35136398"), Some(d("60940.35136398")));
        assert_eq!(parse_decimal("-1.5e-07"), Some(d("-0.00000015")));
        assert_eq!(parse_decimal("8.56e-06"), Some(d("0.00000856")));
        assert_eq!(parse_decimal("1E+3"), Some(d("1000")));
        assert_eq!(parse_decimal("1.25E2"), Some(d("125")));
        assert_eq!(parse_decimal("-0"), Some(d("0")));
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1e",
            "e5",
            "1e-40",
            "1e40",
            "0x10",
            "1_000",
            "+1",
            "\"1\"",
            "1.2.3",
            "nan",
            "1e999999999999",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
        // More digits than a Decimal holds: refused, not rounded.
        assert_eq!(parse_decimal("0.12345678901234567890123456789"), None);
    }

    #[test]
    fn grid_conversion_is_exact() {
        let l = BitfinexLoader::new(&b"[]"[..], BitfinexOptions::btcusd()).unwrap();
        assert_eq!(
            l.to_grid(d("60945"), d("0.246386")),
            Ok((60_945, 24_638_600))
        );
        assert_eq!(l.to_grid(d("60945"), d("0.00000015")), Ok((60_945, 15)));
        assert_eq!(l.to_grid(d("60940.35136398"), d("1")), Err(OffGrid::Price));
        assert_eq!(
            l.to_grid(d("60945"), d("0.000000001")),
            Err(OffGrid::Amount)
        );
        assert_eq!(
            l.to_grid(d("100000000000000000000"), d("1")),
            Err(OffGrid::Range)
        );
        // A finer grid: tick 1e-8 USD, lot 1e-4 BTC, USD with 12 decimals.
        let mut o = BitfinexOptions::btcusd();
        o.price_decimals = 8;
        o.amount_decimals = 4;
        let l = BitfinexLoader::new(&b"[]"[..], o).unwrap();
        assert_eq!(
            l.to_grid(d("60940.35136398"), d("0.0002")),
            Ok((6_094_035_136_398, 2))
        );
        let m = &l.markets()[0];
        assert_eq!((m.tick_size, m.lot_size), (10_000, 10_000));
        assert_eq!(m.quote_per_tick_lot(8), Some(1));
        assert_eq!(l.assets()[1].decimals, 12);
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: BitfinexOptions| BitfinexLoader::new(&b"[]"[..], o).is_err();
        let mut o = BitfinexOptions::btcusd();
        o.quote = "BTC".into();
        assert!(bad(o));
        let mut o = BitfinexOptions::btcusd();
        o.amount_decimals = 9;
        assert!(bad(o));
        let mut o = BitfinexOptions::btcusd();
        o.price_decimals = 11;
        assert!(bad(o));
        let mut o = BitfinexOptions::btcusd();
        o.funding = u64::MAX;
        assert!(bad(o));
        let mut o = BitfinexOptions::btcusd();
        o.accounts = 0;
        assert!(bad(o));
        let mut o = BitfinexOptions::btcusd();
        o.accounts = MAX_ACCOUNTS + 1;
        assert!(bad(o));
        let mut o = BitfinexOptions::btcusd();
        o.funding = 1 << 20;
        match load_with_stats(SMALL.as_bytes(), o) {
            Err(LoadError::Underfunded { asset, .. }) => assert_eq!(asset, "USD"),
            other => panic!("{other:?}"),
        }
        // The default market is valid.
        let l = BitfinexLoader::new(&b"[]"[..], BitfinexOptions::btcusd()).unwrap();
        let m = &l.markets()[0];
        assert_eq!(m.symbol, "BTCUSD");
        assert_eq!(
            m.validate(|a| l.assets().get(a as usize).map(|s| s.decimals)),
            Ok(1)
        );
    }

    #[test]
    fn malformed_input_is_an_error_with_the_message_number() {
        assert_eq!(malformed("").0, 0);
        assert_eq!(malformed("  \n").0, 0);
        assert_eq!(malformed("{\"event\": \"info\"}").0, 0);
        assert_eq!(malformed("[").0, 1);
        assert_eq!(malformed("[[1, \"hb\"]").0, 2);
        assert_eq!(malformed("[[1, \"hb\"] [1, \"hb\"]]").0, 2);
        assert_eq!(malformed("[[1, \"hb\"],").0, 2);
        assert_eq!(malformed("[[1, \"hb\"], [1, [5, 1").0, 2);
        assert_eq!(malformed("[[1, \"hb\"], 5]").0, 2);
        assert_eq!(malformed("[[1, \"hb\"]] x").0, 2);
        assert_eq!(malformed("[[1, \"hb\"], [1, [5, 1, 2}]]").0, 2);
        assert_eq!(malformed("[{\"version\": 2}]").0, 1);
        assert_eq!(malformed("[[1]]").0, 1);
        assert_eq!(malformed("[[-1, [5, 1, 2]]]").0, 1);
        assert_eq!(malformed("[[1, [5, 1]]]").0, 1);
        assert_eq!(malformed("[[1, [5, 1, 2, 3]]]").0, 1);
        assert_eq!(malformed("[[1, [5, 1, 2], 99]]").0, 1);
        assert_eq!(malformed("[[1, [5.5, 1, 2]]]").0, 1);
        assert_eq!(malformed("[[1, [5, \"1\", 2]]]").0, 1);
        assert_eq!(malformed("[[1, [5, 1, true]]]").0, 1);
        assert_eq!(malformed("[[1, [5, -3, 2]]]").0, 1);
        assert_eq!(malformed("[[1, 7]]").0, 1);
        let (n, why) = malformed("[[1, [[5, 1, 2]]], [1, [[6, 1, 2]]]]");
        assert_eq!(n, 2);
        assert!(why.contains("second snapshot"), "{why}");
        let (n, why) = malformed("[[1, [[5, 1, 2], [6, 1]]]]");
        assert_eq!(n, 1);
        assert!(why.contains("snapshot entry 1"), "{why}");
        let deep = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert!(malformed(&deep).1.contains("nested"));
        let e = load_str("[[1, \"hb\"], 5]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bitfinex message 2 (byte 12): want an array or an object"
        );
        // An empty array is an empty flow.
        let (flow, stats) = load_str(" [ ] \n").unwrap();
        assert!(flow.commands.is_empty());
        assert_eq!(stats.messages, 0);
    }

    #[test]
    fn streams_the_same_through_any_buffer_size() {
        let whole = load_str(SMALL).unwrap();
        for cap in [1, 2, 3, 7, 64] {
            let r = BufReader::with_capacity(cap, SMALL.as_bytes());
            let flow = load_with_stats(r, BitfinexOptions::btcusd()).unwrap();
            assert_eq!(flow, whole, "capacity {cap}");
        }
        // The iterator gives the same commands, with message numbers.
        let loader = BitfinexLoader::new(SMALL.as_bytes(), BitfinexOptions::btcusd()).unwrap();
        let items: Vec<Loaded> = loader.map(Result::unwrap).collect();
        assert_eq!(
            items.iter().map(|l| l.command.clone()).collect::<Vec<_>>(),
            whole.0.commands
        );
        assert_eq!(items[0].message, 3);
        assert_eq!(items.last().unwrap().message, 25);
    }

    #[test]
    fn mangled_input_never_panics() {
        let mut rng = crate::flow::Rng::new(9);
        let alphabet = b"0123456789,.-eE[]{}\"\\ \n";
        for _ in 0..2_000 {
            let mut bytes = SMALL.as_bytes().to_vec();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(bytes.len() as u64) as usize;
                match rng.below(3) {
                    0 => bytes[i] = alphabet[rng.below(alphabet.len() as u64) as usize],
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, alphabet[rng.below(alphabet.len() as u64) as usize]),
                }
            }
            let _ = load(&bytes[..], BitfinexOptions::btcusd());
        }
    }

    /// The fixture, command by command (see fixtures/README.md).
    #[test]
    fn small_fixture_maps_every_kind_of_message() {
        let (flow, stats) = load_str(SMALL).unwrap();
        assert_eq!(stats.messages, 25);
        assert_eq!(stats.book_entries, 25);
        let skipped: Vec<(&str, u64)> = stats
            .skipped
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            skipped,
            [
                (Skip::Event.label(), 2),
                (Skip::Heartbeat.label(), 1),
                (Skip::Checksum.label(), 1),
                (Skip::OtherChannel.label(), 1),
                (Skip::DeleteUnknown.label(), 1),
                (Skip::DeleteOffGrid.label(), 1),
                (Skip::PriceOffTick.label(), 2),
                (Skip::AmountOffLot.label(), 1),
                (Skip::UpdateOffGrid.label(), 1),
                (Skip::ZeroAmount.label(), 1),
                (Skip::Unchanged.label(), 1),
            ]
        );
        assert_eq!(flow.skipped, stats.skipped);
        let rewritten: Vec<(&str, u64)> = stats
            .rewritten
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            rewritten,
            [
                (Rewrite::PriceChange.label(), 1),
                (Rewrite::SideFlip.label(), 1),
                (Rewrite::LeftGrid.label(), 1),
                (Rewrite::BackOnGrid.label(), 1),
            ]
        );
        let place = |account, side, price, qty| {
            Command::PlaceOrder(PlaceOrder {
                account,
                market: 0,
                side,
                order_type: OrderType::Limit,
                tif: TimeInForce::Gtc,
                quantity: Quantity::Base(qty),
                price: Some(price),
                client_order_id: ClientOrderId::NONE,
                stp: StpMode::None,
            })
        };
        let cancel = |account, id| Command::CancelOrder {
            account,
            market: 0,
            target: OrderRef::Id(id),
        };
        let amend = |account, id, new_qty| Command::AmendOrder {
            account,
            market: 0,
            target: OrderRef::Id(id),
            new_qty,
            new_price: None,
        };
        use Side::{Buy, Sell};
        let want = vec![
            // The snapshot; 103 (59998.5) is off the 1-USD grid.
            place(102, Buy, 60_000, 50_000_000),
            place(103, Buy, 59_999, 125_000_000),
            place(202, Sell, 60_002, 30_000_000),
            place(203, Sell, 60_003, 200_000_000),
            place(204, Sell, 60_003, 15),
            // Size down, size up.
            amend(102, 1, 40_000_000),
            amend(103, 2, 150_000_000),
            // Price change and side flip: cancel + new.
            cancel(202, 3),
            place(202, Sell, 60_001, 30_000_000),
            cancel(203, 4),
            place(203, Buy, 59_990, 200_000_000),
            place(302, Sell, 60_005, 1_000_000),
            // 104 back on the grid.
            place(105, Buy, 59_997, 20_000_000),
            // 102 off the grid.
            cancel(103, 2),
            // 105 crosses 201 (flow 6) and fills it.
            place(106, Buy, 60_001, 30_000_000),
            cancel(202, 6),
            cancel(106, 10),
            amend(204, 5, 10),
            cancel(102, 1),
        ];
        let got: Vec<Command> = flow.commands.iter().map(|c| c.command.clone()).collect();
        assert_eq!(got, want);
        assert!(flow
            .commands
            .iter()
            .enumerate()
            .all(|(i, c)| c.seq == i as u64 + 1 && c.ts_ns == c.seq * 1_000));
        assert_eq!(flow.accounts, 1_000);
        assert!(flow.expected_makers.is_empty());
    }

    #[test]
    fn small_fixture_replays() {
        let flow = load(SMALL.as_bytes(), BitfinexOptions::btcusd()).unwrap();
        let mut ex = Exchange::new(EngineConfig {
            max_accounts: 2_000,
            ..EngineConfig::default()
        });
        let mut out = Vec::new();
        for (i, command) in flow.setup_commands(0).into_iter().enumerate() {
            let c = Sequenced {
                seq: i as u64,
                ts_ns: 0,
                command,
            };
            ex.apply(&c, &mut out);
        }
        assert!(!out
            .iter()
            .any(|e| matches!(e, Event::CommandRejected { .. })));
        let mut trades = Vec::new();
        let mut rejected = Vec::new();
        for (i, c) in flow.commands.iter().enumerate() {
            out.clear();
            ex.apply(c, &mut out);
            for e in &out {
                match *e {
                    Event::Trade {
                        maker_order,
                        taker_order,
                        price,
                        qty,
                        ..
                    } => trades.push((maker_order, taker_order, price, qty)),
                    Event::CancelRejected { reason, .. } => rejected.push((i, reason)),
                    Event::OrderRejected { .. } | Event::CommandRejected { .. } => {
                        panic!("command {i}: {e:?}")
                    }
                    _ => {}
                }
            }
        }
        ex.check_invariants().unwrap();
        // Bitfinex's 105 took 201 (flow 6) whole; the feed's later deletes of both are
        // refused, as the module doc says.
        assert_eq!(trades, [(6, 10, 60_001, 30_000_000)]);
        assert_eq!(
            rejected,
            [
                (15, RejectReason::UnknownOrder),
                (16, RejectReason::UnknownOrder)
            ]
        );
        let mut open: Vec<_> = (1..=1_000)
            .flat_map(|a| ex.open_orders(a))
            .map(|o| (o.order_id, o.side, o.price, o.remaining))
            .collect();
        open.sort_unstable_by_key(|o| o.0);
        assert_eq!(
            open,
            [
                (5, Side::Sell, 60_003, 10),
                (7, Side::Buy, 59_990, 200_000_000),
                (8, Side::Sell, 60_005, 1_000_000),
                (9, Side::Buy, 59_997, 20_000_000)
            ]
        );
    }
}
