//! The exchange's Lightning node: an ldk-node (LDK + BDK) running inside the process, with a
//! bitcoind RPC chain source. Deposits are BOLT11 invoices of this node; withdrawals pay the
//! user's BOLT11 invoice or BOLT12 offer; payouts go out as keysend (to a node id) or to an
//! offer, through [`PayoutRail`].
//!
//! Every method blocks and may be called from plain threads or from
//! `tokio::task::spawn_blocking` in another runtime, never from an async task directly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldk_node::bitcoin::constants::ChainHash;
use ldk_node::bitcoin::hashes::Hash as _;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::Network;
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::offers::offer::{Amount, Offer};
use ldk_node::lightning::routing::gossip::NodeId;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Currency, Description};
use ldk_node::lightning_types::payment::{PaymentHash, PaymentPreimage};
use ldk_node::logger::LogLevel;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::tokio::runtime::Runtime;
use ldk_node::{Builder, Event, LightningBalance, Node, NodeError};
use serde::Serialize;

use crate::{Destination, Hash32, PartRequest, PartStatus, PayoutRail};

/// How to run the node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's keys seed, channel state, payment store and log (`ldk_node.log`).
    pub data_dir: PathBuf,
    pub network: Network,
    /// Where peers connect, e.g. `127.0.0.1:9735`.
    pub listen: Vec<String>,
    pub alias: Option<String>,
    pub rpc_host: String,
    pub rpc_port: u16,
    pub rpc_user: String,
    pub rpc_password: String,
}

/// One channel, as the operator endpoints show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub counterparty_node_id: String,
    pub channel_id: String,
    pub capacity_sat: u64,
    pub is_outbound: bool,
    pub outbound_capacity_msat: u64,
    pub inbound_capacity_msat: u64,
    /// The largest single HTLC we can send now: bounded by our balance and by the peer's
    /// maximum value of HTLCs in flight towards it.
    pub next_outbound_htlc_limit_msat: u64,
    pub is_channel_ready: bool,
    pub is_usable: bool,
    pub confirmations: Option<u32>,
}

/// A deposit invoice of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    pub bolt11: String,
    pub payment_hash: Hash32,
    pub expires_at_ms: u64,
}

/// A BOLT11 invoice a user wants paid, checked against this node's network and the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedInvoice {
    pub payment_hash: Hash32,
    pub amount_msat: Option<u64>,
    pub expires_at_ms: u64,
    /// The payee's node id (hex).
    pub payee: String,
    pub description: Option<String>,
}

/// A BOLT12 offer, checked against this node's network and the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedOffer {
    pub amount_msat: Option<u64>,
    pub description: Option<String>,
    pub issuer: Option<String>,
    pub expires_at_ms: Option<u64>,
    /// The offer's id (hex), stable for the same offer string.
    pub offer_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvoiceError {
    /// Not an invoice (or offer) at all, or one this node cannot read.
    Malformed(String),
    /// An invoice or offer for another chain.
    WrongNetwork {
        invoice: String,
        node: String,
    },
    Expired,
    /// An offer priced in a fiat currency: the node pays only bitcoin-denominated offers.
    UnsupportedCurrency,
}

impl std::fmt::Display for InvoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvoiceError::Malformed(e) => write!(f, "malformed: {e}"),
            InvoiceError::WrongNetwork { invoice, node } => {
                write!(f, "for network {invoice}, this node is on {node}")
            }
            InvoiceError::Expired => write!(f, "expired"),
            InvoiceError::UnsupportedCurrency => write!(f, "not denominated in bitcoin"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayError {
    /// The invoice is being paid or was paid already (same payment hash).
    Duplicate,
    Invalid(InvoiceError),
    /// No amount for an amountless invoice, or an amount other than the invoice's or offer's.
    Amount(String),
    /// The node refused to start the payment (no route, not enough liquidity, not running...).
    Failed(String),
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayError::Duplicate => write!(f, "already paid or being paid"),
            PayError::Invalid(e) => write!(f, "invalid: {e}"),
            PayError::Amount(e) => write!(f, "amount: {e}"),
            PayError::Failed(e) => write!(f, "payment failed: {e}"),
        }
    }
}

/// What the node tells the service. Delivered by [`LightningNode::next_event`] until
/// [`LightningNode::event_handled`] is called, across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// An invoice of this node was paid (and the payment claimed).
    PaymentReceived {
        payment_hash: Hash32,
        amount_msat: u64,
    },
    PaymentSuccessful {
        payment_id: Hash32,
        payment_hash: Hash32,
        fee_msat: u64,
    },
    /// An outgoing payment failed for good (LDK gave up retrying).
    PaymentFailed {
        payment_id: Hash32,
        payment_hash: Option<Hash32>,
        reason: String,
    },
    ChannelReady {
        channel_id: String,
        counterparty: String,
    },
    ChannelClosed {
        channel_id: String,
        counterparty: Option<String>,
        reason: String,
    },
    /// Anything else (channel pending, forwards, splices): to log.
    Other(String),
}

pub struct LightningNode {
    node: Node,
    /// The tokio runtime ldk-node runs on, owned here (see [`LightningNode::start`]). An
    /// `Option` only so that `Drop` can shut it down without blocking.
    rt: Option<Runtime>,
    network: Network,
    /// Why outgoing payments failed, from the events seen since start: the payment store only
    /// keeps "failed".
    failures: Mutex<HashMap<Hash32, String>>,
    /// Held while a channel opens: one at a time (see [`LightningNode::open_channel`]).
    opening: Mutex<()>,
}

/// How long [`LightningNode::open_channel`] waits for the peer's side of the handshake.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn pubkey(hex_id: &str) -> Result<PublicKey, String> {
    PublicKey::from_str(hex_id).map_err(|e| format!("bad node id {hex_id}: {e}"))
}

fn socket(addr: &str) -> Result<SocketAddress, String> {
    SocketAddress::from_str(addr).map_err(|e| format!("bad address {addr}: {e:?}"))
}

impl LightningNode {
    /// Builds and starts the node.
    ///
    /// Threading: ldk-node's sync API runs async code with its `Runtime::block_on`, which
    /// uses *whatever tokio runtime is current on the calling thread* (`Handle::try_current`)
    /// and falls back to its own only when there is none; its builder likewise adopts an
    /// ambient runtime for all its background tasks. Called from `spawn_blocking` of the
    /// server's runtime, peer connections (`lightning_net_tokio` spawns with `tokio::spawn`)
    /// would then live on the server's runtime, die with it, and on a current-thread runtime
    /// their I/O would not even be driven (`Handle::block_on` does not drive a current-thread
    /// runtime's drivers). So the node gets a runtime of its own (`set_runtime`), and every
    /// call below enters it first: whatever runtime the caller is in, ldk-node only ever
    /// sees this one.
    pub fn start(cfg: &NodeConfig) -> Result<LightningNode, String> {
        let rt = ldk_node::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ldk-node")
            .enable_all()
            .build()
            .map_err(|e| format!("ldk-node runtime: {e}"))?;
        let _in_rt = rt.enter();
        let mut b = Builder::new();
        b.set_runtime(rt.handle().clone())
            .set_network(cfg.network)
            .set_storage_dir_path(cfg.data_dir.to_string_lossy().into_owned())
            .set_filesystem_logger(None, Some(LogLevel::Info))
            .set_chain_source_bitcoind_rpc(
                cfg.rpc_host.clone(),
                cfg.rpc_port,
                cfg.rpc_user.clone(),
                cfg.rpc_password.clone(),
            );
        if !cfg.listen.is_empty() {
            let addrs = cfg
                .listen
                .iter()
                .map(|a| socket(a))
                .collect::<Result<Vec<_>, _>>()?;
            b.set_listening_addresses(addrs)
                .map_err(|e| format!("listening addresses: {e}"))?;
        }
        if let Some(alias) = &cfg.alias {
            b.set_node_alias(alias.clone())
                .map_err(|e| format!("alias: {e}"))?;
        }
        let node = b.build().map_err(|e| format!("ldk-node build: {e}"))?;
        node.start().map_err(|e| format!("ldk-node start: {e}"))?;
        drop(_in_rt);
        Ok(LightningNode {
            node,
            rt: Some(rt),
            network: cfg.network,
            failures: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
        })
    }

    /// Runs `f` with the node's own runtime current (see [`LightningNode::start`]).
    fn with<R>(&self, f: impl FnOnce(&Node) -> R) -> R {
        let _in_rt = self.rt.as_ref().map(|rt| rt.enter());
        f(&self.node)
    }

    /// Disconnects peers and stops the background tasks (also done on drop).
    pub fn stop(&self) {
        let _ = self.with(|n| n.stop());
    }

    pub fn node_id(&self) -> String {
        self.node.node_id().to_string()
    }

    pub fn listen_addresses(&self) -> Vec<String> {
        self.node
            .listening_addresses()
            .unwrap_or_default()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    pub fn network(&self) -> Network {
        self.network
    }

    pub fn new_onchain_address(&self) -> Result<String, String> {
        self.with(|n| n.onchain_payment().new_address())
            .map(|a| a.to_string())
            .map_err(|e| e.to_string())
    }

    /// (total, spendable) on-chain, in sat; spendable leaves out the reserve kept for
    /// closing anchor channels.
    pub fn onchain_balance_sat(&self) -> (u64, u64) {
        let b = self.with(|n| n.list_balances());
        (
            b.total_onchain_balance_sats,
            b.spendable_onchain_balance_sats,
        )
    }

    /// Our side of all open channels, in msat: per channel, what we can send plus the reserve
    /// the peer makes us keep (HTLCs in flight are left out). Exact while our balance is above
    /// that reserve, which is the exchange's case as the funder of its channels; below it,
    /// what the node could claim on a close (whole satoshis) is used. On channels we funded,
    /// LDK counts the two 330-sat anchor outputs off our side: they are not in this figure
    /// (a cooperative close, which has no anchors, gives them back).
    pub fn lightning_balance_msat(&self) -> u64 {
        let (channels, balances) = self.with(|n| (n.list_channels(), n.list_balances()));
        channels
            .iter()
            .map(|c| {
                let reserve = c.unspendable_punishment_reserve.unwrap_or(0) * 1000;
                if c.outbound_capacity_msat > 0 {
                    c.outbound_capacity_msat + reserve
                } else {
                    balances
                        .lightning_balances
                        .iter()
                        .map(|b| match b {
                            LightningBalance::ClaimableOnChannelClose {
                                channel_id,
                                amount_satoshis,
                                transaction_fee_satoshis,
                                ..
                            } if *channel_id == c.channel_id => {
                                (amount_satoshis + transaction_fee_satoshis) * 1000
                            }
                            _ => 0,
                        })
                        .sum()
                }
            })
            .sum()
    }

    /// Connects to a peer (and reconnects after restarts).
    pub fn connect(&self, node_id: &str, addr: &str) -> Result<(), String> {
        let (id, addr) = (pubkey(node_id)?, socket(addr)?);
        self.with(|n| n.connect(id, addr, true))
            .map_err(|e| e.to_string())
    }

    /// Opens an unannounced channel of `capacity_sat` to a peer, giving it `push_msat`.
    ///
    /// Unannounced, because ldk-node then sets *our* maximum inbound HTLC value in flight to
    /// 100% of the channel (LDK's default is 10%, which would cap every single payment the
    /// exchange receives on the channel, deposits included, at a tenth of its capacity). The
    /// peer's own limit, which caps what we can send it in one go, is its choice: 10% for
    /// LDK's defaults, see [`PayoutRail::sendable_msat`].
    ///
    /// Returns once the funding transaction is made (the peer signed it; it is being
    /// broadcast, and `ChannelPending` follows). Refused while one of our channels' funding
    /// transactions is unconfirmed: ldk-node builds a funding transaction from what the wallet
    /// knows and does not mark its inputs spent (ldk-node issue #41), and its bitcoind
    /// mempool polling skips a transaction that enters the mempool in the same second as the
    /// last one it saw, so the wallet may not learn of an unconfirmed funding transaction
    /// before it confirms; a second open would spend the same coins, bitcoind would reject
    /// it, and that channel would stay pending forever.
    pub fn open_channel(
        &self,
        node_id: &str,
        addr: &str,
        capacity_sat: u64,
        push_msat: u64,
    ) -> Result<(), String> {
        self.open(node_id, addr, capacity_sat, push_msat, false)
    }

    /// Opens a public (announced) channel, to a routing node: it makes the exchange reachable
    /// through the network, and it is what lets the node pay BOLT12 offers once it has more
    /// than one peer (see [`LightningNode::can_pay_offers`]). Our inbound limit stays at
    /// LDK's 10% on such a channel. Needs `alias` and `listen` in the config. Same rules as
    /// [`LightningNode::open_channel`] otherwise.
    pub fn open_announced_channel(
        &self,
        node_id: &str,
        addr: &str,
        capacity_sat: u64,
        push_msat: u64,
    ) -> Result<(), String> {
        self.open(node_id, addr, capacity_sat, push_msat, true)
    }

    fn open(
        &self,
        node_id: &str,
        addr: &str,
        capacity_sat: u64,
        push_msat: u64,
        announced: bool,
    ) -> Result<(), String> {
        let (id, addr) = (pubkey(node_id)?, socket(addr)?);
        let push = (push_msat > 0).then_some(push_msat);
        let _one_at_a_time = self.opening.lock().unwrap();
        if let Some(c) = self
            .node
            .list_channels()
            .iter()
            .find(|c| c.is_outbound && c.confirmations.unwrap_or(0) == 0)
        {
            return Err(format!(
                "the funding transaction of channel {} (to {}) is not confirmed yet: open the \
                 next channel once it is",
                c.channel_id, c.counterparty_node_id
            ));
        }
        let ucid = self
            .with(|n| {
                if announced {
                    n.open_announced_channel(id, addr, capacity_sat, push, None)
                } else {
                    n.open_channel(id, addr, capacity_sat, push, None)
                }
            })
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + OPEN_TIMEOUT;
        loop {
            match self
                .node
                .list_channels()
                .into_iter()
                .find(|c| c.user_channel_id == ucid)
            {
                None => return Err("the channel was closed while opening (see the events)".into()),
                Some(c) if c.funding_txo.is_some() => return Ok(()),
                Some(_) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the peer did not complete the channel handshake within {OPEN_TIMEOUT:?}"
                    ))
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.node
            .list_channels()
            .into_iter()
            .map(|c| ChannelInfo {
                counterparty_node_id: c.counterparty_node_id.to_string(),
                channel_id: c.channel_id.to_string(),
                capacity_sat: c.channel_value_sats,
                is_outbound: c.is_outbound,
                outbound_capacity_msat: c.outbound_capacity_msat,
                inbound_capacity_msat: c.inbound_capacity_msat,
                next_outbound_htlc_limit_msat: c.next_outbound_htlc_limit_msat,
                is_channel_ready: c.is_channel_ready,
                is_usable: c.is_usable,
                confirmations: c.confirmations,
            })
            .collect()
    }

    /// Whether the node is in its own network graph: it has a public channel whose
    /// announcement went out (6 confirmations after opening).
    pub fn is_announced(&self) -> bool {
        let me = NodeId::from_pubkey(&self.node.node_id());
        self.node.network_graph().node(&me).is_some()
    }

    /// Whether the node can pay an offer now. Paying one starts with an invoice request
    /// whose reply path (blinded, for the payee's invoice) LDK builds through a peer that is
    /// in the public graph, or straight to us if we are in it; with no such peer it only
    /// falls back to a direct path when we have exactly one peer. An exchange with private
    /// channels only, to several users, cannot pay offers (LDK: `MissingPaths`) until it has
    /// a public channel ([`LightningNode::open_announced_channel`]).
    pub fn can_pay_offers(&self) -> bool {
        self.is_announced()
            || self
                .node
                .list_peers()
                .iter()
                .filter(|p| p.is_connected)
                .count()
                == 1
    }

    /// Polls bitcoind now instead of at the next tick (every 2 s with a bitcoind source).
    pub fn sync_wallets(&self) -> Result<(), String> {
        self.with(|n| n.sync_wallets()).map_err(|e| e.to_string())
    }

    /// A deposit invoice for exactly `amount_msat`.
    pub fn invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry_secs: u32,
    ) -> Result<Invoice, String> {
        let desc = Description::new(description.to_string()).map_err(|e| e.to_string())?;
        let inv = self
            .with(|n| {
                n.bolt11_payment().receive(
                    amount_msat,
                    &Bolt11InvoiceDescription::Direct(desc),
                    expiry_secs,
                )
            })
            .map_err(|e| e.to_string())?;
        Ok(Invoice {
            bolt11: inv.to_string(),
            payment_hash: inv.payment_hash().to_byte_array(),
            expires_at_ms: expires_at_ms(&inv),
        })
    }

    pub fn decode_invoice(&self, bolt11: &str) -> Result<DecodedInvoice, InvoiceError> {
        let inv = Bolt11Invoice::from_str(bolt11.trim())
            .map_err(|e| InvoiceError::Malformed(e.to_string()))?;
        // By currency, not `network()`: testnet3 and testnet4 share `lntb`.
        if inv.currency() != Currency::from(self.network) {
            return Err(InvoiceError::WrongNetwork {
                invoice: inv.network().to_string(),
                node: self.network.to_string(),
            });
        }
        let expires_at_ms = expires_at_ms(&inv);
        if expires_at_ms <= now_ms() {
            return Err(InvoiceError::Expired);
        }
        let description = match inv.description() {
            ldk_node::lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(d) => {
                Some(d.to_string())
            }
            ldk_node::lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(_) => None,
        };
        Ok(DecodedInvoice {
            payment_hash: inv.payment_hash().to_byte_array(),
            amount_msat: inv.amount_milli_satoshis(),
            expires_at_ms,
            payee: inv
                .payee_pub_key()
                .copied()
                .unwrap_or_else(|| inv.recover_payee_pub_key())
                .to_string(),
            description,
        })
    }

    pub fn decode_offer(&self, offer: &str) -> Result<DecodedOffer, InvoiceError> {
        let o = parse_offer(offer)?;
        let ours = ChainHash::using_genesis_block(self.network);
        if !o.supports_chain(ours) {
            let theirs = o
                .chains()
                .iter()
                .map(|c| {
                    Network::from_chain_hash(*c).map_or_else(|| c.to_string(), |n| n.to_string())
                })
                .collect::<Vec<_>>()
                .join(",");
            return Err(InvoiceError::WrongNetwork {
                invoice: theirs,
                node: self.network.to_string(),
            });
        }
        if o.is_expired() {
            return Err(InvoiceError::Expired);
        }
        let amount_msat = match o.amount() {
            None => None,
            Some(Amount::Bitcoin { amount_msats }) => Some(amount_msats),
            Some(Amount::Currency { .. }) => return Err(InvoiceError::UnsupportedCurrency),
        };
        Ok(DecodedOffer {
            amount_msat,
            description: o.description().map(|d| d.to_string()),
            issuer: o.issuer().map(|d| d.to_string()),
            expires_at_ms: o.absolute_expiry().map(|d| d.as_millis() as u64),
            offer_id: hex::encode(o.id().0),
        })
    }

    /// Pays a BOLT11 invoice (a withdrawal). `amount_msat` is required for an amountless
    /// invoice and must equal the invoice's amount otherwise. The payment id is the payment
    /// hash: paying an invoice again while pending or after success is [`PayError::Duplicate`]
    /// (after a failure it is a new attempt).
    pub fn pay_invoice(&self, bolt11: &str, amount_msat: Option<u64>) -> Result<Hash32, PayError> {
        self.decode_invoice(bolt11).map_err(PayError::Invalid)?;
        let inv = Bolt11Invoice::from_str(bolt11.trim())
            .map_err(|e| PayError::Invalid(InvoiceError::Malformed(e.to_string())))?;
        let res = match (inv.amount_milli_satoshis(), amount_msat) {
            (Some(_), None) => self.with(|n| n.bolt11_payment().send(&inv, None)),
            (Some(a), Some(b)) if a == b => self.with(|n| n.bolt11_payment().send(&inv, None)),
            (Some(a), Some(b)) => {
                return Err(PayError::Amount(format!(
                    "{b} msat for an invoice of {a} msat"
                )))
            }
            (None, Some(b)) => self.with(|n| n.bolt11_payment().send_using_amount(&inv, b, None)),
            (None, None) => {
                return Err(PayError::Amount(
                    "the invoice has no amount and none was given".into(),
                ))
            }
        };
        res.map(|id| id.0).map_err(pay_error)
    }

    /// Pays a BOLT12 offer. ldk-node picks a random payment id, so `payer_note` (seen by the
    /// payee) is what [`LightningNode::find_offer_payment`] finds the attempt by later.
    pub fn pay_offer(
        &self,
        offer: &str,
        amount_msat: u64,
        payer_note: &str,
    ) -> Result<Hash32, PayError> {
        let decoded = self.decode_offer(offer).map_err(PayError::Invalid)?;
        if let Some(a) = decoded.amount_msat {
            if a != amount_msat {
                return Err(PayError::Amount(format!(
                    "{amount_msat} msat for an offer of {a} msat"
                )));
            }
        }
        if !self.can_pay_offers() {
            return Err(PayError::Failed(
                "no reply path for the payee's invoice: the node needs a public channel".into(),
            ));
        }
        let o = parse_offer(offer).map_err(PayError::Invalid)?;
        self.with(|n| {
            n.bolt12_payment().send_using_amount(
                &o,
                amount_msat,
                None,
                Some(payer_note.to_string()),
                None,
            )
        })
        .map(|id| id.0)
        .map_err(pay_error)
    }

    /// An outgoing payment by id: `Unknown` if this node never started it.
    pub fn payment(&self, id: &Hash32) -> PartStatus {
        match self.node.payment(&PaymentId(*id)) {
            Some(p) if p.direction == PaymentDirection::Outbound => self.part_status(&p),
            _ => PartStatus::Unknown,
        }
    }

    fn part_status(&self, p: &ldk_node::payment::PaymentDetails) -> PartStatus {
        match p.status {
            PaymentStatus::Pending => PartStatus::Pending,
            PaymentStatus::Succeeded => PartStatus::Succeeded {
                fee_msat: p.fee_paid_msat.unwrap_or(0),
            },
            PaymentStatus::Failed => PartStatus::Failed(
                self.failures
                    .lock()
                    .unwrap()
                    .get(&p.id.0)
                    .cloned()
                    .unwrap_or_else(|| "payment failed".into()),
            ),
        }
    }

    /// The outgoing offer payment with this payer note; of several attempts, a succeeded one,
    /// else a pending one, else the latest.
    pub fn find_offer_payment(&self, payer_note: &str) -> Option<(Hash32, PartStatus)> {
        let found = self.node.list_payments_with_filter(|p| {
            p.direction == PaymentDirection::Outbound
                && matches!(&p.kind, PaymentKind::Bolt12Offer { payer_note: Some(n), .. } if n.0 == payer_note)
        });
        let rank = |s: &PaymentStatus| match s {
            PaymentStatus::Succeeded => 2,
            PaymentStatus::Pending => 1,
            PaymentStatus::Failed => 0,
        };
        found
            .iter()
            .max_by_key(|p| (rank(&p.status), p.latest_update_timestamp))
            .map(|p| (p.id.0, self.part_status(p)))
    }

    /// The next event, if any; the same one until [`LightningNode::event_handled`].
    pub fn next_event(&self) -> Option<NodeEvent> {
        let ev = self.with(|n| n.next_event())?;
        let ev = node_event(ev);
        if let NodeEvent::PaymentFailed {
            payment_id, reason, ..
        } = &ev
        {
            self.failures
                .lock()
                .unwrap()
                .insert(*payment_id, reason.clone());
        }
        Some(ev)
    }

    /// Marks the current event handled (persisted: it will not come again).
    pub fn event_handled(&self) -> Result<(), String> {
        self.with(|n| n.event_handled()).map_err(|e| e.to_string())
    }
}

impl Drop for LightningNode {
    fn drop(&mut self) {
        self.stop();
        // Every task ended with `stop`; this does not block, so a drop on an async thread
        // does not panic as dropping a runtime there would.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn expires_at_ms(inv: &Bolt11Invoice) -> u64 {
    (inv.duration_since_epoch() + inv.expiry_time()).as_millis() as u64
}

fn parse_offer(s: &str) -> Result<Offer, InvoiceError> {
    Offer::from_str(s.trim()).map_err(|e| InvoiceError::Malformed(format!("{e:?}")))
}

fn pay_error(e: NodeError) -> PayError {
    match e {
        NodeError::DuplicatePayment => PayError::Duplicate,
        e => PayError::Failed(e.to_string()),
    }
}

fn node_event(ev: Event) -> NodeEvent {
    match ev {
        Event::PaymentReceived {
            payment_hash,
            amount_msat,
            ..
        } => NodeEvent::PaymentReceived {
            payment_hash: payment_hash.0,
            amount_msat,
        },
        Event::PaymentSuccessful {
            payment_id,
            payment_hash,
            fee_paid_msat,
            ..
        } => NodeEvent::PaymentSuccessful {
            // BOLT11 and keysend ids are the payment hash; only offers' differ.
            payment_id: payment_id.map_or(payment_hash.0, |id| id.0),
            payment_hash: payment_hash.0,
            fee_msat: fee_paid_msat.unwrap_or(0),
        },
        Event::PaymentFailed {
            payment_id: Some(id),
            payment_hash,
            reason,
        } => NodeEvent::PaymentFailed {
            payment_id: id.0,
            payment_hash: payment_hash.map(|h| h.0),
            reason: reason.map_or_else(|| "unknown".into(), |r| format!("{r:?}")),
        },
        Event::PaymentFailed {
            payment_id: None,
            payment_hash: Some(h),
            reason,
        } => NodeEvent::PaymentFailed {
            payment_id: h.0,
            payment_hash: Some(h.0),
            reason: reason.map_or_else(|| "unknown".into(), |r| format!("{r:?}")),
        },
        Event::ChannelReady {
            channel_id,
            counterparty_node_id,
            ..
        } => NodeEvent::ChannelReady {
            channel_id: channel_id.to_string(),
            counterparty: counterparty_node_id.map_or_else(String::new, |p| p.to_string()),
        },
        Event::ChannelClosed {
            channel_id,
            counterparty_node_id,
            reason,
            ..
        } => NodeEvent::ChannelClosed {
            channel_id: channel_id.to_string(),
            counterparty: counterparty_node_id.map(|p| p.to_string()),
            reason: reason.map_or_else(|| "unknown".into(), |r| r.to_string()),
        },
        other => NodeEvent::Other(format!("{other:?}")),
    }
}

impl PayoutRail for LightningNode {
    /// For a node: the largest `next_outbound_htlc_limit_msat` of our usable channels with it
    /// (a keysend goes in one HTLC over one channel). The peer's maximum HTLC value in flight
    /// caps it, 10% of the channel by LDK's default for a channel it accepted. For an offer,
    /// over all usable channels (the route is only known once the payee's invoice is in), and
    /// 0 while the node cannot pay offers at all ([`LightningNode::can_pay_offers`]).
    fn sendable_msat(&self, dest: &Destination) -> u64 {
        let peer = match dest {
            Destination::Node(id) => match PublicKey::from_str(id) {
                Ok(p) => Some(p),
                Err(_) => return 0,
            },
            Destination::Offer(_) if !self.can_pay_offers() => return 0,
            Destination::Offer(_) => None,
        };
        self.node
            .list_channels()
            .iter()
            .filter(|c| c.is_usable && peer.is_none_or(|p| c.counterparty_node_id == p))
            .map(|c| c.next_outbound_htlc_limit_msat)
            .max()
            .unwrap_or(0)
    }

    fn send(&self, part: &PartRequest) -> Result<(), String> {
        match &part.destination {
            Destination::Node(id) => {
                let id = pubkey(id)?;
                let preimage = PaymentPreimage(part.preimage);
                let res = self.with(|n| {
                    n.spontaneous_payment()
                        .send_with_preimage(part.amount_msat, id, preimage, None)
                });
                match res {
                    // The payment id is the payment hash, fixed by the preimage: pending or
                    // paid already, by this call or one before a crash.
                    Ok(_) | Err(NodeError::DuplicatePayment) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Destination::Offer(offer) => {
                if let Some((_, PartStatus::Pending | PartStatus::Succeeded { .. })) =
                    self.find_offer_payment(&part.tag)
                {
                    return Ok(());
                }
                match self.pay_offer(offer, part.amount_msat, &part.tag) {
                    Ok(_) | Err(PayError::Duplicate) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    fn status(&self, part: &PartRequest) -> PartStatus {
        match &part.destination {
            Destination::Node(_) => {
                let hash = PaymentHash::from(PaymentPreimage(part.preimage));
                self.payment(&hash.0)
            }
            Destination::Offer(_) => self
                .find_offer_payment(&part.tag)
                .map_or(PartStatus::Unknown, |(_, s)| s),
        }
    }
}
