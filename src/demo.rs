//! The demo market: assets, markets and accounts of the embedded defaults, and a
//! market-making loop that keeps every book alive.

use std::str::FromStr;
use std::time::{Duration, Instant};

use fulgur_engine::spec::{decimal_to_steps, steps_to_decimal};
use fulgur_engine::*;
use rust_decimal::Decimal;

/// The permission an account needs to trade the tokenized T-bill (the stand-in for a
/// KYC / accredited-investor check).
pub const RWA_PERMISSION: PermissionId = 0;
/// Demo accounts: a market maker and a taker.
pub const MAKER: AccountId = 1;
pub const TAKER: AccountId = 2;

struct DemoMarket {
    symbol: &'static str,
    base: &'static str,
    quote: &'static str,
    tick: &'static str,
    lot: &'static str,
    min_notional: &'static str,
    /// Fair value the demo flow starts from.
    start: &'static str,
    band_bps: u32,
    fees: (i32, i32),
    rwa: bool,
}

const ASSETS: [(&str, u8, AssetClass); 5] = [
    ("BTC", 8, AssetClass::Crypto),
    ("ETH", 8, AssetClass::Crypto),
    ("USDT", 8, AssetClass::Stablecoin),
    ("USDC", 8, AssetClass::Stablecoin),
    ("TBILL", 6, AssetClass::Rwa),
];

const MARKETS: [DemoMarket; 4] = [
    DemoMarket {
        symbol: "BTCUSDT",
        base: "BTC",
        quote: "USDT",
        tick: "0.01",
        lot: "0.00001",
        min_notional: "5",
        start: "97000",
        band_bps: 500,
        fees: (-1, 5),
        rwa: false,
    },
    DemoMarket {
        symbol: "ETHUSDT",
        base: "ETH",
        quote: "USDT",
        tick: "0.01",
        lot: "0.0001",
        min_notional: "5",
        start: "3400",
        band_bps: 500,
        fees: (2, 4),
        rwa: false,
    },
    DemoMarket {
        symbol: "USDCUSDT",
        base: "USDC",
        quote: "USDT",
        tick: "0.0001",
        lot: "1",
        min_notional: "1",
        start: "1.0001",
        band_bps: 100,
        fees: (0, 1),
        rwa: false,
    },
    DemoMarket {
        symbol: "TBILLUSDC",
        base: "TBILL",
        quote: "USDC",
        tick: "0.001",
        lot: "1",
        min_notional: "10",
        start: "99.5",
        band_bps: 200,
        fees: (0, 5),
        rwa: true,
    },
];

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("demo constants are decimals")
}

fn decimals_of(symbol: &str) -> u8 {
    ASSETS.iter().find(|a| a.0 == symbol).expect("demo asset").1
}

fn asset_id(symbol: &str) -> AssetId {
    ASSETS
        .iter()
        .position(|a| a.0 == symbol)
        .expect("demo asset") as AssetId
}

/// Commands that create the demo's assets, markets, permissions and funded accounts.
pub fn setup_commands() -> Vec<Command> {
    let mut cmds = Vec::new();
    for (symbol, decimals, class) in ASSETS {
        cmds.push(Command::AddAsset(Box::new(AssetSpec {
            symbol: symbol.into(),
            decimals,
            class,
        })));
    }
    for (i, m) in MARKETS.iter().enumerate() {
        let (bd, qd) = (decimals_of(m.base), decimals_of(m.quote));
        let minor = |s: &str, d: u8| decimal_to_steps(dec(s), 1, d).expect("demo constant");
        let tick = minor(m.tick, qd);
        let lot = minor(m.lot, bd);
        cmds.push(Command::AddMarket(Box::new(MarketSpec {
            symbol: m.symbol.into(),
            base: asset_id(m.base),
            quote: asset_id(m.quote),
            tick_size: tick,
            lot_size: lot,
            min_price_ticks: 1,
            max_price_ticks: 1 << 40,
            min_qty_lots: 1,
            max_qty_lots: 1 << 40,
            min_notional: minor(m.min_notional, qd),
            max_notional: u64::MAX,
            price_band_bps: m.band_bps,
            max_open_orders: 200,
            status: MarketStatus::Trading,
            fees: FeeSchedule {
                maker_fee_bps: m.fees.0,
                taker_fee_bps: m.fees.1,
            },
            required_permission: m.rwa.then_some(RWA_PERMISSION),
        })));
        if m.rwa {
            // The fair value of a tokenized T-bill comes from outside: band around it.
            let start = decimal_to_steps(dec(m.start), tick, qd).expect("demo constant");
            cmds.push(Command::SetReferencePrice {
                market: i as MarketId,
                price: Some(start),
            });
        }
    }
    for account in [MAKER, TAKER] {
        cmds.push(Command::GrantPermission {
            account,
            permission: RWA_PERMISSION,
        });
        for (a, (_, decimals, _)) in ASSETS.iter().enumerate() {
            // A million whole units of everything (1e6 × 10^decimals minor units).
            cmds.push(Command::Deposit {
                account,
                asset: a as AssetId,
                amount: 1_000_000 * 10u64.pow(*decimals as u32),
            });
        }
    }
    cmds
}

/// Sequences commands and applies them, stamping the wall clock (the engine reads none).
pub struct Driver {
    pub exchange: Exchange,
    seq: u64,
    pub events: Vec<Event>,
    pub commands: u64,
    pub trades: u64,
}

impl Driver {
    pub fn new(config: EngineConfig) -> Self {
        Driver {
            exchange: Exchange::new(config),
            seq: 0,
            events: Vec::with_capacity(4096),
            commands: 0,
            trades: 0,
        }
    }

    pub fn apply(&mut self, command: Command) {
        self.seq += 1;
        let ts_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.events.clear();
        self.exchange.apply(
            &Sequenced {
                seq: self.seq,
                ts_ns,
                command,
            },
            &mut self.events,
        );
        self.commands += 1;
        for e in &self.events {
            match e {
                Event::Trade { .. } => self.trades += 1,
                Event::OrderRejected { reason, .. } | Event::CommandRejected { reason } => {
                    panic!("demo command rejected: {reason:?}")
                }
                _ => {}
            }
        }
    }
}

/// Runs the demo: quotes a ladder around a drifting fair value on every market, sends taker
/// flow into it, and prints each book's top once a second. `seconds = None` runs until
/// interrupted.
pub fn run(seconds: Option<u64>) {
    let mut d = Driver::new(EngineConfig::default());
    for c in setup_commands() {
        d.apply(c);
    }
    let mut rng = flow::Rng::new(42);
    let mut fair: Vec<u64> = MARKETS
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let spec = d.exchange.market_spec(i as MarketId).expect("demo market");
            decimal_to_steps(dec(m.start), spec.tick_size, decimals_of(m.quote)).expect("start")
        })
        .collect();
    let start = Instant::now();
    let mut next_report = Duration::from_secs(1);
    println!(
        "fulgur demo: {} markets, accounts {MAKER} (maker) and {TAKER} (taker); Ctrl-C stops",
        MARKETS.len()
    );
    loop {
        for (i, f) in fair.iter_mut().enumerate() {
            let market = i as MarketId;
            let spec = d.exchange.market_spec(market).expect("demo market").clone();
            // Fair value drifts by at most 2 ticks a round, and never out of its band.
            *f = (*f + rng.below(5))
                .saturating_sub(2)
                .max(spec.min_price_ticks + 100);
            if let Some(r) = d.exchange.reference_price(market) {
                let band = r * spec.price_band_bps as u64 / 20_000;
                *f = (*f).clamp(r - band, r + band);
            }
            // Lots that clear the NOTIONAL filter even at half the fair value (market orders
            // are checked at the last trade price).
            let per = d.exchange.quote_per_tick_lot(market).unwrap_or(1);
            let min_lots = spec.min_notional.div_ceil((*f / 2).max(1) * per).max(1);
            d.apply(Command::CancelAll {
                account: MAKER,
                market: Some(market),
            });
            for level in 1..=5u64 {
                for side in [Side::Buy, Side::Sell] {
                    let price = match side {
                        Side::Buy => *f - level,
                        Side::Sell => *f + level,
                    };
                    d.apply(limit(
                        MAKER,
                        market,
                        side,
                        price,
                        min_lots * (1 + rng.below(20)),
                    ));
                }
            }
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            d.apply(Command::PlaceOrder(PlaceOrder {
                account: TAKER,
                market,
                side,
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                quantity: Quantity::Base(min_lots * (1 + rng.below(10))),
                price: None,
                client_order_id: ClientOrderId::NONE,
                stp: StpMode::None,
            }));
        }
        d.apply(Command::Tick);
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            next_report += Duration::from_secs(1);
            print_tops(&d);
            if seconds.is_some_and(|s| elapsed.as_secs() >= s) {
                break;
            }
        }
        // A demo, not a benchmark: a few hundred rounds a second is a lively book.
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Err(e) = d.exchange.check_invariants() {
        panic!("invariant broken: {e}");
    }
    println!("state hash {:016x}", d.exchange.state_hash());
}

fn limit(account: AccountId, market: MarketId, side: Side, price: u64, qty: u64) -> Command {
    Command::PlaceOrder(PlaceOrder {
        account,
        market,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        quantity: Quantity::Base(qty),
        price: Some(price),
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    })
}

fn print_tops(d: &Driver) {
    let ex = &d.exchange;
    let mut line = format!("{:>8} cmds {:>7} trades |", d.commands, d.trades);
    for (i, m) in MARKETS.iter().enumerate() {
        let market = i as MarketId;
        let spec = ex.market_spec(market).expect("demo market");
        let qd = decimals_of(m.quote);
        let px = |p: Option<(u64, u64)>| {
            p.map_or("-".to_string(), |(p, _)| {
                steps_to_decimal(p, spec.tick_size, qd)
                    .normalize()
                    .to_string()
            })
        };
        line += &format!(
            " {} {} / {} |",
            m.symbol,
            px(ex.best(market, Side::Buy)),
            px(ex.best(market, Side::Sell))
        );
    }
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_setup_is_accepted_and_trades() {
        let mut d = Driver::new(EngineConfig::default());
        for c in setup_commands() {
            d.apply(c); // panics on any rejection
        }
        assert_eq!(d.exchange.market_count(), 4);
        let t = d.exchange.market_spec(3).unwrap();
        assert_eq!(t.required_permission, Some(RWA_PERMISSION));
        d.apply(limit(MAKER, 0, Side::Sell, 9_700_000, 1_000));
        d.apply(limit(TAKER, 0, Side::Buy, 9_700_000, 600));
        assert_eq!(d.trades, 1);
        d.exchange.check_invariants().unwrap();
    }
}
