//! The demo market: assets, markets and accounts of the embedded defaults, and a
//! market-making loop that keeps every book alive.

use std::str::FromStr;

use fulgur_engine::spec::decimal_to_steps;
use fulgur_engine::*;
use rust_decimal::Decimal;

/// The permission an account needs to trade the tokenized T-bill (the stand-in for a
/// KYC / accredited-investor check).
pub const RWA_PERMISSION: PermissionId = 0;
/// Demo accounts: a market maker and a taker.
pub const MAKER: AccountId = 1;
pub const TAKER: AccountId = 2;
/// The account of the trading page (`GET /fulgur/v1/demo/key`), apart from the flow's two
/// so that the maker's mass cancels never touch the page's orders.
pub const WEB: AccountId = 3;
/// What the web account starts with, in whole units: a retail-sized wallet.
const WEB_FUNDS: [(&str, u64); 5] = [
    ("BTC", 2),
    ("ETH", 40),
    ("USDT", 200_000),
    ("USDC", 200_000),
    ("TBILL", 2_000),
];

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

/// `fulgur demo`'s setup: `setup_commands`, then the web account, with the RWA permission
/// and `WEB_FUNDS`.
pub fn demo_commands() -> Vec<Command> {
    let mut cmds = setup_commands();
    cmds.push(Command::GrantPermission {
        account: WEB,
        permission: RWA_PERMISSION,
    });
    for (symbol, units) in WEB_FUNDS {
        cmds.push(Command::Deposit {
            account: WEB,
            asset: asset_id(symbol),
            amount: units * 10u64.pow(decimals_of(symbol) as u32),
        });
    }
    cmds
}

/// The demo's built-in flow, through a running exchange: every round, on every market, the
/// maker cancels its quotes and quotes a five-level ladder around a drifting fair value,
/// and the taker sends a market order into it. Runs until the exchange stops taking
/// commands; prints a line a second.
pub fn run_flow(ex: std::sync::Arc<crate::server::Exchange>) {
    let mut rng = flow::Rng::new(42);
    // Prices in ticks of each market (the demo's own specs: see `setup_commands`).
    // Per market: start price, the smallest quote in lots, half the price band (ticks).
    let specs: Vec<(u64, u64, u64)> = MARKETS
        .iter()
        .map(|m| {
            let qd = decimals_of(m.quote);
            let bd = decimals_of(m.base);
            let tick = decimal_to_steps(dec(m.tick), 1, qd).expect("demo tick");
            let lot = decimal_to_steps(dec(m.lot), 1, bd).expect("demo lot");
            let start = decimal_to_steps(dec(m.start), tick, qd).expect("demo start");
            let per = (tick as u128 * lot as u128 / 10u128.pow(bd as u32)) as u64;
            let min_notional = decimal_to_steps(dec(m.min_notional), 1, qd).expect("demo notional");
            // Lots that clear NOTIONAL even at half the fair value.
            let min_lots = min_notional.div_ceil((start / 2).max(1) * per).max(1);
            (
                start,
                min_lots,
                (start as u128 * m.band_bps as u128 / 20_000) as u64,
            )
        })
        .collect();
    let mut fair: Vec<u64> = specs.iter().map(|s| s.0).collect();
    let started = std::time::Instant::now();
    let mut next_report = std::time::Duration::from_secs(1);
    let mut trades = 0u64;
    // The book as a market-data reader sees it: built from `BookLevel` events only.
    let mut view = BookView::default();
    let reader = ex.pipeline.subscribe();
    'rounds: loop {
        for (i, f) in fair.iter_mut().enumerate() {
            let market = i as MarketId;
            let (start, min_lots, half_band) = specs[i];
            // Fair value drifts by at most 2 ticks a round and stays in half its band.
            *f = (*f + rng.below(5))
                .saturating_sub(2)
                .clamp(start - half_band, start + half_band);
            let mut cmds = vec![Command::CancelAll {
                account: MAKER,
                market: Some(market),
            }];
            for level in 1..=5u64 {
                cmds.push(limit(
                    MAKER,
                    market,
                    Side::Buy,
                    *f - level,
                    min_lots * (1 + rng.below(20)),
                ));
                cmds.push(limit(
                    MAKER,
                    market,
                    Side::Sell,
                    *f + level,
                    min_lots * (1 + rng.below(20)),
                ));
            }
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            cmds.push(Command::PlaceOrder(PlaceOrder {
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
            let mut last = None;
            for c in cmds {
                match ex.submit(c) {
                    Ok(rx) => last = Some(rx),
                    Err(crate::server::SubmitError::Busy) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    Err(crate::server::SubmitError::Stopped) => break 'rounds,
                }
            }
            // Wait for the taker's reply: the flow never runs ahead of durability.
            if let Some(reply) = last.and_then(|rx| rx.blocking_recv().ok()) {
                trades += reply
                    .events
                    .iter()
                    .filter(|e| matches!(e, Event::Trade { .. }))
                    .count() as u64;
            }
        }
        if let Some(r) = &reader {
            while let Ok(Some(b)) = r.try_next() {
                view.apply(&b.events);
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= next_report {
            next_report += std::time::Duration::from_secs(1);
            let seq = ex
                .stats()
                .last_seq
                .load(std::sync::atomic::Ordering::Relaxed);
            println!("seq {seq:>7} taker trades {trades:>5} |{}", view.tops());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Price levels per (market, side), kept from `BookLevel` events: what a market-data
/// client holds.
#[derive(Default)]
struct BookView {
    levels: std::collections::BTreeMap<(MarketId, bool), std::collections::BTreeMap<u64, u64>>,
}

impl BookView {
    fn apply(&mut self, events: &[Event]) {
        for e in events {
            if let Event::BookLevel {
                market,
                side,
                price,
                total_qty,
                ..
            } = *e
            {
                let book = self.levels.entry((market, side == Side::Buy)).or_default();
                if total_qty == 0 {
                    book.remove(&price);
                } else {
                    book.insert(price, total_qty);
                }
            }
        }
    }

    /// "SYMBOL bid / ask" for every demo market, in decimals.
    fn tops(&self) -> String {
        let mut line = String::new();
        for (i, m) in MARKETS.iter().enumerate() {
            let market = i as MarketId;
            let qd = decimals_of(m.quote);
            let tick = decimal_to_steps(dec(m.tick), 1, qd).expect("demo tick");
            let px = |p: Option<&u64>| {
                p.map_or("-".to_string(), |p| {
                    fulgur_engine::spec::steps_to_decimal(*p, tick, qd)
                        .normalize()
                        .to_string()
                })
            };
            let bid = self
                .levels
                .get(&(market, true))
                .and_then(|b| b.keys().next_back());
            let ask = self
                .levels
                .get(&(market, false))
                .and_then(|b| b.keys().next());
            line += &format!(" {} {} / {} |", m.symbol, px(bid), px(ask));
        }
        line
    }
}

/// Writes `<data dir>/demo-credentials.json`: the demo accounts (maker, taker, web) and
/// their API keys (random, 64 characters each, as Binance's), real keys of the data
/// directory's key store, so any Binance client can trade as them at once. Keys already in
/// the file are kept; an account missing from it (a file of an older demo) gets one.
/// Returns the file and the web account's key.
pub fn write_credentials(
    data_dir: &std::path::Path,
) -> Result<(std::path::PathBuf, crate::web::DemoKey), String> {
    let path = data_dir.join("demo-credentials.json");
    let mut have: Vec<crate::web::DemoKey> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Vec<serde_json::Value>>(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .iter()
            .filter_map(|v| {
                Some(crate::web::DemoKey {
                    account: v["account"].as_u64()? as u32,
                    api_key: v["apiKey"].as_str()?.into(),
                    secret_key: v["secretKey"].as_str()?.into(),
                })
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let keys = data_dir.join("api-keys.json");
    let mut changed = false;
    for account in [MAKER, TAKER, WEB] {
        if !have.iter().any(|k| k.account == account) {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("{}: {e}", data_dir.display()))?;
            let k = fulgur_ws_api::auth::create_key(&keys, account, None)?;
            have.push(crate::web::DemoKey {
                account,
                api_key: k.api_key,
                secret_key: k.secret_key.ok_or("an HMAC key has a secret")?,
            });
            changed = true;
        }
    }
    if changed {
        let text = serde_json::to_string_pretty(&have).map_err(|e| e.to_string())? + "\n";
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let web = have
        .into_iter()
        .find(|k| k.account == WEB)
        .expect("made above");
    Ok((path, web))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_setup_is_accepted_and_trades() {
        let mut ex = Exchange::new(EngineConfig::default());
        let mut trades = 0;
        let cmds = setup_commands().into_iter().chain([
            limit(MAKER, 0, Side::Sell, 9_700_000, 1_000),
            limit(TAKER, 0, Side::Buy, 9_700_000, 600),
        ]);
        for (i, command) in cmds.enumerate() {
            let mut out = Vec::new();
            let seq = i as u64 + 1;
            ex.apply(
                &Sequenced {
                    seq,
                    ts_ns: 0,
                    command,
                },
                &mut out,
            );
            for e in &out {
                match e {
                    Event::Trade { .. } => trades += 1,
                    Event::OrderRejected { reason, .. } | Event::CommandRejected { reason } => {
                        panic!("demo command {seq} rejected: {reason:?}")
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(ex.market_count(), 4);
        let t = ex.market_spec(3).unwrap();
        assert_eq!(t.required_permission, Some(RWA_PERMISSION));
        assert_eq!(trades, 1);
        ex.check_invariants().unwrap();
    }
}
