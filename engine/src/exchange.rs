//! The exchange state machine (skeleton; implementation in progress).
use crate::command::Sequenced;
use crate::event::EventSink;
use crate::spec::{AssetSpec, EngineConfig, MarketSpec};
use crate::types::*;

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

pub struct Exchange {
    _config: EngineConfig,
}

impl Exchange {
    pub fn new(config: EngineConfig) -> Self { Exchange { _config: config } }
    pub fn config(&self) -> &EngineConfig { &self._config }
    pub fn apply<S: EventSink>(&mut self, _cmd: &Sequenced, _out: &mut S) { todo!() }
    /// (free, locked) in minor units.
    pub fn balance(&self, _account: AccountId, _asset: AssetId) -> (u64, u64) { todo!() }
    /// Deposits minus finalized withdrawals.
    pub fn supply(&self, _asset: AssetId) -> u64 { todo!() }
    pub fn asset_spec(&self, _asset: AssetId) -> Option<&AssetSpec> { todo!() }
    pub fn market_spec(&self, _market: MarketId) -> Option<&MarketSpec> { todo!() }
    pub fn asset_count(&self) -> u32 { todo!() }
    pub fn market_count(&self) -> u32 { todo!() }
    /// Best (price, total lots) on a side.
    pub fn best(&self, _market: MarketId, _side: Side) -> Option<(u64, u64)> { todo!() }
    /// Up to `max_levels` levels from the best: (price, total lots, order count).
    pub fn depth(&self, _market: MarketId, _side: Side, _max_levels: usize) -> Vec<(u64, u64, u32)> { todo!() }
    pub fn order(&self, _order_id: OrderId) -> Option<OpenOrder> { todo!() }
    /// The account's open orders, ascending order id.
    pub fn open_orders(&self, _account: AccountId) -> Vec<OpenOrder> { todo!() }
    pub fn resting_orders(&self) -> usize { todo!() }
    pub fn last_trade_price(&self, _market: MarketId) -> Option<u64> { todo!() }
    /// The market's last `BookLevel` update id.
    pub fn update_id(&self, _market: MarketId) -> u64 { todo!() }
    /// Hash over assets, markets, books, orders, balances, holds and counters, in a
    /// canonical order.
    pub fn state_hash(&self) -> u64 { todo!() }
    /// Full scan of every invariant of `docs/engine.md`; `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> { todo!() }
}
