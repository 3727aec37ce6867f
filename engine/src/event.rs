//! Events: everything the engine says. Same commands in, same events out, on any machine.

use crate::spec::SpecError;
use crate::types::{
    AccountId, AssetId, ClientOrderId, DepositId, MarketId, OrderId, OrderType, Quantity, Side,
    StpMode, TimeInForce, TradeId, WithdrawalId,
};

/// Why a command was refused. A refused command changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RejectReason {
    UnknownMarket,
    /// Account id outside `0..max_accounts`.
    UnknownAccount,
    UnknownAsset,
    /// Market status `Halted`.
    MarketHalted,
    /// Market status `CancelOnly` and the command would add or move liquidity.
    MarketCancelOnly,
    /// The account lacks the market's required permission.
    NotPermitted,
    /// Price outside PRICE_FILTER bounds (or a zero price).
    PriceFilter,
    /// Quantity outside LOT_SIZE bounds (or zero).
    LotSize,
    /// Notional outside NOTIONAL bounds.
    Notional,
    /// Price outside the PERCENT_PRICE band around the reference price.
    PercentPrice,
    InsufficientBalance,
    /// LimitMaker (post-only) would take liquidity.
    PostOnlyWouldCross,
    /// MAX_NUM_ORDERS of the market reached for this account.
    TooManyOpenOrders,
    /// The client order id is already used by an open order of the account.
    DuplicateClientOrderId,
    /// Client order id with bad characters or length.
    InvalidClientOrderId,
    /// No such open order of this account in this market.
    UnknownOrder,
    /// Price given for a market order, missing for a limit order, or a quote quantity on a
    /// limit order.
    InvalidOrderParameters,
    /// Time in force not allowed for the order type (market: IOC only; LimitMaker: GTC or GTD).
    InvalidTimeInForce,
    /// GTD expiry at or before the command's time.
    InvalidExpiry,
    /// Amend to a total quantity not above the filled quantity, or for a non-limit order.
    InvalidAmend,
    /// A preallocated capacity (orders, price levels, GTD orders, withdrawals) is full.
    CapacityExceeded,
    /// The deposit would take the asset's total supply past `u64::MAX` minor units.
    BalanceOverflow,
    UnknownWithdrawal,
    DuplicateWithdrawal,
    /// No pending deposit with this id (never credited, or already settled or reversed).
    UnknownDeposit,
    /// A deposit with this id is pending: the credit was already applied.
    DuplicateDeposit,
    /// The account owes a deficit: no withdrawal and no new or raised buy until it is covered.
    AccountFrozen,
    InvalidSpec(SpecError),
    /// A zero amount or an out-of-range permission bit.
    InvalidAmount,
}

/// Why an order left the book (or never rested) without being filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CancelReason {
    /// `CancelOrder` by its owner.
    User,
    /// `CancelAll`.
    MassCancel,
    /// Unfilled rest of an IOC or market order (no liquidity, price band, or balance).
    Ioc,
    /// A FOK order that could not fill entirely; nothing of it traded.
    Fok,
    /// Self-trade prevention (Binance `EXPIRED_IN_MATCH`).
    SelfTradePrevention,
    /// GTD expiry.
    Expired,
    /// `SetMarketStatus { cancel_open: true }`.
    Halted,
    /// `DepositReverse`: the order held the reversed asset, and the account's free balance
    /// did not cover the reversal.
    DepositReversed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    OrderAccepted {
        order_id: OrderId,
        account: AccountId,
        market: MarketId,
        side: Side,
        order_type: OrderType,
        tif: TimeInForce,
        quantity: Quantity,
        price: Option<u64>,
        client_order_id: ClientOrderId,
        stp: StpMode,
    },
    /// A `PlaceOrder` was refused; nothing changed.
    OrderRejected {
        account: AccountId,
        market: MarketId,
        client_order_id: ClientOrderId,
        reason: RejectReason,
    },
    /// A `CancelOrder`, `CancelAll` or `AmendOrder` was refused; nothing changed.
    CancelRejected {
        account: AccountId,
        market: MarketId,
        reason: RejectReason,
    },
    /// Any other command was refused; nothing changed.
    CommandRejected {
        reason: RejectReason,
    },
    /// Fees: the taker pays `taker_fee` in the asset it receives. A maker fee >= 0 is paid
    /// in the asset the maker receives; a negative `maker_fee` is a rebate of `-maker_fee`
    /// paid to the maker in the taker's fee asset, out of `taker_fee`.
    Trade {
        trade_id: TradeId,
        market: MarketId,
        price: u64,
        qty: u64,
        maker_order: OrderId,
        maker_account: AccountId,
        taker_order: OrderId,
        taker_account: AccountId,
        taker_side: Side,
        maker_fee: i64,
        taker_fee: u64,
        /// Lots still open on the maker order after this trade (0 = filled).
        maker_remaining: u64,
    },
    OrderCancelled {
        order_id: OrderId,
        account: AccountId,
        market: MarketId,
        /// Lots that were still open.
        remaining: u64,
        reason: CancelReason,
    },
    OrderAmended {
        order_id: OrderId,
        account: AccountId,
        market: MarketId,
        price: u64,
        /// New total quantity (filled + remaining).
        qty: u64,
        remaining: u64,
        priority_kept: bool,
    },
    /// A price level after a change: `total_qty == 0` means the level is gone.
    /// `update_id` is contiguous per market, starting at 1.
    BookLevel {
        market: MarketId,
        side: Side,
        price: u64,
        total_qty: u64,
        order_count: u32,
        update_id: u64,
    },
    BalanceChanged {
        account: AccountId,
        asset: AssetId,
        free: u64,
        locked: u64,
    },
    AssetAdded {
        asset: AssetId,
    },
    MarketAdded {
        market: MarketId,
    },
    MarketStatusChanged {
        market: MarketId,
        status: crate::spec::MarketStatus,
    },
    ReferencePriceSet {
        market: MarketId,
        price: Option<u64>,
    },
    PermissionChanged {
        account: AccountId,
        permission: u8,
        granted: bool,
    },
    WithdrawalHeld {
        withdrawal: WithdrawalId,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    },
    WithdrawalReleased {
        withdrawal: WithdrawalId,
    },
    WithdrawalFinalized {
        withdrawal: WithdrawalId,
    },
    /// A `DepositCredit` was applied; its `BalanceChanged` follows.
    DepositCredited {
        deposit: DepositId,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    },
    DepositSettled {
        deposit: DepositId,
    },
    /// A `DepositReverse`: `debited` of `amount` is taken from the account's free balance,
    /// after the cancels that follow this event (reason `DepositReversed`) released their
    /// holds; the rest, `amount - debited`, is added to the account's deficit.
    DepositReversed {
        deposit: DepositId,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        debited: u64,
    },
    /// The account's deficit in the asset is now `deficit` (0: covered). While any deficit
    /// of an account is above 0, the account is frozen.
    DeficitChanged {
        account: AccountId,
        asset: AssetId,
        deficit: u64,
    },
}

/// Where `Exchange::apply` writes its events. A `Vec` cleared between batches keeps its
/// capacity, so after warm-up pushing does not allocate.
pub trait EventSink {
    fn push(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn push(&mut self, event: Event) {
        Vec::push(self, event)
    }
}
