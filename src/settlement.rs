//! Settlement in the server: the exchange as settlement's ledger and event feed (with
//! gaps filled from the journal), the in-process Lightning node's start, the on-chain
//! fallback through custody, and the operator's Lightning and settlement actions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fulgur_custody::service::WithdrawRequest;
use fulgur_custody::Custody;
use fulgur_engine::{AccountId, AssetId, EngineConfig, Event, MarketId};
use fulgur_settlement::net::MarketLegs;
use fulgur_settlement::node::{LightningNode, NodeConfig};
use fulgur_settlement::service::{
    EventFeed, Ledger, OnChain, SettleError, Settlement, SettlementConfig,
};
use serde_json::{json, Value};

use crate::config::{Config, LightningSection};
use crate::pipeline::{CutOff, Reader};
use crate::server::Exchange;

/// The pipeline and its read model, as settlement's ledger.
pub struct SettleLedger {
    pub exchange: Arc<Exchange>,
}

impl Ledger for SettleLedger {
    fn submit(&self, command: fulgur_engine::Command) -> Result<Vec<Event>, String> {
        self.exchange.submit_blocking(command).map(|r| r.events)
    }

    fn btc(&self) -> Option<(AssetId, u8)> {
        let v = self.exchange.feed.view();
        v.asset_by_symbol("BTC").map(|a| (a.id, a.decimals))
    }

    fn free(&self, account: AccountId, asset: AssetId) -> u64 {
        let v = self.exchange.feed.view();
        v.accounts
            .get(&account)
            .and_then(|a| a.balances.get(&asset))
            .map_or(0, |(free, _)| *free)
    }

    fn markets(&self) -> Vec<(MarketId, MarketLegs)> {
        let v = self.exchange.feed.view();
        v.markets
            .iter()
            .map(|m| {
                (
                    m.id,
                    MarketLegs {
                        base: m.spec.base,
                        quote: m.spec.quote,
                        lot_size: m.spec.lot_size,
                        quote_per_tick_lot: m.per,
                    },
                )
            })
            .collect()
    }

    fn fee_account(&self) -> AccountId {
        self.exchange.feed.view().fee_account
    }

    fn last_seq(&self) -> u64 {
        self.exchange.feed.view().last_seq
    }
}

/// The published batches, from a pipeline reader; what the reader did not see (commands
/// before it subscribed, batches lost to a cut-off) is rebuilt from the journal.
pub struct JournalFeed {
    exchange: Arc<Exchange>,
    reader: Reader,
    /// Every command up to here was published before the reader subscribed.
    subscribed_at: u64,
    data_dir: PathBuf,
    engine: EngineConfig,
}

impl JournalFeed {
    pub fn new(
        exchange: Arc<Exchange>,
        data_dir: &Path,
        engine: EngineConfig,
    ) -> Result<Self, String> {
        let reader = exchange
            .pipeline
            .subscribe()
            .ok_or("no reader slot for settlement")?;
        let subscribed_at = exchange
            .stats()
            .last_seq
            .load(std::sync::atomic::Ordering::Acquire);
        Ok(JournalFeed {
            exchange,
            reader,
            subscribed_at,
            data_dir: data_dir.to_path_buf(),
            engine,
        })
    }

    fn fill(&self, after: u64, upto: u64, f: &mut dyn FnMut(u64, &Event)) -> Result<u64, String> {
        tracing::info!(after, upto, "settlement: events rebuilt from the journal");
        crate::recovery::replay_events(&self.data_dir, self.engine, after, upto, f)?;
        Ok(upto)
    }
}

impl EventFeed for JournalFeed {
    fn poll(
        &mut self,
        after: u64,
        timeout: Duration,
        f: &mut dyn FnMut(u64, &Event),
    ) -> Result<u64, String> {
        let batch = match self.reader.next_timeout(timeout) {
            Ok(b) => b,
            Err(CutOff) => {
                // Too slow: a new reader, and the journal for what the old one missed.
                let fresh = JournalFeed::new(self.exchange.clone(), &self.data_dir, self.engine)?;
                *self = fresh;
                None
            }
        };
        let Some(b) = batch else {
            if after < self.subscribed_at {
                return self.fill(after, self.subscribed_at, f);
            }
            return Ok(after);
        };
        let Some(first) = b.entries.first().map(|e| e.seq) else {
            return Ok(after);
        };
        let mut covered = after;
        if first > after + 1 {
            covered = self.fill(after, first - 1, f)?;
        }
        for e in &b.entries {
            if e.seq > covered {
                for ev in b.events_of(e) {
                    f(e.seq, ev);
                }
                covered = e.seq;
            }
        }
        Ok(covered)
    }
}

/// Custody, as the on-chain fallback of failed payouts.
struct CustodyFallback(Arc<Custody>);

impl OnChain for CustodyFallback {
    fn withdraw(
        &self,
        account: AccountId,
        address: &str,
        amount_sat: u64,
        client_id: &str,
    ) -> Result<String, SettleError> {
        self.0
            .withdraw(
                account,
                &WithdrawRequest {
                    coin: "BTC".into(),
                    network: None,
                    address: address.into(),
                    amount: fulgur_custody::btc_string(amount_sat),
                    client_id: Some(client_id.into()),
                    // The account is owed `amount_sat`: the network fee comes out of it.
                    fee_from_amount: true,
                },
            )
            .map(|id| id.to_string())
            .map_err(|e| SettleError::new(e.status, e.code, e.msg))
    }
}

impl LightningSection {
    pub fn settlement_config(&self) -> SettlementConfig {
        SettlementConfig {
            epoch_ms: self.epoch_ms,
            max_payout_failures: self.max_payout_failures,
            capacity_wait_ms: self.capacity_wait_ms,
            invoice_expiry_secs: self.invoice_expiry_secs,
            deposit_min_sat: self.deposit_min_sat,
            deposit_max_sat: self.deposit_max_sat,
            max_open_invoices: self.max_open_invoices,
            withdraw_fee_sat: self.withdraw_fee_sat,
            withdraw_min_sat: self.withdraw_min_sat,
            withdraw_max_sat: self.withdraw_max_sat,
            max_queued_withdrawals: self.max_queued_withdrawals,
            max_registrations: self.max_self_custody_accounts,
        }
    }
}

/// The node's settings: `[lightning]`, with `[bitcoin]`'s node as the chain source.
fn node_config(cfg: &Config, l: &LightningSection) -> Result<NodeConfig, String> {
    let b = cfg
        .bitcoin
        .as_ref()
        .ok_or("[lightning] needs a [bitcoin] section: its bitcoind is the node's chain source")?;
    let network = l
        .network
        .parse()
        .map_err(|_| format!("lightning.network: '{}' is not a network", l.network))?;
    if l.network != b.network {
        return Err(format!(
            "lightning.network is {} but bitcoin.network is {}",
            l.network, b.network
        ));
    }
    let hostport = b
        .rpc_url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("bitcoin.rpc_url: '{}' is not http://host:port", b.rpc_url))?;
    let (user, password) = match (&b.rpc_cookie_file, &b.rpc_user, &b.rpc_password) {
        (Some(c), _, _) => {
            let text = std::fs::read_to_string(c).map_err(|e| format!("{}: {e}", c.display()))?;
            let (u, p) = text
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{}: not a cookie file", c.display()))?;
            (u.to_string(), p.to_string())
        }
        (None, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Err("bitcoin: give rpc_cookie_file, or rpc_user and rpc_password".into()),
    };
    Ok(NodeConfig {
        data_dir: cfg.data_dir.join("lightning"),
        network,
        listen: l.listen.clone(),
        alias: l.alias.clone(),
        rpc_host: host,
        rpc_port: port,
        rpc_user: user,
        rpc_password: password,
    })
}

/// Starts the Lightning node and settlement when `[lightning]` is configured. Call outside
/// any async runtime: the node runs its own.
pub fn start(
    cfg: &Config,
    exchange: &Arc<Exchange>,
    custody: Option<&Arc<Custody>>,
) -> Result<Option<Arc<Settlement>>, String> {
    let Some(l) = &cfg.lightning else {
        return Ok(None);
    };
    let node_cfg = node_config(cfg, l)?;
    let node = Arc::new(LightningNode::start(&node_cfg)?);
    tracing::info!(node_id = %node.node_id(), listen = ?node.listen_addresses(), "Lightning node started");
    let ledger = Arc::new(SettleLedger {
        exchange: exchange.clone(),
    });
    let s = Settlement::open(
        l.settlement_config(),
        &cfg.data_dir,
        Some(node.clone()),
        node,
        ledger,
    )?;
    if let Some(c) = custody {
        s.set_onchain(Arc::new(CustodyFallback(c.clone())));
    }
    let feed = JournalFeed::new(exchange.clone(), &cfg.data_dir, cfg.engine.engine_config())?;
    s.start(Box::new(feed))?;
    Ok(Some(s))
}

/// Stops settlement's threads, then the node.
pub fn stop(s: &Settlement) {
    s.stop();
    if let Some(n) = &s.node {
        n.stop();
    }
}

type OpError = (u16, i32, String);

/// The operator's actions (`POST /fulgur/v1/admin/lightning/<action>`): `status`,
/// `address` (a new on-chain address of the node's wallet), `connect`
/// (`{"node_id","addr"}`), `open-channel` (`{"node_id","addr","capacity_sat","push_msat"}`),
/// `report` (`{"epoch":N}` or `{"before":N,"limit":K}`: settlement reports, every account).
pub fn admin(s: &Settlement, action: &str, args: &Value) -> Result<Value, OpError> {
    let internal = |e: String| (500u16, -1000, e);
    let bad = |e: String| (400u16, -1100, e);
    let node = || {
        s.node
            .as_deref()
            .ok_or_else(|| (400u16, -4019, "Lightning is not enabled.".to_string()))
    };
    let text = |k: &str| args[k].as_str().unwrap_or("").to_string();
    match action {
        "status" => Ok(s.status()),
        "address" => node()?
            .new_onchain_address()
            .map(|a| json!({"address": a}))
            .map_err(internal),
        "connect" => node()?
            .connect(&text("node_id"), &text("addr"))
            .map(|()| json!({"ok": true}))
            .map_err(bad),
        "open-channel" => {
            let n = node()?;
            let _ = n.sync_wallets();
            n.open_channel(
                &text("node_id"),
                &text("addr"),
                args["capacity_sat"].as_u64().unwrap_or(0),
                args["push_msat"].as_u64().unwrap_or(0),
            )
            .map(|()| json!({"ok": true}))
            .map_err(bad)
        }
        "sync" => node()?
            .sync_wallets()
            .map(|()| json!({"ok": true}))
            .map_err(internal),
        "report" => match args["epoch"].as_u64() {
            Some(n) => match s.epoch(n).map_err(internal)? {
                Some(e) => s.epoch_report(&e, None).map_err(internal),
                None => Err((404, -1000, format!("no epoch {n}"))),
            },
            None => s
                .report(
                    args["before"].as_u64(),
                    args["limit"].as_u64().unwrap_or(10).clamp(1, 1000) as u32,
                    None,
                )
                .map_err(internal),
        },
        _ => Err((404, -1000, format!("no lightning action '{action}'"))),
    }
}
