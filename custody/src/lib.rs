//! # fulgur-custody
//!
//! The custody service: it holds the exchange's on-chain bitcoin and turns chain events
//! into ledger commands. It talks to the engine only through commands and their events
//! ([`Ledger`]), and to Bitcoin Core only through its RPC.
//!
//! What it owns:
//! - **Wallets** (BDK, each persisted in SQLite under `<data dir>/custody/`), synced block
//!   by block from bitcoind with `bdk_bitcoind_rpc`'s emitter, which follows reorgs:
//!   *deposit* (BIP86 taproot, one address per account; the watcher holds only its
//!   public descriptor), *hot* (BIP84, pays withdrawals), *cold* (2-of-3
//!   `wsh(sortedmulti)`, public keys only; spent by PSBTs two offline signers sign).
//! - **Deposits**: credited with `DepositCredit` (keyed by the deposit's row id, so a
//!   resend after a crash is refused as a duplicate instead of paying twice) once they
//!   have `confirmations`; a credited deposit a reorg takes out of the chain is taken back
//!   with `DepositReverse` (the engine freezes an account that no longer has it);
//!   `DepositSettle` once it is `final_confirmations` deep.
//! - **Withdrawals**: each a persisted state machine (requested → held → batched with its
//!   txid → broadcast → confirmed, or failed/rejected). Every batch window one
//!   transaction pays every held withdrawal (and sweeps confirmed deposits into the hot
//!   wallet, and the excess over the hot ceiling to cold); it is signed, every input is
//!   checked with libbitcoinconsensus, and it is stored before it is broadcast.
//! - **Proofs**: reserves (BIP-127-style, `bdk-reserves`) and liabilities (a Merkle-sum
//!   tree over account balances, [`liabilities`]).
//!
//! Amounts are satoshis; the ledger's BTC asset must have 8 decimals.

pub mod keys;
pub mod liabilities;
pub mod proof;
pub mod service;
pub mod store;
pub mod wallets;

use std::path::PathBuf;

pub use bdk_wallet::bitcoin;
use fulgur_engine::{AccountId, AssetId, Command, Event};
pub use service::Custody;

/// How to reach bitcoind's RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcAuth {
    CookieFile(PathBuf),
    UserPass(String, String),
}

/// The `[bitcoin]` section of the configuration.
#[derive(Clone, Debug)]
pub struct CustodyConfig {
    pub network: bitcoin::Network,
    pub rpc_url: String,
    pub rpc_auth: RpcAuth,
    /// Confirmations before a deposit is credited and a withdrawal is final.
    pub confirmations: u32,
    /// Depth after which a credited deposit can no longer be reversed (`DepositSettle`).
    pub final_confirmations: u32,
    /// How often queued withdrawals go out in one transaction.
    pub batch_window_ms: u64,
    /// Above this (hot + swept deposits), the excess goes to the cold wallet, down to half
    /// of it, so that every deposit does not make a sweep.
    pub hot_wallet_ceiling_sat: u64,
    /// How often the chain is polled.
    pub poll_interval_ms: u64,
    /// Used when `estimatesmartfee` has no estimate (a young chain, regtest).
    pub fallback_fee_sat_per_vb: u64,
    /// What a withdrawal costs its account (Binance's `withdrawFee`), whatever the batch's
    /// real fee share is.
    pub withdraw_fee_sat: u64,
    /// Smallest amount a recipient may be sent (Binance's `withdrawMin`).
    pub withdraw_min_sat: u64,
    /// Largest single withdrawal.
    pub withdraw_max_sat: u64,
    /// Withdrawals waiting (held, not yet in a transaction) at most: past it, -4023-style
    /// refusals until a batch goes out.
    pub max_queued_withdrawals: u32,
    /// Most recipients one transaction pays; the rest wait for the next window.
    pub max_outputs_per_batch: u32,
}

impl Default for CustodyConfig {
    fn default() -> Self {
        CustodyConfig {
            network: bitcoin::Network::Regtest,
            rpc_url: "http://127.0.0.1:18443".into(),
            // None that would work: `[bitcoin]` must name its cookie file or user.
            rpc_auth: RpcAuth::CookieFile(PathBuf::new()),
            confirmations: 3,
            final_confirmations: 100,
            batch_window_ms: 60_000,
            hot_wallet_ceiling_sat: 10 * 100_000_000,
            poll_interval_ms: 1_000,
            fallback_fee_sat_per_vb: 10,
            withdraw_fee_sat: 10_000,
            withdraw_min_sat: 10_000,
            withdraw_max_sat: 100 * 100_000_000,
            max_queued_withdrawals: 10_000,
            max_outputs_per_batch: 500,
        }
    }
}

/// The engine, as custody sees it (the root package implements it over the pipeline).
pub trait Ledger: Send + Sync + 'static {
    /// Submits a command and waits until it is durable; its events.
    fn submit(&self, command: Command) -> Result<Vec<Event>, String>;
    /// The asset id of a symbol.
    fn asset(&self, symbol: &str) -> Option<(AssetId, u8)>;
    /// Every account's total (free + locked) of an asset, ascending account: the
    /// liabilities.
    fn balances(&self, asset: AssetId) -> Vec<(AccountId, u64)>;
    /// Whether the account owes a deficit (a reversed deposit it had spent): its held
    /// withdrawals wait until it is covered.
    fn is_frozen(&self, account: AccountId) -> bool;
}

/// An error with Binance's code and words, for the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyError {
    /// HTTP status.
    pub status: u16,
    pub code: i32,
    pub msg: String,
}

impl CustodyError {
    pub fn new(status: u16, code: i32, msg: impl Into<String>) -> Self {
        CustodyError {
            status,
            code,
            msg: msg.into(),
        }
    }

    /// Something on the exchange's side failed (bitcoind unreachable, a store error).
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        CustodyError::new(500, -1000, format!("An unknown error occurred: {msg}"))
    }
}

impl std::fmt::Display for CustodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.msg)
    }
}

/// Wall-clock milliseconds (history times).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `12345678` sat → `"0.12345678"`.
pub fn btc_string(sat: u64) -> String {
    format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000)
}

/// `"0.1"` → 10,000,000 sat; at most 8 decimals, no sign, no exponent.
pub fn parse_btc(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 8
    {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f = frac.to_string();
    while f.len() < 8 {
        f.push('0');
    }
    int.checked_mul(100_000_000)?.checked_add(f.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btc_amounts_parse_and_print() {
        assert_eq!(parse_btc("0.1"), Some(10_000_000));
        assert_eq!(parse_btc("1"), Some(100_000_000));
        assert_eq!(parse_btc(".5"), Some(50_000_000));
        assert_eq!(parse_btc("0.00000001"), Some(1));
        assert_eq!(parse_btc("0.000000001"), None);
        assert_eq!(parse_btc("-1"), None);
        assert_eq!(parse_btc("1e3"), None);
        assert_eq!(parse_btc(""), None);
        assert_eq!(parse_btc("."), None);
        assert_eq!(parse_btc("99999999999999999999"), None);
        assert_eq!(btc_string(12_345_678), "0.12345678");
        assert_eq!(btc_string(2_100_000_000_000_000), "21000000.00000000");
    }
}
