//! A naive reference implementation of `docs/engine.md`, written independently of
//! `engine/src/exchange.rs` so the property tests can compare the two event by event.
//!
//! Everything here is deliberately plain: resting orders live in one `Vec` in time-priority
//! order (an order entering the book is pushed at the end), price levels are found by
//! scanning that `Vec`, balances sit in a `BTreeMap`. Arithmetic is checked and panics on
//! overflow or underflow, since either would mean a bug here or a broken contract.
//!
//! Where `docs/engine.md` left room, the readings chosen are now written there, under
//! "Fine points".

#![allow(dead_code)]

use std::collections::BTreeMap;

use fulgur_engine::spec::SpecError;
use fulgur_engine::{
    AccountId, AssetId, AssetSpec, CancelReason, ClientOrderId, Command, DepositId, EngineConfig,
    Event, MarketId, MarketSpec, MarketStatus, OpenOrder, OrderId, OrderRef, OrderType, PlaceOrder,
    Quantity, RejectReason, Sequenced, Side, StpMode, TimeInForce, WithdrawalId, MAX_PERMISSIONS,
};

/// The `market` of a `CancelRejected` for `CancelAll { market: None }` (docs/engine.md).
pub const NO_MARKET: MarketId = 0;

struct RefMarket {
    spec: MarketSpec,
    /// Quote minor units of one tick times one lot.
    per: u64,
    status: MarketStatus,
    admin_reference: Option<u64>,
    last_trade: Option<u64>,
    update_id: u64,
}

#[derive(Clone, Copy, Debug)]
struct PendingWithdrawal {
    id: WithdrawalId,
    account: AccountId,
    asset: AssetId,
    amount: u64,
}

#[derive(Clone, Copy, Debug)]
struct PendingDeposit {
    id: DepositId,
    account: AccountId,
    asset: AssetId,
    amount: u64,
}

/// An order while it is the taker (a new order, or an order moved by a cancel-replace amend).
#[derive(Clone, Copy, Debug)]
struct Taker {
    order_id: OrderId,
    account: AccountId,
    market: MarketId,
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    stp: StpMode,
    client_order_id: ClientOrderId,
    /// Limit price in ticks (0 for market orders, unused).
    price: u64,
    /// Total quantity in lots if it comes to rest.
    qty: u64,
    /// What is left: lots, or quote minor units for a `Quantity::Quote` order.
    left: u64,
    by_quote: bool,
}

/// (free, locked) of the taker's and the fee account's base and quote before a command.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    taker: [(u64, u64); 2],
    fee: [(u64, u64); 2],
}

pub struct RefExchange {
    cfg: EngineConfig,
    assets: Vec<AssetSpec>,
    /// Deposits minus finalized withdrawals, per asset.
    supply: Vec<u64>,
    markets: Vec<RefMarket>,
    /// Every resting order, in time priority (first in, first out within a level).
    orders: Vec<OpenOrder>,
    /// (account, asset) -> (free, locked); missing means (0, 0).
    balances: BTreeMap<(AccountId, AssetId), (u64, u64)>,
    withdrawals: Vec<PendingWithdrawal>,
    /// Credited deposits not yet settled or reversed, in credit order.
    deposits: Vec<PendingDeposit>,
    /// (account, asset) -> deficit; only entries above 0.
    deficits: BTreeMap<(AccountId, AssetId), u64>,
    /// Per asset: every credit (`Deposit`, `DepositCredit`) minus every reversed deposit
    /// minus every finalized withdrawal, whatever the balances did: what custody should hold
    /// on chain. Signed: a reversal of money already withdrawn takes it below zero.
    on_chain: Vec<i128>,
    /// account -> permission bits.
    permissions: BTreeMap<AccountId, u64>,
    next_order_id: OrderId,
    next_trade_id: u64,
    out: Vec<Event>,
}

fn to_u64(x: u128, what: &str) -> u64 {
    u64::try_from(x).unwrap_or_else(|_| panic!("reference: {what} does not fit u64: {x}"))
}

/// Is a level at `level_price` acceptable for a taker on `side` with `limit` (None = any)?
fn acceptable(side: Side, level_price: u64, limit: Option<u128>) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => (level_price as u128) <= l,
        (Side::Sell, Some(l)) => (level_price as u128) >= l,
    }
}

/// Does a `side` order at `price` reach the best opposite price?
fn reaches(side: Side, price: u64, best_opposite: u64) -> bool {
    match side {
        Side::Buy => price >= best_opposite,
        Side::Sell => price <= best_opposite,
    }
}

fn can_rest(order_type: OrderType, tif: TimeInForce) -> bool {
    match order_type {
        OrderType::LimitMaker => true,
        OrderType::Limit => matches!(tif, TimeInForce::Gtc | TimeInForce::Gtd { .. }),
        OrderType::Market => false,
    }
}

impl RefExchange {
    pub fn new(cfg: EngineConfig) -> Self {
        RefExchange {
            cfg,
            assets: Vec::new(),
            supply: Vec::new(),
            markets: Vec::new(),
            orders: Vec::new(),
            balances: BTreeMap::new(),
            withdrawals: Vec::new(),
            deposits: Vec::new(),
            deficits: BTreeMap::new(),
            on_chain: Vec::new(),
            permissions: BTreeMap::new(),
            next_order_id: 1,
            next_trade_id: 1,
            out: Vec::new(),
        }
    }

    // ------------------------------------------------------------------ queries

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// (free, locked) in minor units.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> (u64, u64) {
        self.balances
            .get(&(account, asset))
            .copied()
            .unwrap_or((0, 0))
    }

    pub fn supply(&self, asset: AssetId) -> u64 {
        self.supply[asset as usize]
    }

    pub fn deficit(&self, account: AccountId, asset: AssetId) -> u64 {
        self.deficits.get(&(account, asset)).copied().unwrap_or(0)
    }

    /// Some deficit above 0.
    pub fn is_frozen(&self, account: AccountId) -> bool {
        self.deficits.keys().any(|&(a, _)| a == account)
    }

    pub fn pending_deposit(&self, id: DepositId) -> Option<(AccountId, AssetId, u64)> {
        self.deposits
            .iter()
            .find(|d| d.id == id)
            .map(|d| (d.account, d.asset, d.amount))
    }

    /// Every (account, asset, deficit) above 0, ascending.
    pub fn deficits(&self) -> Vec<(AccountId, AssetId, u64)> {
        self.deficits
            .iter()
            .map(|(&(a, x), &d)| (a, x, d))
            .collect()
    }

    /// Ids of the pending deposits, in credit order.
    pub fn pending_deposit_ids(&self) -> Vec<DepositId> {
        self.deposits.iter().map(|d| d.id).collect()
    }

    pub fn asset_count(&self) -> u32 {
        self.assets.len() as u32
    }

    pub fn market_count(&self) -> u32 {
        self.markets.len() as u32
    }

    pub fn market_status(&self, market: MarketId) -> Option<MarketStatus> {
        self.markets.get(market as usize).map(|m| m.status)
    }

    pub fn last_trade_price(&self, market: MarketId) -> Option<u64> {
        self.markets.get(market as usize).and_then(|m| m.last_trade)
    }

    pub fn update_id(&self, market: MarketId) -> u64 {
        self.markets[market as usize].update_id
    }

    /// Every resting order, in time priority.
    pub fn resting(&self) -> &[OpenOrder] {
        &self.orders
    }

    pub fn order(&self, order_id: OrderId) -> Option<OpenOrder> {
        self.orders.iter().find(|o| o.order_id == order_id).copied()
    }

    /// The account's open orders, ascending order id.
    pub fn open_orders(&self, account: AccountId) -> Vec<OpenOrder> {
        let mut v: Vec<OpenOrder> = self
            .orders
            .iter()
            .filter(|o| o.account == account)
            .copied()
            .collect();
        v.sort_by_key(|o| o.order_id);
        v
    }

    /// All levels of a side, best first: (price, total lots, order count).
    pub fn depth(&self, market: MarketId, side: Side) -> Vec<(u64, u64, u32)> {
        self.level_prices(market, side)
            .into_iter()
            .map(|p| {
                let (total, count) = self.level(market, side, p);
                (p, total, count)
            })
            .collect()
    }

    pub fn best(&self, market: MarketId, side: Side) -> Option<(u64, u64)> {
        self.depth(market, side).first().map(|&(p, t, _)| (p, t))
    }

    // ------------------------------------------------------------------ apply

    pub fn apply(&mut self, cmd: &Sequenced) -> Vec<Event> {
        self.out.clear();
        let ts = cmd.ts_ns;
        match &cmd.command {
            Command::PlaceOrder(p) => self.place_order(ts, p),
            Command::CancelOrder {
                account,
                market,
                target,
            } => self.cancel_order(*account, *market, target),
            Command::CancelAll { account, market } => self.cancel_all(*account, *market),
            Command::AmendOrder {
                account,
                market,
                target,
                new_qty,
                new_price,
            } => self.amend(*account, *market, target, *new_qty, *new_price),
            Command::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(*account, *asset, *amount),
            Command::WithdrawHold {
                account,
                asset,
                amount,
                withdrawal,
            } => self.withdraw_hold(*account, *asset, *amount, *withdrawal),
            Command::WithdrawRelease { withdrawal } => self.withdraw_release(*withdrawal),
            Command::WithdrawFinalize { withdrawal } => self.withdraw_finalize(*withdrawal),
            Command::DepositCredit {
                deposit,
                account,
                asset,
                amount,
            } => self.deposit_credit(*deposit, *account, *asset, *amount),
            Command::DepositSettle { deposit } => self.deposit_settle(*deposit),
            Command::DepositReverse { deposit } => self.deposit_reverse(*deposit),
            Command::AddAsset(spec) => self.add_asset(spec),
            Command::AddMarket(spec) => self.add_market(spec),
            Command::SetMarketStatus {
                market,
                status,
                cancel_open,
            } => self.set_market_status(*market, *status, *cancel_open),
            Command::SetReferencePrice { market, price } => {
                self.set_reference_price(*market, *price)
            }
            Command::GrantPermission {
                account,
                permission,
            } => self.set_permission(*account, *permission, true),
            Command::RevokePermission {
                account,
                permission,
            } => self.set_permission(*account, *permission, false),
            Command::Tick => self.tick(ts),
        }
        std::mem::take(&mut self.out)
    }

    // ------------------------------------------------------------------ balances

    fn set_balance(&mut self, account: AccountId, asset: AssetId, b: (u64, u64)) {
        self.balances.insert((account, asset), b);
    }

    fn add_free(&mut self, account: AccountId, asset: AssetId, x: u64) {
        let (f, l) = self.balance(account, asset);
        let f = f.checked_add(x).expect("reference: free overflow");
        self.set_balance(account, asset, (f, l));
    }

    fn sub_free(&mut self, account: AccountId, asset: AssetId, x: u64) {
        let (f, l) = self.balance(account, asset);
        let f = f.checked_sub(x).expect("reference: free underflow");
        self.set_balance(account, asset, (f, l));
    }

    fn sub_locked(&mut self, account: AccountId, asset: AssetId, x: u64) {
        let (f, l) = self.balance(account, asset);
        let l = l.checked_sub(x).expect("reference: locked underflow");
        self.set_balance(account, asset, (f, l));
    }

    /// free -> locked
    fn lock(&mut self, account: AccountId, asset: AssetId, x: u64) {
        self.sub_free(account, asset, x);
        let (f, l) = self.balance(account, asset);
        let l = l.checked_add(x).expect("reference: locked overflow");
        self.set_balance(account, asset, (f, l));
    }

    /// locked -> free
    fn unlock(&mut self, account: AccountId, asset: AssetId, x: u64) {
        self.sub_locked(account, asset, x);
        self.add_free(account, asset, x);
    }

    fn emit_balance(&mut self, account: AccountId, asset: AssetId) {
        let (free, locked) = self.balance(account, asset);
        self.out.push(Event::BalanceChanged {
            account,
            asset,
            free,
            locked,
        });
    }

    fn snapshot(&self, account: AccountId, market: MarketId) -> Snapshot {
        let (base, quote) = self.base_quote(market);
        let fee = self.cfg.fee_account;
        Snapshot {
            taker: [self.balance(account, base), self.balance(account, quote)],
            fee: [self.balance(fee, base), self.balance(fee, quote)],
        }
    }

    /// What this command last reported of a balance, or `start` if nothing yet.
    fn last_reported(&self, account: AccountId, asset: AssetId, start: (u64, u64)) -> (u64, u64) {
        self.out
            .iter()
            .rev()
            .find_map(|e| match *e {
                Event::BalanceChanged {
                    account: a,
                    asset: x,
                    free,
                    locked,
                } if a == account && x == asset => Some((free, locked)),
                _ => None,
            })
            .unwrap_or(start)
    }

    /// The closing `BalanceChanged`s of a `PlaceOrder` or cancel-replace amend: each of
    /// the taker's (then the fee account's) base and quote whose state differs from what
    /// the command last said of it.
    fn emit_final_balances(&mut self, account: AccountId, market: MarketId, start: Snapshot) {
        let (base, quote) = self.base_quote(market);
        for (i, asset) in [base, quote].into_iter().enumerate() {
            if self.balance(account, asset) != self.last_reported(account, asset, start.taker[i]) {
                self.emit_balance(account, asset);
            }
        }
        let fee = self.cfg.fee_account;
        if fee != account {
            for (i, asset) in [base, quote].into_iter().enumerate() {
                if self.balance(fee, asset) != self.last_reported(fee, asset, start.fee[i]) {
                    self.emit_balance(fee, asset);
                }
            }
        }
    }

    // ------------------------------------------------------------------ markets and books

    fn market(&self, market: MarketId) -> &RefMarket {
        &self.markets[market as usize]
    }

    fn base_quote(&self, market: MarketId) -> (AssetId, AssetId) {
        let s = &self.market(market).spec;
        (s.base, s.quote)
    }

    fn reference_price(&self, market: MarketId) -> Option<u64> {
        let m = self.market(market);
        m.admin_reference.or(m.last_trade)
    }

    /// (lower, upper) of the band, if one applies.
    fn band(&self, market: MarketId) -> Option<(u128, u128)> {
        let b = self.market(market).spec.price_band_bps as u128;
        if b == 0 {
            return None;
        }
        let r = self.reference_price(market)? as u128;
        let lower = if b >= 10_000 {
            0
        } else {
            (r * (10_000 - b)).div_ceil(10_000)
        };
        let upper = r * (10_000 + b) / 10_000;
        Some((lower, upper))
    }

    fn outside_band(&self, market: MarketId, price: u64) -> bool {
        match self.band(market) {
            Some((lo, hi)) => (price as u128) < lo || (price as u128) > hi,
            None => false,
        }
    }

    fn outside_price_filter(&self, market: MarketId, price: u64) -> bool {
        let s = &self.market(market).spec;
        price < s.min_price_ticks || price > s.max_price_ticks
    }

    fn outside_lot_size(&self, market: MarketId, qty: u64) -> bool {
        let s = &self.market(market).spec;
        qty < s.min_qty_lots || qty > s.max_qty_lots
    }

    fn outside_notional(&self, market: MarketId, notional: u128) -> bool {
        let s = &self.market(market).spec;
        notional < s.min_notional as u128 || notional > s.max_notional as u128
    }

    /// What `lots` lots at `price` lock: (asset, amount) (quote for a buy, base for a sell).
    fn lock_for(&self, market: MarketId, side: Side, price: u64, lots: u64) -> (AssetId, u128) {
        let m = self.market(market);
        match side {
            Side::Buy => (m.spec.quote, price as u128 * lots as u128 * m.per as u128),
            Side::Sell => (m.spec.base, lots as u128 * m.spec.lot_size as u128),
        }
    }

    fn order_lock(&self, o: &OpenOrder) -> (AssetId, u64) {
        let (asset, amount) = self.lock_for(o.market, o.side, o.price, o.remaining);
        (asset, to_u64(amount, "order lock"))
    }

    /// (total lots, order count) of a level; (0, 0) if it does not exist.
    fn level(&self, market: MarketId, side: Side, price: u64) -> (u64, u32) {
        let mut total = 0u64;
        let mut count = 0u32;
        for o in &self.orders {
            if o.market == market && o.side == side && o.price == price {
                total += o.remaining;
                count += 1;
            }
        }
        (total, count)
    }

    /// Distinct level prices of a side, best first.
    fn level_prices(&self, market: MarketId, side: Side) -> Vec<u64> {
        let mut prices: Vec<u64> = self
            .orders
            .iter()
            .filter(|o| o.market == market && o.side == side)
            .map(|o| o.price)
            .collect();
        prices.sort_unstable();
        prices.dedup();
        if side == Side::Buy {
            prices.reverse();
        }
        prices
    }

    fn best_price(&self, market: MarketId, side: Side) -> Option<u64> {
        self.level_prices(market, side).first().copied()
    }

    /// The order ids of a level, in queue order.
    fn level_queue(&self, market: MarketId, side: Side, price: u64) -> Vec<OrderId> {
        self.orders
            .iter()
            .filter(|o| o.market == market && o.side == side && o.price == price)
            .map(|o| o.order_id)
            .collect()
    }

    fn emit_level(&mut self, market: MarketId, side: Side, price: u64) {
        let (total_qty, order_count) = self.level(market, side, price);
        let m = &mut self.markets[market as usize];
        m.update_id += 1;
        let update_id = m.update_id;
        self.out.push(Event::BookLevel {
            market,
            side,
            price,
            total_qty,
            order_count,
            update_id,
        });
    }

    fn index_of(&self, order_id: OrderId) -> usize {
        self.orders
            .iter()
            .position(|o| o.order_id == order_id)
            .expect("reference: order not resting")
    }

    /// Finds an open order of `account` in `market` by id or (non-empty) client id.
    fn find_order(&self, account: AccountId, market: MarketId, target: &OrderRef) -> Option<usize> {
        self.orders.iter().position(|o| {
            o.account == account
                && o.market == market
                && match target {
                    OrderRef::Id(id) => o.order_id == *id,
                    OrderRef::Client(c) => !c.is_none() && o.client_order_id == *c,
                }
        })
    }

    /// "As a `CancelOrder`": `OrderCancelled`, `BookLevel`, `BalanceChanged`.
    fn cancel_resting(&mut self, order_id: OrderId, reason: CancelReason) {
        let o = self.orders.remove(self.index_of(order_id));
        let (asset, amount) = self.order_lock(&o);
        self.unlock(o.account, asset, amount);
        self.out.push(Event::OrderCancelled {
            order_id: o.order_id,
            account: o.account,
            market: o.market,
            remaining: o.remaining,
            reason,
        });
        self.emit_level(o.market, o.side, o.price);
        self.emit_balance(o.account, asset);
    }

    /// Cancels, in ascending order id, every resting order `pick` selects.
    fn cancel_matching(&mut self, pick: impl Fn(&OpenOrder) -> bool, reason: CancelReason) {
        let mut ids: Vec<OrderId> = self
            .orders
            .iter()
            .filter(|o| pick(o))
            .map(|o| o.order_id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.cancel_resting(id, reason);
        }
    }

    // ------------------------------------------------------------------ PlaceOrder

    fn check_place(&self, ts: u64, p: &PlaceOrder) -> Result<(), RejectReason> {
        use RejectReason as R;
        // 1-5
        if p.account >= self.cfg.max_accounts {
            return Err(R::UnknownAccount);
        }
        let Some(m) = self.markets.get(p.market as usize) else {
            return Err(R::UnknownMarket);
        };
        if !p.client_order_id.is_valid() {
            return Err(R::InvalidClientOrderId);
        }
        match m.status {
            MarketStatus::Halted => return Err(R::MarketHalted),
            MarketStatus::CancelOnly => return Err(R::MarketCancelOnly),
            MarketStatus::Trading => {}
        }
        if let Some(bit) = m.spec.required_permission {
            let bits = self.permissions.get(&p.account).copied().unwrap_or(0);
            if bits & (1u64 << bit) == 0 {
                return Err(R::NotPermitted);
            }
        }
        // 6. frozen
        if p.side == Side::Buy && self.is_frozen(p.account) {
            return Err(R::AccountFrozen);
        }
        // 7. shape
        match p.order_type {
            OrderType::Market => {
                if p.price.is_some() {
                    return Err(R::InvalidOrderParameters);
                }
                if p.tif != TimeInForce::Ioc {
                    return Err(R::InvalidTimeInForce);
                }
            }
            OrderType::Limit | OrderType::LimitMaker => {
                if p.price.is_none() || matches!(p.quantity, Quantity::Quote(_)) {
                    return Err(R::InvalidOrderParameters);
                }
                if p.order_type == OrderType::LimitMaker
                    && !matches!(p.tif, TimeInForce::Gtc | TimeInForce::Gtd { .. })
                {
                    return Err(R::InvalidTimeInForce);
                }
            }
        }
        if let TimeInForce::Gtd { expire_ns } = p.tif {
            if expire_ns <= ts {
                return Err(R::InvalidExpiry);
            }
        }
        // From here on a limit order has a price and a Base quantity.
        // 8. price filter
        if let Some(price) = p.price {
            if self.outside_price_filter(p.market, price) {
                return Err(R::PriceFilter);
            }
        }
        // 9. lot size
        if let Quantity::Base(q) = p.quantity {
            if self.outside_lot_size(p.market, q) {
                return Err(R::LotSize);
            }
        }
        // 10. band
        if let Some(price) = p.price {
            if self.outside_band(p.market, price) {
                return Err(R::PercentPrice);
            }
        }
        // 11. notional
        let per = m.per as u128;
        let notional: Option<u128> = match (p.price, p.quantity) {
            (_, Quantity::Quote(0)) => return Err(R::Notional),
            (_, Quantity::Quote(a)) => Some(a as u128),
            (Some(price), Quantity::Base(q)) => Some(price as u128 * q as u128 * per),
            (None, Quantity::Base(q)) => self
                .reference_price(p.market)
                .map(|r| r as u128 * q as u128 * per),
        };
        if let Some(n) = notional {
            if self.outside_notional(p.market, n) {
                return Err(R::Notional);
            }
        }
        // 12. duplicate client order id
        if !p.client_order_id.is_none()
            && self
                .orders
                .iter()
                .any(|o| o.account == p.account && o.client_order_id == p.client_order_id)
        {
            return Err(R::DuplicateClientOrderId);
        }
        // 13-14. only for orders that can rest
        if can_rest(p.order_type, p.tif) {
            let price = p.price.expect("limit price");
            let mine = self
                .orders
                .iter()
                .filter(|o| o.account == p.account && o.market == p.market)
                .count();
            if mine >= m.spec.max_open_orders as usize {
                return Err(R::TooManyOpenOrders);
            }
            let in_market = self.orders.iter().filter(|o| o.market == p.market).count();
            let gtd = self
                .orders
                .iter()
                .filter(|o| matches!(o.tif, TimeInForce::Gtd { .. }))
                .count();
            let new_level = self.level(p.market, p.side, price).1 == 0;
            let levels = self.level_prices(p.market, p.side).len();
            if self.orders.len() >= self.cfg.max_orders as usize
                || in_market >= self.cfg.max_orders_per_market as usize
                || (matches!(p.tif, TimeInForce::Gtd { .. })
                    && gtd >= self.cfg.max_gtd_orders as usize)
                || (new_level && levels >= self.cfg.max_levels_per_side as usize)
            {
                return Err(R::CapacityExceeded);
            }
        }
        // 15. post-only
        if p.order_type == OrderType::LimitMaker {
            let price = p.price.expect("limit price");
            if let Some(best) = self.best_price(p.market, p.side.opposite()) {
                if reaches(p.side, price, best) {
                    return Err(R::PostOnlyWouldCross);
                }
            }
        }
        // 16. balance
        let (base, quote) = (m.spec.base, m.spec.quote);
        let free_base = self.balance(p.account, base).0 as u128;
        let free_quote = self.balance(p.account, quote).0 as u128;
        let lot = m.spec.lot_size as u128;
        let enough = match (p.order_type, p.side, p.quantity) {
            (OrderType::Market, Side::Buy, Quantity::Base(_)) => free_quote > 0,
            (OrderType::Market, Side::Buy, Quantity::Quote(a)) => free_quote >= a as u128,
            (OrderType::Market, Side::Sell, Quantity::Base(q)) => free_base >= q as u128 * lot,
            (OrderType::Market, Side::Sell, Quantity::Quote(_)) => free_base > 0,
            (_, Side::Buy, Quantity::Base(q)) => {
                free_quote >= p.price.expect("limit price") as u128 * q as u128 * per
            }
            (_, Side::Sell, Quantity::Base(q)) => free_base >= q as u128 * lot,
            (_, _, Quantity::Quote(_)) => unreachable!("quote quantity on a limit order"),
        };
        if !enough {
            return Err(R::InsufficientBalance);
        }
        Ok(())
    }

    fn place_order(&mut self, ts: u64, p: &PlaceOrder) {
        if let Err(reason) = self.check_place(ts, p) {
            self.out.push(Event::OrderRejected {
                account: p.account,
                market: p.market,
                client_order_id: p.client_order_id,
                reason,
            });
            return;
        }
        let start = self.snapshot(p.account, p.market);
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        self.out.push(Event::OrderAccepted {
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
        let (qty, left, by_quote) = match p.quantity {
            Quantity::Base(q) => (q, q, false),
            Quantity::Quote(a) => (0, a, true),
        };
        let taker = Taker {
            order_id,
            account: p.account,
            market: p.market,
            side: p.side,
            order_type: p.order_type,
            tif: p.tif,
            stp: p.stp,
            client_order_id: p.client_order_id,
            price: p.price.unwrap_or(0),
            qty,
            left,
            by_quote,
        };
        if p.order_type != OrderType::Market {
            let (asset, amount) = self.lock_for(p.market, p.side, taker.price, qty);
            let amount = to_u64(amount, "limit lock");
            self.lock(p.account, asset, amount);
            if p.tif == TimeInForce::Fok && self.fok_available(&taker) < qty as u128 {
                self.unlock(p.account, asset, amount);
                self.out.push(Event::OrderCancelled {
                    order_id,
                    account: p.account,
                    market: p.market,
                    remaining: qty,
                    reason: CancelReason::Fok,
                });
                return;
            }
        }
        self.run_taker(taker, start);
    }

    /// The FOK walk: lots a limit taker could take, counted as the doc describes.
    fn fok_available(&self, t: &Taker) -> u128 {
        let opposite = t.side.opposite();
        let mut count = 0u128;
        for price in self.level_prices(t.market, opposite) {
            if !acceptable(t.side, price, Some(t.price as u128)) {
                break;
            }
            for o in self
                .orders
                .iter()
                .filter(|o| o.market == t.market && o.side == opposite && o.price == price)
            {
                if o.account == t.account && t.stp != StpMode::None {
                    if t.stp == StpMode::ExpireMaker {
                        continue;
                    }
                    return count;
                }
                count += o.remaining as u128;
            }
        }
        count
    }

    /// Matching, then rest or cancel, then the closing balance events.
    fn run_taker(&mut self, mut t: Taker, start: Snapshot) {
        let market = t.market;
        let opposite = t.side.opposite();
        let limit: Option<u128> = match t.order_type {
            OrderType::Market => self.band(market).map(|(lo, hi)| match t.side {
                Side::Buy => hi,
                Side::Sell => lo,
            }),
            _ => Some(t.price as u128),
        };
        let mut stopped_by_stp = false;
        while t.left > 0 {
            let Some(level_price) = self.best_price(market, opposite) else {
                break;
            };
            if !acceptable(t.side, level_price, limit) {
                break;
            }
            // Take the level's orders from its front until it empties or matching ends.
            let mut changed = false;
            let mut stop = false;
            while t.left > 0 {
                let Some(&maker_id) = self.level_queue(market, opposite, level_price).first()
                else {
                    break; // the level emptied
                };
                let maker = self.orders[self.index_of(maker_id)];
                if maker.account == t.account && t.stp != StpMode::None {
                    if matches!(t.stp, StpMode::ExpireMaker | StpMode::ExpireBoth) {
                        self.cancel_self_trade_maker(maker_id);
                        changed = true;
                    }
                    if matches!(t.stp, StpMode::ExpireTaker | StpMode::ExpireBoth) {
                        stopped_by_stp = true;
                        stop = true;
                        break;
                    }
                    continue;
                }
                let f = self.fill_lots(&t, &maker, level_price);
                if f == 0 {
                    stop = true;
                    break;
                }
                self.fill(&mut t, maker_id, level_price, f);
                changed = true;
            }
            if changed {
                self.emit_level(market, opposite, level_price);
            }
            if stop {
                break;
            }
        }

        if t.left > 0 {
            if can_rest(t.order_type, t.tif) && !stopped_by_stp {
                self.orders.push(OpenOrder {
                    order_id: t.order_id,
                    account: t.account,
                    market,
                    side: t.side,
                    order_type: t.order_type,
                    tif: t.tif,
                    stp: t.stp,
                    price: t.price,
                    qty: t.qty,
                    remaining: t.left,
                    client_order_id: t.client_order_id,
                });
                self.emit_level(market, t.side, t.price);
            } else {
                if t.order_type != OrderType::Market {
                    let (asset, amount) = self.lock_for(market, t.side, t.price, t.left);
                    self.unlock(t.account, asset, to_u64(amount, "rest lock"));
                }
                self.out.push(Event::OrderCancelled {
                    order_id: t.order_id,
                    account: t.account,
                    market,
                    remaining: t.left,
                    reason: if stopped_by_stp {
                        CancelReason::SelfTradePrevention
                    } else {
                        CancelReason::Ioc
                    },
                });
            }
        }
        self.emit_final_balances(t.account, market, start);
    }

    fn cancel_self_trade_maker(&mut self, maker_id: OrderId) {
        let o = self.orders.remove(self.index_of(maker_id));
        let (asset, amount) = self.order_lock(&o);
        self.unlock(o.account, asset, amount);
        self.out.push(Event::OrderCancelled {
            order_id: o.order_id,
            account: o.account,
            market: o.market,
            remaining: o.remaining,
            reason: CancelReason::SelfTradePrevention,
        });
        self.emit_balance(o.account, asset);
    }

    /// The fill `f` in lots against `maker` at `level_price`.
    fn fill_lots(&self, t: &Taker, maker: &OpenOrder, level_price: u64) -> u64 {
        let m = self.market(t.market);
        let c = level_price as u128 * m.per as u128;
        let lot = m.spec.lot_size as u128;
        let maker_rem = maker.remaining as u128;
        let left = t.left as u128;
        let f = match (t.order_type, t.side, t.by_quote) {
            (OrderType::Market, Side::Buy, false) => {
                let free_quote = self.balance(t.account, m.spec.quote).0 as u128;
                maker_rem.min(left).min(free_quote / c)
            }
            (OrderType::Market, Side::Sell, false) => maker_rem.min(left),
            (OrderType::Market, Side::Buy, true) => maker_rem.min(left / c),
            (OrderType::Market, Side::Sell, true) => {
                let free_base = self.balance(t.account, m.spec.base).0 as u128;
                maker_rem.min(left / c).min(free_base / lot)
            }
            _ => maker_rem.min(left),
        };
        to_u64(f, "fill")
    }

    fn fill(&mut self, t: &mut Taker, maker_id: OrderId, price: u64, f: u64) {
        let (per, lot, base_asset, quote_asset, fees) = {
            let m = self.market(t.market);
            (
                m.per as u128,
                m.spec.lot_size as u128,
                m.spec.base,
                m.spec.quote,
                m.spec.fees,
            )
        };
        let maker = self.orders[self.index_of(maker_id)];
        let fee_account = self.cfg.fee_account;
        let f128 = f as u128;
        let base = to_u64(f128 * lot, "fill base");
        let quote = to_u64(price as u128 * f128 * per, "fill quote");
        let (taker_received, maker_received) = match t.side {
            Side::Buy => (base, quote),
            Side::Sell => (quote, base),
        };
        let taker_fee = to_u64(
            taker_received as u128 * fees.taker_fee_bps as u128 / 10_000,
            "taker fee",
        );
        let (maker_fee, rebate) = if fees.maker_fee_bps >= 0 {
            let fee = maker_received as u128 * fees.maker_fee_bps as u128 / 10_000;
            (to_u64(fee, "maker fee"), 0u64)
        } else {
            let r = taker_received as u128 * (-(fees.maker_fee_bps as i64)) as u128 / 10_000;
            (0u64, to_u64(r, "rebate"))
        };
        assert!(rebate <= taker_fee, "reference: rebate above taker fee");
        let is_market = t.order_type == OrderType::Market;
        match t.side {
            Side::Buy => {
                // maker
                self.sub_locked(maker.account, base_asset, base);
                self.add_free(maker.account, quote_asset, quote - maker_fee);
                self.add_free(maker.account, base_asset, rebate);
                // taker
                if is_market {
                    self.sub_free(t.account, quote_asset, quote);
                } else {
                    let limit = t.price as u128;
                    self.sub_locked(t.account, quote_asset, to_u64(limit * f128 * per, "lock"));
                    let improvement = (limit - price as u128) * f128 * per;
                    self.add_free(t.account, quote_asset, to_u64(improvement, "refund"));
                }
                self.add_free(t.account, base_asset, base - taker_fee);
                // fee account
                self.add_free(fee_account, base_asset, taker_fee - rebate);
                self.add_free(fee_account, quote_asset, maker_fee);
            }
            Side::Sell => {
                self.sub_locked(maker.account, quote_asset, quote);
                self.add_free(maker.account, base_asset, base - maker_fee);
                self.add_free(maker.account, quote_asset, rebate);
                if is_market {
                    self.sub_free(t.account, base_asset, base);
                } else {
                    self.sub_locked(t.account, base_asset, base);
                }
                self.add_free(t.account, quote_asset, quote - taker_fee);
                self.add_free(fee_account, quote_asset, taker_fee - rebate);
                self.add_free(fee_account, base_asset, maker_fee);
            }
        }
        // the maker order
        let idx = self.index_of(maker_id);
        self.orders[idx].remaining -= f;
        let maker_remaining = self.orders[idx].remaining;
        if maker_remaining == 0 {
            self.orders.remove(idx);
        }
        // the taker
        if t.by_quote {
            t.left -= quote;
        } else {
            t.left -= f;
        }
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        self.out.push(Event::Trade {
            trade_id,
            market: t.market,
            price,
            qty: f,
            maker_order: maker.order_id,
            maker_account: maker.account,
            taker_order: t.order_id,
            taker_account: t.account,
            taker_side: t.side,
            maker_fee: if fees.maker_fee_bps >= 0 {
                maker_fee as i64
            } else {
                -(rebate as i64)
            },
            taker_fee,
            maker_remaining,
        });
        self.emit_balance(maker.account, base_asset);
        self.emit_balance(maker.account, quote_asset);
        self.markets[t.market as usize].last_trade = Some(price);
    }

    // ------------------------------------------------------------------ cancels

    fn cancel_rejected(&mut self, account: AccountId, market: MarketId, reason: RejectReason) {
        self.out.push(Event::CancelRejected {
            account,
            market,
            reason,
        });
    }

    /// The checks shared by `CancelOrder` and `AmendOrder`; the index of the order.
    fn find_for_user(
        &self,
        account: AccountId,
        market: MarketId,
        target: &OrderRef,
    ) -> Result<usize, RejectReason> {
        if account >= self.cfg.max_accounts {
            return Err(RejectReason::UnknownAccount);
        }
        let Some(m) = self.markets.get(market as usize) else {
            return Err(RejectReason::UnknownMarket);
        };
        if m.status == MarketStatus::Halted {
            return Err(RejectReason::MarketHalted);
        }
        if let OrderRef::Client(c) = target {
            if !c.is_valid() {
                return Err(RejectReason::InvalidClientOrderId);
            }
        }
        self.find_order(account, market, target)
            .ok_or(RejectReason::UnknownOrder)
    }

    fn cancel_order(&mut self, account: AccountId, market: MarketId, target: &OrderRef) {
        match self.find_for_user(account, market, target) {
            Err(reason) => self.cancel_rejected(account, market, reason),
            Ok(idx) => {
                let id = self.orders[idx].order_id;
                self.cancel_resting(id, CancelReason::User);
            }
        }
    }

    fn cancel_all(&mut self, account: AccountId, market: Option<MarketId>) {
        if account >= self.cfg.max_accounts {
            self.cancel_rejected(
                account,
                market.unwrap_or(NO_MARKET),
                RejectReason::UnknownAccount,
            );
            return;
        }
        match market {
            Some(m) => {
                let Some(status) = self.market_status(m) else {
                    self.cancel_rejected(account, m, RejectReason::UnknownMarket);
                    return;
                };
                if status == MarketStatus::Halted {
                    self.cancel_rejected(account, m, RejectReason::MarketHalted);
                    return;
                }
                self.cancel_matching(
                    |o| o.account == account && o.market == m,
                    CancelReason::MassCancel,
                );
            }
            None => {
                for m in 0..self.market_count() {
                    if self.market(m).status == MarketStatus::Halted {
                        continue;
                    }
                    self.cancel_matching(
                        |o| o.account == account && o.market == m,
                        CancelReason::MassCancel,
                    );
                }
            }
        }
    }

    // ------------------------------------------------------------------ amend

    fn amend(
        &mut self,
        account: AccountId,
        market: MarketId,
        target: &OrderRef,
        new_qty: u64,
        new_price: Option<u64>,
    ) {
        let idx = match self.find_for_user(account, market, target) {
            Ok(idx) => idx,
            Err(reason) => return self.cancel_rejected(account, market, reason),
        };
        let o = self.orders[idx];
        let filled = o.qty - o.remaining;
        if new_qty <= filled {
            return self.cancel_rejected(account, market, RejectReason::InvalidAmend);
        }
        let target_price = new_price.unwrap_or(o.price);

        if target_price == o.price && new_qty <= o.qty {
            // keep priority
            let d = o.qty - new_qty;
            let remaining = o.remaining - d;
            self.orders[idx].qty = new_qty;
            self.orders[idx].remaining = remaining;
            self.out.push(Event::OrderAmended {
                order_id: o.order_id,
                account,
                market,
                price: o.price,
                qty: new_qty,
                remaining,
                priority_kept: true,
            });
            if d > 0 {
                let (asset, amount) = self.lock_for(market, o.side, o.price, d);
                self.unlock(account, asset, to_u64(amount, "amend release"));
                self.emit_level(market, o.side, o.price);
                self.emit_balance(account, asset);
            }
            return;
        }

        // cancel-replace: further checks
        let new_remaining = new_qty - filled;
        if let Err(reason) = self.check_replace(&o, target_price, new_qty, new_remaining) {
            return self.cancel_rejected(account, market, reason);
        }
        let start = self.snapshot(account, market);
        self.orders.remove(idx);
        self.out.push(Event::OrderAmended {
            order_id: o.order_id,
            account,
            market,
            price: target_price,
            qty: new_qty,
            remaining: new_remaining,
            priority_kept: false,
        });
        self.emit_level(market, o.side, o.price);
        let (asset, old_lock) = self.order_lock(&o);
        self.unlock(account, asset, old_lock);
        let (_, new_lock) = self.lock_for(market, o.side, target_price, new_remaining);
        self.lock(account, asset, to_u64(new_lock, "amend lock"));
        let taker = Taker {
            order_id: o.order_id,
            account,
            market,
            side: o.side,
            order_type: o.order_type,
            tif: o.tif,
            stp: o.stp,
            client_order_id: o.client_order_id,
            price: target_price,
            qty: new_qty,
            left: new_remaining,
            by_quote: false,
        };
        self.run_taker(taker, start);
    }

    fn check_replace(
        &self,
        o: &OpenOrder,
        new_price: u64,
        new_qty: u64,
        new_remaining: u64,
    ) -> Result<(), RejectReason> {
        use RejectReason as R;
        let market = o.market;
        let m = self.market(market);
        let raises = new_qty > o.qty || new_price > o.price;
        if o.side == Side::Buy && raises && self.is_frozen(o.account) {
            return Err(R::AccountFrozen);
        }
        if m.status == MarketStatus::CancelOnly {
            return Err(R::MarketCancelOnly);
        }
        if self.outside_price_filter(market, new_price) {
            return Err(R::PriceFilter);
        }
        if self.outside_lot_size(market, new_qty) {
            return Err(R::LotSize);
        }
        if self.outside_band(market, new_price) {
            return Err(R::PercentPrice);
        }
        let notional = new_price as u128 * new_qty as u128 * m.per as u128;
        if self.outside_notional(market, notional) {
            return Err(R::Notional);
        }
        if self.level(market, o.side, new_price).1 == 0
            && self.level_prices(market, o.side).len() >= self.cfg.max_levels_per_side as usize
        {
            return Err(R::CapacityExceeded);
        }
        if o.order_type == OrderType::LimitMaker {
            if let Some(best) = self.best_price(market, o.side.opposite()) {
                if reaches(o.side, new_price, best) {
                    return Err(R::PostOnlyWouldCross);
                }
            }
        }
        let (asset, old_lock) = self.order_lock(o);
        let (_, new_lock) = self.lock_for(market, o.side, new_price, new_remaining);
        let free = self.balance(o.account, asset).0 as u128;
        if new_lock > free + old_lock as u128 {
            return Err(R::InsufficientBalance);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ ledger

    fn command_rejected(&mut self, reason: RejectReason) {
        self.out.push(Event::CommandRejected { reason });
    }

    fn deposit(&mut self, account: AccountId, asset: AssetId, amount: u64) {
        if account >= self.cfg.max_accounts {
            return self.command_rejected(RejectReason::UnknownAccount);
        }
        if asset >= self.asset_count() {
            return self.command_rejected(RejectReason::UnknownAsset);
        }
        if amount == 0 {
            return self.command_rejected(RejectReason::InvalidAmount);
        }
        if self.overflows(account, asset, amount) {
            return self.command_rejected(RejectReason::BalanceOverflow);
        }
        self.apply_credit(account, asset, amount);
    }

    /// Would crediting `amount` take the supply past `u64::MAX`? Only what the deficit
    /// does not absorb reaches the supply.
    fn overflows(&self, account: AccountId, asset: AssetId, amount: u64) -> bool {
        let owed = self.deficit(account, asset);
        let rest = amount - owed.min(amount);
        self.supply[asset as usize].checked_add(rest).is_none()
    }

    /// A checked credit: the deficit first, the rest to free. `BalanceChanged` always,
    /// `DeficitChanged` when the deficit went down.
    fn apply_credit(&mut self, account: AccountId, asset: AssetId, amount: u64) {
        let owed = self.deficit(account, asset);
        let covered = owed.min(amount);
        let rest = amount - covered;
        self.supply[asset as usize] += rest;
        self.on_chain[asset as usize] += amount as i128;
        self.add_free(account, asset, rest);
        self.emit_balance(account, asset);
        if covered > 0 {
            self.set_deficit(account, asset, owed - covered);
        }
    }

    fn set_deficit(&mut self, account: AccountId, asset: AssetId, deficit: u64) {
        if deficit == 0 {
            self.deficits.remove(&(account, asset));
        } else {
            self.deficits.insert((account, asset), deficit);
        }
        self.out.push(Event::DeficitChanged {
            account,
            asset,
            deficit,
        });
    }

    fn deposit_credit(
        &mut self,
        deposit: DepositId,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    ) {
        if account >= self.cfg.max_accounts {
            return self.command_rejected(RejectReason::UnknownAccount);
        }
        if asset >= self.asset_count() {
            return self.command_rejected(RejectReason::UnknownAsset);
        }
        if amount == 0 {
            return self.command_rejected(RejectReason::InvalidAmount);
        }
        if self.deposits.iter().any(|d| d.id == deposit) {
            return self.command_rejected(RejectReason::DuplicateDeposit);
        }
        if self.deposits.len() >= self.cfg.max_pending_deposits as usize {
            return self.command_rejected(RejectReason::CapacityExceeded);
        }
        if self.overflows(account, asset, amount) {
            return self.command_rejected(RejectReason::BalanceOverflow);
        }
        self.deposits.push(PendingDeposit {
            id: deposit,
            account,
            asset,
            amount,
        });
        self.out.push(Event::DepositCredited {
            deposit,
            account,
            asset,
            amount,
        });
        self.apply_credit(account, asset, amount);
    }

    fn deposit_settle(&mut self, deposit: DepositId) {
        let Some(idx) = self.deposits.iter().position(|d| d.id == deposit) else {
            return self.command_rejected(RejectReason::UnknownDeposit);
        };
        self.deposits.remove(idx);
        self.out.push(Event::DepositSettled { deposit });
    }

    fn deposit_reverse(&mut self, deposit: DepositId) {
        let Some(idx) = self.deposits.iter().position(|d| d.id == deposit) else {
            return self.command_rejected(RejectReason::UnknownDeposit);
        };
        let d = self.deposits[idx];
        let free = self.balance(d.account, d.asset).0 as u128;
        // The account's orders holding the asset, oldest first, as many as it takes.
        let mut holding: Vec<OpenOrder> = self
            .orders
            .iter()
            .filter(|o| o.account == d.account && self.order_lock(o).0 == d.asset)
            .copied()
            .collect();
        holding.sort_by_key(|o| o.order_id);
        let mut reachable = free;
        let mut cancel = Vec::new();
        for o in &holding {
            if reachable >= d.amount as u128 {
                break;
            }
            reachable += self.order_lock(o).1 as u128;
            cancel.push(o.order_id);
        }
        let debited = to_u64(reachable.min(d.amount as u128), "debited");
        let missing = d.amount - debited;
        let owed = self.deficit(d.account, d.asset);
        if owed.checked_add(missing).is_none() {
            return self.command_rejected(RejectReason::BalanceOverflow);
        }
        self.deposits.remove(idx);
        self.out.push(Event::DepositReversed {
            deposit,
            account: d.account,
            asset: d.asset,
            amount: d.amount,
            debited,
        });
        for id in cancel {
            self.cancel_resting(id, CancelReason::DepositReversed);
        }
        self.sub_free(d.account, d.asset, debited);
        self.supply[d.asset as usize] -= debited;
        self.on_chain[d.asset as usize] -= d.amount as i128;
        self.emit_balance(d.account, d.asset);
        if missing > 0 {
            self.set_deficit(d.account, d.asset, owed + missing);
        }
    }

    fn withdraw_hold(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        withdrawal: WithdrawalId,
    ) {
        if account >= self.cfg.max_accounts {
            return self.command_rejected(RejectReason::UnknownAccount);
        }
        if asset >= self.asset_count() {
            return self.command_rejected(RejectReason::UnknownAsset);
        }
        if amount == 0 {
            return self.command_rejected(RejectReason::InvalidAmount);
        }
        if self.is_frozen(account) {
            return self.command_rejected(RejectReason::AccountFrozen);
        }
        if self.withdrawals.iter().any(|w| w.id == withdrawal) {
            return self.command_rejected(RejectReason::DuplicateWithdrawal);
        }
        if self.withdrawals.len() >= self.cfg.max_pending_withdrawals as usize {
            return self.command_rejected(RejectReason::CapacityExceeded);
        }
        if self.balance(account, asset).0 < amount {
            return self.command_rejected(RejectReason::InsufficientBalance);
        }
        self.lock(account, asset, amount);
        self.withdrawals.push(PendingWithdrawal {
            id: withdrawal,
            account,
            asset,
            amount,
        });
        self.out.push(Event::WithdrawalHeld {
            withdrawal,
            account,
            asset,
            amount,
        });
        self.emit_balance(account, asset);
    }

    fn take_withdrawal(&mut self, withdrawal: WithdrawalId) -> Option<PendingWithdrawal> {
        let idx = self.withdrawals.iter().position(|w| w.id == withdrawal)?;
        Some(self.withdrawals.remove(idx))
    }

    fn withdraw_release(&mut self, withdrawal: WithdrawalId) {
        let Some(w) = self.take_withdrawal(withdrawal) else {
            return self.command_rejected(RejectReason::UnknownWithdrawal);
        };
        self.unlock(w.account, w.asset, w.amount);
        self.out.push(Event::WithdrawalReleased { withdrawal });
        self.emit_balance(w.account, w.asset);
    }

    fn withdraw_finalize(&mut self, withdrawal: WithdrawalId) {
        let Some(w) = self.take_withdrawal(withdrawal) else {
            return self.command_rejected(RejectReason::UnknownWithdrawal);
        };
        self.sub_locked(w.account, w.asset, w.amount);
        self.supply[w.asset as usize] -= w.amount;
        self.on_chain[w.asset as usize] -= w.amount as i128;
        self.out.push(Event::WithdrawalFinalized { withdrawal });
        self.emit_balance(w.account, w.asset);
    }

    // ------------------------------------------------------------------ admin

    fn add_asset(&mut self, spec: &AssetSpec) {
        if self.asset_count() >= self.cfg.max_assets {
            return self.command_rejected(RejectReason::CapacityExceeded);
        }
        if let Err(e) = spec.validate() {
            return self.command_rejected(RejectReason::InvalidSpec(e));
        }
        if self.assets.iter().any(|a| a.symbol == spec.symbol) {
            return self.command_rejected(RejectReason::InvalidSpec(SpecError::DuplicateSymbol));
        }
        let asset = self.asset_count();
        self.assets.push(spec.clone());
        self.supply.push(0);
        self.on_chain.push(0);
        self.out.push(Event::AssetAdded { asset });
    }

    fn add_market(&mut self, spec: &MarketSpec) {
        if self.market_count() >= self.cfg.max_markets {
            return self.command_rejected(RejectReason::CapacityExceeded);
        }
        let per = match spec.validate(|a| self.assets.get(a as usize).map(|s| s.decimals)) {
            Ok(per) => per,
            Err(e) => return self.command_rejected(RejectReason::InvalidSpec(e)),
        };
        if self.markets.iter().any(|m| m.spec.symbol == spec.symbol) {
            return self.command_rejected(RejectReason::InvalidSpec(SpecError::DuplicateSymbol));
        }
        let market = self.market_count();
        self.markets.push(RefMarket {
            spec: spec.clone(),
            per,
            status: spec.status,
            admin_reference: None,
            last_trade: None,
            update_id: 0,
        });
        self.out.push(Event::MarketAdded { market });
    }

    fn set_market_status(&mut self, market: MarketId, status: MarketStatus, cancel_open: bool) {
        if market >= self.market_count() {
            return self.command_rejected(RejectReason::UnknownMarket);
        }
        self.markets[market as usize].status = status;
        self.out.push(Event::MarketStatusChanged { market, status });
        if cancel_open {
            self.cancel_matching(|o| o.market == market, CancelReason::Halted);
        }
    }

    fn set_reference_price(&mut self, market: MarketId, price: Option<u64>) {
        if market >= self.market_count() {
            return self.command_rejected(RejectReason::UnknownMarket);
        }
        if let Some(p) = price {
            if self.outside_price_filter(market, p) {
                return self.command_rejected(RejectReason::PriceFilter);
            }
        }
        self.markets[market as usize].admin_reference = price;
        self.out.push(Event::ReferencePriceSet { market, price });
    }

    fn set_permission(&mut self, account: AccountId, permission: u8, granted: bool) {
        if account >= self.cfg.max_accounts {
            return self.command_rejected(RejectReason::UnknownAccount);
        }
        if permission >= MAX_PERMISSIONS {
            return self.command_rejected(RejectReason::InvalidAmount);
        }
        let bits = self.permissions.entry(account).or_insert(0);
        if granted {
            *bits |= 1u64 << permission;
        } else {
            *bits &= !(1u64 << permission);
        }
        self.out.push(Event::PermissionChanged {
            account,
            permission,
            granted,
        });
    }

    fn tick(&mut self, ts: u64) {
        let mut due: Vec<(u64, OrderId)> = self
            .orders
            .iter()
            .filter_map(|o| match o.tif {
                TimeInForce::Gtd { expire_ns } if expire_ns <= ts => Some((expire_ns, o.order_id)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for (_, id) in due {
            self.cancel_resting(id, CancelReason::Expired);
        }
    }

    // ------------------------------------------------------------------ invariants

    /// The invariants of `docs/engine.md`, checked the slow way.
    pub fn check_invariants(&self) -> Result<(), String> {
        for m in 0..self.market_count() {
            if let (Some(bid), Some(ask)) = (
                self.best_price(m, Side::Buy),
                self.best_price(m, Side::Sell),
            ) {
                if bid >= ask {
                    return Err(format!("market {m} crossed: bid {bid} >= ask {ask}"));
                }
            }
        }
        for o in &self.orders {
            if o.remaining == 0 || o.remaining > o.qty {
                return Err(format!(
                    "order {} has remaining {} of {}",
                    o.order_id, o.remaining, o.qty
                ));
            }
            if !can_rest(o.order_type, o.tif) {
                return Err(format!("order {} cannot rest but does", o.order_id));
            }
        }
        let mut ids: Vec<OrderId> = self.orders.iter().map(|o| o.order_id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.orders.len() {
            return Err("duplicate resting order id".into());
        }
        if ids.last().is_some_and(|&id| id >= self.next_order_id) {
            return Err("resting order id not yet issued".into());
        }
        // locked = open orders + pending withdrawals
        let mut expected: BTreeMap<(AccountId, AssetId), u128> = BTreeMap::new();
        for o in &self.orders {
            let (asset, amount) = self.lock_for(o.market, o.side, o.price, o.remaining);
            *expected.entry((o.account, asset)).or_insert(0) += amount;
        }
        for w in &self.withdrawals {
            *expected.entry((w.account, w.asset)).or_insert(0) += w.amount as u128;
        }
        for (&(account, asset), &(_, locked)) in &self.balances {
            let want = expected.remove(&(account, asset)).unwrap_or(0);
            if locked as u128 != want {
                return Err(format!(
                    "account {account} asset {asset}: locked {locked}, orders and holds {want}"
                ));
            }
        }
        if let Some(((account, asset), want)) = expected.into_iter().find(|&(_, w)| w > 0) {
            return Err(format!(
                "account {account} asset {asset}: no balance, orders and holds {want}"
            ));
        }
        // supply
        for asset in 0..self.asset_count() {
            let total: u128 = self
                .balances
                .iter()
                .filter(|((_, s), _)| *s == asset)
                .map(|(_, &(f, l))| f as u128 + l as u128)
                .sum();
            if total != self.supply[asset as usize] as u128 {
                return Err(format!(
                    "asset {asset}: balances sum to {total}, supply {}",
                    self.supply[asset as usize]
                ));
            }
            // What custody holds = supply - deficits: the deficits are what accounts were
            // credited and keep spending although the chain took it back.
            let owed: i128 = self
                .deficits
                .iter()
                .filter(|((_, x), _)| *x == asset)
                .map(|(_, &d)| d as i128)
                .sum();
            let held = self.supply[asset as usize] as i128 - owed;
            if held != self.on_chain[asset as usize] {
                return Err(format!(
                    "asset {asset}: supply - deficits = {held}, but credits - reversals - \
                     finalized withdrawals = {}",
                    self.on_chain[asset as usize]
                ));
            }
        }
        if let Some((k, _)) = self.deficits.iter().find(|(_, &d)| d == 0) {
            return Err(format!("zero deficit kept for {k:?}"));
        }
        if self.deposits.iter().any(|d| d.amount == 0) {
            return Err("pending deposit of 0".into());
        }
        Ok(())
    }
}
