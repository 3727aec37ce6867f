//! The netting half of `fulgur bench settlement`: how long one settlement epoch's netting
//! takes (`Netter::on_trade` for every fill, then `close`), and within it the fills'
//! Merkle root alone.
//!
//! The fills are synthetic and deterministic (a seeded splitmix64): three markets with
//! BTC as base, as quote, and not at all (BTC/USDT, ETH/BTC, USDC/USDT), prices around
//! realistic levels, fees as the engine computes them from realistic schedules (a maker
//! rebate on BTC/USDT), makers drawn half the time from a few market-making accounts.
//! A warm-up epoch sizes the netter's vectors first, so the measured epochs show the steady
//! state: no allocation.

use std::fmt;
use std::time::{Duration, Instant};

use fulgur_engine::{AccountId, AssetId, Event, MarketId, Side};
use fulgur_settlement::merkle::{self, MerkleBuilder};
use fulgur_settlement::net::{EpochNets, MarketLegs, Netter};
use serde::Serialize;

use crate::alloc::allocations;

const BTC: AssetId = 0;
const USDT: AssetId = 1;
const ETH: AssetId = 2;
const USDC: AssetId = 3;
const FEE_ACCOUNT: AccountId = 0;
const SEED: u64 = 0x5EED_F00D_2024_0001;

/// Median, fastest and slowest of the measured runs, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Timing {
    fn of(mut samples: Vec<Duration>) -> Timing {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let n = samples.len();
        let median = if n % 2 == 1 {
            ms(samples[n / 2])
        } else {
            (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0
        };
        Timing {
            median_ms: median,
            min_ms: ms(samples[0]),
            max_ms: ms(samples[n - 1]),
        }
    }
}

/// What `netting` measured.
#[derive(Clone, Debug, Serialize)]
pub struct NettingReport {
    pub fills: usize,
    pub accounts: u32,
    pub markets: Vec<&'static str>,
    pub runs: usize,
    /// One epoch: `on_trade` for every fill, then `close`.
    pub netting: Timing,
    /// `close` alone, within the epoch: what is left to do when the epoch ends, the leaves
    /// and most of the tree having been hashed as the trades came.
    pub close: Timing,
    /// The Merkle root alone: every leaf hash through the streaming builder, then its root.
    pub merkle: Timing,
    /// Fills netted per second, at the median epoch.
    pub fills_per_sec: f64,
    /// Accounts with a nonzero BTC net in the epoch (fee account excluded).
    pub btc_nets: usize,
    /// The fee account's BTC net.
    pub fees_btc: i64,
    /// Allocations per measured epoch; counted only under the counting allocator (the
    /// binary, and this crate's tests, where other tests' threads add to it).
    pub allocations_per_epoch: f64,
    /// The epoch's fills root, hex: the same on every machine for the same arguments.
    pub fills_root: String,
}

impl fmt::Display for NettingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "settlement netting: {} fills over {} accounts in {} ({}), {} run(s)",
            self.fills,
            self.accounts,
            plural(self.markets.len(), "market"),
            self.markets.join(", "),
            self.runs
        )?;
        writeln!(
            f,
            "  {:<26}{:>10}{:>10}{:>10}",
            "one epoch (ms)", "median", "min", "max"
        )?;
        for (name, t) in [
            ("netting (on_trade + close)", self.netting),
            ("  of which close", self.close),
            ("Merkle root alone", self.merkle),
        ] {
            writeln!(
                f,
                "  {:<26}{:>10.2}{:>10.2}{:>10.2}",
                name, t.median_ms, t.min_ms, t.max_ms
            )?;
        }
        writeln!(
            f,
            "  {:<26}{:>10.2}   (difference of the medians)",
            "netting without the root",
            self.netting.median_ms - self.merkle.median_ms
        )?;
        writeln!(
            f,
            "  fills/s (median): {:.2} M; BTC nets: {}; fees: {} sats; allocations/epoch: {}",
            self.fills_per_sec / 1e6,
            self.btc_nets,
            self.fees_btc,
            self.allocations_per_epoch
        )?;
        write!(f, "  fills root: {}", self.fills_root)
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// splitmix64: tiny, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct SynthMarket {
    symbol: &'static str,
    legs: MarketLegs,
    /// Price in ticks, and how far trades stray from it.
    centre: u64,
    spread: u64,
    max_lots: u64,
    maker_bps: i32,
    taker_bps: i32,
    /// Share of the fills, in percent.
    weight: u64,
}

fn markets() -> [SynthMarket; 3] {
    [
        // Tick 0.01 USDT, lot 0.0001 BTC, around 65,000 USDT; maker rebate 1 bp.
        SynthMarket {
            symbol: "BTCUSDT",
            legs: MarketLegs {
                base: BTC,
                quote: USDT,
                lot_size: 10_000,
                quote_per_tick_lot: 1,
            },
            centre: 6_500_000,
            spread: 500,
            max_lots: 2_000,
            maker_bps: -1,
            taker_bps: 5,
            weight: 60,
        },
        // Tick 0.00001 BTC, lot 0.001 ETH, around 0.05 BTC.
        SynthMarket {
            symbol: "ETHBTC",
            legs: MarketLegs {
                base: ETH,
                quote: BTC,
                lot_size: 100_000,
                quote_per_tick_lot: 1,
            },
            centre: 5_000,
            spread: 20,
            max_lots: 5_000,
            maker_bps: 2,
            taker_bps: 7,
            weight: 25,
        },
        // Tick 0.0001 USDT, lot 1 USDC, around 1.0000.
        SynthMarket {
            symbol: "USDCUSDT",
            legs: MarketLegs {
                base: USDC,
                quote: USDT,
                lot_size: 1_000_000,
                quote_per_tick_lot: 100,
            },
            centre: 10_000,
            spread: 3,
            max_lots: 50_000,
            maker_bps: 0,
            taker_bps: 1,
            weight: 15,
        },
    ]
}

/// `fills` trades over accounts `1..=accounts`, with the sequence number of each.
fn synthetic_fills(markets: &[SynthMarket], fills: usize, accounts: u32) -> Vec<(u64, Event)> {
    let mut rng = Rng(SEED);
    let accounts = accounts.max(2) as u64;
    // About 1% of the accounts make half the markets.
    let makers = (accounts / 100).max(1);
    let mut seq = 1_000;
    (0..fills)
        .map(|i| {
            let pick = rng.below(100);
            let mut acc = 0;
            let m = markets
                .iter()
                .position(|m| {
                    acc += m.weight;
                    pick < acc
                })
                .unwrap_or(0);
            let mk = &markets[m];
            let price = mk.centre - mk.spread + rng.below(2 * mk.spread + 1);
            let qty = 1 + rng.below(mk.max_lots);
            let maker = 1 + if rng.below(2) == 0 {
                rng.below(makers)
            } else {
                rng.below(accounts)
            };
            let taker = 1 + (maker + rng.below(accounts - 1)) % accounts;
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            // A taker often fills against several makers in one command.
            seq += rng.below(2);
            let (maker_fee, taker_fee) = fees(mk, price, qty, side);
            let trade = Event::Trade {
                trade_id: i as u64 + 1,
                market: m as MarketId,
                price,
                qty,
                maker_order: 2 * i as u64 + 1,
                maker_account: maker as AccountId,
                taker_order: 2 * i as u64 + 2,
                taker_account: taker as AccountId,
                taker_side: side,
                maker_fee,
                taker_fee,
                maker_remaining: 0,
            };
            (seq, trade)
        })
        .collect()
}

/// The engine's fee rule: bps of what each side receives, rounded down; a rebate is bps of
/// what the taker receives.
fn fees(m: &SynthMarket, price: u64, qty: u64, side: Side) -> (i64, u64) {
    let base = qty as u128 * m.legs.lot_size as u128;
    let quote = price as u128 * qty as u128 * m.legs.quote_per_tick_lot as u128;
    let (taker_recv, maker_recv) = match side {
        Side::Buy => (base, quote),
        Side::Sell => (quote, base),
    };
    let taker_fee = (taker_recv * m.taker_bps as u128 / 10_000) as u64;
    let maker_fee = if m.maker_bps >= 0 {
        (maker_recv * m.maker_bps as u128 / 10_000) as i64
    } else {
        -((taker_recv * m.maker_bps.unsigned_abs() as u128 / 10_000) as i64)
    };
    (maker_fee, taker_fee)
}

/// Nets one epoch; returns when `close` started.
fn net_epoch(netter: &mut Netter, fills: &[(u64, Event)], out: &mut EpochNets) -> Instant {
    for (seq, trade) in fills {
        netter.on_trade(*seq, trade);
    }
    let closing = Instant::now();
    netter.close_into(out).expect("synthetic fills net to zero");
    closing
}

fn merkle_epoch(builder: &mut MerkleBuilder, fills: &[(u64, Event)]) -> [u8; 32] {
    for (seq, trade) in fills {
        builder.push_leaf(merkle::leaf(*seq, trade).expect("a trade"));
    }
    let root = builder.root();
    builder.reset();
    root
}

/// Nets `runs` epochs of the same `fills` synthetic fills over `accounts` accounts, after
/// one warm-up epoch, and times the Merkle root alone the same way.
pub fn netting(fills: usize, accounts: u32, runs: usize) -> NettingReport {
    let runs = runs.max(1);
    let markets = markets();
    let trades = synthetic_fills(&markets, fills, accounts);
    let mut netter = Netter::new(BTC, FEE_ACCOUNT);
    for (i, m) in markets.iter().enumerate() {
        netter.set_market(i as MarketId, m.legs);
    }
    let mut out = EpochNets::default();
    net_epoch(&mut netter, &trades, &mut out);
    let mut times = Vec::with_capacity(runs);
    let mut close_times = Vec::with_capacity(runs);
    let a0 = allocations();
    for _ in 0..runs {
        let t0 = Instant::now();
        let closing = net_epoch(&mut netter, std::hint::black_box(&trades), &mut out);
        let t1 = Instant::now();
        times.push(t1 - t0);
        close_times.push(t1 - closing);
    }
    let allocs = allocations() - a0;

    let mut builder = MerkleBuilder::new();
    let root = merkle_epoch(&mut builder, &trades);
    assert_eq!(root, out.fills_root, "the netter's root is the Merkle root");
    let mut merkle_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        std::hint::black_box(merkle_epoch(&mut builder, std::hint::black_box(&trades)));
        merkle_times.push(t0.elapsed());
    }

    let netting = Timing::of(times);
    NettingReport {
        fills,
        accounts,
        markets: markets.iter().map(|m| m.symbol).collect(),
        runs,
        netting,
        close: Timing::of(close_times),
        merkle: Timing::of(merkle_times),
        fills_per_sec: fills as f64 / (netting.median_ms / 1e3),
        btc_nets: out.btc.len(),
        fees_btc: out.fees_btc,
        allocations_per_epoch: allocs as f64 / runs as f64,
        fills_root: hex::encode(out.fills_root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_bench_runs() {
        let r = netting(1_000, 100, 1);
        assert_eq!((r.fills, r.accounts, r.runs), (1_000, 100, 1));
        assert!(r.btc_nets > 0 && r.btc_nets <= 100, "{}", r.btc_nets);
        assert!(r.fees_btc > 0);
        assert!(r.netting.median_ms > r.close.median_ms && r.merkle.median_ms > 0.0);
        // Deterministic: same fills, same root.
        assert_eq!(r.fills_root, netting(1_000, 100, 1).fills_root);
        let text = r.to_string();
        assert!(
            text.contains("1000 fills over 100 accounts in 3 markets"),
            "{text}"
        );
        serde_json::to_string(&r).unwrap();
    }

    /// The figures: `cargo test --release --lib settlebench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn netting_100k_fills_10k_accounts() {
        println!("{}", netting(100_000, 10_000, 7));
    }
}
