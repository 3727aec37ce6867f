//! A regtest Bitcoin Core node (built by `scripts/bitcoind.sh`, started through
//! corepc-node) with a faucet wallet, and the account helpers the chain tests share.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::consensus::encode::serialize_hex;
use bdk_wallet::bitcoin::{Address, Amount, BlockHash, Network, Transaction, Txid};
use bdk_wallet::KeychainKind;
use fulgur_custody::wallets::{self, rpc_client, SyncedWallet};
use fulgur_custody::RpcAuth;
use serde_json::{json, Value};

use super::{Client, Server};

/// `BITCOIND_EXE`, or what `scripts/bitcoind.sh` prints (building it on first use). `None`
/// (the test says why and passes) only off CI.
pub fn bitcoind() -> Option<String> {
    if let Ok(p) = std::env::var("BITCOIND_EXE") {
        return Some(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bitcoind.sh");
    match std::process::Command::new("bash").arg(&script).output() {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout)
            .ok()
            .and_then(|s| s.lines().last().map(str::to_string)),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: scripts/bitcoind.sh failed: {other:?}"
            );
            eprintln!("skipped: no bitcoind ({other:?})");
            None
        }
    }
}

/// A regtest node, and a test wallet (the "user's" own wallet) funded by mining.
pub struct Chain {
    pub node: corepc_node::Node,
    pub faucet: SyncedWallet,
    pub key: Xpriv,
    /// Blocks mined so far: each goes to another address, so a branch mined after an
    /// `invalidateblock` never rebuilds the very block that was invalidated.
    pub mined: std::cell::Cell<u8>,
    _dir: PathBuf,
}

impl Chain {
    pub fn start(name: &str) -> Option<Chain> {
        let exe = bitcoind()?;
        let mut conf = corepc_node::Conf::default();
        conf.wallet = None;
        // `received` looks transactions up in blocks.
        conf.args.push("-txindex=1");
        let node = corepc_node::Node::with_conf(&exe, &conf).expect("bitcoind starts");
        let dir = std::env::temp_dir().join(format!("fulgur-faucet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rpc = rpc_client(
            &node.rpc_url(),
            &RpcAuth::CookieFile(node.params.cookie_file.clone()),
        )
        .unwrap();
        let key = Xpriv::new_master(Network::Regtest, &[name.len() as u8; 32]).unwrap();
        let desc = (
            format!("wpkh({key}/84h/1h/0h/0/*)"),
            format!("wpkh({key}/84h/1h/0h/1/*)"),
        );
        let mut faucet =
            SyncedWallet::open(&dir, "faucet", &desc, Network::Regtest, rpc, 0).unwrap();
        let a = faucet
            .wallet
            .reveal_next_address(KeychainKind::External)
            .address;
        faucet.persist().unwrap();
        node.client.generate_to_address(110, &a).unwrap();
        faucet.sync().unwrap();
        Some(Chain {
            node,
            faucet,
            key,
            mined: 0.into(),
            _dir: dir,
        })
    }

    pub fn config(&self, data: &Path, extra: &str) -> PathBuf {
        let path = data.with_extension("toml");
        std::fs::write(
            &path,
            format!(
                "[bitcoin]\nnetwork = \"regtest\"\nrpc_url = \"{}\"\nrpc_cookie_file = \"{}\"\n\
                 confirmations = 2\nfinal_confirmations = 6\nbatch_window_ms = 3600000\n\
                 poll_interval_ms = 100\nfallback_fee_sat_per_vb = 2\nwithdraw_fee_sat = 1000\n\
                 withdraw_min_sat = 1000\n{extra}",
                self.node.rpc_url(),
                self.node.params.cookie_file.display()
            ),
        )
        .unwrap();
        path
    }

    /// Mines `n` blocks to an address of nobody we watch.
    pub fn mine(&self, n: usize) {
        for _ in 0..n {
            self.mined.set(self.mined.get().wrapping_add(1));
            let a = addr_of(100u8.wrapping_add(self.mined.get()), Network::Regtest);
            let a = Address::from_str(&a).unwrap().assume_checked();
            self.node.client.generate_to_address(1, &a).unwrap();
        }
    }

    /// Pays `sat` to `address` from the faucet; the transaction (in the mempool).
    pub fn pay(&mut self, address: &str, sat: u64) -> Transaction {
        self.faucet.sync().unwrap();
        let to = Address::from_str(address).unwrap().assume_checked();
        let mut psbt = {
            let mut b = self.faucet.wallet.build_tx();
            b.add_recipient(to.script_pubkey(), Amount::from_sat(sat));
            b.finish().unwrap()
        };
        wallets::sign(&mut psbt, &self.key);
        let tx = wallets::finalize(psbt).unwrap();
        self.faucet.insert_unconfirmed(&tx).unwrap();
        self.node.client.send_raw_transaction(&tx).unwrap();
        tx
    }

    pub fn tip(&self) -> BlockHash {
        BlockHash::from_str(&self.node.client.get_best_block_hash().unwrap().0).unwrap()
    }

    pub fn height(&self) -> u64 {
        self.node.client.get_block_count().unwrap().0
    }

    /// The block `depth` below the tip (0 = the tip).
    pub fn block_at_depth(&self, depth: u64) -> BlockHash {
        let h = self.height() - depth;
        let v: Value = self.node.client.call("getblockhash", &[json!(h)]).unwrap();
        BlockHash::from_str(v.as_str().unwrap()).unwrap()
    }

    /// A block with exactly these transactions (and nothing from the mempool).
    pub fn mine_block_with(&self, txs: &[&Transaction]) {
        let hex: Vec<Value> = txs.iter().map(|t| json!(serialize_hex(*t))).collect();
        let _: Value = self
            .node
            .client
            .call(
                "generateblock",
                &[json!(addr_of(99, Network::Regtest)), json!(hex)],
            )
            .unwrap();
    }

    /// Pays `sat` to `address` (broadcast), and returns with it a transaction spending the
    /// same inputs back to the faucet (not broadcast): a reorg's double spend.
    pub fn pay_with_conflict(&mut self, address: &str, sat: u64) -> (Transaction, Transaction) {
        self.faucet.sync().unwrap();
        let to = Address::from_str(address).unwrap().assume_checked();
        let mut psbt = {
            let mut b = self.faucet.wallet.build_tx();
            b.add_recipient(to.script_pubkey(), Amount::from_sat(sat));
            b.finish().unwrap()
        };
        wallets::sign(&mut psbt, &self.key);
        let tx = wallets::finalize(psbt).unwrap();
        let conflict = self.double_spend(&tx);
        self.faucet.insert_unconfirmed(&tx).unwrap();
        self.node.client.send_raw_transaction(&tx).unwrap();
        (tx, conflict)
    }

    /// A transaction spending the same inputs as `tx`, back to the faucet.
    pub fn double_spend(&mut self, tx: &Transaction) -> Transaction {
        let back = self
            .faucet
            .wallet
            .reveal_next_address(KeychainKind::Internal)
            .address;
        let mut psbt = {
            let mut b = self.faucet.wallet.build_tx();
            for i in &tx.input {
                b.add_utxo(i.previous_output).unwrap();
            }
            b.manually_selected_only().drain_to(back.script_pubkey());
            b.fee_rate(bdk_wallet::bitcoin::FeeRate::from_sat_per_vb(20).unwrap());
            b.finish().unwrap()
        };
        wallets::sign(&mut psbt, &self.key);
        wallets::finalize(psbt).unwrap()
    }

    pub fn received(&self, address: &str, txid: Txid) -> u64 {
        let tx: Value = self
            .node
            .client
            .call("getrawtransaction", &[json!(txid.to_string()), json!(true)])
            .unwrap();
        tx["vout"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["scriptPubKey"]["address"] == json!(address))
            .map(|o| (o["value"].as_f64().unwrap() * 1e8).round() as u64)
            .sum()
    }
}

/// A P2WPKH address of a fixed key, on a network: somewhere to pay (or mine) to.
pub fn addr_of(key: u8, network: Network) -> String {
    use bdk_wallet::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    use bdk_wallet::bitcoin::CompressedPublicKey;
    let sk = SecretKey::from_slice(&[key; 32]).unwrap();
    let pk = CompressedPublicKey(PublicKey::from_secret_key(&Secp256k1::new(), &sk));
    Address::p2wpkh(&pk, network).to_string()
}

pub fn client(s: &Server, account: u32) -> Client {
    let (key, secret) = s.key(account);
    let c = Client {
        addr: s.addr,
        key,
        secret,
    };
    // A running server picks a new key up within a second.
    wait_for("the new key", || {
        (c.signed("GET", "/api/v3/account", "").status == 200).then_some(())
    });
    c
}

/// Free BTC of an account, in satoshis, from `/api/v3/account`.
pub fn btc(c: &Client) -> (u64, u64) {
    let r = c.signed("GET", "/api/v3/account", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let b = v["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "BTC")
        .cloned();
    let sat = |s: &Value| fulgur_custody::parse_btc(s.as_str().unwrap()).unwrap();
    b.map_or((0, 0), |b| (sat(&b["free"]), sat(&b["locked"])))
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
