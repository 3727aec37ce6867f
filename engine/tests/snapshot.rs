//! Snapshots: a restored exchange has the same state hash, passes its invariants, and goes
//! on exactly like the original (same events for every later command); bad bytes give an
//! error, never a panic or a wrong exchange; the same state gives the same bytes.
//!
//! Every test name contains `snapshot`, so `cargo test -p fulgur-engine snapshot` runs them.

use std::io;

use fulgur_engine::{
    AccountId, AssetClass, AssetSpec, ChecksumRegion, ClientOrderId, Command, EngineConfig, Event,
    Exchange, FeeSchedule, MarketSpec, MarketStatus, OrderRef, OrderType, PlaceOrder, Quantity,
    Sequenced, Side, SnapshotError, StpMode, TimeInForce,
};
use proptest::prelude::*;

/// xorshift64*: small, seedable, the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ACCOUNTS: u32 = 6;
const ASSETS: u32 = 4;

/// Roomy, or tight enough that every capacity rejection happens (and must happen the same
/// way after a restore: the config travels in the snapshot).
fn config(tight: bool) -> EngineConfig {
    if tight {
        EngineConfig {
            max_accounts: ACCOUNTS,
            max_assets: 5,
            max_markets: 4,
            max_orders: 60,
            max_orders_per_market: 30,
            max_levels_per_side: 5,
            max_gtd_orders: 6,
            max_pending_withdrawals: 4,
            max_pending_deposits: 3,
            fee_account: 5,
        }
    } else {
        EngineConfig {
            max_accounts: ACCOUNTS,
            max_assets: 8,
            max_markets: 8,
            max_orders: 5_000,
            max_orders_per_market: 5_000,
            max_levels_per_side: 64,
            max_gtd_orders: 5_000,
            max_pending_withdrawals: 64,
            max_pending_deposits: 64,
            fee_account: 0,
        }
    }
}

fn market_spec(symbol: &str, base: u32, quote: u32, tight: bool) -> MarketSpec {
    let rwa = symbol.starts_with("TBILL");
    MarketSpec {
        symbol: symbol.into(),
        base,
        quote,
        tick_size: 100,
        lot_size: 1_000_000,
        min_price_ticks: 1,
        max_price_ticks: 100_000,
        min_qty_lots: 1,
        max_qty_lots: 10_000,
        min_notional: 0,
        max_notional: u64::MAX,
        price_band_bps: if rwa { 300 } else { 0 },
        max_open_orders: if tight { 8 } else { 5_000 },
        status: MarketStatus::Trading,
        fees: match symbol.len() % 3 {
            0 => FeeSchedule {
                maker_fee_bps: -2,
                taker_fee_bps: 6,
            },
            1 => FeeSchedule {
                maker_fee_bps: 3,
                taker_fee_bps: 9,
            },
            _ => FeeSchedule {
                maker_fee_bps: 0,
                taker_fee_bps: 5,
            },
        },
        required_permission: rwa.then_some(1),
    }
}

fn setup(tight: bool) -> Vec<Command> {
    let mut v: Vec<Command> = ["USD", "BTC", "ETH", "TBILL"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Command::AddAsset(Box::new(AssetSpec {
                symbol: (*s).into(),
                decimals: 8,
                class: [
                    AssetClass::Stablecoin,
                    AssetClass::Crypto,
                    AssetClass::Crypto,
                    AssetClass::Rwa,
                ][i],
            }))
        })
        .collect();
    v.push(Command::AddMarket(Box::new(market_spec(
        "BTCUSD", 1, 0, tight,
    ))));
    v.push(Command::AddMarket(Box::new(market_spec(
        "ETHUSD", 2, 0, tight,
    ))));
    v.push(Command::AddMarket(Box::new(market_spec(
        "TBILLUSD", 3, 0, tight,
    ))));
    for account in 0..ACCOUNTS {
        if account % 2 == 0 {
            v.push(Command::GrantPermission {
                account,
                permission: 1,
            });
        }
        for asset in 0..ASSETS {
            v.push(Command::Deposit {
                account,
                asset,
                amount: 1_000_000_000_000,
            });
        }
    }
    v
}

/// Random commands of every kind; cancels and amends mostly name orders it saw accepted.
struct Gen {
    rng: Rng,
    ts: u64,
    tight: bool,
    seen: Vec<(u64, AccountId, u32)>,
    /// Resting orders still to place before the mix starts: long queues to restore.
    build: u32,
    /// Pending chain deposits: id → (account, asset), from the events.
    pending: std::collections::BTreeMap<u64, (AccountId, u32)>,
    /// Last free balance reported per (account, asset).
    free: std::collections::BTreeMap<(AccountId, u32), u64>,
    /// The command after a drain: its withdrawal finalized, making room for the next.
    then: Option<Command>,
}

impl Gen {
    fn new(seed: u64, tight: bool) -> Gen {
        Gen {
            rng: Rng::new(seed),
            ts: 1_700_000_000_000_000_000,
            tight,
            seen: Vec::new(),
            build: [0, 150, 400][(seed % 3) as usize],
            pending: Default::default(),
            free: Default::default(),
            then: None,
        }
    }

    /// A limit order away from the touch, that rests.
    fn passive(&mut self) -> Command {
        let side = self.side();
        let (order_type, tif) = match self.rng.below(4) {
            0 => (OrderType::LimitMaker, TimeInForce::Gtc),
            1 => (
                OrderType::Limit,
                TimeInForce::Gtd {
                    expire_ns: self.ts + self.rng.below(3_000_000),
                },
            ),
            _ => (OrderType::Limit, TimeInForce::Gtc),
        };
        let price = match side {
            Side::Buy => 990 - self.rng.below(4),
            Side::Sell => 1_020 + self.rng.below(4),
        };
        Command::PlaceOrder(PlaceOrder {
            account: self.rng.below(ACCOUNTS as u64) as u32,
            market: self.rng.below(3) as u32,
            side,
            order_type,
            tif,
            quantity: Quantity::Base(1 + self.rng.below(20)),
            price: Some(price),
            client_order_id: self.client_id(),
            stp: [
                StpMode::None,
                StpMode::ExpireTaker,
                StpMode::ExpireMaker,
                StpMode::ExpireBoth,
            ][self.rng.below(4) as usize],
        })
    }

    fn account(&mut self) -> AccountId {
        if self.rng.chance(2) {
            ACCOUNTS + 1
        } else {
            self.rng.below(ACCOUNTS as u64) as u32
        }
    }

    fn market(&mut self) -> u32 {
        // Market 3 exists only once an AddMarket in the stream succeeds; 5 never.
        if self.rng.chance(3) {
            [3, 5][self.rng.below(2) as usize]
        } else {
            self.rng.below(3) as u32
        }
    }

    fn client_id(&mut self) -> ClientOrderId {
        match self.rng.below(10) {
            0..=4 => ClientOrderId::NONE,
            5..=8 => ClientOrderId::new(&format!("o-{}", self.rng.below(12))).unwrap(),
            _ => ClientOrderId::new(&"x".repeat(36)).unwrap(),
        }
    }

    fn side(&mut self) -> Side {
        if self.rng.chance(50) {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn target(&mut self) -> (AccountId, u32, OrderRef) {
        if !self.seen.is_empty() && self.rng.chance(80) {
            let recent = (self.seen.len() as u64).min(48);
            let i = self.seen.len() - 1 - self.rng.below(recent) as usize;
            let (id, account, market) = self.seen[i];
            (account, market, OrderRef::Id(id))
        } else if self.rng.chance(60) {
            (
                self.rng.below(ACCOUNTS as u64) as u32,
                self.rng.below(3) as u32,
                OrderRef::Client(self.client_id()),
            )
        } else {
            let id = self.rng.below(5_000);
            (self.account(), self.market(), OrderRef::Id(id))
        }
    }

    /// A pending deposit's id and (account, asset) (mostly), or any id.
    fn deposit(&mut self) -> (u64, Option<(AccountId, u32)>) {
        if !self.pending.is_empty() && self.rng.chance(75) {
            let i = self.rng.below(self.pending.len() as u64) as usize;
            let (&id, &at) = self.pending.iter().nth(i).expect("in range");
            (id, Some(at))
        } else {
            (self.rng.below(16), None)
        }
    }

    fn price(&mut self, side: Side) -> u64 {
        if self.rng.chance(65) {
            // Away from the touch: the book grows deep, with long queues.
            return match side {
                Side::Buy => 980 + self.rng.below(14),
                Side::Sell => 1_012 + self.rng.below(14),
            };
        }
        let base = 1_000 + self.rng.below(12);
        match side {
            Side::Buy => base - 6,
            Side::Sell => base,
        }
    }

    fn next(&mut self) -> Command {
        self.ts += self.rng.below(2_000);
        if self.build > 0 {
            self.build -= 1;
            return self.passive();
        }
        if let Some(c) = self.then.take() {
            return c;
        }
        match self.rng.below(100) {
            0..=49 => {
                let side = self.side();
                let (order_type, tif) = match self.rng.below(11) {
                    0..=3 => (OrderType::Limit, TimeInForce::Gtc),
                    4 => (OrderType::Limit, TimeInForce::Ioc),
                    5 => (OrderType::Limit, TimeInForce::Fok),
                    6 => (
                        OrderType::Limit,
                        TimeInForce::Gtd {
                            expire_ns: self.ts + self.rng.below(300_000),
                        },
                    ),
                    7 => (
                        OrderType::LimitMaker,
                        TimeInForce::Gtd {
                            expire_ns: self.ts + self.rng.below(300_000),
                        },
                    ),
                    8 => (OrderType::LimitMaker, TimeInForce::Gtc),
                    _ => (OrderType::Market, TimeInForce::Ioc),
                };
                let quantity = if order_type == OrderType::Market && self.rng.chance(30) {
                    Quantity::Quote(self.rng.below(2_000_000_000))
                } else {
                    Quantity::Base(self.rng.below(30))
                };
                let price = (order_type != OrderType::Market).then(|| self.price(side));
                Command::PlaceOrder(PlaceOrder {
                    account: self.account(),
                    market: self.market(),
                    side,
                    order_type,
                    tif,
                    quantity,
                    price,
                    client_order_id: self.client_id(),
                    stp: [
                        StpMode::None,
                        StpMode::ExpireTaker,
                        StpMode::ExpireMaker,
                        StpMode::ExpireBoth,
                    ][self.rng.below(4) as usize],
                })
            }
            50..=61 => {
                let (account, market, target) = self.target();
                Command::CancelOrder {
                    account,
                    market,
                    target,
                }
            }
            62..=73 => {
                let side = self.side();
                let new_price = self.rng.chance(50).then(|| self.price(side));
                let (account, market, target) = self.target();
                Command::AmendOrder {
                    account,
                    market,
                    target,
                    new_qty: self.rng.below(40),
                    new_price,
                }
            }
            // Rare: it empties an account's book.
            74 if self.rng.chance(25) => Command::CancelAll {
                account: self.account(),
                market: self.rng.chance(50).then(|| self.market()),
            },
            75..=78 => Command::Deposit {
                account: self.account(),
                asset: self.rng.below(ASSETS as u64 + 1) as u32,
                amount: self.rng.below(1_000_000_000),
            },
            79..=81 => Command::WithdrawHold {
                account: self.account(),
                asset: self.rng.below(ASSETS as u64) as u32,
                amount: self.rng.below(1_000_000_000),
                withdrawal: self.rng.below(12),
            },
            82 => Command::WithdrawRelease {
                withdrawal: self.rng.below(12),
            },
            83 => Command::WithdrawFinalize {
                withdrawal: self.rng.below(12),
            },
            84 => Command::SetMarketStatus {
                market: self.market(),
                status: match self.rng.below(8) {
                    0 => MarketStatus::Halted,
                    1 => MarketStatus::CancelOnly,
                    _ => MarketStatus::Trading,
                },
                cancel_open: self.rng.chance(20),
            },
            85..=86 => Command::SetReferencePrice {
                market: self.market(),
                price: self.rng.chance(80).then(|| 995 + self.rng.below(12)),
            },
            87 => Command::GrantPermission {
                account: self.account(),
                permission: [1, 7, 63, 64][self.rng.below(4) as usize],
            },
            88 => Command::RevokePermission {
                account: self.account(),
                permission: [1, 7][self.rng.below(2) as usize],
            },
            89 => {
                // A fourth market (accepted once), a duplicate, or one too many.
                let symbol =
                    ["ETHBTC", "BTCUSD", "TBILLBTC", "ETHTBILL"][self.rng.below(4) as usize];
                let (base, quote) = match symbol {
                    "ETHBTC" => (2, 1),
                    "TBILLBTC" => (3, 1),
                    "ETHTBILL" => (2, 3),
                    _ => (1, 0),
                };
                Command::AddMarket(Box::new(market_spec(symbol, base, quote, self.tight)))
            }
            90 => Command::AddAsset(Box::new(AssetSpec {
                symbol: ["SOL", "USD"][self.rng.below(2) as usize].into(),
                decimals: 6,
                class: AssetClass::Crypto,
            })),
            91..=92 => Command::DepositCredit {
                deposit: self.rng.below(16),
                account: self.account(),
                asset: self.rng.below(ASSETS as u64 + 1) as u32,
                amount: self.rng.below(2_000_000_000_000),
            },
            93 => Command::DepositSettle {
                deposit: self.deposit().0,
            },
            94..=95 => Command::DepositReverse {
                deposit: self.deposit().0,
            },
            // Everything free of a pending deposit's account and asset goes: reversing it
            // then cancels orders, and may leave a deficit (and a frozen account).
            96..=97 => {
                let (account, asset) = self
                    .deposit()
                    .1
                    .unwrap_or((self.account(), self.rng.below(ASSETS as u64) as u32));
                let withdrawal = self.rng.below(12);
                self.then = Some(Command::WithdrawFinalize { withdrawal });
                Command::WithdrawHold {
                    account,
                    asset,
                    amount: self.free.get(&(account, asset)).copied().unwrap_or(0),
                    withdrawal,
                }
            }
            _ => Command::Tick,
        }
    }

    /// Learns the ids of accepted orders, pending deposits and free balances from the
    /// events.
    fn observe(&mut self, events: &[Event]) {
        for e in events {
            match *e {
                Event::OrderAccepted {
                    order_id,
                    account,
                    market,
                    ..
                } => self.seen.push((order_id, account, market)),
                Event::DepositCredited {
                    deposit,
                    account,
                    asset,
                    ..
                } => {
                    self.pending.insert(deposit, (account, asset));
                }
                Event::DepositSettled { deposit } | Event::DepositReversed { deposit, .. } => {
                    self.pending.remove(&deposit);
                }
                Event::BalanceChanged {
                    account,
                    asset,
                    free,
                    ..
                } => {
                    self.free.insert((account, asset), free);
                }
                _ => {}
            }
        }
    }
}

/// The `i`-th command of a stream (seq = i + 1).
fn stream(seed: u64, tight: bool) -> impl FnMut(usize, &[Event]) -> Sequenced {
    let setup = setup(tight);
    let mut g = Gen::new(seed, tight);
    move |i, last_events| {
        g.observe(last_events);
        let command = if i < setup.len() {
            setup[i].clone()
        } else {
            g.next()
        };
        Sequenced {
            seq: i as u64 + 1,
            ts_ns: g.ts,
            command,
        }
    }
}

/// The error of a restore that must fail.
fn read_err(r: impl io::Read) -> SnapshotError {
    match Exchange::read_snapshot(r) {
        Ok(_) => panic!("snapshot accepted"),
        Err(e) => e,
    }
}

fn snapshot_bytes(ex: &Exchange, last_seq: u64) -> Vec<u8> {
    let mut v = Vec::new();
    ex.write_snapshot(last_seq, &mut v).unwrap();
    v
}

/// Runs `n` commands of a seeded stream into a fresh exchange.
fn run(seed: u64, tight: bool, n: usize) -> (Exchange, u64) {
    let mut ex = Exchange::new(config(tight));
    let mut next = stream(seed, tight);
    let mut out = Vec::new();
    for i in 0..n {
        let cmd = next(i, &out);
        out.clear();
        ex.apply(&cmd, &mut out);
    }
    (ex, n as u64)
}

/// What a stream exercised, so that "the restored exchange behaves the same" means
/// something.
#[derive(Default, Debug)]
struct Coverage {
    trades: u32,
    expired: u32,
    stp: u32,
    halted: u32,
    amend_moved: u32,
    amend_kept: u32,
    capacity: u32,
    withdrawals: u32,
    markets_added: u32,
    settled: u32,
    reversal_cancels: u32,
    deficits: u32,
    covered: u32,
}

impl Coverage {
    fn count(&mut self, events: &[Event]) {
        use fulgur_engine::{CancelReason, RejectReason};
        for e in events {
            match e {
                Event::Trade { .. } => self.trades += 1,
                Event::OrderCancelled { reason, .. } => match reason {
                    CancelReason::Expired => self.expired += 1,
                    CancelReason::SelfTradePrevention => self.stp += 1,
                    CancelReason::Halted => self.halted += 1,
                    CancelReason::DepositReversed => self.reversal_cancels += 1,
                    _ => {}
                },
                Event::OrderAmended { priority_kept, .. } => {
                    if *priority_kept {
                        self.amend_kept += 1
                    } else {
                        self.amend_moved += 1
                    }
                }
                Event::OrderRejected {
                    reason: RejectReason::CapacityExceeded,
                    ..
                } => self.capacity += 1,
                Event::WithdrawalFinalized { .. } | Event::WithdrawalReleased { .. } => {
                    self.withdrawals += 1
                }
                Event::MarketAdded { market } if *market >= 3 => self.markets_added += 1,
                Event::DepositSettled { .. } => self.settled += 1,
                Event::DeficitChanged { deficit: 0, .. } => self.covered += 1,
                Event::DeficitChanged { .. } => self.deficits += 1,
                _ => {}
            }
        }
    }

    fn assert_broad(&self, tight: bool) {
        let c = self;
        let ok = c.trades > 100
            && c.expired > 5
            && c.stp > 5
            && c.halted > 0
            && c.amend_moved > 5
            && c.amend_kept > 5
            && c.withdrawals > 5
            && c.markets_added > 0
            && c.settled > 5
            && c.reversal_cancels > 0
            && c.deficits > 0
            && (!tight || c.capacity > 5);
        assert!(ok, "the stream should exercise more: {c:?}");
    }
}

#[test]
fn snapshot_round_trip_keeps_state_hash_and_invariants() {
    for (seed, tight) in [(1, false), (2, true), (3, false), (4, true)] {
        let mut ex = Exchange::new(config(tight));
        let mut next = stream(seed, tight);
        let mut out = Vec::new();
        let mut rested = 0;
        let mut seen = Coverage::default();
        for i in 0..4_000 {
            if i % 500 == 0 {
                let bytes = snapshot_bytes(&ex, i as u64);
                let (r, seq) = Exchange::read_snapshot(&bytes[..]).unwrap();
                assert_eq!(seq, i as u64);
                assert_eq!(r.state_hash(), ex.state_hash(), "seed {seed} at {i}");
                assert_eq!(r.config(), ex.config());
                assert_eq!(r.next_order_id(), ex.next_order_id());
                assert_eq!(r.resting_orders(), ex.resting_orders());
                for a in 0..ACCOUNTS {
                    assert_eq!(r.open_orders(a), ex.open_orders(a));
                }
                r.check_invariants().unwrap();
                rested = rested.max(ex.resting_orders());
            }
            let cmd = next(i, &out);
            out.clear();
            ex.apply(&cmd, &mut out);
            seen.count(&out);
        }
        assert!(
            rested > 5,
            "seed {seed}: the stream should leave orders resting"
        );
        seen.assert_broad(tight);
    }
}

#[test]
fn snapshot_of_an_empty_exchange_round_trips() {
    let ex = Exchange::new(EngineConfig::default());
    let bytes = snapshot_bytes(&ex, 0);
    let (r, seq) = Exchange::read_snapshot(&bytes[..]).unwrap();
    assert_eq!(seq, 0);
    assert_eq!(r.state_hash(), ex.state_hash());
    assert_eq!(r.config(), ex.config());
    assert_eq!(snapshot_bytes(&r, 0), bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Snapshot at random points, restore, then feed the rest of the stream to the original
    /// and to every restored copy: the same events for every command, the same final hash,
    /// and each restored copy writes the very bytes it was restored from.
    #[test]
    fn snapshot_restore_then_continue_matches_the_original(
        seed in any::<u64>(),
        tight in any::<bool>(),
        n in 200usize..4_000,
        cuts in prop::collection::vec(0.0f64..=1.0, 1..5),
    ) {
        let mut cut_at: Vec<usize> = cuts.iter().map(|f| (f * n as f64) as usize).collect();
        cut_at.sort_unstable();
        cut_at.dedup();
        let mut orig = Exchange::new(config(tight));
        let mut next = stream(seed, tight);
        let mut restored: Vec<(usize, Exchange)> = Vec::new();
        let (mut out, mut out_r) = (Vec::new(), Vec::new());
        for i in 0..=n {
            if cut_at.binary_search(&i).is_ok() {
                let bytes = snapshot_bytes(&orig, i as u64);
                let (r, seq) = Exchange::read_snapshot(&bytes[..]).unwrap();
                prop_assert_eq!(seq, i as u64);
                prop_assert_eq!(r.state_hash(), orig.state_hash());
                prop_assert_eq!(r.check_invariants(), Ok(()));
                prop_assert!(snapshot_bytes(&r, i as u64) == bytes, "restored copy writes other bytes");
                restored.push((i, r));
            }
            if i == n {
                break;
            }
            let cmd = next(i, &out);
            out.clear();
            orig.apply(&cmd, &mut out);
            for (at, r) in restored.iter_mut() {
                out_r.clear();
                r.apply(&cmd, &mut out_r);
                prop_assert_eq!(
                    &out_r, &out,
                    "command #{} {:?}: restored at {} emits other events", i, cmd.command, at
                );
            }
        }
        orig.check_invariants().unwrap();
        let bytes = snapshot_bytes(&orig, n as u64);
        for (at, r) in &restored {
            prop_assert_eq!(r.state_hash(), orig.state_hash(), "restored at {}", at);
            prop_assert_eq!(r.check_invariants(), Ok(()));
            prop_assert!(snapshot_bytes(r, n as u64) == bytes, "restored at {at}: other bytes at the end");
        }
    }

    /// Random corruption of a real snapshot (a few bytes anywhere) is always an error.
    #[test]
    fn snapshot_corruption_is_an_error(
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let (ex, seq) = run(seed, false, 600);
        let good = snapshot_bytes(&ex, seq);
        let mut bad = good.clone();
        for (at, x) in &flips {
            bad[at.index(good.len())] ^= x;
        }
        prop_assume!(bad != good);
        let r = Exchange::read_snapshot(&bad[..]);
        prop_assert!(r.is_err(), "corrupted snapshot accepted");
    }
}

proptest! {
    /// Garbage behind valid checksums (a writer bug, a forger): an error or a consistent
    /// exchange, never a panic. (The header is left alone: a config sealed by its checksum
    /// is trusted, and a huge one would allocate what `Exchange::new` allocates for it.)
    #[test]
    fn snapshot_resealed_garbage_is_refused_or_consistent(
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (ex, seq) = run(seed, seed % 2 == 0, 400);
        let mut bad = snapshot_bytes(&ex, seq);
        let body = HEADER_CRC_AT + 4..bad.len() - 4;
        for (at, x) in &flips {
            bad[body.start + at.index(body.len())] = *x;
        }
        reseal(&mut bad);
        if let Ok((r, s)) = Exchange::read_snapshot(&bad[..]) {
            prop_assert_eq!(r.check_invariants(), Ok(()));
            let again = snapshot_bytes(&r, s);
            let (r2, _) = Exchange::read_snapshot(&again[..]).unwrap();
            prop_assert_eq!(r2.state_hash(), r.state_hash());
        }
    }
}

/// A small snapshot with a bit of everything: orders (GTD, post-only, client ids, every
/// STP mode), a partial fill, a withdrawal hold, a permission, a reference price, a pending
/// chain deposit and a deficit (777 of asset 2, account 5).
fn small_exchange() -> Exchange {
    let mut ex = Exchange::new(config(false));
    let mut cmds = setup(false);
    let place = |account, side, tif, price, qty, client: &str, stp| {
        Command::PlaceOrder(PlaceOrder {
            account,
            market: 0,
            side,
            order_type: if client == "pm" {
                OrderType::LimitMaker
            } else {
                OrderType::Limit
            },
            tif,
            quantity: Quantity::Base(qty),
            price: Some(price),
            client_order_id: if client.is_empty() {
                ClientOrderId::NONE
            } else {
                ClientOrderId::new(client).unwrap()
            },
            stp,
        })
    };
    let gtd = TimeInForce::Gtd {
        expire_ns: 1_000_000,
    };
    cmds.extend([
        place(1, Side::Buy, TimeInForce::Gtc, 990, 5, "a", StpMode::None),
        place(2, Side::Buy, gtd, 990, 7, "", StpMode::ExpireTaker),
        place(
            3,
            Side::Buy,
            TimeInForce::Gtc,
            985,
            3,
            "pm",
            StpMode::ExpireMaker,
        ),
        place(1, Side::Sell, gtd, 1_010, 4, "b", StpMode::ExpireBoth),
        place(4, Side::Sell, TimeInForce::Gtc, 1_005, 9, "", StpMode::None),
        place(2, Side::Sell, TimeInForce::Ioc, 990, 2, "", StpMode::None),
        Command::WithdrawHold {
            account: 3,
            asset: 0,
            amount: 12_345,
            withdrawal: 77,
        },
        Command::SetReferencePrice {
            market: 1,
            price: Some(1_001),
        },
        Command::DepositCredit {
            deposit: 31,
            account: 2,
            asset: 1,
            amount: 5_000,
        },
        Command::DepositCredit {
            deposit: 32,
            account: 5,
            asset: 2,
            amount: 777,
        },
        Command::WithdrawHold {
            account: 5,
            asset: 2,
            amount: 1_000_000_000_777,
            withdrawal: 78,
        },
        Command::WithdrawFinalize { withdrawal: 78 },
        Command::DepositReverse { deposit: 32 },
    ]);
    let mut out = Vec::new();
    for (i, command) in cmds.into_iter().enumerate() {
        out.clear();
        ex.apply(
            &Sequenced {
                seq: i as u64 + 1,
                ts_ns: 1_000 + i as u64,
                command,
            },
            &mut out,
        );
        assert!(
            !out.iter().any(|e| matches!(
                e,
                Event::OrderRejected { .. }
                    | Event::CancelRejected { .. }
                    | Event::CommandRejected { .. }
            )),
            "{out:?}"
        );
    }
    assert_eq!(ex.resting_orders(), 5);
    assert_eq!(ex.pending_deposit(31), Some((2, 1, 5_000)));
    assert_eq!(ex.deficit(5, 2), 777);
    ex
}

/// What corruption alone can cause: never a content error, since the checksums are checked
/// first or decide whenever content looks wrong.
fn is_corruption_error(e: &SnapshotError) -> bool {
    matches!(
        e,
        SnapshotError::BadMagic { .. }
            | SnapshotError::UnsupportedVersion { .. }
            | SnapshotError::ChecksumMismatch { .. }
            | SnapshotError::Truncated
    )
}

#[test]
fn snapshot_truncated_anywhere_is_truncated() {
    let ex = small_exchange();
    let good = snapshot_bytes(&ex, 42);
    assert!(good.len() < 2_000, "{} bytes", good.len());
    for len in 0..good.len() {
        match Exchange::read_snapshot(&good[..len]) {
            Err(SnapshotError::Truncated) => {}
            other => panic!("truncated at {len}: {:?}", other.map(|(_, s)| s)),
        }
    }
    let (r, seq) = Exchange::read_snapshot(&good[..]).unwrap();
    assert_eq!((r.state_hash(), seq), (ex.state_hash(), 42));
}

#[test]
fn snapshot_every_flipped_byte_is_caught() {
    let ex = small_exchange();
    let good = snapshot_bytes(&ex, 42);
    let mut checksum_errors = 0;
    for at in 0..good.len() {
        for x in [1u8, 2, 4, 8, 16, 32, 64, 128, 0xff, 0x5a] {
            let mut bad = good.clone();
            bad[at] ^= x;
            match Exchange::read_snapshot(&bad[..]) {
                Ok(_) => panic!("flip {x:#x} at {at} accepted"),
                Err(e) => {
                    assert!(is_corruption_error(&e), "flip {x:#x} at {at}: {e}");
                    checksum_errors += matches!(e, SnapshotError::ChecksumMismatch { .. }) as u32;
                }
            }
        }
    }
    assert!(
        checksum_errors as usize > good.len() * 8,
        "{checksum_errors}"
    );
}

#[test]
fn snapshot_errors_name_what_is_wrong() {
    let ex = small_exchange();
    let good = snapshot_bytes(&ex, 42);

    let mut bad = good.clone();
    bad[0] = b'X';
    let e = read_err(&bad[..]);
    assert!(matches!(e, SnapshotError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a Fulgur snapshot"), "{e}");

    // Version 1 (before chain deposits) is no longer read, nor any later one.
    for v in [1, 3] {
        let mut bad = good.clone();
        bad[8] = v;
        let e = read_err(&bad[..]);
        assert!(
            matches!(
                e,
                SnapshotError::UnsupportedVersion {
                    found,
                    supported: 2
                } if found == v as u32
            ),
            "{e}"
        );
    }

    // A capacity in the header: caught by the header's own checksum, before any allocation.
    let mut bad = good.clone();
    bad[20 + 3 * 4 + 3] ^= 0x40; // max_orders' top byte
    let e = read_err(&bad[..]);
    assert!(
        matches!(
            e,
            SnapshotError::ChecksumMismatch {
                region: ChecksumRegion::Header,
                ..
            }
        ),
        "{e}"
    );

    let mut bad = good.clone();
    bad.push(0);
    let e = read_err(&bad[..]);
    assert!(matches!(e, SnapshotError::TrailingBytes), "{e}");

    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let e = read_err(&bad[..]);
    assert!(
        matches!(
            e,
            SnapshotError::ChecksumMismatch {
                region: ChecksumRegion::Whole,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("corrupted"), "{e}");

    struct Failing;
    impl io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let e = read_err(Failing);
    assert!(e.to_string().contains("disk on fire"), "{e}");
}

// ----- well-sealed but inconsistent content -----

/// Offsets from the layout table in `engine/src/exchange/snapshot.rs`.
const HEADER_CRC_AT: usize = 60;
const ASSETS_AT: usize = 64 + 16;

/// Recomputes both checksums, as a writer with a bug (or a forger) would.
fn reseal(b: &mut [u8]) {
    let h = crc32c::crc32c(&b[..HEADER_CRC_AT]);
    b[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&h.to_le_bytes());
    let n = b.len() - 4;
    let c = crc32c::crc32c(&b[..n]);
    b[n..].copy_from_slice(&c.to_le_bytes());
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern in the snapshot")
}

fn restore_patched(good: &[u8], patch: impl FnOnce(&mut Vec<u8>)) -> SnapshotError {
    let mut bad = good.to_vec();
    patch(&mut bad);
    reseal(&mut bad);
    match Exchange::read_snapshot(&bad[..]) {
        Ok(_) => panic!("inconsistent snapshot accepted"),
        Err(e) => e,
    }
}

#[test]
fn snapshot_with_inconsistent_content_is_refused() {
    let ex = small_exchange();
    let good = snapshot_bytes(&ex, 42);
    // Resealing alone changes nothing.
    let mut same = good.clone();
    reseal(&mut same);
    assert_eq!(same, good);

    // More assets than the config allows.
    let e = restore_patched(&good, |b| {
        b[ASSETS_AT..ASSETS_AT + 4].copy_from_slice(&99u32.to_le_bytes())
    });
    assert!(
        matches!(
            e,
            SnapshotError::OverCapacity {
                what: "assets",
                count: 99,
                capacity: 8
            }
        ),
        "{e}"
    );

    // A config `Exchange::new` would refuse: fee account outside the accounts.
    let e = restore_patched(&good, |b| {
        b[HEADER_CRC_AT - 4..HEADER_CRC_AT].copy_from_slice(&1_000u32.to_le_bytes())
    });
    assert!(matches!(e, SnapshotError::Inconsistent(_)), "{e}");
    assert!(e.to_string().contains("fee account"), "{e}");

    // Order 1 (account 1, 5 lots at 990) is the best bid's first order: give it an unknown
    // account.
    let order1 = find(
        &good,
        &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0],
    );
    let e = restore_patched(&good, |b| b[order1 + 8] = 200);
    assert!(e.to_string().contains("unknown account 200"), "{e}");

    // Its remaining above its quantity.
    let e = restore_patched(&good, |b| b[order1 + 20] = 6);
    assert!(e.to_string().contains("remaining 6 of 5"), "{e}");

    // An id not below the next order id.
    let e = restore_patched(&good, |b| b[order1] = 200);
    assert!(e.to_string().contains("next order id"), "{e}");

    // Its lock no longer matches what is locked: caught by the invariants.
    let e = restore_patched(&good, |b| {
        b[order1 + 12] = 4;
        b[order1 + 20] = 4;
    });
    assert!(e.to_string().contains("locked"), "{e}");

    // A lock no balance can hold.
    let e = restore_patched(&good, |b| {
        for at in [order1 + 12, order1 + 20] {
            b[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        }
    });
    assert!(e.to_string().contains("lock no possible amount"), "{e}");

    // A flags bit the layout does not define.
    let e = restore_patched(&good, |b| b[order1 + 28] |= 0x80);
    assert!(e.to_string().contains("unknown flags"), "{e}");

    // The supply of asset 0 one higher than the balances.
    let usd = find(&good, b"\x03USD\x08\x00") + 6;
    let e = restore_patched(&good, |b| b[usd] ^= 1);
    assert!(e.to_string().contains("supply"), "{e}");

    // A pending deposit of an unknown asset, or of nothing.
    let deposit = find(&good, &[31, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]);
    let e = restore_patched(&good, |b| b[deposit + 12] = 9);
    assert!(e.to_string().contains("deposit 31: unknown"), "{e}");
    let e = restore_patched(&good, |b| b[deposit + 16..deposit + 24].fill(0));
    assert!(e.to_string().contains("zero amount"), "{e}");
    // More pending deposits than the config holds.
    let e = restore_patched(&good, |b| b[deposit - 4] = 65);
    assert!(
        matches!(
            e,
            SnapshotError::OverCapacity {
                what: "pending deposits",
                count: 65,
                capacity: 64
            }
        ),
        "{e}"
    );

    // A deficit of 0, or of an unknown account.
    let owed = find(
        &good,
        &[5, 0, 0, 0, 2, 0, 0, 0, 0x09, 0x03, 0, 0, 0, 0, 0, 0],
    );
    let e = restore_patched(&good, |b| b[owed + 8..owed + 16].fill(0));
    assert!(e.to_string().contains("out of order or zero"), "{e}");
    let e = restore_patched(&good, |b| b[owed] = 6);
    assert!(
        e.to_string().contains("deficit of unknown account 6"),
        "{e}"
    );

    // The content claims more than there is: it runs into the trailer.
    let e = restore_patched(&good, |b| b[owed - 8] = 2);
    assert!(e.to_string().contains("checksum trailer"), "{e}");
}

/// Writes and reads a book of 1M resting orders; prints size and times.
/// `cargo test --release -p fulgur-engine snapshot_1m -- --ignored --nocapture`
#[test]
#[ignore]
fn snapshot_1m_resting_orders_size_and_time() {
    use std::time::Instant;
    const ORDERS: u64 = 1 << 20;
    const ACCTS: u32 = 1_000;
    let cfg = EngineConfig {
        max_accounts: ACCTS + 1,
        max_orders: ORDERS as u32,
        max_orders_per_market: ORDERS as u32,
        max_gtd_orders: ORDERS as u32,
        ..EngineConfig::default()
    };
    let mut ex = Exchange::new(cfg);
    ex.prefault();
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut apply = |ex: &mut Exchange, command| {
        seq += 1;
        out.clear();
        ex.apply(
            &Sequenced {
                seq,
                ts_ns: seq,
                command,
            },
            &mut out,
        );
        assert!(
            !out.iter().any(|e| matches!(e, Event::OrderRejected { .. })),
            "{out:?}"
        );
    };
    for s in ["BTC", "USDT"] {
        apply(
            &mut ex,
            Command::AddAsset(Box::new(AssetSpec {
                symbol: s.into(),
                decimals: 8,
                class: AssetClass::Crypto,
            })),
        );
    }
    let mut spec = market_spec("BTCUSDT", 0, 1, false);
    spec.max_open_orders = 65_535;
    spec.max_price_ticks = 1 << 40;
    apply(&mut ex, Command::AddMarket(Box::new(spec)));
    for account in 1..=ACCTS {
        for asset in 0..2 {
            apply(
                &mut ex,
                Command::Deposit {
                    account,
                    asset,
                    amount: 1 << 50,
                },
            );
        }
    }
    let mut rng = Rng::new(7);
    let t = Instant::now();
    for i in 0..ORDERS {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let off = rng.below(5_000);
        let price = match side {
            Side::Buy => 100_000 - off,
            Side::Sell => 100_001 + off,
        };
        let client_order_id = if i % 3 == 0 {
            ClientOrderId::new(&format!("bot-{i}")).unwrap()
        } else {
            ClientOrderId::NONE
        };
        let tif = if i % 10 == 0 {
            TimeInForce::Gtd {
                expire_ns: u64::MAX - i,
            }
        } else {
            TimeInForce::Gtc
        };
        apply(
            &mut ex,
            Command::PlaceOrder(PlaceOrder {
                account: 1 + (i % ACCTS as u64) as u32,
                market: 0,
                side,
                order_type: OrderType::Limit,
                tif,
                quantity: Quantity::Base(1 + rng.below(100)),
                price: Some(price),
                client_order_id,
                stp: StpMode::None,
            }),
        );
    }
    eprintln!("placed {} orders in {:?}", ex.resting_orders(), t.elapsed());
    assert_eq!(ex.resting_orders() as u64, ORDERS);

    let mut bytes = Vec::with_capacity(64 << 20);
    let mut to_memory = std::time::Duration::MAX;
    for _ in 0..5 {
        bytes.clear();
        let t = Instant::now();
        ex.write_snapshot(seq, &mut bytes).unwrap();
        to_memory = to_memory.min(t.elapsed());
    }

    let path = std::env::temp_dir().join(format!("fulgur-snapshot-{}.bin", std::process::id()));
    let t = Instant::now();
    {
        let f = std::fs::File::create(&path).unwrap();
        ex.write_snapshot(seq, &f).unwrap();
        f.sync_all().unwrap();
    }
    let to_file = t.elapsed();

    let t = Instant::now();
    let (r, s) = Exchange::read_snapshot(std::fs::File::open(&path).unwrap()).unwrap();
    let read = t.elapsed();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(s, seq);
    let t = Instant::now();
    assert_eq!(r.state_hash(), ex.state_hash());
    let hash = t.elapsed();
    eprintln!(
        "snapshot of {} resting orders ({} levels): {} bytes ({:.1} bytes/order); \
         write to memory {to_memory:?} (best of 5), to a file with fsync {to_file:?}; \
         read from the file (incl. check_invariants) {read:?}; state_hash {hash:?}",
        ORDERS,
        ex.depth(0, Side::Buy, usize::MAX).len() + ex.depth(0, Side::Sell, usize::MAX).len(),
        bytes.len(),
        bytes.len() as f64 / ORDERS as f64,
    );
}
