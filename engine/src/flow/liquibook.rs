//! Liquibook's insert benchmark stream (the stream the speed goal is stated on):
//! alternating buy/sell limit GTC orders, buys uniform in 1880-1889, sells in 1884-1893,
//! quantity uniform in 100-1000 step 100, seeded; about half of them trade.

use super::{plain_assets, plain_market, sequence, Flow, Rng};
use crate::command::{Command, PlaceOrder};
use crate::types::*;

/// Liquibook's insert stream: `n` orders spread over `accounts` accounts, in one market.
pub fn liquibook(n: usize, seed: u64, accounts: u32) -> Flow {
    let mut rng = Rng::new(seed);
    let mut cmds = Vec::with_capacity(n);
    for i in 0..n {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let price = match side {
            Side::Buy => 1880 + rng.below(10),
            Side::Sell => 1884 + rng.below(10),
        };
        let qty = 100 * (1 + rng.below(10));
        cmds.push(Command::PlaceOrder(PlaceOrder {
            account: 1 + (i as u32 % accounts),
            market: 0,
            side,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            quantity: Quantity::Base(qty),
            price: Some(price),
            client_order_id: ClientOrderId::NONE,
            stp: StpMode::None,
        }));
    }
    Flow {
        name: "liquibook".into(),
        assets: plain_assets(),
        markets: vec![plain_market("LIQUIBOOK")],
        accounts,
        // Far beyond what an account locks (about 1e9 quote), and small enough that
        // thousands of accounts over many replays stay within one asset's u64 supply.
        funding: 1 << 40,
        commands: sequence(cmds),
        warmup: 0,
        skipped: Vec::new(),
        expected_makers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Exchange};

    #[test]
    fn liquibook_stream_is_reproducible_and_half_trades() {
        let a = liquibook(20_000, 7, 100);
        let b = liquibook(20_000, 7, 100);
        assert_eq!(a.commands, b.commands);
        assert_ne!(a.commands, liquibook(20_000, 8, 100).commands);
        let cfg = crate::EngineConfig {
            max_orders: 100_000,
            max_accounts: 1_000,
            ..Default::default()
        };
        let mut ex = Exchange::new(cfg);
        let mut out = Vec::new();
        for (i, command) in a.setup_commands(0).into_iter().enumerate() {
            let seq = i as u64;
            ex.apply(
                &crate::Sequenced {
                    seq,
                    ts_ns: 0,
                    command,
                },
                &mut out,
            );
        }
        out.clear();
        for c in &a.commands {
            ex.apply(c, &mut out);
        }
        ex.check_invariants().unwrap();
        // "About half the orders trade": as taker or as maker.
        let mut traded = std::collections::HashSet::new();
        for e in &out {
            if let Event::Trade {
                maker_order,
                taker_order,
                ..
            } = e
            {
                traded.insert(*maker_order);
                traded.insert(*taker_order);
            }
        }
        let n = traded.len();
        assert!((8_000..12_000).contains(&n), "{n} orders traded");
    }
}
