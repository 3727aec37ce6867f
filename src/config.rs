//! `fulgur.toml`: the server's configuration. Every key has a default (`docs/config.md`
//! lists them); a file may give only some keys; an unknown key is an error.

use std::net::SocketAddr;
use std::path::PathBuf;

use fulgur_engine::EngineConfig;
use serde::Deserialize;

use crate::pipeline::{PipelineConfig, WaitStrategy};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Journal, snapshots and keys live here.
    pub data_dir: PathBuf,
    pub engine: EngineSection,
    pub pipeline: PipelineSection,
    pub journal: JournalSection,
    pub snapshot: SnapshotSection,
    pub api: ApiSection,
    /// Custody (on-chain deposits and withdrawals); off when absent.
    pub bitcoin: Option<BitcoinSection>,
    /// The Lightning node and settlement epochs; off when absent. Needs `[bitcoin]` (its
    /// node is the chain source).
    pub lightning: Option<LightningSection>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            data_dir: PathBuf::from("./data"),
            engine: EngineSection::default(),
            pipeline: PipelineSection::default(),
            journal: JournalSection::default(),
            snapshot: SnapshotSection::default(),
            api: ApiSection::default(),
            bitcoin: None,
            lightning: None,
        }
    }
}

/// `[lightning]`: the exchange's Lightning node and the settlement epochs
/// (`fulgur_settlement::service::SettlementConfig`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LightningSection {
    /// Must be `[bitcoin]`'s network.
    pub network: String,
    /// Where the node takes peers' connections (loopback TCP in the tests).
    pub listen: Vec<String>,
    pub alias: Option<String>,
    pub epoch_ms: u64,
    pub max_payout_failures: u32,
    pub capacity_wait_ms: u64,
    pub invoice_expiry_secs: u32,
    pub deposit_min_sat: u64,
    pub deposit_max_sat: u64,
    pub max_open_invoices: u64,
    pub withdraw_fee_sat: u64,
    pub withdraw_min_sat: u64,
    pub withdraw_max_sat: u64,
    pub max_queued_withdrawals: u64,
    pub max_self_custody_accounts: u64,
}

impl Default for LightningSection {
    fn default() -> Self {
        let c = fulgur_settlement::service::SettlementConfig::default();
        LightningSection {
            network: "regtest".into(),
            listen: vec!["127.0.0.1:9735".into()],
            alias: Some("fulgur".into()),
            epoch_ms: c.epoch_ms,
            max_payout_failures: c.max_payout_failures,
            capacity_wait_ms: c.capacity_wait_ms,
            invoice_expiry_secs: c.invoice_expiry_secs,
            deposit_min_sat: c.deposit_min_sat,
            deposit_max_sat: c.deposit_max_sat,
            max_open_invoices: c.max_open_invoices,
            withdraw_fee_sat: c.withdraw_fee_sat,
            withdraw_min_sat: c.withdraw_min_sat,
            withdraw_max_sat: c.withdraw_max_sat,
            max_queued_withdrawals: c.max_queued_withdrawals,
            max_self_custody_accounts: c.max_registrations,
        }
    }
}

/// `[bitcoin]`: the custody service's node and rules (`fulgur_custody::CustodyConfig`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BitcoinSection {
    /// bitcoin, testnet, testnet4, signet or regtest.
    pub network: String,
    pub rpc_url: String,
    pub rpc_cookie_file: Option<PathBuf>,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<String>,
    pub confirmations: u32,
    pub final_confirmations: u32,
    pub batch_window_ms: u64,
    pub hot_wallet_ceiling_sat: u64,
    pub poll_interval_ms: u64,
    pub fallback_fee_sat_per_vb: u64,
    pub withdraw_fee_sat: u64,
    pub withdraw_min_sat: u64,
    pub withdraw_max_sat: u64,
    pub max_queued_withdrawals: u32,
    pub max_outputs_per_batch: u32,
}

impl Default for BitcoinSection {
    fn default() -> Self {
        let c = fulgur_custody::CustodyConfig::default();
        BitcoinSection {
            network: c.network.to_string(),
            rpc_url: c.rpc_url,
            rpc_cookie_file: None,
            rpc_user: None,
            rpc_password: None,
            confirmations: c.confirmations,
            final_confirmations: c.final_confirmations,
            batch_window_ms: c.batch_window_ms,
            hot_wallet_ceiling_sat: c.hot_wallet_ceiling_sat,
            poll_interval_ms: c.poll_interval_ms,
            fallback_fee_sat_per_vb: c.fallback_fee_sat_per_vb,
            withdraw_fee_sat: c.withdraw_fee_sat,
            withdraw_min_sat: c.withdraw_min_sat,
            withdraw_max_sat: c.withdraw_max_sat,
            max_queued_withdrawals: c.max_queued_withdrawals,
            max_outputs_per_batch: c.max_outputs_per_batch,
        }
    }
}

/// The Binance-compatible API's limits (Binance's own by default).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    pub request_weight_per_minute: u32,
    pub orders_per_10s: u32,
    pub orders_per_day: u32,
    /// Longest wait for a command's reply before answering -1007.
    pub reply_timeout_ms: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        let r = fulgur_ws_api::ratelimit::RateLimitConfig::default();
        ApiSection {
            request_weight_per_minute: r.request_weight_per_minute,
            orders_per_10s: r.orders_per_10s,
            orders_per_day: r.orders_per_day,
            reply_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// The API's settings from this configuration.
    pub fn api_config(&self) -> fulgur_ws_api::ApiConfig {
        fulgur_ws_api::ApiConfig {
            data_dir: self.data_dir.clone(),
            limits: fulgur_ws_api::ratelimit::RateLimitConfig {
                request_weight_per_minute: self.api.request_weight_per_minute,
                orders_per_10s: self.api.orders_per_10s,
                orders_per_day: self.api.orders_per_day,
                max_accounts: self.engine.max_accounts,
                ..Default::default()
            },
            reply_timeout: std::time::Duration::from_millis(self.api.reply_timeout_ms),
        }
    }
}

/// Capacities, all preallocated at start (`fulgur_engine::EngineConfig`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub max_accounts: u32,
    pub max_assets: u32,
    pub max_markets: u32,
    pub max_orders: u32,
    pub max_orders_per_market: u32,
    pub max_levels_per_side: u32,
    pub max_gtd_orders: u32,
    pub max_pending_withdrawals: u32,
    pub max_pending_deposits: u32,
    pub fee_account: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = EngineConfig::default();
        EngineSection {
            max_accounts: e.max_accounts,
            max_assets: e.max_assets,
            max_markets: e.max_markets,
            max_orders: e.max_orders,
            max_orders_per_market: e.max_orders_per_market,
            max_levels_per_side: e.max_levels_per_side,
            max_gtd_orders: e.max_gtd_orders,
            max_pending_withdrawals: e.max_pending_withdrawals,
            max_pending_deposits: e.max_pending_deposits,
            fee_account: e.fee_account,
        }
    }
}

impl EngineSection {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_accounts: self.max_accounts,
            max_assets: self.max_assets,
            max_markets: self.max_markets,
            max_orders: self.max_orders,
            max_orders_per_market: self.max_orders_per_market,
            max_levels_per_side: self.max_levels_per_side,
            max_gtd_orders: self.max_gtd_orders,
            max_pending_withdrawals: self.max_pending_withdrawals,
            max_pending_deposits: self.max_pending_deposits,
            fee_account: self.fee_account,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Wait {
    Spin,
    SpinThenPark,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSection {
    pub gateways: u16,
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub reader_capacity: usize,
    pub max_readers: usize,
    pub wait: Wait,
    /// Spins before parking (`spin-then-park`).
    pub spins: u32,
    /// Longest park, µs (`spin-then-park`).
    pub park_us: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        let p = PipelineConfig::default();
        let (spins, park_us) = match p.wait {
            WaitStrategy::SpinThenPark { spins, park_us } => (spins, park_us),
            WaitStrategy::Spin => (0, 0),
        };
        PipelineSection {
            gateways: p.gateways,
            queue_capacity: p.queue_capacity,
            batch_max: p.batch_max,
            reader_capacity: p.reader_capacity,
            max_readers: p.max_readers,
            wait: Wait::SpinThenPark,
            spins,
            park_us,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fsync {
    /// One fsync per batch, before its commands are applied or acknowledged.
    Batch,
    /// At most every `fsync_every_ms`: a crash can lose acknowledged orders of that window.
    Interval,
    /// Never: the OS decides. For benchmarks only.
    Never,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    pub fsync: Fsync,
    pub fsync_every_ms: u64,
    /// A segment file rolls over past this size.
    pub segment_bytes: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            fsync: Fsync::Batch,
            fsync_every_ms: 5,
            segment_bytes: 256 << 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSection {
    /// A snapshot every this many commands (0: only at shutdown).
    pub every_commands: u64,
    /// Snapshots kept; older ones are deleted.
    pub keep: u32,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        SnapshotSection {
            every_commands: 1_000_000,
            keep: 3,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Limits that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let e = &self.engine;
        if e.max_accounts == 0 || e.max_assets == 0 || e.max_markets == 0 || e.max_orders == 0 {
            return Err(
                "engine: max_accounts, max_assets, max_markets and max_orders must be at least 1"
                    .into(),
            );
        }
        let a = &self.api;
        if a.request_weight_per_minute == 0 || a.orders_per_10s == 0 || a.orders_per_day == 0 {
            return Err("api: request_weight_per_minute, orders_per_10s and orders_per_day must be at least 1".into());
        }
        if a.reply_timeout_ms == 0 {
            return Err("api.reply_timeout_ms: at least 1".into());
        }
        if e.max_markets > 65_536 {
            return Err("engine.max_markets: at most 65536".into());
        }
        if e.max_orders == u32::MAX {
            return Err("engine.max_orders: below 4294967295".into());
        }
        if e.fee_account >= e.max_accounts {
            return Err("engine.fee_account: must be below max_accounts".into());
        }
        let p = &self.pipeline;
        if p.gateways == 0
            || p.queue_capacity == 0
            || p.batch_max == 0
            || p.reader_capacity == 0
            || p.max_readers == 0
        {
            return Err("pipeline: gateways, queue_capacity, batch_max, reader_capacity and max_readers must be at least 1".into());
        }
        if self.journal.fsync == Fsync::Interval && self.journal.fsync_every_ms == 0 {
            return Err(
                "journal.fsync_every_ms: must be at least 1 with fsync = \"interval\"".into(),
            );
        }
        if self.journal.segment_bytes < 1 << 16 {
            return Err("journal.segment_bytes: at least 65536".into());
        }
        if self.snapshot.keep == 0 {
            return Err("snapshot.keep: at least 1".into());
        }
        if let Some(l) = &self.lightning {
            let Some(b) = &self.bitcoin else {
                return Err("[lightning] needs a [bitcoin] section: its bitcoind is the Lightning node's chain source".into());
            };
            if l.network != b.network {
                return Err(format!(
                    "lightning.network ({}) must be bitcoin.network ({})",
                    l.network, b.network
                ));
            }
            if l.epoch_ms < 10 || l.max_payout_failures == 0 || l.listen.is_empty() {
                return Err("lightning: epoch_ms at least 10, max_payout_failures at least 1, listen not empty".into());
            }
        }
        Ok(())
    }

    pub fn pipeline_config(&self) -> PipelineConfig {
        let p = &self.pipeline;
        PipelineConfig {
            gateways: p.gateways,
            queue_capacity: p.queue_capacity,
            batch_max: p.batch_max,
            reader_capacity: p.reader_capacity,
            max_readers: p.max_readers,
            wait: match p.wait {
                Wait::Spin => WaitStrategy::Spin,
                Wait::SpinThenPark => WaitStrategy::SpinThenPark {
                    spins: p.spins,
                    park_us: p.park_us,
                },
            },
            snapshot_every: self.snapshot.every_commands,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn a_file_may_give_some_keys() {
        let c = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\n[journal]\nfsync = \"interval\"\nfsync_every_ms = 2\n[engine]\nmax_orders = 4096\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.journal.fsync, Fsync::Interval);
        assert_eq!(c.journal.fsync_every_ms, 2);
        assert_eq!(
            c.journal.segment_bytes,
            JournalSection::default().segment_bytes
        );
        assert_eq!(c.engine.max_orders, 4096);
        assert_eq!(c.engine.max_accounts, EngineSection::default().max_accounts);
        let c = Config::from_toml("[engine]\nmax_pending_deposits = 128\n").unwrap();
        assert_eq!(c.engine.engine_config().max_pending_deposits, 128);
        assert_eq!(
            c.engine.engine_config().max_pending_withdrawals,
            EngineConfig::default().max_pending_withdrawals
        );
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let e = Config::from_toml("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.contains("listn"), "{e}");
        let e = Config::from_toml("[journal]\nfsyn = \"batch\"").unwrap_err();
        assert!(e.contains("fsyn"), "{e}");
        let e = Config::from_toml("[journal]\nfsync = \"sometimes\"").unwrap_err();
        assert!(e.contains("sometimes"), "{e}");
        let e = Config::from_toml("[engine]\nfee_account = 70000").unwrap_err();
        assert!(e.contains("fee_account"), "{e}");
        let e = Config::from_toml("listen = \"not an address\"").unwrap_err();
        assert!(e.contains("listen") || e.contains("address"), "{e}");
    }

    #[test]
    fn a_bitcoin_section_is_checked() {
        assert_eq!(Config::default().bitcoin, None, "custody is off by default");
        let c =
            Config::from_toml("[bitcoin]\nrpc_cookie_file = \"/x/.cookie\"\nconfirmations = 1\n")
                .unwrap();
        let b = c.bitcoin.unwrap();
        let cc = b.custody_config().unwrap();
        assert_eq!((cc.confirmations, cc.batch_window_ms), (1, 60_000));
        let bad = |t: &str| {
            Config::from_toml(t)
                .ok()
                .and_then(|c| c.bitcoin)
                .map(|b| b.custody_config())
        };
        // No credentials, both kinds, an unknown network, zero confirmations.
        assert!(bad("[bitcoin]\n").unwrap().is_err());
        assert!(bad(
            "[bitcoin]\nrpc_cookie_file = \"c\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n"
        )
        .unwrap()
        .is_err());
        assert!(
            bad("[bitcoin]\nrpc_cookie_file = \"c\"\nnetwork = \"moon\"\n")
                .unwrap()
                .is_err()
        );
        assert!(
            bad("[bitcoin]\nrpc_cookie_file = \"c\"\nconfirmations = 0\n")
                .unwrap()
                .is_err()
        );
        assert!(Config::from_toml("[bitcoin]\nrpc_cokie_file = \"c\"\n").is_err());
    }

    #[test]
    fn a_lightning_section_needs_bitcoin_on_the_same_network() {
        assert_eq!(
            Config::default().lightning,
            None,
            "Lightning is off by default"
        );
        let e = Config::from_toml("[lightning]\n").unwrap_err();
        assert!(e.contains("[bitcoin]"), "{e}");
        let e = Config::from_toml(
            "[bitcoin]\nrpc_cookie_file = \"c\"\n[lightning]\nnetwork = \"signet\"\n",
        )
        .unwrap_err();
        assert!(e.contains("network"), "{e}");
        let c =
            Config::from_toml("[bitcoin]\nrpc_cookie_file = \"c\"\n[lightning]\nepoch_ms = 250\n")
                .unwrap();
        let s = c.lightning.unwrap().settlement_config();
        assert_eq!((s.epoch_ms, s.max_payout_failures), (250, 3));
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../docs/config.md");
        for key in [
            "listen",
            "data_dir",
            "max_accounts",
            "max_assets",
            "max_markets",
            "max_orders",
            "max_orders_per_market",
            "max_levels_per_side",
            "max_gtd_orders",
            "max_pending_withdrawals",
            "max_pending_deposits",
            "fee_account",
            "gateways",
            "queue_capacity",
            "batch_max",
            "reader_capacity",
            "max_readers",
            "wait",
            "spins",
            "park_us",
            "fsync",
            "fsync_every_ms",
            "segment_bytes",
            "every_commands",
            "keep",
            "network",
            "rpc_url",
            "rpc_cookie_file",
            "rpc_user",
            "rpc_password",
            "confirmations",
            "final_confirmations",
            "batch_window_ms",
            "hot_wallet_ceiling_sat",
            "poll_interval_ms",
            "fallback_fee_sat_per_vb",
            "withdraw_fee_sat",
            "withdraw_min_sat",
            "withdraw_max_sat",
            "max_queued_withdrawals",
            "max_outputs_per_batch",
            "epoch_ms",
            "max_payout_failures",
            "capacity_wait_ms",
            "invoice_expiry_secs",
            "deposit_min_sat",
            "deposit_max_sat",
            "max_open_invoices",
            "max_self_custody_accounts",
            "alias",
        ] {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/config.md does not document `{key}`"
            );
        }
    }
}
