//! Netting against two references: a plain re-statement of the engine's balance moves over
//! random trades (a `BTreeMap` per account and asset), and a real `Exchange`, whose balance
//! changes over an epoch of crossing orders must equal the nets.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use fulgur_engine::*;
use fulgur_settlement::merkle;
use fulgur_settlement::net::{EpochNets, MarketLegs, NetError, Netter};
use proptest::prelude::*;

const BTC: AssetId = 0;
const USDT: AssetId = 1;
const ETH: AssetId = 2;
const USDC: AssetId = 3;

// ---------------------------------------------------------------------------------------
// Random trades against a plain reference
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Mkt {
    legs: MarketLegs,
    maker_bps: i32,
    taker_bps: i32,
}

#[derive(Clone, Copy, Debug)]
struct RawTrade {
    market: usize,
    price: u64,
    qty: u64,
    maker: AccountId,
    taker: AccountId,
    side: Side,
    /// Added to the sequence number before this trade (several trades share a command).
    seq_step: u64,
}

fn market() -> impl Strategy<Value = Mkt> {
    let pairs = prop_oneof![
        Just((BTC, USDT)),
        Just((ETH, BTC)),
        Just((BTC, USDC)),
        Just((ETH, USDT)),
        Just((USDC, USDT)),
    ];
    (pairs, 1..=100_000u64, 1..=1_000u64, 0..=1_000i32).prop_flat_map(
        |((base, quote), lot, per, taker)| {
            (-taker..=1_000).prop_map(move |maker| Mkt {
                legs: MarketLegs {
                    base,
                    quote,
                    lot_size: lot,
                    quote_per_tick_lot: per,
                },
                maker_bps: maker,
                taker_bps: taker,
            })
        },
    )
}

fn raw_trade(markets: usize, accounts: u32) -> impl Strategy<Value = RawTrade> {
    (
        0..markets,
        1..=10_000_000u64,
        1..=100_000u64,
        0..accounts,
        0..accounts,
        any::<bool>(),
        0..=2u64,
    )
        .prop_map(
            |(market, price, qty, maker, taker, buy, seq_step)| RawTrade {
                market,
                price,
                qty,
                maker,
                taker,
                side: if buy { Side::Buy } else { Side::Sell },
                seq_step,
            },
        )
}

/// Fees of a fill exactly as the engine computes them: (taker_fee, maker_fee as in the
/// event: negative for a rebate).
fn fees(m: &Mkt, t: &RawTrade) -> (u64, i64) {
    let base = t.qty as u128 * m.legs.lot_size as u128;
    let quote = t.price as u128 * t.qty as u128 * m.legs.quote_per_tick_lot as u128;
    let (taker_recv, maker_recv) = match t.side {
        Side::Buy => (base, quote),
        Side::Sell => (quote, base),
    };
    let taker_fee = (taker_recv * m.taker_bps as u128 / 10_000) as u64;
    let maker_fee = if m.maker_bps >= 0 {
        (maker_recv * m.maker_bps as u128 / 10_000) as i64
    } else {
        -((taker_recv * m.maker_bps.unsigned_abs() as u128 / 10_000) as i64)
    };
    (taker_fee, maker_fee)
}

fn event(id: u64, markets: &[Mkt], t: &RawTrade) -> Event {
    let (taker_fee, maker_fee) = fees(&markets[t.market], t);
    Event::Trade {
        trade_id: id,
        market: t.market as MarketId,
        price: t.price,
        qty: t.qty,
        maker_order: 1,
        maker_account: t.maker,
        taker_order: 2,
        taker_account: t.taker,
        taker_side: t.side,
        maker_fee,
        taker_fee,
        maker_remaining: 0,
    }
}

/// The engine's moves (exchange.rs `execute`), free and locked taken together.
fn reference(
    trades: &[(u64, Event)],
    markets: &[Mkt],
    fee_account: AccountId,
) -> BTreeMap<(AccountId, AssetId), i128> {
    let mut bal: BTreeMap<(AccountId, AssetId), i128> = BTreeMap::new();
    let mut mv = |account: AccountId, asset: AssetId, amount: i128| {
        *bal.entry((account, asset)).or_default() += amount;
    };
    for (_, e) in trades {
        let Event::Trade {
            market,
            price,
            qty,
            maker_account: maker,
            taker_account: taker,
            taker_side,
            maker_fee,
            taker_fee,
            ..
        } = *e
        else {
            unreachable!()
        };
        let l = markets[market as usize].legs;
        let base = (qty * l.lot_size) as i128;
        let quote = (price as i128) * (qty as i128) * (l.quote_per_tick_lot as i128);
        let taker_fee = taker_fee as i128;
        let (maker_fee, rebate) = if maker_fee >= 0 {
            (maker_fee as i128, 0)
        } else {
            (0, -(maker_fee as i128))
        };
        match taker_side {
            Side::Buy => {
                mv(maker, l.base, -base);
                mv(maker, l.quote, quote - maker_fee);
                mv(maker, l.base, rebate);
                mv(taker, l.quote, -quote);
                mv(taker, l.base, base - taker_fee);
                mv(fee_account, l.base, taker_fee - rebate);
                mv(fee_account, l.quote, maker_fee);
            }
            Side::Sell => {
                mv(maker, l.quote, -quote);
                mv(maker, l.base, base - maker_fee);
                mv(maker, l.quote, rebate);
                mv(taker, l.base, -base);
                mv(taker, l.quote, quote - taker_fee);
                mv(fee_account, l.quote, taker_fee - rebate);
                mv(fee_account, l.base, maker_fee);
            }
        }
    }
    bal
}

/// What `close` must return for these trades.
fn expected(
    trades: &[(u64, Event)],
    markets: &[Mkt],
    fee_account: AccountId,
    btc: AssetId,
) -> EpochNets {
    let bal = reference(trades, markets, fee_account);
    let mut sums: BTreeMap<AssetId, i128> = BTreeMap::new();
    for (&(_, asset), &d) in &bal {
        *sums.entry(asset).or_default() += d;
    }
    assert!(
        sums.values().all(|&s| s == 0),
        "the reference moves: {sums:?}"
    );
    let leaves: Vec<_> = trades
        .iter()
        .map(|(seq, e)| merkle::leaf(*seq, e).unwrap())
        .collect();
    EpochNets {
        fills: trades.len() as u64,
        first_seq: trades.first().map_or(0, |t| t.0),
        last_seq: trades.last().map_or(0, |t| t.0),
        btc: bal
            .iter()
            .filter(|(&(a, asset), &d)| a != fee_account && asset == btc && d != 0)
            .map(|(&(a, _), &d)| (a, d as i64))
            .collect(),
        fees_btc: bal.get(&(fee_account, btc)).map_or(0, |&d| d as i64),
        fees: bal
            .iter()
            .filter(|(&(a, _), &d)| a == fee_account && d != 0)
            .map(|(&(_, asset), &d)| (asset, d as i64))
            .collect(),
        fills_root: merkle::root(&leaves),
    }
}

fn scenario() -> impl Strategy<Value = (Vec<Mkt>, Vec<RawTrade>, AccountId, AssetId, usize)> {
    (prop::collection::vec(market(), 1..5), 2..30u32).prop_flat_map(|(markets, accounts)| {
        let n = markets.len();
        (
            Just(markets),
            prop::collection::vec(raw_trade(n, accounts), 0..300),
            0..accounts,
            // BTC as which asset: the netter must not assume asset 0.
            prop_oneof![Just(BTC), Just(ETH)],
            0..300usize,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random markets (BTC as base, quote or neither), fees (rebates included), accounts
    /// (the fee account and self-trades included), in two epochs on one netter: each epoch
    /// equals the reference, and a reused netter equals a fresh one.
    #[test]
    fn netting_matches_the_reference((markets, raw, fee_account, btc, split) in scenario()) {
        let mut seq = 1;
        let trades: Vec<(u64, Event)> = raw
            .iter()
            .enumerate()
            .map(|(i, t)| {
                seq += t.seq_step;
                (seq, event(i as u64 + 1, &markets, t))
            })
            .collect();
        let split = split.min(trades.len());
        let mut netter = Netter::new(btc, fee_account);
        for (i, m) in markets.iter().enumerate() {
            netter.set_market(i as MarketId, m.legs);
        }
        for epoch in [&trades[..split], &trades[split..]] {
            for (seq, e) in epoch {
                netter.on_trade(*seq, e);
                // Other events in the stream change nothing.
                netter.on_trade(*seq, &Event::AssetAdded { asset: 7 });
            }
            let got = netter.close().unwrap();
            prop_assert_eq!(&got, &expected(epoch, &markets, fee_account, btc));
        }
        // Closing an empty epoch: nothing, and the empty root.
        prop_assert_eq!(netter.close().unwrap(), EpochNets::default());
    }
}

#[test]
fn a_trade_in_an_unknown_market_fails_the_epoch() {
    let mut netter = Netter::new(BTC, 0);
    netter.set_market(
        0,
        MarketLegs {
            base: BTC,
            quote: USDT,
            lot_size: 1,
            quote_per_tick_lot: 1,
        },
    );
    let m = Mkt {
        legs: MarketLegs {
            base: BTC,
            quote: USDT,
            lot_size: 1,
            quote_per_tick_lot: 1,
        },
        maker_bps: 0,
        taker_bps: 0,
    };
    let t = RawTrade {
        market: 0,
        price: 5,
        qty: 1,
        maker: 1,
        taker: 2,
        side: Side::Buy,
        seq_step: 0,
    };
    netter.on_trade(1, &event(1, &[m], &t));
    let mut e = event(2, &[m], &t);
    if let Event::Trade { market, .. } = &mut e {
        *market = 3;
    }
    netter.on_trade(2, &e);
    assert_eq!(
        netter.close(),
        Err(NetError::UnknownMarket { seq: 2, market: 3 })
    );
}

// ---------------------------------------------------------------------------------------
// A real exchange
// ---------------------------------------------------------------------------------------

const M_BTCUSDT: MarketId = 0;
const M_ETHBTC: MarketId = 1;
const M_ETHUSDT: MarketId = 2;
const ACCOUNTS: AccountId = 8;

struct Engine {
    ex: Exchange,
    seq: u64,
    netter: Netter,
    trades: u64,
    rebates: u64,
}

impl Engine {
    fn new(fee_account: AccountId) -> Self {
        let ex = Exchange::new(EngineConfig {
            max_accounts: ACCOUNTS,
            max_assets: 4,
            max_markets: 4,
            max_orders: 1024,
            max_orders_per_market: 1024,
            max_levels_per_side: 256,
            max_gtd_orders: 16,
            max_pending_withdrawals: 16,
            max_pending_deposits: 16,
            fee_account,
        });
        let mut e = Engine {
            ex,
            seq: 0,
            netter: Netter::new(BTC, fee_account),
            trades: 0,
            rebates: 0,
        };
        for (symbol, decimals) in [("BTC", 8), ("USDT", 6), ("ETH", 8)] {
            e.run(Command::AddAsset(Box::new(AssetSpec {
                symbol: symbol.into(),
                decimals,
                class: AssetClass::Crypto,
            })));
        }
        // BTCUSDT: tick 0.01 USDT, lot 0.0001 BTC; maker rebate 2 bps, taker 7 bps.
        e.add_market("BTCUSDT", BTC, USDT, 10_000, 10_000, -2, 7);
        // ETHBTC: tick 0.00001 BTC, lot 0.001 ETH; maker 3 bps, taker 10 bps.
        e.add_market("ETHBTC", ETH, BTC, 1_000, 100_000, 3, 10);
        // ETHUSDT, no BTC leg: tick 0.01 USDT, lot 0.001 ETH; maker 0, taker 4 bps.
        e.add_market("ETHUSDT", ETH, USDT, 10_000, 100_000, 0, 4);
        for account in 0..ACCOUNTS {
            e.run(Command::Deposit {
                account,
                asset: BTC,
                amount: 1_000_000_000,
            });
            e.run(Command::Deposit {
                account,
                asset: USDT,
                amount: 10_000_000_000_000,
            });
            e.run(Command::Deposit {
                account,
                asset: ETH,
                amount: 100_000_000_000,
            });
        }
        e
    }

    #[allow(clippy::too_many_arguments)]
    fn add_market(
        &mut self,
        symbol: &str,
        base: AssetId,
        quote: AssetId,
        tick_size: u64,
        lot_size: u64,
        maker_fee_bps: i32,
        taker_fee_bps: i32,
    ) {
        let ev = self.run(Command::AddMarket(Box::new(MarketSpec {
            symbol: symbol.into(),
            base,
            quote,
            tick_size,
            lot_size,
            min_price_ticks: 1,
            max_price_ticks: 1_000_000_000,
            min_qty_lots: 1,
            max_qty_lots: 1_000_000,
            min_notional: 0,
            max_notional: u64::MAX,
            price_band_bps: 0,
            max_open_orders: 1000,
            status: MarketStatus::Trading,
            fees: FeeSchedule {
                maker_fee_bps,
                taker_fee_bps,
            },
            required_permission: None,
        })));
        let [Event::MarketAdded { market }] = ev[..] else {
            panic!("market not added: {ev:?}")
        };
        self.netter
            .set_market(market, MarketLegs::of(&self.ex, market).unwrap());
    }

    /// Applies a command and nets its events.
    fn run(&mut self, command: Command) -> Vec<Event> {
        self.seq += 1;
        let mut out = Vec::new();
        self.ex.apply(
            &Sequenced {
                seq: self.seq,
                ts_ns: 1_000,
                command,
            },
            &mut out,
        );
        for e in &out {
            if let Event::Trade { maker_fee, .. } = e {
                self.trades += 1;
                self.rebates += (*maker_fee < 0) as u64;
            }
            self.netter.on_trade(self.seq, e);
        }
        out
    }

    fn totals(&self) -> BTreeMap<(AccountId, AssetId), i128> {
        let mut t = BTreeMap::new();
        for account in 0..ACCOUNTS {
            for asset in [BTC, USDT, ETH] {
                let (free, locked) = self.ex.balance(account, asset);
                t.insert((account, asset), free as i128 + locked as i128);
            }
        }
        t
    }
}

#[derive(Clone, Copy, Debug)]
struct Order {
    market: MarketId,
    account: AccountId,
    side: Side,
    /// 0-5: limit GTC; 6: market by base quantity; 7: market by quote amount (the lots).
    kind: u8,
    /// Ticks from the market's centre price.
    offset: i64,
    lots: u64,
}

fn place(e: &mut Engine, o: &Order) {
    let centre: u64 = match o.market {
        M_BTCUSDT => 6_500_000, // 65,000.00 USDT
        M_ETHBTC => 5_000,      // 0.05 BTC
        _ => 325_000,           // 3,250.00 USDT
    };
    let (order_type, tif, quantity, price) = match o.kind {
        0..=5 => (
            OrderType::Limit,
            TimeInForce::Gtc,
            Quantity::Base(o.lots),
            Some(centre.checked_add_signed(o.offset).unwrap()),
        ),
        6 => (
            OrderType::Market,
            TimeInForce::Ioc,
            Quantity::Base(o.lots),
            None,
        ),
        _ => (
            OrderType::Market,
            TimeInForce::Ioc,
            Quantity::Quote(o.lots * 1_000_000),
            None,
        ),
    };
    e.run(Command::PlaceOrder(PlaceOrder {
        account: o.account,
        market: o.market,
        side: o.side,
        order_type,
        tif,
        quantity,
        price,
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    }));
}

/// Runs `orders` as one epoch and checks the nets against the balance changes.
fn check_against_exchange(fee_account: AccountId, orders: &[Order]) -> Engine {
    let mut e = Engine::new(fee_account);
    // Deposits and setup are not trades: start the epoch clean.
    assert_eq!(e.netter.close().unwrap().fills, 0);
    e.trades = 0;
    let before = e.totals();
    for o in orders {
        place(&mut e, o);
    }
    let after = e.totals();
    let nets = e.netter.close().unwrap();
    assert_eq!(nets.fills, e.trades);
    let change =
        |account: AccountId, asset: AssetId| after[&(account, asset)] - before[&(account, asset)];
    for account in 0..ACCOUNTS {
        let got = if account == fee_account {
            nets.fees_btc
        } else {
            nets.btc
                .iter()
                .find(|(a, _)| *a == account)
                .map_or(0, |&(_, d)| d)
        };
        assert_eq!(got as i128, change(account, BTC), "account {account}");
    }
    assert!(nets.btc.iter().all(|&(a, d)| a != fee_account && d != 0));
    let fee_changes: Vec<(AssetId, i64)> = [BTC, USDT, ETH]
        .into_iter()
        .map(|asset| (asset, change(fee_account, asset) as i64))
        .filter(|&(_, d)| d != 0)
        .collect();
    assert_eq!(nets.fees, fee_changes);
    e
}

fn limit(market: MarketId, account: AccountId, side: Side, offset: i64, lots: u64) -> Order {
    Order {
        market,
        account,
        side,
        kind: 0,
        offset,
        lots,
    }
}

#[test]
fn nets_equal_a_real_exchange_s_balance_changes() {
    use Side::{Buy, Sell};
    let orders = [
        // BTCUSDT: a book on both sides, then takers through it (partial fills, a
        // self-trade by account 2, a market buy by quote amount).
        limit(M_BTCUSDT, 1, Sell, 0, 30),
        limit(M_BTCUSDT, 2, Sell, 5, 40),
        limit(M_BTCUSDT, 3, Buy, -5, 25),
        limit(M_BTCUSDT, 4, Buy, -10, 50),
        limit(M_BTCUSDT, 2, Buy, 5, 55), // takes 1's 30 and 25 of its own
        limit(M_BTCUSDT, 5, Sell, -10, 60), // takes 3's 25 and 35 of 4's
        Order {
            market: M_BTCUSDT,
            account: 6,
            side: Buy,
            kind: 7,
            offset: 0,
            lots: 300_000, // 300,000 USDT of market buy
        },
        Order {
            market: M_BTCUSDT,
            account: 1,
            side: Sell,
            kind: 6,
            offset: 0,
            lots: 20,
        },
        // ETHBTC, BTC as the quote; the fee account trades too.
        limit(M_ETHBTC, 3, Sell, 2, 1000),
        limit(M_ETHBTC, 0, Buy, 3, 400),
        limit(M_ETHBTC, 4, Buy, 0, 700),
        limit(M_ETHBTC, 6, Sell, -1, 900),
        // ETHUSDT: no BTC moves.
        limit(M_ETHUSDT, 5, Sell, 0, 100),
        limit(M_ETHUSDT, 1, Buy, 0, 100),
    ];
    let e = check_against_exchange(0, &orders);
    // BTCUSDT 6 (2 by 2's buy, 2 by 5's sell, 1 each by the market orders), ETHBTC 2,
    // ETHUSDT 1.
    assert_eq!(e.trades, 9);
    assert!(e.rebates > 0);
}

fn order() -> impl Strategy<Value = Order> {
    (
        0..3u32,
        0..ACCOUNTS,
        any::<bool>(),
        0..8u8,
        -20..=20i64,
        1..500u64,
    )
        .prop_map(|(market, account, buy, kind, offset, lots)| Order {
            market,
            account,
            side: if buy { Side::Buy } else { Side::Sell },
            kind,
            offset,
            lots,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random orders of random accounts (the fee account among them) on a real exchange.
    #[test]
    fn nets_equal_real_balance_changes_for_random_orders(
        fee_account in 0..ACCOUNTS,
        orders in prop::collection::vec(order(), 1..120),
    ) {
        check_against_exchange(fee_account, &orders);
    }
}
