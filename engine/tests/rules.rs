//! Rule-by-rule tests of the real `Exchange` against `docs/engine.md`: one focused test per
//! rule, asserting exact event lists and balances. Every command goes through
//! `Harness::run`, which checks the engine's invariants after it.
//!
//! Market 0 (`BTCUSD`) in most tests: base BTC (asset 0, 2 decimals), quote USD (asset 1),
//! tick 10, lot 100 minor units, so one tick × one lot = `PER` = 10 quote minor units: `q`
//! lots at `p` ticks are `q * 100` base and `p * q * 10` quote. Accounts A, B, C start with
//! `DB` base and `DQ` quote; the fee account is 0.

#![forbid(unsafe_code)]

use fulgur_engine::spec::SpecError;
use fulgur_engine::Side::{Buy, Sell};
use fulgur_engine::*;

const BASE: AssetId = 0;
const QUOTE: AssetId = 1;
const M: MarketId = 0;
const FEE: AccountId = 0;
const A: AccountId = 1;
const B: AccountId = 2;
const C: AccountId = 3;
/// An account that starts with nothing.
const D: AccountId = 4;
/// First account id past `max_accounts`.
const NO_ACCOUNT: AccountId = 16;
/// Base deposit of A, B and C (10_000 lots).
const DB: u64 = 1_000_000;
/// Quote deposit of A, B and C.
const DQ: u64 = 10_000_000;
/// Base minor units per lot.
const LOT: u64 = 100;
/// Quote minor units per tick × lot: tick 10 × lot 100 / 10^2.
const PER: u64 = 10;
/// Time of every command unless a test says otherwise.
const NOW: u64 = 1_000;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn cfg() -> EngineConfig {
    EngineConfig {
        max_accounts: 16,
        max_assets: 8,
        max_markets: 8,
        max_orders: 256,
        max_orders_per_market: 256,
        max_levels_per_side: 64,
        max_gtd_orders: 64,
        max_pending_withdrawals: 16,
        max_pending_deposits: 16,
        fee_account: FEE,
    }
}

struct Harness {
    ex: Exchange,
    seq: u64,
}

impl Harness {
    fn new(cfg: EngineConfig) -> Self {
        let ex = Exchange::new(cfg);
        ex.check_invariants().unwrap();
        Harness { ex, seq: 0 }
    }

    /// Applies a command at `NOW`, checks the invariants, returns the events.
    fn run(&mut self, command: Command) -> Vec<Event> {
        self.run_at(NOW, command)
    }

    /// Applies a command at `ts_ns`, checks the invariants, returns the events.
    fn run_at(&mut self, ts_ns: u64, command: Command) -> Vec<Event> {
        self.seq += 1;
        let mut out = Vec::new();
        self.ex.apply(
            &Sequenced {
                seq: self.seq,
                ts_ns,
                command,
            },
            &mut out,
        );
        if let Err(e) = self.ex.check_invariants() {
            panic!(
                "invariant broken after command #{}: {e}\nevents: {out:?}",
                self.seq
            );
        }
        out
    }

    fn place(&mut self, p: PlaceOrder) -> Vec<Event> {
        self.run(Command::PlaceOrder(p))
    }

    /// Places an order that must be accepted; returns its id.
    fn order(&mut self, p: PlaceOrder) -> OrderId {
        let ev = self.place(p);
        match ev.first() {
            Some(Event::OrderAccepted { order_id, .. }) => *order_id,
            _ => panic!("order not accepted: {p:?}\nevents: {ev:?}"),
        }
    }

    /// Runs a command that must be refused with one rejection event and change nothing;
    /// returns the reason.
    fn reject(&mut self, command: Command) -> RejectReason {
        let before = self.ex.state_hash();
        let ev = self.run(command);
        assert_eq!(
            self.ex.state_hash(),
            before,
            "a rejected command changed the state"
        );
        reason_of(&ev)
    }

    fn reject_place(&mut self, p: PlaceOrder) -> RejectReason {
        let before = self.ex.state_hash();
        let ev = self.place(p);
        assert_eq!(ev, vec![rejected(&p, reason_of(&ev))]);
        assert_eq!(
            self.ex.state_hash(),
            before,
            "a rejected order changed the state"
        );
        reason_of(&ev)
    }

    fn deposit(&mut self, account: AccountId, asset: AssetId, amount: u64) {
        let (free, locked) = self.ex.balance(account, asset);
        let ev = self.run(Command::Deposit {
            account,
            asset,
            amount,
        });
        assert_eq!(ev, vec![bal(account, asset, free + amount, locked)]);
    }

    fn add_market(&mut self, spec: MarketSpec) -> MarketId {
        let ev = self.run(Command::AddMarket(Box::new(spec)));
        match ev[..] {
            [Event::MarketAdded { market }] => market,
            _ => panic!("market not added: {ev:?}"),
        }
    }

    fn set_status(&mut self, market: MarketId, status: MarketStatus) {
        let ev = self.run(Command::SetMarketStatus {
            market,
            status,
            cancel_open: false,
        });
        assert_eq!(ev, vec![Event::MarketStatusChanged { market, status }]);
    }

    fn set_reference(&mut self, market: MarketId, price: Option<u64>) {
        let ev = self.run(Command::SetReferencePrice { market, price });
        assert_eq!(ev, vec![Event::ReferencePriceSet { market, price }]);
    }

    fn bal(&self, account: AccountId, asset: AssetId) -> (u64, u64) {
        self.ex.balance(account, asset)
    }
}

fn reason_of(events: &[Event]) -> RejectReason {
    match events {
        [Event::OrderRejected { reason, .. }]
        | [Event::CancelRejected { reason, .. }]
        | [Event::CommandRejected { reason }] => *reason,
        _ => panic!("expected exactly one rejection, got {events:?}"),
    }
}

fn add_asset_cmd(symbol: &str, decimals: u8) -> Command {
    Command::AddAsset(Box::new(AssetSpec {
        symbol: symbol.into(),
        decimals,
        class: AssetClass::Crypto,
    }))
}

/// A permissive market on BTC/USD with `PER` = 10 and no fees.
fn spec(symbol: &str) -> MarketSpec {
    MarketSpec {
        symbol: symbol.into(),
        base: BASE,
        quote: QUOTE,
        tick_size: 10,
        lot_size: LOT,
        min_price_ticks: 1,
        max_price_ticks: 1_000_000,
        min_qty_lots: 1,
        max_qty_lots: 1_000_000,
        min_notional: 0,
        max_notional: u64::MAX,
        price_band_bps: 0,
        max_open_orders: 100,
        status: MarketStatus::Trading,
        fees: FeeSchedule {
            maker_fee_bps: 0,
            taker_fee_bps: 0,
        },
        required_permission: None,
    }
}

/// Assets BTC (0) and USD (1), both with 2 decimals; no market, no balance.
fn bare(cfg: EngineConfig) -> Harness {
    let mut h = Harness::new(cfg);
    assert_eq!(
        h.run(add_asset_cmd("BTC", 2)),
        vec![Event::AssetAdded { asset: BASE }]
    );
    assert_eq!(
        h.run(add_asset_cmd("USD", 2)),
        vec![Event::AssetAdded { asset: QUOTE }]
    );
    h
}

/// `bare`, market 0 from `spec`, and A, B, C funded with `DB` base and `DQ` quote.
fn setup_with(cfg: EngineConfig, spec: MarketSpec) -> Harness {
    let mut h = bare(cfg);
    let per = spec.tick_size * spec.lot_size / 100;
    assert_eq!(h.add_market(spec), M);
    assert_eq!(h.ex.quote_per_tick_lot(M), Some(per));
    for a in [A, B, C] {
        h.deposit(a, BASE, DB);
        h.deposit(a, QUOTE, DQ);
    }
    h
}

fn setup() -> Harness {
    setup_with(cfg(), spec("BTCUSD"))
}

// ----- commands -----

fn limit(account: AccountId, side: Side, price: u64, qty: u64) -> PlaceOrder {
    PlaceOrder {
        account,
        market: M,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        quantity: Quantity::Base(qty),
        price: Some(price),
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    }
}

fn limit_in(market: MarketId, account: AccountId, side: Side, price: u64, qty: u64) -> PlaceOrder {
    PlaceOrder {
        market,
        ..limit(account, side, price, qty)
    }
}

fn ioc(p: PlaceOrder) -> PlaceOrder {
    PlaceOrder {
        tif: TimeInForce::Ioc,
        ..p
    }
}

fn fok(p: PlaceOrder) -> PlaceOrder {
    PlaceOrder {
        tif: TimeInForce::Fok,
        ..p
    }
}

fn gtd(p: PlaceOrder, expire_ns: u64) -> PlaceOrder {
    PlaceOrder {
        tif: TimeInForce::Gtd { expire_ns },
        ..p
    }
}

fn maker(p: PlaceOrder) -> PlaceOrder {
    PlaceOrder {
        order_type: OrderType::LimitMaker,
        ..p
    }
}

fn stp(p: PlaceOrder, stp: StpMode) -> PlaceOrder {
    PlaceOrder { stp, ..p }
}

fn with_cid(p: PlaceOrder, id: &str) -> PlaceOrder {
    PlaceOrder {
        client_order_id: cid(id),
        ..p
    }
}

fn market(account: AccountId, side: Side, quantity: Quantity) -> PlaceOrder {
    PlaceOrder {
        account,
        market: M,
        side,
        order_type: OrderType::Market,
        tif: TimeInForce::Ioc,
        quantity,
        price: None,
        client_order_id: ClientOrderId::NONE,
        stp: StpMode::None,
    }
}

fn cid(s: &str) -> ClientOrderId {
    ClientOrderId::new(s).unwrap()
}

/// A client order id with a forbidden character, as a raw source could deliver it.
fn bad_cid() -> ClientOrderId {
    let mut raw = [0u8; CLIENT_ORDER_ID_MAX_LEN];
    raw[0] = b'a';
    raw[1] = b' ';
    let c = ClientOrderId::from_raw(2, raw);
    assert!(!c.is_valid());
    c
}

fn cancel(account: AccountId, id: OrderId) -> Command {
    Command::CancelOrder {
        account,
        market: M,
        target: OrderRef::Id(id),
    }
}

fn amend(account: AccountId, id: OrderId, new_qty: u64, new_price: Option<u64>) -> Command {
    Command::AmendOrder {
        account,
        market: M,
        target: OrderRef::Id(id),
        new_qty,
        new_price,
    }
}

fn tick() -> Command {
    Command::Tick
}

// ----- events -----

fn accepted(order_id: OrderId, p: &PlaceOrder) -> Event {
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

fn cancel_rej(account: AccountId, market: MarketId, reason: RejectReason) -> Event {
    Event::CancelRejected {
        account,
        market,
        reason,
    }
}

fn cmd_rej(reason: RejectReason) -> Event {
    Event::CommandRejected { reason }
}

fn bal(account: AccountId, asset: AssetId, free: u64, locked: u64) -> Event {
    Event::BalanceChanged {
        account,
        asset,
        free,
        locked,
    }
}

fn level_in(market: MarketId, side: Side, price: u64, total: u64, count: u32, uid: u64) -> Event {
    Event::BookLevel {
        market,
        side,
        price,
        total_qty: total,
        order_count: count,
        update_id: uid,
    }
}

fn level(side: Side, price: u64, total: u64, count: u32, uid: u64) -> Event {
    level_in(M, side, price, total, count, uid)
}

fn cancelled_in(
    market: MarketId,
    order_id: OrderId,
    account: AccountId,
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

fn cancelled(order_id: OrderId, account: AccountId, remaining: u64, reason: CancelReason) -> Event {
    cancelled_in(M, order_id, account, remaining, reason)
}

/// A fee-less trade in market 0.
fn trade(
    trade_id: TradeId,
    price: u64,
    qty: u64,
    (maker_order, maker_account): (OrderId, AccountId),
    (taker_order, taker_account, taker_side): (OrderId, AccountId, Side),
    maker_remaining: u64,
) -> Event {
    Event::Trade {
        trade_id,
        market: M,
        price,
        qty,
        maker_order,
        maker_account,
        taker_order,
        taker_account,
        taker_side,
        maker_fee: 0,
        taker_fee: 0,
        maker_remaining,
    }
}

/// `trade` with fees.
fn with_fees(e: Event, maker: i64, taker: u64) -> Event {
    match e {
        Event::Trade {
            trade_id,
            market,
            price,
            qty,
            maker_order,
            maker_account,
            taker_order,
            taker_account,
            taker_side,
            maker_remaining,
            ..
        } => Event::Trade {
            trade_id,
            market,
            price,
            qty,
            maker_order,
            maker_account,
            taker_order,
            taker_account,
            taker_side,
            maker_fee: maker,
            taker_fee: taker,
            maker_remaining,
        },
        other => panic!("not a trade: {other:?}"),
    }
}

fn amended(
    order_id: OrderId,
    account: AccountId,
    price: u64,
    qty: u64,
    remaining: u64,
    priority_kept: bool,
) -> Event {
    Event::OrderAmended {
        order_id,
        account,
        market: M,
        price,
        qty,
        remaining,
        priority_kept,
    }
}

/// Quote amount of `q` lots at `p` ticks in a `PER` market.
fn q(p: u64, lots: u64) -> u64 {
    p * lots * PER
}

/// Base amount of `lots` lots.
fn b(lots: u64) -> u64 {
    lots * LOT
}

// ---------------------------------------------------------------------------------------
// Ids and counters
// ---------------------------------------------------------------------------------------

#[test]
fn order_and_trade_ids_start_at_one_and_a_rejected_order_consumes_no_id() {
    let mut h = setup();
    let bad = limit(A, Buy, 0, 1);
    assert_eq!(
        h.place(bad),
        vec![rejected(&bad, RejectReason::PriceFilter)]
    );
    let sell = limit(B, Sell, 100, 2);
    assert_eq!(
        h.place(sell),
        vec![
            accepted(1, &sell),
            level(Sell, 100, 2, 1, 1),
            bal(B, BASE, DB - b(2), b(2)),
        ]
    );
    let bad = limit(A, Buy, 100, 0);
    assert_eq!(h.place(bad), vec![rejected(&bad, RejectReason::LotSize)]);
    let buy = limit(A, Buy, 100, 1);
    assert_eq!(
        h.place(buy),
        vec![
            accepted(2, &buy),
            trade(1, 100, 1, (1, B), (2, A, Buy), 1),
            bal(B, BASE, DB - b(2), b(1)),
            bal(B, QUOTE, DQ + q(100, 1), 0),
            level(Sell, 100, 1, 1, 2),
            bal(A, BASE, DB + b(1), 0),
            bal(A, QUOTE, DQ - q(100, 1), 0),
        ]
    );
    let bad = market(D, Buy, Quantity::Base(1)); // D has no quote
    assert_eq!(
        h.place(bad),
        vec![rejected(&bad, RejectReason::InsufficientBalance)]
    );
    let buy = ioc(limit(C, Buy, 100, 1));
    assert_eq!(
        h.place(buy),
        vec![
            accepted(3, &buy),
            trade(2, 100, 1, (1, B), (3, C, Buy), 0),
            bal(B, BASE, DB - b(2), 0),
            bal(B, QUOTE, DQ + q(100, 2), 0),
            level(Sell, 100, 0, 0, 3),
            bal(C, BASE, DB + b(1), 0),
            bal(C, QUOTE, DQ - q(100, 1), 0),
        ]
    );
}

fn book_updates(events: &[Event], market: MarketId) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::BookLevel {
                market: m,
                update_id,
                ..
            } if *m == market => Some(*update_id),
            _ => None,
        })
        .collect()
}

#[test]
fn book_level_update_ids_are_contiguous_per_market() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    let mut all = Vec::new();
    let cmds = [
        Command::PlaceOrder(limit(A, Buy, 99, 5)),
        Command::PlaceOrder(limit_in(m1, A, Buy, 99, 5)),
        Command::PlaceOrder(limit(B, Sell, 101, 5)),
        Command::PlaceOrder(limit(B, Sell, 102, 5)),
        Command::PlaceOrder(limit_in(m1, B, Sell, 100, 2)),
        Command::PlaceOrder(limit(C, Buy, 102, 12)), // two levels traded, rest at 102
        amend(A, 1, 3, None),
        amend(A, 1, 3, Some(98)),
        cancel(C, 6),
        Command::CancelAll {
            account: A,
            market: None,
        },
        Command::PlaceOrder(limit(A, Buy, 50, 1)),
        Command::PlaceOrder(gtd(limit(A, Buy, 51, 1), NOW + 1)),
        Command::SetMarketStatus {
            market: M,
            status: MarketStatus::Halted,
            cancel_open: true,
        },
        Command::PlaceOrder(limit_in(m1, C, Sell, 100, 1)),
    ];
    for c in cmds {
        let ev = h.run(c);
        all.extend(ev);
    }
    let u0 = book_updates(&all, M);
    let u1 = book_updates(&all, m1);
    assert!(u0.len() > 10 && u1.len() >= 4, "{all:?}");
    assert_eq!(u0, (1..=u0.len() as u64).collect::<Vec<_>>());
    assert_eq!(u1, (1..=u1.len() as u64).collect::<Vec<_>>());
    assert_eq!(h.ex.update_id(M), u0.len() as u64);
    assert_eq!(h.ex.update_id(m1), u1.len() as u64);
}

// ---------------------------------------------------------------------------------------
// Order types and time in force
// ---------------------------------------------------------------------------------------

#[test]
fn limit_gtc_rests_and_locks_quote_or_base() {
    let mut h = setup();
    let buy = limit(A, Buy, 100, 5);
    assert_eq!(
        h.place(buy),
        vec![
            accepted(1, &buy),
            level(Buy, 100, 5, 1, 1),
            bal(A, QUOTE, DQ - q(100, 5), q(100, 5)),
        ]
    );
    let buy2 = limit(B, Buy, 100, 2);
    assert_eq!(
        h.place(buy2),
        vec![
            accepted(2, &buy2),
            level(Buy, 100, 7, 2, 2),
            bal(B, QUOTE, DQ - q(100, 2), q(100, 2)),
        ]
    );
    let sell = limit(A, Sell, 101, 3);
    assert_eq!(
        h.place(sell),
        vec![
            accepted(3, &sell),
            level(Sell, 101, 3, 1, 3),
            bal(A, BASE, DB - b(3), b(3)),
        ]
    );
    assert_eq!(h.ex.best(M, Buy), Some((100, 7)));
    assert_eq!(h.ex.best(M, Sell), Some((101, 3)));
    let o = h.ex.order(1).unwrap();
    assert_eq!(
        (o.price, o.qty, o.remaining, o.tif),
        (100, 5, 5, TimeInForce::Gtc)
    );
}

#[test]
fn limit_crossing_fills_at_maker_price_then_rests() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    let buy = limit(A, Buy, 100, 8);
    assert_eq!(
        h.place(buy),
        vec![
            accepted(2, &buy),
            trade(1, 100, 5, (1, B), (2, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 2),
            level(Buy, 100, 3, 1, 3),
            bal(A, BASE, DB + b(5), 0),
            bal(A, QUOTE, DQ - q(100, 8), q(100, 3)),
        ]
    );
    assert_eq!(h.ex.last_trade_price(M), Some(100));
    // A sell walks the bid: best price first.
    h.order(limit(C, Buy, 99, 2));
    let sell = limit(B, Sell, 99, 4);
    assert_eq!(
        h.place(sell),
        vec![
            accepted(4, &sell),
            trade(2, 100, 3, (2, A), (4, B, Sell), 0),
            bal(A, BASE, DB + b(8), 0),
            bal(A, QUOTE, DQ - q(100, 8), 0),
            level(Buy, 100, 0, 0, 5),
            trade(3, 99, 1, (3, C), (4, B, Sell), 1),
            bal(C, BASE, DB + b(1), 0),
            bal(C, QUOTE, DQ - q(99, 2), q(99, 1)),
            level(Buy, 99, 1, 1, 6),
            bal(B, BASE, DB - b(9), 0),
            bal(B, QUOTE, DQ + q(100, 8) + q(99, 1), 0),
        ]
    );
}

#[test]
fn ioc_remainder_is_cancelled_with_reason_ioc() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    let buy = ioc(limit(A, Buy, 100, 8));
    assert_eq!(
        h.place(buy),
        vec![
            accepted(2, &buy),
            trade(1, 100, 5, (1, B), (2, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 2),
            cancelled(2, A, 3, CancelReason::Ioc),
            bal(A, BASE, DB + b(5), 0),
            bal(A, QUOTE, DQ - q(100, 5), 0),
        ]
    );
    // Nothing to match: the whole order is cancelled, balances end where they started.
    let sell = ioc(limit(A, Sell, 100, 4));
    assert_eq!(
        h.place(sell),
        vec![accepted(3, &sell), cancelled(3, A, 4, CancelReason::Ioc)]
    );
    assert_eq!(h.ex.resting_orders(), 0);
}

#[test]
fn fok_fills_fully_across_levels() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    h.order(limit(B, Sell, 101, 5));
    let buy = fok(limit(A, Buy, 101, 8));
    assert_eq!(
        h.place(buy),
        vec![
            accepted(3, &buy),
            trade(1, 100, 5, (1, B), (3, A, Buy), 0),
            bal(B, BASE, DB - b(10), b(5)),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 3),
            trade(2, 101, 3, (2, B), (3, A, Buy), 2),
            bal(B, BASE, DB - b(10), b(2)),
            bal(B, QUOTE, DQ + q(100, 5) + q(101, 3), 0),
            level(Sell, 101, 2, 1, 4),
            bal(A, BASE, DB + b(8), 0),
            bal(A, QUOTE, DQ - q(100, 5) - q(101, 3), 0),
        ]
    );
}

#[test]
fn fok_that_cannot_fill_is_cancelled_and_nothing_trades() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    h.order(limit(B, Sell, 102, 5));
    let hash = h.ex.state_hash();
    // 10 lots exist but only 5 at an acceptable price.
    let buy = fok(limit(A, Buy, 101, 8));
    assert_eq!(
        h.place(buy),
        vec![accepted(3, &buy), cancelled(3, A, 8, CancelReason::Fok)]
    );
    assert_eq!(h.bal(A, QUOTE), (DQ, 0));
    assert_eq!(h.ex.depth(M, Sell, 5), vec![(100, 5, 1), (102, 5, 1)]);
    assert_eq!(h.ex.last_trade_price(M), None);
    assert_ne!(h.ex.state_hash(), hash, "the order id was consumed");
    // The next order gets id 4 and trade id 1: the FOK traded nothing.
    let buy = ioc(limit(A, Buy, 100, 1));
    let ev = h.place(buy);
    assert_eq!(
        ev[..2],
        [accepted(4, &buy), trade(1, 100, 1, (1, B), (4, A, Buy), 4)]
    );
}

#[test]
fn fok_walk_skips_own_orders_for_expire_maker_and_stops_for_expire_taker() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5)); // 1: A's own, first in queue
    h.order(limit(B, Sell, 100, 3)); // 2
                                     // ExpireMaker: A's own 5 lots do not count; B's 3 < 5.
    let p = stp(fok(limit(A, Buy, 100, 5)), StpMode::ExpireMaker);
    assert_eq!(
        h.place(p),
        vec![accepted(3, &p), cancelled(3, A, 5, CancelReason::Fok)]
    );
    // ExpireTaker: the walk ends at A's own order, before B's 3 lots.
    let p = stp(fok(limit(A, Buy, 100, 3)), StpMode::ExpireTaker);
    assert_eq!(
        h.place(p),
        vec![accepted(4, &p), cancelled(4, A, 3, CancelReason::Fok)]
    );
    // ExpireBoth ends the walk too.
    let p = stp(fok(limit(A, Buy, 100, 3)), StpMode::ExpireBoth);
    assert_eq!(
        h.place(p),
        vec![accepted(5, &p), cancelled(5, A, 3, CancelReason::Fok)]
    );
    // ExpireMaker with 3: fillable from B; matching then expires A's own maker.
    let p = stp(fok(limit(A, Buy, 100, 3)), StpMode::ExpireMaker);
    assert_eq!(
        h.place(p),
        vec![
            accepted(6, &p),
            cancelled(1, A, 5, CancelReason::SelfTradePrevention),
            bal(A, BASE, DB, 0),
            trade(1, 100, 3, (2, B), (6, A, Buy), 0),
            bal(B, BASE, DB - b(3), 0),
            bal(B, QUOTE, DQ + q(100, 3), 0),
            level(Sell, 100, 0, 0, 3),
            bal(A, BASE, DB + b(3), 0),
            bal(A, QUOTE, DQ - q(100, 3), 0),
        ]
    );
}

#[test]
fn fok_with_stp_none_counts_own_orders_and_self_trades() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    let p = fok(limit(A, Buy, 100, 5));
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            trade(1, 100, 5, (1, A), (2, A, Buy), 0),
            bal(A, BASE, DB, 0),
            bal(A, QUOTE, DQ, 0),
            level(Sell, 100, 0, 0, 2),
            // The self-trade's maker events already said the final state.
        ]
    );
}

#[test]
fn gtd_expires_on_tick_at_or_after_expiry_in_expiry_then_id_order() {
    let mut h = setup();
    h.order(gtd(limit(A, Buy, 100, 1), 2_000)); // 1
    h.order(gtd(limit(A, Buy, 99, 1), 1_500)); // 2
    h.order(gtd(limit(A, Buy, 98, 1), 2_000)); // 3
    h.order(gtd(limit(A, Buy, 97, 1), 1_800)); // 4
    h.order(limit(A, Buy, 96, 1)); // 5: GTC
    assert_eq!(
        h.ex.order(2).unwrap().tif,
        TimeInForce::Gtd { expire_ns: 1_500 }
    );
    let mut locked = q(100 + 99 + 98 + 97 + 96, 1);
    assert_eq!(h.bal(A, QUOTE), (DQ - locked, locked));
    assert_eq!(h.run_at(1_499, tick()), vec![]);
    locked -= q(99, 1);
    assert_eq!(
        h.run_at(1_500, tick()),
        vec![
            cancelled(2, A, 1, CancelReason::Expired),
            level(Buy, 99, 0, 0, 6),
            bal(A, QUOTE, DQ - locked, locked),
        ]
    );
    assert_eq!(h.run_at(1_500, tick()), vec![]);
    let mut expected = Vec::new();
    for (i, (id, price)) in [(4, 97), (1, 100), (3, 98)].into_iter().enumerate() {
        locked -= q(price, 1);
        expected.extend([
            cancelled(id, A, 1, CancelReason::Expired),
            level(Buy, price, 0, 0, 7 + i as u64),
            bal(A, QUOTE, DQ - locked, locked),
        ]);
    }
    assert_eq!(h.run_at(5_000, tick()), expected);
    assert_eq!(h.ex.open_orders(A).len(), 1);
    assert!(h.ex.order(5).is_some());
    assert_eq!(h.run_at(u64::MAX, tick()), vec![]);
}

#[test]
fn tick_orders_expiries_across_markets_by_expiry_then_order_id() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(gtd(limit_in(m1, A, Buy, 10, 1), 2_000)); // 1
    h.order(gtd(limit(B, Sell, 200, 1), 2_000)); // 2
    h.order(gtd(limit_in(m1, C, Sell, 20, 1), 1_500)); // 3
    h.order(gtd(maker(limit(A, Buy, 100, 1)), 1_500)); // 4
    assert_eq!(
        h.run_at(3_000, tick()),
        vec![
            cancelled_in(m1, 3, C, 1, CancelReason::Expired),
            level_in(m1, Sell, 20, 0, 0, 3),
            bal(C, BASE, DB, 0),
            cancelled(4, A, 1, CancelReason::Expired),
            level(Buy, 100, 0, 0, 3),
            bal(A, QUOTE, DQ - q(10, 1), q(10, 1)),
            cancelled_in(m1, 1, A, 1, CancelReason::Expired),
            level_in(m1, Buy, 10, 0, 0, 4),
            bal(A, QUOTE, DQ, 0),
            cancelled(2, B, 1, CancelReason::Expired),
            level(Sell, 200, 0, 0, 4),
            bal(B, BASE, DB, 0),
        ]
    );
}

#[test]
fn gtd_expiry_must_be_after_the_command_time() {
    let mut h = setup();
    let p = gtd(limit(A, Buy, 100, 1), NOW);
    assert_eq!(h.reject_place(p), RejectReason::InvalidExpiry);
    let p = gtd(limit(A, Buy, 100, 1), NOW - 1);
    assert_eq!(h.reject_place(p), RejectReason::InvalidExpiry);
    let p = gtd(limit(A, Buy, 100, 1), NOW + 1);
    assert_eq!(h.order(p), 1);
    // A partially filled GTD order still expires with its remaining lots.
    h.order(ioc(limit(B, Sell, 100, 1)));
    let p = gtd(limit(A, Sell, 200, 3), NOW + 10);
    h.order(p);
    h.order(ioc(limit(B, Buy, 200, 1)));
    assert_eq!(
        h.run_at(NOW + 10, tick()),
        vec![
            cancelled(3, A, 2, CancelReason::Expired),
            level(Sell, 200, 0, 0, 5),
            bal(A, BASE, DB, 0),
        ]
    );
}

#[test]
fn market_buy_base_walks_the_book() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    h.order(limit(B, Sell, 102, 5));
    let p = market(A, Buy, Quantity::Base(7));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 5, (1, B), (3, A, Buy), 0),
            bal(B, BASE, DB - b(10), b(5)),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 3),
            trade(2, 102, 2, (2, B), (3, A, Buy), 3),
            bal(B, BASE, DB - b(10), b(3)),
            bal(B, QUOTE, DQ + q(100, 5) + q(102, 2), 0),
            level(Sell, 102, 3, 1, 4),
            bal(A, BASE, DB + b(7), 0),
            bal(A, QUOTE, DQ - q(100, 5) - q(102, 2), 0),
        ]
    );
    // Empty opposite side: the whole order is cancelled.
    let p = market(A, Sell, Quantity::Base(2));
    assert_eq!(
        h.place(p),
        vec![accepted(4, &p), cancelled(4, A, 2, CancelReason::Ioc)]
    );
}

#[test]
fn market_buy_base_stops_when_free_quote_runs_out() {
    let mut h = setup();
    h.deposit(D, QUOTE, 6_000);
    h.order(limit(B, Sell, 100, 5));
    h.order(limit(B, Sell, 102, 5));
    let p = market(D, Buy, Quantity::Base(8));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 5, (1, B), (3, D, Buy), 0),
            bal(B, BASE, DB - b(10), b(5)),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 3),
            // 1_000 quote left < 1_020 for one lot at 102.
            cancelled(3, D, 3, CancelReason::Ioc),
            bal(D, BASE, b(5), 0),
            bal(D, QUOTE, 1_000, 0),
        ]
    );
}

#[test]
fn market_sell_base_walks_the_book() {
    let mut h = setup();
    h.order(limit(B, Buy, 100, 5));
    h.order(limit(B, Buy, 98, 5));
    let locked = q(100, 5) + q(98, 5);
    let p = market(A, Sell, Quantity::Base(7));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 5, (1, B), (3, A, Sell), 0),
            bal(B, BASE, DB + b(5), 0),
            bal(B, QUOTE, DQ - locked, q(98, 5)),
            level(Buy, 100, 0, 0, 3),
            trade(2, 98, 2, (2, B), (3, A, Sell), 3),
            bal(B, BASE, DB + b(7), 0),
            bal(B, QUOTE, DQ - locked, q(98, 3)),
            level(Buy, 98, 3, 1, 4),
            bal(A, BASE, DB - b(7), 0),
            bal(A, QUOTE, DQ + q(100, 5) + q(98, 2), 0),
        ]
    );
}

#[test]
fn market_buy_quote_spends_at_most_the_amount_and_reports_unspent_quote() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    h.order(limit(B, Sell, 102, 5));
    let p = market(A, Buy, Quantity::Quote(7_000));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 5, (1, B), (3, A, Buy), 0),
            bal(B, BASE, DB - b(10), b(5)),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 3),
            // 2_000 left buys one lot at 1_020.
            trade(2, 102, 1, (2, B), (3, A, Buy), 4),
            bal(B, BASE, DB - b(10), b(4)),
            bal(B, QUOTE, DQ + q(100, 5) + q(102, 1), 0),
            level(Sell, 102, 4, 1, 4),
            cancelled(3, A, 7_000 - 5_000 - 1_020, CancelReason::Ioc),
            bal(A, BASE, DB + b(6), 0),
            bal(A, QUOTE, DQ - 6_020, 0),
        ]
    );
    // Spent exactly: no cancel.
    let p = market(A, Buy, Quantity::Quote(q(102, 4)));
    let ev = h.place(p);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::OrderCancelled { .. })),
        "{ev:?}"
    );
    assert_eq!(h.ex.best(M, Sell), None);
}

#[test]
fn market_sell_quote_stops_at_the_amount() {
    let mut h = setup();
    h.order(limit(B, Buy, 100, 5));
    h.order(limit(B, Buy, 98, 5));
    let locked = q(100, 5) + q(98, 5);
    let p = market(A, Sell, Quantity::Quote(6_000));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 5, (1, B), (3, A, Sell), 0),
            bal(B, BASE, DB + b(5), 0),
            bal(B, QUOTE, DQ - locked, q(98, 5)),
            level(Buy, 100, 0, 0, 3),
            // 1_000 left sells one lot at 980.
            trade(2, 98, 1, (2, B), (3, A, Sell), 4),
            bal(B, BASE, DB + b(6), 0),
            bal(B, QUOTE, DQ - locked, q(98, 4)),
            level(Buy, 98, 4, 1, 4),
            cancelled(3, A, 20, CancelReason::Ioc),
            bal(A, BASE, DB - b(6), 0),
            bal(A, QUOTE, DQ + 5_980, 0),
        ]
    );
}

#[test]
fn market_sell_quote_is_limited_by_free_base() {
    let mut h = setup();
    h.deposit(D, BASE, b(3));
    h.order(limit(B, Buy, 100, 5));
    let p = market(D, Sell, Quantity::Quote(6_000));
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            trade(1, 100, 3, (1, B), (2, D, Sell), 2),
            bal(B, BASE, DB + b(3), 0),
            bal(B, QUOTE, DQ - q(100, 5), q(100, 2)),
            level(Buy, 100, 2, 1, 2),
            cancelled(2, D, 3_000, CancelReason::Ioc),
            bal(D, BASE, 0, 0),
            bal(D, QUOTE, 3_000, 0),
        ]
    );
}

#[test]
fn limit_maker_rests_or_is_rejected_when_it_would_cross() {
    let mut h = setup();
    h.order(limit(B, Sell, 101, 5));
    h.order(limit(B, Buy, 99, 5));
    let p = maker(limit(A, Buy, 100, 2));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            level(Buy, 100, 2, 1, 3),
            bal(A, QUOTE, DQ - q(100, 2), q(100, 2)),
        ]
    );
    assert_eq!(h.ex.order(3).unwrap().order_type, OrderType::LimitMaker);
    // Buy reaching the best ask, sell reaching the best bid.
    assert_eq!(
        h.reject_place(maker(limit(A, Buy, 101, 1))),
        RejectReason::PostOnlyWouldCross
    );
    assert_eq!(
        h.reject_place(maker(limit(A, Buy, 150, 1))),
        RejectReason::PostOnlyWouldCross
    );
    assert_eq!(
        h.reject_place(maker(limit(A, Sell, 100, 1))),
        RejectReason::PostOnlyWouldCross
    );
    // GTD is allowed, IOC and FOK are not.
    let p = gtd(maker(limit(A, Sell, 101, 1)), NOW + 5);
    assert_eq!(h.order(p), 4);
    assert_eq!(
        h.reject_place(ioc(maker(limit(A, Sell, 105, 1)))),
        RejectReason::InvalidTimeInForce
    );
    assert_eq!(
        h.reject_place(fok(maker(limit(A, Sell, 105, 1)))),
        RejectReason::InvalidTimeInForce
    );
    // A resting LimitMaker is an ordinary maker.
    let p = ioc(limit(C, Sell, 100, 2));
    let ev = h.place(p);
    assert_eq!(ev[1], trade(1, 100, 2, (3, A), (5, C, Sell), 0));
}

#[test]
fn order_shape_checks() {
    let mut h = setup();
    use RejectReason::{InvalidOrderParameters, InvalidTimeInForce};
    let with_price = PlaceOrder {
        price: Some(100),
        ..market(A, Buy, Quantity::Base(1))
    };
    assert_eq!(h.reject_place(with_price), InvalidOrderParameters);
    for tif in [
        TimeInForce::Gtc,
        TimeInForce::Fok,
        TimeInForce::Gtd { expire_ns: NOW + 1 },
    ] {
        let p = PlaceOrder {
            tif,
            ..market(A, Buy, Quantity::Base(1))
        };
        assert_eq!(h.reject_place(p), InvalidTimeInForce);
    }
    // Market + GTD in the past: the time in force is judged first.
    let p = PlaceOrder {
        tif: TimeInForce::Gtd { expire_ns: 1 },
        ..market(A, Buy, Quantity::Base(1))
    };
    assert_eq!(h.reject_place(p), InvalidTimeInForce);
    for ty in [OrderType::Limit, OrderType::LimitMaker] {
        let no_price = PlaceOrder {
            price: None,
            order_type: ty,
            ..limit(A, Buy, 100, 1)
        };
        assert_eq!(h.reject_place(no_price), InvalidOrderParameters);
        let by_quote = PlaceOrder {
            quantity: Quantity::Quote(1_000),
            order_type: ty,
            ..limit(A, Buy, 100, 1)
        };
        assert_eq!(h.reject_place(by_quote), InvalidOrderParameters);
    }
    // Missing price beats a past expiry.
    let p = PlaceOrder {
        price: None,
        ..gtd(limit(A, Buy, 100, 1), 1)
    };
    assert_eq!(h.reject_place(p), InvalidOrderParameters);
}

// ---------------------------------------------------------------------------------------
// Self-trade prevention
// ---------------------------------------------------------------------------------------

/// Sell queue at 100: B 5 (id 1), A 5 (id 2), C 5 (id 3); update ids 1..3.
fn stp_book() -> Harness {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    h.order(limit(A, Sell, 100, 5));
    h.order(limit(C, Sell, 100, 5));
    assert_eq!(h.bal(A, BASE), (DB - b(5), b(5)));
    h
}

#[test]
fn stp_none_self_trades() {
    let mut h = stp_book();
    let p = limit(A, Buy, 100, 12);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            trade(1, 100, 5, (1, B), (4, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            trade(2, 100, 5, (2, A), (4, A, Buy), 0),
            bal(A, BASE, DB + b(5), 0),
            bal(A, QUOTE, DQ - q(100, 7), q(100, 2)),
            trade(3, 100, 2, (3, C), (4, A, Buy), 3),
            bal(C, BASE, DB - b(5), b(3)),
            bal(C, QUOTE, DQ + q(100, 2), 0),
            level(Sell, 100, 3, 1, 4),
            bal(A, BASE, DB + b(7), 0),
            bal(A, QUOTE, DQ - q(100, 7), 0),
        ]
    );
}

#[test]
fn stp_expire_taker_stops_at_own_order() {
    let mut h = stp_book();
    let p = stp(limit(A, Buy, 100, 12), StpMode::ExpireTaker);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            trade(1, 100, 5, (1, B), (4, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 10, 2, 4),
            cancelled(4, A, 7, CancelReason::SelfTradePrevention),
            bal(A, BASE, DB, b(5)),
            bal(A, QUOTE, DQ - q(100, 5), 0),
        ]
    );
    assert_eq!(h.ex.depth(M, Sell, 5), vec![(100, 10, 2)]);
    assert_eq!(
        h.ex.best(M, Buy),
        None,
        "an STP-stopped GTC order does not rest"
    );
}

#[test]
fn stp_expire_maker_cancels_own_order_and_goes_on() {
    let mut h = stp_book();
    let p = stp(limit(A, Buy, 100, 12), StpMode::ExpireMaker);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            trade(1, 100, 5, (1, B), (4, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            cancelled(2, A, 5, CancelReason::SelfTradePrevention),
            bal(A, BASE, DB + b(5), 0),
            trade(2, 100, 5, (3, C), (4, A, Buy), 0),
            bal(C, BASE, DB - b(5), 0),
            bal(C, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 4),
            level(Buy, 100, 2, 1, 5),
            bal(A, BASE, DB + b(10), 0),
            bal(A, QUOTE, DQ - q(100, 12), q(100, 2)),
        ]
    );
}

#[test]
fn stp_expire_both_cancels_own_order_and_taker() {
    let mut h = stp_book();
    let p = stp(limit(A, Buy, 100, 12), StpMode::ExpireBoth);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            trade(1, 100, 5, (1, B), (4, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            cancelled(2, A, 5, CancelReason::SelfTradePrevention),
            bal(A, BASE, DB + b(5), 0),
            level(Sell, 100, 5, 1, 4),
            cancelled(4, A, 7, CancelReason::SelfTradePrevention),
            // Base was last reported by the maker's STP cancel: only quote closes.
            bal(A, QUOTE, DQ - q(100, 5), 0),
        ]
    );
    assert_eq!(h.ex.depth(M, Sell, 5), vec![(100, 5, 1)]);
}

#[test]
fn stp_applies_to_market_orders() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    let p = stp(market(A, Buy, Quantity::Base(3)), StpMode::ExpireTaker);
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            cancelled(2, A, 3, CancelReason::SelfTradePrevention),
        ]
    );
    // A quote order reports its unspent quote amount.
    let p = stp(market(A, Buy, Quantity::Quote(2_500)), StpMode::ExpireBoth);
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            cancelled(1, A, 5, CancelReason::SelfTradePrevention),
            bal(A, BASE, DB, 0),
            level(Sell, 100, 0, 0, 2),
            cancelled(3, A, 2_500, CancelReason::SelfTradePrevention),
            // Base was last reported by the maker's STP cancel: not repeated.
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Amend
// ---------------------------------------------------------------------------------------

#[test]
fn amend_quantity_down_keeps_priority() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    h.order(limit(B, Sell, 100, 5));
    assert_eq!(
        h.run(amend(A, 1, 3, None)),
        vec![
            amended(1, A, 100, 3, 3, true),
            level(Sell, 100, 8, 2, 3),
            bal(A, BASE, DB - b(3), b(3)),
        ]
    );
    // Same quantity, same price given: nothing moves.
    assert_eq!(
        h.run(amend(B, 2, 5, Some(100))),
        vec![amended(2, B, 100, 5, 5, true)]
    );
    // A is still first in the queue.
    let p = ioc(limit(C, Buy, 100, 3));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 3, (1, A), (3, C, Buy), 0),
            bal(A, BASE, DB - b(3), 0),
            bal(A, QUOTE, DQ + q(100, 3), 0),
            level(Sell, 100, 5, 1, 4),
            bal(C, BASE, DB + b(3), 0),
            bal(C, QUOTE, DQ - q(100, 3), 0),
        ]
    );
}

#[test]
fn amend_quantity_down_on_a_buy_releases_quote() {
    let mut h = setup();
    h.order(limit(A, Buy, 100, 5));
    assert_eq!(
        h.run(amend(A, 1, 2, Some(100))),
        vec![
            amended(1, A, 100, 2, 2, true),
            level(Buy, 100, 2, 1, 2),
            bal(A, QUOTE, DQ - q(100, 2), q(100, 2)),
        ]
    );
}

#[test]
fn amend_keeping_priority_is_not_filtered() {
    let mut s = spec("BTCUSD");
    s.min_qty_lots = 5;
    s.min_notional = 5_000;
    let mut h = setup_with(cfg(), s);
    h.order(limit(A, Sell, 100, 10));
    // 2 lots is below the lot size and 2_000 below the notional: allowed when shrinking.
    assert_eq!(
        h.run(amend(A, 1, 2, None)),
        vec![
            amended(1, A, 100, 2, 2, true),
            level(Sell, 100, 2, 1, 2),
            bal(A, BASE, DB - b(2), b(2)),
        ]
    );
    // Moving it is filtered.
    assert_eq!(h.reject(amend(A, 1, 2, Some(101))), RejectReason::LotSize);
    assert_eq!(h.reject(amend(A, 1, 5, Some(99))), RejectReason::Notional);
}

#[test]
fn amend_quantity_up_loses_priority() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    h.order(limit(B, Sell, 100, 5));
    assert_eq!(
        h.run(amend(A, 1, 6, None)),
        vec![
            amended(1, A, 100, 6, 6, false),
            level(Sell, 100, 5, 1, 3),
            level(Sell, 100, 11, 2, 4),
            bal(A, BASE, DB - b(6), b(6)),
        ]
    );
    let p = ioc(limit(C, Buy, 100, 3));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            trade(1, 100, 3, (2, B), (3, C, Buy), 2),
            bal(B, BASE, DB - b(5), b(2)),
            bal(B, QUOTE, DQ + q(100, 3), 0),
            level(Sell, 100, 8, 2, 5),
            bal(C, BASE, DB + b(3), 0),
            bal(C, QUOTE, DQ - q(100, 3), 0),
        ]
    );
}

#[test]
fn amend_price_change_loses_priority() {
    let mut h = setup();
    h.order(limit(A, Sell, 101, 5));
    h.order(limit(B, Sell, 100, 5));
    // The base lock does not change: no balance event.
    assert_eq!(
        h.run(amend(A, 1, 5, Some(100))),
        vec![
            amended(1, A, 100, 5, 5, false),
            level(Sell, 101, 0, 0, 3),
            level(Sell, 100, 10, 2, 4),
        ]
    );
    let p = ioc(limit(C, Buy, 100, 5));
    let ev = h.place(p);
    assert_eq!(ev[1], trade(1, 100, 5, (2, B), (3, C, Buy), 0));
    let o = h.ex.order(1).unwrap();
    assert_eq!((o.price, o.qty, o.remaining), (100, 5, 5));
}

#[test]
fn amend_to_a_crossing_price_trades() {
    let mut h = setup();
    h.order(limit(A, Buy, 99, 5));
    h.order(limit(B, Sell, 100, 3));
    assert_eq!(
        h.run(amend(A, 1, 5, Some(100))),
        vec![
            amended(1, A, 100, 5, 5, false),
            level(Buy, 99, 0, 0, 3),
            trade(1, 100, 3, (2, B), (1, A, Buy), 0),
            bal(B, BASE, DB - b(3), 0),
            bal(B, QUOTE, DQ + q(100, 3), 0),
            level(Sell, 100, 0, 0, 4),
            level(Buy, 100, 2, 1, 5),
            bal(A, BASE, DB + b(3), 0),
            bal(A, QUOTE, DQ - q(100, 5), q(100, 2)),
        ]
    );
    let o = h.ex.order(1).unwrap();
    assert_eq!((o.price, o.qty, o.remaining), (100, 5, 2));
    // 3 lots are filled: amending to 3 is refused.
    assert_eq!(h.reject(amend(A, 1, 3, None)), RejectReason::InvalidAmend);
}

#[test]
fn amend_that_fills_completely_removes_the_order() {
    let mut h = setup();
    h.order(limit(A, Sell, 101, 2));
    h.order(limit(B, Buy, 100, 5));
    let ev = h.run(amend(A, 1, 2, Some(100)));
    assert_eq!(
        ev,
        vec![
            amended(1, A, 100, 2, 2, false),
            level(Sell, 101, 0, 0, 3),
            trade(1, 100, 2, (2, B), (1, A, Sell), 3),
            bal(B, BASE, DB + b(2), 0),
            bal(B, QUOTE, DQ - q(100, 5), q(100, 3)),
            level(Buy, 100, 3, 1, 4),
            bal(A, BASE, DB - b(2), 0),
            bal(A, QUOTE, DQ + q(100, 2), 0),
        ]
    );
    assert_eq!(h.ex.order(1), None);
    assert_eq!(h.reject(cancel(A, 1)), RejectReason::UnknownOrder);
}

#[test]
fn amend_to_filled_or_less_is_rejected() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    h.order(ioc(limit(B, Buy, 100, 2)));
    assert_eq!(h.reject(amend(A, 1, 2, None)), RejectReason::InvalidAmend);
    assert_eq!(h.reject(amend(A, 1, 1, None)), RejectReason::InvalidAmend);
    assert_eq!(
        h.reject(amend(A, 1, 0, Some(120))),
        RejectReason::InvalidAmend
    );
    assert_eq!(
        h.run(amend(A, 1, 3, None)),
        vec![
            amended(1, A, 100, 3, 1, true),
            level(Sell, 100, 1, 1, 3),
            bal(A, BASE, DB - b(3), b(1)),
        ]
    );
    // Up again: new remaining = new qty − filled.
    assert_eq!(
        h.run(amend(A, 1, 6, None)),
        vec![
            amended(1, A, 100, 6, 4, false),
            level(Sell, 100, 0, 0, 4),
            level(Sell, 100, 4, 1, 5),
            bal(A, BASE, DB - b(6), b(4)),
        ]
    );
}

#[test]
fn amend_in_cancel_only_allows_quantity_down_only() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    h.set_status(M, MarketStatus::CancelOnly);
    assert_eq!(
        h.run(amend(A, 1, 3, None)),
        vec![
            amended(1, A, 100, 3, 3, true),
            level(Sell, 100, 3, 1, 2),
            bal(A, BASE, DB - b(3), b(3)),
        ]
    );
    assert_eq!(
        h.reject(amend(A, 1, 4, None)),
        RejectReason::MarketCancelOnly
    );
    assert_eq!(
        h.reject(amend(A, 1, 3, Some(101))),
        RejectReason::MarketCancelOnly
    );
    assert_eq!(
        h.reject(amend(A, 1, 2, Some(99))),
        RejectReason::MarketCancelOnly
    );
    // The filled check comes before the status check.
    h.set_status(M, MarketStatus::Trading);
    h.order(ioc(limit(B, Buy, 100, 1)));
    h.set_status(M, MarketStatus::CancelOnly);
    assert_eq!(
        h.reject(amend(A, 1, 1, Some(101))),
        RejectReason::InvalidAmend
    );
}

#[test]
fn amend_lookup_checks() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(with_cid(limit(A, Sell, 100, 5), "a-1"));
    assert_eq!(
        h.run(Command::AmendOrder {
            account: A,
            market: M,
            target: OrderRef::Client(cid("a-1")),
            new_qty: 4,
            new_price: None,
        }),
        vec![
            amended(1, A, 100, 4, 4, true),
            level(Sell, 100, 4, 1, 2),
            bal(A, BASE, DB - b(4), b(4)),
        ]
    );
    use RejectReason::*;
    let am = |account, market, target| Command::AmendOrder {
        account,
        market,
        target,
        new_qty: 3,
        new_price: None,
    };
    assert_eq!(h.reject(am(NO_ACCOUNT, 9, OrderRef::Id(1))), UnknownAccount);
    assert_eq!(h.reject(am(A, 9, OrderRef::Id(1))), UnknownMarket);
    assert_eq!(
        h.reject(am(A, M, OrderRef::Client(bad_cid()))),
        InvalidClientOrderId
    );
    assert_eq!(h.reject(am(B, M, OrderRef::Id(1))), UnknownOrder);
    assert_eq!(
        h.reject(am(B, M, OrderRef::Client(cid("a-1")))),
        UnknownOrder
    );
    assert_eq!(h.reject(am(A, m1, OrderRef::Id(1))), UnknownOrder);
    assert_eq!(h.reject(am(A, M, OrderRef::Id(2))), UnknownOrder);
    assert_eq!(
        h.reject(am(A, M, OrderRef::Client(ClientOrderId::NONE))),
        UnknownOrder
    );
    let ev = h.run(am(A, M, OrderRef::Id(1)));
    assert_eq!(ev[0], amended(1, A, 100, 3, 3, true));
    let ev = h.run(Command::AmendOrder {
        account: A,
        market: 9,
        target: OrderRef::Id(1),
        new_qty: 2,
        new_price: None,
    });
    assert_eq!(ev, vec![cancel_rej(A, 9, UnknownMarket)]);
}

#[test]
fn amend_cancel_replace_checks_in_order() {
    let config = EngineConfig {
        max_levels_per_side: 2,
        ..cfg()
    };
    let mut s = spec("BTCUSD");
    s.max_price_ticks = 1_000;
    s.max_qty_lots = 50;
    s.max_notional = 300_000;
    s.price_band_bps = 5_000;
    let mut h = setup_with(config, s);
    h.deposit(D, BASE, b(5));
    h.order(limit(A, Sell, 100, 5)); // 1
    h.order(maker(limit(A, Sell, 101, 5))); // 2
    h.order(limit(B, Buy, 90, 1)); // 3
    h.order(limit(D, Sell, 100, 5)); // 4
    use RejectReason::*;
    assert_eq!(h.reject(amend(A, 1, 5, Some(1_001))), PriceFilter);
    assert_eq!(h.reject(amend(A, 1, 51, None)), LotSize);
    // 900 × 40 × 10 = 360_000 > 300_000 (no band yet: no reference, no trade).
    assert_eq!(h.reject(amend(A, 1, 40, Some(900))), Notional);
    // Level 102 would be a third sell level.
    assert_eq!(h.reject(amend(A, 1, 5, Some(102))), CapacityExceeded);
    // D's 5 locked lots are all it has.
    assert_eq!(h.reject(amend(D, 4, 6, None)), InsufficientBalance);
    h.set_reference(M, Some(100)); // band 50..=150
    assert_eq!(h.reject(amend(A, 1, 5, Some(151))), PercentPrice);
    assert_eq!(h.reject(amend(B, 3, 1, Some(49))), PercentPrice);
    // Lot size wins over the band, the band over the notional.
    assert_eq!(h.reject(amend(A, 1, 51, Some(151))), LotSize);
    assert_eq!(h.reject(amend(A, 1, 40, Some(151))), PercentPrice);
    // Post-only: free a sell level first so the capacity check passes.
    h.run(cancel(A, 1));
    h.run(cancel(D, 4));
    assert_eq!(h.reject(amend(A, 2, 5, Some(90))), PostOnlyWouldCross);
    assert_eq!(h.reject(amend(A, 2, 5, Some(40))), PercentPrice);
    // A legal move of the LimitMaker.
    let ev = h.run(amend(A, 2, 5, Some(91)));
    assert_eq!(ev[0], amended(2, A, 91, 5, 5, false));
    assert_eq!(h.ex.order(2).unwrap().order_type, OrderType::LimitMaker);
}

#[test]
fn amended_order_keeps_its_stp_mode_and_gtd_expiry() {
    let mut h = setup();
    h.order(limit(A, Buy, 99, 5)); // 1
    let p = stp(gtd(limit(A, Sell, 101, 3), 5_000), StpMode::ExpireBoth);
    h.order(p); // 2
                // Moving 2 onto A's own bid: ExpireBoth cancels both.
    assert_eq!(
        h.run(amend(A, 2, 3, Some(99))),
        vec![
            amended(2, A, 99, 3, 3, false),
            level(Sell, 101, 0, 0, 3),
            cancelled(1, A, 5, CancelReason::SelfTradePrevention),
            bal(A, QUOTE, DQ, 0),
            level(Buy, 99, 0, 0, 4),
            cancelled(2, A, 3, CancelReason::SelfTradePrevention),
            bal(A, BASE, DB, 0),
            // Quote was last reported by the maker's STP cancel: not repeated.
        ]
    );
    // A GTD order moved by amend still expires at its time.
    h.order(gtd(limit(A, Sell, 110, 2), 6_000)); // 3
    h.run(amend(A, 3, 4, Some(111)));
    assert_eq!(
        h.run_at(6_000, tick()),
        vec![
            cancelled(3, A, 4, CancelReason::Expired),
            level(Sell, 111, 0, 0, 8),
            bal(A, BASE, DB, 0),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Market status
// ---------------------------------------------------------------------------------------

#[test]
fn halted_market_rejects_place_cancel_amend_and_cancel_all() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    h.set_status(M, MarketStatus::Halted);
    use RejectReason::MarketHalted;
    assert_eq!(h.reject_place(limit(B, Buy, 100, 1)), MarketHalted);
    assert_eq!(
        h.reject_place(market(B, Buy, Quantity::Base(1))),
        MarketHalted
    );
    assert_eq!(h.reject(cancel(A, 1)), MarketHalted);
    assert_eq!(h.reject(amend(A, 1, 3, None)), MarketHalted);
    assert_eq!(
        h.run(Command::CancelAll {
            account: A,
            market: Some(M)
        }),
        vec![cancel_rej(A, M, MarketHalted)]
    );
    // The status is judged before the client id and the order lookup.
    let bad = Command::CancelOrder {
        account: A,
        market: M,
        target: OrderRef::Client(bad_cid()),
    };
    assert_eq!(h.reject(bad), MarketHalted);
    assert_eq!(h.reject(cancel(A, 99)), MarketHalted);
    assert_eq!(h.reject(amend(B, 1, 0, None)), MarketHalted);
    // Other markets are not affected, and CancelAll over all markets skips this one.
    assert_eq!(
        h.run(Command::CancelAll {
            account: A,
            market: None
        }),
        vec![]
    );
    assert!(h.ex.order(1).is_some());
    h.set_status(M, MarketStatus::Trading);
    let p = limit(B, Buy, 100, 1);
    assert_eq!(h.place(p)[0], accepted(2, &p));
}

#[test]
fn cancel_only_market_rejects_place_but_allows_cancel() {
    let mut h = setup();
    h.order(limit(A, Sell, 100, 5));
    h.order(limit(A, Sell, 101, 5));
    h.set_status(M, MarketStatus::CancelOnly);
    assert_eq!(
        h.reject_place(limit(B, Buy, 90, 1)),
        RejectReason::MarketCancelOnly
    );
    assert_eq!(
        h.reject_place(market(B, Buy, Quantity::Quote(1_000))),
        RejectReason::MarketCancelOnly
    );
    assert_eq!(
        h.run(cancel(A, 1)),
        vec![
            cancelled(1, A, 5, CancelReason::User),
            level(Sell, 100, 0, 0, 3),
            bal(A, BASE, DB - b(5), b(5)),
        ]
    );
    assert_eq!(
        h.run(Command::CancelAll {
            account: A,
            market: Some(M)
        }),
        vec![
            cancelled(2, A, 5, CancelReason::MassCancel),
            level(Sell, 101, 0, 0, 4),
            bal(A, BASE, DB, 0),
        ]
    );
}

#[test]
fn set_market_status_with_cancel_open_cancels_every_order_with_reason_halted() {
    let mut h = setup();
    h.order(limit(A, Buy, 99, 1)); // 1
    h.order(limit(B, Sell, 101, 2)); // 2
    h.order(limit(A, Sell, 102, 3)); // 3
    h.order(limit(B, Buy, 99, 1)); // 4
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(limit_in(m1, A, Buy, 10, 1)); // 5, untouched
    let locked_m1 = q(10, 1);
    assert_eq!(
        h.run(Command::SetMarketStatus {
            market: M,
            status: MarketStatus::Halted,
            cancel_open: true,
        }),
        vec![
            Event::MarketStatusChanged {
                market: M,
                status: MarketStatus::Halted
            },
            cancelled(1, A, 1, CancelReason::Halted),
            level(Buy, 99, 1, 1, 5),
            bal(A, QUOTE, DQ - locked_m1, locked_m1),
            cancelled(2, B, 2, CancelReason::Halted),
            level(Sell, 101, 0, 0, 6),
            bal(B, BASE, DB, 0),
            cancelled(3, A, 3, CancelReason::Halted),
            level(Sell, 102, 0, 0, 7),
            bal(A, BASE, DB, 0),
            cancelled(4, B, 1, CancelReason::Halted),
            level(Buy, 99, 0, 0, 8),
            bal(B, QUOTE, DQ, 0),
        ]
    );
    assert_eq!(h.ex.resting_orders(), 1);
    assert_eq!(h.ex.market_spec(M).unwrap().status, MarketStatus::Halted);
    // cancel_open also works when switching to CancelOnly or Trading.
    h.order(limit_in(m1, B, Buy, 10, 1)); // 6
    let ev = h.run(Command::SetMarketStatus {
        market: m1,
        status: MarketStatus::Trading,
        cancel_open: true,
    });
    assert_eq!(
        ev,
        vec![
            Event::MarketStatusChanged {
                market: m1,
                status: MarketStatus::Trading
            },
            cancelled_in(m1, 5, A, 1, CancelReason::Halted),
            level_in(m1, Buy, 10, 1, 1, 3),
            bal(A, QUOTE, DQ, 0),
            cancelled_in(m1, 6, B, 1, CancelReason::Halted),
            level_in(m1, Buy, 10, 0, 0, 4),
            bal(B, QUOTE, DQ, 0),
        ]
    );
    assert_eq!(
        h.run(Command::SetMarketStatus {
            market: 9,
            status: MarketStatus::Trading,
            cancel_open: true,
        }),
        vec![cmd_rej(RejectReason::UnknownMarket)]
    );
}

#[test]
fn tick_expires_gtd_orders_in_a_halted_market() {
    let mut h = setup();
    h.order(gtd(limit(A, Buy, 100, 1), 2_000));
    h.set_status(M, MarketStatus::Halted);
    assert_eq!(h.run_at(1_999, tick()), vec![]);
    assert_eq!(
        h.run_at(2_000, tick()),
        vec![
            cancelled(1, A, 1, CancelReason::Expired),
            level(Buy, 100, 0, 0, 2),
            bal(A, QUOTE, DQ, 0),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------

#[test]
fn permissioned_market_requires_the_permission() {
    let mut s = spec("TBILLUSD");
    s.required_permission = Some(3);
    let mut h = setup_with(cfg(), s);
    let p = limit(A, Buy, 100, 1);
    assert_eq!(h.reject_place(p), RejectReason::NotPermitted);
    assert_eq!(
        h.run(Command::GrantPermission {
            account: A,
            permission: 3
        }),
        vec![Event::PermissionChanged {
            account: A,
            permission: 3,
            granted: true
        }]
    );
    assert_eq!(h.place(p)[0], accepted(1, &p));
    // Another bit is not enough.
    h.run(Command::GrantPermission {
        account: B,
        permission: 4,
    });
    assert_eq!(
        h.reject_place(limit(B, Sell, 101, 1)),
        RejectReason::NotPermitted
    );
    assert_eq!(
        h.run(Command::RevokePermission {
            account: A,
            permission: 3
        }),
        vec![Event::PermissionChanged {
            account: A,
            permission: 3,
            granted: false
        }]
    );
    assert_eq!(h.reject_place(p), RejectReason::NotPermitted);
    assert_eq!(
        h.reject_place(market(A, Sell, Quantity::Base(1))),
        RejectReason::NotPermitted
    );
    // Revoking does not cancel open orders; the owner can still cancel.
    assert!(h.ex.order(1).is_some());
    assert_eq!(
        h.run(cancel(A, 1))[0],
        cancelled(1, A, 1, CancelReason::User)
    );
    use RejectReason::{InvalidAmount, UnknownAccount};
    for granted in [true, false] {
        let cmd = |account, permission| {
            if granted {
                Command::GrantPermission {
                    account,
                    permission,
                }
            } else {
                Command::RevokePermission {
                    account,
                    permission,
                }
            }
        };
        assert_eq!(h.reject(cmd(A, 64)), InvalidAmount);
        assert_eq!(h.reject(cmd(A, 255)), InvalidAmount);
        assert_eq!(h.reject(cmd(NO_ACCOUNT, 3)), UnknownAccount);
        assert_eq!(h.reject(cmd(NO_ACCOUNT, 64)), UnknownAccount);
    }
    let ev = h.run(Command::GrantPermission {
        account: A,
        permission: 63,
    });
    assert_eq!(
        ev,
        vec![Event::PermissionChanged {
            account: A,
            permission: 63,
            granted: true
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

#[test]
fn price_filter_bounds() {
    let mut s = spec("BTCUSD");
    s.min_price_ticks = 10;
    s.max_price_ticks = 1_000;
    let mut h = setup_with(cfg(), s);
    use RejectReason::PriceFilter;
    for price in [0, 9, 1_001, u64::MAX] {
        assert_eq!(h.reject_place(limit(A, Buy, price, 1)), PriceFilter);
        assert_eq!(h.reject_place(maker(limit(A, Sell, price, 1))), PriceFilter);
    }
    assert_eq!(h.order(limit(A, Buy, 10, 1)), 1);
    assert_eq!(h.order(limit(A, Sell, 1_000, 1)), 2);
    assert_eq!(
        h.reject(Command::SetReferencePrice {
            market: M,
            price: Some(9)
        }),
        PriceFilter
    );
    assert_eq!(
        h.reject(Command::SetReferencePrice {
            market: M,
            price: Some(1_001)
        }),
        PriceFilter
    );
    h.set_reference(M, Some(1_000));
    h.set_reference(M, None);
    assert_eq!(
        h.reject(Command::SetReferencePrice {
            market: 9,
            price: None
        }),
        RejectReason::UnknownMarket
    );
}

#[test]
fn lot_size_bounds() {
    let mut s = spec("BTCUSD");
    s.min_qty_lots = 2;
    s.max_qty_lots = 50;
    let mut h = setup_with(cfg(), s);
    use RejectReason::LotSize;
    for qty in [0, 1, 51] {
        assert_eq!(h.reject_place(limit(A, Buy, 100, qty)), LotSize);
        assert_eq!(
            h.reject_place(market(A, Sell, Quantity::Base(qty))),
            LotSize
        );
    }
    assert_eq!(h.order(limit(A, Buy, 100, 2)), 1);
    assert_eq!(h.order(limit(A, Buy, 100, 50)), 2);
    // Quote quantities are not lot-checked.
    let p = market(A, Sell, Quantity::Quote(1_000));
    assert_eq!(h.place(p)[0], accepted(3, &p));
}

#[test]
fn notional_bounds_for_limit_orders() {
    let mut s = spec("BTCUSD");
    s.min_notional = 1_000;
    s.max_notional = 100_000;
    let mut h = setup_with(cfg(), s);
    use RejectReason::Notional;
    assert_eq!(h.reject_place(limit(A, Buy, 99, 1)), Notional); // 990
    assert_eq!(h.reject_place(limit(A, Sell, 100, 101)), Notional); // 101_000
    assert_eq!(h.order(limit(A, Buy, 100, 1)), 1); // 1_000
    assert_eq!(h.order(limit(A, Sell, 200, 50)), 2); // 100_000
}

#[test]
fn notional_bounds_for_market_quote_orders() {
    let mut s = spec("BTCUSD");
    s.min_notional = 1_000;
    s.max_notional = 100_000;
    let mut h = setup_with(cfg(), s);
    use RejectReason::Notional;
    for a in [0, 999, 100_001] {
        assert_eq!(h.reject_place(market(A, Buy, Quantity::Quote(a))), Notional);
        assert_eq!(
            h.reject_place(market(A, Sell, Quantity::Quote(a))),
            Notional
        );
    }
    let p = market(A, Buy, Quantity::Quote(1_000));
    assert_eq!(
        h.place(p),
        vec![accepted(1, &p), cancelled(1, A, 1_000, CancelReason::Ioc)]
    );
    let p = market(A, Sell, Quantity::Quote(100_000));
    assert_eq!(h.place(p)[0], accepted(2, &p));
    // Quote(0) is refused even without a minimum notional.
    let mut h = setup();
    assert_eq!(h.reject_place(market(A, Buy, Quantity::Quote(0))), Notional);
}

#[test]
fn notional_of_market_base_orders_uses_the_reference_price() {
    let mut s = spec("BTCUSD");
    s.min_notional = 1_000;
    s.max_notional = 100_000;
    let mut h = setup_with(cfg(), s);
    use RejectReason::Notional;
    // No reference price: not checked.
    let p = market(A, Buy, Quantity::Base(100_000));
    assert_eq!(
        h.place(p),
        vec![accepted(1, &p), cancelled(1, A, 100_000, CancelReason::Ioc)]
    );
    h.set_reference(M, Some(100));
    assert_eq!(
        h.reject_place(market(A, Buy, Quantity::Base(101))),
        Notional
    );
    assert_eq!(
        h.reject_place(market(A, Sell, Quantity::Base(101))),
        Notional
    );
    assert_eq!(h.order(market(A, Sell, Quantity::Base(100))), 2);
    assert_eq!(h.order(market(A, Sell, Quantity::Base(1))), 3);
    h.set_reference(M, Some(99));
    assert_eq!(h.reject_place(market(A, Sell, Quantity::Base(1))), Notional);
    // Without an admin price, the last trade price is the reference.
    h.set_reference(M, None);
    h.order(limit(B, Sell, 50, 20));
    h.order(ioc(limit(A, Buy, 50, 2))); // trade at 50
    assert_eq!(h.ex.last_trade_price(M), Some(50));
    assert_eq!(h.reject_place(market(A, Buy, Quantity::Base(1))), Notional); // 500
    assert_eq!(
        h.reject_place(market(A, Buy, Quantity::Base(201))),
        Notional
    ); // 100_500
    let p = market(A, Buy, Quantity::Base(2));
    assert_eq!(h.place(p)[0], accepted(6, &p));
}

#[test]
fn percent_price_band_around_the_last_trade() {
    let mut s = spec("BTCUSD");
    s.price_band_bps = 1_000;
    let mut h = setup_with(cfg(), s);
    // No reference and no trade: no band.
    assert_eq!(h.order(limit(A, Buy, 1, 1)), 1);
    assert_eq!(h.order(limit(A, Sell, 10_000, 1)), 2);
    h.order(limit(B, Sell, 100, 1));
    h.order(limit(C, Buy, 100, 1)); // trade at 100: band 90..=110
    use RejectReason::PercentPrice;
    assert_eq!(h.reject_place(limit(A, Buy, 89, 1)), PercentPrice);
    assert_eq!(h.reject_place(limit(A, Sell, 111, 1)), PercentPrice);
    assert_eq!(h.reject_place(maker(limit(A, Sell, 111, 1))), PercentPrice);
    assert_eq!(h.reject_place(ioc(limit(A, Buy, 111, 1))), PercentPrice);
    assert_eq!(h.order(limit(A, Buy, 90, 1)), 5);
    assert_eq!(h.order(limit(A, Sell, 110, 1)), 6);
}

#[test]
fn percent_price_band_around_the_admin_reference_price() {
    let mut s = spec("BTCUSD");
    s.price_band_bps = 1_000;
    let mut h = setup_with(cfg(), s);
    h.order(limit(B, Sell, 100, 1));
    h.order(limit(C, Buy, 100, 1)); // last trade 100
                                    // 105 ± 10%: lower = ceil(94.5) = 95, upper = floor(115.5) = 115.
    h.set_reference(M, Some(105));
    use RejectReason::PercentPrice;
    assert_eq!(h.reject_place(limit(A, Buy, 94, 1)), PercentPrice);
    assert_eq!(h.reject_place(limit(A, Buy, 90, 1)), PercentPrice);
    assert_eq!(h.reject_place(limit(A, Sell, 116, 1)), PercentPrice);
    assert_eq!(h.order(limit(A, Buy, 95, 1)), 3);
    assert_eq!(h.order(limit(A, Sell, 115, 1)), 4);
    // Cleared: the last trade is the reference again.
    h.set_reference(M, None);
    assert_eq!(h.order(limit(A, Buy, 90, 1)), 5);
    assert_eq!(h.reject_place(limit(A, Sell, 111, 1)), PercentPrice);
}

#[test]
fn percent_price_band_of_100_percent_or_more_has_no_lower_bound() {
    let mut s = spec("BTCUSD");
    s.price_band_bps = 15_000;
    let mut h = setup_with(cfg(), s);
    h.set_reference(M, Some(100)); // 0..=250
    assert_eq!(h.order(limit(A, Buy, 1, 1)), 1);
    assert_eq!(h.order(limit(A, Sell, 250, 1)), 2);
    assert_eq!(
        h.reject_place(limit(A, Sell, 251, 1)),
        RejectReason::PercentPrice
    );
}

#[test]
fn market_orders_stop_at_the_band_edge() {
    let mut s = spec("BTCUSD");
    s.price_band_bps = 1_000;
    let mut h = setup_with(cfg(), s);
    for p in [105, 110, 115] {
        h.order(limit(B, Sell, p, 2)); // 1, 2, 3
    }
    for p in [95, 90, 85] {
        h.order(limit(C, Buy, p, 2)); // 4, 5, 6
    }
    h.set_reference(M, Some(100)); // band 90..=110
    let p = market(A, Buy, Quantity::Base(10));
    assert_eq!(
        h.place(p),
        vec![
            accepted(7, &p),
            trade(1, 105, 2, (1, B), (7, A, Buy), 0),
            bal(B, BASE, DB - b(6), b(4)),
            bal(B, QUOTE, DQ + q(105, 2), 0),
            level(Sell, 105, 0, 0, 7),
            trade(2, 110, 2, (2, B), (7, A, Buy), 0),
            bal(B, BASE, DB - b(6), b(2)),
            bal(B, QUOTE, DQ + q(105 + 110, 2), 0),
            level(Sell, 110, 0, 0, 8),
            cancelled(7, A, 6, CancelReason::Ioc),
            bal(A, BASE, DB + b(4), 0),
            bal(A, QUOTE, DQ - q(105 + 110, 2), 0),
        ]
    );
    let c_locked = q(95 + 90 + 85, 2);
    let p = market(A, Sell, Quantity::Quote(1_000_000));
    assert_eq!(
        h.place(p),
        vec![
            accepted(8, &p),
            trade(3, 95, 2, (4, C), (8, A, Sell), 0),
            bal(C, BASE, DB + b(2), 0),
            bal(C, QUOTE, DQ - c_locked, c_locked - q(95, 2)),
            level(Buy, 95, 0, 0, 9),
            trade(4, 90, 2, (5, C), (8, A, Sell), 0),
            bal(C, BASE, DB + b(4), 0),
            bal(C, QUOTE, DQ - c_locked, q(85, 2)),
            level(Buy, 90, 0, 0, 10),
            cancelled(8, A, 1_000_000 - q(95 + 90, 2), CancelReason::Ioc),
            bal(A, BASE, DB, 0),
            bal(A, QUOTE, DQ - q(105 + 110, 2) + q(95 + 90, 2), 0),
        ]
    );
    assert_eq!(h.ex.best(M, Sell), Some((115, 2)));
    assert_eq!(h.ex.best(M, Buy), Some((85, 2)));
}

// ---------------------------------------------------------------------------------------
// Fees
// ---------------------------------------------------------------------------------------

fn fee_spec(maker_fee_bps: i32, taker_fee_bps: i32) -> MarketSpec {
    MarketSpec {
        fees: FeeSchedule {
            maker_fee_bps,
            taker_fee_bps,
        },
        ..spec("BTCUSD")
    }
}

#[test]
fn taker_and_maker_fees_are_rounded_down_and_paid_to_the_fee_account() {
    let mut h = setup_with(cfg(), fee_spec(10, 20));
    h.order(limit(B, Sell, 103, 7));
    // Taker buys: receives 700 base, fee floor(1.4) = 1 base; maker receives 7_210 quote,
    // fee floor(7.21) = 7 quote.
    let p = limit(A, Buy, 103, 7);
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            with_fees(trade(1, 103, 7, (1, B), (2, A, Buy), 0), 7, 1),
            bal(B, BASE, DB - 700, 0),
            bal(B, QUOTE, DQ + 7_210 - 7, 0),
            level(Sell, 103, 0, 0, 2),
            bal(A, BASE, DB + 700 - 1, 0),
            bal(A, QUOTE, DQ - 7_210, 0),
            bal(FEE, BASE, 1, 0),
            bal(FEE, QUOTE, 7, 0),
        ]
    );
    // Taker sells: receives 7_210 quote, fee floor(14.42) = 14; maker receives 700 base,
    // fee floor(0.7) = 0 (no fee-account base event).
    h.order(limit(B, Buy, 103, 7));
    let p = limit(A, Sell, 103, 7);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            with_fees(trade(2, 103, 7, (3, B), (4, A, Sell), 0), 0, 14),
            bal(B, BASE, DB, 0),
            bal(B, QUOTE, DQ - 7, 0),
            level(Buy, 103, 0, 0, 4),
            bal(A, BASE, DB - 1, 0),
            bal(A, QUOTE, DQ - 14, 0),
            bal(FEE, QUOTE, 21, 0),
        ]
    );
    assert_eq!(h.bal(FEE, BASE), (1, 0));
    assert_eq!(h.bal(FEE, QUOTE), (21, 0));
    assert_eq!(h.ex.supply(BASE), 3 * DB);
    assert_eq!(h.ex.supply(QUOTE), 3 * DQ);
}

#[test]
fn fees_on_each_fill_of_a_multi_fill_order() {
    let mut h = setup_with(cfg(), fee_spec(10, 20));
    h.order(limit(B, Sell, 100, 30)); // 3_000 base
    h.order(limit(C, Sell, 101, 60)); // 6_000 base
    let p = market(A, Buy, Quantity::Base(90));
    assert_eq!(
        h.place(p),
        vec![
            accepted(3, &p),
            // 3_000 base × 0.2% = 6; 30_000 quote × 0.1% = 30.
            with_fees(trade(1, 100, 30, (1, B), (3, A, Buy), 0), 30, 6),
            bal(B, BASE, DB - 3_000, 0),
            bal(B, QUOTE, DQ + 30_000 - 30, 0),
            level(Sell, 100, 0, 0, 3),
            // 6_000 base × 0.2% = 12; 60_600 quote × 0.1% = 60.6 → 60.
            with_fees(trade(2, 101, 60, (2, C), (3, A, Buy), 0), 60, 12),
            bal(C, BASE, DB - 6_000, 0),
            bal(C, QUOTE, DQ + 60_600 - 60, 0),
            level(Sell, 101, 0, 0, 4),
            bal(A, BASE, DB + 9_000 - 18, 0),
            bal(A, QUOTE, DQ - 90_600, 0),
            bal(FEE, BASE, 18, 0),
            bal(FEE, QUOTE, 90, 0),
        ]
    );
}

#[test]
fn negative_maker_fee_is_a_rebate_in_the_takers_fee_asset() {
    let mut h = setup_with(cfg(), fee_spec(-5, 20));
    h.order(limit(B, Sell, 103, 100));
    // Taker buys 10_000 base: fee 20 base; rebate floor(5) = 5 base to the maker.
    let p = limit(A, Buy, 103, 100);
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            with_fees(trade(1, 103, 100, (1, B), (2, A, Buy), 0), -5, 20),
            bal(B, BASE, DB - 10_000 + 5, 0),
            bal(B, QUOTE, DQ + 103_000, 0),
            level(Sell, 103, 0, 0, 2),
            bal(A, BASE, DB + 10_000 - 20, 0),
            bal(A, QUOTE, DQ - 103_000, 0),
            bal(FEE, BASE, 15, 0),
        ]
    );
    // Taker sells for 103_000 quote: fee 206; rebate floor(51.5) = 51 quote.
    h.order(limit(B, Buy, 103, 100));
    let p = limit(A, Sell, 103, 100);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            with_fees(trade(2, 103, 100, (3, B), (4, A, Sell), 0), -51, 206),
            bal(B, BASE, DB + 5, 0),
            bal(B, QUOTE, DQ + 51, 0),
            level(Buy, 103, 0, 0, 4),
            bal(A, BASE, DB - 20, 0),
            bal(A, QUOTE, DQ - 206, 0),
            bal(FEE, QUOTE, 206 - 51, 0),
        ]
    );
    assert_eq!(h.bal(FEE, BASE), (15, 0));
}

#[test]
fn fee_account_trading_as_maker_and_as_taker() {
    let mut h = setup_with(cfg(), fee_spec(10, 20));
    h.deposit(FEE, BASE, 1_000);
    h.order(limit(FEE, Sell, 100, 10)); // 1
                                        // Maker events carry the state after the whole fill (fees included); the fee account's
                                        // end-of-command events follow, since it is not the taker.
    let p = limit(A, Buy, 100, 10);
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            with_fees(trade(1, 100, 10, (1, FEE), (2, A, Buy), 0), 10, 2),
            bal(FEE, BASE, 2, 0),
            bal(FEE, QUOTE, 10_000, 0),
            level(Sell, 100, 0, 0, 2),
            bal(A, BASE, DB + 1_000 - 2, 0),
            bal(A, QUOTE, DQ - 10_000, 0),
            // The fee account's final state was said by its maker events: not repeated.
        ]
    );
    // The fee account as taker: its balance events appear once.
    h.order(limit(B, Sell, 100, 10)); // 3
    let p = limit(FEE, Buy, 100, 10);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            with_fees(trade(2, 100, 10, (3, B), (4, FEE, Buy), 0), 10, 2),
            bal(B, BASE, DB - 1_000, 0),
            bal(B, QUOTE, DQ + 10_000 - 10, 0),
            level(Sell, 100, 0, 0, 4),
            bal(FEE, BASE, 2 + 1_000, 0),
            bal(FEE, QUOTE, 10, 0),
        ]
    );
}

#[test]
fn rebate_rounding_to_zero_reports_zero_maker_fee() {
    let mut h = setup_with(cfg(), fee_spec(-1, 1));
    h.order(limit(B, Sell, 100, 1));
    let p = limit(A, Buy, 100, 1);
    // 100 base × 1 bp = 0.01 → 0 for both.
    let ev = h.place(p);
    assert_eq!(
        ev[1],
        with_fees(trade(1, 100, 1, (1, B), (2, A, Buy), 0), 0, 0)
    );
    assert_eq!(h.bal(FEE, BASE), (0, 0));
}

#[test]
fn limit_buy_filled_below_its_limit_gets_the_difference_back() {
    let mut h = setup();
    h.order(limit(B, Sell, 100, 5));
    let p = limit(A, Buy, 105, 5);
    assert_eq!(
        h.place(p),
        vec![
            accepted(2, &p),
            trade(1, 100, 5, (1, B), (2, A, Buy), 0),
            bal(B, BASE, DB - b(5), 0),
            bal(B, QUOTE, DQ + q(100, 5), 0),
            level(Sell, 100, 0, 0, 2),
            bal(A, BASE, DB + b(5), 0),
            bal(A, QUOTE, DQ - q(100, 5), 0),
        ]
    );
    // Partly filled below the limit, the rest locked at the limit.
    h.order(limit(B, Sell, 100, 3));
    let p = limit(A, Buy, 105, 5);
    assert_eq!(
        h.place(p),
        vec![
            accepted(4, &p),
            trade(2, 100, 3, (3, B), (4, A, Buy), 0),
            bal(B, BASE, DB - b(8), 0),
            bal(B, QUOTE, DQ + q(100, 8), 0),
            level(Sell, 100, 0, 0, 4),
            level(Buy, 105, 2, 1, 5),
            bal(A, BASE, DB + b(8), 0),
            bal(A, QUOTE, DQ - q(100, 8) - q(105, 2), q(105, 2)),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Ledger
// ---------------------------------------------------------------------------------------

#[test]
fn deposit_and_withdrawal_hold_release_finalize() {
    let mut h = bare(cfg());
    assert_eq!(
        h.run(Command::Deposit {
            account: A,
            asset: BASE,
            amount: 1_000
        }),
        vec![bal(A, BASE, 1_000, 0)]
    );
    assert_eq!(h.ex.supply(BASE), 1_000);
    let hold = |amount, withdrawal| Command::WithdrawHold {
        account: A,
        asset: BASE,
        amount,
        withdrawal,
    };
    assert_eq!(
        h.run(hold(400, 7)),
        vec![
            Event::WithdrawalHeld {
                withdrawal: 7,
                account: A,
                asset: BASE,
                amount: 400
            },
            bal(A, BASE, 600, 400),
        ]
    );
    assert_eq!(h.reject(hold(1, 7)), RejectReason::DuplicateWithdrawal);
    assert_eq!(h.reject(hold(601, 8)), RejectReason::InsufficientBalance);
    assert_eq!(
        h.run(Command::WithdrawRelease { withdrawal: 7 }),
        vec![
            Event::WithdrawalReleased { withdrawal: 7 },
            bal(A, BASE, 1_000, 0)
        ]
    );
    assert_eq!(
        h.reject(Command::WithdrawRelease { withdrawal: 7 }),
        RejectReason::UnknownWithdrawal
    );
    assert_eq!(h.ex.supply(BASE), 1_000);
    // The id is free again once the withdrawal ended.
    assert_eq!(h.run(hold(300, 7))[1], bal(A, BASE, 700, 300));
    assert_eq!(
        h.run(Command::WithdrawFinalize { withdrawal: 7 }),
        vec![
            Event::WithdrawalFinalized { withdrawal: 7 },
            bal(A, BASE, 700, 0)
        ]
    );
    assert_eq!(h.ex.supply(BASE), 700);
    assert_eq!(
        h.reject(Command::WithdrawFinalize { withdrawal: 7 }),
        RejectReason::UnknownWithdrawal
    );
    // Held funds are not free for orders.
    h.run(Command::AddMarket(Box::new(spec("BTCUSD"))));
    h.run(hold(700, 9));
    assert_eq!(
        h.reject_place(limit(A, Sell, 100, 1)),
        RejectReason::InsufficientBalance
    );
}

#[test]
fn ledger_rejections() {
    let mut h = bare(cfg());
    use RejectReason::*;
    let dep = |account, asset, amount| Command::Deposit {
        account,
        asset,
        amount,
    };
    assert_eq!(h.reject(dep(NO_ACCOUNT, BASE, 1)), UnknownAccount);
    assert_eq!(h.reject(dep(NO_ACCOUNT, 9, 0)), UnknownAccount);
    assert_eq!(h.reject(dep(A, 2, 1)), UnknownAsset);
    assert_eq!(h.reject(dep(A, 2, 0)), UnknownAsset);
    assert_eq!(h.reject(dep(A, BASE, 0)), InvalidAmount);
    let hold = |account, asset, amount, withdrawal| Command::WithdrawHold {
        account,
        asset,
        amount,
        withdrawal,
    };
    h.deposit(A, BASE, 10);
    assert_eq!(h.reject(hold(NO_ACCOUNT, BASE, 1, 1)), UnknownAccount);
    assert_eq!(h.reject(hold(A, 2, 1, 1)), UnknownAsset);
    assert_eq!(h.reject(hold(A, BASE, 0, 1)), InvalidAmount);
    assert_eq!(h.reject(hold(A, BASE, 11, 1)), InsufficientBalance);
    assert_eq!(h.reject(hold(B, BASE, 1, 1)), InsufficientBalance);
    h.run(hold(A, BASE, 10, 1));
    // Duplicate id is judged before the balance.
    assert_eq!(h.reject(hold(A, BASE, 10, 1)), DuplicateWithdrawal);
    assert_eq!(
        h.reject(Command::WithdrawRelease { withdrawal: 2 }),
        UnknownWithdrawal
    );
    assert_eq!(
        h.reject(Command::WithdrawFinalize { withdrawal: 2 }),
        UnknownWithdrawal
    );
}

#[test]
fn supply_past_u64_max_is_balance_overflow() {
    let mut h = bare(cfg());
    h.deposit(A, BASE, u64::MAX - 10);
    let dep = |account, amount| Command::Deposit {
        account,
        asset: BASE,
        amount,
    };
    assert_eq!(h.reject(dep(B, 11)), RejectReason::BalanceOverflow);
    assert_eq!(h.reject(dep(A, u64::MAX)), RejectReason::BalanceOverflow);
    h.deposit(B, BASE, 10);
    assert_eq!(h.ex.supply(BASE), u64::MAX);
    assert_eq!(h.reject(dep(C, 1)), RejectReason::BalanceOverflow);
    // Other assets have their own supply.
    h.deposit(C, QUOTE, u64::MAX);
    // Finalized withdrawals make room; released ones do not.
    h.run(Command::WithdrawHold {
        account: A,
        asset: BASE,
        amount: 5,
        withdrawal: 1,
    });
    h.run(Command::WithdrawRelease { withdrawal: 1 });
    assert_eq!(h.reject(dep(C, 1)), RejectReason::BalanceOverflow);
    h.run(Command::WithdrawHold {
        account: A,
        asset: BASE,
        amount: 5,
        withdrawal: 1,
    });
    h.run(Command::WithdrawFinalize { withdrawal: 1 });
    assert_eq!(h.ex.supply(BASE), u64::MAX - 5);
    h.deposit(C, BASE, 5);
    assert_eq!(h.reject(dep(C, 1)), RejectReason::BalanceOverflow);
}

// ---------------------------------------------------------------------------------------
// Deposits from the chain: credit, settle, reverse; deficits and the freeze
// ---------------------------------------------------------------------------------------

fn credit(deposit: DepositId, account: AccountId, asset: AssetId, amount: u64) -> Command {
    Command::DepositCredit {
        deposit,
        account,
        asset,
        amount,
    }
}

fn settle(deposit: DepositId) -> Command {
    Command::DepositSettle { deposit }
}

fn reverse(deposit: DepositId) -> Command {
    Command::DepositReverse { deposit }
}

fn hold(account: AccountId, asset: AssetId, amount: u64, withdrawal: WithdrawalId) -> Command {
    Command::WithdrawHold {
        account,
        asset,
        amount,
        withdrawal,
    }
}

fn credited(deposit: DepositId, account: AccountId, asset: AssetId, amount: u64) -> Event {
    Event::DepositCredited {
        deposit,
        account,
        asset,
        amount,
    }
}

fn reversed(
    deposit: DepositId,
    account: AccountId,
    asset: AssetId,
    amount: u64,
    debited: u64,
) -> Event {
    Event::DepositReversed {
        deposit,
        account,
        asset,
        amount,
        debited,
    }
}

fn deficit(account: AccountId, asset: AssetId, deficit: u64) -> Event {
    Event::DeficitChanged {
        account,
        asset,
        deficit,
    }
}

/// Gives `account` a deficit of `amount` in `asset`: a deposit credited (id 900), every
/// free unit of the asset withdrawn, the deposit reversed. The account must owe nothing
/// yet and have no open order holding the asset.
fn owe(h: &mut Harness, account: AccountId, asset: AssetId, amount: u64) {
    assert!(!h.ex.is_frozen(account));
    h.run(credit(900, account, asset, amount));
    let free = h.bal(account, asset).0;
    h.run(hold(account, asset, free, 900));
    h.run(Command::WithdrawFinalize { withdrawal: 900 });
    let ev = h.run(reverse(900));
    assert_eq!(
        ev,
        vec![
            reversed(900, account, asset, amount, 0),
            bal(account, asset, 0, h.bal(account, asset).1),
            deficit(account, asset, amount),
        ]
    );
    assert!(h.ex.is_frozen(account));
}

#[test]
fn deposit_credit_credits_and_remembers_the_deposit() {
    let mut h = bare(cfg());
    assert_eq!(h.ex.pending_deposit(7), None);
    assert_eq!(
        h.run(credit(7, A, BASE, 1_000)),
        vec![credited(7, A, BASE, 1_000), bal(A, BASE, 1_000, 0)]
    );
    assert_eq!(h.ex.supply(BASE), 1_000);
    assert_eq!(h.ex.pending_deposit(7), Some((A, BASE, 1_000)));
    // Credited money is free money: it can be traded and withdrawn before it settles.
    assert_eq!(h.run(hold(A, BASE, 1_000, 1))[1], bal(A, BASE, 0, 1_000));
    assert!(!h.ex.is_frozen(A));
}

#[test]
fn deposit_credit_checks_in_order() {
    use RejectReason::*;
    let mut h = bare(EngineConfig {
        max_pending_deposits: 2,
        ..cfg()
    });
    assert_eq!(h.reject(credit(1, NO_ACCOUNT, 9, 0)), UnknownAccount);
    assert_eq!(h.reject(credit(1, A, 9, 0)), UnknownAsset);
    assert_eq!(h.reject(credit(1, A, BASE, 0)), InvalidAmount);
    h.run(credit(1, A, BASE, 10));
    // A pending id is refused for any account and asset, before the capacity.
    assert_eq!(h.reject(credit(1, B, QUOTE, 20)), DuplicateDeposit);
    h.run(credit(2, A, BASE, u64::MAX - 20));
    assert_eq!(h.reject(credit(1, B, QUOTE, 20)), DuplicateDeposit);
    assert_eq!(h.reject(credit(3, B, BASE, 20)), CapacityExceeded);
    h.run(settle(1));
    // Room again; the supply is checked last.
    assert_eq!(h.reject(credit(3, B, BASE, 11)), BalanceOverflow);
    h.run(credit(3, B, BASE, 10));
    assert_eq!(h.ex.supply(BASE), u64::MAX);
    // Settled: the id may be credited again (custody never reuses one, but the engine
    // only guards the pending ones).
    h.run(settle(3));
    assert_eq!(h.ex.pending_deposit(1), None);
    assert_eq!(
        h.run(credit(1, B, QUOTE, 5)),
        vec![credited(1, B, QUOTE, 5), bal(B, QUOTE, 5, 0)]
    );
}

#[test]
fn deposit_settle_forgets_the_deposit_and_moves_no_money() {
    let mut h = bare(cfg());
    h.run(credit(7, A, BASE, 1_000));
    assert_eq!(h.run(settle(7)), vec![Event::DepositSettled { deposit: 7 }]);
    assert_eq!(h.ex.pending_deposit(7), None);
    assert_eq!(h.bal(A, BASE), (1_000, 0));
    assert_eq!(h.ex.supply(BASE), 1_000);
    assert_eq!(h.reject(settle(7)), RejectReason::UnknownDeposit);
    assert_eq!(h.reject(reverse(7)), RejectReason::UnknownDeposit);
    assert_eq!(h.reject(reverse(8)), RejectReason::UnknownDeposit);
    // A plain Deposit is no pending deposit.
    h.deposit(A, BASE, 5);
    assert_eq!(h.reject(settle(0)), RejectReason::UnknownDeposit);
}

#[test]
fn deposit_reverse_takes_from_free_when_free_is_enough() {
    let mut h = setup();
    h.run(credit(7, A, BASE, 1_000));
    let o = h.order(limit(A, Sell, 200, 10));
    let free = DB + 1_000 - b(10);
    assert_eq!(
        h.run(reverse(7)),
        vec![
            reversed(7, A, BASE, 1_000, 1_000),
            bal(A, BASE, free - 1_000, b(10))
        ]
    );
    assert_eq!(h.ex.supply(BASE), 3 * DB);
    assert_eq!(h.ex.pending_deposit(7), None);
    assert!(h.ex.order(o).is_some());
    assert!(!h.ex.is_frozen(A));
    assert_eq!(h.reject(reverse(7)), RejectReason::UnknownDeposit);
}

#[test]
fn deposit_reverse_cancels_orders_holding_the_asset_oldest_first_until_enough() {
    let mut h = setup();
    let m2 = h.add_market(spec("BTCUSD2"));
    h.run(credit(7, A, QUOTE, 2_000_000));
    let o1 = h.order(limit_in(m2, A, Buy, 100, 1_000)); // holds 1_000_000 quote
    let o2 = h.order(limit(A, Sell, 200, 10)); // holds base: never touched
    let o3 = h.order(limit(A, Buy, 90, 6_000)); // 5_400_000
    let o4 = h.order(limit_in(m2, A, Buy, 80, 6_000)); // 4_800_000
    let o5 = h.order(limit(B, Buy, 90, 1)); // B's, behind o3 in its level
    let locked = q(100, 1_000) + q(90, 6_000) + q(80, 6_000);
    let free = DQ + 2_000_000 - locked;
    assert_eq!((h.bal(A, QUOTE), free), ((free, locked), 800_000));
    // Free (800_000) is short of 2_000_000: o1 (id order, across markets) releases
    // 1_000_000, still short; o3 releases 5_400_000, enough. o4 stays.
    assert_eq!(
        h.run(reverse(7)),
        vec![
            reversed(7, A, QUOTE, 2_000_000, 2_000_000),
            cancelled_in(m2, o1, A, 1_000, CancelReason::DepositReversed),
            level_in(m2, Buy, 100, 0, 0, 3),
            bal(A, QUOTE, 1_800_000, locked - q(100, 1_000)),
            cancelled(o3, A, 6_000, CancelReason::DepositReversed),
            level(Buy, 90, 1, 1, 4),
            bal(A, QUOTE, 7_200_000, q(80, 6_000)),
            bal(A, QUOTE, 5_200_000, q(80, 6_000)),
        ]
    );
    for (id, open) in [(o1, false), (o2, true), (o3, false), (o4, true), (o5, true)] {
        assert_eq!(h.ex.order(id).is_some(), open, "order {id}");
    }
    assert_eq!(h.ex.supply(QUOTE), 3 * DQ);
    assert_eq!(h.ex.deficit(A, QUOTE), 0);
    assert!(!h.ex.is_frozen(A));
}

#[test]
fn deposit_reverse_of_spent_money_leaves_a_deficit_and_never_a_negative_balance() {
    let mut h = setup();
    h.run(credit(1, D, BASE, 1_000));
    let o = h.order(limit(D, Sell, 500, 5)); // holds 500
    h.run(hold(D, BASE, 300, 1));
    h.run(Command::WithdrawFinalize { withdrawal: 1 });
    h.run(hold(D, BASE, 100, 2)); // pending: a withdrawal hold is never taken back
    assert_eq!(h.bal(D, BASE), (100, 600));
    assert_eq!(
        h.run(reverse(1)),
        vec![
            reversed(1, D, BASE, 1_000, 600),
            cancelled(o, D, 5, CancelReason::DepositReversed),
            level(Sell, 500, 0, 0, 2),
            bal(D, BASE, 600, 100),
            bal(D, BASE, 0, 100),
            deficit(D, BASE, 400),
        ]
    );
    assert_eq!(h.ex.deficit(D, BASE), 400);
    assert_eq!(h.ex.deficit(D, QUOTE), 0);
    assert!(h.ex.is_frozen(D) && !h.ex.is_frozen(A));
    // Supply fell by what was taken, so balances still sum to it; what custody holds for
    // the asset is the supply minus the deficits: 3 DB credited by plain deposits,
    // 1_000 - 1_000 by the reversed one, minus the 300 paid out.
    assert_eq!(h.ex.supply(BASE), 3 * DB + 100);
    assert_eq!(h.ex.supply(BASE) - h.ex.deficit(D, BASE), 3 * DB - 300);
    // The pending withdrawal goes on; released, its amount is free again but the deficit
    // stays: only a credit covers it.
    assert_eq!(
        h.run(Command::WithdrawRelease { withdrawal: 2 }),
        vec![
            Event::WithdrawalReleased { withdrawal: 2 },
            bal(D, BASE, 100, 0)
        ]
    );
    assert_eq!(h.ex.deficit(D, BASE), 400);
    assert_eq!(h.reject(hold(D, BASE, 100, 3)), RejectReason::AccountFrozen);
}

#[test]
fn deficits_add_up_and_a_deficit_past_u64_is_balance_overflow() {
    let mut h = bare(cfg());
    h.run(credit(1, A, BASE, 100));
    h.run(credit(2, A, BASE, 50));
    h.run(hold(A, BASE, 150, 1));
    h.run(Command::WithdrawFinalize { withdrawal: 1 });
    assert_eq!(h.run(reverse(1))[2], deficit(A, BASE, 100));
    assert_eq!(h.run(reverse(2))[2], deficit(A, BASE, 150));
    assert_eq!(h.ex.deficit(A, BASE), 150);
    // Two deposits of nearly u64::MAX, each paid out before the reorg takes both back.
    let mut h = bare(cfg());
    for id in [1, 2] {
        h.run(credit(id, A, BASE, u64::MAX - 5));
        h.run(hold(A, BASE, u64::MAX - 5, id));
        h.run(Command::WithdrawFinalize { withdrawal: id });
    }
    h.run(reverse(1));
    assert_eq!(h.ex.deficit(A, BASE), u64::MAX - 5);
    assert_eq!(h.reject(reverse(2)), RejectReason::BalanceOverflow);
    assert_eq!(h.ex.pending_deposit(2), Some((A, BASE, u64::MAX - 5)));
}

#[test]
fn a_frozen_account_may_not_withdraw_buy_or_raise_a_buy_but_may_sell_and_cancel() {
    let mut h = setup();
    assert_eq!(
        h.run(add_asset_cmd("ETH", 2)),
        vec![Event::AssetAdded { asset: 2 }]
    );
    let ethbtc = h.add_market(MarketSpec {
        base: 2,
        quote: BASE,
        ..spec("ETHBTC")
    });
    let buy_eth = h.order(limit_in(ethbtc, A, Buy, 100, 5)); // holds BTC
    let sell = h.order(limit(A, Sell, 200, 10)); // holds BTC
    h.run(hold(A, BASE, 1, 5));
    owe(&mut h, A, QUOTE, 1_000);
    use RejectReason::AccountFrozen;
    // Buys, in any market, of any kind; checked before the order's shape.
    assert_eq!(h.reject_place(limit(A, Buy, 100, 1)), AccountFrozen);
    assert_eq!(
        h.reject_place(limit_in(ethbtc, A, Buy, 100, 1)),
        AccountFrozen
    );
    assert_eq!(
        h.reject_place(market(A, Buy, Quantity::Quote(100))),
        AccountFrozen
    );
    assert_eq!(
        h.reject_place(PlaceOrder {
            price: None,
            ..limit(A, Buy, 100, 1)
        }),
        AccountFrozen
    );
    // Withdrawals of any asset: after the amount's check, before the id's. A held one
    // goes on.
    assert_eq!(h.reject(hold(A, BASE, 0, 5)), RejectReason::InvalidAmount);
    assert_eq!(h.reject(hold(A, BASE, 1, 5)), AccountFrozen);
    assert_eq!(h.reject(hold(A, BASE, 1, 6)), AccountFrozen);
    h.run(Command::WithdrawFinalize { withdrawal: 5 });
    // Sells rest and trade.
    let sell2 = h.order(limit(A, Sell, 210, 1));
    h.order(limit(B, Buy, 150, 2));
    let ev = h.place(market(A, Sell, Quantity::Base(2)));
    assert!(
        ev.iter().any(|e| matches!(e, Event::Trade { .. })),
        "{ev:?}"
    );
    // The proceeds are free quote, but they do not cover the deficit.
    assert_eq!(h.bal(A, QUOTE), (q(150, 2), 0));
    assert_eq!(h.ex.deficit(A, QUOTE), 1_000);
    // Cancels, and amends that do not raise a buy.
    assert_eq!(
        h.run(cancel(A, sell2))[0],
        cancelled(sell2, A, 1, CancelReason::User)
    );
    assert_eq!(
        h.run(amend(A, sell, 20, Some(220)))[0],
        amended(sell, A, 220, 20, 20, false)
    );
    let amend_eth = |qty, price| Command::AmendOrder {
        account: A,
        market: ethbtc,
        target: OrderRef::Id(buy_eth),
        new_qty: qty,
        new_price: price,
    };
    let rej = cancel_rej(A, ethbtc, AccountFrozen);
    assert_eq!(h.run(amend_eth(6, None)), vec![rej]);
    assert_eq!(h.run(amend_eth(5, Some(101))), vec![rej]);
    assert_eq!(h.run(amend_eth(4, Some(101))), vec![rej]);
    assert!(matches!(
        h.run(amend_eth(4, None))[0],
        Event::OrderAmended {
            priority_kept: true,
            ..
        }
    ));
    assert!(matches!(
        h.run(amend_eth(4, Some(90)))[0],
        Event::OrderAmended {
            priority_kept: false,
            ..
        }
    ));
    // Others are not frozen.
    assert!(!h.ex.is_frozen(B));
    h.order(limit(B, Buy, 100, 1));
}

#[test]
fn a_credit_covers_the_deficit_first_and_the_last_of_it_unfreezes() {
    let mut h = setup();
    owe(&mut h, A, QUOTE, 1_000);
    let supply = h.ex.supply(QUOTE);
    // A plain deposit: all of it pays the deficit; the balance and the supply stay.
    assert_eq!(
        h.run(Command::Deposit {
            account: A,
            asset: QUOTE,
            amount: 400
        }),
        vec![bal(A, QUOTE, 0, 0), deficit(A, QUOTE, 600)]
    );
    assert_eq!(h.ex.supply(QUOTE), supply);
    assert!(h.ex.is_frozen(A));
    // A deposit into another asset covers nothing.
    h.deposit(A, BASE, 7);
    assert_eq!(h.ex.deficit(A, QUOTE), 600);
    // A chain credit: 600 to the deficit, 400 to free and to the supply.
    assert_eq!(
        h.run(credit(3, A, QUOTE, 1_000)),
        vec![
            credited(3, A, QUOTE, 1_000),
            bal(A, QUOTE, 400, 0),
            deficit(A, QUOTE, 0)
        ]
    );
    assert_eq!(h.ex.supply(QUOTE), supply + 400);
    assert!(!h.ex.is_frozen(A));
    assert_eq!(h.ex.deficit(A, QUOTE), 0);
    h.order(limit(A, Buy, 10, 1));
    h.run(hold(A, QUOTE, 1, 1));
    assert_eq!(h.bal(A, QUOTE), (299, q(10, 1) + 1));
    // Reversing that credit now takes back what the account has (the order's hold too,
    // not the withdrawal's) and owes the rest again.
    assert_eq!(
        h.run(reverse(3)),
        vec![
            reversed(3, A, QUOTE, 1_000, 399),
            cancelled(1, A, 1, CancelReason::DepositReversed),
            level(Buy, 10, 0, 0, 2),
            bal(A, QUOTE, 399, 1),
            bal(A, QUOTE, 0, 1),
            deficit(A, QUOTE, 601),
        ]
    );
}

#[test]
fn a_credit_that_only_pays_a_deficit_is_no_balance_overflow() {
    let mut h = bare(cfg());
    owe(&mut h, A, BASE, 100);
    assert_eq!(h.ex.supply(BASE), 0);
    h.deposit(B, BASE, u64::MAX);
    assert_eq!(
        h.run(Command::Deposit {
            account: A,
            asset: BASE,
            amount: 60
        }),
        vec![bal(A, BASE, 0, 0), deficit(A, BASE, 40)]
    );
    assert_eq!(
        h.reject(credit(1, A, BASE, 41)),
        RejectReason::BalanceOverflow
    );
    assert_eq!(
        h.run(credit(1, A, BASE, 40)),
        vec![
            credited(1, A, BASE, 40),
            bal(A, BASE, 0, 0),
            deficit(A, BASE, 0)
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------

#[test]
fn cancel_by_order_id() {
    let mut h = setup();
    h.order(limit(A, Buy, 100, 5));
    h.order(limit(B, Buy, 100, 2));
    assert_eq!(
        h.run(cancel(A, 1)),
        vec![
            cancelled(1, A, 5, CancelReason::User),
            level(Buy, 100, 2, 1, 3),
            bal(A, QUOTE, DQ, 0),
        ]
    );
    assert_eq!(h.reject(cancel(A, 1)), RejectReason::UnknownOrder);
    assert_eq!(
        h.run(cancel(B, 2)),
        vec![
            cancelled(2, B, 2, CancelReason::User),
            level(Buy, 100, 0, 0, 4),
            bal(B, QUOTE, DQ, 0),
        ]
    );
    assert_eq!(h.ex.best(M, Buy), None);
}

#[test]
fn cancel_by_client_order_id() {
    let mut h = setup();
    let p = with_cid(limit(A, Sell, 100, 5), "order-1");
    assert_eq!(h.place(p)[0], accepted(1, &p));
    h.order(ioc(limit(B, Buy, 100, 2)));
    let by_cid = Command::CancelOrder {
        account: A,
        market: M,
        target: OrderRef::Client(cid("order-1")),
    };
    assert_eq!(
        h.run(by_cid.clone()),
        vec![
            cancelled(1, A, 3, CancelReason::User),
            level(Sell, 100, 0, 0, 3),
            bal(A, BASE, DB - b(2), 0),
        ]
    );
    assert_eq!(h.reject(by_cid), RejectReason::UnknownOrder);
    // The client id can be used again.
    assert_eq!(h.order(p), 3);
}

#[test]
fn cancel_checks() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(with_cid(limit(A, Buy, 100, 1), "x"));
    use RejectReason::*;
    let c = |account, market, target| Command::CancelOrder {
        account,
        market,
        target,
    };
    assert_eq!(h.reject(c(NO_ACCOUNT, 9, OrderRef::Id(1))), UnknownAccount);
    assert_eq!(
        h.reject(c(A, 9, OrderRef::Client(bad_cid()))),
        UnknownMarket
    );
    assert_eq!(
        h.reject(c(A, M, OrderRef::Client(bad_cid()))),
        InvalidClientOrderId
    );
    // Another account's order, by id or by the same client id.
    assert_eq!(
        h.run(c(B, M, OrderRef::Id(1))),
        vec![cancel_rej(B, M, UnknownOrder)]
    );
    assert_eq!(h.reject(c(B, M, OrderRef::Client(cid("x")))), UnknownOrder);
    // Wrong market, unknown id, empty client id.
    assert_eq!(h.reject(c(A, m1, OrderRef::Id(1))), UnknownOrder);
    assert_eq!(h.reject(c(A, m1, OrderRef::Client(cid("x")))), UnknownOrder);
    assert_eq!(h.reject(c(A, M, OrderRef::Id(2))), UnknownOrder);
    assert_eq!(
        h.reject(c(A, M, OrderRef::Client(ClientOrderId::NONE))),
        UnknownOrder
    );
    assert_eq!(h.reject(c(A, M, OrderRef::Client(cid("y")))), UnknownOrder);
    assert_eq!(
        h.run(c(A, M, OrderRef::Id(1)))[0],
        cancelled(1, A, 1, CancelReason::User)
    );
}

#[test]
fn duplicate_client_order_id_is_per_account_across_markets() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(with_cid(limit(A, Buy, 100, 1), "dup"));
    use RejectReason::DuplicateClientOrderId;
    assert_eq!(
        h.reject_place(with_cid(limit_in(m1, A, Buy, 100, 1), "dup")),
        DuplicateClientOrderId
    );
    assert_eq!(
        h.reject_place(with_cid(ioc(limit(A, Sell, 200, 1)), "dup")),
        DuplicateClientOrderId
    );
    let mut p = market(A, Sell, Quantity::Base(1));
    p.client_order_id = cid("dup");
    assert_eq!(h.reject_place(p), DuplicateClientOrderId);
    // Other accounts may use it, and it frees up once the order leaves the book.
    assert_eq!(h.order(with_cid(limit(B, Buy, 100, 1), "dup")), 2);
    h.order(ioc(limit(C, Sell, 100, 1))); // fills A's order
    assert_eq!(h.order(with_cid(limit_in(m1, A, Buy, 100, 1), "dup")), 4);
    // An empty client id is never a duplicate.
    assert_eq!(h.order(limit(A, Buy, 90, 1)), 5);
    assert_eq!(h.order(limit(A, Buy, 90, 1)), 6);
    assert_eq!(
        h.reject_place(PlaceOrder {
            client_order_id: bad_cid(),
            ..limit(A, Buy, 90, 1)
        }),
        RejectReason::InvalidClientOrderId
    );
}

#[test]
fn cancel_all_in_one_market_in_ascending_order_id() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(limit(A, Sell, 105, 1)); // 1
    h.order(limit_in(m1, A, Buy, 99, 1)); // 2
    h.order(limit(A, Buy, 99, 1)); // 3
    h.order(limit(A, Sell, 101, 1)); // 4: ahead of 1 in the book
    h.order(limit(B, Buy, 99, 1)); // 5
    let all_m0 = Command::CancelAll {
        account: A,
        market: Some(M),
    };
    assert_eq!(
        h.run(all_m0.clone()),
        vec![
            cancelled(1, A, 1, CancelReason::MassCancel),
            level(Sell, 105, 0, 0, 5),
            bal(A, BASE, DB - b(1), b(1)),
            cancelled(3, A, 1, CancelReason::MassCancel),
            level(Buy, 99, 1, 1, 6),
            bal(A, QUOTE, DQ - q(99, 1), q(99, 1)),
            cancelled(4, A, 1, CancelReason::MassCancel),
            level(Sell, 101, 0, 0, 7),
            bal(A, BASE, DB, 0),
        ]
    );
    assert_eq!(h.run(all_m0), vec![]);
    assert!(h.ex.order(2).is_some() && h.ex.order(5).is_some());
    use RejectReason::*;
    let all = |account, market| Command::CancelAll { account, market };
    assert_eq!(
        h.run(all(A, Some(9))),
        vec![cancel_rej(A, 9, UnknownMarket)]
    );
    assert_eq!(h.reject(all(NO_ACCOUNT, Some(M))), UnknownAccount);
    assert_eq!(h.reject(all(NO_ACCOUNT, None)), UnknownAccount);
}

#[test]
fn cancel_all_markets_goes_in_market_then_order_id_order_and_skips_halted_markets() {
    let mut h = setup();
    let m1 = h.add_market(spec("BTCUSD1"));
    let m2 = h.add_market(spec("BTCUSD2"));
    h.order(limit_in(m2, A, Buy, 99, 1)); // 1
    h.order(limit(A, Buy, 99, 1)); // 2
    h.order(limit_in(m1, A, Buy, 99, 1)); // 3
    h.order(limit(A, Buy, 98, 1)); // 4
    h.order(limit(B, Buy, 99, 1)); // 5
    h.set_status(m1, MarketStatus::Halted);
    let mut locked = q(99 * 3 + 98, 1);
    let mut expected = vec![
        cancelled(2, A, 1, CancelReason::MassCancel),
        level(Buy, 99, 1, 1, 4),
    ];
    locked -= q(99, 1);
    expected.push(bal(A, QUOTE, DQ - locked, locked));
    expected.extend([
        cancelled(4, A, 1, CancelReason::MassCancel),
        level(Buy, 98, 0, 0, 5),
    ]);
    locked -= q(98, 1);
    expected.push(bal(A, QUOTE, DQ - locked, locked));
    expected.extend([
        cancelled_in(m2, 1, A, 1, CancelReason::MassCancel),
        level_in(m2, Buy, 99, 0, 0, 2),
    ]);
    locked -= q(99, 1);
    expected.push(bal(A, QUOTE, DQ - locked, locked));
    let all_a = Command::CancelAll {
        account: A,
        market: None,
    };
    assert_eq!(h.run(all_a.clone()), expected);
    assert_eq!(locked, q(99, 1));
    assert_eq!(
        h.ex.open_orders(A)
            .iter()
            .map(|o| o.order_id)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(h.run(all_a), vec![]);
    assert_eq!(
        h.run(Command::CancelAll {
            account: D,
            market: None
        }),
        vec![]
    );
}

// ---------------------------------------------------------------------------------------
// Capacities
// ---------------------------------------------------------------------------------------

#[test]
fn max_orders_caps_resting_orders_across_markets() {
    let config = EngineConfig {
        max_orders: 2,
        ..cfg()
    };
    let mut h = setup_with(config, spec("BTCUSD"));
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(limit(A, Buy, 99, 1)); // 1
    h.order(limit_in(m1, B, Buy, 99, 1)); // 2
    use RejectReason::CapacityExceeded;
    assert_eq!(h.reject_place(limit(A, Buy, 99, 1)), CapacityExceeded);
    assert_eq!(
        h.reject_place(maker(limit(C, Sell, 120, 1))),
        CapacityExceeded
    );
    // Even an order that would fill at once, if it could rest.
    assert_eq!(h.reject_place(limit(C, Sell, 99, 1)), CapacityExceeded);
    // Orders that cannot rest are not capped.
    let p = ioc(limit(C, Sell, 99, 1));
    assert_eq!(h.place(p)[0], accepted(3, &p));
    assert_eq!(h.order(limit(C, Sell, 110, 1)), 4);
}

#[test]
fn max_orders_per_market() {
    let config = EngineConfig {
        max_orders_per_market: 2,
        ..cfg()
    };
    let mut h = setup_with(config, spec("BTCUSD"));
    let m1 = h.add_market(spec("BTCUSD1"));
    h.order(limit(A, Buy, 99, 1));
    h.order(limit(B, Sell, 101, 1));
    assert_eq!(
        h.reject_place(limit(C, Sell, 102, 1)),
        RejectReason::CapacityExceeded
    );
    assert_eq!(h.order(limit_in(m1, C, Sell, 102, 1)), 3);
    assert_eq!(h.order(limit_in(m1, C, Sell, 103, 1)), 4);
    h.run(cancel(A, 1));
    assert_eq!(h.order(limit(C, Sell, 102, 1)), 5);
}

#[test]
fn max_levels_per_side() {
    let config = EngineConfig {
        max_levels_per_side: 2,
        ..cfg()
    };
    let mut h = setup_with(config, spec("BTCUSD"));
    h.order(limit(A, Buy, 100, 1));
    h.order(limit(A, Buy, 99, 1));
    use RejectReason::CapacityExceeded;
    assert_eq!(h.reject_place(limit(B, Buy, 98, 1)), CapacityExceeded);
    assert_eq!(h.reject_place(limit(B, Buy, 101, 1)), CapacityExceeded);
    assert_eq!(h.order(limit(B, Buy, 100, 1)), 3); // existing level
    assert_eq!(h.order(limit(B, Sell, 102, 1)), 4); // the other side has room
    assert_eq!(h.order(limit(B, Sell, 103, 1)), 5);
    assert_eq!(h.reject_place(limit(C, Sell, 104, 1)), CapacityExceeded);
    // A GTC sell at a new level is refused even though it would fill completely.
    assert_eq!(h.reject_place(limit(C, Sell, 100, 1)), CapacityExceeded);
    let p = ioc(limit(C, Sell, 100, 1));
    assert_eq!(h.place(p)[0], accepted(6, &p));
}

#[test]
fn max_gtd_orders() {
    let config = EngineConfig {
        max_gtd_orders: 1,
        ..cfg()
    };
    let mut h = setup_with(config, spec("BTCUSD"));
    h.order(gtd(limit(A, Buy, 99, 1), 5_000)); // 1
    assert_eq!(
        h.reject_place(gtd(limit(B, Buy, 99, 1), 5_000)),
        RejectReason::CapacityExceeded
    );
    assert_eq!(
        h.reject_place(gtd(maker(limit(B, Sell, 120, 1)), 5_000)),
        RejectReason::CapacityExceeded
    );
    assert_eq!(h.order(limit(B, Buy, 99, 1)), 2);
    h.run(cancel(A, 1));
    assert_eq!(h.order(gtd(limit(B, Buy, 98, 1), 6_000)), 3);
    assert_eq!(
        h.run_at(6_000, tick()),
        vec![
            cancelled(3, B, 1, CancelReason::Expired),
            level(Buy, 98, 0, 0, 5),
            bal(B, QUOTE, DQ - q(99, 1), q(99, 1)),
        ]
    );
    assert_eq!(h.order(gtd(limit(C, Buy, 98, 1), 7_000)), 4);
}

#[test]
fn max_pending_withdrawals() {
    let config = EngineConfig {
        max_pending_withdrawals: 1,
        ..cfg()
    };
    let mut h = bare(config);
    h.deposit(A, BASE, 100);
    let hold = |withdrawal| Command::WithdrawHold {
        account: A,
        asset: BASE,
        amount: 10,
        withdrawal,
    };
    assert_eq!(h.run(hold(1)).len(), 2);
    assert_eq!(h.reject(hold(2)), RejectReason::CapacityExceeded);
    assert_eq!(h.reject(hold(1)), RejectReason::DuplicateWithdrawal);
    // Capacity is judged before the balance.
    assert_eq!(
        h.reject(Command::WithdrawHold {
            account: B,
            asset: BASE,
            amount: 1,
            withdrawal: 2,
        }),
        RejectReason::CapacityExceeded
    );
    h.run(Command::WithdrawRelease { withdrawal: 1 });
    assert_eq!(h.run(hold(2)).len(), 2);
    h.run(Command::WithdrawFinalize { withdrawal: 2 });
    assert_eq!(h.run(hold(3)).len(), 2);
}

#[test]
fn max_open_orders_per_account_and_market() {
    let mut s = spec("BTCUSD");
    s.max_open_orders = 2;
    let mut h = setup_with(cfg(), s.clone());
    s.symbol = "BTCUSD1".into();
    let m1 = h.add_market(s);
    h.order(limit(A, Buy, 99, 1));
    h.order(limit(A, Sell, 101, 1));
    use RejectReason::TooManyOpenOrders;
    assert_eq!(h.reject_place(limit(A, Buy, 98, 1)), TooManyOpenOrders);
    assert_eq!(
        h.reject_place(maker(limit(A, Sell, 102, 1))),
        TooManyOpenOrders
    );
    assert_eq!(
        h.reject_place(gtd(limit(A, Sell, 102, 1), NOW + 1)),
        TooManyOpenOrders
    );
    // Orders that cannot rest, other accounts, other markets.
    let p = ioc(limit(A, Buy, 98, 1));
    assert_eq!(h.place(p)[0], accepted(3, &p));
    // 1_000 quote buys no lot at 101: nothing trades.
    let p = market(A, Buy, Quantity::Quote(1_000));
    assert_eq!(
        h.place(p),
        vec![accepted(4, &p), cancelled(4, A, 1_000, CancelReason::Ioc)]
    );
    assert_eq!(h.order(limit(B, Buy, 98, 1)), 5);
    assert_eq!(h.order(limit_in(m1, A, Buy, 98, 1)), 6);
    // A fill frees a slot.
    h.order(ioc(limit(C, Sell, 99, 1)));
    assert_eq!(h.ex.open_orders(A).len(), 2);
    assert_eq!(h.order(limit(A, Buy, 98, 1)), 8);
}

#[test]
fn too_many_open_orders_is_checked_before_capacity() {
    let mut s = spec("BTCUSD");
    s.max_open_orders = 1;
    let config = EngineConfig {
        max_orders: 1,
        ..cfg()
    };
    let mut h = setup_with(config, s);
    h.order(limit(A, Buy, 99, 1));
    assert_eq!(
        h.reject_place(limit(A, Buy, 98, 1)),
        RejectReason::TooManyOpenOrders
    );
    assert_eq!(
        h.reject_place(limit(B, Buy, 98, 1)),
        RejectReason::CapacityExceeded
    );
}

#[test]
fn max_assets_and_max_markets() {
    let config = EngineConfig {
        max_assets: 2,
        max_markets: 1,
        ..cfg()
    };
    let mut h = bare(config);
    use RejectReason::CapacityExceeded;
    assert_eq!(h.reject(add_asset_cmd("ETH", 8)), CapacityExceeded);
    // Capacity is judged before the spec.
    assert_eq!(h.reject(add_asset_cmd("bad symbol", 99)), CapacityExceeded);
    assert_eq!(h.add_market(spec("BTCUSD")), 0);
    assert_eq!(
        h.reject(Command::AddMarket(Box::new(spec("BTCUSD1")))),
        CapacityExceeded
    );
    let mut bad = spec("");
    bad.min_price_ticks = 0;
    assert_eq!(
        h.reject(Command::AddMarket(Box::new(bad))),
        CapacityExceeded
    );
    assert_eq!(h.ex.asset_count(), 2);
    assert_eq!(h.ex.market_count(), 1);
}

// ---------------------------------------------------------------------------------------
// Admin: specs
// ---------------------------------------------------------------------------------------

#[test]
fn add_asset_spec_errors() {
    let mut h = bare(cfg());
    use RejectReason::InvalidSpec;
    use SpecError::*;
    for sym in ["", "btc", "BT-C", "ABCDEFGHIJKLMNOPQ"] {
        assert_eq!(
            h.reject(add_asset_cmd(sym, 8)),
            InvalidSpec(BadSymbol),
            "{sym}"
        );
    }
    assert_eq!(h.reject(add_asset_cmd("ETH", 19)), InvalidSpec(BadDecimals));
    assert_eq!(
        h.reject(add_asset_cmd("BTC", 8)),
        InvalidSpec(DuplicateSymbol)
    );
    // The spec's own error comes before the duplicate.
    assert_eq!(h.reject(add_asset_cmd("BTC", 19)), InvalidSpec(BadDecimals));
    assert_eq!(
        h.run(add_asset_cmd("ABCDEFGHIJKLMNOP", 18)),
        vec![Event::AssetAdded { asset: 2 }]
    );
    assert_eq!(
        h.run(add_asset_cmd("E0", 0)),
        vec![Event::AssetAdded { asset: 3 }]
    );
}

#[test]
fn add_market_spec_errors() {
    let mut h = bare(cfg());
    h.run(add_asset_cmd("WHOLE", 0));
    use RejectReason::InvalidSpec;
    use SpecError::*;
    let mut check = |f: &dyn Fn(&mut MarketSpec), e: SpecError| {
        let mut s = spec("XYZ");
        f(&mut s);
        assert_eq!(
            h.reject(Command::AddMarket(Box::new(s.clone()))),
            InvalidSpec(e),
            "{s:?}"
        );
    };
    check(&|s| s.symbol = String::new(), BadSymbol);
    check(&|s| s.symbol = "btcusd".into(), BadSymbol);
    check(&|s| s.symbol = "A".repeat(21), BadSymbol);
    check(&|s| s.base = 9, UnknownAsset);
    check(&|s| s.quote = 9, UnknownAsset);
    check(&|s| s.quote = BASE, SameBaseAndQuote);
    check(
        &|s| {
            s.tick_size = 1; // 1 × 1 / 10^2 is not whole
            s.lot_size = 1;
        },
        TickLotNotWhole,
    );
    check(&|s| s.tick_size = 0, TickLotNotWhole);
    check(&|s| s.lot_size = 0, TickLotNotWhole);
    check(&|s| s.min_price_ticks = 0, BadPriceBounds);
    check(
        &|s| s.min_price_ticks = s.max_price_ticks + 1,
        BadPriceBounds,
    );
    check(&|s| s.min_qty_lots = 0, BadQtyBounds);
    check(&|s| s.min_qty_lots = s.max_qty_lots + 1, BadQtyBounds);
    check(
        &|s| (s.min_notional, s.max_notional) = (10, 9),
        BadNotionalBounds,
    );
    for (maker, taker) in [(0, -1), (0, 1_001), (1_001, 1_000), (-21, 20), (-1, 0)] {
        check(
            &|s| {
                s.fees = FeeSchedule {
                    maker_fee_bps: maker,
                    taker_fee_bps: taker,
                }
            },
            BadFees,
        );
    }
    check(&|s| s.required_permission = Some(64), BadPermission);
    check(&|s| s.max_open_orders = 0, BadMaxOpenOrders);
    // Check order: symbol, assets, same asset, tick × lot, bounds, fees, permission.
    check(
        &|s| {
            s.symbol = "x".into();
            s.base = 9;
        },
        BadSymbol,
    );
    check(
        &|s| {
            s.base = 9;
            s.quote = 9;
        },
        UnknownAsset,
    );
    check(
        &|s| {
            s.quote = BASE;
            s.tick_size = 0;
        },
        SameBaseAndQuote,
    );
    check(
        &|s| {
            s.tick_size = 0;
            s.min_price_ticks = 0;
        },
        TickLotNotWhole,
    );
    check(
        &|s| {
            s.min_price_ticks = 0;
            s.min_qty_lots = 0;
        },
        BadPriceBounds,
    );
    check(
        &|s| {
            s.min_qty_lots = 0;
            s.min_notional = 1;
            s.max_notional = 0;
        },
        BadQtyBounds,
    );
    check(
        &|s| {
            s.min_notional = 1;
            s.max_notional = 0;
            s.fees.taker_fee_bps = -1;
        },
        BadNotionalBounds,
    );
    check(
        &|s| {
            s.fees.taker_fee_bps = -1;
            s.required_permission = Some(64);
        },
        BadFees,
    );
    check(
        &|s| {
            s.required_permission = Some(64);
            s.max_open_orders = 0;
        },
        BadPermission,
    );
    // Accepted edge cases, then a duplicate symbol (checked after the spec).
    assert_eq!(h.add_market(spec("BTCUSD")), 0);
    let mut s = spec("BTCUSD");
    assert_eq!(
        h.reject(Command::AddMarket(Box::new(s.clone()))),
        InvalidSpec(DuplicateSymbol)
    );
    s.min_price_ticks = 0;
    assert_eq!(
        h.reject(Command::AddMarket(Box::new(s))),
        InvalidSpec(BadPriceBounds)
    );
    let mut s = spec("ABCDEFGHIJKLMNOPQRST");
    s.fees = FeeSchedule {
        maker_fee_bps: -1_000,
        taker_fee_bps: 1_000,
    };
    s.required_permission = Some(63);
    s.base = 2; // 0 decimals: tick 1 × lot 1 is whole
    s.tick_size = 1;
    s.lot_size = 1;
    assert_eq!(h.add_market(s), 1);
    assert_eq!(h.ex.quote_per_tick_lot(1), Some(1));
}

#[test]
fn max_open_orders_above_u16_is_refused_by_validate_and_add_market() {
    let mut h = bare(cfg());
    let mut s = spec("BTCUSD");
    s.max_open_orders = 65_535;
    assert_eq!(s.validate(|a| (a < 2).then_some(2)), Ok(PER));
    s.max_open_orders = 65_536;
    assert_eq!(
        s.validate(|a| (a < 2).then_some(2)),
        Err(SpecError::BadMaxOpenOrders)
    );
    assert_eq!(
        h.run(Command::AddMarket(Box::new(s))),
        vec![Event::CommandRejected {
            reason: RejectReason::InvalidSpec(SpecError::BadMaxOpenOrders)
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Check order of PlaceOrder
// ---------------------------------------------------------------------------------------

#[test]
fn place_checks_are_applied_in_the_documented_order() {
    use RejectReason::*;
    let mut s = spec("BTCUSD");
    s.required_permission = Some(1);
    s.min_price_ticks = 10;
    s.max_qty_lots = 50;
    s.min_notional = 1_000;
    s.price_band_bps = 1_000;
    s.max_open_orders = 1;
    let mut h = setup_with(cfg(), s);
    for a in [A, B, C, D] {
        h.run(Command::GrantPermission {
            account: a,
            permission: 1,
        });
    }
    h.set_reference(M, Some(100)); // band 90..=110
                                   // 1. account before market, 2. market before client id.
    let mut p = limit(NO_ACCOUNT, Buy, 100, 1);
    p.market = 9;
    assert_eq!(h.reject_place(p), UnknownAccount);
    let mut p = limit(A, Buy, 100, 1);
    p.market = 9;
    p.client_order_id = bad_cid();
    assert_eq!(h.reject_place(p), UnknownMarket);
    // 7. shape before 8. price filter.
    assert_eq!(
        h.reject_place(PlaceOrder {
            quantity: Quantity::Quote(5),
            ..limit(A, Buy, 0, 1)
        }),
        InvalidOrderParameters
    );
    // 8 before 9, 9 before 10, 10 before 11.
    assert_eq!(h.reject_place(limit(A, Buy, 5, 0)), PriceFilter);
    assert_eq!(h.reject_place(limit(A, Buy, 200, 51)), LotSize);
    assert_eq!(h.reject_place(limit(A, Buy, 200, 50)), PercentPrice);
    assert_eq!(h.reject_place(limit(A, Buy, 99, 1)), Notional);
    // 11 before 12.
    h.order(with_cid(limit(A, Buy, 100, 1), "c1")); // 1
    assert_eq!(
        h.reject_place(with_cid(limit(A, Buy, 99, 1), "c1")),
        Notional
    );
    // 12 before 13.
    assert_eq!(
        h.reject_place(with_cid(limit(A, Buy, 100, 1), "c1")),
        DuplicateClientOrderId
    );
    // 13 before 15 and 16: A has its one open order.
    h.order(limit(B, Sell, 105, 1)); // 2
    assert_eq!(
        h.reject_place(maker(limit(A, Buy, 105, 1))),
        TooManyOpenOrders
    );
    // 15 before 16: D has nothing.
    assert_eq!(
        h.reject_place(maker(limit(D, Buy, 105, 1))),
        PostOnlyWouldCross
    );
    assert_eq!(
        h.reject_place(maker(limit(D, Buy, 104, 1))),
        InsufficientBalance
    );
    // 6 before 7: a frozen account's buy, malformed; its sell gets to the shape.
    owe(&mut h, C, QUOTE, 1);
    let malformed = |side| PlaceOrder {
        quantity: Quantity::Quote(5),
        ..limit(C, side, 0, 1)
    };
    assert_eq!(h.reject_place(malformed(Buy)), AccountFrozen);
    assert_eq!(h.reject_place(malformed(Sell)), InvalidOrderParameters);
    // 5 before 6 (C is frozen), 4 before 5: halted market, account without permission.
    h.run(Command::RevokePermission {
        account: C,
        permission: 1,
    });
    assert_eq!(h.reject_place(limit(C, Buy, 100, 1)), NotPermitted);
    h.set_status(M, MarketStatus::CancelOnly);
    assert_eq!(h.reject_place(limit(C, Buy, 100, 1)), MarketCancelOnly);
    h.set_status(M, MarketStatus::Halted);
    assert_eq!(h.reject_place(limit(C, Buy, 100, 1)), MarketHalted);
    // 3 before 4.
    assert_eq!(
        h.reject_place(PlaceOrder {
            client_order_id: bad_cid(),
            ..limit(C, Buy, 100, 1)
        }),
        InvalidClientOrderId
    );
}

#[test]
fn insufficient_balance_per_order_kind() {
    let mut h = setup();
    h.deposit(D, BASE, 250);
    h.deposit(D, QUOTE, 999);
    use RejectReason::InsufficientBalance;
    assert_eq!(h.reject_place(limit(D, Buy, 100, 1)), InsufficientBalance); // needs 1_000
    assert_eq!(h.reject_place(limit(D, Sell, 100, 3)), InsufficientBalance); // needs 300
    assert_eq!(
        h.reject_place(market(D, Sell, Quantity::Base(3))),
        InsufficientBalance
    );
    assert_eq!(
        h.reject_place(market(D, Buy, Quantity::Quote(1_000))),
        InsufficientBalance
    );
    assert_eq!(h.order(limit(D, Buy, 99, 1)), 1); // 990
    assert_eq!(h.order(limit(D, Sell, 200, 2)), 2); // 200 base
                                                    // Left free: 9 quote, 50 base.
    assert_eq!(
        h.reject_place(market(D, Buy, Quantity::Quote(10))),
        InsufficientBalance
    );
    assert_eq!(
        h.reject_place(market(D, Sell, Quantity::Base(1))),
        InsufficientBalance
    );
    // Free quote > 0 is enough for a market buy by base; free base > 0 for a sell by quote.
    assert_eq!(h.order(market(D, Buy, Quantity::Base(1_000))), 3);
    assert_eq!(h.order(market(D, Sell, Quantity::Quote(1_000_000))), 4);
    h.deposit(5, QUOTE, 1);
    assert_eq!(
        h.reject_place(market(5, Sell, Quantity::Quote(1_000))),
        InsufficientBalance
    );
    assert_eq!(
        h.reject_place(market(6, Buy, Quantity::Base(1))),
        InsufficientBalance
    );
}

// ---------------------------------------------------------------------------------------
// Every reject reason
// ---------------------------------------------------------------------------------------

const REASON_COUNT: usize = 40;

const ALL_REASONS: [RejectReason; REASON_COUNT] = {
    use RejectReason::*;
    use SpecError as S;
    [
        UnknownMarket,
        UnknownAccount,
        UnknownAsset,
        MarketHalted,
        MarketCancelOnly,
        NotPermitted,
        PriceFilter,
        LotSize,
        Notional,
        PercentPrice,
        InsufficientBalance,
        PostOnlyWouldCross,
        TooManyOpenOrders,
        DuplicateClientOrderId,
        InvalidClientOrderId,
        UnknownOrder,
        InvalidOrderParameters,
        InvalidTimeInForce,
        InvalidExpiry,
        InvalidAmend,
        CapacityExceeded,
        BalanceOverflow,
        UnknownWithdrawal,
        DuplicateWithdrawal,
        UnknownDeposit,
        DuplicateDeposit,
        AccountFrozen,
        InvalidAmount,
        InvalidSpec(S::BadSymbol),
        InvalidSpec(S::DuplicateSymbol),
        InvalidSpec(S::BadDecimals),
        InvalidSpec(S::UnknownAsset),
        InvalidSpec(S::SameBaseAndQuote),
        InvalidSpec(S::TickLotNotWhole),
        InvalidSpec(S::BadPriceBounds),
        InvalidSpec(S::BadQtyBounds),
        InvalidSpec(S::BadNotionalBounds),
        InvalidSpec(S::BadFees),
        InvalidSpec(S::BadPermission),
        InvalidSpec(S::BadMaxOpenOrders),
    ]
};

/// Drives one minimal scenario reaching `reason` and returns the events of its last
/// command. The match has no wildcard, so a new variant does not compile until it has a
/// scenario here (and, through `REASON_COUNT`, a place in `ALL_REASONS`).
fn reach(reason: RejectReason) -> Vec<Event> {
    use RejectReason::*;
    use SpecError as S;
    let mut h = setup();
    let add_market = |h: &mut Harness, f: fn(&mut MarketSpec)| {
        let mut s = spec("NEW");
        f(&mut s);
        h.run(Command::AddMarket(Box::new(s)))
    };
    match reason {
        UnknownMarket => h.place(limit_in(9, A, Buy, 100, 1)),
        UnknownAccount => h.place(limit(NO_ACCOUNT, Buy, 100, 1)),
        UnknownAsset => h.run(Command::Deposit {
            account: A,
            asset: 9,
            amount: 1,
        }),
        MarketHalted => {
            h.set_status(M, MarketStatus::Halted);
            h.place(limit(A, Buy, 100, 1))
        }
        MarketCancelOnly => {
            h.set_status(M, MarketStatus::CancelOnly);
            h.place(limit(A, Buy, 100, 1))
        }
        NotPermitted => {
            let mut s = spec("RWA");
            s.required_permission = Some(0);
            let m = h.add_market(s);
            h.place(limit_in(m, A, Buy, 100, 1))
        }
        PriceFilter => h.place(limit(A, Buy, 0, 1)),
        LotSize => h.place(limit(A, Buy, 100, 0)),
        Notional => h.place(market(A, Buy, Quantity::Quote(0))),
        PercentPrice => {
            let mut s = spec("BAND");
            s.price_band_bps = 100;
            let m = h.add_market(s);
            h.set_reference(m, Some(100));
            h.place(limit_in(m, A, Buy, 102, 1))
        }
        InsufficientBalance => h.place(limit(D, Buy, 100, 1)),
        PostOnlyWouldCross => {
            h.order(limit(B, Sell, 100, 1));
            h.place(maker(limit(A, Buy, 100, 1)))
        }
        TooManyOpenOrders => {
            let mut s = spec("ONE");
            s.max_open_orders = 1;
            let m = h.add_market(s);
            h.order(limit_in(m, A, Buy, 100, 1));
            h.place(limit_in(m, A, Buy, 100, 1))
        }
        DuplicateClientOrderId => {
            h.order(with_cid(limit(A, Buy, 100, 1), "same"));
            h.place(with_cid(limit(A, Buy, 100, 1), "same"))
        }
        InvalidClientOrderId => h.place(PlaceOrder {
            client_order_id: bad_cid(),
            ..limit(A, Buy, 100, 1)
        }),
        UnknownOrder => h.run(cancel(A, 1)),
        InvalidOrderParameters => h.place(PlaceOrder {
            price: Some(100),
            ..market(A, Buy, Quantity::Base(1))
        }),
        InvalidTimeInForce => h.place(PlaceOrder {
            tif: TimeInForce::Gtc,
            ..market(A, Buy, Quantity::Base(1))
        }),
        InvalidExpiry => h.place(gtd(limit(A, Buy, 100, 1), NOW)),
        InvalidAmend => {
            h.order(limit(A, Buy, 100, 1));
            h.run(amend(A, 1, 0, None))
        }
        CapacityExceeded => {
            let mut h = setup_with(
                EngineConfig {
                    max_orders: 1,
                    ..cfg()
                },
                spec("BTCUSD"),
            );
            h.order(limit(A, Buy, 100, 1));
            h.place(limit(A, Buy, 100, 1))
        }
        BalanceOverflow => h.run(Command::Deposit {
            account: A,
            asset: BASE,
            amount: u64::MAX,
        }),
        UnknownWithdrawal => h.run(Command::WithdrawRelease { withdrawal: 1 }),
        DuplicateWithdrawal => {
            let hold = Command::WithdrawHold {
                account: A,
                asset: BASE,
                amount: 1,
                withdrawal: 1,
            };
            h.run(hold.clone());
            h.run(hold)
        }
        UnknownDeposit => h.run(Command::DepositSettle { deposit: 1 }),
        DuplicateDeposit => {
            h.run(credit(1, A, BASE, 10));
            h.run(credit(1, B, QUOTE, 20))
        }
        AccountFrozen => {
            owe(&mut h, A, BASE, 1);
            h.place(limit(A, Buy, 100, 1))
        }
        InvalidAmount => h.run(Command::Deposit {
            account: A,
            asset: BASE,
            amount: 0,
        }),
        InvalidSpec(S::BadSymbol) => h.run(add_asset_cmd("eth", 8)),
        InvalidSpec(S::DuplicateSymbol) => h.run(add_asset_cmd("BTC", 8)),
        InvalidSpec(S::BadDecimals) => h.run(add_asset_cmd("ETH", 19)),
        InvalidSpec(S::UnknownAsset) => add_market(&mut h, |s| s.base = 9),
        InvalidSpec(S::SameBaseAndQuote) => add_market(&mut h, |s| s.quote = s.base),
        InvalidSpec(S::TickLotNotWhole) => add_market(&mut h, |s| {
            s.tick_size = 1;
            s.lot_size = 1;
        }),
        InvalidSpec(S::BadPriceBounds) => add_market(&mut h, |s| s.min_price_ticks = 0),
        InvalidSpec(S::BadQtyBounds) => add_market(&mut h, |s| s.min_qty_lots = 0),
        InvalidSpec(S::BadNotionalBounds) => add_market(&mut h, |s| {
            s.min_notional = 2;
            s.max_notional = 1;
        }),
        InvalidSpec(S::BadFees) => add_market(&mut h, |s| s.fees.taker_fee_bps = -1),
        InvalidSpec(S::BadPermission) => add_market(&mut h, |s| s.required_permission = Some(64)),
        InvalidSpec(S::BadMaxOpenOrders) => add_market(&mut h, |s| s.max_open_orders = 0),
    }
}

/// Position of a reason in `ALL_REASONS`; exhaustive, so it breaks on a new variant.
fn reason_index(reason: RejectReason) -> usize {
    use RejectReason::*;
    use SpecError as S;
    match reason {
        UnknownMarket => 0,
        UnknownAccount => 1,
        UnknownAsset => 2,
        MarketHalted => 3,
        MarketCancelOnly => 4,
        NotPermitted => 5,
        PriceFilter => 6,
        LotSize => 7,
        Notional => 8,
        PercentPrice => 9,
        InsufficientBalance => 10,
        PostOnlyWouldCross => 11,
        TooManyOpenOrders => 12,
        DuplicateClientOrderId => 13,
        InvalidClientOrderId => 14,
        UnknownOrder => 15,
        InvalidOrderParameters => 16,
        InvalidTimeInForce => 17,
        InvalidExpiry => 18,
        InvalidAmend => 19,
        CapacityExceeded => 20,
        BalanceOverflow => 21,
        UnknownWithdrawal => 22,
        DuplicateWithdrawal => 23,
        UnknownDeposit => 24,
        DuplicateDeposit => 25,
        AccountFrozen => 26,
        InvalidAmount => 27,
        InvalidSpec(S::BadSymbol) => 28,
        InvalidSpec(S::DuplicateSymbol) => 29,
        InvalidSpec(S::BadDecimals) => 30,
        InvalidSpec(S::UnknownAsset) => 31,
        InvalidSpec(S::SameBaseAndQuote) => 32,
        InvalidSpec(S::TickLotNotWhole) => 33,
        InvalidSpec(S::BadPriceBounds) => 34,
        InvalidSpec(S::BadQtyBounds) => 35,
        InvalidSpec(S::BadNotionalBounds) => 36,
        InvalidSpec(S::BadFees) => 37,
        InvalidSpec(S::BadPermission) => 38,
        InvalidSpec(S::BadMaxOpenOrders) => 39,
    }
}

#[test]
fn every_reject_reason_is_reached() {
    // ALL_REASONS lists every variant exactly once.
    for (i, r) in ALL_REASONS.iter().enumerate() {
        assert_eq!(reason_index(*r), i, "{r:?} out of place in ALL_REASONS");
    }
    let mut missed = Vec::new();
    for r in ALL_REASONS {
        let ev = reach(r);
        match ev[..] {
            [Event::OrderRejected { reason, .. }]
            | [Event::CancelRejected { reason, .. }]
            | [Event::CommandRejected { reason }]
                if reason == r => {}
            _ => missed.push(format!("{r:?}: got {ev:?}")),
        }
    }
    assert!(
        missed.is_empty(),
        "reasons not reached:\n{}",
        missed.join("\n")
    );
}
