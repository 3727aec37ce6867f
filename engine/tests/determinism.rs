//! Same commands in, same events and the same state hash out: a long seeded random stream
//! applied to two fresh `Exchange`s, compared command by command; and the hash moves when
//! the state does.

use fulgur_engine::{
    AccountId, AssetClass, AssetSpec, ClientOrderId, Command, EngineConfig, Event, Exchange,
    FeeSchedule, MarketSpec, MarketStatus, OrderRef, OrderType, PlaceOrder, Quantity, Sequenced,
    Side, StpMode, TimeInForce,
};

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

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `percent`%.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ACCOUNTS: u32 = 6;
const MARKETS: u32 = 3;
const ASSETS: u32 = 4;

fn config() -> EngineConfig {
    EngineConfig {
        max_accounts: ACCOUNTS,
        max_assets: 8,
        max_markets: 8,
        max_orders: 20_000,
        max_orders_per_market: 20_000,
        max_levels_per_side: 64,
        max_gtd_orders: 20_000,
        max_pending_withdrawals: 64,
        max_pending_deposits: 64,
        fee_account: 0,
    }
}

fn market(symbol: &str, base: u32, quote: u32, fees: FeeSchedule) -> Command {
    Command::AddMarket(Box::new(MarketSpec {
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
        price_band_bps: if symbol == "TBILLUSD" { 300 } else { 0 },
        max_open_orders: 20_000,
        status: MarketStatus::Trading,
        fees,
        required_permission: (symbol == "TBILLUSD").then_some(1),
    }))
}

fn setup() -> Vec<Command> {
    let mut v: Vec<Command> = ["USD", "BTC", "ETH", "TBILL"]
        .iter()
        .map(|s| {
            Command::AddAsset(Box::new(AssetSpec {
                symbol: (*s).into(),
                decimals: 8,
                class: AssetClass::Crypto,
            }))
        })
        .collect();
    let fees = |maker_fee_bps, taker_fee_bps| FeeSchedule {
        maker_fee_bps,
        taker_fee_bps,
    };
    v.push(market("BTCUSD", 1, 0, fees(-2, 6)));
    v.push(market("ETHUSD", 2, 0, fees(3, 9)));
    v.push(market("TBILLUSD", 3, 0, fees(0, 5)));
    for account in 0..ACCOUNTS {
        v.push(Command::GrantPermission {
            account,
            permission: 1,
        });
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

/// The stream's generator: random commands of every kind, naming order ids it has seen
/// accepted (from the first exchange's events).
struct Gen {
    rng: Rng,
    ts: u64,
    /// (order id, account, market) of every accepted order.
    seen: Vec<(u64, AccountId, u32)>,
}

impl Gen {
    fn account(&mut self) -> AccountId {
        if self.rng.chance(2) {
            ACCOUNTS + 1
        } else {
            self.rng.below(ACCOUNTS as u64) as u32
        }
    }

    fn market(&mut self) -> u32 {
        if self.rng.chance(2) {
            MARKETS // unknown
        } else {
            self.rng.below(MARKETS as u64) as u32
        }
    }

    fn client_id(&mut self) -> ClientOrderId {
        match self.rng.below(10) {
            0..=5 => ClientOrderId::NONE,
            6..=8 => ClientOrderId::new(&format!("o{}", self.rng.below(8))).unwrap(),
            _ => ClientOrderId::from_raw(2, [b'?'; 36]),
        }
    }

    /// (account, market, target) of a cancel or amend: mostly a recently accepted order.
    fn target(&mut self) -> (AccountId, u32, OrderRef) {
        if !self.seen.is_empty() && self.rng.chance(85) {
            let recent = (self.seen.len() as u64).min(64);
            let i = self.seen.len() - 1 - self.rng.below(recent) as usize;
            let (id, account, market) = self.seen[i];
            (account, market, OrderRef::Id(id))
        } else if self.rng.chance(50) {
            (
                self.account(),
                self.market(),
                OrderRef::Client(self.client_id()),
            )
        } else {
            let id = self.rng.below(100_000);
            (self.account(), self.market(), OrderRef::Id(id))
        }
    }

    fn price(&mut self, side: Side) -> u64 {
        let base = 1_000 + self.rng.below(12);
        match side {
            Side::Buy => base - 6,
            Side::Sell => base,
        }
    }

    fn next(&mut self) -> Command {
        self.ts += self.rng.below(2_000);
        let r = self.rng.below(100);
        match r {
            0..=54 => {
                let side = if self.rng.chance(50) {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let (order_type, tif) = match self.rng.below(10) {
                    0..=3 => (OrderType::Limit, TimeInForce::Gtc),
                    4 => (OrderType::Limit, TimeInForce::Ioc),
                    5 => (OrderType::Limit, TimeInForce::Fok),
                    6 => (
                        OrderType::Limit,
                        TimeInForce::Gtd {
                            expire_ns: self.ts + self.rng.below(50_000),
                        },
                    ),
                    7 | 8 => (OrderType::LimitMaker, TimeInForce::Gtc),
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
            55..=66 => {
                let (account, market, target) = self.target();
                Command::CancelOrder {
                    account,
                    market,
                    target,
                }
            }
            67..=78 => {
                let side = if self.rng.chance(50) {
                    Side::Buy
                } else {
                    Side::Sell
                };
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
            79 => Command::CancelAll {
                account: self.account(),
                market: self.rng.chance(50).then(|| self.market()),
            },
            80..=83 => Command::Deposit {
                account: self.account(),
                asset: self.rng.below(ASSETS as u64 + 1) as u32,
                amount: self.rng.below(1_000_000_000),
            },
            84..=86 => Command::WithdrawHold {
                account: self.account(),
                asset: self.rng.below(ASSETS as u64) as u32,
                amount: self.rng.below(1_000_000_000),
                withdrawal: self.rng.below(20),
            },
            87 => Command::WithdrawRelease {
                withdrawal: self.rng.below(20),
            },
            88 => Command::WithdrawFinalize {
                withdrawal: self.rng.below(20),
            },
            89 => Command::SetMarketStatus {
                market: self.market(),
                status: match self.rng.below(8) {
                    0 => MarketStatus::Halted,
                    1 => MarketStatus::CancelOnly,
                    _ => MarketStatus::Trading,
                },
                cancel_open: self.rng.chance(20),
            },
            90..=91 => Command::SetReferencePrice {
                market: self.market(),
                price: self.rng.chance(80).then(|| 995 + self.rng.below(12)),
            },
            92 => Command::GrantPermission {
                account: self.account(),
                permission: 1,
            },
            93 => Command::RevokePermission {
                account: self.account(),
                permission: 1,
            },
            // Chain deposits up to about twice a balance: reversals that cancel orders and
            // leave deficits.
            94 => Command::DepositCredit {
                deposit: self.rng.below(24),
                account: self.account(),
                asset: self.rng.below(ASSETS as u64 + 1) as u32,
                amount: self.rng.below(2_000_000_000_000),
            },
            95 => Command::DepositSettle {
                deposit: self.rng.below(24),
            },
            96 => Command::DepositReverse {
                deposit: self.rng.below(24),
            },
            _ => Command::Tick,
        }
    }
}

fn seq(i: usize, ts: u64, command: Command) -> Sequenced {
    Sequenced {
        seq: i as u64 + 1,
        ts_ns: ts,
        command,
    }
}

/// Every this many commands, the hash is recorded.
const CHECKPOINT: usize = 5_000;

/// The stream: its commands, the events `ex` emitted for each, and `ex`'s state hash after
/// every `CHECKPOINT`-th command.
struct Stream {
    cmds: Vec<Sequenced>,
    events: Vec<Vec<Event>>,
    hashes: Vec<u64>,
}

/// Generates the stream while applying it to `ex`.
fn generate(ex: &mut Exchange, seed: u64, n: usize) -> Stream {
    let mut g = Gen {
        rng: Rng::new(seed),
        ts: 1_700_000_000_000_000_000,
        seen: Vec::new(),
    };
    let mut cmds = Vec::new();
    let mut events = Vec::new();
    let mut hashes = Vec::new();
    let setup = setup();
    for i in 0..setup.len() + n {
        let command = if i < setup.len() {
            setup[i].clone()
        } else {
            g.next()
        };
        let cmd = seq(i, g.ts, command);
        let mut out = Vec::new();
        ex.apply(&cmd, &mut out);
        for e in &out {
            if let Event::OrderAccepted {
                order_id,
                account,
                market,
                ..
            } = e
            {
                g.seen.push((*order_id, *account, *market));
            }
        }
        cmds.push(cmd);
        events.push(out);
        if i % CHECKPOINT == 0 {
            hashes.push(ex.state_hash());
        }
    }
    Stream {
        cmds,
        events,
        hashes,
    }
}

#[test]
fn same_commands_same_events_same_hash() {
    const N: usize = 60_000;
    let mut a = Exchange::new(config());
    let mut b = Exchange::new(config());
    assert_eq!(a.state_hash(), b.state_hash(), "fresh exchanges differ");
    let empty_hash = a.state_hash();

    let Stream {
        cmds,
        events: events_a,
        hashes,
    } = generate(&mut a, 0x5eed_f00d, N);
    let mut trades = 0usize;
    let mut out = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        out.clear();
        b.apply(cmd, &mut out);
        assert_eq!(
            out, events_a[i],
            "command #{i} {:?}: events differ between two fresh exchanges",
            cmd.command
        );
        trades += out
            .iter()
            .filter(|e| matches!(e, Event::Trade { .. }))
            .count();
        if i % CHECKPOINT == 0 {
            assert_eq!(
                b.state_hash(),
                hashes[i / CHECKPOINT],
                "hash after command #{i}"
            );
        }
    }
    assert!(trades > 1_000, "the stream should trade: {trades} trades");
    assert!(
        a.resting_orders() > 0,
        "the stream should leave orders resting"
    );
    assert_eq!(a.state_hash(), b.state_hash());
    assert_ne!(a.state_hash(), empty_hash);
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();

    // The same stream a third time, from a fresh exchange, reaches the same hash again.
    let mut c = Exchange::new(config());
    for cmd in &cmds {
        out.clear();
        c.apply(cmd, &mut out);
    }
    assert_eq!(c.state_hash(), a.state_hash());

    // Each of these changes the state: applied to `b` alone, the hashes part; applied to `a`
    // as well, they meet again. (Market 0 is opened for trading first, on both.)
    let mut ts = cmds.last().unwrap().ts_ns + 1;
    let open = seq(
        cmds.len(),
        ts,
        Command::SetMarketStatus {
            market: 0,
            status: MarketStatus::Trading,
            cancel_open: false,
        },
    );
    for ex in [&mut a, &mut b] {
        out.clear();
        ex.apply(&open, &mut out);
    }
    assert_eq!(a.state_hash(), b.state_hash());
    ts += 1;
    let extra = [
        Command::Deposit {
            account: 3,
            asset: 1,
            amount: 1,
        },
        Command::PlaceOrder(PlaceOrder {
            account: 2,
            market: 0,
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            quantity: Quantity::Base(1),
            price: Some(1),
            client_order_id: ClientOrderId::NONE,
            stp: StpMode::None,
        }),
        Command::SetReferencePrice {
            market: 1,
            price: Some(12_345),
        },
        Command::WithdrawHold {
            account: 5,
            asset: 2,
            amount: 7,
            withdrawal: 1_000_000,
        },
        Command::DepositCredit {
            deposit: 1_000_000,
            account: 4,
            asset: 0,
            amount: 9,
        },
        Command::DepositCredit {
            deposit: 1_000_001,
            account: 4,
            asset: 0,
            amount: 8,
        },
        Command::DepositSettle { deposit: 1_000_000 },
        Command::DepositReverse { deposit: 1_000_001 },
    ];
    for (k, command) in extra.into_iter().enumerate() {
        let cmd = seq(cmds.len() + 1 + k, ts + k as u64, command);
        let before = b.state_hash();
        out.clear();
        b.apply(&cmd, &mut out);
        assert!(
            !out.is_empty()
                && !out.iter().any(|e| matches!(
                    e,
                    Event::OrderRejected { .. }
                        | Event::CancelRejected { .. }
                        | Event::CommandRejected { .. }
                )),
            "{:?} should be accepted: {out:?}",
            cmd.command
        );
        assert_ne!(
            b.state_hash(),
            before,
            "{:?} changed nothing in the hash",
            cmd.command
        );
        assert_ne!(b.state_hash(), a.state_hash());
        let mut out_a = Vec::new();
        a.apply(&cmd, &mut out_a);
        assert_eq!(out_a, out);
        assert_eq!(a.state_hash(), b.state_hash());
    }
}

#[test]
fn a_rejected_command_leaves_the_hash_alone() {
    let mut ex = Exchange::new(config());
    let cmds = generate(&mut ex, 7, 2_000).cmds;
    let before = ex.state_hash();
    let mut out = Vec::new();
    ex.apply(
        &seq(
            cmds.len(),
            cmds.last().unwrap().ts_ns,
            Command::Deposit {
                account: 0,
                asset: 99,
                amount: 1,
            },
        ),
        &mut out,
    );
    assert!(matches!(out.as_slice(), [Event::CommandRejected { .. }]));
    assert_eq!(ex.state_hash(), before);
}
