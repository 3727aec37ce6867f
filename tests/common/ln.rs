//! Lightning on the regtest chain: users' own nodes (plain ldk-node nodes in the test process)
//! and the exchange node's configuration, for the Lightning and settlement tests.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use fulgur_settlement::node::{LightningNode, NodeConfig, NodeEvent};
use fulgur_settlement::Hash32;
use ldk_node::bitcoin::hashes::{sha256, Hash};
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::secp256k1::{Secp256k1, SecretKey};
use ldk_node::bitcoin::Network;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::offers::offer::OfferBuilder;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::{Builder, Event, LightningBalance, Node};
use serde_json::Value;

use super::chain::Chain;
use super::free_port;

/// Polls for `f` every 20 ms until `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_dir(kind: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fulgur-{kind}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// bitcoind's RPC (host, port, user, password): the cookie file holds `user:password`.
pub fn rpc(chain: &Chain) -> (String, u16, String, String) {
    let p = &chain.node.params;
    let cookie = p.get_cookie_values().unwrap().expect("a cookie");
    (
        p.rpc_socket.ip().to_string(),
        p.rpc_socket.port(),
        cookie.user,
        cookie.password,
    )
}

/// The exchange node's configuration on `chain`: a fresh data directory, a free port.
pub fn exchange_config(chain: &Chain, name: &str) -> NodeConfig {
    let (rpc_host, rpc_port, rpc_user, rpc_password) = rpc(chain);
    NodeConfig {
        data_dir: temp_dir("ln-exchange", name),
        network: Network::Regtest,
        listen: vec![format!("127.0.0.1:{}", free_port())],
        alias: Some("fulgur".into()),
        rpc_host,
        rpc_port,
        rpc_user,
        rpc_password,
    }
}

/// Transactions in bitcoind's mempool.
pub fn mempool_len(chain: &Chain) -> usize {
    let v: Value = chain.node.client.call("getrawmempool", &[]).unwrap();
    v.as_array().map_or(0, Vec::len)
}

/// Waits until the mempool holds at least `n` transactions (a funding transaction goes out
/// shortly after the channel handshake).
pub fn wait_mempool(chain: &Chain, n: usize) {
    wait_until(
        &format!("{n} transactions in the mempool"),
        Duration::from_secs(30),
        || (mempool_len(chain) >= n).then_some(()),
    );
}

/// The next event of the exchange node matching `pred`; the others are handled and dropped.
pub fn wait_exchange_event(
    x: &LightningNode,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    wait_until(what, timeout, || {
        let ev = x.next_event()?;
        x.event_handled().unwrap();
        pred(&ev).then_some(ev)
    })
}

/// A user's own Lightning node: ldk-node with its defaults, on the regtest chain.
pub struct UserNode {
    pub node: Node,
    pub addr: String,
    pub dir: PathBuf,
}

impl UserNode {
    pub fn start(chain: &Chain, name: &str) -> UserNode {
        UserNode::start_with(chain, name, false)
    }

    /// A routing node: with an alias (and its listening address) ldk-node accepts announced
    /// channels, which it refuses otherwise.
    pub fn start_public(chain: &Chain, name: &str) -> UserNode {
        UserNode::start_with(chain, name, true)
    }

    fn start_with(chain: &Chain, name: &str, public: bool) -> UserNode {
        let dir = temp_dir("ln-user", name);
        let addr = format!("127.0.0.1:{}", free_port());
        let (host, port, user, password) = rpc(chain);
        let mut b = Builder::new();
        b.set_network(Network::Regtest)
            .set_storage_dir_path(dir.to_string_lossy().into_owned())
            .set_filesystem_logger(None, Some(ldk_node::logger::LogLevel::Debug))
            .set_chain_source_bitcoind_rpc(host, port, user, password)
            .set_listening_addresses(vec![SocketAddress::from_str(&addr).unwrap()])
            .unwrap();
        if public {
            b.set_node_alias(name.to_string()).unwrap();
        }
        let node = b.build().unwrap();
        node.start().unwrap();
        UserNode { node, addr, dir }
    }

    pub fn node_id(&self) -> String {
        self.node.node_id().to_string()
    }

    pub fn new_address(&self) -> String {
        self.node
            .onchain_payment()
            .new_address()
            .unwrap()
            .to_string()
    }

    /// Funds the on-chain wallet with `sat` in one block (ldk-node keeps 25,000 sat per
    /// anchor channel it opens or accepts, so a user's node needs some to accept one).
    pub fn fund(&self, chain: &mut Chain, sat: u64) {
        chain.pay(&self.new_address(), sat);
        chain.mine(1);
        self.sync();
        wait_until("the funds", Duration::from_secs(30), || {
            (self.node.list_balances().spendable_onchain_balance_sats >= sat).then_some(())
        });
    }

    /// Polls bitcoind now.
    pub fn sync(&self) {
        self.node.sync_wallets().unwrap();
    }

    pub fn open_channel(&self, node_id: &str, addr: &str, sat: u64, push_msat: Option<u64>) {
        self.node
            .open_channel(
                PublicKey::from_str(node_id).unwrap(),
                SocketAddress::from_str(addr).unwrap(),
                sat,
                push_msat,
                None,
            )
            .unwrap();
    }

    /// The next event matching `pred`; the others are handled and dropped.
    pub fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        wait_until(what, timeout, || {
            let ev = self.node.next_event()?;
            self.node.event_handled().unwrap();
            pred(&ev).then_some(ev)
        })
    }

    /// Events now in the queue (handled).
    pub fn drain_events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(ev) = self.node.next_event() {
            self.node.event_handled().unwrap();
            out.push(ev);
        }
        out
    }

    pub fn invoice(&self, amount_msat: u64, expiry_secs: u32) -> String {
        let desc = Bolt11InvoiceDescription::Direct(Description::new("test".into()).unwrap());
        self.node
            .bolt11_payment()
            .receive(amount_msat, &desc, expiry_secs)
            .unwrap()
            .to_string()
    }

    /// A BOLT12 offer without an amount.
    pub fn offer(&self) -> String {
        self.node
            .bolt12_payment()
            .receive_variable_amount("payouts", None)
            .unwrap()
            .to_string()
    }

    /// Pays an invoice; its payment id (the payment hash).
    pub fn pay(&self, bolt11: &str) -> Hash32 {
        let inv = Bolt11Invoice::from_str(bolt11).unwrap();
        self.node.bolt11_payment().send(&inv, None).unwrap().0
    }

    /// Lightning payments received, in msat (the payment store also lists on-chain ones).
    pub fn received_msat(&self) -> u64 {
        self.node
            .list_payments_with_filter(|p| {
                p.direction == PaymentDirection::Inbound
                    && p.status == PaymentStatus::Succeeded
                    && !matches!(p.kind, PaymentKind::Onchain { .. })
            })
            .iter()
            .map(|p| p.amount_msat.unwrap_or(0))
            .sum()
    }

    /// What the node could claim from its channels, in msat (whole satoshis: on-chain
    /// amounts; exact for a channel it did not fund, which pays no commitment fee).
    pub fn lightning_balance_msat(&self) -> u64 {
        self.node
            .list_balances()
            .lightning_balances
            .iter()
            .map(|b| match b {
                LightningBalance::ClaimableOnChannelClose {
                    amount_satoshis,
                    transaction_fee_satoshis,
                    ..
                } => (amount_satoshis + transaction_fee_satoshis) * 1000,
                _ => 0,
            })
            .sum()
    }

    /// Whether every channel of this node is ready and usable.
    pub fn channels_usable(&self, n: usize) -> bool {
        let c = self.node.list_channels();
        c.len() == n && c.iter().all(|c| c.is_usable)
    }
}

impl Drop for UserNode {
    fn drop(&mut self) {
        let _ = self.node.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A BOLT11 invoice for mainnet, signed by a throwaway key.
pub fn mainnet_invoice() -> String {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
    InvoiceBuilder::new(Currency::Bitcoin)
        .description("elsewhere".into())
        .payment_hash(sha256::Hash::hash(b"elsewhere"))
        .payment_secret(PaymentSecret([1; 32]))
        .current_timestamp()
        .min_final_cltv_expiry_delta(144)
        .amount_milli_satoshis(10_000)
        .build_signed(|m| secp.sign_ecdsa_recoverable(m, &key))
        .unwrap()
        .to_string()
}

pub fn mainnet_offer() -> String {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[0x43; 32]).unwrap();
    OfferBuilder::new(PublicKey::from_secret_key(&secp, &key))
        .chain(Network::Bitcoin)
        .description("elsewhere".into())
        .build()
        .unwrap()
        .to_string()
}
