//! The fast engine (`Exchange`) against the naive reference engine (`tests/reference`):
//! random command streams, identical event streams required command by command, the fast
//! engine's invariants after every command, and equal balances, open orders and books at
//! the end.
//!
//! A stream is generated as a list of `Step`s (proptest shrinks those); each step is turned
//! into a concrete `Command` when it is applied, looking at the reference engine's state, so
//! that cancels and amends mostly name orders that exist, and chain deposits are drained,
//! reversed and covered often enough to force cancels, deficits and frozen accounts.
//!
//! Besides equal events, after every command: supply = Σ (free + locked) per asset in both
//! engines; supply − Σ deficits = credits − reversed deposits − finalized withdrawals, as
//! counted from the events; equal deficits; and no frozen account got a `WithdrawalHeld`,
//! a new buy order or a raised buy.
//!
//! `cargo test -p fulgur-engine --test proptest_vs_reference` runs 500 cases (about a
//! second); `PROPTEST_CASES=20000` for a longer hunt. A failure prints the command index,
//! the command, both event lists and every command before it.

mod reference;

use std::panic::{catch_unwind, AssertUnwindSafe};

use fulgur_engine::{
    AccountId, AssetClass, AssetSpec, ClientOrderId, Command, EngineConfig, Event, Exchange,
    FeeSchedule, MarketSpec, MarketStatus, OpenOrder, OrderRef, OrderType, PlaceOrder, Quantity,
    Sequenced, Side, StpMode, TimeInForce,
};
use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::TestCaseError;
use reference::RefExchange;

// ------------------------------------------------------------------------------ universe

/// Accounts 0 (the fee account) to 3 exist; 4 and `u32::MAX` do not.
const ACCOUNTS: u32 = 4;

const BTC: u32 = 0;
const USDT: u32 = 1;
const TBILL: u32 = 2;
const ETH: u32 = 3;

/// The permission market 1 (TBILLUSDT) requires.
const TBILL_PERMISSION: u8 = 5;

/// How prices and amounts are drawn for each market.
struct MarketGen {
    /// Prices concentrate on `mid + k * step`, `k` in -4..=4.
    mid: u64,
    step: u64,
    /// A price within the price filter but far from `mid` (outside the band of market 1).
    far: u64,
    max_price: u64,
    max_qty: u64,
    /// `Quantity::Quote` amounts are multiples of this (about half a lot's notional).
    quote_unit: u64,
}

const MARKETS: [MarketGen; 3] = [
    // BTCUSDT: per = 10 quote minor units per tick per lot, rebate market
    MarketGen {
        mid: 100,
        step: 1,
        far: 40,
        max_price: 150,
        max_qty: 1_000,
        quote_unit: 500,
    },
    // TBILLUSDT: per = 1, band 150 bps, min/max notional, permission
    MarketGen {
        mid: 10_000,
        step: 10,
        far: 400,
        max_price: 11_000,
        max_qty: 1_000,
        quote_unit: 5_000,
    },
    // ETHBTC: per = 1000, positive maker fee, max 4 open orders per account
    MarketGen {
        mid: 50,
        step: 1,
        far: 20,
        max_price: 1_000,
        max_qty: 500,
        quote_unit: 25_000,
    },
];

/// Deposit and withdrawal amounts are multiples of these, per asset.
const ASSET_UNIT: [u64; 4] = [250_000, 100_000, 250, 5_000_000];

fn asset(symbol: &str, decimals: u8, class: AssetClass) -> Command {
    Command::AddAsset(Box::new(AssetSpec {
        symbol: symbol.into(),
        decimals,
        class,
    }))
}

fn btcusdt() -> MarketSpec {
    MarketSpec {
        symbol: "BTCUSDT".into(),
        base: BTC,
        quote: USDT,
        tick_size: 1_000_000, // 1 USDT
        lot_size: 1_000,      // 0.00001 BTC
        min_price_ticks: 50,
        max_price_ticks: 150,
        min_qty_lots: 1,
        max_qty_lots: 1_000,
        min_notional: 0,
        max_notional: u64::MAX,
        price_band_bps: 0,
        max_open_orders: 6,
        status: MarketStatus::Trading,
        fees: FeeSchedule {
            maker_fee_bps: -3,
            taker_fee_bps: 7,
        },
        required_permission: None,
    }
}

fn tbillusdt() -> MarketSpec {
    MarketSpec {
        symbol: "TBILLUSDT".into(),
        base: TBILL,
        quote: USDT,
        tick_size: 10_000, // 0.01 USDT
        lot_size: 100,     // 0.0001 TBILL
        min_price_ticks: 9_000,
        max_price_ticks: 11_000,
        min_qty_lots: 1,
        max_qty_lots: 1_000,
        min_notional: 20_000,
        max_notional: 400_000,
        price_band_bps: 150,
        max_open_orders: 10,
        status: MarketStatus::Trading,
        fees: FeeSchedule {
            maker_fee_bps: 10,
            taker_fee_bps: 20,
        },
        required_permission: Some(TBILL_PERMISSION),
    }
}

fn ethbtc() -> MarketSpec {
    MarketSpec {
        symbol: "ETHBTC".into(),
        base: ETH,
        quote: BTC,
        tick_size: 100_000,  // 0.001 BTC
        lot_size: 1_000_000, // 0.01 ETH
        min_price_ticks: 1,
        max_price_ticks: 1_000,
        min_qty_lots: 1,
        max_qty_lots: 500,
        min_notional: 0,
        max_notional: u64::MAX,
        price_band_bps: 0,
        max_open_orders: 4,
        status: MarketStatus::Trading,
        fees: FeeSchedule {
            maker_fee_bps: 7,
            taker_fee_bps: 13,
        },
        required_permission: None,
    }
}

/// Assets, markets, permissions and opening deposits.
fn setup() -> Vec<Command> {
    let mut v = vec![
        asset("BTC", 8, AssetClass::Crypto),
        asset("USDT", 6, AssetClass::Stablecoin),
        asset("TBILL", 6, AssetClass::Rwa),
        asset("ETH", 8, AssetClass::Crypto),
        Command::AddMarket(Box::new(btcusdt())),
        Command::AddMarket(Box::new(tbillusdt())),
        Command::AddMarket(Box::new(ethbtc())),
        Command::SetReferencePrice {
            market: 1,
            price: Some(10_000),
        },
    ];
    for account in [1, 2, 3] {
        v.push(Command::GrantPermission {
            account,
            permission: TBILL_PERMISSION,
        });
    }
    for account in 0..ACCOUNTS {
        for (asset, unit) in ASSET_UNIT.iter().enumerate() {
            v.push(Command::Deposit {
                account,
                asset: asset as u32,
                amount: unit * 20,
            });
        }
    }
    v
}

/// Small capacities, so every `CapacityExceeded` path is hit.
fn small_config() -> EngineConfig {
    EngineConfig {
        max_accounts: ACCOUNTS,
        max_assets: 5,
        max_markets: 3,
        max_orders: 20,
        max_orders_per_market: 12,
        max_levels_per_side: 4,
        max_gtd_orders: 3,
        max_pending_withdrawals: 2,
        max_pending_deposits: 3,
        fee_account: 0,
    }
}

/// Room for everything the streams do.
fn roomy_config() -> EngineConfig {
    EngineConfig {
        max_accounts: ACCOUNTS,
        max_assets: 16,
        max_markets: 16,
        max_orders: 4_096,
        max_orders_per_market: 4_096,
        max_levels_per_side: 1_024,
        max_gtd_orders: 1_024,
        max_pending_withdrawals: 64,
        max_pending_deposits: 64,
        fee_account: 0,
    }
}

// ------------------------------------------------------------------------------ steps

#[derive(Clone, Copy, Debug)]
enum PriceSel {
    /// `mid + k * step`
    Near(i8),
    Zero,
    /// `mid +/- far`
    Far(bool),
    AboveMax,
}

#[derive(Clone, Copy, Debug)]
enum QtySel {
    Lots(u64),
    Zero,
    TooBig,
    /// For market orders: `Quantity::Quote(k * quote_unit)`; a limit order takes `k` lots.
    Quote(u64),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    LimitGtc,
    LimitIoc,
    LimitFok,
    LimitGtd,
    Market,
    MakerGtc,
    MakerGtd,
    // invalid shapes
    MarketGtc,
    MarketWithPrice,
    MakerIoc,
    LimitNoPrice,
    LimitQuote,
}

#[derive(Clone, Copy, Debug)]
enum AmendQty {
    /// Somewhere in `filled + 1 ..= qty`.
    Down(u8),
    Same,
    Up(u8),
    /// `filled` (InvalidAmend), or 0.
    Invalid(bool),
    TooBig,
}

#[derive(Clone, Copy, Debug)]
enum AmendPrice {
    Keep,
    Same,
    Set(PriceSel),
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// An open order (index modulo the open orders), by id.
    Id(u16),
    /// An open order, by client id if it has one.
    Client(u16),
    /// An open order's id, with another market given.
    WrongMarket(u16),
    /// An open order's id, with another account given.
    WrongAccount(u16),
    /// Any id below 400, any account and market.
    Random(u16, u8, u8),
    /// A client id from the pool (index), account and market from an open order.
    PoolClient(u8, u16),
    /// An invalid raw client id.
    BadClient(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Place {
        account: u8,
        market: u8,
        buy: bool,
        kind: Kind,
        qty: QtySel,
        price: PriceSel,
        cid: u8,
        stp: u8,
        /// GTD expiry relative to now, in thousands of ns (<= 0: already expired).
        expire: i8,
    },
    Cancel(Target),
    CancelAll {
        account: u8,
        market: Option<u8>,
    },
    Amend {
        target: Target,
        qty: AmendQty,
        price: AmendPrice,
    },
    Deposit {
        account: u8,
        asset: u8,
        k: u8,
    },
    Hold {
        account: u8,
        asset: u8,
        k: u8,
        withdrawal: u8,
    },
    Release(u8),
    Finalize(u8),
    Status {
        market: u8,
        status: u8,
        cancel_open: bool,
    },
    Reference {
        market: u8,
        price: Option<PriceSel>,
    },
    Permission {
        account: u8,
        bit: u8,
        grant: bool,
    },
    Tick,
    AddAsset(u8),
    AddMarket(u8),
    /// `DepositCredit` of a pooled id (0..6); `k` as for `Deposit`, 21 = a big one.
    Credit {
        deposit: u8,
        account: u8,
        asset: u8,
        k: u8,
    },
    Settle(DepositSel),
    Reverse(DepositSel),
    /// Holds every free unit of the account and asset of a pending deposit (picked), so
    /// that reversing it must cancel orders and may leave a deficit.
    Drain {
        pick: u8,
        withdrawal: u8,
    },
    /// Credits an account with a deficit (picked): part of it, all and more, or by a chain
    /// credit of exactly it.
    Cover {
        pick: u8,
        how: u8,
    },
}

#[derive(Clone, Copy, Debug)]
enum DepositSel {
    /// A pending deposit (index modulo those pending), or id 0 if none is.
    Pending(u8),
    /// Any id of the pool, pending or not, and 6..8 never credited.
    Id(u8),
}

#[derive(Clone)]
struct Step {
    /// Time advance before the command, in thousands of ns.
    dt: u8,
    op: Op,
}

/// One line per step, so a shrunk input stays readable.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+{} {:?}", self.dt, self.op)
    }
}

/// A `Vec` strategy whose values are `long..=max` elements long but whose shrinking may drop
/// elements all the way down to none (`collection::vec(s, 200..400)` cannot shrink below
/// 200): values from `vec(s, 0..=max)` are drawn until one is long enough.
#[derive(Debug)]
struct LongVec<S: Strategy> {
    inner: prop::collection::VecStrategy<S>,
    long: usize,
}

fn long_vec<S: Strategy>(element: S, long: usize, max: usize) -> LongVec<S> {
    LongVec {
        inner: prop::collection::vec(element, 0..=max),
        long,
    }
}

impl<S: Strategy> Strategy for LongVec<S> {
    type Tree = prop::collection::VecValueTree<S::Tree>;
    type Value = Vec<S::Value>;

    fn new_tree(&self, runner: &mut proptest::test_runner::TestRunner) -> NewTree<Self> {
        loop {
            let tree = self.inner.new_tree(runner)?;
            if tree.current().len() >= self.long {
                return Ok(tree);
            }
        }
    }
}

fn account_s() -> impl Strategy<Value = u8> {
    prop_oneof![40 => 0u8..4, 1 => Just(4u8), 1 => Just(255u8)]
}

fn market_s() -> impl Strategy<Value = u8> {
    prop_oneof![30 => 0u8..3, 1 => 3u8..5]
}

fn price_s() -> impl Strategy<Value = PriceSel> {
    prop_oneof![
        40 => (-4i8..=4).prop_map(PriceSel::Near),
        1 => Just(PriceSel::Zero),
        2 => any::<bool>().prop_map(PriceSel::Far),
        1 => Just(PriceSel::AboveMax),
    ]
}

fn qty_s() -> impl Strategy<Value = QtySel> {
    prop_oneof![
        30 => (1u64..=12).prop_map(QtySel::Lots),
        6 => (1u64..=25).prop_map(QtySel::Lots),
        1 => Just(QtySel::Zero),
        1 => Just(QtySel::TooBig),
        12 => (0u64..=30).prop_map(QtySel::Quote),
    ]
}

fn kind_s() -> impl Strategy<Value = Kind> {
    prop_oneof![
        30 => Just(Kind::LimitGtc),
        8 => Just(Kind::LimitIoc),
        8 => Just(Kind::LimitFok),
        8 => Just(Kind::LimitGtd),
        10 => Just(Kind::Market),
        8 => Just(Kind::MakerGtc),
        3 => Just(Kind::MakerGtd),
        1 => Just(Kind::MarketGtc),
        1 => Just(Kind::MarketWithPrice),
        1 => Just(Kind::MakerIoc),
        1 => Just(Kind::LimitNoPrice),
        1 => Just(Kind::LimitQuote),
    ]
}

fn stp_s() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8), 2 => Just(3u8)]
}

fn cid_s() -> impl Strategy<Value = u8> {
    prop_oneof![16 => Just(0u8), 10 => 1u8..=4, 1 => 5u8..=6]
}

fn target_s() -> impl Strategy<Value = Target> {
    let pick = any::<u16>();
    prop_oneof![
        30 => pick.prop_map(Target::Id),
        8 => pick.prop_map(Target::Client),
        2 => pick.prop_map(Target::WrongMarket),
        2 => pick.prop_map(Target::WrongAccount),
        3 => (0u16..400, 0u8..4, 0u8..3).prop_map(|(a, b, c)| Target::Random(a, b, c)),
        2 => (1u8..=4, pick).prop_map(|(c, p)| Target::PoolClient(c, p)),
        1 => (5u8..=6).prop_map(Target::BadClient),
    ]
}

fn amend_qty_s() -> impl Strategy<Value = AmendQty> {
    prop_oneof![
        8 => any::<u8>().prop_map(AmendQty::Down),
        2 => Just(AmendQty::Same),
        6 => (0u8..6).prop_map(AmendQty::Up),
        2 => any::<bool>().prop_map(AmendQty::Invalid),
        1 => Just(AmendQty::TooBig),
    ]
}

fn amend_price_s() -> impl Strategy<Value = AmendPrice> {
    prop_oneof![
        6 => Just(AmendPrice::Keep),
        2 => Just(AmendPrice::Same),
        8 => price_s().prop_map(AmendPrice::Set),
    ]
}

fn op_s() -> impl Strategy<Value = Op> {
    let place = (
        account_s(),
        market_s(),
        any::<bool>(),
        kind_s(),
        qty_s(),
        price_s(),
        cid_s(),
        stp_s(),
        -2i8..=60,
    )
        .prop_map(
            |(account, market, buy, kind, qty, price, cid, stp, expire)| Op::Place {
                account,
                market,
                buy,
                kind,
                qty,
                price,
                cid,
                stp,
                expire,
            },
        );
    prop_oneof![
        75 => place,
        6 => target_s().prop_map(Op::Cancel),
        2 => (account_s(), prop::option::weighted(0.6, market_s()))
            .prop_map(|(account, market)| Op::CancelAll { account, market }),
        9 => (target_s(), amend_qty_s(), amend_price_s())
            .prop_map(|(target, qty, price)| Op::Amend { target, qty, price }),
        6 => (account_s(), 0u8..5, 0u8..=20)
            .prop_map(|(account, asset, k)| Op::Deposit { account, asset, k }),
        3 => (account_s(), 0u8..5, 0u8..=20, 0u8..4).prop_map(|(account, asset, k, withdrawal)| {
            Op::Hold { account, asset, k, withdrawal }
        }),
        1 => (0u8..4).prop_map(Op::Release),
        1 => (0u8..4).prop_map(Op::Finalize),
        3 => (market_s(), 0u8..12, prop::bool::weighted(0.15))
            .prop_map(|(market, status, cancel_open)| Op::Status { market, status, cancel_open }),
        3 => (market_s(), prop::option::weighted(0.8, price_s()))
            .prop_map(|(market, price)| Op::Reference { market, price }),
        2 => (account_s(), prop_oneof![8 => Just(TBILL_PERMISSION), 1 => 0u8..64, 1 => 64u8..=255], prop::bool::weighted(0.7))
            .prop_map(|(account, bit, grant)| Op::Permission { account, bit, grant }),
        5 => Just(Op::Tick),
        1 => (0u8..4).prop_map(Op::AddAsset),
        1 => (0u8..4).prop_map(Op::AddMarket),
        4 => (0u8..6, account_s(), 0u8..5, 0u8..=21)
            .prop_map(|(deposit, account, asset, k)| Op::Credit { deposit, account, asset, k }),
        2 => deposit_sel_s().prop_map(Op::Settle),
        3 => deposit_sel_s().prop_map(Op::Reverse),
        2 => (any::<u8>(), 0u8..4).prop_map(|(pick, withdrawal)| Op::Drain { pick, withdrawal }),
        2 => (any::<u8>(), 0u8..3).prop_map(|(pick, how)| Op::Cover { pick, how }),
    ]
}

fn deposit_sel_s() -> impl Strategy<Value = DepositSel> {
    prop_oneof![
        4 => any::<u8>().prop_map(DepositSel::Pending),
        1 => (0u8..8).prop_map(DepositSel::Id),
    ]
}

fn step_s() -> impl Strategy<Value = Step> {
    (0u8..=5, op_s()).prop_map(|(dt, op)| Step { dt, op })
}

// ------------------------------------------------------------------------------ resolving

fn account_id(a: u8) -> AccountId {
    if a == 255 {
        u32::MAX
    } else {
        a as AccountId
    }
}

fn client_id(sel: u8) -> ClientOrderId {
    match sel {
        0 => ClientOrderId::NONE,
        1..=4 => ClientOrderId::new(["c1", "c2", "c3", "c4"][sel as usize - 1]).unwrap(),
        5 => {
            let mut raw = [0u8; 36];
            raw[..3].copy_from_slice(b"a b");
            ClientOrderId::from_raw(3, raw)
        }
        _ => ClientOrderId::from_raw(40, [b'z'; 36]),
    }
}

fn gen_of(market: u32) -> &'static MarketGen {
    &MARKETS[(market as usize).min(MARKETS.len() - 1)]
}

fn price_of(market: u32, sel: PriceSel) -> u64 {
    let g = gen_of(market);
    match sel {
        PriceSel::Near(k) => (g.mid as i64 + k as i64 * g.step as i64) as u64,
        PriceSel::Zero => 0,
        PriceSel::Far(up) => {
            if up {
                g.mid + g.far
            } else {
                g.mid - g.far
            }
        }
        PriceSel::AboveMax => g.max_price + 1,
    }
}

/// A limit price for a side: buys lean below the mid, sells above it, with an overlap, so
/// books build depth and still cross often.
fn side_price(market: u32, side: Side, sel: PriceSel) -> u64 {
    match (side, sel) {
        (Side::Buy, PriceSel::Near(k)) => price_of(market, PriceSel::Near(k - 2)),
        (Side::Sell, PriceSel::Near(k)) => price_of(market, PriceSel::Near(k + 2)),
        _ => price_of(market, sel),
    }
}

fn extra_asset(sel: u8) -> Command {
    match sel {
        0 => asset("SOL", 9, AssetClass::Crypto),
        1 => asset("BTC", 8, AssetClass::Crypto), // duplicate
        2 => asset("sol", 9, AssetClass::Crypto), // bad symbol
        _ => asset("GOLD", 19, AssetClass::Rwa),  // bad decimals
    }
}

fn extra_market(sel: u8) -> Command {
    let spec = match sel {
        // ETHUSDT: per = 1e6 * 1e6 / 1e8 = 10000
        0 => MarketSpec {
            symbol: "ETHUSDT".into(),
            base: ETH,
            quote: USDT,
            tick_size: 1_000_000,
            lot_size: 1_000_000,
            ..btcusdt()
        },
        1 => btcusdt(), // duplicate symbol
        2 => MarketSpec {
            symbol: "BTCETH".into(),
            base: BTC,
            quote: ETH,
            lot_size: 1, // 1e6 * 1 / 1e8: not whole
            ..btcusdt()
        },
        _ => MarketSpec {
            symbol: "XUSDT".into(),
            base: 9, // unknown asset
            ..btcusdt()
        },
    };
    Command::AddMarket(Box::new(spec))
}

/// An open order picked by `pick`, if there is one.
fn pick_order(r: &RefExchange, pick: u16) -> Option<OpenOrder> {
    let open = r.resting();
    (!open.is_empty()).then(|| open[pick as usize % open.len()])
}

/// (account, market, target) for a cancel or amend.
fn resolve_target(r: &RefExchange, t: Target) -> (AccountId, u32, OrderRef) {
    let fallback = |pick: u16| (1, 0, OrderRef::Id(pick as u64 % 400));
    match t {
        Target::Id(p) => match pick_order(r, p) {
            Some(o) => (o.account, o.market, OrderRef::Id(o.order_id)),
            None => fallback(p),
        },
        Target::Client(p) => match pick_order(r, p) {
            Some(o) if !o.client_order_id.is_none() => {
                (o.account, o.market, OrderRef::Client(o.client_order_id))
            }
            Some(o) => (o.account, o.market, OrderRef::Id(o.order_id)),
            None => fallback(p),
        },
        Target::WrongMarket(p) => match pick_order(r, p) {
            Some(o) => (o.account, (o.market + 1) % 3, OrderRef::Id(o.order_id)),
            None => fallback(p),
        },
        Target::WrongAccount(p) => match pick_order(r, p) {
            Some(o) => (
                (o.account + 1) % ACCOUNTS,
                o.market,
                OrderRef::Id(o.order_id),
            ),
            None => fallback(p),
        },
        Target::Random(id, a, m) => (a as AccountId, m as u32, OrderRef::Id(id as u64)),
        Target::PoolClient(c, p) => {
            let (a, m) = pick_order(r, p).map_or((1, 0), |o| (o.account, o.market));
            (a, m, OrderRef::Client(client_id(c)))
        }
        Target::BadClient(c) => (1, 0, OrderRef::Client(client_id(c))),
    }
}

fn resolve(op: &Op, r: &RefExchange, ts: u64) -> Command {
    match *op {
        Op::Place {
            account,
            market,
            buy,
            kind,
            qty,
            price,
            cid,
            stp,
            expire,
        } => {
            let market = market as u32;
            let g = gen_of(market);
            let expire_ns = (ts as i64 + expire as i64 * 1_000) as u64;
            use OrderType::{Limit, LimitMaker, Market};
            use TimeInForce::{Fok, Gtc, Gtd, Ioc};
            let (order_type, tif, with_price) = match kind {
                Kind::LimitGtc => (Limit, Gtc, true),
                Kind::LimitIoc => (Limit, Ioc, true),
                Kind::LimitFok => (Limit, Fok, true),
                Kind::LimitGtd => (Limit, Gtd { expire_ns }, true),
                Kind::Market => (Market, Ioc, false),
                Kind::MakerGtc => (LimitMaker, Gtc, true),
                Kind::MakerGtd => (LimitMaker, Gtd { expire_ns }, true),
                Kind::MarketGtc => (Market, Gtc, false),
                Kind::MarketWithPrice => (Market, Ioc, true),
                Kind::MakerIoc => (LimitMaker, Ioc, true),
                Kind::LimitNoPrice => (Limit, Gtc, false),
                Kind::LimitQuote => (Limit, Gtc, true),
            };
            let quote_ok = order_type == Market || matches!(kind, Kind::LimitQuote);
            let quantity = match qty {
                QtySel::Lots(n) => Quantity::Base(n),
                QtySel::Zero => Quantity::Base(0),
                QtySel::TooBig => Quantity::Base(g.max_qty + 1),
                QtySel::Quote(k) if quote_ok => Quantity::Quote(k * g.quote_unit),
                QtySel::Quote(k) => Quantity::Base(k.max(1)),
            };
            let quantity = match (kind, quantity) {
                (Kind::LimitQuote, Quantity::Base(n)) => Quantity::Quote(n * g.quote_unit),
                (_, q) => q,
            };
            let side = if buy { Side::Buy } else { Side::Sell };
            Command::PlaceOrder(PlaceOrder {
                account: account_id(account),
                market,
                side,
                order_type,
                tif,
                quantity,
                price: with_price.then(|| side_price(market, side, price)),
                client_order_id: client_id(cid),
                stp: [
                    StpMode::None,
                    StpMode::ExpireTaker,
                    StpMode::ExpireMaker,
                    StpMode::ExpireBoth,
                ][stp as usize % 4],
            })
        }
        Op::Cancel(t) => {
            let (account, market, target) = resolve_target(r, t);
            Command::CancelOrder {
                account,
                market,
                target,
            }
        }
        Op::CancelAll { account, market } => Command::CancelAll {
            account: account_id(account),
            market: market.map(|m| m as u32),
        },
        Op::Amend { target, qty, price } => {
            let (account, market, target_ref) = resolve_target(r, target);
            // The order the target names, if any, to size the amend.
            let o = match target_ref {
                OrderRef::Id(id) => r.order(id),
                OrderRef::Client(c) => r
                    .resting()
                    .iter()
                    .find(|o| !c.is_none() && o.client_order_id == c && o.account == account)
                    .copied(),
            };
            let (old_qty, filled, old_price, side) = o.map_or(
                (5, 0, price_of(market, PriceSel::Near(0)), Side::Buy),
                |o| (o.qty, o.qty - o.remaining, o.price, o.side),
            );
            let remaining = old_qty - filled;
            let new_qty = match qty {
                AmendQty::Down(d) => filled + 1 + d as u64 % remaining,
                AmendQty::Same => old_qty,
                AmendQty::Up(d) => old_qty + 1 + d as u64,
                AmendQty::Invalid(true) => filled,
                AmendQty::Invalid(false) => 0,
                AmendQty::TooBig => gen_of(market).max_qty + 1,
            };
            let new_price = match price {
                AmendPrice::Keep => None,
                AmendPrice::Same => Some(old_price),
                AmendPrice::Set(sel) => Some(side_price(market, side, sel)),
            };
            Command::AmendOrder {
                account,
                market,
                target: target_ref,
                new_qty,
                new_price,
            }
        }
        Op::Deposit { account, asset, k } => {
            let unit = ASSET_UNIT.get(asset as usize).copied().unwrap_or(1);
            Command::Deposit {
                account: account_id(account),
                asset: asset as u32,
                // k = 20: one huge deposit, so BalanceOverflow shows up
                amount: if k == 20 {
                    u64::MAX - 1_000
                } else {
                    unit * k as u64
                },
            }
        }
        Op::Hold {
            account,
            asset,
            k,
            withdrawal,
        } => Command::WithdrawHold {
            account: account_id(account),
            asset: asset as u32,
            amount: ASSET_UNIT.get(asset as usize).copied().unwrap_or(1) * k as u64,
            withdrawal: withdrawal as u64,
        },
        Op::Release(w) => Command::WithdrawRelease {
            withdrawal: w as u64,
        },
        Op::Finalize(w) => Command::WithdrawFinalize {
            withdrawal: w as u64,
        },
        Op::Status {
            market,
            status,
            cancel_open,
        } => Command::SetMarketStatus {
            market: market as u32,
            status: match status {
                0..=9 => MarketStatus::Trading,
                10 => MarketStatus::CancelOnly,
                _ => MarketStatus::Halted,
            },
            cancel_open,
        },
        Op::Reference { market, price } => Command::SetReferencePrice {
            market: market as u32,
            price: price.map(|p| price_of(market as u32, p)),
        },
        Op::Permission {
            account,
            bit,
            grant,
        } => {
            let (account, permission) = (account_id(account), bit);
            if grant {
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
        }
        Op::Tick => Command::Tick,
        Op::AddAsset(sel) => extra_asset(sel),
        Op::AddMarket(sel) => extra_market(sel),
        Op::Credit {
            deposit,
            account,
            asset,
            k,
        } => {
            let unit = ASSET_UNIT.get(asset as usize).copied().unwrap_or(1);
            Command::DepositCredit {
                deposit: deposit as u64,
                account: account_id(account),
                asset: asset as u32,
                amount: match k {
                    20 => u64::MAX - 1_000,
                    21 => unit * 60,
                    _ => unit * k as u64,
                },
            }
        }
        Op::Settle(sel) => Command::DepositSettle {
            deposit: deposit_id(r, sel),
        },
        Op::Reverse(sel) => Command::DepositReverse {
            deposit: deposit_id(r, sel),
        },
        Op::Drain { pick, withdrawal } => {
            let ids = r.pending_deposit_ids();
            let (account, asset) = match ids.get(pick as usize % ids.len().max(1)) {
                Some(&id) => {
                    let (a, x, _) = r.pending_deposit(id).expect("pending");
                    (a, x)
                }
                None => ((pick % 4) as AccountId, (pick / 4 % 4) as u32),
            };
            Command::WithdrawHold {
                account,
                asset,
                amount: r.balance(account, asset).0,
                withdrawal: withdrawal as u64,
            }
        }
        Op::Cover { pick, how } => {
            let owed = r.deficits();
            let Some(&(account, asset, d)) = owed.get(pick as usize % owed.len().max(1)) else {
                return Command::Deposit {
                    account: (pick % 4) as AccountId,
                    asset: 0,
                    amount: ASSET_UNIT[0],
                };
            };
            match how {
                0 => Command::Deposit {
                    account,
                    asset,
                    amount: d / 2 + 1,
                },
                1 => Command::Deposit {
                    account,
                    asset,
                    amount: d + ASSET_UNIT.get(asset as usize).copied().unwrap_or(1),
                },
                _ => Command::DepositCredit {
                    deposit: (pick % 6) as u64,
                    account,
                    asset,
                    amount: d,
                },
            }
        }
    }
}

fn deposit_id(r: &RefExchange, sel: DepositSel) -> u64 {
    match sel {
        DepositSel::Pending(i) => {
            let ids = r.pending_deposit_ids();
            ids.get(i as usize % ids.len().max(1)).copied().unwrap_or(0)
        }
        DepositSel::Id(id) => id as u64,
    }
}

// ------------------------------------------------------------------------------ running

fn list<T: std::fmt::Debug>(items: &[T]) -> String {
    let mut s = String::new();
    for (i, e) in items.iter().enumerate() {
        s.push_str(&format!("    [{i}] {e:?}\n"));
    }
    s
}

fn history(cmds: &[Sequenced]) -> String {
    list(&cmds.iter().map(|c| &c.command).collect::<Vec<_>>())
}

/// Applies the setup and then `steps` to both engines, comparing as it goes.
fn run_case(cfg: EngineConfig, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut fast = Exchange::new(cfg);
    let mut reference = RefExchange::new(cfg);
    let mut ts: u64 = 1_000_000_000;
    let mut applied: Vec<Sequenced> = Vec::new();
    let mut fast_events: Vec<Event> = Vec::new();
    let mut ledger = Ledger::default();
    let setup = setup();
    let total = setup.len() + steps.len();
    for i in 0..total {
        let command = if i < setup.len() {
            setup[i].clone()
        } else {
            let step = &steps[i - setup.len()];
            ts += step.dt as u64 * 1_000;
            resolve(&step.op, &reference, ts)
        };
        let cmd = Sequenced {
            seq: i as u64 + 1,
            ts_ns: ts,
            command,
        };
        let frozen: Vec<bool> = (0..ACCOUNTS).map(|a| fast.is_frozen(a)).collect();
        let raised_buy = raises_a_buy(&reference, &cmd.command);
        fast_events.clear();
        let outcome = catch_unwind(AssertUnwindSafe(|| fast.apply(&cmd, &mut fast_events)));
        let ref_events = reference.apply(&cmd);
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(TestCaseError::fail(format!(
                "fast engine panicked at command #{i}: {msg}\ncommand: {:?}\nreference events:\n{}\nearlier commands:\n{}",
                cmd.command,
                list(&ref_events),
                history(&applied)
            )));
        }
        if fast_events != ref_events {
            let first = fast_events
                .iter()
                .zip(&ref_events)
                .position(|(a, b)| a != b)
                .unwrap_or(fast_events.len().min(ref_events.len()));
            return Err(TestCaseError::fail(format!(
                "events differ at command #{i} (first difference at event {first})\ncommand: {:?}\nfast events:\n{}reference events:\n{}earlier commands:\n{}",
                cmd.command,
                list(&fast_events),
                list(&ref_events),
                history(&applied)
            )));
        }
        if let Err(e) = fast.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "fast engine invariant broken after command #{i}: {e}\ncommand: {:?}\nevents:\n{}earlier commands:\n{}",
                cmd.command,
                list(&fast_events),
                history(&applied)
            )));
        }
        if let Err(e) = reference.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "reference invariant broken after command #{i}: {e}\ncommand: {:?}",
                cmd.command
            )));
        }
        let fail = |what: String| {
            Err(TestCaseError::fail(format!(
                "after command #{i}: {what}\ncommand: {:?}\nevents:\n{}earlier commands:\n{}",
                cmd.command,
                list(&fast_events),
                history(&applied)
            )))
        };
        if let Err(e) = check_freeze(&frozen, raised_buy, &cmd.command, &fast_events) {
            return fail(e);
        }
        ledger.follow(&cmd.command, &fast_events);
        if let Err(e) = check_ledger(&fast, &reference, &ledger) {
            return fail(e);
        }
        // Events are enough to follow the ledger: the last BalanceChanged of each cell in a
        // command is its state after it.
        for e in fast_events.iter().rev() {
            if let Event::BalanceChanged {
                account,
                asset,
                free,
                locked,
            } = *e
            {
                let last = fast_events.iter().rev().find(|x| {
                    matches!(**x, Event::BalanceChanged { account: a, asset: b, .. } if a == account && b == asset)
                });
                if last == Some(e) && fast.balance(account, asset) != (free, locked) {
                    return Err(TestCaseError::fail(format!(
                        "after command #{i}, the last BalanceChanged of {account}/{asset} says {:?}, the ledger {:?}\ncommand: {:?}\nevents:\n{}",
                        (free, locked),
                        fast.balance(account, asset),
                        cmd.command,
                        list(&fast_events)
                    )));
                }
            }
        }
        applied.push(cmd);
    }
    compare_state(&fast, &reference)
        .map_err(|e| TestCaseError::fail(format!("{e}\ncommands:\n{}", history(&applied))))
}

/// Is `command` an amend, by a frozen account or not, that would raise a buy's quantity or
/// price? Judged on the reference's state before the command.
fn raises_a_buy(r: &RefExchange, command: &Command) -> bool {
    let Command::AmendOrder {
        account,
        market,
        target,
        new_qty,
        new_price,
    } = *command
    else {
        return false;
    };
    let o = r.resting().iter().find(|o| {
        o.account == account
            && o.market == market
            && match target {
                OrderRef::Id(id) => o.order_id == id,
                OrderRef::Client(c) => !c.is_none() && o.client_order_id == c,
            }
    });
    o.is_some_and(|o| {
        o.side == Side::Buy && (new_qty > o.qty || new_price.is_some_and(|p| p > o.price))
    })
}

/// A frozen account (before the command) gets no `WithdrawalHeld`, no new buy order and
/// no raised buy.
fn check_freeze(
    frozen: &[bool],
    raised_buy: bool,
    command: &Command,
    events: &[Event],
) -> Result<(), String> {
    let is_frozen = |a: AccountId| frozen.get(a as usize).copied().unwrap_or(false);
    for e in events {
        match *e {
            Event::WithdrawalHeld { account, .. } if is_frozen(account) => {
                return Err(format!("frozen account {account} got a WithdrawalHeld"));
            }
            Event::OrderAccepted {
                account,
                side: Side::Buy,
                ..
            } if is_frozen(account) => {
                return Err(format!("frozen account {account} got a buy accepted"));
            }
            _ => {}
        }
    }
    if let Command::AmendOrder { account, .. } = *command {
        if raised_buy
            && is_frozen(account)
            && events
                .iter()
                .any(|e| matches!(e, Event::OrderAmended { .. }))
        {
            return Err(format!("frozen account {account} raised a buy"));
        }
    }
    Ok(())
}

/// What custody should hold per asset, counted from the fast engine's events alone:
/// credits − reversed deposits − finalized withdrawals.
#[derive(Default)]
struct Ledger {
    on_chain: std::collections::BTreeMap<u32, i128>,
    /// Held withdrawals: id → (asset, amount).
    held: std::collections::BTreeMap<u64, (u32, u64)>,
}

impl Ledger {
    fn follow(&mut self, command: &Command, events: &[Event]) {
        let rejected = matches!(events, [Event::CommandRejected { .. }]);
        if let (Command::Deposit { asset, amount, .. }, false) = (command, rejected) {
            *self.on_chain.entry(*asset).or_default() += *amount as i128;
        }
        for e in events {
            match *e {
                Event::DepositCredited { asset, amount, .. } => {
                    *self.on_chain.entry(asset).or_default() += amount as i128;
                }
                Event::DepositReversed { asset, amount, .. } => {
                    *self.on_chain.entry(asset).or_default() -= amount as i128;
                }
                Event::WithdrawalHeld {
                    withdrawal,
                    asset,
                    amount,
                    ..
                } => {
                    self.held.insert(withdrawal, (asset, amount));
                }
                Event::WithdrawalReleased { withdrawal } => {
                    self.held.remove(&withdrawal);
                }
                Event::WithdrawalFinalized { withdrawal } => {
                    let (asset, amount) = self.held.remove(&withdrawal).expect("held");
                    *self.on_chain.entry(asset).or_default() -= amount as i128;
                }
                _ => {}
            }
        }
    }
}

/// Supply = Σ (free + locked) in both engines; supply − Σ deficits = what `ledger` counted;
/// the same deficits and freezes in both.
fn check_ledger(fast: &Exchange, reference: &RefExchange, ledger: &Ledger) -> Result<(), String> {
    for asset in 0..fast.asset_count() {
        let (mut sum_f, mut sum_r, mut owed) = (0u128, 0u128, 0u128);
        for account in 0..ACCOUNTS {
            let (f, l) = fast.balance(account, asset);
            sum_f += f as u128 + l as u128;
            let (f, l) = reference.balance(account, asset);
            sum_r += f as u128 + l as u128;
            let d = fast.deficit(account, asset);
            if d != reference.deficit(account, asset) {
                return Err(format!(
                    "deficit of {account}/{asset}: fast {d} reference {}",
                    reference.deficit(account, asset)
                ));
            }
            owed += d as u128;
        }
        if sum_f != fast.supply(asset) as u128 || sum_r != reference.supply(asset) as u128 {
            return Err(format!(
                "asset {asset}: balances sum to {sum_f} (reference {sum_r}), supply {} ({})",
                fast.supply(asset),
                reference.supply(asset)
            ));
        }
        let held = fast.supply(asset) as i128 - owed as i128;
        let counted = ledger.on_chain.get(&asset).copied().unwrap_or(0);
        if held != counted {
            return Err(format!(
                "asset {asset}: supply - deficits = {held}, credits - reversals - finalized \
                 withdrawals = {counted}"
            ));
        }
    }
    for account in 0..ACCOUNTS {
        if fast.is_frozen(account) != reference.is_frozen(account) {
            return Err(format!("account {account}: frozen differs"));
        }
    }
    Ok(())
}

/// Balances, supplies, open orders, books and counters at the end of a case.
fn compare_state(fast: &Exchange, reference: &RefExchange) -> Result<(), String> {
    let cfg = reference.config();
    if fast.asset_count() != reference.asset_count() {
        return Err(format!(
            "asset count: fast {} reference {}",
            fast.asset_count(),
            reference.asset_count()
        ));
    }
    if fast.market_count() != reference.market_count() {
        return Err(format!(
            "market count: fast {} reference {}",
            fast.market_count(),
            reference.market_count()
        ));
    }
    for asset in 0..reference.asset_count() {
        if fast.supply(asset) != reference.supply(asset) {
            return Err(format!(
                "supply of asset {asset}: fast {} reference {}",
                fast.supply(asset),
                reference.supply(asset)
            ));
        }
        for account in 0..cfg.max_accounts {
            let (f, r) = (
                fast.balance(account, asset),
                reference.balance(account, asset),
            );
            if f != r {
                return Err(format!(
                    "balance of account {account} asset {asset}: fast {f:?} reference {r:?}"
                ));
            }
        }
    }
    for account in 0..cfg.max_accounts {
        let (f, r) = (fast.open_orders(account), reference.open_orders(account));
        if f != r {
            return Err(format!(
                "open orders of account {account}:\nfast:\n{}reference:\n{}",
                list(&f),
                list(&r)
            ));
        }
    }
    if fast.resting_orders() != reference.resting().len() {
        return Err(format!(
            "resting orders: fast {} reference {}",
            fast.resting_orders(),
            reference.resting().len()
        ));
    }
    for market in 0..reference.market_count() {
        for side in [Side::Buy, Side::Sell] {
            let r = reference.depth(market, side);
            let f = fast.depth(market, side, usize::MAX);
            if f != r {
                return Err(format!(
                    "depth of market {market} {side:?}: fast {f:?} reference {r:?}"
                ));
            }
            if fast.best(market, side) != reference.best(market, side) {
                return Err(format!("best of market {market} {side:?} differs"));
            }
        }
        if fast.update_id(market) != reference.update_id(market) {
            return Err(format!("update id of market {market} differs"));
        }
        if fast.last_trade_price(market) != reference.last_trade_price(market) {
            return Err(format!("last trade price of market {market} differs"));
        }
    }
    for id in 0..8 {
        if fast.pending_deposit(id) != reference.pending_deposit(id) {
            return Err(format!(
                "pending deposit {id}: fast {:?} reference {:?}",
                fast.pending_deposit(id),
                reference.pending_deposit(id)
            ));
        }
    }
    Ok(())
}

fn config_s() -> impl Strategy<Value = EngineConfig> {
    prop_oneof![Just(small_config()), Just(roomy_config())]
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=<n> for a longer hunt
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(500),
        max_shrink_iters: 10_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fast_engine_matches_reference(
        cfg in config_s(),
        steps in long_vec(step_s(), 200, 400),
    ) {
        run_case(cfg, &steps)?;
    }
}

// ------------------------------------------------------------------------------ generator coverage

/// The generator reaches the paths it is meant to reach (checked on the reference engine
/// alone, with a fixed seed): every rejection reason the streams can produce, every cancel
/// reason, trades with rebates and fees, amends both ways, withdrawals, chain deposits
/// settled, reversed in full and short, deficits made and covered.
#[test]
fn generator_covers_the_paths() {
    use fulgur_engine::{CancelReason, RejectReason};

    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use std::collections::BTreeSet;

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut rejects: BTreeSet<String> = BTreeSet::new();
    let mut cancels: BTreeSet<String> = BTreeSet::new();
    let mut other: BTreeSet<&'static str> = BTreeSet::new();
    for case in 0..40 {
        let cfg = if case % 2 == 0 {
            small_config()
        } else {
            roomy_config()
        };
        let steps = long_vec(step_s(), 300, 300)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut r = RefExchange::new(cfg);
        let mut ts = 1_000_000_000;
        let setup = setup();
        for i in 0..setup.len() + steps.len() {
            let command = if i < setup.len() {
                setup[i].clone()
            } else {
                let step = &steps[i - setup.len()];
                ts += step.dt as u64 * 1_000;
                resolve(&step.op, &r, ts)
            };
            let events = r.apply(&Sequenced {
                seq: i as u64,
                ts_ns: ts,
                command,
            });
            r.check_invariants().unwrap();
            for e in events {
                match e {
                    Event::OrderRejected { reason, .. }
                    | Event::CancelRejected { reason, .. }
                    | Event::CommandRejected { reason } => {
                        rejects.insert(format!("{reason:?}"));
                    }
                    Event::OrderCancelled { reason, .. } => {
                        cancels.insert(format!("{reason:?}"));
                    }
                    Event::Trade {
                        maker_fee,
                        taker_fee,
                        maker_account,
                        taker_account,
                        ..
                    } => {
                        other.insert("trade");
                        if maker_fee < 0 {
                            other.insert("rebate");
                        }
                        if maker_fee > 0 {
                            other.insert("maker fee");
                        }
                        if taker_fee > 0 {
                            other.insert("taker fee");
                        }
                        if maker_account == taker_account {
                            other.insert("self-trade");
                        }
                    }
                    Event::OrderAmended { priority_kept, .. } => {
                        other.insert(if priority_kept {
                            "amend kept priority"
                        } else {
                            "amend lost priority"
                        });
                    }
                    Event::WithdrawalHeld { .. } => {
                        other.insert("withdrawal held");
                    }
                    Event::WithdrawalReleased { .. } => {
                        other.insert("withdrawal released");
                    }
                    Event::WithdrawalFinalized { .. } => {
                        other.insert("withdrawal finalized");
                    }
                    Event::AssetAdded { .. } => {
                        other.insert("asset added");
                    }
                    Event::MarketAdded { .. } => {
                        other.insert("market added");
                    }
                    Event::DepositCredited { .. } => {
                        other.insert("deposit credited");
                    }
                    Event::DepositSettled { .. } => {
                        other.insert("deposit settled");
                    }
                    Event::DepositReversed {
                        amount, debited, ..
                    } => {
                        other.insert(if debited < amount {
                            "deposit reversed short"
                        } else {
                            "deposit reversed in full"
                        });
                    }
                    Event::DeficitChanged { deficit, .. } => {
                        other.insert(if deficit == 0 {
                            "deficit covered"
                        } else {
                            "deficit"
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    let want_rejects = [
        RejectReason::UnknownMarket,
        RejectReason::UnknownAccount,
        RejectReason::UnknownAsset,
        RejectReason::MarketHalted,
        RejectReason::MarketCancelOnly,
        RejectReason::NotPermitted,
        RejectReason::PriceFilter,
        RejectReason::LotSize,
        RejectReason::Notional,
        RejectReason::PercentPrice,
        RejectReason::InsufficientBalance,
        RejectReason::PostOnlyWouldCross,
        RejectReason::TooManyOpenOrders,
        RejectReason::DuplicateClientOrderId,
        RejectReason::InvalidClientOrderId,
        RejectReason::UnknownOrder,
        RejectReason::InvalidOrderParameters,
        RejectReason::InvalidTimeInForce,
        RejectReason::InvalidExpiry,
        RejectReason::InvalidAmend,
        RejectReason::CapacityExceeded,
        RejectReason::BalanceOverflow,
        RejectReason::UnknownWithdrawal,
        RejectReason::DuplicateWithdrawal,
        RejectReason::UnknownDeposit,
        RejectReason::DuplicateDeposit,
        RejectReason::AccountFrozen,
        RejectReason::InvalidAmount,
    ];
    let missing: Vec<_> = want_rejects
        .iter()
        .map(|r| format!("{r:?}"))
        .filter(|r| !rejects.contains(r))
        .collect();
    assert!(missing.is_empty(), "rejections never produced: {missing:?}");
    assert!(
        rejects.iter().any(|r| r.starts_with("InvalidSpec")),
        "no InvalidSpec"
    );
    let want_cancels = [
        CancelReason::User,
        CancelReason::MassCancel,
        CancelReason::Ioc,
        CancelReason::Fok,
        CancelReason::SelfTradePrevention,
        CancelReason::Expired,
        CancelReason::Halted,
        CancelReason::DepositReversed,
    ];
    let missing: Vec<_> = want_cancels
        .iter()
        .map(|r| format!("{r:?}"))
        .filter(|r| !cancels.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "cancel reasons never produced: {missing:?}"
    );
    for want in [
        "trade",
        "rebate",
        "maker fee",
        "taker fee",
        "self-trade",
        "amend kept priority",
        "amend lost priority",
        "withdrawal held",
        "withdrawal released",
        "withdrawal finalized",
        "asset added",
        "market added",
        "deposit credited",
        "deposit settled",
        "deposit reversed short",
        "deposit reversed in full",
        "deficit",
        "deficit covered",
    ] {
        assert!(other.contains(want), "never produced: {want}");
    }
}
