//! The read model: what the API answers queries from, built from the engine's events.
//!
//! The engine thread never serves a query; the API keeps its own copy of what clients ask
//! about (books by price level, recent trades, klines, orders, balances), updated from every
//! durable batch in sequence order (`View::apply`). It starts from the recovered engine state
//! (`View::from_exchange`), so open orders, balances and books survive a restart; trade
//! history, klines and closed orders are kept from the process start, bounded (`MAX_*`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use fulgur_engine::spec::steps_to_decimal;
use fulgur_engine::*;
use rust_decimal::Decimal;

use crate::BatchItem;

/// Recent trades kept per market (Binance serves at most 1000).
pub const MAX_TRADES_PER_MARKET: usize = 1000;
/// Klines kept per market and interval (Binance serves at most 1000); the 1m series keeps a
/// day and a bit, for the 24 h ticker.
pub const MAX_KLINES: usize = 1000;
pub const MAX_KLINES_1M: usize = 1500;
/// Closed orders and own trades kept per account, and across all accounts.
pub const MAX_CLOSED_PER_ACCOUNT: usize = 1000;
pub const MAX_CLOSED_TOTAL: usize = 500_000;
pub const MAX_MY_TRADES_PER_ACCOUNT: usize = 1000;
pub const MAX_MY_TRADES_TOTAL: usize = 500_000;

/// Kline intervals: Binance's names, 1m to 1d.
pub const INTERVALS: [(&str, u64); 12] = [
    ("1m", 60_000),
    ("3m", 180_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("30m", 1_800_000),
    ("1h", 3_600_000),
    ("2h", 7_200_000),
    ("4h", 14_400_000),
    ("6h", 21_600_000),
    ("8h", 28_800_000),
    ("12h", 43_200_000),
    ("1d", 86_400_000),
];

pub fn interval_index(name: &str) -> Option<usize> {
    INTERVALS.iter().position(|(n, _)| *n == name)
}

#[derive(Clone, Debug)]
pub struct AssetInfo {
    pub id: AssetId,
    pub symbol: String,
    pub decimals: u8,
    pub class: fulgur_engine::AssetClass,
}

/// Decimal places the API prints for an asset: Binance's 8, or more if the asset has them.
pub fn print_scale(decimals: u8) -> u32 {
    decimals.max(8) as u32
}

/// A decimal as Binance prints it: a fixed number of places, `"0.01000000"`.
pub fn fixed(d: Decimal, scale: u32) -> String {
    let mut d = d;
    d.rescale(scale);
    d.to_string()
}

#[derive(Clone, Debug)]
pub struct TradeRec {
    pub id: TradeId,
    pub price: u64,
    pub qty: u64,
    pub time_ms: u64,
    pub buyer_order: OrderId,
    pub seller_order: OrderId,
    pub is_buyer_maker: bool,
}

#[derive(Clone, Debug)]
pub struct AggTrade {
    pub id: u64,
    pub price: u64,
    pub qty: u64,
    pub first_trade: TradeId,
    pub last_trade: TradeId,
    pub time_ms: u64,
    pub is_buyer_maker: bool,
    /// The taker order it aggregates (trades of one taker order at one price).
    taker_order: OrderId,
    seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kline {
    pub open_time_ms: u64,
    pub open: u64,
    pub high: u64,
    pub low: u64,
    pub close: u64,
    /// Lots.
    pub volume: u128,
    /// Quote minor units.
    pub quote_volume: u128,
    pub trades: u64,
    pub taker_buy_volume: u128,
    pub taker_buy_quote_volume: u128,
    pub first_trade: TradeId,
    pub last_trade: TradeId,
}

/// Price levels, best first: (price ticks, lots).
pub type Levels = Vec<(u64, u64)>;

/// One market's public state.
#[derive(Clone, Debug)]
pub struct MarketView {
    pub id: MarketId,
    pub spec: MarketSpec,
    pub base: AssetInfo,
    pub quote: AssetInfo,
    /// Quote minor units per tick × lot.
    pub per: u64,
    /// Price (ticks) → (lots, orders).
    pub bids: BTreeMap<u64, (u64, u32)>,
    pub asks: BTreeMap<u64, (u64, u32)>,
    /// Last `BookLevel` update id (Binance `lastUpdateId`).
    pub update_id: u64,
    pub trades: VecDeque<TradeRec>,
    pub agg_trades: VecDeque<AggTrade>,
    next_agg_id: u64,
    /// One series per `INTERVALS` entry, oldest first.
    pub klines: Vec<VecDeque<Kline>>,
    pub reference_price: Option<u64>,
    pub last_price: Option<u64>,
    pub last_qty: u64,
}

impl MarketView {
    pub fn price(&self, ticks: u64) -> String {
        fixed(
            steps_to_decimal(ticks, self.spec.tick_size, self.quote.decimals),
            print_scale(self.quote.decimals),
        )
    }

    pub fn qty(&self, lots: u128) -> String {
        let lots = u64::try_from(lots).unwrap_or(u64::MAX);
        fixed(
            steps_to_decimal(lots, self.spec.lot_size, self.base.decimals),
            print_scale(self.base.decimals),
        )
    }

    /// A quote amount in quote minor units.
    pub fn quote_amount(&self, minor: u128) -> String {
        quote_decimal(minor, self.quote.decimals)
    }

    /// Quote minor units of `lots` at `ticks`.
    pub fn notional(&self, ticks: u64, lots: u64) -> u128 {
        ticks as u128 * lots as u128 * self.per as u128
    }

    pub fn best_bid(&self) -> Option<(u64, u64)> {
        self.bids.iter().next_back().map(|(p, (q, _))| (*p, *q))
    }

    pub fn best_ask(&self) -> Option<(u64, u64)> {
        self.asks.iter().next().map(|(p, (q, _))| (*p, *q))
    }

    /// Up to `limit` levels per side, best first: (price, lots).
    pub fn depth(&self, limit: usize) -> (Levels, Levels) {
        let bids = self
            .bids
            .iter()
            .rev()
            .take(limit)
            .map(|(p, (q, _))| (*p, *q))
            .collect();
        let asks = self
            .asks
            .iter()
            .take(limit)
            .map(|(p, (q, _))| (*p, *q))
            .collect();
        (bids, asks)
    }

    fn record_trade(&mut self, seq: u64, t: &TradeRec, taker_order: OrderId) {
        self.last_price = Some(t.price);
        self.last_qty = t.qty;
        if self.trades.len() == MAX_TRADES_PER_MARKET {
            self.trades.pop_front();
        }
        self.trades.push_back(t.clone());
        // Binance aggregates the fills of one taker order at one price.
        match self.agg_trades.back_mut() {
            Some(a) if a.seq == seq && a.taker_order == taker_order && a.price == t.price => {
                a.qty += t.qty;
                a.last_trade = t.id;
            }
            _ => {
                if self.agg_trades.len() == MAX_TRADES_PER_MARKET {
                    self.agg_trades.pop_front();
                }
                self.next_agg_id += 1;
                self.agg_trades.push_back(AggTrade {
                    id: self.next_agg_id,
                    price: t.price,
                    qty: t.qty,
                    first_trade: t.id,
                    last_trade: t.id,
                    time_ms: t.time_ms,
                    is_buyer_maker: t.is_buyer_maker,
                    taker_order,
                    seq,
                });
            }
        }
        let quote = self.notional(t.price, t.qty);
        for (i, (_, len_ms)) in INTERVALS.iter().enumerate() {
            let open = t.time_ms - t.time_ms % len_ms;
            let series = &mut self.klines[i];
            match series.back_mut() {
                Some(k) if k.open_time_ms == open => {
                    k.high = k.high.max(t.price);
                    k.low = k.low.min(t.price);
                    k.close = t.price;
                    k.volume += t.qty as u128;
                    k.quote_volume += quote;
                    k.trades += 1;
                    k.last_trade = t.id;
                    if !t.is_buyer_maker {
                        k.taker_buy_volume += t.qty as u128;
                        k.taker_buy_quote_volume += quote;
                    }
                }
                _ => {
                    let cap = if i == 0 { MAX_KLINES_1M } else { MAX_KLINES };
                    if series.len() == cap {
                        series.pop_front();
                    }
                    let buy = !t.is_buyer_maker;
                    series.push_back(Kline {
                        open_time_ms: open,
                        open: t.price,
                        high: t.price,
                        low: t.price,
                        close: t.price,
                        volume: t.qty as u128,
                        quote_volume: quote,
                        trades: 1,
                        taker_buy_volume: if buy { t.qty as u128 } else { 0 },
                        taker_buy_quote_volume: if buy { quote } else { 0 },
                        first_trade: t.id,
                        last_trade: t.id,
                    });
                }
            }
        }
    }

    /// Rolling statistics over the 1m klines of the window `[now - window_ms, now]`
    /// (minute granularity).
    pub fn stats(&self, now_ms: u64, window_ms: u64) -> Stats {
        let from = now_ms.saturating_sub(window_ms);
        let mut s = Stats {
            open_time_ms: from,
            close_time_ms: now_ms,
            ..Stats::default()
        };
        for k in self.klines[0]
            .iter()
            .filter(|k| k.open_time_ms + 60_000 > from)
        {
            if s.count == 0 {
                s.open = Some(k.open);
                s.high = k.high;
                s.low = k.low;
                s.first_trade = Some(k.first_trade);
            }
            s.high = s.high.max(k.high);
            s.low = s.low.min(k.low);
            s.volume += k.volume;
            s.quote_volume += k.quote_volume;
            s.count += k.trades;
            s.last_trade = Some(k.last_trade);
        }
        s
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub open_time_ms: u64,
    pub close_time_ms: u64,
    pub open: Option<u64>,
    pub high: u64,
    pub low: u64,
    pub volume: u128,
    pub quote_volume: u128,
    pub count: u64,
    pub first_trade: Option<TradeId>,
    pub last_trade: Option<TradeId>,
}

pub fn quote_decimal(minor: u128, decimals: u8) -> String {
    let minor = i128::try_from(minor)
        .unwrap_or(i128::MAX)
        .min(MAX_DECIMAL_MANTISSA);
    fixed(
        Decimal::from_i128_with_scale(minor, decimals as u32),
        print_scale(decimals),
    )
}

/// Largest mantissa a `Decimal` holds (96 bits).
const MAX_DECIMAL_MANTISSA: i128 = (1 << 96) - 1;

/// Binance order statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    ExpiredInMatch,
    Rejected,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::ExpiredInMatch => "EXPIRED_IN_MATCH",
            OrderStatus::Rejected => "REJECTED",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }

    pub fn of_cancel(reason: CancelReason) -> OrderStatus {
        match reason {
            CancelReason::User
            | CancelReason::MassCancel
            | CancelReason::Halted
            | CancelReason::DepositReversed => OrderStatus::Canceled,
            CancelReason::Ioc | CancelReason::Fok | CancelReason::Expired => OrderStatus::Expired,
            CancelReason::SelfTradePrevention => OrderStatus::ExpiredInMatch,
        }
    }
}

/// An order as the API shows it.
#[derive(Clone, Debug)]
pub struct OrderRec {
    pub order_id: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub client_order_id: ClientOrderId,
    pub side: Side,
    pub order_type: OrderType,
    pub tif: TimeInForce,
    pub stp: StpMode,
    /// Limit price in ticks (market orders: none).
    pub price: Option<u64>,
    /// Total quantity in lots; for a `quoteOrderQty` market order, what it filled.
    pub orig_qty: u64,
    /// `quoteOrderQty`, quote minor units.
    pub quote_order_qty: Option<u64>,
    pub executed: u64,
    /// Quote minor units traded.
    pub cumm_quote: u128,
    pub status: OrderStatus,
    pub time_ms: u64,
    pub update_time_ms: u64,
    pub working_time_ms: u64,
}

impl OrderRec {
    pub fn remaining(&self) -> u64 {
        self.orig_qty.saturating_sub(self.executed)
    }
}

/// A fill of one order, from its owner's side.
#[derive(Clone, Debug)]
pub struct Fill {
    pub trade_id: TradeId,
    pub market: MarketId,
    pub order_id: OrderId,
    pub price: u64,
    pub qty: u64,
    /// Commission in `commission_asset` minor units; negative = rebate.
    pub commission: i128,
    pub commission_asset: AssetId,
    pub is_buyer: bool,
    pub is_maker: bool,
    pub time_ms: u64,
}

/// What happened to an order in one event: one Binance `executionReport`.
#[derive(Clone, Debug)]
pub struct ExecUpdate {
    /// `NEW`, `TRADE`, `CANCELED`, `EXPIRED`, `REPLACED` (amend), as Binance `x`.
    pub exec_type: &'static str,
    /// The order after the event.
    pub order: OrderRec,
    pub fill: Option<Fill>,
    /// The amend's `priority_kept` (exec type `REPLACED`).
    pub priority_kept: Option<bool>,
    pub event_time_ms: u64,
}

/// Balance changes of one account in one command: Binance `outboundAccountPosition`.
#[derive(Clone, Debug)]
pub struct BalanceUpdate {
    pub account: AccountId,
    /// Asset, free, locked.
    pub balances: Vec<(AssetId, u64, u64)>,
    pub event_time_ms: u64,
    /// A deposit, or a reversed chain deposit (Binance `balanceUpdate`): asset and the
    /// signed change of the free balance (a credit's part that paid a deficit is not in it).
    pub delta: Option<(AssetId, i128)>,
}

#[derive(Clone, Debug, Default)]
pub struct AccountView {
    /// Asset → (free, locked).
    pub balances: BTreeMap<AssetId, (u64, u64)>,
    /// Asset → what reversed chain deposits could not take back (only entries above 0).
    pub deficits: BTreeMap<AssetId, u64>,
    pub open: BTreeSet<OrderId>,
    pub closed: VecDeque<OrderId>,
    pub trades: VecDeque<Fill>,
    pub permissions: u64,
    pub update_time_ms: u64,
}

impl AccountView {
    /// Owes a deficit: the engine refuses its withdrawals and new or raised buys.
    pub fn is_frozen(&self) -> bool {
        !self.deficits.is_empty()
    }
}

/// The whole read model.
#[derive(Debug, Default)]
pub struct View {
    pub assets: Vec<AssetInfo>,
    pub markets: Vec<MarketView>,
    market_by_symbol: HashMap<String, MarketId>,
    pub accounts: HashMap<AccountId, AccountView>,
    pub orders: HashMap<OrderId, OrderRec>,
    by_client: HashMap<(AccountId, ClientOrderId), OrderId>,
    closed_fifo: VecDeque<OrderId>,
    my_trades_total: usize,
    pub last_seq: u64,
    pub fee_account: AccountId,
    pub max_accounts: u32,
    /// Order and balance updates of the last batch applied, for user-data streams.
    pub exec_updates: Vec<ExecUpdate>,
    pub balance_updates: Vec<BalanceUpdate>,
}

impl View {
    /// The read model of a recovered exchange.
    pub fn from_exchange(ex: &Exchange, last_seq: u64, now_ms: u64) -> View {
        let cfg = ex.config();
        let mut v = View {
            last_seq,
            fee_account: cfg.fee_account,
            max_accounts: cfg.max_accounts,
            ..View::default()
        };
        for a in 0..ex.asset_count() {
            if let Some(spec) = ex.asset_spec(a) {
                v.add_asset(a, spec);
            }
        }
        for m in 0..ex.market_count() {
            if let Some(spec) = ex.market_spec(m) {
                v.add_market(m, spec.clone());
                let mv = &mut v.markets[m as usize];
                for (side, book) in [(Side::Buy, &mut mv.bids), (Side::Sell, &mut mv.asks)] {
                    for (p, q, n) in ex.depth(m, side, usize::MAX) {
                        book.insert(p, (q, n));
                    }
                }
                mv.update_id = ex.update_id(m);
                mv.reference_price = ex.reference_price(m);
                mv.last_price = ex.last_trade_price(m);
            }
        }
        for account in 0..cfg.max_accounts {
            for asset in 0..ex.asset_count() {
                let (free, locked) = ex.balance(account, asset);
                if free > 0 || locked > 0 {
                    v.accounts
                        .entry(account)
                        .or_default()
                        .balances
                        .insert(asset, (free, locked));
                }
                let owed = ex.deficit(account, asset);
                if owed > 0 {
                    v.accounts
                        .entry(account)
                        .or_default()
                        .deficits
                        .insert(asset, owed);
                }
            }
        }
        for o in ex.all_open_orders() {
            let rec = OrderRec {
                order_id: o.order_id,
                account: o.account,
                market: o.market,
                client_order_id: o.client_order_id,
                side: o.side,
                order_type: o.order_type,
                tif: o.tif,
                stp: o.stp,
                price: Some(o.price),
                orig_qty: o.qty,
                quote_order_qty: None,
                executed: o.qty - o.remaining,
                // The prices of fills before the restart are not kept; the limit price is
                // what a resting order's fills as a maker were at.
                cumm_quote: v
                    .markets
                    .get(o.market as usize)
                    .map_or(0, |m| m.notional(o.price, o.qty - o.remaining)),
                status: if o.remaining < o.qty {
                    OrderStatus::PartiallyFilled
                } else {
                    OrderStatus::New
                },
                time_ms: now_ms,
                update_time_ms: now_ms,
                working_time_ms: now_ms,
            };
            v.insert_open(rec);
        }
        v
    }

    fn add_asset(&mut self, id: AssetId, spec: &AssetSpec) {
        debug_assert_eq!(id as usize, self.assets.len());
        self.assets.push(AssetInfo {
            id,
            symbol: spec.symbol.clone(),
            decimals: spec.decimals,
            class: spec.class,
        });
    }

    fn add_market(&mut self, id: MarketId, spec: MarketSpec) {
        debug_assert_eq!(id as usize, self.markets.len());
        let base = self.assets[spec.base as usize].clone();
        let quote = self.assets[spec.quote as usize].clone();
        let per = spec.quote_per_tick_lot(base.decimals).unwrap_or(1);
        self.market_by_symbol.insert(spec.symbol.clone(), id);
        self.markets.push(MarketView {
            id,
            spec,
            base,
            quote,
            per,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            update_id: 0,
            trades: VecDeque::new(),
            agg_trades: VecDeque::new(),
            next_agg_id: 0,
            klines: vec![VecDeque::new(); INTERVALS.len()],
            reference_price: None,
            last_price: None,
            last_qty: 0,
        });
    }

    pub fn market(&self, symbol: &str) -> Option<&MarketView> {
        self.market_by_symbol
            .get(symbol)
            .map(|&m| &self.markets[m as usize])
    }

    pub fn asset_by_symbol(&self, symbol: &str) -> Option<&AssetInfo> {
        self.assets.iter().find(|a| a.symbol == symbol)
    }

    pub fn order(&self, account: AccountId, order_id: OrderId) -> Option<&OrderRec> {
        self.orders.get(&order_id).filter(|o| o.account == account)
    }

    /// The latest order of the account with this client order id.
    pub fn order_by_client(&self, account: AccountId, client: &ClientOrderId) -> Option<&OrderRec> {
        self.by_client
            .get(&(account, *client))
            .and_then(|id| self.orders.get(id))
    }

    pub fn open_orders(&self, account: AccountId) -> Vec<&OrderRec> {
        self.accounts.get(&account).map_or(Vec::new(), |a| {
            a.open.iter().filter_map(|id| self.orders.get(id)).collect()
        })
    }

    /// Open and kept closed orders of the account, ascending order id.
    pub fn all_orders(&self, account: AccountId) -> Vec<&OrderRec> {
        let mut v: Vec<&OrderRec> = self.accounts.get(&account).map_or(Vec::new(), |a| {
            a.open
                .iter()
                .chain(a.closed.iter())
                .filter_map(|id| self.orders.get(id))
                .collect()
        });
        v.sort_by_key(|o| o.order_id);
        v
    }

    fn insert_open(&mut self, rec: OrderRec) {
        let acct = self.accounts.entry(rec.account).or_default();
        acct.open.insert(rec.order_id);
        if !rec.client_order_id.is_none() {
            self.by_client
                .insert((rec.account, rec.client_order_id), rec.order_id);
        }
        self.orders.insert(rec.order_id, rec);
    }

    /// Moves a finished order from open to the bounded closed history.
    fn close(&mut self, order_id: OrderId) {
        let Some(account) = self.orders.get(&order_id).map(|o| o.account) else {
            return;
        };
        let acct = self.accounts.entry(account).or_default();
        if !acct.open.remove(&order_id) {
            return;
        }
        acct.closed.push_back(order_id);
        if acct.closed.len() > MAX_CLOSED_PER_ACCOUNT {
            if let Some(id) = acct.closed.pop_front() {
                self.forget(id, false);
            }
        }
        self.closed_fifo.push_back(order_id);
        while self.closed_fifo.len() > MAX_CLOSED_TOTAL {
            if let Some(id) = self.closed_fifo.pop_front() {
                self.forget(id, true);
            }
        }
    }

    /// Drops a closed order from the history (already gone from its account's list unless
    /// `in_account_list`). An id the per-account bound dropped earlier is no longer known.
    fn forget(&mut self, id: OrderId, in_account_list: bool) {
        if self.orders.get(&id).is_none_or(|o| o.status.is_open()) {
            return;
        }
        let o = self.orders.remove(&id).expect("present");
        if in_account_list {
            if let Some(a) = self.accounts.get_mut(&o.account) {
                // The oldest closed order of all is, nearly always, its account's oldest.
                if a.closed.front() == Some(&id) {
                    a.closed.pop_front();
                } else {
                    a.closed.retain(|x| *x != id);
                }
            }
        }
        if self.by_client.get(&(o.account, o.client_order_id)) == Some(&id) {
            self.by_client.remove(&(o.account, o.client_order_id));
        }
    }

    fn push_my_trade(&mut self, account: AccountId, f: Fill) {
        let acct = self.accounts.entry(account).or_default();
        if acct.trades.len() == MAX_MY_TRADES_PER_ACCOUNT {
            acct.trades.pop_front();
            self.my_trades_total -= 1;
        }
        acct.trades.push_back(f);
        self.my_trades_total += 1;
        // Past the total, the oldest trades of this account go first: bounded, and a busy
        // account cannot push out everybody else's history.
        if self.my_trades_total > MAX_MY_TRADES_TOTAL {
            acct.trades.pop_front();
            self.my_trades_total -= 1;
        }
    }

    /// Applies one durable batch, in sequence order. Fills `exec_updates` and
    /// `balance_updates` with what the batch did, for the user-data streams.
    pub fn apply(&mut self, items: &[BatchItem<'_>]) {
        self.exec_updates.clear();
        self.balance_updates.clear();
        for it in items {
            self.apply_item(it);
        }
    }

    fn apply_item(&mut self, it: &BatchItem<'_>) {
        debug_assert!(it.seq > self.last_seq, "batches arrive in sequence order");
        self.last_seq = it.seq;
        let now_ms = it.ts_ns / 1_000_000;
        let mut balances: Vec<(AccountId, AssetId, u64, u64)> = Vec::new();
        // A deposit's or a reversal's change of a free balance, for `balanceUpdate`.
        let mut delta: Option<(AccountId, AssetId, i128)> = match *it.command {
            Command::Deposit {
                account,
                asset,
                amount,
            } => Some((account, asset, amount as i128)),
            _ => None,
        };
        for e in it.events {
            match *e {
                Event::AssetAdded { asset } => {
                    if let Command::AddAsset(spec) = it.command {
                        self.add_asset(asset, spec);
                    }
                }
                Event::MarketAdded { market } => {
                    if let Command::AddMarket(spec) = it.command {
                        self.add_market(market, (**spec).clone());
                    }
                }
                Event::MarketStatusChanged { market, status } => {
                    if let Some(m) = self.markets.get_mut(market as usize) {
                        m.spec.status = status;
                    }
                }
                Event::ReferencePriceSet { market, price } => {
                    if let Some(m) = self.markets.get_mut(market as usize) {
                        m.reference_price = price;
                    }
                }
                Event::PermissionChanged {
                    account,
                    permission,
                    granted,
                } => {
                    let a = self.accounts.entry(account).or_default();
                    if granted {
                        a.permissions |= 1 << permission;
                    } else {
                        a.permissions &= !(1 << permission);
                    }
                }
                Event::OrderAccepted { .. } => {
                    let rec = accepted(e, now_ms).expect("an OrderAccepted");
                    self.exec_updates.push(ExecUpdate {
                        exec_type: "NEW",
                        order: rec.clone(),
                        fill: None,
                        priority_kept: None,
                        event_time_ms: now_ms,
                    });
                    self.insert_open(rec);
                }
                Event::Trade {
                    trade_id,
                    market,
                    price,
                    qty,
                    maker_order,
                    maker_account,
                    taker_order,
                    taker_account,
                    taker_side,
                    maker_remaining,
                    ..
                } => {
                    let Some(m) = self.markets.get_mut(market as usize) else {
                        continue;
                    };
                    let taker_buys = taker_side == Side::Buy;
                    let t = TradeRec {
                        id: trade_id,
                        price,
                        qty,
                        time_ms: now_ms,
                        buyer_order: if taker_buys { taker_order } else { maker_order },
                        seller_order: if taker_buys { maker_order } else { taker_order },
                        is_buyer_maker: !taker_buys,
                    };
                    m.record_trade(it.seq, &t, taker_order);
                    let quote_amt = m.notional(price, qty);
                    let fills = trade_fills(m, e, now_ms);
                    for (fill, account) in fills.into_iter().zip([maker_account, taker_account]) {
                        if let Some(o) = self.orders.get_mut(&fill.order_id) {
                            let done = apply_fill(o, &fill, quote_amt, maker_remaining, now_ms);
                            self.exec_updates.push(ExecUpdate {
                                exec_type: "TRADE",
                                order: o.clone(),
                                fill: Some(fill.clone()),
                                priority_kept: None,
                                event_time_ms: now_ms,
                            });
                            if done {
                                self.close(fill.order_id);
                            }
                        }
                        self.push_my_trade(account, fill);
                    }
                }
                Event::OrderCancelled {
                    order_id, reason, ..
                } => {
                    if let Some(o) = self.orders.get_mut(&order_id) {
                        o.status = OrderStatus::of_cancel(reason);
                        o.update_time_ms = now_ms;
                        if o.quote_order_qty.is_some() {
                            o.orig_qty = o.executed;
                        }
                        self.exec_updates.push(ExecUpdate {
                            exec_type: if o.status == OrderStatus::Canceled {
                                "CANCELED"
                            } else {
                                "EXPIRED"
                            },
                            order: o.clone(),
                            fill: None,
                            priority_kept: None,
                            event_time_ms: now_ms,
                        });
                        self.close(order_id);
                    }
                }
                Event::OrderAmended {
                    order_id,
                    price,
                    qty,
                    priority_kept,
                    ..
                } => {
                    if let Some(o) = self.orders.get_mut(&order_id) {
                        o.price = Some(price);
                        o.orig_qty = qty;
                        o.update_time_ms = now_ms;
                        if !priority_kept {
                            o.working_time_ms = now_ms;
                        }
                        self.exec_updates.push(ExecUpdate {
                            exec_type: "REPLACED",
                            order: o.clone(),
                            fill: None,
                            priority_kept: Some(priority_kept),
                            event_time_ms: now_ms,
                        });
                    }
                }
                Event::BookLevel {
                    market,
                    side,
                    price,
                    total_qty,
                    order_count,
                    update_id,
                } => {
                    if let Some(m) = self.markets.get_mut(market as usize) {
                        let book = match side {
                            Side::Buy => &mut m.bids,
                            Side::Sell => &mut m.asks,
                        };
                        if total_qty == 0 {
                            book.remove(&price);
                        } else {
                            book.insert(price, (total_qty, order_count));
                        }
                        debug_assert_eq!(update_id, m.update_id + 1, "update ids contiguous");
                        m.update_id = update_id;
                    }
                }
                Event::BalanceChanged {
                    account,
                    asset,
                    free,
                    locked,
                } => {
                    let a = self.accounts.entry(account).or_default();
                    a.balances.insert(asset, (free, locked));
                    a.update_time_ms = now_ms;
                    balances.push((account, asset, free, locked));
                }
                Event::DepositCredited {
                    account,
                    asset,
                    amount,
                    ..
                } => delta = Some((account, asset, amount as i128)),
                Event::DepositReversed {
                    account,
                    asset,
                    debited,
                    ..
                } => delta = Some((account, asset, -(debited as i128))),
                Event::DeficitChanged {
                    account,
                    asset,
                    deficit,
                } => {
                    let a = self.accounts.entry(account).or_default();
                    let before = if deficit == 0 {
                        a.deficits.remove(&asset)
                    } else {
                        a.deficits.insert(asset, deficit)
                    }
                    .unwrap_or(0);
                    // What a credit paid of the deficit never reached the balance.
                    if let Some(d) = delta.as_mut().filter(|d| (d.0, d.1) == (account, asset)) {
                        if deficit < before {
                            d.2 -= (before - deficit) as i128;
                        }
                    }
                }
                Event::CommandRejected { .. } => delta = None,
                Event::OrderRejected { .. }
                | Event::CancelRejected { .. }
                | Event::WithdrawalHeld { .. }
                | Event::WithdrawalReleased { .. }
                | Event::WithdrawalFinalized { .. }
                | Event::DepositSettled { .. } => {}
            }
        }
        if let (Command::PlaceOrder(_), Some(Event::OrderAccepted { order_id, .. })) =
            (it.command, it.events.first())
        {
            if let Some(o) = self.orders.get_mut(order_id) {
                let was_open = o.status.is_open();
                finish_taker(o);
                if was_open && !o.status.is_open() {
                    // Its last fill's report carries the final status, as Binance's does.
                    let done = o.clone();
                    if let Some(u) = self
                        .exec_updates
                        .iter_mut()
                        .rev()
                        .find(|u| u.order.order_id == done.order_id)
                    {
                        u.order.status = done.status;
                        u.order.orig_qty = done.orig_qty;
                    }
                    let id = *order_id;
                    self.close(id);
                }
            }
        }
        let delta = delta.filter(|d| d.2 != 0);
        self.collect_balance_updates(now_ms, balances, delta);
    }

    fn collect_balance_updates(
        &mut self,
        now_ms: u64,
        balances: Vec<(AccountId, AssetId, u64, u64)>,
        delta: Option<(AccountId, AssetId, i128)>,
    ) {
        if balances.is_empty() {
            return;
        }
        let mut accounts: Vec<AccountId> = balances.iter().map(|b| b.0).collect();
        accounts.sort_unstable();
        accounts.dedup();
        for account in accounts {
            // The last state of each asset in this command.
            let mut per_asset: BTreeMap<AssetId, (u64, u64)> = BTreeMap::new();
            for &(a, asset, free, locked) in &balances {
                if a == account {
                    per_asset.insert(asset, (free, locked));
                }
            }
            self.balance_updates.push(BalanceUpdate {
                account,
                balances: per_asset.into_iter().map(|(k, (f, l))| (k, f, l)).collect(),
                event_time_ms: now_ms,
                delta: delta
                    .filter(|d| d.0 == account)
                    .map(|(_, asset, amt)| (asset, amt)),
            });
        }
    }
}

/// A new order's record from its `OrderAccepted`.
fn accepted(e: &Event, now_ms: u64) -> Option<OrderRec> {
    let Event::OrderAccepted {
        order_id,
        account,
        market,
        side,
        order_type,
        tif,
        quantity,
        price,
        client_order_id,
        stp,
    } = *e
    else {
        return None;
    };
    let (orig_qty, quote_order_qty) = match quantity {
        Quantity::Base(q) => (q, None),
        Quantity::Quote(a) => (0, Some(a)),
    };
    Some(OrderRec {
        order_id,
        account,
        market,
        client_order_id,
        side,
        order_type,
        tif,
        stp,
        price,
        orig_qty,
        quote_order_qty,
        executed: 0,
        cumm_quote: 0,
        status: OrderStatus::New,
        time_ms: now_ms,
        update_time_ms: now_ms,
        working_time_ms: now_ms,
    })
}

/// The two fills of a trade: the maker's, then the taker's.
fn trade_fills(m: &MarketView, trade: &Event, now_ms: u64) -> [Fill; 2] {
    let Event::Trade {
        trade_id,
        market,
        price,
        qty,
        maker_order,
        taker_order,
        taker_side,
        maker_fee,
        taker_fee,
        ..
    } = *trade
    else {
        unreachable!("trade_fills takes a Trade")
    };
    let taker_buys = taker_side == Side::Buy;
    // Fees are paid in what each side receives; a rebate in the taker's fee asset.
    let (base, quote) = (m.spec.base, m.spec.quote);
    let taker_gets = if taker_buys { base } else { quote };
    let maker_gets = if taker_buys { quote } else { base };
    let maker_asset = if maker_fee >= 0 {
        maker_gets
    } else {
        taker_gets
    };
    let fill = |order_id, is_maker: bool, commission: i128, commission_asset| Fill {
        trade_id,
        market,
        order_id,
        price,
        qty,
        commission,
        commission_asset,
        is_buyer: is_maker != taker_buys,
        is_maker,
        time_ms: now_ms,
    };
    [
        fill(maker_order, true, maker_fee as i128, maker_asset),
        fill(taker_order, false, taker_fee as i128, taker_gets),
    ]
}

/// Applies a fill to its order; true if that filled it.
fn apply_fill(
    o: &mut OrderRec,
    f: &Fill,
    quote_amt: u128,
    maker_remaining: u64,
    now_ms: u64,
) -> bool {
    o.executed += f.qty;
    o.cumm_quote += quote_amt;
    o.update_time_ms = now_ms;
    if o.quote_order_qty.is_some() {
        o.orig_qty = o.executed;
    }
    let done = if f.is_maker {
        maker_remaining == 0
    } else {
        o.quote_order_qty.is_none() && o.executed >= o.orig_qty
    };
    o.status = if done {
        OrderStatus::Filled
    } else {
        OrderStatus::PartiallyFilled
    };
    done
}

/// A taker's state after its command, from that command's events alone: what an order
/// response shows (the state when the command was applied, not later), with its fills.
pub fn order_from_events(
    m: &MarketView,
    events: &[Event],
    ts_ns: u64,
) -> Option<(OrderRec, Vec<Fill>)> {
    let now_ms = ts_ns / 1_000_000;
    let mut rec: Option<OrderRec> = None;
    let mut fills = Vec::new();
    for e in events {
        match *e {
            Event::OrderAccepted { .. } => rec = accepted(e, now_ms),
            Event::Trade {
                taker_order,
                price,
                qty,
                maker_remaining,
                ..
            } => {
                if let Some(o) = rec.as_mut().filter(|o| o.order_id == taker_order) {
                    let [_, taker] = trade_fills(m, e, now_ms);
                    apply_fill(o, &taker, m.notional(price, qty), maker_remaining, now_ms);
                    fills.push(taker);
                }
            }
            Event::OrderCancelled {
                order_id, reason, ..
            } => {
                if let Some(o) = rec.as_mut().filter(|o| o.order_id == order_id) {
                    o.status = OrderStatus::of_cancel(reason);
                    if o.quote_order_qty.is_some() {
                        o.orig_qty = o.executed;
                    }
                }
            }
            _ => {}
        }
    }
    let mut rec = rec?;
    finish_taker(&mut rec);
    Some((rec, fills))
}

/// A taker neither resting nor cancelled after its command filled entirely (a
/// quoteOrderQty market order that spent its amount ends FILLED).
fn finish_taker(o: &mut OrderRec) {
    let resting = o.price.is_some() && matches!(o.tif, TimeInForce::Gtc | TimeInForce::Gtd { .. });
    if o.status.is_open() && !resting {
        o.status = OrderStatus::Filled;
        o.orig_qty = o.orig_qty.max(o.executed);
    }
}
