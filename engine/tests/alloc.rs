//! After warm-up, the order path does not allocate: a counting global allocator watches a
//! long random stream of places (all types), cancels, amends, mass cancels and ticks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fulgur_engine::*;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator with the caller's
// arguments, so `System`'s guarantees carry over; the only addition is a thread-local
// counter bump, which cannot allocate (const-initialised `Cell`s).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn count() {
    // try_with: the thread's locals may already be gone while it exits.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ACCOUNTS: u32 = 50;

fn setup() -> (Exchange, u64) {
    let mut ex = Exchange::new(EngineConfig {
        max_accounts: 1024,
        max_orders: 100_000,
        max_gtd_orders: 1_000,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    let mut seq = 0;
    let mut cmds = vec![
        Command::AddAsset(Box::new(AssetSpec {
            symbol: "BTC".into(),
            decimals: 8,
            class: AssetClass::Crypto,
        })),
        Command::AddAsset(Box::new(AssetSpec {
            symbol: "USDT".into(),
            decimals: 8,
            class: AssetClass::Stablecoin,
        })),
    ];
    for (i, sym) in ["BTCUSDT", "XBTUSDT"].iter().enumerate() {
        cmds.push(Command::AddMarket(Box::new(MarketSpec {
            symbol: sym.to_string(),
            base: 0,
            quote: 1,
            tick_size: 1_000_000,
            lot_size: 1_000,
            min_price_ticks: 1,
            max_price_ticks: 1 << 40,
            min_qty_lots: 1,
            max_qty_lots: 1 << 40,
            min_notional: 0,
            max_notional: u64::MAX,
            price_band_bps: if i == 1 { 500 } else { 0 },
            max_open_orders: 10_000,
            status: MarketStatus::Trading,
            fees: FeeSchedule {
                maker_fee_bps: if i == 0 { -1 } else { 2 },
                taker_fee_bps: 5,
            },
            required_permission: None,
        })));
    }
    for a in 1..=ACCOUNTS {
        cmds.push(Command::Deposit {
            account: a,
            asset: 0,
            amount: 1 << 50,
        });
        cmds.push(Command::Deposit {
            account: a,
            asset: 1,
            amount: 1 << 60,
        });
    }
    for command in cmds {
        seq += 1;
        ex.apply(
            &Sequenced {
                seq,
                ts_ns: seq,
                command,
            },
            &mut out,
        );
    }
    (ex, seq)
}

fn client_id(n: u64) -> ClientOrderId {
    let mut raw = [0u8; 36];
    raw[..4].copy_from_slice(&[
        b'c',
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
    ClientOrderId::from_raw(4, raw)
}

fn random_stream(rng: &mut Rng, n: usize, first_seq: u64) -> Vec<Sequenced> {
    let mut v = Vec::with_capacity(n);
    let mut placed = 0u64;
    for i in 0..n {
        let seq = first_seq + i as u64;
        let ts_ns = seq * 1_000;
        let account = 1 + rng.below(ACCOUNTS as u64) as u32;
        let market = rng.below(2) as u32;
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        // Mostly away from the touch (a deep book), sometimes through it (trades).
        let off = if rng.below(4) == 0 {
            rng.below(40)
        } else {
            20 + rng.below(300)
        };
        let price = match side {
            Side::Buy => 10_020 - off,
            Side::Sell => 9_980 + off,
        };
        let qty = 1 + rng.below(50);
        let recent = placed.saturating_sub(rng.below(2_000)).max(1);
        let command = match rng.below(100) {
            0..=54 => {
                placed += 1;
                let (order_type, tif, quantity, price) = match rng.below(20) {
                    0 => (
                        OrderType::Market,
                        TimeInForce::Ioc,
                        Quantity::Base(qty),
                        None,
                    ),
                    1 => (
                        OrderType::Market,
                        TimeInForce::Ioc,
                        Quantity::Quote(1 + rng.below(5_000_000)),
                        None,
                    ),
                    2 => (
                        OrderType::Limit,
                        TimeInForce::Ioc,
                        Quantity::Base(qty),
                        Some(price),
                    ),
                    3 => (
                        OrderType::Limit,
                        TimeInForce::Fok,
                        Quantity::Base(qty),
                        Some(price),
                    ),
                    4 => (
                        OrderType::LimitMaker,
                        TimeInForce::Gtc,
                        Quantity::Base(qty),
                        Some(price),
                    ),
                    5 => (
                        OrderType::Limit,
                        TimeInForce::Gtd {
                            expire_ns: ts_ns + 1 + rng.below(1_000_000),
                        },
                        Quantity::Base(qty),
                        Some(price),
                    ),
                    _ => (
                        OrderType::Limit,
                        TimeInForce::Gtc,
                        Quantity::Base(qty),
                        Some(price),
                    ),
                };
                let stp = match rng.below(4) {
                    0 => StpMode::None,
                    1 => StpMode::ExpireTaker,
                    2 => StpMode::ExpireMaker,
                    _ => StpMode::ExpireBoth,
                };
                // Client ids from a small pool, so duplicates and client-id cancels happen.
                let client_order_id = if rng.below(2) == 0 {
                    ClientOrderId::NONE
                } else {
                    client_id(rng.below(500))
                };
                Command::PlaceOrder(PlaceOrder {
                    account,
                    market,
                    side,
                    order_type,
                    tif,
                    quantity,
                    price,
                    client_order_id,
                    stp,
                })
            }
            55..=79 => Command::CancelOrder {
                account,
                market,
                target: OrderRef::Id(recent),
            },
            80..=84 => Command::CancelOrder {
                account,
                market,
                target: OrderRef::Client(client_id(rng.below(500))),
            },
            85..=94 => Command::AmendOrder {
                account,
                market,
                target: OrderRef::Id(recent),
                new_qty: 1 + rng.below(60),
                new_price: if rng.below(2) == 0 { None } else { Some(price) },
            },
            95..=96 => Command::CancelAll {
                account,
                market: if rng.below(2) == 0 {
                    None
                } else {
                    Some(market)
                },
            },
            _ => Command::Tick,
        };
        v.push(Sequenced {
            seq,
            ts_ns,
            command,
        });
    }
    v
}

#[test]
fn steady_state_order_path_does_not_allocate() {
    let (mut ex, seq) = setup();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let warm = random_stream(&mut rng, 200_000, seq + 1);
    let measured = random_stream(&mut rng, 300_000, seq + 1 + warm.len() as u64);
    let mut out: Vec<Event> = Vec::with_capacity(1 << 16);
    for c in &warm {
        out.clear();
        ex.apply(c, &mut out);
    }
    ex.check_invariants().unwrap();
    let resting_before = ex.resting_orders();
    let mut trades = 0u64;
    let mut stp = 0u64;
    COUNTING.with(|c| c.set(true));
    for c in &measured {
        out.clear();
        ex.apply(c, &mut out);
        for e in &out {
            match e {
                Event::Trade { .. } => trades += 1,
                Event::OrderCancelled {
                    reason: CancelReason::SelfTradePrevention,
                    ..
                } => stp += 1,
                _ => {}
            }
        }
    }
    COUNTING.with(|c| c.set(false));
    let allocs = ALLOCS.with(|a| a.get());
    ex.check_invariants().unwrap();
    // The stream must really exercise the book, or zero allocations proves nothing.
    assert!(
        trades > 10_000 && stp > 100,
        "{trades} trades, {stp} STP expiries"
    );
    assert!(
        resting_before > 500 && ex.resting_orders() > 500,
        "book of {resting_before} then {} orders",
        ex.resting_orders()
    );
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations over {} commands",
        measured.len()
    );
}

#[test]
fn the_counter_sees_allocations() {
    COUNTING.with(|c| c.set(true));
    let before = ALLOCS.with(|a| a.get());
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(10));
    drop(v);
    let after = ALLOCS.with(|a| a.get());
    COUNTING.with(|c| c.set(false));
    assert_eq!(after - before, 1);
}
