//! A synthetic order flow in the style of exchange-core's benchmark generator
//! (`TestOrdersGenerator`): first a fill phase that builds each market's book up to a target
//! size with resting GTC orders, then a seeded mix of GTC, IOC and market orders, cancels,
//! price moves and quantity cuts around a drifting price, spread over many accounts and
//! markets, with the book held near its target size.
//!
//! # Exact model
//!
//! Cancels and amends must name live orders, and order ids are handed out by the engine (one
//! per accepted `PlaceOrder`, IOC and market orders included). So the generator runs its own
//! model of the exchange as it goes, as exchange-core's generator runs a naive order book:
//! every market's book (price levels, FIFO queues, remaining quantities), every account's
//! free and locked balances, and the open-order counts. The flow uses only the simple corner
//! of the engine's rules (`plain_market`: tick = lot = 1, no fees, no band, no STP, no client
//! ids, no GTD), where matching is a few lines, so the model predicts the engine exactly:
//! which orders are accepted, which ids they get, which makers they fill, what rests. Every
//! cancel and amend names an order that is live at that point, for its owner; replayed into
//! a fresh exchange (with room for `markets * target_orders`-ish resting orders), no
//! command is rejected. A test checks the model's books and balances against the engine.
//!
//! # Flow layout
//!
//! `commands[..params.fill_commands()]` is the fill (GTC orders that all rest, markets
//! interleaved); the `params.commands` measured commands follow. Each measured command
//! picks a market uniformly and a kind from `SyntheticParams::mix`, then:
//!
//! - the market's mid price takes a ±1 tick random step (kept within half to twice its start);
//! - `gtc`: a limit GTC order of a random account, one in eight priced at the mid or up to 2
//!   ticks through it (it takes what it reaches and rests the rest), the others
//!   `1..=depth_ticks` ticks behind the mid, skewed towards it;
//! - `ioc`: a limit IOC order priced 1-4 ticks through the mid;
//! - `market`: a market order (base quantity);
//! - `cancel`: a random live order of the market, by id, by its owner;
//! - `amend_move`: a random live order moved 1-4 ticks up or down (same quantity): a
//!   cancel-replace at the back of the new level, which may trade;
//! - `amend_down`: a random live order's quantity cut, keeping its priority.
//!
//! Book size control: with the market's book at 105% of `target_orders` or more a drawn
//! `gtc` becomes a cancel, below 95% a drawn cancel becomes a `gtc`; a cancel or amend in an
//! empty book becomes a `gtc`, a quantity cut of a one-lot order a cancel.
//! `SyntheticStats` counts what was generated.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{plain_assets, plain_market, sequence, Flow, Rng};
use crate::command::{Command, OrderRef, PlaceOrder};
use crate::types::*;

/// Relative weights of the measured commands' kinds (percentages by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticMix {
    pub gtc: u32,
    pub ioc: u32,
    pub market: u32,
    pub cancel: u32,
    pub amend_move: u32,
    pub amend_down: u32,
}

impl Default for SyntheticMix {
    fn default() -> Self {
        SyntheticMix {
            gtc: 55,
            ioc: 8,
            market: 2,
            cancel: 20,
            amend_move: 10,
            amend_down: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticParams {
    /// Measured commands, after the fill.
    pub commands: usize,
    /// Resting orders per market that the fill builds and the flow keeps the book near.
    pub target_orders: usize,
    /// Accounts `1..=accounts` (0 counts as 1).
    pub accounts: u32,
    /// Markets `SYN0`, `SYN1`, ... (0 counts as 1).
    pub markets: u32,
    pub mix: SyntheticMix,
    /// Order quantities are uniform in `1..=max_qty` lots (taken within `1..=2^31`).
    pub max_qty: u64,
    /// Passive orders rest up to this many ticks behind the mid (taken within `1..=2^20`).
    pub depth_ticks: u64,
    /// Minor units of each asset every account gets. `accounts * funding` should fit a
    /// `u64` (the engine refuses deposits past that; the model follows it either way).
    pub funding: u64,
    pub seed: u64,
}

impl Default for SyntheticParams {
    fn default() -> Self {
        SyntheticParams {
            commands: 1_000_000,
            target_orders: 1_000,
            accounts: 2_000,
            markets: 10,
            mix: SyntheticMix::default(),
            max_qty: 100,
            depth_ticks: 32,
            funding: 1 << 40,
            seed: 1,
        }
    }
}

impl SyntheticParams {
    /// The parameters of `fixtures/synthetic_small.fcmd`.
    pub fn small() -> Self {
        SyntheticParams {
            commands: 4_000,
            target_orders: 200,
            accounts: 50,
            markets: 2,
            seed: 2024,
            ..Default::default()
        }
    }

    /// Length of the fill phase at the start of `Flow::commands`.
    pub fn fill_commands(&self) -> usize {
        self.markets.max(1) as usize * self.target_orders
    }
}

/// What `generate_with_stats` generated, as the model saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyntheticStats {
    pub fill: usize,
    pub gtc: usize,
    pub ioc: usize,
    pub market: usize,
    pub cancel: usize,
    pub amend_move: usize,
    pub amend_down: usize,
    /// Orders the model expects the engine to refuse (only when an account runs short of
    /// funds or open-order slots; 0 with sane parameters).
    pub rejected: usize,
    /// Cancel-replace amends the model expects the engine to refuse (InsufficientBalance).
    pub amend_rejected: usize,
    /// Draws the book-size control turned from `gtc` into a cancel or back.
    pub rebalanced: usize,
    pub trades: u64,
    /// Resting orders per market at the end.
    pub resting: Vec<usize>,
}

/// Generates the flow (name `synthetic`). Same parameters, same flow.
pub fn generate(params: &SyntheticParams) -> Flow {
    generate_with_stats(params).0
}

pub fn generate_with_stats(params: &SyntheticParams) -> (Flow, SyntheticStats) {
    let (flow, stats, _) = run(params);
    (flow, stats)
}

const BASE: usize = 0;
const QUOTE: usize = 1;
/// `plain_market`'s MAX_NUM_ORDERS.
const MAX_OPEN_ORDERS: u32 = u16::MAX as u32;
/// `plain_market`'s price filter.
const MAX_PRICE: u64 = 1 << 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Balance {
    free: u64,
    locked: u64,
}

#[derive(Clone, Debug)]
struct Order {
    account: AccountId,
    side: Side,
    price: u64,
    total: u64,
    remaining: u64,
    /// Position in its market's `live`.
    live_idx: usize,
}

#[derive(Clone, Debug, Default)]
struct Book {
    bids: BTreeMap<u64, VecDeque<OrderId>>,
    asks: BTreeMap<u64, VecDeque<OrderId>>,
    /// Resting order ids, in no particular order, for uniform picks.
    live: Vec<OrderId>,
    mid: u64,
    start: u64,
}

impl Book {
    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<u64, VecDeque<OrderId>> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
}

/// What a taker is: a limit order (locked at its limit) or a market order (spends free).
#[derive(Clone, Copy)]
enum Taker {
    Limit(u64),
    Market,
}

/// The generator's model of the exchange, for the subset of the rules the flow uses
/// (`plain_market`: per = lot = 1, no fees, no band, STP `None`).
#[derive(Clone, Debug, Default)]
struct Model {
    books: Vec<Book>,
    orders: HashMap<OrderId, Order>,
    next_id: OrderId,
    /// Indexed by account id; `[BASE, QUOTE]`.
    balances: Vec<[Balance; 2]>,
    open: HashMap<(AccountId, MarketId), u32>,
    trades: u64,
}

fn notional(price: u64, qty: u64) -> Option<u64> {
    u64::try_from(price as u128 * qty as u128).ok()
}

impl Model {
    fn new(markets: u32, accounts: u32, funding: u64) -> Model {
        let mut balances = vec![[Balance::default(); 2]; accounts as usize + 1];
        // The engine refuses a deposit that would take an asset's supply past u64::MAX.
        let mut supply = 0u64;
        for b in balances.iter_mut().skip(1) {
            if funding > 0 {
                if let Some(s) = supply.checked_add(funding) {
                    supply = s;
                    b[BASE].free = funding;
                    b[QUOTE].free = funding;
                }
            }
        }
        let books = (0..markets)
            .map(|m| {
                let start = 1_000 * (10 + m as u64 % 10);
                Book {
                    mid: start,
                    start,
                    ..Default::default()
                }
            })
            .collect();
        Model {
            books,
            next_id: 1,
            balances,
            ..Default::default()
        }
    }

    fn open_count(&self, account: AccountId, market: MarketId) -> u32 {
        self.open.get(&(account, market)).copied().unwrap_or(0)
    }

    /// Would the engine accept this order? (The only checks the flow can fail.)
    fn accepts(
        &self,
        account: AccountId,
        market: MarketId,
        side: Side,
        taker: Taker,
        rests: bool,
        qty: u64,
    ) -> bool {
        if rests && self.open_count(account, market) >= MAX_OPEN_ORDERS {
            return false;
        }
        let b = &self.balances[account as usize];
        match (taker, side) {
            (Taker::Limit(p), Side::Buy) => notional(p, qty).is_some_and(|n| n <= b[QUOTE].free),
            (Taker::Limit(_), Side::Sell) | (Taker::Market, Side::Sell) => qty <= b[BASE].free,
            (Taker::Market, Side::Buy) => b[QUOTE].free > 0,
        }
    }

    /// Places an order the model accepts; returns its id.
    fn place(
        &mut self,
        account: AccountId,
        market: MarketId,
        side: Side,
        taker: Taker,
        rests: bool,
        qty: u64,
    ) -> OrderId {
        let id = self.next_id;
        self.next_id += 1;
        if let Taker::Limit(p) = taker {
            self.lock(account, side, p, qty);
        }
        let rem = self.take(account, market, side, taker, qty);
        if rem > 0 {
            match taker {
                Taker::Limit(p) if rests => self.rest(id, account, market, side, p, qty, rem),
                Taker::Limit(p) => self.unlock(account, side, p, rem),
                Taker::Market => {}
            }
        }
        id
    }

    fn lock(&mut self, account: AccountId, side: Side, price: u64, qty: u64) {
        let b = &mut self.balances[account as usize];
        let (asset, amount) = match side {
            Side::Buy => (QUOTE, price * qty),
            Side::Sell => (BASE, qty),
        };
        b[asset].free -= amount;
        b[asset].locked += amount;
    }

    fn unlock(&mut self, account: AccountId, side: Side, price: u64, qty: u64) {
        let b = &mut self.balances[account as usize];
        let (asset, amount) = match side {
            Side::Buy => (QUOTE, price * qty),
            Side::Sell => (BASE, qty),
        };
        b[asset].locked -= amount;
        b[asset].free += amount;
    }

    #[allow(clippy::too_many_arguments)]
    fn rest(
        &mut self,
        id: OrderId,
        account: AccountId,
        market: MarketId,
        side: Side,
        price: u64,
        total: u64,
        remaining: u64,
    ) {
        let book = &mut self.books[market as usize];
        book.side_mut(side).entry(price).or_default().push_back(id);
        let live_idx = book.live.len();
        book.live.push(id);
        self.orders.insert(
            id,
            Order {
                account,
                side,
                price,
                total,
                remaining,
                live_idx,
            },
        );
        *self.open.entry((account, market)).or_insert(0) += 1;
    }

    /// Takes a resting order off the book and out of the model (its lock is the caller's).
    fn unrest(&mut self, market: MarketId, id: OrderId) -> Option<Order> {
        let o = self.orders.remove(&id)?;
        let book = &mut self.books[market as usize];
        let levels = book.side_mut(o.side);
        if let Some(queue) = levels.get_mut(&o.price) {
            if let Some(pos) = queue.iter().position(|&q| q == id) {
                queue.remove(pos);
            }
            if queue.is_empty() {
                levels.remove(&o.price);
            }
        }
        book.live.swap_remove(o.live_idx);
        if let Some(&moved) = book.live.get(o.live_idx) {
            if let Some(m) = self.orders.get_mut(&moved) {
                m.live_idx = o.live_idx;
            }
        }
        if let Some(n) = self.open.get_mut(&(o.account, market)) {
            *n -= 1;
        }
        Some(o)
    }

    /// Matches a taker against the opposite side; returns its unfilled lots.
    fn take(
        &mut self,
        account: AccountId,
        market: MarketId,
        side: Side,
        taker: Taker,
        mut rem: u64,
    ) -> u64 {
        while rem > 0 {
            let book = &mut self.books[market as usize];
            let levels = book.side_mut(side.opposite());
            let best = match side {
                Side::Buy => levels.keys().next(),
                Side::Sell => levels.keys().next_back(),
            };
            let Some(&price) = best else { break };
            if let Taker::Limit(limit) = taker {
                let reachable = match side {
                    Side::Buy => price <= limit,
                    Side::Sell => price >= limit,
                };
                if !reachable {
                    break;
                }
            }
            let Some(&maker_id) = levels.get(&price).and_then(|q| q.front()) else {
                break;
            };
            let Some(maker) = self.orders.get(&maker_id) else {
                break;
            };
            let maker_account = maker.account;
            let mut fill = maker.remaining.min(rem);
            if let (Taker::Market, Side::Buy) = (taker, side) {
                fill = fill.min(self.balances[account as usize][QUOTE].free / price);
            }
            if fill == 0 {
                break;
            }
            let quote = price * fill;
            match side {
                Side::Buy => {
                    let m = &mut self.balances[maker_account as usize];
                    m[BASE].locked -= fill;
                    m[QUOTE].free += quote;
                    let t = &mut self.balances[account as usize];
                    match taker {
                        Taker::Limit(limit) => {
                            t[QUOTE].locked -= limit * fill;
                            t[QUOTE].free += (limit - price) * fill;
                        }
                        Taker::Market => t[QUOTE].free -= quote,
                    }
                    t[BASE].free += fill;
                }
                Side::Sell => {
                    let m = &mut self.balances[maker_account as usize];
                    m[QUOTE].locked -= quote;
                    m[BASE].free += fill;
                    let t = &mut self.balances[account as usize];
                    match taker {
                        Taker::Limit(_) => t[BASE].locked -= fill,
                        Taker::Market => t[BASE].free -= fill,
                    }
                    t[QUOTE].free += quote;
                }
            }
            self.trades += 1;
            rem -= fill;
            let left = match self.orders.get_mut(&maker_id) {
                Some(maker) => {
                    maker.remaining -= fill;
                    maker.remaining
                }
                None => 0,
            };
            if left == 0 {
                self.unrest(market, maker_id);
            }
        }
        rem
    }

    fn cancel(&mut self, market: MarketId, id: OrderId) {
        if let Some(o) = self.unrest(market, id) {
            self.unlock(o.account, o.side, o.price, o.remaining);
        }
    }

    /// Quantity down at the same price: priority kept, the lock for the cut released.
    fn amend_down(&mut self, id: OrderId, new_qty: u64) {
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        let cut = o.total - new_qty;
        o.total = new_qty;
        o.remaining -= cut;
        let (account, side, price) = (o.account, o.side, o.price);
        self.unlock(account, side, price, cut);
        // The level's queue is unchanged: the order keeps its place.
    }

    /// Cancel-replace at a new price, same total quantity; false if the engine would refuse
    /// it (the new lock exceeds free plus the old lock).
    fn amend_move(&mut self, market: MarketId, id: OrderId, new_price: u64) -> bool {
        let Some(o) = self.orders.get(&id) else {
            return false;
        };
        let (account, side, old_price, total, rem) =
            (o.account, o.side, o.price, o.total, o.remaining);
        if side == Side::Buy {
            let b = self.balances[account as usize][QUOTE];
            let fits = notional(new_price, rem)
                .is_some_and(|n| n as u128 <= b.free as u128 + (old_price * rem) as u128);
            if !fits {
                return false;
            }
        }
        self.unrest(market, id);
        self.unlock(account, side, old_price, rem);
        self.lock(account, side, new_price, rem);
        let left = self.take(account, market, side, Taker::Limit(new_price), rem);
        if left > 0 {
            self.rest(id, account, market, side, new_price, total, left);
        }
        true
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gtc,
    Ioc,
    Market,
    Cancel,
    AmendMove,
    AmendDown,
}

fn limit(
    account: AccountId,
    market: MarketId,
    side: Side,
    tif: TimeInForce,
    price: u64,
    qty: u64,
) -> Command {
    Command::PlaceOrder(PlaceOrder {
        account,
        market,
        side,
        order_type: OrderType::Limit,
        tif,
        quantity: Quantity::Base(qty),
        price: Some(price),
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    })
}

struct Generator {
    rng: Rng,
    model: Model,
    accounts: u32,
    max_qty: u64,
    depth: u64,
    cmds: Vec<Command>,
    stats: SyntheticStats,
}

impl Generator {
    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn qty(&mut self) -> u64 {
        1 + self.rng.below(self.max_qty)
    }

    /// A passive price: 1..=depth ticks behind the mid, skewed towards it.
    fn passive_price(&mut self, market: MarketId, side: Side) -> u64 {
        let mid = self.model.books[market as usize].mid;
        let behind = 1 + self.rng.below(self.depth).min(self.rng.below(self.depth));
        match side {
            Side::Buy => mid.saturating_sub(behind).max(1),
            Side::Sell => (mid + behind).min(MAX_PRICE),
        }
    }

    /// A price `1..=4` ticks (IOC) or `0..=2` ticks (aggressive GTC) through the mid.
    fn aggressive_price(&mut self, market: MarketId, side: Side, base: u64, spread: u64) -> u64 {
        let mid = self.model.books[market as usize].mid;
        let through = base + self.rng.below(spread);
        match side {
            Side::Buy => (mid + through).min(MAX_PRICE),
            Side::Sell => mid.saturating_sub(through).max(1),
        }
    }

    /// Emits a limit or market order for a random account the model expects to be accepted
    /// (a few tries; then the order goes out anyway and the model records the rejection).
    fn order(&mut self, market: MarketId, side: Side, taker: Taker, tif: TimeInForce, qty: u64) {
        let rests = tif == TimeInForce::Gtc;
        let mut account = 1 + self.rng.below(self.accounts as u64) as AccountId;
        for _ in 0..8 {
            if self.model.accepts(account, market, side, taker, rests, qty) {
                break;
            }
            account = 1 + self.rng.below(self.accounts as u64) as AccountId;
        }
        let cmd = match taker {
            Taker::Limit(p) => limit(account, market, side, tif, p, qty),
            Taker::Market => Command::PlaceOrder(PlaceOrder {
                account,
                market,
                side,
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                quantity: Quantity::Base(qty),
                price: None,
                client_order_id: ClientOrderId::NONE,
                stp: StpMode::None,
            }),
        };
        self.cmds.push(cmd);
        if self.model.accepts(account, market, side, taker, rests, qty) {
            self.model.place(account, market, side, taker, rests, qty);
        } else {
            self.stats.rejected += 1;
        }
    }

    fn gtc(&mut self, market: MarketId) {
        let side = self.side();
        let qty = self.qty();
        let price = if self.rng.below(8) == 0 {
            self.aggressive_price(market, side, 0, 3)
        } else {
            self.passive_price(market, side)
        };
        self.stats.gtc += 1;
        self.order(market, side, Taker::Limit(price), TimeInForce::Gtc, qty);
    }

    fn random_live(&mut self, market: MarketId) -> Option<(OrderId, Order)> {
        let live = &self.model.books[market as usize].live;
        if live.is_empty() {
            return None;
        }
        let id = live[self.rng.below(live.len() as u64) as usize];
        self.model.orders.get(&id).map(|o| (id, o.clone()))
    }

    fn cancel(&mut self, market: MarketId, id: OrderId, o: &Order) {
        self.cmds.push(Command::CancelOrder {
            account: o.account,
            market,
            target: OrderRef::Id(id),
        });
        self.model.cancel(market, id);
        self.stats.cancel += 1;
    }

    fn step(&mut self, market: MarketId, drawn: Kind, target: usize) {
        // The mid's random walk, kept within half to twice its start.
        let book = &mut self.model.books[market as usize];
        let up = self.rng.below(2) == 0;
        if up && book.mid < 2 * book.start {
            book.mid += 1;
        } else if !up && book.mid > book.start / 2 {
            book.mid -= 1;
        }
        let resting = book.live.len();
        let kind = match drawn {
            Kind::Gtc if resting * 100 >= target * 105 && resting > 0 => Kind::Cancel,
            Kind::Cancel if resting * 100 < target * 95 => Kind::Gtc,
            k => k,
        };
        self.stats.rebalanced += (kind != drawn) as usize;
        if kind == Kind::Gtc {
            return self.gtc(market);
        }
        if kind == Kind::Ioc || kind == Kind::Market {
            let side = self.side();
            let qty = self.qty();
            if kind == Kind::Ioc {
                let price = self.aggressive_price(market, side, 1, 4);
                self.stats.ioc += 1;
                self.order(market, side, Taker::Limit(price), TimeInForce::Ioc, qty);
            } else {
                self.stats.market += 1;
                self.order(market, side, Taker::Market, TimeInForce::Ioc, qty);
            }
            return;
        }
        let Some((id, o)) = self.random_live(market) else {
            return self.gtc(market);
        };
        match kind {
            Kind::AmendDown if o.remaining >= 2 => {
                let filled = o.total - o.remaining;
                let new_qty = filled + 1 + self.rng.below(o.remaining - 1);
                self.cmds.push(Command::AmendOrder {
                    account: o.account,
                    market,
                    target: OrderRef::Id(id),
                    new_qty,
                    new_price: None,
                });
                self.model.amend_down(id, new_qty);
                self.stats.amend_down += 1;
            }
            Kind::AmendMove => {
                let by = 1 + self.rng.below(4);
                let new_price = if self.rng.below(2) == 0 && o.price > by {
                    o.price - by
                } else {
                    (o.price + by).min(MAX_PRICE)
                };
                if new_price == o.price {
                    return self.cancel(market, id, &o);
                }
                self.cmds.push(Command::AmendOrder {
                    account: o.account,
                    market,
                    target: OrderRef::Id(id),
                    new_qty: o.total,
                    new_price: Some(new_price),
                });
                if !self.model.amend_move(market, id, new_price) {
                    self.stats.amend_rejected += 1;
                }
                self.stats.amend_move += 1;
            }
            _ => self.cancel(market, id, &o),
        }
    }
}

/// The generator proper; also returns the model, which tests hold against the engine.
fn run(params: &SyntheticParams) -> (Flow, SyntheticStats, Model) {
    let markets = params.markets.max(1);
    let accounts = params.accounts.max(1);
    let mut g = Generator {
        rng: Rng::new(params.seed),
        model: Model::new(markets, accounts, params.funding),
        accounts,
        max_qty: params.max_qty.clamp(1, 1 << 31),
        depth: params.depth_ticks.clamp(1, 1 << 20),
        cmds: Vec::with_capacity(params.fill_commands() + params.commands),
        stats: SyntheticStats::default(),
    };

    // Fill: passive GTC orders, markets interleaved; the mids stand still, so none trades.
    for i in 0..params.fill_commands() {
        let market = (i % markets as usize) as MarketId;
        let side = g.side();
        let qty = g.qty();
        let price = g.passive_price(market, side);
        g.order(market, side, Taker::Limit(price), TimeInForce::Gtc, qty);
        g.stats.fill += 1;
    }

    let mix = params.mix;
    let weights = [
        (Kind::Gtc, mix.gtc),
        (Kind::Ioc, mix.ioc),
        (Kind::Market, mix.market),
        (Kind::Cancel, mix.cancel),
        (Kind::AmendMove, mix.amend_move),
        (Kind::AmendDown, mix.amend_down),
    ];
    let total: u64 = weights.iter().map(|&(_, w)| w as u64).sum();
    for _ in 0..params.commands {
        let market = g.rng.below(markets as u64) as MarketId;
        let kind = if total == 0 {
            Kind::Gtc
        } else {
            let mut r = g.rng.below(total);
            let mut kind = Kind::Gtc;
            for &(k, w) in &weights {
                if r < w as u64 {
                    kind = k;
                    break;
                }
                r -= w as u64;
            }
            kind
        };
        g.step(market, kind, params.target_orders);
    }

    g.stats.trades = g.model.trades;
    g.stats.resting = g.model.books.iter().map(|b| b.live.len()).collect();
    let flow = Flow {
        name: "synthetic".into(),
        assets: plain_assets(),
        markets: (0..markets)
            .map(|m| plain_market(&format!("SYN{m}")))
            .collect(),
        accounts,
        funding: params.funding,
        commands: sequence(g.cmds),
        warmup: params.fill_commands(),
        skipped: Vec::new(),
        expected_makers: Vec::new(),
    };
    (flow, g.stats, g.model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Sequenced;
    use crate::event::{Event, RejectReason};
    use crate::flow::native;
    use crate::{EngineConfig, Exchange};

    fn params() -> SyntheticParams {
        SyntheticParams {
            commands: 30_000,
            target_orders: 500,
            accounts: 300,
            markets: 3,
            seed: 11,
            ..Default::default()
        }
    }

    /// Replays `flow` into a fresh exchange; returns it and the events of the flow's
    /// commands, one `Vec` per command.
    fn replay(flow: &Flow) -> (Exchange, Vec<Vec<Event>>) {
        let mut ex = Exchange::new(EngineConfig {
            max_accounts: flow.accounts + 1,
            ..Default::default()
        });
        let mut out = Vec::new();
        for (i, command) in flow.setup_commands(0).into_iter().enumerate() {
            ex.apply(
                &Sequenced {
                    seq: i as u64,
                    ts_ns: 0,
                    command,
                },
                &mut out,
            );
        }
        assert!(
            !out.iter()
                .any(|e| matches!(e, Event::CommandRejected { .. })),
            "setup rejected"
        );
        let events = flow
            .commands
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                ex.apply(c, &mut out);
                out
            })
            .collect();
        (ex, events)
    }

    #[test]
    fn same_params_same_flow() {
        let p = SyntheticParams {
            commands: 5_000,
            ..params()
        };
        let a = generate(&p);
        assert_eq!(a, generate(&p));
        assert_ne!(
            a.commands,
            generate(&SyntheticParams {
                seed: 12,
                ..p.clone()
            })
            .commands
        );
        assert_eq!(a.name, "synthetic");
        assert_eq!(a.commands.len(), p.fill_commands() + p.commands);
    }

    #[test]
    fn replay_matches_the_model_exactly() {
        let p = params();
        let (flow, stats, model) = run(&p);
        assert_eq!(stats.rejected + stats.amend_rejected, 0, "{stats:?}");
        let (ex, events) = replay(&flow);
        ex.check_invariants().unwrap();

        // The fill rests entirely.
        let fill = p.fill_commands();
        assert!(events[..fill]
            .iter()
            .flatten()
            .all(|e| !matches!(e, Event::Trade { .. } | Event::OrderRejected { .. })));

        let mut cancels = 0usize;
        let mut amends = 0usize;
        let mut rejected_cancels = 0usize;
        let mut trades = 0u64;
        let mut accepted = 0u64;
        for (c, evs) in flow.commands.iter().zip(&events) {
            match c.command {
                Command::CancelOrder { .. } => cancels += 1,
                Command::AmendOrder { .. } => amends += 1,
                _ => {}
            }
            for e in evs {
                match e {
                    Event::OrderRejected { reason, .. } => panic!("order rejected: {reason:?}"),
                    Event::CancelRejected {
                        reason: RejectReason::UnknownOrder,
                        ..
                    } => rejected_cancels += 1,
                    Event::CancelRejected { reason, .. } => {
                        panic!("cancel/amend rejected: {reason:?}")
                    }
                    Event::Trade { .. } => trades += 1,
                    Event::OrderAccepted { order_id, .. } => {
                        accepted += 1;
                        assert_eq!(*order_id, accepted, "ids count from 1 in acceptance order");
                    }
                    _ => {}
                }
            }
        }
        // The model is exact: every cancel and amend hits a live order.
        assert_eq!(
            rejected_cancels,
            0,
            "of {} cancels/amends",
            cancels + amends
        );
        assert_eq!(cancels, stats.cancel);
        assert_eq!(amends, stats.amend_move + stats.amend_down);
        assert_eq!(trades, stats.trades);
        assert_eq!(accepted, model.next_id - 1);
        assert!(trades > p.commands as u64 / 20, "{trades} trades");
        assert!(stats.ioc > 0 && stats.market > 0 && stats.amend_move > 0 && stats.amend_down > 0);

        // The book near its target, and the model's books and balances are the engine's.
        for (m, book) in model.books.iter().enumerate() {
            let m = m as MarketId;
            let n = book.live.len();
            assert!(
                n * 10 >= p.target_orders * 8 && n * 10 <= p.target_orders * 12,
                "market {m}: {n} resting"
            );
            for side in [Side::Buy, Side::Sell] {
                let levels = match side {
                    Side::Buy => &book.bids,
                    Side::Sell => &book.asks,
                };
                let mut mine: Vec<(u64, u64, u32)> = levels
                    .iter()
                    .map(|(&p, q)| {
                        let total = q.iter().map(|id| model.orders[id].remaining).sum();
                        (p, total, q.len() as u32)
                    })
                    .collect();
                if side == Side::Buy {
                    mine.reverse();
                }
                assert_eq!(ex.depth(m, side, usize::MAX), mine, "market {m} {side:?}");
            }
        }
        assert_eq!(ex.resting_orders(), model.orders.len());
        for (account, b) in model.balances.iter().enumerate().skip(1) {
            for asset in [BASE, QUOTE] {
                let got = ex.balance(account as AccountId, asset as AssetId);
                assert_eq!(got, (b[asset].free, b[asset].locked), "account {account}");
            }
        }
        for (id, o) in &model.orders {
            let e = ex.order(*id).expect("resting in the engine");
            assert_eq!(
                (e.account, e.side, e.price, e.qty, e.remaining),
                (o.account, o.side, o.price, o.total, o.remaining)
            );
        }
    }

    #[test]
    fn short_funds_are_modelled_not_missed() {
        // Tiny funding: many orders are refused; the model must still predict every id.
        let p = SyntheticParams {
            commands: 5_000,
            target_orders: 100,
            accounts: 5,
            markets: 2,
            funding: 20_000,
            seed: 5,
            ..Default::default()
        };
        let (flow, stats, model) = run(&p);
        assert!(stats.rejected > 0, "{stats:?}");
        let (ex, events) = replay(&flow);
        ex.check_invariants().unwrap();
        let events: Vec<Event> = events.into_iter().flatten().collect();
        let rejected = events
            .iter()
            .filter(|e| matches!(e, Event::OrderRejected { .. }))
            .count();
        let bad_cancels = events
            .iter()
            .filter(|e| matches!(e, Event::CancelRejected { .. }))
            .count();
        assert_eq!(rejected, stats.rejected);
        assert_eq!(bad_cancels, stats.amend_rejected);
        assert_eq!(ex.next_order_id(), model.next_id);
        assert_eq!(ex.resting_orders(), model.orders.len());
    }

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/synthetic_small.fcmd"
    );
    const REGENERATE: &str =
        "cargo test -p fulgur-engine --lib flow::synthetic::tests::regenerate_fixture -- --ignored";

    #[test]
    fn fixture_is_the_generator_output_and_replays() {
        let bytes = std::fs::read(FIXTURE)
            .unwrap_or_else(|e| panic!("{FIXTURE}: {e}; create it with: {REGENERATE}"));
        let flow = native::read(&bytes[..]).expect("fixture parses");
        let expected = generate(&SyntheticParams::small());
        assert!(
            flow == expected,
            "fixtures/synthetic_small.fcmd is not synthetic::generate(&SyntheticParams::small()) \
             any more; if the generator or the format changed on purpose, regenerate it with: \
             {REGENERATE}"
        );
        let (ex, events) = replay(&flow);
        ex.check_invariants().unwrap();
        let events: Vec<Event> = events.into_iter().flatten().collect();
        assert!(!events.iter().any(|e| matches!(
            e,
            Event::OrderRejected { .. } | Event::CancelRejected { .. }
        )));
        assert!(events.iter().any(|e| matches!(e, Event::Trade { .. })));
    }

    /// Writes `fixtures/synthetic_small.fcmd` (run with `--ignored`, see `REGENERATE`).
    #[test]
    #[ignore]
    fn regenerate_fixture() {
        let flow = generate(&SyntheticParams::small());
        let file = std::fs::File::create(FIXTURE).unwrap();
        native::write(&flow, file).unwrap();
    }
}
