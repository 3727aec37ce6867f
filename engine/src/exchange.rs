//! The exchange state machine: books, orders, ledger. Semantics: `docs/engine.md`.
//!
//! Layout, chosen for a short, allocation-free order path:
//! - Orders live in one preallocated arena (`orders`), recycled through a free list; a slot
//!   is found from an order id or a client order id through `SlotTable`s (4 bytes a bucket).
//! - Price levels live in a second arena; each side of a book is a `Vec<(key, level)>`
//!   sorted so that the best level is last (`key` = price for bids, `!price` for asks), so
//!   the best level is O(1), removing it is a pop, and new levels near the top shift little.
//! - Orders of a level form an intrusive doubly-linked FIFO: O(1) cancel by id.
//! - Balances are two dense `u64` arrays indexed by `account * max_assets + asset`.
//! - Deficits (what a reversed deposit could not take back) are sparse, in an ordered map
//!   that is empty unless a reorg hit an account that had spent the deposit.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::command::{Command, OrderRef, PlaceOrder, Sequenced};
use crate::event::{CancelReason, Event, EventSink, RejectReason};
use crate::hash::StableHasher;
use crate::index::{mix64, SlotTable};
use crate::spec::{AssetSpec, EngineConfig, MarketSpec, MarketStatus, SpecError};
use crate::types::*;

pub(crate) mod snapshot;

const NIL: u32 = u32::MAX;

/// An open (resting) order as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOrder {
    pub order_id: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub order_type: OrderType,
    pub tif: TimeInForce,
    pub stp: StpMode,
    pub price: u64,
    /// Total quantity in lots (filled + remaining).
    pub qty: u64,
    pub remaining: u64,
    pub client_order_id: ClientOrderId,
}

// Order flag bits.
const F_SELL: u8 = 1;
const F_GTD: u8 = 1 << 1;
const F_MAKER_ONLY: u8 = 1 << 2;
const F_STP_SHIFT: u8 = 3; // two bits

/// A resting order: 80 bytes.
#[derive(Clone, Copy)]
struct Order {
    id: OrderId,
    remaining: u64,
    qty: u64,
    account: AccountId,
    prev: u32,
    next: u32,
    level: u32,
    market: u16,
    flags: u8,
    client: ClientOrderId,
}

impl Order {
    #[inline]
    fn side(&self) -> Side {
        if self.flags & F_SELL != 0 {
            Side::Sell
        } else {
            Side::Buy
        }
    }
    #[inline]
    fn stp(&self) -> StpMode {
        stp_from_bits((self.flags >> F_STP_SHIFT) & 3)
    }
}

fn stp_bits(s: StpMode) -> u8 {
    match s {
        StpMode::None => 0,
        StpMode::ExpireTaker => 1,
        StpMode::ExpireMaker => 2,
        StpMode::ExpireBoth => 3,
    }
}

fn stp_from_bits(b: u8) -> StpMode {
    match b {
        0 => StpMode::None,
        1 => StpMode::ExpireTaker,
        2 => StpMode::ExpireMaker,
        _ => StpMode::ExpireBoth,
    }
}

#[derive(Clone, Copy)]
struct Level {
    price: u64,
    total: u64,
    head: u32,
    tail: u32,
    count: u32,
}

/// Sort key of a level on its side: ascending keys, best last.
#[inline]
fn key(side: Side, price: u64) -> u64 {
    match side {
        Side::Buy => price,
        Side::Sell => !price,
    }
}

struct Market {
    spec: MarketSpec,
    /// Quote minor units per tick × lot.
    per: u64,
    bids: Vec<(u64, u32)>,
    asks: Vec<(u64, u32)>,
    last_trade: Option<u64>,
    reference: Option<u64>,
    update_id: u64,
    resting: u32,
}

impl Market {
    #[inline]
    fn side(&self, side: Side) -> &Vec<(u64, u32)> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
    #[inline]
    fn side_mut(&mut self, side: Side) -> &mut Vec<(u64, u32)> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// (lower, upper) price band, if one applies now.
    #[inline(always)]
    fn band(&self) -> Option<(u64, u64)> {
        let b = self.spec.price_band_bps as u128;
        if b == 0 {
            return None;
        }
        let r = self.reference.or(self.last_trade)? as u128;
        let lower = if b >= 10_000 {
            0
        } else {
            (r * (10_000 - b)).div_ceil(10_000)
        };
        let upper = r * (10_000 + b) / 10_000;
        Some((lower as u64, upper.min(u64::MAX as u128) as u64))
    }
}

/// What a taker (a new order, or an order moved by amend) has left to match.
struct Taker {
    order_id: OrderId,
    account: AccountId,
    side: Side,
    stp: StpMode,
    /// Price limit in ticks; `None` = any price.
    limit: Option<u64>,
    /// Limit orders spend from their lock at `limit`; market orders spend from free.
    is_limit: bool,
    by_quote: bool,
    /// Lots left (base orders) or quote minor units left (quote orders).
    left: u64,
    stp_stopped: bool,
}

impl Taker {
    #[inline]
    fn accepts(&self, price: u64) -> bool {
        match self.limit {
            None => true,
            Some(l) => match self.side {
                Side::Buy => price <= l,
                Side::Sell => price >= l,
            },
        }
    }
}

struct Withdrawal {
    account: AccountId,
    asset: AssetId,
    amount: u64,
}

/// A deposit credited and not yet settled or reversed.
#[derive(Clone, Copy)]
struct PendingDeposit {
    account: AccountId,
    asset: AssetId,
    amount: u64,
}

pub struct Exchange {
    cfg: EngineConfig,
    /// During a taker command: the ledger cells (taker base, taker quote, fee account base,
    /// fee account quote) whose closing `BalanceChanged` the command owes, each with the
    /// state last reported of it in this command (its start until an event says more).
    /// Makes the last `BalanceChanged` of a cell in a command its final state, even when
    /// the taker also trades as a maker (a self-trade) or the fee account trades.
    taker_cells: [(usize, (u64, u64)); 4],
    tracking_taker: bool,
    assets: Vec<AssetSpec>,
    supply: Vec<u64>,
    markets: Vec<Market>,
    free: Vec<u64>,
    locked: Vec<u64>,
    /// One past the highest account id that ever held a balance or a permission.
    accounts_hw: u32,
    permissions: Vec<u64>,
    /// Open orders per (account, market): `account * max_markets + market`.
    open_counts: Vec<u16>,
    orders: Vec<Order>,
    free_order: u32,
    levels: Vec<Level>,
    free_level: u32,
    order_index: SlotTable,
    client_index: SlotTable,
    /// (expiry, order id), lazily cleaned: entries of orders that left are skipped.
    gtd: BinaryHeap<Reverse<(u64, OrderId)>>,
    gtd_live: u32,
    withdrawals: HashMap<WithdrawalId, Withdrawal>,
    deposits: HashMap<DepositId, PendingDeposit>,
    /// (account, asset) → deficit, only entries above 0. Ordered, so snapshots and the hash
    /// walk it as it is, and an account's entries are one range. It is empty unless a reorg
    /// found the money spent; while it is, the freeze checks cost one load.
    deficits: BTreeMap<(AccountId, AssetId), u64>,
    next_order_id: OrderId,
    next_trade_id: TradeId,
    resting: u32,
    /// Slots of orders to cancel in bulk; capacity = max orders of a market.
    scratch: Vec<u32>,
}

/// Order ids are sequential, so the identity places new orders in consecutive buckets:
/// inserts walk memory in order instead of missing the cache at random.
#[inline]
fn hash_id(id: OrderId) -> u64 {
    id
}

fn hash_client(account: AccountId, c: &ClientOrderId) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ account as u64;
    for &b in c.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    mix64(h)
}

/// The maker side of a fill, computed before any balance moves.
struct Fill {
    base: u64,
    quote: u64,
    taker_fee: u64,
    maker_fee: u64,
    rebate: u64,
}

impl Exchange {
    pub fn new(config: EngineConfig) -> Self {
        let c = config;
        assert!(c.max_accounts > 0 && c.max_assets > 0 && c.max_markets > 0);
        assert!(
            c.max_markets <= u16::MAX as u32 + 1,
            "market ids are stored in 16 bits"
        );
        assert!(c.max_orders < NIL && c.fee_account < c.max_accounts);
        let cells = c.max_accounts as usize * c.max_assets as usize;
        let per_market = c.max_orders_per_market.min(c.max_orders) as usize;
        Exchange {
            taker_cells: [(usize::MAX, (0, 0)); 4],
            tracking_taker: false,
            cfg: c,
            assets: Vec::with_capacity(c.max_assets as usize),
            supply: Vec::with_capacity(c.max_assets as usize),
            markets: Vec::with_capacity(c.max_markets as usize),
            free: vec![0; cells],
            locked: vec![0; cells],
            accounts_hw: c.fee_account + 1,
            permissions: vec![0; c.max_accounts as usize],
            open_counts: vec![0; c.max_accounts as usize * c.max_markets as usize],
            orders: Vec::with_capacity(c.max_orders as usize),
            free_order: NIL,
            levels: Vec::with_capacity(c.max_orders as usize),
            free_level: NIL,
            order_index: SlotTable::new(c.max_orders as usize),
            client_index: SlotTable::new(c.max_orders as usize),
            gtd: BinaryHeap::with_capacity(c.max_gtd_orders as usize),
            gtd_live: 0,
            withdrawals: HashMap::with_capacity(2 * c.max_pending_withdrawals as usize),
            deposits: HashMap::with_capacity(2 * c.max_pending_deposits as usize),
            deficits: BTreeMap::new(),
            next_order_id: 1,
            next_trade_id: 1,
            resting: 0,
            scratch: Vec::with_capacity(per_market),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Touches every preallocated page now (order arena, indexes), so that the
    /// order path never waits on the kernel zeroing a fresh page. Servers and benchmarks
    /// call it at start-up; tests that build many small exchanges need not.
    pub fn prefault(&mut self) {
        let placeholder = Order {
            id: 0,
            remaining: 0,
            qty: 0,
            account: 0,
            prev: NIL,
            next: NIL,
            level: NIL,
            market: 0,
            flags: 0,
            client: ClientOrderId::NONE,
        };
        // Extend each arena to its capacity, chaining the new slots onto the free list in
        // ascending order, so allocation keeps walking memory forwards.
        let (from, cap) = (self.orders.len(), self.orders.capacity());
        for i in (from..cap).rev() {
            let mut o = placeholder;
            o.next = self.free_order;
            self.free_order = i as u32;
            if i == cap - 1 {
                self.orders.resize(cap, placeholder);
            }
            self.orders[i] = o;
        }
        // Levels are not prefaulted: far fewer than orders, they reach their high-water
        // mark during warm-up.
        self.order_index.prefault();
        self.client_index.prefault();
    }

    /// Applies one command, writing its events to `out`.
    pub fn apply<S: EventSink>(&mut self, cmd: &Sequenced, out: &mut S) {
        self.tracking_taker = false;
        match &cmd.command {
            Command::PlaceOrder(p) => self.place(cmd.ts_ns, p, out),
            Command::CancelOrder {
                account,
                market,
                target,
            } => self.cancel_one(*account, *market, *target, out),
            Command::CancelAll { account, market } => self.cancel_all(*account, *market, out),
            Command::AmendOrder {
                account,
                market,
                target,
                new_qty,
                new_price,
            } => self.amend(*account, *market, *target, *new_qty, *new_price, out),
            Command::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(*account, *asset, *amount, out),
            Command::WithdrawHold {
                account,
                asset,
                amount,
                withdrawal,
            } => self.withdraw_hold(*account, *asset, *amount, *withdrawal, out),
            Command::WithdrawRelease { withdrawal } => self.withdraw_end(*withdrawal, false, out),
            Command::WithdrawFinalize { withdrawal } => self.withdraw_end(*withdrawal, true, out),
            Command::DepositCredit {
                deposit,
                account,
                asset,
                amount,
            } => self.deposit_credit(*deposit, *account, *asset, *amount, out),
            Command::DepositSettle { deposit } => self.deposit_settle(*deposit, out),
            Command::DepositReverse { deposit } => self.deposit_reverse(*deposit, out),
            Command::AddAsset(spec) => self.add_asset(spec, out),
            Command::AddMarket(spec) => self.add_market(spec, out),
            Command::SetMarketStatus {
                market,
                status,
                cancel_open,
            } => self.set_status(*market, *status, *cancel_open, out),
            Command::SetReferencePrice { market, price } => {
                self.set_reference(*market, *price, out)
            }
            Command::GrantPermission {
                account,
                permission,
            } => self.set_permission(*account, *permission, true, out),
            Command::RevokePermission {
                account,
                permission,
            } => self.set_permission(*account, *permission, false, out),
            Command::Tick => self.tick(cmd.ts_ns, out),
        }
        // O(1) per market touched: cheap enough to hold on every command in tests.
        #[cfg(debug_assertions)]
        if let Command::PlaceOrder(PlaceOrder { market, .. }) | Command::AmendOrder { market, .. } =
            &cmd.command
        {
            self.debug_assert_not_crossed(*market);
        }
    }

    #[cfg(debug_assertions)]
    fn debug_assert_not_crossed(&self, market: MarketId) {
        if let (Some(b), Some(a)) = (self.best(market, Side::Buy), self.best(market, Side::Sell)) {
            debug_assert!(
                b.0 < a.0,
                "market {market} crossed: bid {} ask {}",
                b.0,
                a.0
            );
        }
    }

    // ----- ledger helpers -----

    #[inline]
    fn cell(&self, account: AccountId, asset: AssetId) -> usize {
        account as usize * self.cfg.max_assets as usize + asset as usize
    }

    #[inline]
    fn emit_balance<S: EventSink>(&mut self, account: AccountId, asset: AssetId, out: &mut S) {
        let c = self.cell(account, asset);
        if self.tracking_taker {
            let now = (self.free[c], self.locked[c]);
            for t in &mut self.taker_cells {
                if t.0 == c {
                    t.1 = now;
                }
            }
        }
        out.push(Event::BalanceChanged {
            account,
            asset,
            free: self.free[c],
            locked: self.locked[c],
        });
    }

    /// The account's deficit in the asset (0 = none).
    #[inline]
    fn owed(&self, account: AccountId, asset: AssetId) -> u64 {
        if self.deficits.is_empty() {
            return 0;
        }
        self.deficits.get(&(account, asset)).copied().unwrap_or(0)
    }

    /// Frozen = some deficit above 0. Callers test `deficits.is_empty()` first, inline, so
    /// that the order path pays one load while nobody owes anything.
    fn frozen(&self, account: AccountId) -> bool {
        self.deficits
            .range((account, 0)..=(account, AssetId::MAX))
            .next()
            .is_some()
    }

    #[inline]
    fn touch_account(&mut self, account: AccountId) {
        if account >= self.accounts_hw {
            self.accounts_hw = account + 1;
        }
    }

    #[inline]
    fn snapshot(&self, account: AccountId, asset: AssetId) -> (u64, u64) {
        let c = self.cell(account, asset);
        (self.free[c], self.locked[c])
    }

    // ----- book helpers -----

    fn alloc_level(&mut self, price: u64) -> u32 {
        let lvl = Level {
            price,
            total: 0,
            head: NIL,
            tail: NIL,
            count: 0,
        };
        if self.free_level != NIL {
            let i = self.free_level;
            self.free_level = self.levels[i as usize].head;
            self.levels[i as usize] = lvl;
            i
        } else {
            assert!(
                self.levels.len() < self.levels.capacity(),
                "level arena over capacity"
            );
            self.levels.push(lvl);
            (self.levels.len() - 1) as u32
        }
    }

    fn free_level_slot(&mut self, i: u32) {
        self.levels[i as usize].head = self.free_level;
        self.free_level = i;
    }

    /// Position of `price` on a side: `Ok(index)` if a level exists there.
    #[inline]
    fn find_level(&self, m: usize, side: Side, price: u64) -> Result<usize, usize> {
        let k = key(side, price);
        let v = self.markets[m].side(side);
        // New orders cluster near the top of the book: look at the best few levels first.
        let n = v.len();
        let mut i = n;
        while i > 0 && n - i < 8 {
            let ki = v[i - 1].0;
            if ki == k {
                return Ok(i - 1);
            }
            if ki < k {
                return Err(i);
            }
            i -= 1;
        }
        v[..i].binary_search_by_key(&k, |e| e.0)
    }

    fn emit_level<S: EventSink>(&mut self, m: usize, side: Side, lvl: u32, out: &mut S) {
        let l = self.levels[lvl as usize];
        let mk = &mut self.markets[m];
        mk.update_id += 1;
        out.push(Event::BookLevel {
            market: m as MarketId,
            side,
            price: l.price,
            total_qty: l.total,
            order_count: l.count,
            update_id: mk.update_id,
        });
    }

    /// Unlinks an order from its level (level totals updated; an emptied level stays).
    fn unlink(&mut self, slot: u32) {
        let o = self.orders[slot as usize];
        let l = &mut self.levels[o.level as usize];
        l.total -= o.remaining;
        l.count -= 1;
        if o.prev == NIL {
            l.head = o.next;
        } else {
            self.orders[o.prev as usize].next = o.next;
        }
        let l = &mut self.levels[o.level as usize];
        if o.next == NIL {
            l.tail = o.prev;
        } else {
            self.orders[o.next as usize].prev = o.prev;
        }
    }

    /// Removes an empty level from its side, wherever it is.
    fn drop_level(&mut self, m: usize, side: Side, lvl: u32) {
        let price = self.levels[lvl as usize].price;
        let pos = self
            .find_level(m, side, price)
            .expect("level to drop is on its side");
        self.markets[m].side_mut(side).remove(pos);
        self.free_level_slot(lvl);
    }

    /// Links an order slot at the back of the level at `price`, creating the level.
    fn link(&mut self, m: usize, side: Side, price: u64, slot: u32) -> u32 {
        let lvl = match self.find_level(m, side, price) {
            Ok(pos) => self.markets[m].side(side)[pos].1,
            Err(pos) => {
                let lvl = self.alloc_level(price);
                let k = key(side, price);
                self.markets[m].side_mut(side).insert(pos, (k, lvl));
                lvl
            }
        };
        let tail = self.levels[lvl as usize].tail;
        {
            let o = &mut self.orders[slot as usize];
            o.level = lvl;
            o.prev = tail;
            o.next = NIL;
        }
        if tail == NIL {
            self.levels[lvl as usize].head = slot;
        } else {
            self.orders[tail as usize].next = slot;
        }
        let rem = self.orders[slot as usize].remaining;
        let l = &mut self.levels[lvl as usize];
        l.tail = slot;
        l.total += rem;
        l.count += 1;
        lvl
    }

    /// Forgets an order that is no longer linked: indexes, counts, slot.
    fn release_slot(&mut self, slot: u32) {
        let o = self.orders[slot as usize];
        let orders = &self.orders;
        self.order_index
            .remove(hash_id(o.id), slot, |s| hash_id(orders[s as usize].id));
        if !o.client.is_none() {
            self.client_index
                .remove(hash_client(o.account, &o.client), slot, |s| {
                    let x = &orders[s as usize];
                    hash_client(x.account, &x.client)
                });
        }
        let oc = o.account as usize * self.cfg.max_markets as usize + o.market as usize;
        self.open_counts[oc] -= 1;
        if o.flags & F_GTD != 0 {
            self.gtd_live -= 1;
        }
        self.resting -= 1;
        self.markets[o.market as usize].resting -= 1;
        self.orders[slot as usize].next = self.free_order;
        self.free_order = slot;
    }

    /// What a resting order's remaining lots lock: (asset, amount).
    #[inline]
    fn order_lock(&self, slot: u32) -> (AssetId, u64) {
        let o = &self.orders[slot as usize];
        let mk = &self.markets[o.market as usize];
        let price = self.levels[o.level as usize].price;
        match o.side() {
            Side::Buy => (
                mk.spec.quote,
                (price as u128 * o.remaining as u128 * mk.per as u128) as u64,
            ),
            Side::Sell => (mk.spec.base, o.remaining * mk.spec.lot_size),
        }
    }

    /// Releases the lock of an order's remaining lots; returns the released asset.
    fn release_lock(&mut self, slot: u32) -> AssetId {
        let o = self.orders[slot as usize];
        let (asset, amount) = self.order_lock(slot);
        let c = self.cell(o.account, asset);
        self.locked[c] -= amount;
        self.free[c] += amount;
        asset
    }

    /// Cancels a resting order. Inside matching (`in_match`) the level is left to the
    /// matching loop; otherwise an emptied level is removed and `BookLevel` emitted.
    fn cancel_resting<S: EventSink>(
        &mut self,
        m: usize,
        slot: u32,
        reason: CancelReason,
        in_match: bool,
        out: &mut S,
    ) {
        let o = self.orders[slot as usize];
        out.push(Event::OrderCancelled {
            order_id: o.id,
            account: o.account,
            market: m as MarketId,
            remaining: o.remaining,
            reason,
        });
        let asset = self.release_lock(slot);
        self.unlink(slot);
        if !in_match {
            let side = o.side();
            self.emit_level(m, side, o.level, out);
            if self.levels[o.level as usize].count == 0 {
                self.drop_level(m, side, o.level);
            }
        }
        self.release_slot(slot);
        self.emit_balance(o.account, asset, out);
    }

    /// The slot of an open order of `account` in `market`.
    fn lookup(&self, account: AccountId, market: MarketId, target: &OrderRef) -> Option<u32> {
        let slot = match target {
            OrderRef::Id(id) => self
                .order_index
                .find(hash_id(*id), |s| self.orders[s as usize].id == *id)?,
            OrderRef::Client(c) => {
                if c.is_none() {
                    return None;
                }
                self.client_index.find(hash_client(account, c), |s| {
                    let o = &self.orders[s as usize];
                    o.account == account && o.client == *c
                })?
            }
        };
        let o = &self.orders[slot as usize];
        (o.account == account && o.market as MarketId == market).then_some(slot)
    }

    // ----- place -----

    fn place<S: EventSink>(&mut self, ts_ns: u64, p: &PlaceOrder, out: &mut S) {
        let lock = match self.check_place(ts_ns, p) {
            Ok(lock) => lock,
            Err(reason) => {
                out.push(Event::OrderRejected {
                    account: p.account,
                    market: p.market,
                    client_order_id: p.client_order_id,
                    reason,
                });
                return;
            }
        };
        let m = p.market as usize;
        let (base, quote) = (self.markets[m].spec.base, self.markets[m].spec.quote);
        self.track_taker(p.account, base, quote);
        self.touch_account(p.account);
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        out.push(Event::OrderAccepted {
            order_id,
            account: p.account,
            market: p.market,
            side: p.side,
            order_type: p.order_type,
            tif: p.tif,
            quantity: p.quantity,
            price: p.price,
            client_order_id: p.client_order_id,
            stp: p.stp,
        });
        let is_limit = p.order_type != OrderType::Market;
        if is_limit {
            let asset = if p.side == Side::Buy { quote } else { base };
            let c = self.cell(p.account, asset);
            self.free[c] -= lock;
            self.locked[c] += lock;
        }
        let (by_quote, left) = match p.quantity {
            Quantity::Base(q) => (false, q),
            Quantity::Quote(a) => (true, a),
        };
        let limit = if is_limit {
            p.price
        } else {
            self.markets[m].band().map(|(lo, hi)| match p.side {
                Side::Buy => hi,
                Side::Sell => lo,
            })
        };
        let mut t = Taker {
            order_id,
            account: p.account,
            side: p.side,
            stp: p.stp,
            limit,
            is_limit,
            by_quote,
            left,
            stp_stopped: false,
        };
        if p.tif == TimeInForce::Fok && !self.fok_fillable(m, &t) {
            out.push(Event::OrderCancelled {
                order_id,
                account: p.account,
                market: p.market,
                remaining: t.left,
                reason: CancelReason::Fok,
            });
            let c = self.cell(p.account, if p.side == Side::Buy { quote } else { base });
            self.locked[c] -= lock;
            self.free[c] += lock;
            return;
        }
        self.match_taker(m, &mut t, out);
        let rests = matches!(p.tif, TimeInForce::Gtc | TimeInForce::Gtd { .. }) && is_limit;
        let qty = match p.quantity {
            Quantity::Base(q) => q,
            Quantity::Quote(_) => 0,
        };
        self.finish_taker(
            m,
            &t,
            rests,
            None,
            qty,
            p.order_type,
            p.tif,
            p.client_order_id,
            out,
        );
        self.emit_taker_balances(out);
    }

    /// Runs the checks of `docs/engine.md` in order; Ok = the amount a limit order locks.
    fn check_place(&self, ts_ns: u64, p: &PlaceOrder) -> Result<u64, RejectReason> {
        use RejectReason::*;
        if p.account >= self.cfg.max_accounts {
            return Err(UnknownAccount);
        }
        let mk = self.markets.get(p.market as usize).ok_or(UnknownMarket)?;
        if !p.client_order_id.is_valid() {
            return Err(InvalidClientOrderId);
        }
        match mk.spec.status {
            MarketStatus::Halted => return Err(MarketHalted),
            MarketStatus::CancelOnly => return Err(MarketCancelOnly),
            MarketStatus::Trading => {}
        }
        if let Some(perm) = mk.spec.required_permission {
            if self.permissions[p.account as usize] & (1u64 << perm) == 0 {
                return Err(NotPermitted);
            }
        }
        if p.side == Side::Buy && !self.deficits.is_empty() && self.frozen(p.account) {
            return Err(AccountFrozen);
        }
        let s = &mk.spec;
        let is_limit = p.order_type != OrderType::Market;
        if is_limit {
            if p.price.is_none() || matches!(p.quantity, Quantity::Quote(_)) {
                return Err(InvalidOrderParameters);
            }
            if p.order_type == OrderType::LimitMaker
                && !matches!(p.tif, TimeInForce::Gtc | TimeInForce::Gtd { .. })
            {
                return Err(InvalidTimeInForce);
            }
        } else {
            if p.price.is_some() {
                return Err(InvalidOrderParameters);
            }
            if p.tif != TimeInForce::Ioc {
                return Err(InvalidTimeInForce);
            }
        }
        if let TimeInForce::Gtd { expire_ns } = p.tif {
            if expire_ns <= ts_ns {
                return Err(InvalidExpiry);
            }
        }
        if let Some(price) = p.price {
            if price < s.min_price_ticks || price > s.max_price_ticks {
                return Err(PriceFilter);
            }
        }
        if let Quantity::Base(q) = p.quantity {
            if q < s.min_qty_lots || q > s.max_qty_lots {
                return Err(LotSize);
            }
        }
        let band = mk.band();
        if let (Some(price), Some((lo, hi))) = (p.price, band) {
            if price < lo || price > hi {
                return Err(PercentPrice);
            }
        }
        let per = mk.per as u128;
        let notional: Option<u128> = match (p.price, p.quantity) {
            (Some(price), Quantity::Base(q)) => Some(price as u128 * q as u128 * per),
            (None, Quantity::Quote(a)) => {
                if a == 0 {
                    return Err(Notional);
                }
                Some(a as u128)
            }
            (None, Quantity::Base(q)) => mk
                .reference
                .or(mk.last_trade)
                .map(|r| r as u128 * q as u128 * per),
            (Some(_), Quantity::Quote(_)) => unreachable!("rejected above"),
        };
        if let Some(n) = notional {
            if n < s.min_notional as u128 || n > s.max_notional as u128 {
                return Err(Notional);
            }
        }
        if !p.client_order_id.is_none()
            && self
                .client_index
                .find(hash_client(p.account, &p.client_order_id), |sl| {
                    let o = &self.orders[sl as usize];
                    o.account == p.account && o.client == p.client_order_id
                })
                .is_some()
        {
            return Err(DuplicateClientOrderId);
        }
        let can_rest = p.order_type == OrderType::LimitMaker
            || (p.order_type == OrderType::Limit
                && matches!(p.tif, TimeInForce::Gtc | TimeInForce::Gtd { .. }));
        if can_rest {
            let oc = p.account as usize * self.cfg.max_markets as usize + p.market as usize;
            if self.open_counts[oc] as u32 >= s.max_open_orders {
                return Err(TooManyOpenOrders);
            }
            let price = p.price.unwrap_or(0);
            if self.resting >= self.cfg.max_orders
                || mk.resting >= self.cfg.max_orders_per_market
                || (matches!(p.tif, TimeInForce::Gtd { .. })
                    && self.gtd_live >= self.cfg.max_gtd_orders)
                || (mk.side(p.side).len() >= self.cfg.max_levels_per_side as usize
                    && self.find_level(p.market as usize, p.side, price).is_err())
            {
                return Err(CapacityExceeded);
            }
        }
        if p.order_type == OrderType::LimitMaker {
            let price = p.price.unwrap_or(0);
            if self.crosses(p.market as usize, p.side, price) {
                return Err(PostOnlyWouldCross);
            }
        }
        let free_base = self.free[self.cell(p.account, s.base)];
        let free_quote = self.free[self.cell(p.account, s.quote)];
        match (p.side, p.price, p.quantity) {
            (Side::Buy, Some(price), Quantity::Base(q)) => {
                let need = price as u128 * q as u128 * per;
                if need > free_quote as u128 {
                    return Err(InsufficientBalance);
                }
                Ok(need as u64)
            }
            (Side::Sell, _, Quantity::Base(q)) => {
                let need = q as u128 * s.lot_size as u128;
                if need > free_base as u128 {
                    return Err(InsufficientBalance);
                }
                Ok(if is_limit { need as u64 } else { 0 })
            }
            (Side::Buy, None, Quantity::Base(_)) | (Side::Sell, None, Quantity::Quote(_)) => {
                let free = if p.side == Side::Buy {
                    free_quote
                } else {
                    free_base
                };
                if free == 0 {
                    return Err(InsufficientBalance);
                }
                Ok(0)
            }
            (Side::Buy, None, Quantity::Quote(a)) => {
                if a > free_quote {
                    return Err(InsufficientBalance);
                }
                Ok(0)
            }
            (_, Some(_), Quantity::Quote(_)) => unreachable!("rejected above"),
        }
    }

    /// Would a resting order at `price` on `side` take liquidity?
    fn crosses(&self, m: usize, side: Side, price: u64) -> bool {
        let opp = self.markets[m].side(side.opposite());
        match opp.last() {
            None => false,
            Some(&(_, lvl)) => {
                let best = self.levels[lvl as usize].price;
                match side {
                    Side::Buy => price >= best,
                    Side::Sell => price <= best,
                }
            }
        }
    }

    /// FOK pre-check (limit orders): can the whole quantity fill right now?
    fn fok_fillable(&self, m: usize, t: &Taker) -> bool {
        let opp = self.markets[m].side(t.side.opposite());
        let mut count: u64 = 0;
        for &(_, lvl) in opp.iter().rev() {
            let l = &self.levels[lvl as usize];
            if !t.accepts(l.price) {
                break;
            }
            let mut cur = l.head;
            while cur != NIL {
                let o = &self.orders[cur as usize];
                if o.account == t.account && t.stp != StpMode::None {
                    if t.stp == StpMode::ExpireMaker {
                        cur = o.next;
                        continue;
                    }
                    return count >= t.left;
                }
                count += o.remaining;
                if count >= t.left {
                    return true;
                }
                cur = o.next;
            }
        }
        count >= t.left
    }

    /// Matches a taker against the opposite side (`docs/engine.md`, Matching).
    fn match_taker<S: EventSink>(&mut self, m: usize, t: &mut Taker, out: &mut S) {
        let opp = t.side.opposite();
        while t.left > 0 {
            let Some(&(_, lvl)) = self.markets[m].side(opp).last() else {
                break;
            };
            let price = self.levels[lvl as usize].price;
            if !t.accepts(price) {
                break;
            }
            let mut changed = false;
            let mut stop = false;
            let mut cur = self.levels[lvl as usize].head;
            while cur != NIL && t.left > 0 {
                let next = self.orders[cur as usize].next;
                if t.stp != StpMode::None && self.orders[cur as usize].account == t.account {
                    if t.stp != StpMode::ExpireTaker {
                        self.cancel_resting(m, cur, CancelReason::SelfTradePrevention, true, out);
                        changed = true;
                    }
                    if t.stp != StpMode::ExpireMaker {
                        t.stp_stopped = true;
                        stop = true;
                        break;
                    }
                    cur = next;
                    continue;
                }
                let f = self.fill_qty(m, t, cur, price);
                if f == 0 {
                    stop = true;
                    break;
                }
                self.execute(m, t, cur, price, f, out);
                changed = true;
                // A maker that still has lots stays at the head of the queue: the taker
                // comes back to it (it may afford more after a self-trade refund) and
                // never reaches the orders behind it.
                if self.orders[cur as usize].remaining == 0 {
                    cur = next;
                }
            }
            let emptied = self.levels[lvl as usize].count == 0;
            if changed {
                self.emit_level(m, opp, lvl, out);
            }
            if emptied {
                self.markets[m].side_mut(opp).pop();
                self.free_level_slot(lvl);
            }
            if stop || !emptied {
                break;
            }
        }
    }

    #[inline]
    fn fill_qty(&self, m: usize, t: &Taker, maker: u32, price: u64) -> u64 {
        let mk = &self.markets[m];
        let maker_rem = self.orders[maker as usize].remaining;
        if t.is_limit {
            return maker_rem.min(t.left);
        }
        let c = price as u128 * mk.per as u128;
        let s = &mk.spec;
        let f: u128 = match (t.side, t.by_quote) {
            (Side::Buy, false) => {
                let free = self.free[self.cell(t.account, s.quote)] as u128;
                (t.left as u128).min(free / c)
            }
            (Side::Sell, false) => t.left as u128,
            (Side::Buy, true) => t.left as u128 / c,
            (Side::Sell, true) => {
                let free = self.free[self.cell(t.account, s.base)] as u128;
                (t.left as u128 / c).min(free / s.lot_size as u128)
            }
        };
        (maker_rem as u128).min(f) as u64
    }

    /// One fill of `f` lots at `price` between the taker and a maker.
    fn execute<S: EventSink>(
        &mut self,
        m: usize,
        t: &mut Taker,
        maker: u32,
        price: u64,
        f: u64,
        out: &mut S,
    ) {
        let mk = &self.markets[m];
        let s = &mk.spec;
        let (base_asset, quote_asset, lot, per) = (s.base, s.quote, s.lot_size, mk.per);
        let fees = s.fees;
        let base = f * lot;
        let quote = (price as u128 * f as u128 * per as u128) as u64;
        let (taker_recv, maker_recv) = match t.side {
            Side::Buy => (base, quote),
            Side::Sell => (quote, base),
        };
        let taker_fee = (taker_recv as u128 * fees.taker_fee_bps as u128 / 10_000) as u64;
        let (maker_fee, rebate) = if fees.maker_fee_bps >= 0 {
            (
                (maker_recv as u128 * fees.maker_fee_bps as u128 / 10_000) as u64,
                0,
            )
        } else {
            (
                0,
                (taker_recv as u128 * fees.maker_fee_bps.unsigned_abs() as u128 / 10_000) as u64,
            )
        };
        debug_assert!(rebate <= taker_fee && taker_fee <= taker_recv && maker_fee <= maker_recv);
        let fill = Fill {
            base,
            quote,
            taker_fee,
            maker_fee,
            rebate,
        };
        let o = self.orders[maker as usize];
        let fee_acct = self.cfg.fee_account;
        let (mb, mq) = (
            self.cell(o.account, base_asset),
            self.cell(o.account, quote_asset),
        );
        let (tb, tq) = (
            self.cell(t.account, base_asset),
            self.cell(t.account, quote_asset),
        );
        let (fb, fq) = (
            self.cell(fee_acct, base_asset),
            self.cell(fee_acct, quote_asset),
        );
        match t.side {
            Side::Buy => {
                // maker sold base, receives quote
                self.locked[mb] -= fill.base;
                self.free[mq] += fill.quote - fill.maker_fee;
                self.free[mb] += fill.rebate;
                if t.is_limit {
                    let limit = t.limit.unwrap_or(price);
                    let locked = (limit as u128 * f as u128 * per as u128) as u64;
                    self.locked[tq] -= locked;
                    self.free[tq] += locked - fill.quote;
                } else {
                    self.free[tq] -= fill.quote;
                }
                self.free[tb] += fill.base - fill.taker_fee;
                self.free[fb] += fill.taker_fee - fill.rebate;
                self.free[fq] += fill.maker_fee;
            }
            Side::Sell => {
                // maker bought base, paid quote from its lock at its own price
                self.locked[mq] -= fill.quote;
                self.free[mb] += fill.base - fill.maker_fee;
                self.free[mq] += fill.rebate;
                if t.is_limit {
                    self.locked[tb] -= fill.base;
                } else {
                    self.free[tb] -= fill.base;
                }
                self.free[tq] += fill.quote - fill.taker_fee;
                self.free[fq] += fill.taker_fee - fill.rebate;
                self.free[fb] += fill.maker_fee;
            }
        }
        let maker_remaining = o.remaining - f;
        self.orders[maker as usize].remaining = maker_remaining;
        self.levels[o.level as usize].total -= f;
        if t.by_quote {
            t.left -= fill.quote;
        } else {
            t.left -= f;
        }
        self.markets[m].last_trade = Some(price);
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        out.push(Event::Trade {
            trade_id,
            market: m as MarketId,
            price,
            qty: f,
            maker_order: o.id,
            maker_account: o.account,
            taker_order: t.order_id,
            taker_account: t.account,
            taker_side: t.side,
            maker_fee: if rebate > 0 {
                -(rebate as i64)
            } else {
                maker_fee as i64
            },
            taker_fee,
            maker_remaining,
        });
        self.emit_balance(o.account, base_asset, out);
        self.emit_balance(o.account, quote_asset, out);
        if maker_remaining == 0 {
            // Its level's total already dropped by the fill: unlink with 0 remaining.
            self.unlink(maker);
            self.release_slot(maker);
        }
    }

    /// After matching: rest the taker's rest, or cancel it. `slot` is the taker's own slot
    /// when it already has one (amend); a new order gets one here if it rests.
    #[allow(clippy::too_many_arguments)]
    fn finish_taker<S: EventSink>(
        &mut self,
        m: usize,
        t: &Taker,
        rests: bool,
        slot: Option<u32>,
        qty: u64,
        order_type: OrderType,
        tif: TimeInForce,
        client: ClientOrderId,
        out: &mut S,
    ) {
        let market = m as MarketId;
        if t.left == 0 {
            if let Some(s) = slot {
                self.release_slot(s);
            }
            return;
        }
        if rests && !t.stp_stopped {
            let price = t.limit.expect("resting orders have a price");
            let s = match slot {
                Some(s) => s,
                None => {
                    let flags = (if t.side == Side::Sell { F_SELL } else { 0 })
                        | (if matches!(tif, TimeInForce::Gtd { .. }) {
                            F_GTD
                        } else {
                            0
                        })
                        | (if order_type == OrderType::LimitMaker {
                            F_MAKER_ONLY
                        } else {
                            0
                        })
                        | (stp_bits(t.stp) << F_STP_SHIFT);
                    let order = Order {
                        id: t.order_id,
                        remaining: t.left,
                        qty,
                        account: t.account,
                        prev: NIL,
                        next: NIL,
                        level: NIL,
                        market: m as u16,
                        flags,
                        client,
                    };
                    let s = if self.free_order != NIL {
                        let s = self.free_order;
                        self.free_order = self.orders[s as usize].next;
                        self.orders[s as usize] = order;
                        s
                    } else {
                        self.orders.push(order);
                        (self.orders.len() - 1) as u32
                    };
                    self.order_index.insert(hash_id(t.order_id), s);
                    if !client.is_none() {
                        self.client_index.insert(hash_client(t.account, &client), s);
                    }
                    let oc = t.account as usize * self.cfg.max_markets as usize + m;
                    self.open_counts[oc] += 1;
                    if let TimeInForce::Gtd { expire_ns } = tif {
                        self.gtd_live += 1;
                        if self.gtd.len() == self.gtd.capacity() {
                            // Drop entries of orders that already left; no allocation.
                            let (orders, index) = (&self.orders, &self.order_index);
                            self.gtd.retain(|Reverse((_, id))| {
                                index
                                    .find(hash_id(*id), |x| orders[x as usize].id == *id)
                                    .is_some()
                            });
                        }
                        self.gtd.push(Reverse((expire_ns, t.order_id)));
                    }
                    self.resting += 1;
                    self.markets[m].resting += 1;
                    s
                }
            };
            let lvl = self.link(m, t.side, price, s);
            self.emit_level(m, t.side, lvl, out);
            return;
        }
        out.push(Event::OrderCancelled {
            order_id: t.order_id,
            account: t.account,
            market,
            remaining: t.left,
            reason: if t.stp_stopped {
                CancelReason::SelfTradePrevention
            } else {
                CancelReason::Ioc
            },
        });
        if t.is_limit {
            let mk = &self.markets[m];
            let (asset, amount) = match t.side {
                Side::Buy => (
                    mk.spec.quote,
                    (t.limit.unwrap_or(0) as u128 * t.left as u128 * mk.per as u128) as u64,
                ),
                Side::Sell => (mk.spec.base, t.left * mk.spec.lot_size),
            };
            let c = self.cell(t.account, asset);
            self.locked[c] -= amount;
            self.free[c] += amount;
        }
        if let Some(s) = slot {
            self.release_slot(s);
        }
    }

    /// Starts tracking a taker command's closing balances (see `taker_cells`).
    fn track_taker(&mut self, account: AccountId, base: AssetId, quote: AssetId) {
        let fee = self.cfg.fee_account;
        for (i, (a, x)) in [(account, base), (account, quote), (fee, base), (fee, quote)]
            .into_iter()
            .enumerate()
        {
            let c = self.cell(a, x);
            self.taker_cells[i] = (c, (self.free[c], self.locked[c]));
        }
        self.tracking_taker = true;
    }

    /// The closing `BalanceChanged`s of a taker command: each tracked cell whose state
    /// differs from what was last reported of it (the fee account's only if it is not the
    /// taker).
    fn emit_taker_balances<S: EventSink>(&mut self, out: &mut S) {
        let fee_is_taker = self.taker_cells[2].0 == self.taker_cells[0].0;
        let n = if fee_is_taker { 2 } else { 4 };
        for i in 0..n {
            let (c, reported) = self.taker_cells[i];
            if (self.free[c], self.locked[c]) != reported {
                let per = self.cfg.max_assets as usize;
                self.emit_balance((c / per) as AccountId, (c % per) as AssetId, out);
            }
        }
        self.tracking_taker = false;
    }

    // ----- cancel and amend -----

    /// Common checks of cancel and amend: account, market, halt, client id.
    fn check_order_cmd(
        &self,
        account: AccountId,
        market: MarketId,
        target: &OrderRef,
    ) -> Result<u32, RejectReason> {
        use RejectReason::*;
        if account >= self.cfg.max_accounts {
            return Err(UnknownAccount);
        }
        let mk = self.markets.get(market as usize).ok_or(UnknownMarket)?;
        if mk.spec.status == MarketStatus::Halted {
            return Err(MarketHalted);
        }
        if let OrderRef::Client(c) = target {
            if !c.is_valid() {
                return Err(InvalidClientOrderId);
            }
        }
        self.lookup(account, market, target).ok_or(UnknownOrder)
    }

    fn cancel_one<S: EventSink>(
        &mut self,
        account: AccountId,
        market: MarketId,
        target: OrderRef,
        out: &mut S,
    ) {
        match self.check_order_cmd(account, market, &target) {
            Ok(slot) => self.cancel_resting(market as usize, slot, CancelReason::User, false, out),
            Err(reason) => out.push(Event::CancelRejected {
                account,
                market,
                reason,
            }),
        }
    }

    fn cancel_all<S: EventSink>(
        &mut self,
        account: AccountId,
        market: Option<MarketId>,
        out: &mut S,
    ) {
        let reject = |reason, out: &mut S| {
            out.push(Event::CancelRejected {
                account,
                market: market.unwrap_or(0),
                reason,
            })
        };
        if account >= self.cfg.max_accounts {
            return reject(RejectReason::UnknownAccount, out);
        }
        match market {
            Some(mid) => {
                let Some(mk) = self.markets.get(mid as usize) else {
                    return reject(RejectReason::UnknownMarket, out);
                };
                if mk.spec.status == MarketStatus::Halted {
                    return reject(RejectReason::MarketHalted, out);
                }
                self.cancel_matching(mid as usize, Some(account), CancelReason::MassCancel, out);
            }
            None => {
                for m in 0..self.markets.len() {
                    if self.markets[m].spec.status != MarketStatus::Halted {
                        self.cancel_matching(m, Some(account), CancelReason::MassCancel, out);
                    }
                }
            }
        }
    }

    /// Cancels the open orders of a market (of one account, or all), ascending order id.
    fn cancel_matching<S: EventSink>(
        &mut self,
        m: usize,
        account: Option<AccountId>,
        reason: CancelReason,
        out: &mut S,
    ) {
        let want = match account {
            Some(a) => self.open_counts[a as usize * self.cfg.max_markets as usize + m] as u32,
            None => self.markets[m].resting,
        };
        if want == 0 {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        'sides: for side in [Side::Buy, Side::Sell] {
            for &(_, lvl) in self.markets[m].side(side).iter() {
                let mut cur = self.levels[lvl as usize].head;
                while cur != NIL {
                    let o = &self.orders[cur as usize];
                    if account.is_none_or(|a| a == o.account) {
                        scratch.push(cur);
                        if scratch.len() as u32 == want {
                            break 'sides;
                        }
                    }
                    cur = o.next;
                }
            }
        }
        scratch.sort_unstable_by_key(|&s| self.orders[s as usize].id);
        for &slot in scratch.iter() {
            self.cancel_resting(m, slot, reason, false, out);
        }
        self.scratch = scratch;
    }

    fn amend<S: EventSink>(
        &mut self,
        account: AccountId,
        market: MarketId,
        target: OrderRef,
        new_qty: u64,
        new_price: Option<u64>,
        out: &mut S,
    ) {
        let reject = |reason, out: &mut S| {
            out.push(Event::CancelRejected {
                account,
                market,
                reason,
            })
        };
        let slot = match self.check_order_cmd(account, market, &target) {
            Ok(s) => s,
            Err(r) => return reject(r, out),
        };
        let m = market as usize;
        let o = self.orders[slot as usize];
        let price = self.levels[o.level as usize].price;
        let filled = o.qty - o.remaining;
        if new_qty <= filled {
            return reject(RejectReason::InvalidAmend, out);
        }
        let side = o.side();
        let new_price_v = new_price.unwrap_or(price);
        if new_price_v == price && new_qty <= o.qty {
            // Keep priority: shrink in place.
            let d = o.qty - new_qty;
            {
                let x = &mut self.orders[slot as usize];
                x.qty = new_qty;
                x.remaining -= d;
            }
            out.push(Event::OrderAmended {
                order_id: o.id,
                account,
                market,
                price,
                qty: new_qty,
                remaining: o.remaining - d,
                priority_kept: true,
            });
            if d > 0 {
                self.levels[o.level as usize].total -= d;
                let mk = &self.markets[m];
                let (asset, amount) = match side {
                    Side::Buy => (
                        mk.spec.quote,
                        (price as u128 * d as u128 * mk.per as u128) as u64,
                    ),
                    Side::Sell => (mk.spec.base, d * mk.spec.lot_size),
                };
                let c = self.cell(account, asset);
                self.locked[c] -= amount;
                self.free[c] += amount;
                self.emit_level(m, side, o.level, out);
                self.emit_balance(account, asset, out);
            }
            return;
        }
        // Cancel-replace.
        if side == Side::Buy
            && (new_qty > o.qty || new_price_v > price)
            && !self.deficits.is_empty()
            && self.frozen(account)
        {
            return reject(RejectReason::AccountFrozen, out);
        }
        let new_rem = new_qty - filled;
        let (old_need, new_need, asset) = {
            let mk = &self.markets[m];
            let s = &mk.spec;
            use RejectReason::*;
            if s.status == MarketStatus::CancelOnly {
                return reject(MarketCancelOnly, out);
            }
            if new_price_v < s.min_price_ticks || new_price_v > s.max_price_ticks {
                return reject(PriceFilter, out);
            }
            if new_qty < s.min_qty_lots || new_qty > s.max_qty_lots {
                return reject(LotSize, out);
            }
            if let Some((lo, hi)) = mk.band() {
                if new_price_v < lo || new_price_v > hi {
                    return reject(PercentPrice, out);
                }
            }
            let per = mk.per as u128;
            let notional = new_price_v as u128 * new_qty as u128 * per;
            if notional < s.min_notional as u128 || notional > s.max_notional as u128 {
                return reject(Notional, out);
            }
            if mk.side(side).len() >= self.cfg.max_levels_per_side as usize
                && self.find_level(m, side, new_price_v).is_err()
            {
                return reject(CapacityExceeded, out);
            }
            if o.flags & F_MAKER_ONLY != 0 && self.crosses(m, side, new_price_v) {
                return reject(PostOnlyWouldCross, out);
            }
            match side {
                Side::Buy => (
                    price as u128 * o.remaining as u128 * per,
                    new_price_v as u128 * new_rem as u128 * per,
                    s.quote,
                ),
                Side::Sell => (
                    o.remaining as u128 * s.lot_size as u128,
                    new_rem as u128 * s.lot_size as u128,
                    s.base,
                ),
            }
        };
        let c = self.cell(account, asset);
        if new_need > self.free[c] as u128 + old_need {
            return reject(RejectReason::InsufficientBalance, out);
        }
        let (base, quote) = (self.markets[m].spec.base, self.markets[m].spec.quote);
        self.track_taker(account, base, quote);
        out.push(Event::OrderAmended {
            order_id: o.id,
            account,
            market,
            price: new_price_v,
            qty: new_qty,
            remaining: new_rem,
            priority_kept: false,
        });
        self.unlink(slot);
        self.emit_level(m, side, o.level, out);
        if self.levels[o.level as usize].count == 0 {
            self.drop_level(m, side, o.level);
        }
        // Move the lock from old to new.
        let (old_need, new_need) = (old_need as u64, new_need as u64);
        self.free[c] = self.free[c] + old_need - new_need;
        self.locked[c] = self.locked[c] - old_need + new_need;
        {
            let x = &mut self.orders[slot as usize];
            x.qty = new_qty;
            x.remaining = new_rem;
        }
        let mut t = Taker {
            order_id: o.id,
            account,
            side,
            stp: o.stp(),
            limit: Some(new_price_v),
            is_limit: true,
            by_quote: false,
            left: new_rem,
            stp_stopped: false,
        };
        self.match_taker(m, &mut t, out);
        self.orders[slot as usize].remaining = t.left;
        let order_type = if o.flags & F_MAKER_ONLY != 0 {
            OrderType::LimitMaker
        } else {
            OrderType::Limit
        };
        self.finish_taker(
            m,
            &t,
            true,
            Some(slot),
            new_qty,
            order_type,
            TimeInForce::Gtc,
            o.client,
            out,
        );
        self.emit_taker_balances(out);
    }

    // ----- ledger commands -----

    fn deposit<S: EventSink>(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        out: &mut S,
    ) {
        use RejectReason::*;
        let r = if account >= self.cfg.max_accounts {
            Err(UnknownAccount)
        } else if asset as usize >= self.assets.len() {
            Err(UnknownAsset)
        } else if amount == 0 {
            Err(InvalidAmount)
        } else {
            self.check_supply(account, asset, amount)
        };
        match r {
            Err(reason) => out.push(Event::CommandRejected { reason }),
            Ok(()) => self.credit(account, asset, amount, out),
        }
    }

    /// A credit of `amount` covers the account's deficit first; the rest must keep the
    /// asset's supply within `u64`.
    fn check_supply(
        &self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    ) -> Result<(), RejectReason> {
        let rest = amount - self.owed(account, asset).min(amount);
        match self.supply[asset as usize].checked_add(rest) {
            Some(_) => Ok(()),
            None => Err(RejectReason::BalanceOverflow),
        }
    }

    /// Credits a checked amount: the deficit first (that part pays what the account owes
    /// and reaches neither its balance nor the supply), the rest to free.
    fn credit<S: EventSink>(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        out: &mut S,
    ) {
        let owed = self.owed(account, asset);
        let covered = owed.min(amount);
        let rest = amount - covered;
        self.supply[asset as usize] += rest;
        let c = self.cell(account, asset);
        self.free[c] += rest;
        self.touch_account(account);
        self.emit_balance(account, asset, out);
        if covered > 0 {
            self.set_deficit(account, asset, owed - covered, out);
        }
    }

    fn set_deficit<S: EventSink>(
        &mut self,
        account: AccountId,
        asset: AssetId,
        deficit: u64,
        out: &mut S,
    ) {
        if deficit == 0 {
            self.deficits.remove(&(account, asset));
        } else {
            // Deficits arise from reorgs only: the rare insert may allocate a tree node.
            self.deficits.insert((account, asset), deficit);
        }
        out.push(Event::DeficitChanged {
            account,
            asset,
            deficit,
        });
    }

    fn deposit_credit<S: EventSink>(
        &mut self,
        deposit: DepositId,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        out: &mut S,
    ) {
        use RejectReason::*;
        let r = if account >= self.cfg.max_accounts {
            Err(UnknownAccount)
        } else if asset as usize >= self.assets.len() {
            Err(UnknownAsset)
        } else if amount == 0 {
            Err(InvalidAmount)
        } else if self.deposits.contains_key(&deposit) {
            Err(DuplicateDeposit)
        } else if self.deposits.len() >= self.cfg.max_pending_deposits as usize {
            Err(CapacityExceeded)
        } else {
            self.check_supply(account, asset, amount)
        };
        if let Err(reason) = r {
            return out.push(Event::CommandRejected { reason });
        }
        self.deposits.insert(
            deposit,
            PendingDeposit {
                account,
                asset,
                amount,
            },
        );
        out.push(Event::DepositCredited {
            deposit,
            account,
            asset,
            amount,
        });
        self.credit(account, asset, amount, out);
    }

    fn deposit_settle<S: EventSink>(&mut self, deposit: DepositId, out: &mut S) {
        match self.deposits.remove(&deposit) {
            Some(_) => out.push(Event::DepositSettled { deposit }),
            None => out.push(Event::CommandRejected {
                reason: RejectReason::UnknownDeposit,
            }),
        }
    }

    /// Takes a reversed deposit back: from free; if free is short, from the holds of the
    /// account's open orders in the asset, cancelled in ascending order id until what they
    /// release covers the shortfall; what is still missing becomes a deficit. Everything is
    /// decided before anything changes, so a refusal (`BalanceOverflow` of the deficit)
    /// leaves the state alone.
    fn deposit_reverse<S: EventSink>(&mut self, deposit: DepositId, out: &mut S) {
        let Some(&d) = self.deposits.get(&deposit) else {
            return out.push(Event::CommandRejected {
                reason: RejectReason::UnknownDeposit,
            });
        };
        let (account, asset, amount) = (d.account, d.asset, d.amount);
        let c = self.cell(account, asset);
        let mut available = self.free[c];
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if available < amount {
            self.orders_holding(account, asset, &mut scratch);
            scratch.sort_unstable_by_key(|&s| self.orders[s as usize].id);
            let mut needed = 0;
            for &slot in scratch.iter() {
                if available >= amount {
                    break;
                }
                // Locks of one account in one asset sum to at most the supply: no overflow.
                available += self.order_lock(slot).1;
                needed += 1;
            }
            scratch.truncate(needed);
        }
        let debited = available.min(amount);
        let missing = amount - debited;
        let owed = self.owed(account, asset);
        if missing > 0 && owed.checked_add(missing).is_none() {
            self.scratch = scratch;
            return out.push(Event::CommandRejected {
                reason: RejectReason::BalanceOverflow,
            });
        }
        self.deposits.remove(&deposit);
        out.push(Event::DepositReversed {
            deposit,
            account,
            asset,
            amount,
            debited,
        });
        for &slot in scratch.iter() {
            let m = self.orders[slot as usize].market as usize;
            self.cancel_resting(m, slot, CancelReason::DepositReversed, false, out);
        }
        self.scratch = scratch;
        self.free[c] -= debited;
        self.supply[asset as usize] -= debited;
        self.emit_balance(account, asset, out);
        if missing > 0 {
            self.set_deficit(account, asset, owed + missing, out);
        }
    }

    /// Slots of the account's open orders whose hold is in `asset`: its sells in markets
    /// of that base, its buys in markets of that quote, in any market status. A reorg is
    /// rare: pushing past the scratch capacity may allocate here.
    fn orders_holding(&self, account: AccountId, asset: AssetId, slots: &mut Vec<u32>) {
        for (m, mk) in self.markets.iter().enumerate() {
            let side = if mk.spec.base == asset {
                Side::Sell
            } else if mk.spec.quote == asset {
                Side::Buy
            } else {
                continue;
            };
            if self.open_counts[account as usize * self.cfg.max_markets as usize + m] == 0 {
                continue;
            }
            for &(_, lvl) in mk.side(side).iter() {
                let mut cur = self.levels[lvl as usize].head;
                while cur != NIL {
                    let o = &self.orders[cur as usize];
                    if o.account == account {
                        slots.push(cur);
                    }
                    cur = o.next;
                }
            }
        }
    }

    fn withdraw_hold<S: EventSink>(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        withdrawal: WithdrawalId,
        out: &mut S,
    ) {
        use RejectReason::*;
        let r = if account >= self.cfg.max_accounts {
            Err(UnknownAccount)
        } else if asset as usize >= self.assets.len() {
            Err(UnknownAsset)
        } else if amount == 0 {
            Err(InvalidAmount)
        } else if !self.deficits.is_empty() && self.frozen(account) {
            Err(AccountFrozen)
        } else if self.withdrawals.contains_key(&withdrawal) {
            Err(DuplicateWithdrawal)
        } else if self.withdrawals.len() >= self.cfg.max_pending_withdrawals as usize {
            Err(CapacityExceeded)
        } else if self.free[self.cell(account, asset)] < amount {
            Err(InsufficientBalance)
        } else {
            Ok(())
        };
        if let Err(reason) = r {
            return out.push(Event::CommandRejected { reason });
        }
        let c = self.cell(account, asset);
        self.free[c] -= amount;
        self.locked[c] += amount;
        self.withdrawals.insert(
            withdrawal,
            Withdrawal {
                account,
                asset,
                amount,
            },
        );
        out.push(Event::WithdrawalHeld {
            withdrawal,
            account,
            asset,
            amount,
        });
        self.emit_balance(account, asset, out);
    }

    fn withdraw_end<S: EventSink>(
        &mut self,
        withdrawal: WithdrawalId,
        finalize: bool,
        out: &mut S,
    ) {
        let Some(w) = self.withdrawals.remove(&withdrawal) else {
            return out.push(Event::CommandRejected {
                reason: RejectReason::UnknownWithdrawal,
            });
        };
        let c = self.cell(w.account, w.asset);
        self.locked[c] -= w.amount;
        if finalize {
            self.supply[w.asset as usize] -= w.amount;
            out.push(Event::WithdrawalFinalized { withdrawal });
        } else {
            self.free[c] += w.amount;
            out.push(Event::WithdrawalReleased { withdrawal });
        }
        self.emit_balance(w.account, w.asset, out);
    }

    // ----- admin commands -----

    fn add_asset<S: EventSink>(&mut self, spec: &AssetSpec, out: &mut S) {
        let r = if self.assets.len() >= self.cfg.max_assets as usize {
            Err(RejectReason::CapacityExceeded)
        } else if let Err(e) = spec.validate() {
            Err(RejectReason::InvalidSpec(e))
        } else if self.assets.iter().any(|a| a.symbol == spec.symbol) {
            Err(RejectReason::InvalidSpec(SpecError::DuplicateSymbol))
        } else {
            Ok(())
        };
        match r {
            Err(reason) => out.push(Event::CommandRejected { reason }),
            Ok(()) => {
                self.assets.push(spec.clone());
                self.supply.push(0);
                out.push(Event::AssetAdded {
                    asset: (self.assets.len() - 1) as AssetId,
                });
            }
        }
    }

    fn add_market<S: EventSink>(&mut self, spec: &MarketSpec, out: &mut S) {
        let assets = &self.assets;
        let r = if self.markets.len() >= self.cfg.max_markets as usize {
            Err(RejectReason::CapacityExceeded)
        } else {
            match spec.validate(|a| assets.get(a as usize).map(|x| x.decimals)) {
                Err(e) => Err(RejectReason::InvalidSpec(e)),
                Ok(_) if self.markets.iter().any(|m| m.spec.symbol == spec.symbol) => {
                    Err(RejectReason::InvalidSpec(SpecError::DuplicateSymbol))
                }
                Ok(per) => Ok(per),
            }
        };
        match r {
            Err(reason) => out.push(Event::CommandRejected { reason }),
            Ok(per) => {
                let levels = self.cfg.max_levels_per_side as usize;
                self.markets.push(Market {
                    spec: spec.clone(),
                    per,
                    bids: Vec::with_capacity(levels),
                    asks: Vec::with_capacity(levels),
                    last_trade: None,
                    reference: None,
                    update_id: 0,
                    resting: 0,
                });
                out.push(Event::MarketAdded {
                    market: (self.markets.len() - 1) as MarketId,
                });
            }
        }
    }

    fn set_status<S: EventSink>(
        &mut self,
        market: MarketId,
        status: MarketStatus,
        cancel_open: bool,
        out: &mut S,
    ) {
        let Some(mk) = self.markets.get_mut(market as usize) else {
            return out.push(Event::CommandRejected {
                reason: RejectReason::UnknownMarket,
            });
        };
        mk.spec.status = status;
        out.push(Event::MarketStatusChanged { market, status });
        if cancel_open {
            self.cancel_matching(market as usize, None, CancelReason::Halted, out);
        }
    }

    fn set_reference<S: EventSink>(&mut self, market: MarketId, price: Option<u64>, out: &mut S) {
        let Some(mk) = self.markets.get_mut(market as usize) else {
            return out.push(Event::CommandRejected {
                reason: RejectReason::UnknownMarket,
            });
        };
        if let Some(p) = price {
            if p < mk.spec.min_price_ticks || p > mk.spec.max_price_ticks {
                return out.push(Event::CommandRejected {
                    reason: RejectReason::PriceFilter,
                });
            }
        }
        mk.reference = price;
        out.push(Event::ReferencePriceSet { market, price });
    }

    fn set_permission<S: EventSink>(
        &mut self,
        account: AccountId,
        permission: PermissionId,
        granted: bool,
        out: &mut S,
    ) {
        let reason = if account >= self.cfg.max_accounts {
            RejectReason::UnknownAccount
        } else if permission >= MAX_PERMISSIONS {
            RejectReason::InvalidAmount
        } else {
            let bit = 1u64 << permission;
            let p = &mut self.permissions[account as usize];
            if granted {
                *p |= bit;
            } else {
                *p &= !bit;
            }
            self.touch_account(account);
            return out.push(Event::PermissionChanged {
                account,
                permission,
                granted,
            });
        };
        out.push(Event::CommandRejected { reason });
    }

    fn tick<S: EventSink>(&mut self, now_ns: u64, out: &mut S) {
        while let Some(&Reverse((expire_ns, id))) = self.gtd.peek() {
            if expire_ns > now_ns {
                break;
            }
            self.gtd.pop();
            let slot = self
                .order_index
                .find(hash_id(id), |s| self.orders[s as usize].id == id);
            if let Some(slot) = slot {
                let m = self.orders[slot as usize].market as usize;
                self.cancel_resting(m, slot, CancelReason::Expired, false, out);
            }
        }
    }

    // ----- queries -----

    /// (free, locked) in minor units.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> (u64, u64) {
        if account >= self.cfg.max_accounts || asset >= self.cfg.max_assets {
            return (0, 0);
        }
        self.snapshot(account, asset)
    }

    /// The account's deficit in the asset: what reversed deposits could not take back and
    /// no credit has covered yet (0 = none).
    pub fn deficit(&self, account: AccountId, asset: AssetId) -> u64 {
        self.owed(account, asset)
    }

    /// Whether the account owes a deficit in any asset: then it may not withdraw, place a
    /// buy, or raise a buy's quantity or price.
    pub fn is_frozen(&self, account: AccountId) -> bool {
        !self.deficits.is_empty() && self.frozen(account)
    }

    /// A pending (credited, not yet settled or reversed) deposit: (account, asset, amount).
    pub fn pending_deposit(&self, deposit: DepositId) -> Option<(AccountId, AssetId, u64)> {
        self.deposits
            .get(&deposit)
            .map(|d| (d.account, d.asset, d.amount))
    }

    /// Credits minus finalized withdrawals minus what reversals took back: the sum of every
    /// account's free and locked balance of the asset.
    pub fn supply(&self, asset: AssetId) -> u64 {
        self.supply.get(asset as usize).copied().unwrap_or(0)
    }

    pub fn asset_spec(&self, asset: AssetId) -> Option<&AssetSpec> {
        self.assets.get(asset as usize)
    }

    pub fn market_spec(&self, market: MarketId) -> Option<&MarketSpec> {
        self.markets.get(market as usize).map(|m| &m.spec)
    }

    pub fn asset_count(&self) -> u32 {
        self.assets.len() as u32
    }

    pub fn market_count(&self) -> u32 {
        self.markets.len() as u32
    }

    /// Quote minor units per tick × lot of a market.
    pub fn quote_per_tick_lot(&self, market: MarketId) -> Option<u64> {
        self.markets.get(market as usize).map(|m| m.per)
    }

    /// Best (price, total lots) on a side.
    pub fn best(&self, market: MarketId, side: Side) -> Option<(u64, u64)> {
        let mk = self.markets.get(market as usize)?;
        let &(_, lvl) = mk.side(side).last()?;
        let l = &self.levels[lvl as usize];
        Some((l.price, l.total))
    }

    /// Up to `max_levels` levels from the best: (price, total lots, order count).
    pub fn depth(&self, market: MarketId, side: Side, max_levels: usize) -> Vec<(u64, u64, u32)> {
        let Some(mk) = self.markets.get(market as usize) else {
            return Vec::new();
        };
        mk.side(side)
            .iter()
            .rev()
            .take(max_levels)
            .map(|&(_, lvl)| {
                let l = &self.levels[lvl as usize];
                (l.price, l.total, l.count)
            })
            .collect()
    }

    /// `expiry` finds a GTD order's expiry (a scan of the heap, or a prepared map).
    fn open_order(&self, slot: u32, expiry: impl Fn(OrderId) -> Option<u64>) -> OpenOrder {
        let o = &self.orders[slot as usize];
        let tif = if o.flags & F_GTD != 0 {
            let expire_ns = expiry(o.id).expect("a GTD order has a heap entry");
            TimeInForce::Gtd { expire_ns }
        } else {
            TimeInForce::Gtc
        };
        OpenOrder {
            order_id: o.id,
            account: o.account,
            market: o.market as MarketId,
            side: o.side(),
            order_type: if o.flags & F_MAKER_ONLY != 0 {
                OrderType::LimitMaker
            } else {
                OrderType::Limit
            },
            tif,
            stp: o.stp(),
            price: self.levels[o.level as usize].price,
            qty: o.qty,
            remaining: o.remaining,
            client_order_id: o.client,
        }
    }

    pub fn order(&self, order_id: OrderId) -> Option<OpenOrder> {
        let slot = self.order_index.find(hash_id(order_id), |s| {
            self.orders[s as usize].id == order_id
        })?;
        Some(self.open_order(slot, |id| self.gtd_expiry_scan(id)))
    }

    /// Every resting order slot, book by book, best level first, queue order.
    fn resting_slots(&self) -> impl Iterator<Item = (usize, Side, u32)> + '_ {
        self.markets.iter().enumerate().flat_map(move |(m, mk)| {
            [Side::Buy, Side::Sell].into_iter().flat_map(move |side| {
                mk.side(side).iter().rev().flat_map(move |&(_, lvl)| {
                    let mut cur = self.levels[lvl as usize].head;
                    std::iter::from_fn(move || {
                        (cur != NIL).then(|| {
                            let s = cur;
                            cur = self.orders[s as usize].next;
                            (m, side, s)
                        })
                    })
                })
            })
        })
    }

    /// The account's open orders, ascending order id.
    pub fn open_orders(&self, account: AccountId) -> Vec<OpenOrder> {
        // One pass over the GTD heap for all the account's orders, not one per order.
        let expiries: HashMap<OrderId, u64> =
            self.gtd.iter().map(|Reverse((e, id))| (*id, *e)).collect();
        let mut v: Vec<OpenOrder> = self
            .resting_slots()
            .filter(|&(_, _, s)| self.orders[s as usize].account == account)
            .map(|(_, _, s)| self.open_order(s, |id| expiries.get(&id).copied()))
            .collect();
        v.sort_by_key(|o| o.order_id);
        v
    }

    /// Every open order of every account, ascending order id: one pass over the books (what
    /// a read model starts from after recovery).
    pub fn all_open_orders(&self) -> Vec<OpenOrder> {
        let expiries: HashMap<OrderId, u64> =
            self.gtd.iter().map(|Reverse((e, id))| (*id, *e)).collect();
        let mut v: Vec<OpenOrder> = self
            .resting_slots()
            .map(|(_, _, s)| self.open_order(s, |id| expiries.get(&id).copied()))
            .collect();
        v.sort_by_key(|o| o.order_id);
        v
    }

    fn gtd_expiry_scan(&self, id: OrderId) -> Option<u64> {
        self.gtd
            .iter()
            .find(|Reverse((_, x))| *x == id)
            .map(|Reverse((e, _))| *e)
    }

    /// The id the next accepted order will get.
    pub fn next_order_id(&self) -> OrderId {
        self.next_order_id
    }

    pub fn resting_orders(&self) -> usize {
        self.resting as usize
    }

    pub fn last_trade_price(&self, market: MarketId) -> Option<u64> {
        self.markets.get(market as usize)?.last_trade
    }

    pub fn reference_price(&self, market: MarketId) -> Option<u64> {
        self.markets.get(market as usize)?.reference
    }

    /// The market's last `BookLevel` update id.
    pub fn update_id(&self, market: MarketId) -> u64 {
        self.markets.get(market as usize).map_or(0, |m| m.update_id)
    }

    /// Bytes the books take: order arena and both order indexes at full capacity, plus the
    /// levels in use. Divided by `max_orders`, it is the cost of a resting order in a full
    /// book.
    pub fn book_heap_bytes(&self) -> usize {
        self.orders.capacity() * std::mem::size_of::<Order>()
            + self.levels.len() * std::mem::size_of::<Level>()
            + self.order_index.heap_bytes()
            + self.client_index.heap_bytes()
    }

    /// Hash over assets, markets, books, orders, balances, holds and counters, in a
    /// canonical order.
    pub fn state_hash(&self) -> u64 {
        let mut h = StableHasher::new();
        h.u64(self.next_order_id);
        h.u64(self.next_trade_id);
        for (a, spec) in self.assets.iter().enumerate() {
            h.bytes(spec.symbol.as_bytes());
            h.u64(spec.decimals as u64);
            h.u64(spec.class as u64);
            h.u64(self.supply[a]);
        }
        let mut gtd: Vec<(OrderId, u64)> =
            self.gtd.iter().map(|Reverse((e, id))| (*id, *e)).collect();
        gtd.sort_unstable();
        for mk in &self.markets {
            let s = &mk.spec;
            h.bytes(s.symbol.as_bytes());
            for x in [
                s.base as u64,
                s.quote as u64,
                s.tick_size,
                s.lot_size,
                s.min_price_ticks,
                s.max_price_ticks,
                s.min_qty_lots,
                s.max_qty_lots,
                s.min_notional,
                s.max_notional,
                s.price_band_bps as u64,
                s.max_open_orders as u64,
                s.status as u64,
                s.fees.maker_fee_bps as i64 as u64,
                s.fees.taker_fee_bps as u64,
                s.required_permission.map_or(u64::MAX, |p| p as u64),
                mk.last_trade.map_or(u64::MAX, |p| p),
                mk.reference.map_or(u64::MAX, |p| p),
                mk.update_id,
            ] {
                h.u64(x);
            }
        }
        for (m, side, slot) in self.resting_slots() {
            let o = &self.orders[slot as usize];
            h.u64(m as u64);
            h.u64(side as u64);
            h.u64(self.levels[o.level as usize].price);
            h.u64(o.id);
            h.u64(o.account as u64);
            h.u64(o.qty);
            h.u64(o.remaining);
            h.u64(o.flags as u64);
            h.bytes(o.client.as_bytes());
            if o.flags & F_GTD != 0 {
                let i = gtd.partition_point(|&(id, _)| id < o.id);
                h.u64(gtd.get(i).map_or(0, |&(_, e)| e));
            }
        }
        for account in 0..self.accounts_hw {
            if self.permissions[account as usize] != 0 {
                h.u64(account as u64);
                h.u64(self.permissions[account as usize]);
            }
            for asset in 0..self.assets.len() as AssetId {
                let (f, l) = self.snapshot(account, asset);
                if f != 0 || l != 0 {
                    h.u64(account as u64);
                    h.u64(asset as u64);
                    h.u64(f);
                    h.u64(l);
                }
            }
        }
        let mut w: Vec<_> = self.withdrawals.iter().collect();
        w.sort_unstable_by_key(|(id, _)| **id);
        for (id, x) in w {
            h.u64(*id);
            h.u64(x.account as u64);
            h.u64(x.asset as u64);
            h.u64(x.amount);
        }
        // Empty in most states, these add nothing then, so hashes of states without them
        // are what they were before they existed; a tag sets each apart from what precedes.
        if !self.deposits.is_empty() {
            h.u64(u64::from_le_bytes(*b"deposits"));
            let mut d: Vec<_> = self.deposits.iter().collect();
            d.sort_unstable_by_key(|(id, _)| **id);
            for (id, x) in d {
                h.u64(*id);
                h.u64(x.account as u64);
                h.u64(x.asset as u64);
                h.u64(x.amount);
            }
        }
        if !self.deficits.is_empty() {
            h.u64(u64::from_le_bytes(*b"deficits"));
            for (&(account, asset), &deficit) in &self.deficits {
                h.u64(account as u64);
                h.u64(asset as u64);
                h.u64(deficit);
            }
        }
        h.finish()
    }

    /// Full scan of every invariant of `docs/engine.md`; `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let na = self.assets.len();
        let mut need: HashMap<(AccountId, AssetId), u128> = HashMap::new();
        let mut counts: HashMap<(AccountId, usize), u32> = HashMap::new();
        let mut resting = 0u32;
        let mut gtd = 0u32;
        for (m, mk) in self.markets.iter().enumerate() {
            let mut market_resting = 0u32;
            for side in [Side::Buy, Side::Sell] {
                let v = mk.side(side);
                for w in v.windows(2) {
                    if w[0].0 >= w[1].0 {
                        return Err(format!("market {m} {side:?}: levels out of order"));
                    }
                }
                for &(k, lvl) in v {
                    let l = &self.levels[lvl as usize];
                    if key(side, l.price) != k {
                        return Err(format!("market {m}: level key mismatch at {}", l.price));
                    }
                    let (mut total, mut count, mut cur, mut prev) = (0u64, 0u32, l.head, NIL);
                    while cur != NIL {
                        let o = &self.orders[cur as usize];
                        if o.prev != prev || o.level != lvl || o.market as usize != m {
                            return Err(format!("order {} badly linked", o.id));
                        }
                        if o.side() != side || o.remaining == 0 || o.remaining > o.qty {
                            return Err(format!("order {} bad side or quantity", o.id));
                        }
                        if self.lookup(o.account, m as MarketId, &OrderRef::Id(o.id)) != Some(cur) {
                            return Err(format!("order {} not indexed", o.id));
                        }
                        if !o.client.is_none()
                            && self.lookup(o.account, m as MarketId, &OrderRef::Client(o.client))
                                != Some(cur)
                        {
                            return Err(format!("order {} client id not indexed", o.id));
                        }
                        total += o.remaining;
                        count += 1;
                        let (asset, amount) = match side {
                            Side::Buy => (
                                mk.spec.quote,
                                l.price as u128 * o.remaining as u128 * mk.per as u128,
                            ),
                            Side::Sell => {
                                (mk.spec.base, o.remaining as u128 * mk.spec.lot_size as u128)
                            }
                        };
                        *need.entry((o.account, asset)).or_default() += amount;
                        *counts.entry((o.account, m)).or_default() += 1;
                        if o.flags & F_GTD != 0 {
                            gtd += 1;
                        }
                        prev = cur;
                        cur = o.next;
                    }
                    if l.tail != prev {
                        return Err(format!("market {m}: level {} tail wrong", l.price));
                    }
                    if count == 0 || count != l.count || total != l.total {
                        return Err(format!(
                            "market {m} {side:?} level {}: total {} count {} but orders sum {total} count {count}",
                            l.price, l.total, l.count
                        ));
                    }
                    market_resting += count;
                }
            }
            if let (Some(b), Some(a)) = (
                self.best(m as MarketId, Side::Buy),
                self.best(m as MarketId, Side::Sell),
            ) {
                if b.0 >= a.0 {
                    return Err(format!("market {m} crossed: bid {} >= ask {}", b.0, a.0));
                }
            }
            if market_resting != mk.resting {
                return Err(format!(
                    "market {m}: resting count {} != {market_resting}",
                    mk.resting
                ));
            }
            resting += market_resting;
        }
        if resting != self.resting || self.order_index.len() != resting as usize {
            return Err(format!(
                "resting count {} / index {} != {resting}",
                self.resting,
                self.order_index.len()
            ));
        }
        if gtd != self.gtd_live {
            return Err(format!("gtd count {} != {gtd}", self.gtd_live));
        }
        for w in self.withdrawals.values() {
            *need.entry((w.account, w.asset)).or_default() += w.amount as u128;
        }
        if self.deposits.len() > self.cfg.max_pending_deposits as usize {
            return Err(format!("{} pending deposits", self.deposits.len()));
        }
        for (id, d) in &self.deposits {
            if d.account >= self.cfg.max_accounts || d.asset as usize >= na || d.amount == 0 {
                return Err(format!(
                    "deposit {id}: unknown account or asset, or zero amount"
                ));
            }
        }
        for (&(account, asset), &deficit) in &self.deficits {
            if account >= self.cfg.max_accounts || asset as usize >= na || deficit == 0 {
                return Err(format!(
                    "deficit of account {account} asset {asset}: unknown, or zero"
                ));
            }
        }
        let mut sums = vec![0u128; na];
        for account in 0..self
            .cfg
            .max_accounts
            .min(self.accounts_hw.max(self.cfg.fee_account + 1))
        {
            for (asset, sum) in sums.iter_mut().enumerate() {
                let (f, l) = self.snapshot(account, asset as AssetId);
                *sum += f as u128 + l as u128;
                let n = need.get(&(account, asset as AssetId)).copied().unwrap_or(0);
                if l as u128 != n {
                    return Err(format!("account {account} asset {asset}: locked {l} but open orders and holds need {n}"));
                }
            }
            for m in 0..self.markets.len() {
                let c =
                    self.open_counts[account as usize * self.cfg.max_markets as usize + m] as u32;
                if c != counts.get(&(account, m)).copied().unwrap_or(0) {
                    return Err(format!(
                        "account {account} market {m}: open count {c} wrong"
                    ));
                }
            }
        }
        for (asset, sum) in sums.iter().enumerate() {
            if *sum != self.supply[asset] as u128 {
                return Err(format!(
                    "asset {asset}: balances sum {sum} != supply {}",
                    self.supply[asset]
                ));
            }
        }
        Ok(())
    }
}
