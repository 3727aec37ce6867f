//! Hand-written scenarios, each with the exact event sequence `docs/engine.md` prescribes.
//! Every command runs through the reference engine (`tests/reference`) and the fast
//! `Exchange` alike, which must emit the same events and keep their invariants; the
//! expectations are checked against the reference's events, so they check both.

mod reference;

use fulgur_engine::spec::SpecError;
use fulgur_engine::{
    AccountId, AssetClass, AssetSpec, CancelReason, ClientOrderId, Command, EngineConfig, Event,
    FeeSchedule, MarketId, MarketSpec, MarketStatus, OrderRef, OrderType, PlaceOrder, Quantity,
    RejectReason, Sequenced, Side, StpMode, TimeInForce,
};
use reference::RefExchange;

const BASE: u32 = 0;
const QUOTE: u32 = 1;

/// Base "BASE" and quote "QUOTE", both with 2 decimals. Markets added by `market` trade BASE
/// against QUOTE with tick 0.01 QUOTE and lot 1 BASE: one tick times one lot is 1 quote minor
/// unit (`per = 1`), one lot is 100 base minor units.
struct Sim {
    ex: RefExchange,
    fast: fulgur_engine::Exchange,
    seq: u64,
    ts: u64,
}

fn spec(symbol: &str, fees: FeeSchedule) -> MarketSpec {
    MarketSpec {
        symbol: symbol.into(),
        base: BASE,
        quote: QUOTE,
        tick_size: 1,
        lot_size: 100,
        min_price_ticks: 1,
        max_price_ticks: 1_000_000,
        min_qty_lots: 1,
        max_qty_lots: 1_000_000,
        min_notional: 0,
        max_notional: u64::MAX,
        price_band_bps: 0,
        max_open_orders: 100,
        status: MarketStatus::Trading,
        fees,
        required_permission: None,
    }
}

const ZERO_FEES: FeeSchedule = FeeSchedule {
    maker_fee_bps: 0,
    taker_fee_bps: 0,
};

impl Sim {
    fn with_config(cfg: EngineConfig) -> Sim {
        let mut s = Sim {
            ex: RefExchange::new(cfg),
            fast: fulgur_engine::Exchange::new(cfg),
            seq: 0,
            ts: 1_000,
        };
        for (i, sym) in ["BASE", "QUOTE"].into_iter().enumerate() {
            let ev = s.run(Command::AddAsset(Box::new(AssetSpec {
                symbol: sym.into(),
                decimals: 2,
                class: AssetClass::Crypto,
            })));
            assert_eq!(ev, vec![Event::AssetAdded { asset: i as u32 }]);
        }
        s
    }

    fn new() -> Sim {
        Sim::with_config(small_config())
    }

    /// A new sim with one market of the given fees (market 0).
    fn one_market(fees: FeeSchedule) -> Sim {
        let mut s = Sim::new();
        s.add_market(spec("BQ", fees));
        s
    }

    fn add_market(&mut self, m: MarketSpec) -> MarketId {
        let ev = self.run(Command::AddMarket(Box::new(m)));
        match ev.as_slice() {
            [Event::MarketAdded { market }] => *market,
            other => panic!("AddMarket: {other:?}"),
        }
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        self.seq += 1;
        let cmd = Sequenced {
            seq: self.seq,
            ts_ns: self.ts,
            command,
        };
        let ev = self.ex.apply(&cmd);
        if let Err(e) = self.ex.check_invariants() {
            panic!("invariant broken: {e}");
        }
        let mut fast = Vec::new();
        self.fast.apply(&cmd, &mut fast);
        assert_eq!(fast, ev, "fast engine differs on {cmd:?}");
        if let Err(e) = self.fast.check_invariants() {
            panic!("fast engine invariant broken: {e}");
        }
        ev
    }

    fn place(&mut self, p: PlaceOrder) -> Vec<Event> {
        self.run(Command::PlaceOrder(p))
    }

    fn deposit(&mut self, account: AccountId, asset: u32, amount: u64) {
        let before = self.ex.balance(account, asset);
        let ev = self.run(Command::Deposit {
            account,
            asset,
            amount,
        });
        assert_eq!(
            ev,
            vec![bal(account, asset, before.0 + amount, before.1)],
            "deposit"
        );
    }
}

fn small_config() -> EngineConfig {
    EngineConfig {
        max_accounts: 8,
        max_assets: 8,
        max_markets: 4,
        max_orders: 100,
        max_orders_per_market: 100,
        max_levels_per_side: 16,
        max_gtd_orders: 8,
        max_pending_withdrawals: 2,
        max_pending_deposits: 2,
        fee_account: 0,
    }
}

fn limit(account: AccountId, side: Side, price: u64, qty: u64) -> PlaceOrder {
    PlaceOrder {
        account,
        market: 0,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        quantity: Quantity::Base(qty),
        price: Some(price),
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    }
}

fn market_order(account: AccountId, side: Side, quantity: Quantity) -> PlaceOrder {
    PlaceOrder {
        account,
        market: 0,
        side,
        order_type: OrderType::Market,
        tif: TimeInForce::Ioc,
        quantity,
        price: None,
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    }
}

fn accepted(order_id: u64, p: &PlaceOrder) -> Event {
    Event::OrderAccepted {
        order_id,
        account: p.account,
        market: p.market,
        side: p.side,
        order_type: p.order_type,
        tif: p.tif,
        quantity: p.quantity,
        price: p.price,
        client_order_id: p.client_order_id,
        stp: p.stp,
    }
}

fn rejected(p: &PlaceOrder, reason: RejectReason) -> Event {
    Event::OrderRejected {
        account: p.account,
        market: p.market,
        client_order_id: p.client_order_id,
        reason,
    }
}

fn bal(account: AccountId, asset: u32, free: u64, locked: u64) -> Event {
    Event::BalanceChanged {
        account,
        asset,
        free,
        locked,
    }
}

fn level(market: MarketId, side: Side, price: u64, total_qty: u64, count: u32, uid: u64) -> Event {
    Event::BookLevel {
        market,
        side,
        price,
        total_qty,
        order_count: count,
        update_id: uid,
    }
}

fn cancelled(
    order_id: u64,
    account: AccountId,
    market: MarketId,
    remaining: u64,
    reason: CancelReason,
) -> Event {
    Event::OrderCancelled {
        order_id,
        account,
        market,
        remaining,
        reason,
    }
}

#[allow(clippy::too_many_arguments)]
fn trade(
    trade_id: u64,
    price: u64,
    qty: u64,
    (maker_order, maker_account): (u64, AccountId),
    (taker_order, taker_account): (u64, AccountId),
    taker_side: Side,
    (maker_fee, taker_fee): (i64, u64),
    maker_remaining: u64,
) -> Event {
    Event::Trade {
        trade_id,
        market: 0,
        price,
        qty,
        maker_order,
        maker_account,
        taker_order,
        taker_account,
        taker_side,
        maker_fee,
        taker_fee,
        maker_remaining,
    }
}

fn cid(s: &str) -> ClientOrderId {
    ClientOrderId::new(s).unwrap()
}

fn cancel_rejected(account: AccountId, market: MarketId, reason: RejectReason) -> Event {
    Event::CancelRejected {
        account,
        market,
        reason,
    }
}

// ---------------------------------------------------------------------------------------

#[test]
fn simple_cross_with_rebate() {
    // maker -2 bps, taker 10 bps
    let mut s = Sim::one_market(FeeSchedule {
        maker_fee_bps: -2,
        taker_fee_bps: 10,
    });
    s.deposit(1, BASE, 10_000);
    s.deposit(2, QUOTE, 1_000_000);

    let sell = limit(1, Side::Sell, 1000, 50);
    assert_eq!(
        s.place(sell),
        vec![
            accepted(1, &sell),
            level(0, Side::Sell, 1000, 50, 1, 1),
            bal(1, BASE, 5_000, 5_000),
        ]
    );
    // base 5000, quote 50000; taker fee floor(5000 * 10 / 1e4) = 5 BASE, rebate
    // floor(5000 * 2 / 1e4) = 1 BASE to the maker, fee account keeps 4.
    let buy = limit(2, Side::Buy, 1000, 50);
    assert_eq!(
        s.place(buy),
        vec![
            accepted(2, &buy),
            trade(1, 1000, 50, (1, 1), (2, 2), Side::Buy, (-1, 5), 0),
            bal(1, BASE, 5_001, 0),
            bal(1, QUOTE, 50_000, 0),
            level(0, Side::Sell, 1000, 0, 0, 2),
            bal(2, BASE, 4_995, 0),
            bal(2, QUOTE, 950_000, 0),
            bal(0, BASE, 4, 0),
        ]
    );
    assert_eq!(s.ex.balance(0, QUOTE), (0, 0));
    assert_eq!(s.ex.last_trade_price(0), Some(1000));
    assert_eq!(s.ex.update_id(0), 2);
}

#[test]
fn partial_fill_and_price_improvement_refund() {
    let mut s = Sim::one_market(FeeSchedule {
        maker_fee_bps: -2,
        taker_fee_bps: 10,
    });
    s.deposit(1, BASE, 10_000);
    s.deposit(2, QUOTE, 1_000_000);
    let sell = limit(1, Side::Sell, 980, 30);
    s.place(sell);
    // Buy 50 @ 1000 locks 50000; 30 fill at 980: lock -30000, refund (1000-980)*30 = 600;
    // 20 rest with 20000 locked. Taker fee floor(3000 * 10 / 1e4) = 3, rebate floor(0.6) = 0.
    let buy = limit(2, Side::Buy, 1000, 50);
    assert_eq!(
        s.place(buy),
        vec![
            accepted(2, &buy),
            trade(1, 980, 30, (1, 1), (2, 2), Side::Buy, (0, 3), 0),
            bal(1, BASE, 7_000, 0),
            bal(1, QUOTE, 29_400, 0),
            level(0, Side::Sell, 980, 0, 0, 2),
            level(0, Side::Buy, 1000, 20, 1, 3),
            bal(2, BASE, 2_997, 0),
            bal(2, QUOTE, 950_600, 20_000),
            bal(0, BASE, 3, 0),
        ]
    );
    let o = s.ex.order(2).unwrap();
    assert_eq!((o.qty, o.remaining, o.price), (50, 20, 1000));
}

#[test]
fn positive_maker_fee_rounds_down() {
    // maker 7 bps, taker 13 bps
    let mut s = Sim::one_market(FeeSchedule {
        maker_fee_bps: 7,
        taker_fee_bps: 13,
    });
    s.deposit(1, BASE, 10_000);
    s.deposit(2, QUOTE, 1_000_000);
    s.place(limit(1, Side::Sell, 321, 77));
    // base 7700, quote 24717: taker fee floor(7700 * 13 / 1e4) = floor(10.01) = 10 BASE,
    // maker fee floor(24717 * 7 / 1e4) = floor(17.3019) = 17 QUOTE.
    let buy = limit(2, Side::Buy, 321, 77);
    assert_eq!(
        s.place(buy),
        vec![
            accepted(2, &buy),
            trade(1, 321, 77, (1, 1), (2, 2), Side::Buy, (17, 10), 0),
            bal(1, BASE, 2_300, 0),
            bal(1, QUOTE, 24_700, 0),
            level(0, Side::Sell, 321, 0, 0, 2),
            bal(2, BASE, 7_690, 0),
            bal(2, QUOTE, 975_283, 0),
            bal(0, BASE, 10, 0),
            bal(0, QUOTE, 17, 0),
        ]
    );
}

#[test]
fn taker_sell_rebate_paid_in_quote() {
    let mut s = Sim::one_market(FeeSchedule {
        maker_fee_bps: -2,
        taker_fee_bps: 10,
    });
    s.deposit(1, QUOTE, 1_000_000);
    s.deposit(2, BASE, 10_000);
    s.place(limit(1, Side::Buy, 1003, 33));
    // quote 33099: taker fee floor(33.099) = 33, rebate floor(6.6198) = 6, fee account 27.
    let sell = limit(2, Side::Sell, 990, 33);
    assert_eq!(
        s.place(sell),
        vec![
            accepted(2, &sell),
            trade(1, 1003, 33, (1, 1), (2, 2), Side::Sell, (-6, 33), 0),
            bal(1, BASE, 3_300, 0),
            bal(1, QUOTE, 966_907, 0),
            level(0, Side::Buy, 1003, 0, 0, 2),
            bal(2, BASE, 6_700, 0),
            bal(2, QUOTE, 33_066, 0),
            bal(0, QUOTE, 27, 0),
        ]
    );
}

/// Book: account 1 sells 10 @ 1000 (order 1), account 2 sells 10 @ 1000 (order 2); then
/// account 1 buys 15 @ 1000 with the given STP mode (order 3).
fn stp_sim() -> Sim {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, BASE, 10_000);
    s.deposit(1, QUOTE, 1_000_000);
    s.deposit(2, BASE, 10_000);
    let a = limit(1, Side::Sell, 1000, 10);
    assert_eq!(
        s.place(a),
        vec![
            accepted(1, &a),
            level(0, Side::Sell, 1000, 10, 1, 1),
            bal(1, BASE, 9_000, 1_000)
        ]
    );
    let b = limit(2, Side::Sell, 1000, 10);
    assert_eq!(
        s.place(b),
        vec![
            accepted(2, &b),
            level(0, Side::Sell, 1000, 20, 2, 2),
            bal(2, BASE, 9_000, 1_000)
        ]
    );
    s
}

fn stp_taker(stp: StpMode) -> PlaceOrder {
    PlaceOrder {
        stp,
        ..limit(1, Side::Buy, 1000, 15)
    }
}

#[test]
fn stp_expire_maker() {
    let mut s = stp_sim();
    let t = stp_taker(StpMode::ExpireMaker);
    assert_eq!(
        s.place(t),
        vec![
            accepted(3, &t),
            cancelled(1, 1, 0, 10, CancelReason::SelfTradePrevention),
            bal(1, BASE, 10_000, 0),
            trade(1, 1000, 10, (2, 2), (3, 1), Side::Buy, (0, 0), 0),
            bal(2, BASE, 9_000, 0),
            bal(2, QUOTE, 10_000, 0),
            level(0, Side::Sell, 1000, 0, 0, 3),
            level(0, Side::Buy, 1000, 5, 1, 4),
            bal(1, BASE, 11_000, 0),
            bal(1, QUOTE, 985_000, 5_000),
        ]
    );
}

#[test]
fn stp_expire_taker() {
    let mut s = stp_sim();
    let t = stp_taker(StpMode::ExpireTaker);
    // Stops at once on its own order: the level did not change, balances are as before.
    assert_eq!(
        s.place(t),
        vec![
            accepted(3, &t),
            cancelled(3, 1, 0, 15, CancelReason::SelfTradePrevention),
        ]
    );
    assert_eq!(s.ex.update_id(0), 2);
}

#[test]
fn stp_expire_both() {
    let mut s = stp_sim();
    let t = stp_taker(StpMode::ExpireBoth);
    assert_eq!(
        s.place(t),
        vec![
            accepted(3, &t),
            cancelled(1, 1, 0, 10, CancelReason::SelfTradePrevention),
            bal(1, BASE, 10_000, 0),
            level(0, Side::Sell, 1000, 10, 1, 3),
            cancelled(3, 1, 0, 15, CancelReason::SelfTradePrevention),
            // No closing BalanceChanged: the maker cancel already said the final state.
        ]
    );
}

#[test]
fn stp_none_self_trades() {
    let mut s = stp_sim();
    let t = stp_taker(StpMode::None);
    assert_eq!(
        s.place(t),
        vec![
            accepted(3, &t),
            trade(1, 1000, 10, (1, 1), (3, 1), Side::Buy, (0, 0), 0),
            bal(1, BASE, 10_000, 0),
            bal(1, QUOTE, 995_000, 5_000),
            trade(2, 1000, 5, (2, 2), (3, 1), Side::Buy, (0, 0), 5),
            bal(2, BASE, 9_000, 500),
            bal(2, QUOTE, 5_000, 0),
            level(0, Side::Sell, 1000, 5, 1, 3),
            bal(1, BASE, 10_500, 0),
            bal(1, QUOTE, 995_000, 0),
        ]
    );
}

#[test]
fn fok_fails_then_fills() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, QUOTE, 1_000_000);
    s.deposit(2, BASE, 10_000);
    s.place(limit(2, Side::Sell, 1000, 10));
    s.place(limit(2, Side::Sell, 1001, 10));
    let fok = |price| PlaceOrder {
        tif: TimeInForce::Fok,
        ..limit(1, Side::Buy, price, 15)
    };
    // Only 10 lots at or below 1000: nothing trades, no balance event.
    assert_eq!(
        s.place(fok(1000)),
        vec![
            accepted(3, &fok(1000)),
            cancelled(3, 1, 0, 15, CancelReason::Fok)
        ]
    );
    assert_eq!(s.ex.balance(1, QUOTE), (1_000_000, 0));
    // 20 lots at or below 1001. Lock 15015; refund (1001-1000)*10 = 10.
    assert_eq!(
        s.place(fok(1001)),
        vec![
            accepted(4, &fok(1001)),
            trade(1, 1000, 10, (1, 2), (4, 1), Side::Buy, (0, 0), 0),
            bal(2, BASE, 8_000, 1_000),
            bal(2, QUOTE, 10_000, 0),
            level(0, Side::Sell, 1000, 0, 0, 3),
            trade(2, 1001, 5, (2, 2), (4, 1), Side::Buy, (0, 0), 5),
            bal(2, BASE, 8_000, 500),
            bal(2, QUOTE, 15_005, 0),
            level(0, Side::Sell, 1001, 5, 1, 4),
            bal(1, BASE, 1_500, 0),
            bal(1, QUOTE, 984_995, 0),
        ]
    );
}

#[test]
fn fok_walk_skips_or_stops_at_own_orders() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, QUOTE, 1_000_000);
    s.deposit(1, BASE, 10_000);
    s.deposit(2, BASE, 10_000);
    s.place(limit(1, Side::Sell, 1000, 10)); // 1, own
    s.place(limit(2, Side::Sell, 1000, 10)); // 2
    let fok = |stp| PlaceOrder {
        tif: TimeInForce::Fok,
        stp,
        ..limit(1, Side::Buy, 1000, 12)
    };
    // ExpireTaker / ExpireBoth: the walk ends at order 1, 0 counted.
    for (id, stp) in [(3, StpMode::ExpireTaker), (4, StpMode::ExpireBoth)] {
        assert_eq!(
            s.place(fok(stp)),
            vec![
                accepted(id, &fok(stp)),
                cancelled(id, 1, 0, 12, CancelReason::Fok)
            ]
        );
    }
    // ExpireMaker: order 1 skipped, 10 counted < 12.
    assert_eq!(
        s.place(fok(StpMode::ExpireMaker)),
        vec![
            accepted(5, &fok(StpMode::ExpireMaker)),
            cancelled(5, 1, 0, 12, CancelReason::Fok)
        ]
    );
    // None: 20 counted; self-trade 10, then 2 from account 2.
    let ev = s.place(fok(StpMode::None));
    assert_eq!(ev[0], accepted(6, &fok(StpMode::None)));
    assert!(matches!(
        ev[1],
        Event::Trade {
            maker_order: 1,
            qty: 10,
            ..
        }
    ));
    assert_eq!(s.ex.order(2).unwrap().remaining, 8);
    assert_eq!(s.ex.update_id(0), 3);
}

#[test]
fn gtd_expiry_by_tick() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, BASE, 10_000);
    let gtd = |price, qty, expire_ns| PlaceOrder {
        tif: TimeInForce::Gtd { expire_ns },
        ..limit(1, Side::Sell, price, qty)
    };
    // expiry at or before the command's time (1000)
    assert_eq!(
        s.place(gtd(1000, 10, 1_000)),
        vec![rejected(&gtd(1000, 10, 1_000), RejectReason::InvalidExpiry)]
    );
    s.place(gtd(1000, 10, 5_000)); // order 1 (the rejection took no id)
    s.place(gtd(1001, 20, 3_000)); // order 2
    s.place(limit(1, Side::Sell, 1002, 5)); // order 3, GTC
    assert_eq!(s.ex.balance(1, BASE), (6_500, 3_500));
    s.ts = 2_999;
    assert_eq!(s.run(Command::Tick), vec![]);
    s.ts = 5_000;
    // ascending (expire_ns, order id): order 2 first
    assert_eq!(
        s.run(Command::Tick),
        vec![
            cancelled(2, 1, 0, 20, CancelReason::Expired),
            level(0, Side::Sell, 1001, 0, 0, 4),
            bal(1, BASE, 8_500, 1_500),
            cancelled(1, 1, 0, 10, CancelReason::Expired),
            level(0, Side::Sell, 1000, 0, 0, 5),
            bal(1, BASE, 9_500, 500),
        ]
    );
    assert_eq!(s.ex.resting().len(), 1);
}

#[test]
fn gtd_capacity() {
    let mut s = Sim::with_config(EngineConfig {
        max_gtd_orders: 1,
        ..small_config()
    });
    s.add_market(spec("BQ", ZERO_FEES));
    s.deposit(1, BASE, 10_000);
    let gtd = PlaceOrder {
        tif: TimeInForce::Gtd { expire_ns: 9_000 },
        ..limit(1, Side::Sell, 1000, 1)
    };
    assert_eq!(s.place(gtd)[0], accepted(1, &gtd));
    assert_eq!(
        s.place(gtd),
        vec![rejected(&gtd, RejectReason::CapacityExceeded)]
    );
    // a GTC order still fits
    assert_eq!(
        s.place(limit(1, Side::Sell, 1000, 1))[0],
        accepted(2, &limit(1, Side::Sell, 1000, 1))
    );
}

#[test]
fn amend_keep_priority_and_cancel_replace() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, QUOTE, 100_000);
    s.deposit(2, QUOTE, 100_000);
    s.deposit(3, BASE, 10_000);
    s.place(limit(1, Side::Buy, 1000, 10)); // 1
    s.place(limit(2, Side::Buy, 1000, 10)); // 2
    assert_eq!(s.ex.balance(1, QUOTE), (90_000, 10_000));
    let amend = |new_qty, new_price| Command::AmendOrder {
        account: 1,
        market: 0,
        target: OrderRef::Id(1),
        new_qty,
        new_price,
    };
    let amended = |price, qty, remaining, priority_kept| Event::OrderAmended {
        order_id: 1,
        account: 1,
        market: 0,
        price,
        qty,
        remaining,
        priority_kept,
    };
    // quantity down: keeps priority, releases 4 lots
    assert_eq!(
        s.run(amend(6, None)),
        vec![
            amended(1000, 6, 6, true),
            level(0, Side::Buy, 1000, 16, 2, 3),
            bal(1, QUOTE, 94_000, 6_000),
        ]
    );
    // same quantity, same price given: keeps priority, nothing released
    assert_eq!(s.run(amend(6, Some(1000))), vec![amended(1000, 6, 6, true)]);
    // quantity up: cancel-replace to the back of the level
    assert_eq!(
        s.run(amend(8, None)),
        vec![
            amended(1000, 8, 8, false),
            level(0, Side::Buy, 1000, 10, 1, 4),
            level(0, Side::Buy, 1000, 18, 2, 5),
            bal(1, QUOTE, 92_000, 8_000),
        ]
    );
    // order 2 is now first in the queue
    let ioc = PlaceOrder {
        tif: TimeInForce::Ioc,
        ..limit(3, Side::Sell, 1000, 10)
    };
    assert_eq!(
        s.place(ioc),
        vec![
            accepted(3, &ioc),
            trade(1, 1000, 10, (2, 2), (3, 3), Side::Sell, (0, 0), 0),
            bal(2, BASE, 1_000, 0),
            bal(2, QUOTE, 90_000, 0),
            level(0, Side::Buy, 1000, 8, 1, 6),
            bal(3, BASE, 9_000, 0),
            bal(3, QUOTE, 10_000, 0),
        ]
    );
    s.place(limit(3, Side::Sell, 1005, 4)); // 4, update 7
                                            // price change through the ask: leaves its level, matches as a taker (limit 1006,
                                            // refund 1 per lot), rests the rest at 1006.
    assert_eq!(
        s.run(amend(8, Some(1006))),
        vec![
            amended(1006, 8, 8, false),
            level(0, Side::Buy, 1000, 0, 0, 8),
            trade(2, 1005, 4, (4, 3), (1, 1), Side::Buy, (0, 0), 0),
            bal(3, BASE, 8_600, 0),
            bal(3, QUOTE, 14_020, 0),
            level(0, Side::Sell, 1005, 0, 0, 9),
            level(0, Side::Buy, 1006, 4, 1, 10),
            bal(1, BASE, 400, 0),
            bal(1, QUOTE, 91_956, 4_024),
        ]
    );
    // 4 filled: new_qty 4 is not above it
    assert_eq!(
        s.run(amend(4, None)),
        vec![cancel_rejected(1, 0, RejectReason::InvalidAmend)]
    );
    // down to 6 total: 2 remaining
    assert_eq!(
        s.run(amend(6, None)),
        vec![
            amended(1006, 6, 2, true),
            level(0, Side::Buy, 1006, 2, 1, 11),
            bal(1, QUOTE, 93_968, 2_012),
        ]
    );
    let o = s.ex.order(1).unwrap();
    assert_eq!((o.price, o.qty, o.remaining), (1006, 6, 2));
}

#[test]
fn amend_rejections() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, QUOTE, 10_000);
    let mut p = limit(1, Side::Buy, 1000, 5);
    p.client_order_id = cid("a1");
    s.place(p); // 1, locks 5000
    let amend = |target, new_qty, new_price| Command::AmendOrder {
        account: 1,
        market: 0,
        target,
        new_qty,
        new_price,
    };
    let rej = |r| vec![cancel_rejected(1, 0, r)];
    assert_eq!(
        s.run(amend(OrderRef::Id(9), 5, None)),
        rej(RejectReason::UnknownOrder)
    );
    assert_eq!(
        s.run(amend(
            OrderRef::Client(ClientOrderId::from_raw(1, [b' '; 36])),
            5,
            None
        )),
        rej(RejectReason::InvalidClientOrderId)
    );
    assert_eq!(
        s.run(amend(OrderRef::Client(cid("a1")), 0, None)),
        rej(RejectReason::InvalidAmend)
    );
    assert_eq!(
        s.run(amend(OrderRef::Client(cid("a1")), 5, Some(0))),
        rej(RejectReason::PriceFilter)
    );
    // new lock 2000 * 10 = 20000 > free 5000 + old lock 5000
    assert_eq!(
        s.run(amend(OrderRef::Id(1), 10, Some(2000))),
        rej(RejectReason::InsufficientBalance)
    );
    // exactly free + old lock is enough
    let ev = s.run(amend(OrderRef::Id(1), 10, None));
    assert_eq!(ev.last(), Some(&bal(1, QUOTE, 0, 10_000)));
    // CancelOnly: quantity down allowed, quantity up refused
    s.run(Command::SetMarketStatus {
        market: 0,
        status: MarketStatus::CancelOnly,
        cancel_open: false,
    });
    assert_eq!(
        s.run(amend(OrderRef::Id(1), 11, None)),
        rej(RejectReason::MarketCancelOnly)
    );
    assert_eq!(s.run(amend(OrderRef::Id(1), 9, None)).len(), 3);
    s.run(Command::SetMarketStatus {
        market: 0,
        status: MarketStatus::Halted,
        cancel_open: false,
    });
    assert_eq!(
        s.run(amend(OrderRef::Id(1), 8, None)),
        rej(RejectReason::MarketHalted)
    );
}

#[test]
fn cancel_all_order_and_halt() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.add_market(spec("BQ2", ZERO_FEES));
    s.deposit(1, QUOTE, 100_000);
    let on = |market, price, qty| PlaceOrder {
        market,
        ..limit(1, Side::Buy, price, qty)
    };
    let p = on(1, 500, 1);
    assert_eq!(
        s.place(p),
        vec![
            accepted(1, &p),
            level(1, Side::Buy, 500, 1, 1, 1),
            bal(1, QUOTE, 99_500, 500)
        ]
    );
    let p = on(0, 501, 2);
    assert_eq!(
        s.place(p),
        vec![
            accepted(2, &p),
            level(0, Side::Buy, 501, 2, 1, 1),
            bal(1, QUOTE, 98_498, 1_502)
        ]
    );
    let p = on(1, 502, 3);
    assert_eq!(
        s.place(p),
        vec![
            accepted(3, &p),
            level(1, Side::Buy, 502, 3, 1, 2),
            bal(1, QUOTE, 96_992, 3_008)
        ]
    );
    let p = on(0, 501, 4);
    assert_eq!(
        s.place(p),
        vec![
            accepted(4, &p),
            level(0, Side::Buy, 501, 6, 2, 2),
            bal(1, QUOTE, 94_988, 5_012)
        ]
    );
    assert_eq!(
        s.run(Command::SetMarketStatus {
            market: 1,
            status: MarketStatus::Halted,
            cancel_open: false
        }),
        vec![Event::MarketStatusChanged {
            market: 1,
            status: MarketStatus::Halted
        }]
    );
    assert_eq!(
        s.run(Command::CancelAll {
            account: 1,
            market: Some(1)
        }),
        vec![cancel_rejected(1, 1, RejectReason::MarketHalted)]
    );
    // all markets: the halted one is skipped
    assert_eq!(
        s.run(Command::CancelAll {
            account: 1,
            market: None
        }),
        vec![
            cancelled(2, 1, 0, 2, CancelReason::MassCancel),
            level(0, Side::Buy, 501, 4, 1, 3),
            bal(1, QUOTE, 95_990, 4_010),
            cancelled(4, 1, 0, 4, CancelReason::MassCancel),
            level(0, Side::Buy, 501, 0, 0, 4),
            bal(1, QUOTE, 97_994, 2_006),
        ]
    );
    assert_eq!(
        s.run(Command::CancelAll {
            account: 1,
            market: Some(0)
        }),
        vec![]
    );
    assert_eq!(
        s.run(Command::SetMarketStatus {
            market: 1,
            status: MarketStatus::Halted,
            cancel_open: true
        }),
        vec![
            Event::MarketStatusChanged {
                market: 1,
                status: MarketStatus::Halted
            },
            cancelled(1, 1, 1, 1, CancelReason::Halted),
            level(1, Side::Buy, 500, 0, 0, 3),
            bal(1, QUOTE, 98_494, 1_506),
            cancelled(3, 1, 1, 3, CancelReason::Halted),
            level(1, Side::Buy, 502, 0, 0, 4),
            bal(1, QUOTE, 100_000, 0),
        ]
    );
    // unknown account, with and without a market
    assert_eq!(
        s.run(Command::CancelAll {
            account: 99,
            market: Some(0)
        }),
        vec![cancel_rejected(99, 0, RejectReason::UnknownAccount)]
    );
    assert_eq!(
        s.run(Command::CancelAll {
            account: 99,
            market: None
        }),
        vec![cancel_rejected(
            99,
            reference::NO_MARKET,
            RejectReason::UnknownAccount
        )]
    );
}

#[test]
fn cancel_by_id_and_client_id() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.add_market(spec("BQ2", ZERO_FEES));
    s.deposit(1, BASE, 10_000);
    let mut p = limit(1, Side::Sell, 700, 3);
    p.client_order_id = cid("x-1");
    s.place(p); // 1
    s.place(limit(1, Side::Sell, 701, 2)); // 2, no client id
                                           // the same client id in another market is a duplicate
    let dup = PlaceOrder { market: 1, ..p };
    assert_eq!(
        s.place(dup),
        vec![rejected(&dup, RejectReason::DuplicateClientOrderId)]
    );
    let cancel = |account, market, target| Command::CancelOrder {
        account,
        market,
        target,
    };
    assert_eq!(
        s.run(cancel(1, 1, OrderRef::Id(1))),
        vec![cancel_rejected(1, 1, RejectReason::UnknownOrder)]
    );
    assert_eq!(
        s.run(cancel(2, 0, OrderRef::Id(1))),
        vec![cancel_rejected(2, 0, RejectReason::UnknownOrder)]
    );
    assert_eq!(
        s.run(cancel(1, 0, OrderRef::Client(ClientOrderId::NONE))),
        vec![cancel_rejected(1, 0, RejectReason::UnknownOrder)]
    );
    assert_eq!(
        s.run(cancel(
            1,
            0,
            OrderRef::Client(ClientOrderId::from_raw(40, [b'a'; 36]))
        )),
        vec![cancel_rejected(1, 0, RejectReason::InvalidClientOrderId)]
    );
    assert_eq!(
        s.run(cancel(1, 5, OrderRef::Id(1))),
        vec![cancel_rejected(1, 5, RejectReason::UnknownMarket)]
    );
    assert_eq!(
        s.run(cancel(1, 0, OrderRef::Client(cid("x-1")))),
        vec![
            cancelled(1, 1, 0, 3, CancelReason::User),
            level(0, Side::Sell, 700, 0, 0, 3),
            bal(1, BASE, 9_800, 200),
        ]
    );
    assert_eq!(
        s.run(cancel(1, 0, OrderRef::Id(2))),
        vec![
            cancelled(2, 1, 0, 2, CancelReason::User),
            level(0, Side::Sell, 701, 0, 0, 4),
            bal(1, BASE, 10_000, 0),
        ]
    );
    // the client id is free again
    assert_eq!(s.place(dup)[0], accepted(3, &dup));
}

#[test]
fn place_checks_in_order_and_rejections_take_no_id() {
    let mut m = spec("BQ", ZERO_FEES);
    m.required_permission = Some(3);
    m.min_notional = 1_000;
    m.max_qty_lots = 100;
    m.max_open_orders = 1;
    let mut s = Sim::new();
    s.add_market(m);
    s.deposit(1, QUOTE, 50_000);
    s.deposit(1, BASE, 1_000);
    let bad_cid = ClientOrderId::from_raw(1, [b'!'; 36]);
    let base = limit(1, Side::Buy, 100, 20);
    let check = |s: &mut Sim, p: PlaceOrder, r| assert_eq!(s.place(p), vec![rejected(&p, r)]);

    check(
        &mut s,
        PlaceOrder {
            account: 8,
            client_order_id: bad_cid,
            ..base
        },
        RejectReason::UnknownAccount,
    );
    check(
        &mut s,
        PlaceOrder {
            market: 1,
            client_order_id: bad_cid,
            ..base
        },
        RejectReason::UnknownMarket,
    );
    check(
        &mut s,
        PlaceOrder {
            client_order_id: bad_cid,
            ..base
        },
        RejectReason::InvalidClientOrderId,
    );
    check(&mut s, base, RejectReason::NotPermitted);
    assert_eq!(
        s.run(Command::GrantPermission {
            account: 1,
            permission: 3
        }),
        vec![Event::PermissionChanged {
            account: 1,
            permission: 3,
            granted: true
        }]
    );
    assert_eq!(
        s.run(Command::GrantPermission {
            account: 1,
            permission: 64
        }),
        vec![Event::CommandRejected {
            reason: RejectReason::InvalidAmount
        }]
    );
    let mkt = market_order(1, Side::Buy, Quantity::Base(20));
    check(
        &mut s,
        PlaceOrder {
            price: Some(100),
            tif: TimeInForce::Gtc,
            ..mkt
        },
        RejectReason::InvalidOrderParameters,
    );
    check(
        &mut s,
        PlaceOrder {
            tif: TimeInForce::Gtc,
            ..mkt
        },
        RejectReason::InvalidTimeInForce,
    );
    check(
        &mut s,
        PlaceOrder {
            price: None,
            ..base
        },
        RejectReason::InvalidOrderParameters,
    );
    check(
        &mut s,
        PlaceOrder {
            quantity: Quantity::Quote(5_000),
            ..base
        },
        RejectReason::InvalidOrderParameters,
    );
    let maker = PlaceOrder {
        order_type: OrderType::LimitMaker,
        ..base
    };
    check(
        &mut s,
        PlaceOrder {
            tif: TimeInForce::Ioc,
            ..maker
        },
        RejectReason::InvalidTimeInForce,
    );
    check(
        &mut s,
        PlaceOrder {
            tif: TimeInForce::Gtd { expire_ns: 999 },
            price: Some(0),
            ..base
        },
        RejectReason::InvalidExpiry,
    );
    check(
        &mut s,
        PlaceOrder {
            price: Some(0),
            quantity: Quantity::Base(0),
            ..base
        },
        RejectReason::PriceFilter,
    );
    check(
        &mut s,
        PlaceOrder {
            quantity: Quantity::Base(0),
            ..base
        },
        RejectReason::LotSize,
    );
    check(
        &mut s,
        PlaceOrder {
            quantity: Quantity::Base(101),
            ..base
        },
        RejectReason::LotSize,
    );
    // notional 100 * 9 = 900 < 1000
    check(
        &mut s,
        PlaceOrder {
            quantity: Quantity::Base(9),
            ..base
        },
        RejectReason::Notional,
    );
    check(
        &mut s,
        market_order(1, Side::Buy, Quantity::Quote(0)),
        RejectReason::Notional,
    );
    check(
        &mut s,
        market_order(1, Side::Buy, Quantity::Quote(999)),
        RejectReason::Notional,
    );
    // 3000 * 20 = 60000 > 50000 free
    check(
        &mut s,
        PlaceOrder {
            price: Some(3000),
            ..base
        },
        RejectReason::InsufficientBalance,
    );
    // a market buy by base needs some free quote; a market sell by base its whole quantity
    check(
        &mut s,
        market_order(2, Side::Buy, Quantity::Base(20)),
        RejectReason::NotPermitted,
    );
    s.run(Command::GrantPermission {
        account: 2,
        permission: 3,
    });
    check(
        &mut s,
        market_order(2, Side::Buy, Quantity::Base(20)),
        RejectReason::InsufficientBalance,
    );
    check(
        &mut s,
        market_order(1, Side::Sell, Quantity::Base(11)),
        RejectReason::InsufficientBalance,
    );
    check(
        &mut s,
        market_order(2, Side::Sell, Quantity::Quote(5_000)),
        RejectReason::InsufficientBalance,
    );

    // first accepted order gets id 1
    let mut ok = base;
    ok.client_order_id = cid("k");
    assert_eq!(s.place(ok)[0], accepted(1, &ok));
    // duplicate client id comes before the open-order limit
    check(&mut s, ok, RejectReason::DuplicateClientOrderId);
    check(
        &mut s,
        PlaceOrder {
            price: Some(101),
            ..base
        },
        RejectReason::TooManyOpenOrders,
    );
    // a limit IOC does not count against the open-order limit; nothing to match
    let ioc = PlaceOrder {
        tif: TimeInForce::Ioc,
        ..base
    };
    assert_eq!(
        s.place(ioc),
        vec![accepted(2, &ioc), cancelled(2, 1, 0, 20, CancelReason::Ioc)]
    );
    // post-only that would cross: account 2 sells into the bid at 100
    s.deposit(2, BASE, 1_000);
    let pm = PlaceOrder {
        order_type: OrderType::LimitMaker,
        ..limit(2, Side::Sell, 100, 10)
    };
    check(&mut s, pm, RejectReason::PostOnlyWouldCross);
    let pm_ok = PlaceOrder {
        price: Some(101),
        ..pm
    };
    assert_eq!(
        s.place(pm_ok),
        vec![
            accepted(3, &pm_ok),
            level(0, Side::Sell, 101, 10, 1, 2),
            bal(2, BASE, 0, 1_000)
        ]
    );
    // halted / cancel-only
    for (status, r) in [
        (MarketStatus::CancelOnly, RejectReason::MarketCancelOnly),
        (MarketStatus::Halted, RejectReason::MarketHalted),
    ] {
        s.run(Command::SetMarketStatus {
            market: 0,
            status,
            cancel_open: false,
        });
        check(
            &mut s,
            PlaceOrder {
                client_order_id: ClientOrderId::NONE,
                ..ok
            },
            r,
        );
    }
}

#[test]
fn capacity_limits_on_orders_and_levels() {
    let mut s = Sim::with_config(EngineConfig {
        max_orders: 4,
        max_orders_per_market: 3,
        max_levels_per_side: 2,
        ..small_config()
    });
    s.add_market(spec("BQ", ZERO_FEES));
    s.add_market(spec("BQ2", ZERO_FEES));
    s.deposit(1, QUOTE, 1_000_000);
    s.place(limit(1, Side::Buy, 100, 1)); // 1
    s.place(limit(1, Side::Buy, 101, 1)); // 2
                                          // a third level on the side
    let p = limit(1, Side::Buy, 102, 1);
    assert_eq!(
        s.place(p),
        vec![rejected(&p, RejectReason::CapacityExceeded)]
    );
    // an existing level is fine
    let p = limit(1, Side::Buy, 101, 1);
    assert_eq!(s.place(p)[0], accepted(3, &p));
    // the market holds 3 orders
    assert_eq!(
        s.place(p),
        vec![rejected(&p, RejectReason::CapacityExceeded)]
    );
    // IOC never rests: no capacity check
    let ioc = PlaceOrder {
        tif: TimeInForce::Ioc,
        ..p
    };
    assert_eq!(s.place(ioc)[0], accepted(4, &ioc));
    let p2 = PlaceOrder { market: 1, ..p };
    assert_eq!(s.place(p2)[0], accepted(5, &p2));
    // the exchange holds 4 orders
    assert_eq!(
        s.place(p2),
        vec![rejected(&p2, RejectReason::CapacityExceeded)]
    );
    // amend to a third price level
    assert_eq!(
        s.run(Command::AmendOrder {
            account: 1,
            market: 0,
            target: OrderRef::Id(1),
            new_qty: 1,
            new_price: Some(99)
        }),
        vec![cancel_rejected(1, 0, RejectReason::CapacityExceeded)]
    );
}

#[test]
fn market_order_by_quote_amount() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, QUOTE, 100_000);
    s.deposit(2, BASE, 10_000);
    s.place(limit(2, Side::Sell, 1000, 3)); // 1
    s.place(limit(2, Side::Sell, 1002, 5)); // 2
                                            // 3 lots at 1000 (3000), then 6500-3000 = 3500 buys 3 lots at 1002 (3006); 494 unspent.
    let m = market_order(1, Side::Buy, Quantity::Quote(6_500));
    assert_eq!(
        s.place(m),
        vec![
            accepted(3, &m),
            trade(1, 1000, 3, (1, 2), (3, 1), Side::Buy, (0, 0), 0),
            bal(2, BASE, 9_200, 500),
            bal(2, QUOTE, 3_000, 0),
            level(0, Side::Sell, 1000, 0, 0, 3),
            trade(2, 1002, 3, (2, 2), (3, 1), Side::Buy, (0, 0), 2),
            bal(2, BASE, 9_200, 200),
            bal(2, QUOTE, 6_006, 0),
            level(0, Side::Sell, 1002, 2, 1, 4),
            cancelled(3, 1, 0, 494, CancelReason::Ioc),
            bal(1, BASE, 600, 0),
            bal(1, QUOTE, 93_994, 0),
        ]
    );
    // a quote amount spent exactly: no OrderCancelled
    let m = market_order(1, Side::Buy, Quantity::Quote(2_004));
    assert_eq!(
        s.place(m),
        vec![
            accepted(4, &m),
            trade(3, 1002, 2, (2, 2), (4, 1), Side::Buy, (0, 0), 0),
            bal(2, BASE, 9_200, 0),
            bal(2, QUOTE, 8_010, 0),
            level(0, Side::Sell, 1002, 0, 0, 5),
            bal(1, BASE, 800, 0),
            bal(1, QUOTE, 91_990, 0),
        ]
    );
}

#[test]
fn market_sell_by_quote_limited_by_free_base_and_buy_by_free_quote() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, BASE, 800); // 8 lots
    s.deposit(2, QUOTE, 100_000);
    s.place(limit(2, Side::Buy, 900, 10)); // 1
                                           // wants 9000 / 900 = 10 lots but has 8
    let m = market_order(1, Side::Sell, Quantity::Quote(9_000));
    assert_eq!(
        s.place(m),
        vec![
            accepted(2, &m),
            trade(1, 900, 8, (1, 2), (2, 1), Side::Sell, (0, 0), 2),
            bal(2, BASE, 800, 0),
            bal(2, QUOTE, 91_000, 1_800),
            level(0, Side::Buy, 900, 2, 1, 2),
            cancelled(2, 1, 0, 1_800, CancelReason::Ioc),
            bal(1, BASE, 0, 0),
            bal(1, QUOTE, 7_200, 0),
        ]
    );
    // market buy by base: account 1 has 7200 quote, asks at 1000: 7 lots
    s.deposit(3, BASE, 10_000);
    s.place(limit(3, Side::Sell, 1000, 10)); // 3
    let m = market_order(1, Side::Buy, Quantity::Base(9));
    assert_eq!(
        s.place(m),
        vec![
            accepted(4, &m),
            trade(2, 1000, 7, (3, 3), (4, 1), Side::Buy, (0, 0), 3),
            bal(3, BASE, 9_000, 300),
            bal(3, QUOTE, 7_000, 0),
            level(0, Side::Sell, 1000, 3, 1, 4),
            cancelled(4, 1, 0, 2, CancelReason::Ioc),
            bal(1, BASE, 700, 0),
            bal(1, QUOTE, 200, 0),
        ]
    );
}

#[test]
fn price_band_limits_and_market_orders() {
    let mut m = spec("BQ", ZERO_FEES);
    m.price_band_bps = 100; // 1%
    m.min_notional = 1;
    m.max_notional = 100_000;
    let mut s = Sim::new();
    s.add_market(m);
    s.deposit(1, QUOTE, 1_000_000);
    s.deposit(2, BASE, 10_000);
    // no reference yet: no band, and a market order's notional is not checked
    let far = limit(2, Side::Sell, 5000, 1);
    assert_eq!(s.place(far)[0], accepted(1, &far));
    let big = market_order(1, Side::Buy, Quantity::Base(1_000));
    assert_eq!(s.place(big)[0], accepted(2, &big)); // trades 1 @ 5000: last trade 5000
                                                    // the last trade is now the reference: band [4950, 5050]
    let p = limit(2, Side::Sell, 4949, 1);
    assert_eq!(s.place(p), vec![rejected(&p, RejectReason::PercentPrice)]);
    // the admin's reference price overrides it: r = 999,
    // lower = ceil(999 * 9900 / 1e4) = 990, upper = floor(999 * 10100 / 1e4) = 1008
    assert_eq!(
        s.run(Command::SetReferencePrice {
            market: 0,
            price: Some(999)
        }),
        vec![Event::ReferencePriceSet {
            market: 0,
            price: Some(999)
        }]
    );
    assert_eq!(
        s.run(Command::SetReferencePrice {
            market: 0,
            price: Some(0)
        }),
        vec![Event::CommandRejected {
            reason: RejectReason::PriceFilter
        }]
    );
    for (side, price, ok) in [
        (Side::Sell, 989, false),
        (Side::Sell, 990, true),
        (Side::Buy, 1009, false),
        (Side::Buy, 1008, true),
    ] {
        let p = PlaceOrder {
            tif: TimeInForce::Ioc,
            ..limit(if side == Side::Buy { 1 } else { 2 }, side, price, 1)
        };
        let ev = s.place(p);
        if ok {
            assert!(
                matches!(ev[0], Event::OrderAccepted { .. }),
                "{side:?} {price}: {ev:?}"
            );
        } else {
            assert_eq!(ev, vec![rejected(&p, RejectReason::PercentPrice)]);
        }
    }
    // market notional with a reference: 999 * 101 = 100899 > 100000
    let mb = market_order(1, Side::Buy, Quantity::Base(101));
    assert_eq!(s.place(mb), vec![rejected(&mb, RejectReason::Notional)]);
    // a market buy stops at the band's upper edge (1008)
    s.place(limit(2, Side::Sell, 1005, 3)); // 5
    let p = limit(2, Side::Sell, 1009, 5); // above the band: refused, no id taken
    assert_eq!(s.place(p), vec![rejected(&p, RejectReason::PercentPrice)]);
    let ids =
        s.ex.resting()
            .iter()
            .map(|o| o.order_id)
            .collect::<Vec<_>>();
    assert_eq!(ids, vec![5]);
    s.run(Command::SetReferencePrice {
        market: 0,
        price: Some(1003),
    }); // band [993, 1013]
    s.place(limit(2, Side::Sell, 1012, 5)); // 6
    s.run(Command::SetReferencePrice {
        market: 0,
        price: Some(999),
    }); // back to [990, 1008]
    let mb = market_order(1, Side::Buy, Quantity::Base(10));
    let ev = s.place(mb);
    assert_eq!(ev[0], accepted(7, &mb));
    assert!(matches!(
        ev[1],
        Event::Trade {
            price: 1005,
            qty: 3,
            ..
        }
    ));
    assert!(ev.contains(&cancelled(7, 1, 0, 7, CancelReason::Ioc)));
    assert_eq!(s.ex.best(0, Side::Sell), Some((1012, 5)));
    // SetReferencePrice(None): back to the last trade (1005): band [995, 1015]
    s.run(Command::SetReferencePrice {
        market: 0,
        price: None,
    });
    let p = limit(1, Side::Buy, 1016, 1);
    assert_eq!(s.place(p), vec![rejected(&p, RejectReason::PercentPrice)]);
}

#[test]
fn withdrawals_hold_release_finalize() {
    let mut s = Sim::new(); // max_pending_withdrawals: 2
    s.deposit(1, BASE, 1_000);
    let hold = |withdrawal, amount| Command::WithdrawHold {
        account: 1,
        asset: BASE,
        amount,
        withdrawal,
    };
    let rej = |reason| vec![Event::CommandRejected { reason }];
    assert_eq!(
        s.run(hold(7, 600)),
        vec![
            Event::WithdrawalHeld {
                withdrawal: 7,
                account: 1,
                asset: BASE,
                amount: 600
            },
            bal(1, BASE, 400, 600),
        ]
    );
    assert_eq!(s.run(hold(7, 100)), rej(RejectReason::DuplicateWithdrawal));
    assert_eq!(s.run(hold(8, 0)), rej(RejectReason::InvalidAmount));
    assert_eq!(s.run(hold(8, 401)), rej(RejectReason::InsufficientBalance));
    assert_eq!(
        s.run(Command::WithdrawHold {
            account: 1,
            asset: 9,
            amount: 1,
            withdrawal: 8
        }),
        rej(RejectReason::UnknownAsset)
    );
    assert_eq!(
        s.run(Command::WithdrawHold {
            account: 8,
            asset: 0,
            amount: 1,
            withdrawal: 8
        }),
        rej(RejectReason::UnknownAccount)
    );
    assert_eq!(s.run(hold(8, 100)).len(), 2);
    // two pending: full (checked before the balance)
    assert_eq!(
        s.run(hold(9, 1_000_000)),
        rej(RejectReason::CapacityExceeded)
    );
    assert_eq!(
        s.run(Command::WithdrawRelease { withdrawal: 7 }),
        vec![
            Event::WithdrawalReleased { withdrawal: 7 },
            bal(1, BASE, 900, 100)
        ]
    );
    assert_eq!(
        s.run(Command::WithdrawRelease { withdrawal: 7 }),
        rej(RejectReason::UnknownWithdrawal)
    );
    assert_eq!(
        s.run(Command::WithdrawFinalize { withdrawal: 8 }),
        vec![
            Event::WithdrawalFinalized { withdrawal: 8 },
            bal(1, BASE, 900, 0)
        ]
    );
    assert_eq!(
        s.run(Command::WithdrawFinalize { withdrawal: 8 }),
        rej(RejectReason::UnknownWithdrawal)
    );
    assert_eq!(s.ex.supply(BASE), 900);
    // deposits: supply overflow
    assert_eq!(
        s.run(Command::Deposit {
            account: 2,
            asset: BASE,
            amount: u64::MAX - 900
        }),
        vec![bal(2, BASE, u64::MAX - 900, 0)]
    );
    assert_eq!(
        s.run(Command::Deposit {
            account: 2,
            asset: BASE,
            amount: 1
        }),
        rej(RejectReason::BalanceOverflow)
    );
    assert_eq!(
        s.run(Command::Deposit {
            account: 2,
            asset: QUOTE,
            amount: 0
        }),
        rej(RejectReason::InvalidAmount)
    );
    assert_eq!(
        s.run(Command::Deposit {
            account: 2,
            asset: 2,
            amount: 1
        }),
        rej(RejectReason::UnknownAsset)
    );
    assert_eq!(
        s.run(Command::Deposit {
            account: 8,
            asset: 0,
            amount: 1
        }),
        rej(RejectReason::UnknownAccount)
    );
}

#[test]
fn admin_commands() {
    let mut s = Sim::with_config(EngineConfig {
        max_assets: 3,
        max_markets: 1,
        ..small_config()
    });
    let asset = |sym: &str, decimals| {
        Command::AddAsset(Box::new(AssetSpec {
            symbol: sym.into(),
            decimals,
            class: AssetClass::Rwa,
        }))
    };
    let rej = |reason| vec![Event::CommandRejected { reason }];
    assert_eq!(
        s.run(asset("BASE", 2)),
        rej(RejectReason::InvalidSpec(SpecError::DuplicateSymbol))
    );
    assert_eq!(
        s.run(asset("bad", 2)),
        rej(RejectReason::InvalidSpec(SpecError::BadSymbol))
    );
    assert_eq!(
        s.run(asset("T", 19)),
        rej(RejectReason::InvalidSpec(SpecError::BadDecimals))
    );
    assert_eq!(s.run(asset("T", 18)), vec![Event::AssetAdded { asset: 2 }]);
    assert_eq!(s.run(asset("U", 18)), rej(RejectReason::CapacityExceeded));
    let mut bad = spec("BQ", ZERO_FEES);
    bad.lot_size = 1; // 1 * 1 / 100 is not whole
    assert_eq!(
        s.run(Command::AddMarket(Box::new(bad))),
        rej(RejectReason::InvalidSpec(SpecError::TickLotNotWhole))
    );
    // a market symbol may equal an asset symbol
    assert_eq!(
        s.run(Command::AddMarket(Box::new(spec("BASE", ZERO_FEES)))),
        vec![Event::MarketAdded { market: 0 }]
    );
    assert_eq!(
        s.run(Command::AddMarket(Box::new(spec("BQ", ZERO_FEES)))),
        rej(RejectReason::CapacityExceeded)
    );
    assert_eq!(
        s.run(Command::SetMarketStatus {
            market: 1,
            status: MarketStatus::Trading,
            cancel_open: true
        }),
        rej(RejectReason::UnknownMarket)
    );
    assert_eq!(
        s.run(Command::SetReferencePrice {
            market: 1,
            price: None
        }),
        rej(RejectReason::UnknownMarket)
    );
    assert_eq!(
        s.run(Command::RevokePermission {
            account: 2,
            permission: 63
        }),
        vec![Event::PermissionChanged {
            account: 2,
            permission: 63,
            granted: false
        }]
    );
    assert_eq!(
        s.run(Command::RevokePermission {
            account: 8,
            permission: 1
        }),
        rej(RejectReason::UnknownAccount)
    );
}

#[test]
fn halted_market_still_expires_gtd_and_refuses_cancels() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, QUOTE, 10_000);
    let gtd = PlaceOrder {
        tif: TimeInForce::Gtd { expire_ns: 2_000 },
        ..limit(1, Side::Buy, 10, 10)
    };
    s.place(gtd);
    s.run(Command::SetMarketStatus {
        market: 0,
        status: MarketStatus::Halted,
        cancel_open: false,
    });
    assert_eq!(
        s.run(Command::CancelOrder {
            account: 1,
            market: 0,
            target: OrderRef::Id(1)
        }),
        vec![cancel_rejected(1, 0, RejectReason::MarketHalted)]
    );
    s.ts = 2_000;
    assert_eq!(
        s.run(Command::Tick),
        vec![
            cancelled(1, 1, 0, 10, CancelReason::Expired),
            level(0, Side::Buy, 10, 0, 0, 2),
            bal(1, QUOTE, 10_000, 0),
        ]
    );
}

#[test]
fn fee_account_as_taker_gets_one_set_of_balance_events() {
    let mut s = Sim::one_market(FeeSchedule {
        maker_fee_bps: 5,
        taker_fee_bps: 10,
    });
    s.deposit(1, BASE, 100_000);
    s.deposit(0, QUOTE, 1_000_000);
    s.place(limit(1, Side::Sell, 1000, 500)); // 1: base 50000 locked
                                              // the fee account buys 500 lots: base 50000, quote 500000; taker fee 50 BASE (to itself),
                                              // maker fee floor(500000 * 5 / 1e4) = 250 QUOTE (to itself)
    let b = limit(0, Side::Buy, 1000, 500);
    assert_eq!(
        s.place(b),
        vec![
            accepted(2, &b),
            trade(1, 1000, 500, (1, 1), (2, 0), Side::Buy, (250, 50), 0),
            bal(1, BASE, 50_000, 0),
            bal(1, QUOTE, 499_750, 0),
            level(0, Side::Sell, 1000, 0, 0, 2),
            bal(0, BASE, 50_000, 0),
            bal(0, QUOTE, 500_250, 0),
        ]
    );
}

/// Reading 12 of `tests/reference/mod.rs`: a partly filled maker stays at the head of the
/// queue. Account 2 buys by quote amount; after 2 lots from account 1's order, 500 quote
/// buys no lot at 1000, so it stops there with `Ioc`, never reaching its own order behind.
#[test]
fn partial_fill_leaves_maker_at_head_stp_not_applied() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, BASE, 10_000);
    s.deposit(2, BASE, 10_000);
    s.deposit(2, QUOTE, 100_000);
    s.place(limit(1, Side::Sell, 1000, 5)); // 1
    s.place(limit(2, Side::Sell, 1000, 5)); // 2: account 2's own, behind order 1
    let buy = |stp| PlaceOrder {
        stp,
        ..market_order(2, Side::Buy, Quantity::Quote(2_500))
    };
    assert_eq!(
        s.place(buy(StpMode::ExpireTaker)),
        vec![
            accepted(3, &buy(StpMode::ExpireTaker)),
            trade(1, 1000, 2, (1, 1), (3, 2), Side::Buy, (0, 0), 3),
            bal(1, BASE, 9_500, 300),
            bal(1, QUOTE, 2_000, 0),
            level(0, Side::Sell, 1000, 8, 2, 3),
            cancelled(3, 2, 0, 500, CancelReason::Ioc),
            bal(2, BASE, 9_700, 500),
            bal(2, QUOTE, 98_000, 0),
        ]
    );
    assert_eq!(
        s.place(buy(StpMode::ExpireMaker)),
        vec![
            accepted(4, &buy(StpMode::ExpireMaker)),
            trade(2, 1000, 2, (1, 1), (4, 2), Side::Buy, (0, 0), 1),
            bal(1, BASE, 9_500, 100),
            bal(1, QUOTE, 4_000, 0),
            level(0, Side::Sell, 1000, 6, 2, 4),
            cancelled(4, 2, 0, 500, CancelReason::Ioc),
            bal(2, BASE, 9_900, 500),
            bal(2, QUOTE, 96_000, 0),
        ]
    );
    // account 2's own order was never touched
    assert_eq!(s.ex.order(2).unwrap().remaining, 5);
}

/// Reading 12: a market buy by base is limited by free quote, but a self-trade (STP `None`)
/// pays the quote straight back, so matching goes on with the same maker.
#[test]
fn self_trade_refund_lets_a_market_buy_go_on() {
    let mut s = Sim::one_market(ZERO_FEES);
    s.deposit(1, BASE, 10_000);
    s.deposit(1, QUOTE, 3_000);
    s.place(limit(1, Side::Sell, 1000, 5)); // 1
    let m = market_order(1, Side::Buy, Quantity::Base(5));
    assert_eq!(
        s.place(m),
        vec![
            accepted(2, &m),
            // free quote 3000 buys 3 lots ...
            trade(1, 1000, 3, (1, 1), (2, 1), Side::Buy, (0, 0), 2),
            bal(1, BASE, 9_800, 200),
            bal(1, QUOTE, 3_000, 0),
            // ... and is paid back by the maker side, so 2 more
            trade(2, 1000, 2, (1, 1), (2, 1), Side::Buy, (0, 0), 0),
            bal(1, BASE, 10_000, 0),
            bal(1, QUOTE, 3_000, 0),
            level(0, Side::Sell, 1000, 0, 0, 2),
            // No closing BalanceChanged: the maker side already said the final state.
        ]
    );
}
