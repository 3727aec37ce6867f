//! The exchange's in-process Lightning node against a regtest bitcoind and two users' own
//! nodes, over loopback TCP: unannounced channels, a deposit, keysend and BOLT12 payouts that
//! are never paid twice, a BOLT11 withdrawal, and the invoice checks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chain::Chain;
use common::ln::{
    exchange_config, mainnet_invoice, mainnet_offer, wait_exchange_event, wait_mempool, wait_until,
    UserNode,
};
use fulgur_settlement::node::{InvoiceError, LightningNode, NodeEvent, PayError};
use fulgur_settlement::{Destination, PartRequest, PartStatus, PayoutRail};
use ldk_node::bitcoin::hashes::{sha256, Hash};
use ldk_node::bitcoin::Network;
use ldk_node::Event;

const CAPACITY_SAT: u64 = 200_000;
const SHORT: Duration = Duration::from_secs(30);

/// `f` on a blocking thread of a current-thread tokio runtime, as the server calls the node
/// from its handlers (the worst case: that runtime's drivers run only inside its block_on).
fn in_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::task::spawn_blocking(f).await.unwrap() })
}

fn received(b: &UserNode, what: &str) -> (Vec<u8>, u64) {
    match b.wait_event(what, SHORT, |e| matches!(e, Event::PaymentReceived { .. })) {
        Event::PaymentReceived {
            payment_hash,
            amount_msat,
            ..
        } => (payment_hash.0.to_vec(), amount_msat),
        _ => unreachable!(),
    }
}

#[test]
fn exchange_node_channels_deposits_payouts_and_withdrawals() {
    let t0 = Instant::now();
    let Some(mut chain) = Chain::start("ln") else {
        return;
    };
    let cfg = exchange_config(&chain, "x");
    let data = cfg.data_dir.clone();
    let x = Arc::new(in_blocking(move || LightningNode::start(&cfg)).unwrap());
    let a = UserNode::start(&chain, "a");
    let b = UserNode::start(&chain, "b");
    // A routing node: X's public channel to it is what lets X pay offers.
    let r = UserNode::start_public(&chain, "r");
    assert_eq!(x.network(), Network::Regtest);
    assert_eq!(x.listen_addresses().len(), 1);
    eprintln!("started: {:?}", t0.elapsed());

    // Decoded at the end, expired by then.
    let expiring = b.invoice(1_000, 1);

    // X, and the users' anchor reserves (ldk-node refuses an anchor channel without one).
    chain.pay(&x.new_onchain_address().unwrap(), 1_000_000);
    for u in [&a, &b, &r] {
        chain.pay(&u.new_address(), 30_000);
    }
    chain.mine(1);
    x.sync_wallets().unwrap();
    for u in [&a, &b, &r] {
        u.sync();
    }
    wait_until("the funds", SHORT, || {
        (x.onchain_balance_sat().1 >= 1_000_000
            && [&a, &b, &r]
                .iter()
                .all(|u| u.node.list_balances().spendable_onchain_balance_sats >= 30_000))
        .then_some(())
    });
    eprintln!("funded: {:?}", t0.elapsed());

    // A gets 50,000 sat pushed so it can pay X; B starts empty. One unconfirmed funding
    // transaction at a time (ldk-node would spend the same coins twice).
    x.open_channel(&a.node_id(), &a.addr, CAPACITY_SAT, 50_000_000)
        .unwrap();
    let refused = x.open_channel(&b.node_id(), &b.addr, CAPACITY_SAT, 0);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("not confirmed yet")),
        "{refused:?}"
    );
    wait_mempool(&chain, 1);
    chain.mine(1);
    x.sync_wallets().unwrap();
    x.open_channel(&b.node_id(), &b.addr, CAPACITY_SAT, 0)
        .unwrap();
    wait_mempool(&chain, 1);
    chain.mine(1);
    x.sync_wallets().unwrap();

    // With private channels to two users and no public one, X has no reply path for an
    // offer's invoice.
    let offer = b.offer();
    assert!(!x.can_pay_offers());
    assert_eq!(x.sendable_msat(&Destination::Offer(offer.clone())), 0);
    assert!(matches!(
        x.pay_offer(&offer, 1_000, "too early"),
        Err(PayError::Failed(_))
    ));

    x.open_announced_channel(&r.node_id(), &r.addr, 100_000, 0)
        .unwrap();
    wait_mempool(&chain, 1);
    chain.mine(6);
    x.sync_wallets().unwrap();
    for u in [&a, &b, &r] {
        u.sync();
    }
    let mut ready = Vec::new();
    while ready.len() < 3 {
        if let NodeEvent::ChannelReady { counterparty, .. } =
            wait_exchange_event(&x, "channels ready", SHORT, |e| {
                matches!(e, NodeEvent::ChannelReady { .. })
            })
        {
            ready.push(counterparty);
        }
    }
    ready.sort();
    let mut users = vec![a.node_id(), b.node_id(), r.node_id()];
    users.sort();
    assert_eq!(ready, users);
    for u in [&a, &b, &r] {
        u.wait_event("channel ready", SHORT, |e| {
            matches!(e, Event::ChannelReady { .. })
        });
    }
    wait_until("usable channels", SHORT, || {
        let c = x.channels();
        (c.len() == 3 && c.iter().all(|c| c.is_usable && c.is_outbound)).then_some(())
    });
    wait_until("usable at the users", SHORT, || {
        (a.channels_usable(1) && b.channels_usable(1) && r.channels_usable(1)).then_some(())
    });
    eprintln!("channels ready: {:?}", t0.elapsed());

    // A deposit: A pays X's invoice (made, like every call of the server, from spawn_blocking).
    let x2 = x.clone();
    let inv = in_blocking(move || x2.invoice(20_000_000, "deposit", 3600)).unwrap();
    assert!(inv.expires_at_ms > common::now_ms());
    a.pay(&inv.bolt11);
    let ev = wait_exchange_event(&x, "the deposit", SHORT, |e| {
        matches!(e, NodeEvent::PaymentReceived { .. })
    });
    assert_eq!(
        ev,
        NodeEvent::PaymentReceived {
            payment_hash: inv.payment_hash,
            amount_msat: 20_000_000
        }
    );
    // X received 20,000 sat over a channel of 200,000: LDK's default 10% in flight would
    // have refused it; X's channels are unannounced, so X's limit is 100%.
    let to_a = x
        .channels()
        .into_iter()
        .find(|c| c.counterparty_node_id == a.node_id());
    assert!(to_a.unwrap().inbound_capacity_msat >= 50_000_000 - 20_000_000 - 2_000_000);
    eprintln!("deposit: {:?}", t0.elapsed());

    // A keysend payout to B: at most B's maximum in flight, 10% of the channel by default.
    let to_b = Destination::Node(b.node_id());
    let limit = x.sendable_msat(&to_b);
    assert!(
        (19_000_000..=CAPACITY_SAT * 1000 / 10).contains(&limit),
        "sendable {limit}"
    );
    assert_eq!(
        x.sendable_msat(&Destination::Node(x.node_id())),
        0,
        "no channel"
    );
    let b_before = b.lightning_balance_msat();
    let part = PartRequest {
        tag: "fulgur:1:7:0".into(),
        preimage: sha256::Hash::hash(b"secret fulgur:1:7:0").to_byte_array(),
        amount_msat: 15_000_000,
        destination: to_b.clone(),
    };
    assert_eq!(x.status(&part), PartStatus::Unknown);
    x.send(&part).unwrap();
    x.send(&part).unwrap(); // pending: refused by the node as a duplicate, answered Ok
    let fee = wait_until("the keysend part", SHORT, || match x.status(&part) {
        PartStatus::Succeeded { fee_msat } => Some(fee_msat),
        PartStatus::Pending => None,
        s => panic!("{s:?}"),
    });
    assert_eq!(fee, 0, "a direct channel");
    let keysend_hash = sha256::Hash::hash(&part.preimage).to_byte_array();
    wait_exchange_event(
        &x,
        "the keysend success",
        SHORT,
        |e| matches!(e, NodeEvent::PaymentSuccessful { payment_id, .. } if *payment_id == keysend_hash),
    );
    x.send(&part).unwrap(); // succeeded: again nothing sent
    let (hash, amount) = received(&b, "the keysend part");
    assert_eq!((hash, amount), (keysend_hash.to_vec(), 15_000_000));
    eprintln!("keysend: {:?}", t0.elapsed());

    // A withdrawal: X pays B's invoice.
    let bolt11 = b.invoice(5_000_000, 600);
    let d = x.decode_invoice(&bolt11).unwrap();
    assert_eq!(d.amount_msat, Some(5_000_000));
    assert_eq!(d.payee, b.node_id());
    assert_eq!(
        x.pay_invoice(&bolt11, Some(4_000_000)),
        Err(PayError::Amount(
            "4000000 msat for an invoice of 5000000 msat".into()
        ))
    );
    let id = x.pay_invoice(&bolt11, None).unwrap();
    assert_eq!(id, d.payment_hash);
    let ev = wait_exchange_event(&x, "the withdrawal", SHORT, |e| {
        matches!(e, NodeEvent::PaymentSuccessful { .. })
    });
    assert_eq!(
        ev,
        NodeEvent::PaymentSuccessful {
            payment_id: id,
            payment_hash: id,
            fee_msat: 0
        }
    );
    assert_eq!(x.payment(&id), PartStatus::Succeeded { fee_msat: 0 });
    assert_eq!(x.pay_invoice(&bolt11, None), Err(PayError::Duplicate));
    assert_eq!(received(&b, "the withdrawal").1, 5_000_000);
    eprintln!("withdrawal: {:?}", t0.elapsed());

    // Invoices and offers the node refuses.
    assert_eq!(x.decode_invoice(&expiring), Err(InvoiceError::Expired));
    assert_eq!(
        x.pay_invoice(&expiring, None),
        Err(PayError::Invalid(InvoiceError::Expired))
    );
    assert_eq!(
        x.decode_invoice(&mainnet_invoice()),
        Err(InvoiceError::WrongNetwork {
            invoice: "bitcoin".into(),
            node: "regtest".into()
        })
    );
    for garbage in [
        "",
        "hello",
        "lnbcrt1qqqqqqqqqqqq",
        &bolt11[..bolt11.len() - 1],
    ] {
        assert!(
            matches!(x.decode_invoice(garbage), Err(InvoiceError::Malformed(_))),
            "{garbage}"
        );
    }
    for garbage in ["lno1qqqq", "lno1", "hello", &offer[..offer.len() - 3]] {
        assert!(
            matches!(x.decode_offer(garbage), Err(InvoiceError::Malformed(_))),
            "{garbage}"
        );
    }
    assert_eq!(
        x.decode_offer(&mainnet_offer()),
        Err(InvoiceError::WrongNetwork {
            invoice: "bitcoin".into(),
            node: "regtest".into()
        })
    );
    let o = x.decode_offer(&offer).unwrap();
    assert_eq!(o.amount_msat, None);
    assert_eq!(o.description.as_deref(), Some("payouts"));

    // A BOLT12 payout to B's offer, found again by its tag, once X's public channel is
    // announced: X is then in its own graph and the reply path for B's invoice is X itself.
    wait_until("X announced", SHORT, || x.is_announced().then_some(()));
    assert!(x.can_pay_offers());
    assert!(x.sendable_msat(&Destination::Offer(offer.clone())) >= 19_000_000);
    let part = PartRequest {
        tag: "fulgur:1:7:1".into(),
        preimage: [0; 32],
        amount_msat: 3_000_000,
        destination: Destination::Offer(offer),
    };
    assert_eq!(x.status(&part), PartStatus::Unknown);
    x.send(&part).unwrap();
    x.send(&part).unwrap(); // pending: not sent again
    wait_until("the offer part", SHORT, || match x.status(&part) {
        PartStatus::Succeeded { .. } => Some(()),
        PartStatus::Pending => None,
        s => panic!("{s:?}"),
    });
    x.send(&part).unwrap();
    assert_eq!(received(&b, "the offer part").1, 3_000_000);
    let (_, st) = x.find_offer_payment("fulgur:1:7:1").unwrap();
    assert_eq!(st, PartStatus::Succeeded { fee_msat: 0 });
    eprintln!("bolt12: {:?}", t0.elapsed());

    // B got each part once.
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<_> = b
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, Event::PaymentReceived { .. }))
        .collect();
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(b.received_msat(), 15_000_000 + 5_000_000 + 3_000_000);
    assert_eq!(
        b.lightning_balance_msat(),
        b_before + 15_000_000 + 5_000_000 + 3_000_000
    );
    // X's side, to the msat (direct channels: no fees): A's channel less the push plus the
    // deposit, B's less the three payments, R's; less the two 330-sat anchor outputs of each
    // channel, which LDK takes from the funder's side.
    assert_eq!(
        x.lightning_balance_msat(),
        (CAPACITY_SAT * 1000 - 50_000_000 + 20_000_000)
            + (CAPACITY_SAT * 1000 - 23_000_000)
            + 100_000_000
            - 3 * 660_000
    );

    let x = Arc::try_unwrap(x).ok().unwrap();
    in_blocking(move || x.stop());
    let _ = std::fs::remove_dir_all(data);
    eprintln!("total: {:?}", t0.elapsed());
}
