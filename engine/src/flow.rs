//! Order flows: streams of engine commands for benchmarks and tests.
//!
//! - `liquibook`: Liquibook's insert benchmark stream (the stream the speed goal is stated
//!   on): alternating buy/sell limit GTC orders, buys uniform in 1880-1889, sells in
//!   1884-1893, quantity uniform in 100-1000 step 100, seeded; about half of them trade.

use crate::command::{Command, PlaceOrder, Sequenced};
use crate::spec::{AssetClass, AssetSpec, FeeSchedule, MarketSpec, MarketStatus};
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

/// A flow: the commands that set up assets, markets and balances, then the measured ones.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub setup: Vec<Sequenced>,
    pub commands: Vec<Sequenced>,
}

/// The setup shared by the synthetic flows: assets BASE and QUOTE (8 decimals), one market
/// `BASEQUOTE` per `markets` (tick = lot = one minor unit, so `per` = 1 and prices and
/// quantities are the plain numbers of the stream), `accounts` accounts funded far beyond
/// anything the flow can spend, no fees.
pub fn bench_setup(markets: u32, accounts: u32) -> Vec<Sequenced> {
    let mut cmds = vec![
        Command::AddAsset(Box::new(AssetSpec {
            symbol: "BASE".into(),
            decimals: 0,
            class: AssetClass::Crypto,
        })),
        Command::AddAsset(Box::new(AssetSpec {
            symbol: "QUOTE".into(),
            decimals: 0,
            class: AssetClass::Stablecoin,
        })),
    ];
    for m in 0..markets {
        cmds.push(Command::AddMarket(Box::new(MarketSpec {
            symbol: format!("BASEQUOTE{m}"),
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
        })));
    }
    for a in 1..=accounts {
        for asset in 0..2 {
            cmds.push(Command::Deposit {
                account: a,
                asset,
                amount: 1 << 52,
            });
        }
    }
    sequence(cmds, 1)
}

/// Stamps commands with consecutive sequence numbers from `first_seq` (time = seq µs).
pub fn sequence(cmds: Vec<Command>, first_seq: u64) -> Vec<Sequenced> {
    cmds.into_iter()
        .enumerate()
        .map(|(i, command)| {
            let seq = first_seq + i as u64;
            Sequenced {
                seq,
                ts_ns: seq * 1_000,
                command,
            }
        })
        .collect()
}

/// Liquibook's insert stream: `n` orders over `accounts` accounts in market `market`.
pub fn liquibook(n: usize, seed: u64, accounts: u32) -> Flow {
    let setup = bench_setup(1, accounts);
    let first = setup.len() as u64 + 1;
    let mut rng = Rng::new(seed);
    let mut cmds = Vec::with_capacity(n);
    for i in 0..n {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let price = match side {
            Side::Buy => 1880 + rng.below(10),
            Side::Sell => 1884 + rng.below(10),
        };
        let qty = 100 * (1 + rng.below(10));
        cmds.push(Command::PlaceOrder(PlaceOrder {
            account: 1 + (i as u32 % accounts),
            market: 0,
            side,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            quantity: Quantity::Base(qty),
            price: Some(price),
            client_order_id: ClientOrderId::NONE,
            stp: StpMode::None,
        }));
    }
    Flow {
        setup,
        commands: sequence(cmds, first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Exchange};

    #[test]
    fn liquibook_stream_is_reproducible_and_half_trades() {
        let a = liquibook(20_000, 7, 100);
        let b = liquibook(20_000, 7, 100);
        assert_eq!(a.commands, b.commands);
        assert_ne!(a.commands, liquibook(20_000, 8, 100).commands);
        let cfg = crate::EngineConfig {
            max_orders: 100_000,
            max_accounts: 1_000,
            ..Default::default()
        };
        let mut ex = Exchange::new(cfg);
        let mut out = Vec::new();
        for c in &a.setup {
            ex.apply(c, &mut out);
        }
        out.clear();
        for c in &a.commands {
            ex.apply(c, &mut out);
        }
        ex.check_invariants().unwrap();
        // "About half the orders trade": as taker or as maker.
        let mut traded = std::collections::HashSet::new();
        for e in &out {
            if let Event::Trade {
                maker_order,
                taker_order,
                ..
            } = e
            {
                traded.insert(*maker_order);
                traded.insert(*taker_order);
            }
        }
        let n = traded.len();
        assert!((8_000..12_000).contains(&n), "{n} orders traded");
    }
}
