use fulgur_engine::*;
fn main() {
    let mut ex = Exchange::new(EngineConfig::default());
    let mut seq = 0;
    let mut run = |ex: &mut Exchange, c: Command| {
        seq += 1;
        let mut v = Vec::new();
        ex.apply(
            &Sequenced {
                seq,
                ts_ns: seq * 1000,
                command: c,
            },
            &mut v,
        );
        for e in &v {
            println!("  {e:?}");
        }
        ex.check_invariants().unwrap();
    };
    run(
        &mut ex,
        Command::AddAsset(Box::new(AssetSpec {
            symbol: "BTC".into(),
            decimals: 8,
            class: AssetClass::Crypto,
        })),
    );
    run(
        &mut ex,
        Command::AddAsset(Box::new(AssetSpec {
            symbol: "USDT".into(),
            decimals: 8,
            class: AssetClass::Stablecoin,
        })),
    );
    run(
        &mut ex,
        Command::AddMarket(Box::new(MarketSpec {
            symbol: "BTCUSDT".into(),
            base: 0,
            quote: 1,
            tick_size: 1_000_000,
            lot_size: 1000,
            min_price_ticks: 1,
            max_price_ticks: 1 << 40,
            min_qty_lots: 1,
            max_qty_lots: 1 << 40,
            min_notional: 0,
            max_notional: u64::MAX,
            price_band_bps: 0,
            max_open_orders: 100,
            status: MarketStatus::Trading,
            fees: FeeSchedule {
                maker_fee_bps: -1,
                taker_fee_bps: 5,
            },
            required_permission: None,
        })),
    );
    run(
        &mut ex,
        Command::Deposit {
            account: 1,
            asset: 1,
            amount: 100_000_000_000_000,
        },
    );
    run(
        &mut ex,
        Command::Deposit {
            account: 2,
            asset: 0,
            amount: 1_000_000_000,
        },
    );
    let po = |a, side, px, q| {
        Command::PlaceOrder(PlaceOrder {
            account: a,
            market: 0,
            side,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            quantity: Quantity::Base(q),
            price: Some(px),
            client_order_id: ClientOrderId::NONE,
            stp: StpMode::None,
        })
    };
    println!("sell");
    run(&mut ex, po(2, Side::Sell, 6_500_000, 100));
    println!("sell2");
    run(&mut ex, po(2, Side::Sell, 6_500_100, 100));
    println!("buy");
    run(&mut ex, po(1, Side::Buy, 6_500_100, 150));
    println!("amend");
    run(
        &mut ex,
        Command::AmendOrder {
            account: 2,
            market: 0,
            target: OrderRef::Id(2),
            new_qty: 40,
            new_price: Some(6_400_000),
        },
    );
    println!("cancel all");
    run(
        &mut ex,
        Command::CancelAll {
            account: 2,
            market: None,
        },
    );
    println!("hash {:x}", ex.state_hash());
}
