//! Settlement with real Lightning nodes: a regtest bitcoind, the exchange's ldk-node inside
//! the real `fulgur` binary, and the users' own ldk-node nodes in this process, talking
//! over loopback TCP. Channels, a Lightning deposit, trades netted and paid every epoch
//! (split over HTLC limits, retried when a peer is offline), withdrawals to invoices, bad
//! input, and `kill -9` around the epoch record and a payment.

mod common;

use std::time::Duration;

use common::chain::{client, Chain};
use common::ln::{wait_until, UserNode};
use common::{Client, Server};
use serde_json::{json, Value};

fn data_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fulgur-settle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const MINUTE: Duration = Duration::from_secs(60);

fn ln_admin(s: &Server, action: &str, body: Value) -> Value {
    common::operator(s, "lightning", action, &body)
}

/// Credits an account through the operator endpoint (`amount` in whole units).
fn credit(s: &Server, account: u32, asset: &str, amount: &str) {
    let token = common::admin_token(s.addr);
    let r = common::request(
        s.addr,
        "POST",
        "/fulgur/v1/admin/deposit",
        &[("X-Fulgur-Admin-Token", &token)],
        json!({"account": account, "asset": asset, "amount": amount})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Free and locked BTC of an account, in sat.
fn btc(c: &Client) -> (u64, u64) {
    common::chain::btc(c)
}

/// The exchange's Lightning node: (node id, listening address).
fn exchange_node(s: &Server) -> (String, String) {
    let st = ln_admin(s, "status", json!({}));
    (
        st["node"]["nodeId"].as_str().unwrap().to_string(),
        st["node"]["listen"][0].as_str().unwrap().to_string(),
    )
}

/// Funds the exchange node on chain and opens one unannounced channel to each user (with
/// `push_msat` to the user), confirmed and usable on both ends.
fn open_channels(chain: &mut Chain, s: &Server, users: &[(&UserNode, u64, u64)]) {
    let addr = ln_admin(s, "address", json!({}))["address"]
        .as_str()
        .unwrap()
        .to_string();
    chain.pay(&addr, 50_000_000);
    chain.mine(1);
    wait_until("the exchange node's funds", MINUTE, || {
        ln_admin(s, "sync", json!({}));
        let st = ln_admin(s, "status", json!({}));
        (st["node"]["onchainSpendableSat"].as_u64()? >= 50_000_000).then_some(())
    });
    // One open at a time: ldk-node would spend the same coins twice for two funding
    // transactions in flight, so the node refuses a second until the first confirms.
    for (u, capacity, push) in users {
        let before = common::ln::mempool_len(chain);
        ln_admin(
            s,
            "open-channel",
            json!({"node_id": u.node_id(), "addr": u.addr, "capacity_sat": capacity, "push_msat": push}),
        );
        common::ln::wait_mempool(chain, before + 1);
        chain.mine(1);
        ln_admin(s, "sync", json!({}));
    }
    chain.mine(5);
    wait_until("usable channels", MINUTE, || {
        ln_admin(s, "sync", json!({}));
        for (u, _, _) in users {
            u.sync();
        }
        let st = ln_admin(s, "status", json!({}));
        let ch = st["node"]["channels"].as_array()?;
        (ch.len() == users.len() && ch.iter().all(|c| c["is_usable"] == json!(true))).then_some(())
    });
}

fn server_config(chain: &Chain, data: &std::path::Path, ln_port: u16) -> std::path::PathBuf {
    chain.config(
        data,
        &format!(
            "[lightning]\nlisten = [\"127.0.0.1:{ln_port}\"]\nepoch_ms = 300\n\
             capacity_wait_ms = 1500\nmax_payout_failures = 5\ninvoice_expiry_secs = 600\n"
        ),
    )
}

fn register(c: &Client, node_id: &str) {
    let r = c.signed_body(
        "POST",
        "/fulgur/v1/settlement/destination",
        &format!("nodeId={node_id}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The account's epoch reports (its own view), newest first.
fn epochs(c: &Client) -> Vec<Value> {
    let r = c.signed("GET", "/fulgur/v1/settlement/epochs", "limit=100");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().unwrap().clone()
}

/// Sat paid to the account over all its epochs, once every payout it has is final.
fn paid_when_settled(c: &Client) -> Option<u64> {
    let e = epochs(c);
    let payouts: Vec<&Value> = e
        .iter()
        .flat_map(|e| e["payouts"].as_array().unwrap().iter())
        .collect();
    if payouts.iter().any(|p| p["state"] == "open") {
        return None;
    }
    Some(payouts.iter().map(|p| p["paidSat"].as_u64().unwrap()).sum())
}

/// A limit order that rests (sell) or crosses (buy) at 97,000.
fn order(c: &Client, side: &str, qty: &str) {
    c.place(&format!(
        "symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price=97000"
    ));
}

fn withdraw(c: &Client, params: &str) -> common::Response {
    c.signed_body(
        "POST",
        "/sapi/v1/capital/withdraw/apply",
        &format!("coin=BTC&network=LIGHTNING&{params}"),
    )
}

fn withdrawals(c: &Client) -> Vec<Value> {
    c.signed("GET", "/sapi/v1/capital/withdraw/history", "")
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn lightning_deposits_epoch_payouts_and_withdrawals() {
    let Some(mut chain) = Chain::start("settle") else {
        return;
    };
    let data = data_dir("main");
    let cfg = server_config(&chain, &data, common::free_port());
    let s = Server::start_with(data, Some(&cfg), &[]);
    let alice_node = UserNode::start(&chain, "alice");
    let bob_node = UserNode::start(&chain, "bob");
    // The users' nodes keep on-chain reserves for the anchor channels they accept.
    alice_node.fund(&mut chain, 100_000);
    bob_node.fund(&mut chain, 100_000);
    // Alice gets a starting balance to deposit with; Bob's channel is all the exchange's.
    open_channels(
        &mut chain,
        &s,
        &[
            (&alice_node, 1_000_000, 400_000_000),
            (&bob_node, 1_000_000, 0),
        ],
    );
    let (x_id, _) = exchange_node(&s);
    let alice = client(&s, 601);
    let bob = client(&s, 602);

    // A Lightning deposit: 300,000 sat in one HTLC, over a channel of 1,000,000 sat: the
    // exchange's side takes 100% in flight (LDK's default 10% would refuse it).
    let r = alice.signed(
        "GET",
        "/sapi/v1/capital/deposit/address",
        "coin=BTC&network=LIGHTNING&amount=0.003",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let invoice = r.json()["address"].as_str().unwrap().to_string();
    alice_node.pay(&invoice);
    wait_until("the Lightning deposit", MINUTE, || {
        (btc(&alice).0 == 300_000).then_some(())
    });
    let d = alice
        .signed("GET", "/sapi/v1/capital/deposit/hisrec", "")
        .json();
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(
        (d[0]["network"].clone(), d[0]["status"].clone()),
        (json!("LIGHTNING"), json!(1))
    );
    assert_eq!(d[0]["amount"], "0.00300000");

    // Both opt into self-custody settlement; Bob buys 0.0015 BTC from Alice.
    register(&alice, &alice_node.node_id());
    register(&bob, &bob_node.node_id());
    credit(&s, 602, "USDT", "1000");
    order(&alice, "SELL", "0.0015");
    order(&bob, "BUY", "0.0015");
    // Bob, taker, receives 150,000 sat less 5 bps (75 sat); Alice, maker, sold 150,000 sat
    // and gets a 1 bp rebate (15 sat) out of the taker's fee; the fee account keeps 60.
    let bob_net: u64 = 150_000 - 75;
    wait_until("Bob's payout", MINUTE, || {
        (paid_when_settled(&bob)? == bob_net).then_some(())
    });
    // Paid exactly once, in msat, and the ledger agrees: Bob has nothing left on it.
    assert_eq!(bob_node.received_msat(), bob_net * 1000);
    assert_eq!(bob_node.lightning_balance_msat(), bob_net * 1000);
    assert_eq!(btc(&bob), (0, 0));
    // Alice's net is negative: nothing paid, her BTC stays on the ledger.
    assert_eq!(btc(&alice), (300_000 - 150_000 + 15, 0));
    assert_eq!(alice_node.received_msat(), 0);
    // The epoch that carried the fill: nets sum to zero with the fee account, one fill,
    // a Merkle root; Bob's payout was split (one HTLC carries at most 10% of the channel
    // Bob accepted, 100,000 sat).
    let ep = epochs(&bob);
    let e = ep
        .iter()
        .find(|e| e["fills"] == 1)
        .expect("the epoch of the fill");
    assert_eq!(e["netSat"], json!(bob_net));
    assert_eq!(e["fillsRoot"].as_str().unwrap().len(), 64);
    let p = &e["payouts"][0];
    assert_eq!(
        (p["paidSat"].clone(), p["state"].clone()),
        (json!(bob_net), json!("paid"))
    );
    let parts = p["parts"].as_array().unwrap();
    assert!(parts.len() >= 2, "split: {p}");
    assert!(
        parts
            .iter()
            .all(|x| x["amountSat"].as_u64().unwrap() <= 100_000),
        "{p}"
    );
    let report = ln_admin(&s, "report", json!({"epoch": e["epoch"]}));
    let nets = report["nets"].as_array().unwrap();
    let sum: i64 = nets
        .iter()
        .map(|n| n["netSat"].as_i64().unwrap())
        .sum::<i64>()
        + report["feesSat"].as_i64().unwrap();
    assert_eq!(sum, 0, "{report}");
    assert_eq!(report["feesSat"], 60);

    // Alice buys some back from a third account: her net is positive now, and she is paid
    // exactly it (less her taker fee), over her own channel.
    let carol = client(&s, 603);
    credit(&s, 603, "BTC", "0.01");
    order(&carol, "SELL", "0.0002");
    order(&alice, "BUY", "0.0002");
    let alice_net: u64 = 20_000 - 10;
    wait_until("Alice's payout", MINUTE, || {
        (paid_when_settled(&alice)? == alice_net).then_some(())
    });
    assert_eq!(alice_node.received_msat(), alice_net * 1000);
    assert_eq!(btc(&alice), (300_000 - 150_000 + 15, 0));

    // Bob's node goes offline: his next payout fails, rolls over, and is paid once he is
    // back.
    bob_node.node.stop().unwrap();
    order(&alice, "SELL", "0.0005");
    order(&bob, "BUY", "0.0005");
    let second: u64 = 50_000 - 25;
    wait_until("a failed payout", MINUTE, || {
        let r = bob
            .signed("GET", "/fulgur/v1/settlement/destination", "")
            .json();
        (r["failures"].as_u64()? >= 1 && r["owedSat"].as_u64()? == second).then_some(())
    });
    assert_eq!(
        btc(&bob),
        (second, 0),
        "the rolled payout's hold is released"
    );
    bob_node.node.start().unwrap();
    ln_admin(
        &s,
        "connect",
        json!({"node_id": bob_node.node_id(), "addr": bob_node.addr}),
    );
    wait_until("the retried payout", MINUTE, || {
        (paid_when_settled(&bob)? == bob_net + second).then_some(())
    });
    assert_eq!(bob_node.received_msat(), (bob_net + second) * 1000);
    assert_eq!(btc(&bob), (0, 0));
    let r = bob
        .signed("GET", "/fulgur/v1/settlement/destination", "")
        .json();
    assert_eq!(
        (r["owedSat"].clone(), r["failures"].clone()),
        (json!(0), json!(0)),
        "{r}"
    );

    // A withdrawal to an invoice of Alice's.
    let before = btc(&alice).0;
    let inv = alice_node.invoice(50_000_000, 600);
    let r = withdraw(&alice, &format!("address={inv}&withdrawOrderId=w1"));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("the Lightning withdrawal", MINUTE, || {
        (withdrawals(&alice)[0]["status"] == 6).then_some(())
    });
    assert_eq!(btc(&alice), (before - 50_000, 0));
    assert_eq!(alice_node.received_msat(), (alice_net + 50_000) * 1000);
    let w = &withdrawals(&alice)[0];
    assert_eq!(
        (w["network"].clone(), w["withdrawOrderId"].clone()),
        (json!("LIGHTNING"), json!("w1"))
    );

    // Bad input: a clear error each, and nothing held or recorded.
    let balance = btc(&alice);
    let rows = withdrawals(&alice).len();
    let expired = alice_node.invoice(10_000_000, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let other_network = common::ln::mainnet_invoice();
    let small = alice_node.invoice(10_000_000, 600);
    for (params, code, words) in [
        (format!("address={expired}"), -4033, "expired"),
        (format!("address={other_network}"), -4033, "network"),
        (
            format!("address={small}&amount=0.0002"),
            -1102,
            "does not match",
        ),
        (format!("address={inv}"), -4033, "already paid"),
        (
            "address=lno1qqqqqqqq&amount=0.0001".to_string(),
            -4033,
            "Illegal address",
        ),
        (
            "address=hello&amount=0.0001".to_string(),
            -4033,
            "Illegal address",
        ),
        (
            format!("address={small}&withdrawOrderId=w1"),
            -4001,
            "already used",
        ),
    ] {
        let r = withdraw(&alice, &params);
        assert_eq!((r.status, r.code()), (400, code), "{params}: {}", r.body);
        assert!(r.body.contains(words), "{params}: {}", r.body);
    }
    let r = alice.signed_body(
        "POST",
        "/fulgur/v1/settlement/destination",
        "nodeId=02deadbeef",
    );
    assert_eq!((r.status, r.code()), (400, -1130), "{}", r.body);
    let r = alice.signed_body("POST", "/fulgur/v1/settlement/destination", "offer=lno1zzz");
    assert_eq!((r.status, r.code()), (400, -1130), "{}", r.body);
    assert_eq!(btc(&alice), balance);
    assert_eq!(withdrawals(&alice).len(), rows);
    // The registration is unchanged by the refusals.
    let r = alice
        .signed("GET", "/fulgur/v1/settlement/destination", "")
        .json();
    assert_eq!(r["destination"], json!(alice_node.node_id()));
    let _ = x_id;
}

/// Waits until the server dies at its fault point, meanwhile (re)connecting its node to the
/// user's, as a restarted exchange finds its peers again.
fn wait_for_the_fault(s: &mut Server, user: &UserNode) -> std::process::ExitStatus {
    let body = json!({"node_id": user.node_id(), "addr": user.addr}).to_string();
    wait_until("the fault", MINUTE, || {
        if let Some(status) = s.child.try_wait().unwrap() {
            return Some(status);
        }
        let _ = common::operator_request(s, "lightning", "connect", &body);
        std::thread::sleep(Duration::from_millis(200));
        None
    })
}

#[test]
fn a_crash_after_the_epoch_record_after_the_send_or_after_the_payment_pays_once() {
    let Some(mut chain) = Chain::start("settle-crash") else {
        return;
    };
    let data = data_dir("crash");
    let cfg = server_config(&chain, &data, common::free_port());
    let bob_node = UserNode::start(&chain, "crash-bob");
    bob_node.fund(&mut chain, 100_000);
    let mut s = Server::start_with(
        data,
        Some(&cfg),
        &[("FULGUR_FAULT", "settlement-after-record")],
    );
    open_channels(&mut chain, &s, &[(&bob_node, 1_000_000, 0)]);
    let bob = client(&s, 611);
    let seller = client(&s, 612);
    register(&bob, &bob_node.node_id());
    credit(&s, 612, "BTC", "1");
    credit(&s, 611, "USDT", "1000");
    order(&seller, "SELL", "0.0004");
    order(&bob, "BUY", "0.0004");
    let net: u64 = 40_000 - 20;
    // The epoch's close kills the server at its record (nothing paid yet); the restarted
    // server resumes the payout and is killed again just after handing the payment to the
    // node, then just after the payment succeeded and the hold was finalized.
    for next in [
        Some("settlement-after-send"),
        Some("settlement-after-paid"),
        None,
    ] {
        let status = wait_for_the_fault(&mut s, &bob_node);
        assert!(!status.success(), "killed before {next:?}: {status:?}");
        let keep = s.data.clone();
        std::mem::forget(s);
        let Some(fault) = next else {
            s = Server::start_with(keep, Some(&cfg), &[]);
            break;
        };
        // The resumed payout may reach the fault before the server even listens.
        s = Server::spawn_with(keep, Some(&cfg), &[("FULGUR_FAULT", fault)]);
    }
    // The restarted node finds Bob again.
    ln_admin(
        &s,
        "connect",
        json!({"node_id": bob_node.node_id(), "addr": bob_node.addr}),
    );
    let bob = client(&s, 611);
    wait_until("the payout after the crashes", MINUTE, || {
        (paid_when_settled(&bob)? == net).then_some(())
    });
    // More epochs go by: nothing more is sent.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(bob_node.received_msat(), net * 1000);
    assert_eq!(btc(&bob), (0, 0));
}

#[test]
fn a_payout_that_keeps_failing_goes_out_on_chain() {
    let Some(mut chain) = Chain::start("settle-fallback") else {
        return;
    };
    let data = data_dir("fallback");
    let cfg = chain.config(
        &data,
        &format!(
            "[lightning]\nlisten = [\"127.0.0.1:{}\"]\nepoch_ms = 200\ncapacity_wait_ms = 200\n\
             max_payout_failures = 2\n",
            common::free_port()
        ),
    );
    let s = Server::start_with(data, Some(&cfg), &[]);
    let dan = client(&s, 621);
    let seller = client(&s, 622);
    // A node the exchange has no channel with: every payout fails.
    let nowhere = {
        use ldk_node::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
        let sk = SecretKey::from_slice(&[7; 32]).unwrap();
        PublicKey::from_secret_key(&Secp256k1::new(), &sk).to_string()
    };
    let fallback = common::chain::addr_of(41, ldk_node::bitcoin::Network::Regtest);
    let r = dan.signed_body(
        "POST",
        "/fulgur/v1/settlement/destination",
        &format!("nodeId={nowhere}&fallbackAddress={fallback}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // An address of another network is refused as a fallback.
    let r = dan.signed_body(
        "POST",
        "/fulgur/v1/settlement/destination",
        &format!(
            "nodeId={nowhere}&fallbackAddress={}",
            common::chain::addr_of(41, ldk_node::bitcoin::Network::Bitcoin)
        ),
    );
    assert_eq!((r.status, r.code()), (400, -4033), "{}", r.body);
    // The seller's bitcoin comes on chain: custody's wallets hold what the fallback pays.
    let r = seller.signed("GET", "/sapi/v1/capital/deposit/address", "coin=BTC");
    chain.pay(r.json()["address"].as_str().unwrap(), 100_000_000);
    chain.mine(2);
    wait_until("the seller's deposit", MINUTE, || {
        (btc(&seller).0 == 100_000_000).then_some(())
    });
    credit(&s, 621, "USDT", "1000");
    order(&seller, "SELL", "0.001");
    order(&dan, "BUY", "0.001");
    // Dan's net: 100,000 sat less his 5 bps taker fee, 99,950 sat.
    // Two failed payouts, then the on-chain withdrawal of what is owed (its network fee
    // comes out of it).
    let w = wait_until("the on-chain fallback", MINUTE, || {
        let h = withdrawals(&dan);
        h.iter().find(|w| w["network"] == "BTC").cloned()
    });
    assert_eq!(w["amount"], "0.00098950", "{w}");
    assert!(w["withdrawOrderId"]
        .as_str()
        .unwrap()
        .starts_with("settlement-621-"));
    let r = dan
        .signed("GET", "/fulgur/v1/settlement/destination", "")
        .json();
    assert_eq!(r["owedSat"], 0, "{r}");
    let e = epochs(&dan);
    let rolled = e
        .iter()
        .flat_map(|e| e["payouts"].as_array().unwrap().iter())
        .filter(|p| p["state"] == "rolled")
        .count();
    assert!(rolled >= 2, "{e:?}");
    // The custody batch pays it.
    common::operator(&s, "custody", "batch", &json!({}));
    chain.mine(2);
    wait_until("the fallback's confirmation", MINUTE, || {
        let h = withdrawals(&dan);
        h.iter()
            .find(|w| w["network"] == "BTC" && w["status"] == 6)
            .cloned()
    });
    // Everything Dan was owed left the exchange: the ledger holds nothing of his.
    assert_eq!(btc(&dan), (0, 0));
}
