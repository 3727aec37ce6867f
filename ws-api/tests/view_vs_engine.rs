//! The read model against the engine: after every command of a random stream, the view's
//! books, update ids, balances, deficits and open orders equal the engine's own, and a view
//! started from the engine's state in the middle (a restart) goes on equal to it. The stream
//! includes chain deposits drained and reversed, so orders are cancelled by reversals and
//! accounts freeze and are covered again.

use fulgur_engine::*;
use fulgur_ws_api::view::{order_from_events, OrderStatus, View};
use fulgur_ws_api::BatchItem;

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

fn setup() -> Vec<Command> {
    let mut v = vec![
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
        Command::AddMarket(Box::new(MarketSpec {
            symbol: "BTCUSDT".into(),
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
            price_band_bps: 0,
            max_open_orders: 50,
            status: MarketStatus::Trading,
            fees: FeeSchedule {
                maker_fee_bps: -1,
                taker_fee_bps: 5,
            },
            required_permission: None,
        })),
    ];
    for account in 1..=4 {
        v.push(Command::Deposit {
            account,
            asset: 0,
            amount: 10_000_000_000,
        });
        v.push(Command::Deposit {
            account,
            asset: 1,
            amount: 10_000_000_000_000,
        });
    }
    v
}

fn random_command(rng: &mut Rng, ex: &Exchange) -> Command {
    let next_id = ex.next_order_id();
    let account = 1 + rng.below(4) as u32;
    let asset = rng.below(2) as u32;
    let side = if rng.below(2) == 0 {
        Side::Buy
    } else {
        Side::Sell
    };
    let price = 1_000 + rng.below(20);
    let target = OrderRef::Id(next_id.saturating_sub(1 + rng.below(30)));
    let stp = [
        StpMode::None,
        StpMode::ExpireMaker,
        StpMode::ExpireTaker,
        StpMode::ExpireBoth,
    ][rng.below(4) as usize];
    let place = |order_type, tif, quantity, price| {
        Command::PlaceOrder(PlaceOrder {
            account,
            market: 0,
            side,
            order_type,
            tif,
            quantity,
            price,
            client_order_id: ClientOrderId::NONE,
            stp,
        })
    };
    match rng.below(24) {
        0..=7 => place(
            OrderType::Limit,
            TimeInForce::Gtc,
            Quantity::Base(1 + rng.below(50)),
            Some(price),
        ),
        8 => place(
            OrderType::Limit,
            TimeInForce::Ioc,
            Quantity::Base(1 + rng.below(50)),
            Some(price),
        ),
        9 => place(
            OrderType::Limit,
            TimeInForce::Fok,
            Quantity::Base(1 + rng.below(80)),
            Some(price),
        ),
        10 => place(
            OrderType::LimitMaker,
            TimeInForce::Gtc,
            Quantity::Base(1 + rng.below(50)),
            Some(price),
        ),
        11 => place(
            OrderType::Market,
            TimeInForce::Ioc,
            Quantity::Base(1 + rng.below(60)),
            None,
        ),
        12 => place(
            OrderType::Market,
            TimeInForce::Ioc,
            Quantity::Quote(1 + rng.below(50_000_000)),
            None,
        ),
        13..=15 => Command::CancelOrder {
            account,
            market: 0,
            target,
        },
        16 => Command::CancelAll {
            account,
            market: Some(0),
        },
        17..=18 => Command::AmendOrder {
            account,
            market: 0,
            target,
            new_qty: 1 + rng.below(40),
            new_price: if rng.below(2) == 0 { None } else { Some(price) },
        },
        19 => Command::Deposit {
            account,
            asset,
            // Mostly small; to a frozen account, often enough to cover what it owes.
            amount: match ex.deficit(account, asset) {
                d if d > 0 && rng.below(2) == 0 => d + rng.below(1_000_000),
                _ => 1 + rng.below(1_000_000),
            },
        },
        20 => Command::DepositCredit {
            deposit: rng.below(8),
            account,
            asset,
            amount: if rng.below(3) == 0 {
                ex.balance(account, asset).0.max(1)
            } else {
                1 + rng.below(1_000_000)
            },
        },
        21 => Command::DepositSettle {
            deposit: rng.below(8),
        },
        22 => Command::DepositReverse {
            deposit: rng.below(8),
        },
        // Everything free goes out (and is paid): a reversal then cancels and owes.
        _ if rng.below(2) == 0 => Command::WithdrawHold {
            account,
            asset,
            amount: ex.balance(account, asset).0,
            withdrawal: rng.below(4),
        },
        _ => Command::WithdrawFinalize {
            withdrawal: rng.below(4),
        },
    }
}

fn account_of(view: &View, order_id: OrderId) -> AccountId {
    view.orders.get(&order_id).map_or(u32::MAX, |o| o.account)
}

fn assert_same(view: &View, ex: &Exchange, at: u64) {
    let Some(m) = view.markets.first() else {
        assert_eq!(ex.market_count(), 0);
        return;
    };
    for (side, book) in [(Side::Buy, &m.bids), (Side::Sell, &m.asks)] {
        let engine: Vec<(u64, u64, u32)> = ex.depth(0, side, usize::MAX);
        let mut mine: Vec<(u64, u64, u32)> = book.iter().map(|(p, (q, n))| (*p, *q, *n)).collect();
        if side == Side::Buy {
            mine.reverse();
        }
        assert_eq!(mine, engine, "{side:?} book after seq {at}");
    }
    assert_eq!(m.update_id, ex.update_id(0), "update id after seq {at}");
    for account in 0..=4 {
        for asset in 0..2 {
            let v = view
                .accounts
                .get(&account)
                .and_then(|a| a.balances.get(&asset).copied())
                .unwrap_or((0, 0));
            assert_eq!(
                v,
                ex.balance(account, asset),
                "balance {account}/{asset} after seq {at}"
            );
            let d = view
                .accounts
                .get(&account)
                .and_then(|a| a.deficits.get(&asset).copied())
                .unwrap_or(0);
            assert_eq!(
                d,
                ex.deficit(account, asset),
                "deficit {account}/{asset} after seq {at}"
            );
        }
        assert_eq!(
            view.accounts.get(&account).is_some_and(|a| a.is_frozen()),
            ex.is_frozen(account),
            "frozen {account} after seq {at}"
        );
        let engine: Vec<(u64, u64, u64)> = ex
            .open_orders(account)
            .iter()
            .map(|o| (o.order_id, o.qty, o.remaining))
            .collect();
        let mine: Vec<(u64, u64, u64)> = view
            .open_orders(account)
            .iter()
            .map(|o| (o.order_id, o.orig_qty, o.remaining()))
            .collect();
        assert_eq!(mine, engine, "open orders of {account} after seq {at}");
    }
}

#[test]
fn the_view_follows_the_engine_exactly() {
    let mut ex = Exchange::new(EngineConfig {
        max_accounts: 8,
        ..EngineConfig::default()
    });
    let mut view = View::from_exchange(&ex, 0, 0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut restarted = None;
    let commands: Vec<Command> = setup();
    let mut events = Vec::new();
    let mut statuses_seen = std::collections::HashSet::new();
    let (mut reversal_cancels, mut deficits, mut covered) = (0, 0, 0);
    for i in 0..20_000u64 {
        let command = if (i as usize) < commands.len() {
            commands[i as usize].clone()
        } else {
            random_command(&mut rng, &ex)
        };
        seq += 1;
        let ts_ns = 1_700_000_000_000_000_000 + seq * 1_000_000;
        let sequenced = Sequenced {
            seq,
            ts_ns,
            command,
        };
        events.clear();
        ex.apply(&sequenced, &mut events);
        for e in &events {
            match e {
                Event::OrderCancelled {
                    reason: CancelReason::DepositReversed,
                    order_id,
                    ..
                } => {
                    reversal_cancels += 1;
                    assert!(view
                        .open_orders(account_of(&view, *order_id))
                        .iter()
                        .any(|o| o.order_id == *order_id));
                }
                Event::DeficitChanged { deficit, .. } if *deficit > 0 => deficits += 1,
                Event::DeficitChanged { .. } => covered += 1,
                _ => {}
            }
        }
        let item = BatchItem {
            seq,
            ts_ns,
            command: &sequenced.command,
            events: &events,
        };
        view.apply(&[item]);
        // Orders a reversal cancelled read CANCELED.
        for e in &events {
            if let Event::OrderCancelled {
                reason: CancelReason::DepositReversed,
                order_id,
                ..
            } = e
            {
                if let Some(o) = view.orders.get(order_id) {
                    assert_eq!(o.status, OrderStatus::Canceled, "seq {seq}");
                }
            }
        }
        if let Some(r) = restarted.as_mut() {
            View::apply(r, &[item]);
        }
        // An order answer built from the command's events alone agrees with the view.
        if let Command::PlaceOrder(_) = sequenced.command {
            if let Some((o, fills)) = order_from_events(&view.markets[0], &events, ts_ns) {
                statuses_seen.insert(o.status.as_str());
                let fill_qty: u64 = fills.iter().map(|f| f.qty).sum();
                assert_eq!(fill_qty, o.executed);
                // The order's last execution report shows its state after the command.
                let last = view
                    .exec_updates
                    .iter()
                    .rev()
                    .find(|u| u.order.order_id == o.order_id)
                    .expect("a NEW report at least");
                assert_eq!(
                    (last.order.status, last.order.executed),
                    (o.status, o.executed),
                    "seq {seq}"
                );
                if let Some(v) = view.orders.get(&o.order_id) {
                    assert_eq!(
                        (v.status, v.executed, v.orig_qty),
                        (o.status, o.executed, o.orig_qty),
                        "seq {seq}"
                    );
                } else {
                    assert!(
                        !o.status.is_open(),
                        "seq {seq}: an open order missing from the view"
                    );
                }
            }
        }
        assert_same(&view, &ex, seq);
        if seq == 10_000 {
            restarted = Some(View::from_exchange(&ex, seq, ts_ns / 1_000_000));
        }
        if let Some(r) = &restarted {
            assert_same(r, &ex, seq);
        }
    }
    assert!(
        reversal_cancels > 0 && deficits > 0 && covered > 0,
        "reversal cancels {reversal_cancels}, deficits {deficits}, covered {covered}"
    );
    for s in [
        OrderStatus::New,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Expired,
        OrderStatus::ExpiredInMatch,
    ] {
        assert!(
            statuses_seen.contains(s.as_str()),
            "{} never reached: {statuses_seen:?}",
            s.as_str()
        );
    }
}

#[test]
fn closed_order_history_is_bounded_per_account() {
    use fulgur_ws_api::view::MAX_CLOSED_PER_ACCOUNT;
    let mut ex = Exchange::new(EngineConfig {
        max_accounts: 8,
        ..EngineConfig::default()
    });
    let mut view = View::from_exchange(&ex, 0, 0);
    let mut seq = 0;
    let mut events = Vec::new();
    let mut run = |ex: &mut Exchange, view: &mut View, command: Command| {
        seq += 1;
        let sequenced = Sequenced {
            seq,
            ts_ns: seq * 1_000_000,
            command,
        };
        events.clear();
        ex.apply(&sequenced, &mut events);
        view.apply(&[BatchItem {
            seq,
            ts_ns: sequenced.ts_ns,
            command: &sequenced.command,
            events: &events,
        }]);
    };
    for c in setup() {
        run(&mut ex, &mut view, c);
    }
    let n = MAX_CLOSED_PER_ACCOUNT + 100;
    for i in 0..n {
        let id = ex.next_order_id();
        run(
            &mut ex,
            &mut view,
            Command::PlaceOrder(PlaceOrder {
                account: 1,
                market: 0,
                side: Side::Buy,
                order_type: OrderType::Limit,
                tif: TimeInForce::Gtc,
                quantity: Quantity::Base(1),
                price: Some(900),
                client_order_id: ClientOrderId::new(&format!("c-{i}")).unwrap(),
                stp: StpMode::None,
            }),
        );
        run(
            &mut ex,
            &mut view,
            Command::CancelOrder {
                account: 1,
                market: 0,
                target: OrderRef::Id(id),
            },
        );
    }
    let all = view.all_orders(1);
    assert_eq!(all.len(), MAX_CLOSED_PER_ACCOUNT);
    // The oldest went first, with their client ids.
    assert_eq!(all[0].client_order_id.as_str(), "c-100");
    assert!(view
        .order_by_client(1, &ClientOrderId::new("c-99").unwrap())
        .is_none());
    assert!(view
        .order_by_client(1, &ClientOrderId::new("c-100").unwrap())
        .is_some());
    assert_eq!(view.orders.len(), MAX_CLOSED_PER_ACCOUNT);
}
