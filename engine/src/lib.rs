//! # fulgur-engine
//!
//! The sans-IO, deterministic heart of Fulgur: order books, order types, self-trade
//! prevention, the ledger (balances, holds, fees), market specs, and the commands and events
//! through which everything else talks to it. Beside the state machine it owns the formats
//! that carry its state: the journal (`journal`, append-only segment files of commands),
//! snapshots (`Exchange::write_snapshot` / `read_snapshot`), and order flows (`flow`:
//! LOBSTER, Bitfinex, Liquibook, synthetic, the native `.fcmd`). Those read and write through
//! `std::io` at the caller's request; `Exchange::apply` itself touches nothing outside.
//!
//! - `Exchange::apply(&Sequenced, &mut impl EventSink)` is the only way to change state.
//!   Time comes in the command (`Sequenced::ts_ns`); the engine reads no clock, starts no
//!   thread, does no IO.
//! - Same commands in, same events and the same `Exchange::state_hash()` out, on any machine.
//! - Every capacity is preallocated (`EngineConfig`); past one, a rejection. After warm-up
//!   the order path does not allocate.
//! - Integers inside: prices in ticks, quantities in lots, amounts in minor units.
//!   `spec::decimal_to_steps` converts text-side decimals exactly or not at all.
//!
//! The exact semantics (check order, event order, fee rounding) are in `docs/engine.md`.

pub mod command;
pub mod event;
mod exchange;
pub mod flow;
mod hash;
mod index;
pub mod journal;
pub mod spec;
pub mod types;

pub use command::{Command, CommandKind, OrderRef, PlaceOrder, Sequenced};
pub use event::{CancelReason, Event, EventSink, RejectReason};
pub use exchange::snapshot::{ChecksumRegion, SnapshotError, SNAPSHOT_VERSION};
pub use exchange::{Exchange, OpenOrder};
pub use spec::{AssetClass, AssetSpec, EngineConfig, FeeSchedule, MarketSpec, MarketStatus};
pub use types::*;
