//! LOBSTER message files (NASDAQ market-by-order, lobsterdata.com) as a flow, streamed line
//! by line from any `BufRead`.
//!
//! A message file has no header; each line is `time,type,order_id,size,price,direction`:
//! `time` in seconds after midnight with up to 9 decimals, `price` in dollars × 10000,
//! `direction` 1 buy / -1 sell (for executions: the side of the resting order).
//!
//! One market, `<SYMBOL>USD`: the stock with 0 decimals (lot = one share) against `USD` with
//! 2 decimals, tick = one cent (`tick_size` 1, `lot_size` 1, so one tick times one lot is one
//! quote minor unit and a LOBSTER price `p` is `p / 100` ticks).
//!
//! | type | meaning | command |
//! |---|---|---|
//! | 1 | new limit order | `PlaceOrder` limit GTC, account `1 + order_id % accounts` |
//! | 2 | partial cancel (size = cancelled shares) | `AmendOrder` to total − cancelled (priority kept); a cancel of the whole remainder is a `CancelOrder` |
//! | 3 | delete | `CancelOrder` |
//! | 4 | execution of visible resting order X | `PlaceOrder` limit IOC on the other side at X's price for the executed size, from the taker account `accounts + 1`; `expected_maker` = X's flow order id |
//! | 5 | execution of a hidden order | skipped (no book effect) |
//! | 6 | cross trade (auction) | skipped |
//! | 7 | trading halt: price -1 halt, 0 quoting resumes, 1 trading resumes | `SetMarketStatus` `Halted` (open orders kept) / `Trading` (the engine has no quote-only state) |
//!
//! The loader keeps each resting order's state (flow order id, account, side, price, total,
//! filled) as the events of the file leave it, so that flow order ids (counting from 1 over
//! every accepted `PlaceOrder`, IOC takers included) and amend quantities stay right. Events
//! for orders the file never placed (resting since before the file starts), for orders no
//! longer in the book (fully executed or deleted), and order events during a halt (the
//! engine refuses them) are skipped and counted by reason. Skipping changes no state, so the
//! loader's view and the engine's stay in step.
//!
//! `ts_ns` is the file's time in ns after midnight, converted exactly from the decimal text.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, Read};

use super::Flow;
use crate::command::{Command, OrderRef, PlaceOrder, Sequenced};
use crate::spec::{AssetClass, AssetSpec, MarketSpec, MarketStatus};
use crate::types::*;

/// LOBSTER price units (dollars × 10000) per tick of one cent.
pub const PRICE_UNITS_PER_TICK: u64 = 100;
pub const QUOTE_SYMBOL: &str = "USD";
/// Cents.
pub const QUOTE_DECIMALS: u8 = 2;
pub const DEFAULT_ACCOUNTS: u32 = 1_000;
/// The loader keeps a funding bound per account.
pub const MAX_ACCOUNTS: u32 = 1 << 20;
/// 2^40 cents (about 11 billion dollars) and 2^40 shares per account: far above what any
/// account of a LOBSTER day needs (`load` checks), and 1,001 accounts × 2^40 leaves room
/// for 16,000 replays under the `u64` supply limit.
pub const DEFAULT_FUNDING: u64 = 1 << 40;
/// Bounds of the market's PRICE_FILTER and LOT_SIZE (ticks, shares).
pub const MAX_PRICE_TICKS: u64 = 1 << 32;
pub const MAX_QTY_LOTS: u64 = 1 << 32;
/// A line longer than this is malformed (a real line is under 60 bytes).
const MAX_LINE_BYTES: u64 = 1_024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LobsterOptions {
    /// The stock: 1-16 chars of `[A-Z0-9]`; the market is `<symbol>USD`.
    pub symbol: String,
    /// Resting orders are spread over accounts `1..=accounts` by LOBSTER order id; the
    /// takers that reproduce executions are account `accounts + 1`.
    pub accounts: u32,
    /// Minor units of each asset every account gets.
    pub funding: u64,
}

impl LobsterOptions {
    pub fn new(symbol: &str) -> Self {
        LobsterOptions {
            symbol: symbol.into(),
            accounts: DEFAULT_ACCOUNTS,
            funding: DEFAULT_FUNDING,
        }
    }
}

/// One command of the flow; `expected_maker` is set on the IOC taker that reproduces a
/// type-4 execution: the flow order id of the resting order LOBSTER says was executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub command: Sequenced,
    pub expected_maker: Option<OrderId>,
    /// The line of the message that made the command (1-based).
    pub line: u64,
}

#[derive(Debug)]
pub enum LoadError {
    /// Reading failed (`line` is the line being read).
    Io { line: u64, source: std::io::Error },
    /// A line that is not a LOBSTER message.
    Malformed { line: u64, reason: String },
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
            LoadError::Io { line, source } => {
                write!(f, "LOBSTER line {line}: read error: {source}")
            }
            LoadError::Malformed { line, reason } => write!(f, "LOBSTER line {line}: {reason}"),
            LoadError::Options(m) => write!(f, "LOBSTER options: {m}"),
            LoadError::Underfunded {
                account,
                asset,
                needed,
                funding,
            } => write!(
                f,
                "LOBSTER: account {account} may need {needed} minor units of {asset}, \
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

/// Why a message produced no command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    HiddenExecution,
    CrossTrade,
    PartialCancelNotInFile,
    DeleteNotInFile,
    ExecutionNotInFile,
    PartialCancelGone,
    DeleteGone,
    ExecutionGone,
    DuringHalt,
    PriceOffTick,
    PriceOutOfRange,
    SizeOutOfRange,
    DuplicateOrderId,
    StatusUnchanged,
    BlankLine,
}

impl Skip {
    pub const ALL: [Skip; 15] = [
        Skip::HiddenExecution,
        Skip::CrossTrade,
        Skip::PartialCancelNotInFile,
        Skip::DeleteNotInFile,
        Skip::ExecutionNotInFile,
        Skip::PartialCancelGone,
        Skip::DeleteGone,
        Skip::ExecutionGone,
        Skip::DuringHalt,
        Skip::PriceOffTick,
        Skip::PriceOutOfRange,
        Skip::SizeOutOfRange,
        Skip::DuplicateOrderId,
        Skip::StatusUnchanged,
        Skip::BlankLine,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Skip::HiddenExecution => "type 5: execution of a hidden order",
            Skip::CrossTrade => "type 6: cross trade",
            Skip::PartialCancelNotInFile => "type 2: partial cancel of an order not in the file",
            Skip::DeleteNotInFile => "type 3: delete of an order not in the file",
            Skip::ExecutionNotInFile => "type 4: execution of an order not in the file",
            Skip::PartialCancelGone => "type 2: partial cancel of an order no longer resting",
            Skip::DeleteGone => "type 3: delete of an order no longer resting",
            Skip::ExecutionGone => "type 4: execution of an order no longer resting",
            Skip::DuringHalt => "order event during a trading halt",
            Skip::PriceOffTick => "type 1: price not a multiple of the tick",
            Skip::PriceOutOfRange => "type 1: price outside the price filter",
            Skip::SizeOutOfRange => "type 1: size zero or outside the lot-size filter",
            Skip::DuplicateOrderId => "type 1: order id already resting",
            Skip::StatusUnchanged => "type 7: status already in effect",
            Skip::BlankLine => "blank line",
        }
    }
}

/// A message mapped to something other than its plain reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rewrite {
    /// A partial cancel of the whole remainder (or more) becomes a `CancelOrder`.
    PartialCancelOfRemainder,
    /// An execution larger than the remainder is capped at the remainder.
    ExecutionCapped,
    /// An execution at a price other than the resting order's uses the order's price.
    ExecutionPriceDiffers,
    /// "Quoting resumes" becomes `Trading`.
    QuoteResume,
    /// A time with digits below a nanosecond (a float printed with too many digits, as in
    /// `35821.088778456004`) is cut to the nanosecond.
    SubNanosecondTime,
}

impl Rewrite {
    pub const ALL: [Rewrite; 5] = [
        Rewrite::PartialCancelOfRemainder,
        Rewrite::ExecutionCapped,
        Rewrite::ExecutionPriceDiffers,
        Rewrite::QuoteResume,
        Rewrite::SubNanosecondTime,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rewrite::PartialCancelOfRemainder => {
                "type 2: cancels the whole remainder -> CancelOrder"
            }
            Rewrite::ExecutionCapped => "type 4: larger than the remainder -> capped",
            Rewrite::ExecutionPriceDiffers => "type 4: price differs from the order's -> order's",
            Rewrite::QuoteResume => "type 7: quoting resumes -> Trading",
            Rewrite::SubNanosecondTime => "time below a nanosecond -> cut to the ns",
        }
    }
}

/// What the loader has read so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Messages by LOBSTER type (index = type, 1..=7; 0 unused).
    pub messages_by_type: [u64; 8],
    /// Skipped messages by reason (non-zero counts only, in `Skip::ALL` order).
    pub skipped: Vec<(String, u64)>,
    /// Messages mapped otherwise than plainly, by kind (non-zero counts only).
    pub rewritten: Vec<(String, u64)>,
}

/// A resting order as the file leaves it.
#[derive(Clone, Copy, Debug)]
struct Resting {
    id: OrderId,
    account: AccountId,
    side: Side,
    price_ticks: u64,
    /// Total quantity (filled + remaining), in shares.
    total: u64,
    filled: u64,
}

/// The streaming loader: `next_command` (or the `Iterator`) yields one command at a time.
pub struct LobsterLoader<R> {
    reader: R,
    options: LobsterOptions,
    line: String,
    line_no: u64,
    seq: u64,
    /// Flow order id the next accepted `PlaceOrder` gets.
    next_order_id: OrderId,
    resting: HashMap<u64, Resting>,
    /// LOBSTER ids that were placed (or skipped on entry) and are no longer resting.
    gone: HashSet<u64>,
    halted: bool,
    messages_by_type: [u64; 8],
    skipped: [u64; Skip::ALL.len()],
    rewritten: [u64; Rewrite::ALL.len()],
    /// Per account (index = account id): upper bounds of the base and quote it may spend
    /// or lock: Σ sell sizes, Σ buy notionals.
    need: Vec<[u128; 2]>,
    done: bool,
}

impl<R: BufRead> LobsterLoader<R> {
    pub fn new(reader: R, options: LobsterOptions) -> Result<Self, LoadError> {
        let o = &options;
        let sym_ok = !o.symbol.is_empty()
            && o.symbol.len() <= 16
            && o.symbol
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !sym_ok || o.symbol.len() + QUOTE_SYMBOL.len() > 20 || o.symbol == QUOTE_SYMBOL {
            return Err(LoadError::Options(format!(
                "symbol {:?}: want 1-16 chars of [A-Z0-9], not USD",
                o.symbol
            )));
        }
        if !(1..=MAX_ACCOUNTS).contains(&o.accounts) || o.funding == 0 {
            return Err(LoadError::Options(format!(
                "want 1 to {MAX_ACCOUNTS} accounts and a positive funding"
            )));
        }
        let total = (o.accounts as u128 + 1) * o.funding as u128;
        if total > u64::MAX as u128 {
            return Err(LoadError::Options(format!(
                "{} accounts × {} exceeds the u64 supply of an asset",
                o.accounts + 1,
                o.funding
            )));
        }
        let need = vec![[0; 2]; o.accounts as usize + 2];
        Ok(LobsterLoader {
            reader,
            options,
            line: String::new(),
            line_no: 0,
            seq: 0,
            next_order_id: 1,
            resting: HashMap::new(),
            gone: HashSet::new(),
            halted: false,
            messages_by_type: [0; 8],
            skipped: [0; Skip::ALL.len()],
            rewritten: [0; Rewrite::ALL.len()],
            need,
            done: false,
        })
    }

    /// `[stock, USD]`.
    pub fn assets(&self) -> Vec<AssetSpec> {
        vec![
            AssetSpec {
                symbol: self.options.symbol.clone(),
                decimals: 0,
                class: AssetClass::Rwa,
            },
            AssetSpec {
                symbol: QUOTE_SYMBOL.into(),
                decimals: QUOTE_DECIMALS,
                class: AssetClass::Stablecoin,
            },
        ]
    }

    /// `<symbol>USD`: tick one cent, lot one share, no fees, no band.
    pub fn markets(&self) -> Vec<MarketSpec> {
        vec![MarketSpec {
            max_price_ticks: MAX_PRICE_TICKS,
            max_qty_lots: MAX_QTY_LOTS,
            ..super::plain_market(&format!("{}{QUOTE_SYMBOL}", self.options.symbol))
        }]
    }

    /// Accounts the flow funds: the makers' and the taker's.
    pub fn accounts(&self) -> u32 {
        self.options.accounts + 1
    }

    pub fn taker_account(&self) -> AccountId {
        self.options.accounts + 1
    }

    pub fn funding(&self) -> u64 {
        self.options.funding
    }

    pub fn stats(&self) -> Stats {
        Stats {
            lines: self.line_no,
            messages_by_type: self.messages_by_type,
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

    /// The count of one skip reason.
    pub fn skipped(&self, reason: Skip) -> u64 {
        Skip::ALL
            .iter()
            .position(|&s| s == reason)
            .map_or(0, |i| self.skipped[i])
    }

    /// Checks that `funding` covers every account's worst case over what was read: the sum
    /// of its buy notionals (quote) and of its sell sizes (base). An account can never
    /// spend or lock more than that, whatever trades.
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
        while !self.done {
            self.line.clear();
            let line_no = self.line_no + 1;
            let n = (&mut self.reader)
                .take(MAX_LINE_BYTES + 1)
                .read_line(&mut self.line)
                .map_err(|e| {
                    self.done = true;
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        LoadError::Malformed {
                            line: line_no,
                            reason: "not UTF-8 text".into(),
                        }
                    } else {
                        LoadError::Io {
                            line: line_no,
                            source: e,
                        }
                    }
                })?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line_no = line_no;
            if n as u64 > MAX_LINE_BYTES {
                self.done = true;
                return Err(LoadError::Malformed {
                    line: line_no,
                    reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            match self.message() {
                Ok(Some(loaded)) => return Ok(Some(loaded)),
                Ok(None) => {}
                Err(reason) => {
                    self.done = true;
                    return Err(LoadError::Malformed {
                        line: line_no,
                        reason,
                    });
                }
            }
        }
        Ok(None)
    }

    fn skip(&mut self, s: Skip) -> Result<Option<Loaded>, String> {
        if let Some(i) = Skip::ALL.iter().position(|&x| x == s) {
            self.skipped[i] += 1;
        }
        Ok(None)
    }

    fn note(&mut self, r: Rewrite) {
        if let Some(i) = Rewrite::ALL.iter().position(|&x| x == r) {
            self.rewritten[i] += 1;
        }
    }

    fn emit(&mut self, ts_ns: u64, command: Command, expected_maker: Option<OrderId>) -> Loaded {
        self.seq += 1;
        Loaded {
            command: Sequenced {
                seq: self.seq,
                ts_ns,
                command,
            },
            expected_maker,
            line: self.line_no,
        }
    }

    /// Reads `self.line`: `Ok(None)` when skipped, `Err(reason)` when malformed.
    fn message(&mut self) -> Result<Option<Loaded>, String> {
        let text = self.line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return self.skip(Skip::BlankLine);
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        let [time, kind, id, size, price, direction] = fields[..] else {
            return Err(format!(
                "expected 6 comma-separated fields (time,type,order_id,size,price,direction), \
                 found {}",
                fields.len()
            ));
        };
        let (ts_ns, cut) = parse_time_ns(time)
            .ok_or_else(|| format!("time {}: want seconds after midnight", show(time)))?;
        let kind: u8 = parse_field("type", kind)?;
        let id: u64 = parse_field("order_id", id)?;
        let size: u64 = parse_field("size", size)?;
        let price: i64 = parse_field("price", price)?;
        let side = match direction {
            "1" => Side::Buy,
            "-1" => Side::Sell,
            other => return Err(format!("direction {}: want 1 or -1", show(other))),
        };
        if !(1..=7).contains(&kind) {
            return Err(format!("type {kind}: want 1 to 7"));
        }
        self.messages_by_type[kind as usize] += 1;
        if cut {
            self.note(Rewrite::SubNanosecondTime);
        }
        if price < 0 && kind != 7 {
            return Err(format!("price {price}: negative"));
        }
        match kind {
            1 => self.new_order(ts_ns, id, size, price as u64, side),
            2..=4 => self.order_event(ts_ns, kind, id, size, price as u64),
            5 => self.skip(Skip::HiddenExecution),
            6 => self.skip(Skip::CrossTrade),
            _ => self.halt_event(ts_ns, price),
        }
    }

    fn new_order(
        &mut self,
        ts_ns: u64,
        id: u64,
        size: u64,
        price: u64,
        side: Side,
    ) -> Result<Option<Loaded>, String> {
        if self.halted {
            // The engine refuses orders in a halted market; later events for the id count
            // as events of an order no longer resting.
            self.gone.insert(id);
            return self.skip(Skip::DuringHalt);
        }
        if self.resting.contains_key(&id) {
            return self.skip(Skip::DuplicateOrderId);
        }
        let skip = if !price.is_multiple_of(PRICE_UNITS_PER_TICK) {
            Some(Skip::PriceOffTick)
        } else if !(1..=MAX_PRICE_TICKS).contains(&(price / PRICE_UNITS_PER_TICK)) {
            Some(Skip::PriceOutOfRange)
        } else if !(1..=MAX_QTY_LOTS).contains(&size) {
            Some(Skip::SizeOutOfRange)
        } else {
            None
        };
        if let Some(s) = skip {
            self.gone.insert(id);
            return self.skip(s);
        }
        let price_ticks = price / PRICE_UNITS_PER_TICK;
        let account = 1 + (id % self.options.accounts as u64) as AccountId;
        self.add_need(account, side, price_ticks, size);
        let order = Resting {
            id: self.take_order_id(),
            account,
            side,
            price_ticks,
            total: size,
            filled: 0,
        };
        self.gone.remove(&id);
        self.resting.insert(id, order);
        let cmd = Command::PlaceOrder(limit(account, side, TimeInForce::Gtc, price_ticks, size));
        Ok(Some(self.emit(ts_ns, cmd, None)))
    }

    fn order_event(
        &mut self,
        ts_ns: u64,
        kind: u8,
        id: u64,
        size: u64,
        price: u64,
    ) -> Result<Option<Loaded>, String> {
        let Some(&order) = self.resting.get(&id) else {
            let gone = self.gone.contains(&id);
            return self.skip(match (kind, gone) {
                (2, false) => Skip::PartialCancelNotInFile,
                (3, false) => Skip::DeleteNotInFile,
                (_, false) => Skip::ExecutionNotInFile,
                (2, true) => Skip::PartialCancelGone,
                (3, true) => Skip::DeleteGone,
                (_, true) => Skip::ExecutionGone,
            });
        };
        if self.halted {
            // The engine refuses cancels and trades while halted; skipping leaves the order
            // as it was in both the loader and the engine.
            return self.skip(Skip::DuringHalt);
        }
        let remaining = order.total - order.filled;
        let cancel = Command::CancelOrder {
            account: order.account,
            market: 0,
            target: OrderRef::Id(order.id),
        };
        match kind {
            2 if size >= remaining => {
                self.note(Rewrite::PartialCancelOfRemainder);
                self.remove(id);
                Ok(Some(self.emit(ts_ns, cancel, None)))
            }
            2 => {
                let new_qty = order.total - size;
                if let Some(o) = self.resting.get_mut(&id) {
                    o.total = new_qty;
                }
                let cmd = Command::AmendOrder {
                    account: order.account,
                    market: 0,
                    target: OrderRef::Id(order.id),
                    new_qty,
                    new_price: None,
                };
                Ok(Some(self.emit(ts_ns, cmd, None)))
            }
            3 => {
                self.remove(id);
                Ok(Some(self.emit(ts_ns, cancel, None)))
            }
            _ => {
                if size == 0 {
                    return Err("type 4 with size 0".into());
                }
                let executed = if size > remaining {
                    self.note(Rewrite::ExecutionCapped);
                    remaining
                } else {
                    size
                };
                if price != order.price_ticks * PRICE_UNITS_PER_TICK {
                    self.note(Rewrite::ExecutionPriceDiffers);
                }
                let taker = self.taker_account();
                let side = order.side.opposite();
                self.add_need(taker, side, order.price_ticks, executed);
                self.take_order_id();
                if executed == remaining {
                    self.remove(id);
                } else if let Some(o) = self.resting.get_mut(&id) {
                    o.filled += executed;
                }
                let cmd = Command::PlaceOrder(limit(
                    taker,
                    side,
                    TimeInForce::Ioc,
                    order.price_ticks,
                    executed,
                ));
                Ok(Some(self.emit(ts_ns, cmd, Some(order.id))))
            }
        }
    }

    fn halt_event(&mut self, ts_ns: u64, price: i64) -> Result<Option<Loaded>, String> {
        let halt = match price {
            -1 => true,
            0 | 1 => false,
            other => return Err(format!("type 7 with price {other}: want -1, 0 or 1")),
        };
        if halt == self.halted {
            return self.skip(Skip::StatusUnchanged);
        }
        if price == 0 {
            self.note(Rewrite::QuoteResume);
        }
        self.halted = halt;
        let status = if halt {
            MarketStatus::Halted
        } else {
            MarketStatus::Trading
        };
        let cmd = Command::SetMarketStatus {
            market: 0,
            status,
            cancel_open: false,
        };
        Ok(Some(self.emit(ts_ns, cmd, None)))
    }

    fn take_order_id(&mut self) -> OrderId {
        let id = self.next_order_id;
        self.next_order_id += 1;
        id
    }

    fn remove(&mut self, id: u64) {
        self.resting.remove(&id);
        self.gone.insert(id);
    }

    fn add_need(&mut self, account: AccountId, side: Side, price_ticks: u64, size: u64) {
        if let Some(n) = self.need.get_mut(account as usize) {
            // tick × lot is one quote minor unit.
            match side {
                Side::Buy => n[1] = n[1].saturating_add(price_ticks as u128 * size as u128),
                Side::Sell => n[0] = n[0].saturating_add(size as u128),
            }
        }
    }
}

impl<R: BufRead> Iterator for LobsterLoader<R> {
    type Item = Result<Loaded, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_command().transpose()
    }
}

/// Reads a whole LOBSTER message file into a `Flow` (see the module doc).
pub fn load(reader: impl BufRead, options: LobsterOptions) -> Result<Flow, LoadError> {
    load_with_stats(reader, options).map(|(flow, _)| flow)
}

/// `load`, plus what was read, skipped and rewritten.
pub fn load_with_stats(
    reader: impl BufRead,
    options: LobsterOptions,
) -> Result<(Flow, Stats), LoadError> {
    let mut loader = LobsterLoader::new(reader, options)?;
    let mut commands = Vec::new();
    let mut expected_makers = Vec::new();
    while let Some(loaded) = loader.next_command()? {
        if let Some(maker) = loaded.expected_maker {
            let index = u32::try_from(commands.len()).map_err(|_| LoadError::Malformed {
                line: loader.line_no,
                reason: "more than 2^32 commands".into(),
            })?;
            expected_makers.push((index, maker));
        }
        commands.push(loaded.command);
    }
    loader.check_funding()?;
    let stats = loader.stats();
    let flow = Flow {
        name: "lobster".into(),
        assets: loader.assets(),
        markets: loader.markets(),
        accounts: loader.accounts(),
        funding: loader.funding(),
        commands,
        warmup: 0,
        skipped: stats.skipped.clone(),
        expected_makers,
    };
    Ok((flow, stats))
}

fn limit(account: AccountId, side: Side, tif: TimeInForce, price: u64, qty: u64) -> PlaceOrder {
    PlaceOrder {
        account,
        market: 0,
        side,
        order_type: OrderType::Limit,
        tif,
        quantity: Quantity::Base(qty),
        price: Some(price),
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    }
}

/// `seconds[.fraction]` to ns, exactly from the text; digits past the 9th (below a
/// nanosecond) are cut off, and the flag says so.
fn parse_time_ns(s: &str) -> Option<(u64, bool)> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if secs.is_empty() || secs.len() > 12 || frac.len() > 30 || !digits(secs) || !digits(frac) {
        return None;
    }
    let mut ns: u64 = 0;
    for c in frac.bytes().take(9) {
        ns = ns * 10 + (c - b'0') as u64;
    }
    for _ in frac.len()..9 {
        ns *= 10;
    }
    let cut = frac.bytes().skip(9).any(|c| c != b'0');
    let ns = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(ns)?;
    Some((ns, cut))
}

fn parse_field<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name} {}: not an integer in range", show(text)))
}

/// A field for an error message, cut short.
fn show(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineConfig, Event, Exchange};

    const SMALL: &str = include_str!("../../../fixtures/lobster_small.csv");

    fn load_str(s: &str) -> Result<(Flow, Stats), LoadError> {
        load_with_stats(s.as_bytes(), LobsterOptions::new("AAPL"))
    }

    fn err_line(s: &str) -> (u64, String) {
        match load_str(s) {
            Err(LoadError::Malformed { line, reason }) => (line, reason),
            other => panic!("want Malformed, got {other:?}"),
        }
    }

    #[test]
    fn time_converts_exactly() {
        let t = |s| parse_time_ns(s).map(|t| t.0);
        assert_eq!(t("34200.004241176"), Some(34_200_004_241_176));
        assert_eq!(t("34200.00426064"), Some(34_200_004_260_640));
        assert_eq!(t("34200"), Some(34_200_000_000_000));
        assert_eq!(t("34200.5"), Some(34_200_500_000_000));
        assert_eq!(t("34200.5000000000"), Some(34_200_500_000_000));
        // As in the real AAPL file: a float printed with 12 decimals.
        assert_eq!(
            parse_time_ns("35821.088778456004"),
            Some((35_821_088_778_456, true))
        );
        assert_eq!(parse_time_ns("1.0000000000"), Some((1_000_000_000, false)));
        assert_eq!(parse_time_ns("-1.5"), None);
        assert_eq!(parse_time_ns(".5"), None);
        assert_eq!(parse_time_ns("1e3"), None);
        assert_eq!(parse_time_ns("99999999999999999"), None);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let good = "34200.1,1,10,5,5853300,1\n";
        assert_eq!(
            err_line(&format!("{good}34200.2,1,11,5,5853300\n")).0,
            2,
            "too few fields"
        );
        let (line, why) = err_line(&format!("{good}{good}34200.3,9,11,5,5853300,1\n"));
        assert_eq!(line, 3);
        assert!(why.contains("type 9"), "{why}");
        assert_eq!(err_line("34200.1,1,10,5,5853300,0\n").0, 1);
        assert_eq!(err_line("34200.1,1,x,5,5853300,1\n").0, 1);
        assert_eq!(err_line("34200.1,1,10,-5,5853300,1\n").0, 1);
        assert_eq!(err_line("34200.1,1,10,5,-5853300,1\n").0, 1);
        assert_eq!(err_line("34200.1,7,0,0,2,-1\n").0, 1);
        assert_eq!(err_line("t,1,10,5,5853300,1\n").0, 1);
        assert_eq!(err_line(&"9".repeat(5000)).0, 1);
        let bad_utf8: &[u8] = b"34200.1,1,10,5,5853300,1\n\xff\xfe,1\n";
        match load_with_stats(bad_utf8, LobsterOptions::new("AAPL")) {
            Err(LoadError::Malformed { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Errors print their line.
        let e = load_str("34200.1,1,10,5,5853300,1\n1,2\n").unwrap_err();
        assert!(e.to_string().starts_with("LOBSTER line 2: "), "{e}");
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: LobsterOptions| LobsterLoader::new(&b""[..], o).is_err();
        assert!(bad(LobsterOptions::new("aapl")));
        assert!(bad(LobsterOptions::new("USD")));
        assert!(bad(LobsterOptions::new("")));
        let mut o = LobsterOptions::new("AAPL");
        o.funding = u64::MAX / 2;
        assert!(bad(o));
        let mut o = LobsterOptions::new("AAPL");
        o.accounts = 0;
        assert!(bad(o));
        let mut o = LobsterOptions::new("AAPL");
        o.accounts = MAX_ACCOUNTS + 1;
        assert!(bad(o));
        // A funding too small for the file is an error of `load`.
        let mut o = LobsterOptions::new("AAPL");
        o.funding = 1_000;
        match load_with_stats(SMALL.as_bytes(), o) {
            Err(LoadError::Underfunded { asset, .. }) => assert_eq!(asset, "USD"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mangled_input_never_panics() {
        let mut rng = crate::flow::Rng::new(5);
        let alphabet = b"0123456789,.-\n\r 17x";
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
            let _ = load(&bytes[..], LobsterOptions::new("AAPL"));
        }
    }

    /// The fixture, command by command (see fixtures/README.md for the story).
    #[test]
    fn small_fixture_maps_every_message_type() {
        let (flow, stats) = load_str(SMALL).unwrap();
        assert_eq!(stats.lines, 40);
        assert_eq!(stats.messages_by_type, [0, 19, 4, 6, 7, 2, 0, 2]);
        let skipped: Vec<(&str, u64)> = stats
            .skipped
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            skipped,
            [
                (Skip::HiddenExecution.label(), 2),
                (Skip::DeleteNotInFile.label(), 1),
                (Skip::ExecutionNotInFile.label(), 1),
                (Skip::DeleteGone.label(), 1),
                (Skip::DuringHalt.label(), 2),
                (Skip::PriceOffTick.label(), 1),
            ]
        );
        assert_eq!(flow.skipped, stats.skipped);
        assert_eq!(
            stats.rewritten,
            vec![(Rewrite::PartialCancelOfRemainder.label().to_string(), 1)]
        );
        assert_eq!(flow.accounts, 1_001);
        let taker = 1_001;
        let c = &flow.commands;
        assert_eq!(c.len(), 40 - 8);
        assert!(c.iter().enumerate().all(|(i, s)| s.seq == i as u64 + 1));
        assert_eq!(c[0].ts_ns, 34_200_004_241_176);
        let place = |account, side, tif, price, qty| {
            Command::PlaceOrder(limit(account, side, tif, price, qty))
        };
        // Line 1: order 1001 buys 100 at 585.33 as flow order 1 of account 1 + 1001 % 1000.
        assert_eq!(
            c[0].command,
            place(2, Side::Buy, TimeInForce::Gtc, 58_533, 100)
        );
        // The first execution: 60 shares of order 1001 (flow id 1); the IOC sells.
        let (i, maker) = flow.expected_makers[0];
        assert_eq!(maker, 1);
        assert_eq!(
            c[i as usize].command,
            place(taker, Side::Sell, TimeInForce::Ioc, 58_533, 60)
        );
        assert_eq!(
            flow.expected_makers.iter().map(|e| e.1).collect::<Vec<_>>(),
            [1, 4, 1, 2, 11, 8]
        );
        let amends: Vec<_> = c
            .iter()
            .filter_map(|s| match s.command {
                Command::AmendOrder {
                    target, new_qty, ..
                } => Some((target, new_qty)),
                _ => None,
            })
            .collect();
        // Orders 1002 (flow 2) and 1008 (flow 15), 200 shares each, lose 50 by partial
        // cancel: new total 150.
        assert_eq!(amends, [(OrderRef::Id(2), 150), (OrderRef::Id(15), 150)]);
        let statuses: Vec<_> = c
            .iter()
            .filter_map(|s| match s.command {
                Command::SetMarketStatus { status, .. } => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, [MarketStatus::Halted, MarketStatus::Trading]);
    }

    #[test]
    fn small_fixture_replays_with_the_expected_makers() {
        let flow = load(SMALL.as_bytes(), LobsterOptions::new("AAPL")).unwrap();
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
        let mut makers = Vec::new();
        let mut trades = Vec::new();
        for (i, c) in flow.commands.iter().enumerate() {
            out.clear();
            ex.apply(c, &mut out);
            for e in &out {
                assert!(
                    !matches!(
                        e,
                        Event::OrderRejected { .. }
                            | Event::CancelRejected { .. }
                            | Event::CommandRejected { .. }
                    ),
                    "command {i} {c:?}: {e:?}"
                );
                if let Event::Trade {
                    maker_order,
                    qty,
                    price,
                    ..
                } = *e
                {
                    trades.push((maker_order, price, qty));
                }
            }
            if let Some(&(_, want)) = flow.expected_makers.iter().find(|m| m.0 as usize == i) {
                let first = out.iter().find_map(|e| match e {
                    Event::Trade { maker_order, .. } => Some(*maker_order),
                    _ => None,
                });
                makers.push((first, want));
            }
        }
        ex.check_invariants().unwrap();
        assert!(
            makers.iter().all(|(got, want)| *got == Some(*want)),
            "{makers:?}"
        );
        // Every execution trades exactly its size at the maker's price, and nothing else.
        assert_eq!(
            trades,
            [
                (1, 58_533, 60),
                (4, 58_540, 100),
                (1, 58_533, 40),
                (2, 58_532, 30),
                (11, 58_531, 100),
                (8, 58_542, 60)
            ]
        );
        // Orders left resting: the fixture's README lists them.
        let mut open: Vec<_> = (1..=1_001)
            .flat_map(|a| ex.open_orders(a))
            .map(|o| (o.order_id, o.qty, o.remaining))
            .collect();
        open.sort_unstable();
        assert_eq!(
            open,
            [
                (8, 100, 40),
                (14, 50, 50),
                (15, 150, 150),
                (17, 100, 100),
                (18, 300, 300),
                (19, 25, 25),
                (20, 100, 100),
                (22, 100, 100),
                (23, 100, 100)
            ]
        );
    }
}
