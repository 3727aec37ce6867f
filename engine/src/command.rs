//! Commands: everything that can change an `Exchange`. The sequencer stamps each with a
//! sequence number and a time; the engine never reads a clock.

use crate::spec::{AssetSpec, MarketSpec, MarketStatus};
use crate::types::{
    AccountId, AssetId, ClientOrderId, DepositId, MarketId, OrderId, OrderType, PermissionId,
    Quantity, Side, StpMode, TimeInForce, WithdrawalId,
};

/// A command as the sequencer hands it to the engine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sequenced {
    pub seq: u64,
    /// Sequencer time in ns since the Unix epoch; GTD expiry is judged against it.
    pub ts_ns: u64,
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlaceOrder {
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub order_type: OrderType,
    pub tif: TimeInForce,
    pub quantity: Quantity,
    /// Limit price in ticks; required for `Limit` and `LimitMaker`, must be absent for `Market`.
    pub price: Option<u64>,
    pub client_order_id: ClientOrderId,
    pub stp: StpMode,
}

/// Which order a cancel or amend means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    // --- orders ---
    PlaceOrder(PlaceOrder),
    CancelOrder {
        account: AccountId,
        market: MarketId,
        target: OrderRef,
    },
    /// Cancels every open order of the account, in one market or in all.
    CancelAll {
        account: AccountId,
        market: Option<MarketId>,
    },
    /// `new_qty` is the new total quantity in lots (Binance `newQty`: filled + remaining).
    /// Quantity down at the same price keeps time priority; any price change or quantity up
    /// is a cancel-replace at the back of the queue (same order id), which may match.
    AmendOrder {
        account: AccountId,
        market: MarketId,
        target: OrderRef,
        new_qty: u64,
        new_price: Option<u64>,
    },
    // --- ledger (custody and settlement) ---
    Deposit {
        account: AccountId,
        asset: AssetId,
        amount: u64,
    },
    /// Moves `amount` from free to locked until released or finalized.
    WithdrawHold {
        account: AccountId,
        asset: AssetId,
        amount: u64,
        withdrawal: WithdrawalId,
    },
    /// The withdrawal failed: the held amount goes back to free.
    WithdrawRelease {
        withdrawal: WithdrawalId,
    },
    /// The withdrawal was paid out: the held amount leaves the exchange.
    WithdrawFinalize {
        withdrawal: WithdrawalId,
    },
    /// Credits an on-chain deposit as `Deposit` does, and remembers it under `deposit` until
    /// it is settled or reversed: a second credit of the same pending id is refused.
    DepositCredit {
        deposit: DepositId,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    },
    /// The deposit is final (deep enough in the chain): it is forgotten.
    DepositSettle {
        deposit: DepositId,
    },
    /// A reorg removed the deposit: its amount is taken back, as far as the account has it
    /// (cancelling its orders that hold the asset if need be); the rest becomes a deficit.
    DepositReverse {
        deposit: DepositId,
    },
    // --- admin ---
    AddAsset(Box<AssetSpec>),
    AddMarket(Box<MarketSpec>),
    /// With `cancel_open`, every open order of the market is cancelled (reason `Halted`).
    SetMarketStatus {
        market: MarketId,
        status: MarketStatus,
        cancel_open: bool,
    },
    /// Reference price in ticks for the price band (RWA fair value); `None` = last trade.
    SetReferencePrice {
        market: MarketId,
        price: Option<u64>,
    },
    GrantPermission {
        account: AccountId,
        permission: PermissionId,
    },
    RevokePermission {
        account: AccountId,
        permission: PermissionId,
    },
    /// Expires every GTD order whose expiry is at or before the command's `ts_ns`.
    Tick,
}

/// The kind of a command, for per-kind statistics and error mapping.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum CommandKind {
    PlaceOrder,
    CancelOrder,
    CancelAll,
    AmendOrder,
    Deposit,
    WithdrawHold,
    WithdrawRelease,
    WithdrawFinalize,
    AddAsset,
    AddMarket,
    SetMarketStatus,
    SetReferencePrice,
    GrantPermission,
    RevokePermission,
    Tick,
    DepositCredit,
    DepositSettle,
    DepositReverse,
}

impl CommandKind {
    pub const ALL: [CommandKind; 18] = [
        CommandKind::PlaceOrder,
        CommandKind::CancelOrder,
        CommandKind::CancelAll,
        CommandKind::AmendOrder,
        CommandKind::Deposit,
        CommandKind::WithdrawHold,
        CommandKind::WithdrawRelease,
        CommandKind::WithdrawFinalize,
        CommandKind::AddAsset,
        CommandKind::AddMarket,
        CommandKind::SetMarketStatus,
        CommandKind::SetReferencePrice,
        CommandKind::GrantPermission,
        CommandKind::RevokePermission,
        CommandKind::Tick,
        CommandKind::DepositCredit,
        CommandKind::DepositSettle,
        CommandKind::DepositReverse,
    ];
}

impl Command {
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::PlaceOrder(_) => CommandKind::PlaceOrder,
            Command::CancelOrder { .. } => CommandKind::CancelOrder,
            Command::CancelAll { .. } => CommandKind::CancelAll,
            Command::AmendOrder { .. } => CommandKind::AmendOrder,
            Command::Deposit { .. } => CommandKind::Deposit,
            Command::WithdrawHold { .. } => CommandKind::WithdrawHold,
            Command::WithdrawRelease { .. } => CommandKind::WithdrawRelease,
            Command::WithdrawFinalize { .. } => CommandKind::WithdrawFinalize,
            Command::DepositCredit { .. } => CommandKind::DepositCredit,
            Command::DepositSettle { .. } => CommandKind::DepositSettle,
            Command::DepositReverse { .. } => CommandKind::DepositReverse,
            Command::AddAsset(_) => CommandKind::AddAsset,
            Command::AddMarket(_) => CommandKind::AddMarket,
            Command::SetMarketStatus { .. } => CommandKind::SetMarketStatus,
            Command::SetReferencePrice { .. } => CommandKind::SetReferencePrice,
            Command::GrantPermission { .. } => CommandKind::GrantPermission,
            Command::RevokePermission { .. } => CommandKind::RevokePermission,
            Command::Tick => CommandKind::Tick,
        }
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;
    use crate::types::*;

    #[test]
    fn commands_round_trip_through_json() {
        let cmds = vec![
            Command::PlaceOrder(PlaceOrder {
                account: 1,
                market: 0,
                side: Side::Buy,
                order_type: OrderType::Limit,
                tif: TimeInForce::Gtd { expire_ns: 5 },
                quantity: Quantity::Base(3),
                price: Some(100),
                client_order_id: ClientOrderId::new("x-1").unwrap(),
                stp: StpMode::ExpireMaker,
            }),
            Command::CancelOrder {
                account: 1,
                market: 0,
                target: OrderRef::Client(ClientOrderId::new("x-1").unwrap()),
            },
            Command::Deposit {
                account: 2,
                asset: 1,
                amount: 10,
            },
            Command::DepositCredit {
                deposit: 9,
                account: 2,
                asset: 1,
                amount: 10,
            },
            Command::DepositSettle { deposit: 9 },
            Command::DepositReverse { deposit: 9 },
            Command::Tick,
        ];
        for c in cmds {
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Command>(&j).unwrap(), c, "{j}");
        }
        let j = r#"{"Deposit":{"account":2,"asset":1,"amount":10}}"#;
        assert!(matches!(
            serde_json::from_str::<Command>(j).unwrap(),
            Command::Deposit { .. }
        ));
        assert!(serde_json::from_str::<Command>(r#"{"Deposit":{"account":2}}"#).is_err());
        // The forms docs/api.md shows for the operator endpoint.
        let j = r#"{"DepositCredit":{"deposit":42,"account":5,"asset":0,"amount":150000000}}"#;
        assert_eq!(
            serde_json::from_str::<Command>(j).unwrap(),
            Command::DepositCredit {
                deposit: 42,
                account: 5,
                asset: 0,
                amount: 150_000_000
            }
        );
        for (j, c) in [
            (
                r#"{"DepositSettle":{"deposit":42}}"#,
                Command::DepositSettle { deposit: 42 },
            ),
            (
                r#"{"DepositReverse":{"deposit":42}}"#,
                Command::DepositReverse { deposit: 42 },
            ),
        ] {
            assert_eq!(serde_json::from_str::<Command>(j).unwrap(), c);
        }
    }
}
