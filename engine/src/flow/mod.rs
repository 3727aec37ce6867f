//! Order flows: streams of engine commands for benchmarks and tests.
//!
//! A `Flow` is self-contained: the assets and markets it trades, the accounts it funds, and
//! its commands, whose market ids index `Flow::markets` and whose order ids count from 1 in
//! the order the flow's `PlaceOrder`s are accepted. `Flow::setup_commands` and
//! `Flow::remapped` replay it any number of times into fresh markets of one exchange.
//!
//! Kinds:
//! - `liquibook`: Liquibook's insert benchmark stream.
//! - `lobster`: LOBSTER message files (NASDAQ market-by-order), streamed from any `BufRead`.
//! - `bitfinex`: Bitfinex raw-book (L3) WebSocket recordings, streamed from any `BufRead`.
//! - `synthetic`: exchange-core-style generated flow (GTC, IOC, market, cancel, amend) over
//!   many accounts and markets, with cancels and amends that always hit live orders.
//! - `native`: the `.fcmd` binary command file (fixed-size records) that stores any flow.

pub mod bitfinex;
pub mod liquibook;
pub mod lobster;
pub mod native;
pub mod synthetic;

pub use liquibook::liquibook;

use crate::command::{Command, OrderRef, Sequenced};
use crate::spec::{AssetSpec, MarketSpec};
use crate::types::*;

/// A small, fast, seedable generator (xorshift64*): flows are reproducible from their seed
/// on any machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// What the flow is, for reports (`liquibook`, `lobster`, ...).
    pub name: String,
    pub assets: Vec<AssetSpec>,
    /// Markets, whose `base` and `quote` index `assets`.
    pub markets: Vec<MarketSpec>,
    /// Accounts `1..=accounts` get `funding` minor units of every asset before each replay.
    pub accounts: u32,
    pub funding: u64,
    /// Market ids index `markets`; order ids count from 1 in acceptance order; `seq` counts
    /// from 1; `ts_ns` is the source's time where it has one.
    pub commands: Vec<Sequenced>,
    /// How many leading commands only prepare the state to measure (a synthetic flow's
    /// book fill): benchmarks apply them before their clock starts.
    pub warmup: usize,
    /// Input the loader passed over, by reason, with counts.
    pub skipped: Vec<(String, u64)>,
    /// Executions to check price-time priority against (LOBSTER): (index into `commands` of
    /// the taker order that reproduces an execution, flow order id of the resting order the
    /// source exchange executed).
    pub expected_makers: Vec<(u32, OrderId)>,
}

impl Flow {
    /// Setup of replay number `repetition` (0, 1, ...) into an exchange that holds earlier
    /// replays: the assets the first time, then this replay's markets (symbols suffixed
    /// `R<n>` after the first) and the accounts' funding.
    pub fn setup_commands(&self, repetition: u32) -> Vec<Command> {
        let mut cmds = Vec::new();
        if repetition == 0 {
            for a in &self.assets {
                cmds.push(Command::AddAsset(Box::new(a.clone())));
            }
        }
        for m in &self.markets {
            let mut m = m.clone();
            if repetition > 0 {
                m.symbol = format!("{}R{repetition}", m.symbol);
            }
            cmds.push(Command::AddMarket(Box::new(m)));
        }
        for account in 1..=self.accounts {
            for asset in 0..self.assets.len() as AssetId {
                cmds.push(Command::Deposit {
                    account,
                    asset,
                    amount: self.funding,
                });
            }
        }
        cmds
    }

    /// The commands with market ids moved by `market_offset`, order ids by
    /// `order_id_offset` (the ids the exchange gave out before this replay), and sequence
    /// numbers by `seq_offset`.
    pub fn remapped(
        &self,
        market_offset: u32,
        order_id_offset: u64,
        seq_offset: u64,
    ) -> Vec<Sequenced> {
        self.commands
            .iter()
            .map(|c| Sequenced {
                seq: c.seq + seq_offset,
                ts_ns: c.ts_ns,
                command: remap(&c.command, market_offset, order_id_offset),
            })
            .collect()
    }
}

fn remap(c: &Command, dm: u32, did: u64) -> Command {
    let target = |t: &OrderRef| match t {
        OrderRef::Id(id) => OrderRef::Id(id + did),
        other => *other,
    };
    match c {
        Command::PlaceOrder(p) => {
            let mut p = *p;
            p.market += dm;
            Command::PlaceOrder(p)
        }
        Command::CancelOrder {
            account,
            market,
            target: t,
        } => Command::CancelOrder {
            account: *account,
            market: market + dm,
            target: target(t),
        },
        Command::CancelAll { account, market } => Command::CancelAll {
            account: *account,
            market: market.map(|m| m + dm),
        },
        Command::AmendOrder {
            account,
            market,
            target: t,
            new_qty,
            new_price,
        } => Command::AmendOrder {
            account: *account,
            market: market + dm,
            target: target(t),
            new_qty: *new_qty,
            new_price: *new_price,
        },
        Command::SetMarketStatus {
            market,
            status,
            cancel_open,
        } => Command::SetMarketStatus {
            market: market + dm,
            status: *status,
            cancel_open: *cancel_open,
        },
        Command::SetReferencePrice { market, price } => Command::SetReferencePrice {
            market: market + dm,
            price: *price,
        },
        other => other.clone(),
    }
}

/// Stamps commands with consecutive sequence numbers from 1 (time = seq µs).
pub fn sequence(cmds: Vec<Command>) -> Vec<Sequenced> {
    cmds.into_iter()
        .enumerate()
        .map(|(i, command)| {
            let seq = 1 + i as u64;
            Sequenced {
                seq,
                ts_ns: seq * 1_000,
                command,
            }
        })
        .collect()
}

/// The asset pair the synthetic flows trade: BASE and QUOTE with 0 decimals, so that with
/// tick = lot = 1 minor unit prices and quantities are the plain numbers of the stream.
pub fn plain_assets() -> Vec<AssetSpec> {
    use crate::spec::AssetClass;
    vec![
        AssetSpec {
            symbol: "BASE".into(),
            decimals: 0,
            class: AssetClass::Crypto,
        },
        AssetSpec {
            symbol: "QUOTE".into(),
            decimals: 0,
            class: AssetClass::Stablecoin,
        },
    ]
}

/// A market of `plain_assets`: tick = lot = 1, no filters to speak of, no fees.
pub fn plain_market(symbol: &str) -> MarketSpec {
    use crate::spec::{FeeSchedule, MarketStatus};
    MarketSpec {
        symbol: symbol.into(),
        base: 0,
        quote: 1,
        tick_size: 1,
        lot_size: 1,
        min_price_ticks: 1,
        max_price_ticks: 1 << 32,
        min_qty_lots: 1,
        max_qty_lots: 1 << 32,
        min_notional: 0,
        max_notional: u64::MAX,
        price_band_bps: 0,
        max_open_orders: u16::MAX as u32,
        status: MarketStatus::Trading,
        fees: FeeSchedule {
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        },
        required_permission: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineConfig, Event, Exchange};

    #[test]
    fn replays_into_fresh_markets_of_one_exchange() {
        let flow = liquibook(2_000, 3, 10);
        let mut ex = Exchange::new(EngineConfig::default());
        let mut out = Vec::new();
        let mut trades = Vec::new();
        for rep in 0..3u32 {
            for (i, c) in flow.setup_commands(rep).into_iter().enumerate() {
                ex.apply(
                    &Sequenced {
                        seq: i as u64,
                        ts_ns: 0,
                        command: c,
                    },
                    &mut out,
                );
            }
            let offset = ex.next_order_id() - 1;
            out.clear();
            for c in flow.remapped(rep * flow.markets.len() as u32, offset, 0) {
                ex.apply(&c, &mut out);
            }
            assert!(!out.iter().any(|e| matches!(
                e,
                Event::OrderRejected { .. } | Event::CommandRejected { .. }
            )));
            trades.push(
                out.iter()
                    .filter(|e| matches!(e, Event::Trade { .. }))
                    .count(),
            );
        }
        ex.check_invariants().unwrap();
        assert_eq!(ex.market_count(), 3);
        assert!(
            trades[0] > 0 && trades.iter().all(|&t| t == trades[0]),
            "{trades:?}"
        );
    }
}
