//! Custody against a real Bitcoin Core node in regtest (built by `scripts/bitcoind.sh`,
//! started through corepc-node) and the real `fulgur` binary: deposits credited after N
//! confirmations and taken back by reorgs, batched withdrawals, crashes around broadcast,
//! the cold wallet's 2-of-3 PSBTs, and both proofs.

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bdk_wallet::bitcoin::{Network, Txid};
use common::chain::{addr_of, btc, client, wait_for, Chain};
use common::{Client, Server};
use serde_json::{json, Value};

fn admin(s: &Server, action: &str, body: Value) -> Value {
    common::operator(s, "custody", action, &body)
}

fn deposit_address(c: &Client) -> String {
    let r = c.signed("GET", "/sapi/v1/capital/deposit/address", "coin=BTC");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["address"].as_str().unwrap().to_string()
}

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fulgur-custody-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn without_a_bitcoin_section_the_capital_endpoints_say_so() {
    let s = Server::start("no-custody");
    let c = client(&s, 1);
    for (method, path, params) in [
        ("GET", "/sapi/v1/capital/deposit/address", "coin=BTC"),
        ("GET", "/sapi/v1/capital/deposit/hisrec", ""),
        (
            "POST",
            "/sapi/v1/capital/withdraw/apply",
            "coin=BTC&address=x&amount=1",
        ),
        ("GET", "/sapi/v1/capital/withdraw/history", ""),
    ] {
        let r = c.signed(method, path, params);
        assert_eq!((r.status, r.code()), (400, -4019), "{path}: {}", r.body);
        assert!(r.body.contains("not enabled"), "{}", r.body);
    }
    // The coin list still answers, with nothing open for deposits.
    let coins = c.signed("GET", "/sapi/v1/capital/config/getall", "").json();
    let btc = coins
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["coin"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(btc["depositAllEnable"], false, "{btc}");
    let acct = c.signed("GET", "/api/v3/account", "").json();
    assert_eq!(acct["canDeposit"], false);
}

#[test]
fn deposits_are_credited_after_n_confirmations_and_withdrawals_go_out_in_one_batch() {
    let Some(mut chain) = Chain::start("batch") else {
        return;
    };
    let data = data_dir("batch");
    let cfg = chain.config(&data, "");
    let s = Server::start_with(data.clone(), Some(&cfg), &[]);
    let alice = client(&s, 501);
    let addr = deposit_address(&alice);
    assert!(addr.starts_with("bcrt1p"), "a taproot address: {addr}");
    assert_eq!(deposit_address(&alice), addr, "one address per account");
    assert_ne!(deposit_address(&client(&s, 502)), addr);

    let tx = chain.pay(&addr, 100_000_000);
    chain.mine(1);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(btc(&alice), (0, 0), "one confirmation of two: nothing yet");
    let h = alice
        .signed("GET", "/sapi/v1/capital/deposit/hisrec", "coin=BTC")
        .json();
    assert_eq!(h[0]["status"], 0, "{h}");
    assert_eq!(h[0]["txId"], tx.compute_txid().to_string());
    chain.mine(1);
    wait_for("the credit", || {
        (btc(&alice).0 == 100_000_000).then_some(())
    });
    let h = alice
        .signed("GET", "/sapi/v1/capital/deposit/hisrec", "coin=BTC")
        .json();
    assert_eq!(h[0]["status"], 1, "{h}");
    assert_eq!(h[0]["amount"], "1.00000000");
    assert_eq!(h.as_array().unwrap().len(), 1, "credited once: {h}");

    // Bad input: each a clear error, and nothing changes.
    let w = |p: &str| alice.signed_body("POST", "/sapi/v1/capital/withdraw/apply", p);
    let (main, ours) = (addr_of(5, Network::Bitcoin), addr_of(6, Network::Regtest));
    let bad = [
        (format!("coin=BTC&address={main}&amount=0.1"), -4033), // another network
        (
            "coin=BTC&address=bcrt1qnotanaddress&amount=0.1".to_string(),
            -4033,
        ),
        (format!("coin=BTC&address={ours}&amount=0.00000500"), -4022), // dust
        (format!("coin=BTC&address={ours}&amount=2"), -4026),          // more than the free balance
        (format!("coin=BTC&address={ours}&amount=0.123456789"), -4021),
        (format!("coin=DOGE&address={ours}&amount=0.1"), -4018),
    ];
    for (p, code) in &bad {
        let r = w(p);
        assert_eq!(r.code(), *code, "{p}: {}", r.body);
    }
    assert_eq!(btc(&alice), (100_000_000, 0));
    let hist = alice
        .signed("GET", "/sapi/v1/capital/withdraw/history", "")
        .json();
    assert_eq!(hist, json!([]), "refused withdrawals leave nothing behind");

    // Three withdrawals, one transaction.
    let dests = [
        (addr_of(11, Network::Regtest), 10_000_000u64),
        (addr_of(12, Network::Regtest), 20_000_000),
        (addr_of(13, Network::Regtest), 3_000_000),
    ];
    let mut ids = Vec::new();
    for (i, (a, sat)) in dests.iter().enumerate() {
        let r = w(&format!(
            "coin=BTC&network=BTC&address={a}&amount={}&withdrawOrderId=w{i}",
            fulgur_custody::btc_string(*sat)
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let again = w(&format!(
        "coin=BTC&address={}&amount=0.1&withdrawOrderId=w0",
        dests[0].0
    ));
    assert_eq!(
        again.code(),
        -4001,
        "a repeated withdrawOrderId: {}",
        again.body
    );
    let held: u64 = dests.iter().map(|d| d.1 + 1000).sum();
    assert_eq!(btc(&alice), (100_000_000 - held, held));
    admin(&s, "batch", json!({}));
    let hist = alice
        .signed("GET", "/sapi/v1/capital/withdraw/history", "")
        .json();
    let txids: std::collections::BTreeSet<String> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["txId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(txids.len(), 1, "one transaction pays all three: {hist}");
    let txid = Txid::from_str(txids.iter().next().unwrap()).unwrap();
    for (a, sat) in &dests {
        assert_eq!(chain.received(a, txid), *sat, "exact amount to {a}");
    }
    // The network fee: the configured fallback rate (regtest has no estimate), paid by the
    // exchange's change, never by a recipient.
    let entry: Value = chain
        .node
        .client
        .call("getmempoolentry", &[json!(txid.to_string())])
        .unwrap();
    let fee_sat = (entry["fees"]["base"].as_f64().unwrap() * 1e8).round() as u64;
    let vsize = entry["vsize"].as_u64().unwrap();
    assert!(
        (2 * vsize..3 * vsize).contains(&fee_sat),
        "{fee_sat} sat for {vsize} vB at 2 sat/vB"
    );
    for h in hist.as_array().unwrap() {
        assert_eq!(h["status"], 4, "processing until confirmed: {h}");
        assert_eq!(h["transactionFee"], "0.00001000");
    }
    chain.mine(2);
    wait_for("the withdrawals' finalization", || {
        let hist = alice
            .signed("GET", "/sapi/v1/capital/withdraw/history", "")
            .json();
        hist.as_array()
            .unwrap()
            .iter()
            .all(|h| h["status"] == 6)
            .then_some(())
    });
    assert_eq!(btc(&alice), (100_000_000 - held, 0));
    let acct = alice.signed("GET", "/api/v3/account", "").json();
    assert_eq!(
        (acct["canDeposit"].clone(), acct["canWithdraw"].clone()),
        (json!(true), json!(true))
    );
    drop(s);
}

#[test]
fn reorgs_before_and_after_crediting() {
    let Some(mut chain) = Chain::start("reorg") else {
        return;
    };
    let data = data_dir("reorg");
    let cfg = chain.config(&data, "");
    let s = Server::start_with(data.clone(), Some(&cfg), &[]);
    let bob = client(&s, 503);
    let addr = deposit_address(&bob);

    // Before N: one confirmation, then its block is gone; nothing is credited meanwhile.
    chain.pay(&addr, 50_000_000);
    chain.mine(1);
    std::thread::sleep(Duration::from_millis(600));
    chain.node.client.invalidate_block(chain.tip()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(btc(&bob), (0, 0));
    // The transaction is mined again on the new branch: credited once.
    chain.mine(2);
    wait_for("the credit", || (btc(&bob).0 == 50_000_000).then_some(()));

    // After crediting: the deposit's block is replaced by one with a double spend, after
    // the account has put most of it in a withdrawal.
    let carol = client(&s, 504);
    let addr = deposit_address(&carol);
    let (_, conflict) = chain.pay_with_conflict(&addr, 100_000_000);
    chain.mine(2);
    wait_for("the credit", || {
        (btc(&carol).0 == 100_000_000).then_some(())
    });
    let dest = addr_of(21, Network::Regtest);
    let r = carol.signed_body(
        "POST",
        "/sapi/v1/capital/withdraw/apply",
        &format!("coin=BTC&address={dest}&amount=0.4"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(btc(&carol), (59_999_000, 40_001_000));
    chain
        .node
        .client
        .invalidate_block(chain.block_at_depth(1))
        .unwrap();
    chain.mine_block_with(&[&conflict]);
    chain.mine(2);
    // The ledger takes back what the account has; the rest is a deficit, and the account
    // is frozen for withdrawals and buys.
    wait_for("the reversal", || (btc(&carol).0 == 0).then_some(()));
    assert_eq!(
        btc(&carol),
        (0, 40_001_000),
        "the held withdrawal stays held"
    );
    let r = carol.signed_body(
        "POST",
        "/sapi/v1/capital/withdraw/apply",
        &format!("coin=BTC&address={dest}&amount=0.001"),
    );
    assert_eq!(r.code(), -4015, "{}", r.body);
    let h = carol
        .signed("GET", "/sapi/v1/capital/deposit/hisrec", "")
        .json();
    assert_eq!(h[0]["status"], 0, "no longer credited: {h}");
    // A new deposit covers the deficit first.
    chain.pay(&addr, 50_000_000);
    chain.mine(2);
    wait_for("the cover", || {
        (btc(&carol).0 == 50_000_000 - 40_001_000).then_some(())
    });
    let r = carol.signed_body(
        "POST",
        "/sapi/v1/capital/withdraw/apply",
        &format!("coin=BTC&address={dest}&amount=0.001"),
    );
    assert_eq!(r.status, 200, "no longer frozen: {}", r.body);
    admin(&s, "batch", json!({}));
    let w = carol
        .signed("GET", "/sapi/v1/capital/withdraw/history", "")
        .json();
    assert!(
        w.as_array().unwrap().iter().all(|w| w["txId"] != ""),
        "both paid now: {w}"
    );
    drop(s);
}

/// The wallets' total (deposit + hot + cold), from the operator endpoint.
fn reserves(s: &Server) -> u64 {
    let b = admin(s, "status", json!({}))["balances"].clone();
    ["deposit_sat", "hot_sat", "cold_sat"]
        .iter()
        .map(|k| b[k].as_u64().unwrap())
        .sum()
}

#[test]
fn a_crash_after_signing_or_after_broadcast_never_pays_twice() {
    let Some(mut chain) = Chain::start("crash") else {
        return;
    };
    for (i, fault) in ["custody-after-sign", "custody-after-broadcast"]
        .iter()
        .enumerate()
    {
        let data = data_dir(&format!("crash{i}"));
        let cfg = chain.config(&data, "");
        let s = Server::start_with(data.clone(), Some(&cfg), &[("FULGUR_FAULT", fault)]);
        let dave = client(&s, 505);
        let addr = deposit_address(&dave);
        chain.pay(&addr, 100_000_000);
        chain.mine(2);
        wait_for("the credit", || (btc(&dave).0 == 100_000_000).then_some(()));
        let dest = addr_of(31 + i as u8, Network::Regtest);
        let r = dave.signed_body(
            "POST",
            "/sapi/v1/capital/withdraw/apply",
            &format!("coin=BTC&address={dest}&amount=0.1"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        // The batch kills the server (kill -9) at the fault point.
        let _ = common::operator_request(&s, "custody", "batch", "");
        let mut s = s;
        let status = s.child.wait().unwrap();
        assert!(!status.success(), "{fault}: killed: {status:?}");
        // Keep the data directory: restart on it without the fault.
        let data_keep = s.data.clone();
        std::mem::forget(s);
        let s = Server::start_with(data_keep, Some(&cfg), &[]);
        let dave = client(&s, 505);
        // The restarted service (re)broadcasts the stored transaction; then it is mined.
        wait_for("the stored batch in the mempool", || {
            let h = dave
                .signed("GET", "/sapi/v1/capital/withdraw/history", "")
                .json();
            let txid = h[0]["txId"].as_str()?.to_string();
            let pool: Value = chain.node.client.call("getrawmempool", &[]).ok()?;
            pool.as_array()?.contains(&json!(txid)).then_some(())
        });
        chain.mine(2);
        wait_for("the withdrawal's completion", || {
            let h = dave
                .signed("GET", "/sapi/v1/capital/withdraw/history", "")
                .json();
            (h.as_array().unwrap().len() == 1 && h[0]["status"] == 6).then_some(())
        });
        let h = dave
            .signed("GET", "/sapi/v1/capital/withdraw/history", "")
            .json();
        let txid = Txid::from_str(h[0]["txId"].as_str().unwrap()).unwrap();
        assert_eq!(chain.received(&dest, txid), 10_000_000, "{fault}");
        // Paid once: the wallets hold the deposit minus one payment and one fee.
        admin(&s, "batch", json!({}));
        let left = reserves(&s);
        assert!(
            left < 90_000_000 && left > 90_000_000 - 20_000,
            "{fault}: {left} sat left"
        );
        assert_eq!(btc(&dave), (100_000_000 - 10_001_000, 0));
    }
}

/// `fulgur custody psbt sign`, as an offline signer runs it.
fn sign_offline(psbt: &str, key: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulgur"))
        .args(["custody", "psbt", "sign", "--psbt", psbt, "--key"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "signed 1 input(s)"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn cold_sweep_two_of_three_withdrawal_and_proofs() {
    let Some(mut chain) = Chain::start("cold") else {
        return;
    };
    let data = data_dir("cold");
    let cfg = chain.config(&data, "hot_wallet_ceiling_sat = 50000000\n");
    let s = Server::start_with(data.clone(), Some(&cfg), &[]);
    let eve = client(&s, 506);
    chain.pay(&deposit_address(&eve), 200_000_000);
    chain.mine(2);
    wait_for("the credit", || (btc(&eve).0 == 200_000_000).then_some(()));

    // Over the 0.5 BTC ceiling: the deposit is swept, all but a quarter of a BTC to cold.
    admin(&s, "batch", json!({}));
    chain.mine(2);
    let b = wait_for("the sweep", || {
        let b = admin(&s, "status", json!({}))["balances"].clone();
        (b["cold_sat"] == 175_000_000).then_some(b)
    });
    assert_eq!(b["deposit_sat"], 0, "{b}");
    let hot = b["hot_sat"].as_u64().unwrap();
    assert!(
        hot < 25_000_000 && hot > 24_990_000,
        "hot keeps half the ceiling less the fee: {b}"
    );

    // A cold withdrawal: a PSBT, two offline signers, then broadcast.
    let dest = addr_of(41, Network::Regtest);
    let psbt = admin(
        &s,
        "cold-psbt",
        json!({"address": dest, "amount_sat": 100_000_000}),
    )["psbt"]
        .as_str()
        .unwrap()
        .to_string();
    let keys = s.data.join("custody");
    let one = sign_offline(&psbt, &keys.join("cold-1.xprv"));
    let token = common::admin_token(s.addr);
    let post = |action: &str, body: Value| {
        common::request(
            s.addr,
            "POST",
            &format!("/fulgur/v1/admin/custody/{action}"),
            &[("X-Fulgur-Admin-Token", &token)],
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    let r = post("broadcast", json!({"psbt": one}));
    assert_eq!(
        r.code(),
        -4032,
        "one signature of two is not enough: {}",
        r.body
    );
    let two = sign_offline(&one, &keys.join("cold-3.xprv"));
    let txid = admin(&s, "broadcast", json!({"psbt": two}))["txid"]
        .as_str()
        .unwrap()
        .to_string();
    chain.mine(1);
    assert_eq!(
        chain.received(&dest, Txid::from_str(&txid).unwrap()),
        100_000_000
    );

    // Both proofs, made and checked; a tampered one fails.
    chain.mine(1);
    std::thread::sleep(Duration::from_millis(500));
    let cold_keys: Vec<String> = ["cold-1.xprv", "cold-2.xprv"]
        .iter()
        .map(|k| keys.join(k).display().to_string())
        .collect();
    let summary = admin(
        &s,
        "proof",
        json!({"message": "audit 2026-11-21", "cold_keys": cold_keys}),
    );
    assert_eq!(
        summary["reserves_sat"].as_u64().unwrap(),
        reserves(&s),
        "{summary}"
    );
    assert_eq!(summary["unproven"], json!([]), "{summary}");
    let proofs: Value =
        serde_json::from_slice(&std::fs::read(keys.join("proofs").join("proofs.json")).unwrap())
            .unwrap();
    let mut reserves_proof = proofs["reserves"].clone();
    let r = post("verify", json!({"reserves": reserves_proof}));
    assert_eq!(r.status, 200, "{}", r.body);
    reserves_proof["wallets"][0]["amount_sat"] =
        json!(reserves_proof["wallets"][0]["amount_sat"].as_u64().unwrap() + 1);
    assert_eq!(
        post("verify", json!({"reserves": reserves_proof})).code(),
        -4032
    );
    let mut reserves_proof = proofs["reserves"].clone();
    reserves_proof["message"] = json!("another challenge");
    assert_eq!(
        post("verify", json!({"reserves": reserves_proof})).code(),
        -4032
    );

    let r = eve.signed("GET", "/fulgur/v1/proof/liabilities", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let root: fulgur_custody::liabilities::Root =
        serde_json::from_value(v["root"].clone()).unwrap();
    let mut p: fulgur_custody::liabilities::Inclusion =
        serde_json::from_value(v["inclusion"].clone()).unwrap();
    assert_eq!(p.balance, 200_000_000);
    assert_eq!(root.total, summary["liabilities_sat"].as_u64().unwrap());
    fulgur_custody::liabilities::verify(&p, &root).unwrap();
    p.balance -= 1;
    assert!(fulgur_custody::liabilities::verify(&p, &root).is_err());
    drop(s);
}

/// One phase of `tests/ccxt/capital.py` (ccxt's own deposit and withdrawal calls); its
/// JSON line.
fn ccxt_phase(python: &Path, s: &Server, c: &Client, phase: &str, to: &str) -> Value {
    let out = std::process::Command::new(python)
        .arg(common::root().join("tests/ccxt/capital.py"))
        .arg(phase)
        .args(["--base", &format!("http://{}", s.addr)])
        .args(["--key", &c.key, "--secret", &c.secret, "--to", to])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ccxt {phase}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

#[test]
fn ccxt_deposits_and_withdraws() {
    let python = match common::python() {
        Ok(p) => p,
        Err(why) if !common::in_ci() => return eprintln!("skipped: no ccxt environment: {why}"),
        Err(why) => panic!("CI needs the ccxt Python environment: {why}"),
    };
    let Some(mut chain) = Chain::start("ccxt") else {
        return;
    };
    let data = data_dir("ccxt");
    let cfg = chain.config(&data, "");
    let s = Server::start_with(data.clone(), Some(&cfg), &[]);
    let frank = client(&s, 507);
    let to = addr_of(51, Network::Regtest);
    let addr = ccxt_phase(&python, &s, &frank, "address", &to)["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(addr, deposit_address(&frank));
    chain.pay(&addr, 50_000_000);
    chain.mine(2);
    wait_for("the credit", || (btc(&frank).0 == 50_000_000).then_some(()));
    ccxt_phase(&python, &s, &frank, "credited", &to);
    admin(&s, "batch", json!({}));
    chain.mine(2);
    wait_for("the withdrawal's completion", || {
        let h = frank
            .signed("GET", "/sapi/v1/capital/withdraw/history", "")
            .json();
        (h[0]["status"] == 6).then_some(())
    });
    let txid = ccxt_phase(&python, &s, &frank, "done", &to)["txid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        chain.received(&to, Txid::from_str(&txid).unwrap()),
        10_000_000
    );
}
