//! The custody service in the server: the ledger it submits to (the pipeline), the
//! Binance capital endpoints it answers, and the operator's custody endpoints.

use std::sync::Arc;

use fulgur_custody::service::WithdrawRequest;
use fulgur_custody::store::{self, Page};
use fulgur_custody::{btc_string, Custody, CustodyConfig, CustodyError, Ledger, RpcAuth};
use fulgur_engine::{AccountId, AssetId, Command, Event};
use fulgur_settlement::service::{LnWithdrawRequest, SettleError, Settlement};
use fulgur_settlement::Destination;
use fulgur_ws_api::capital::{not_enabled, Capital};
use fulgur_ws_api::error::ApiError;
use fulgur_ws_api::params::Params;
use fulgur_ws_api::Feed;
use serde_json::{json, Value};

use crate::config::BitcoinSection;
use crate::server::Exchange;

/// The pipeline, as custody's ledger.
pub struct ExchangeLedger {
    pub exchange: Arc<Exchange>,
}

impl Ledger for ExchangeLedger {
    fn submit(&self, command: Command) -> Result<Vec<Event>, String> {
        self.exchange.submit_blocking(command).map(|r| r.events)
    }

    fn asset(&self, symbol: &str) -> Option<(AssetId, u8)> {
        let v = self.exchange.feed.view();
        v.asset_by_symbol(symbol).map(|a| (a.id, a.decimals))
    }

    fn balances(&self, asset: AssetId) -> Vec<(AccountId, u64)> {
        let v = self.exchange.feed.view();
        let mut out: Vec<(AccountId, u64)> = v
            .accounts
            .iter()
            .filter_map(|(a, acc)| acc.balances.get(&asset).map(|(f, l)| (*a, f + l)))
            .filter(|(_, b)| *b > 0)
            .collect();
        out.sort_unstable();
        out
    }

    fn is_frozen(&self, account: AccountId) -> bool {
        let v = self.exchange.feed.view();
        v.accounts.get(&account).is_some_and(|a| a.is_frozen())
    }
}

impl BitcoinSection {
    pub fn custody_config(&self) -> Result<CustodyConfig, String> {
        let network = self.network.parse().map_err(|_| {
            format!(
                "bitcoin.network: '{}' is not bitcoin, testnet, testnet4, signet or regtest",
                self.network
            )
        })?;
        let rpc_auth = match (&self.rpc_cookie_file, &self.rpc_user, &self.rpc_password) {
            (Some(c), None, None) => RpcAuth::CookieFile(c.clone()),
            (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
            _ => {
                return Err(
                    "bitcoin: give rpc_cookie_file, or rpc_user and rpc_password (not both)".into(),
                )
            }
        };
        if self.confirmations == 0 || self.final_confirmations < self.confirmations {
            return Err("bitcoin: confirmations must be at least 1 and final_confirmations at least confirmations".into());
        }
        Ok(CustodyConfig {
            network,
            rpc_url: self.rpc_url.clone(),
            rpc_auth,
            confirmations: self.confirmations,
            final_confirmations: self.final_confirmations,
            batch_window_ms: self.batch_window_ms,
            hot_wallet_ceiling_sat: self.hot_wallet_ceiling_sat,
            poll_interval_ms: self.poll_interval_ms,
            fallback_fee_sat_per_vb: self.fallback_fee_sat_per_vb,
            withdraw_fee_sat: self.withdraw_fee_sat,
            withdraw_min_sat: self.withdraw_min_sat,
            withdraw_max_sat: self.withdraw_max_sat,
            max_queued_withdrawals: self.max_queued_withdrawals,
            max_outputs_per_batch: self.max_outputs_per_batch,
        })
    }
}

fn api_err(e: CustodyError) -> ApiError {
    ApiError::new(e.status, e.code, e.msg)
}

/// The capital endpoints over the custody service (`None`: custody is off, and only the
/// coin list answers).
pub struct CustodyApi {
    pub custody: Option<Arc<Custody>>,
    /// Lightning deposits and withdrawals (`network=LIGHTNING`) and self-custody
    /// settlement, when `[lightning]` is configured.
    pub settlement: Option<Arc<Settlement>>,
    pub feed: Arc<Feed>,
}

impl CustodyApi {
    fn custody(&self) -> Result<&Custody, ApiError> {
        self.custody.as_deref().ok_or_else(not_enabled)
    }

    fn settlement(&self) -> Result<&Settlement, ApiError> {
        self.settlement.as_deref().ok_or_else(lightning_off)
    }
}

fn lightning_off() -> ApiError {
    ApiError::new(
        400,
        -4019,
        "Lightning is not enabled on this exchange (no [lightning] section in its configuration).",
    )
}

fn settle_err(e: SettleError) -> ApiError {
    ApiError::new(e.status, e.code, e.msg)
}

fn lightning(p: &Params) -> bool {
    p.get("network") == Some("LIGHTNING")
}

/// `amount` in BTC, at most 8 decimals.
fn amount_sat(p: &Params, required: bool) -> Result<Option<u64>, ApiError> {
    match p.get("amount") {
        None if required => Err(ApiError::mandatory("amount")),
        None => Ok(None),
        Some(a) => fulgur_custody::parse_btc(a).map(Some).ok_or_else(|| {
            ApiError::new(
                400,
                -4021,
                "Asset withdrawal must be an 0.00000001 multiple of 0.00000001.",
            )
        }),
    }
}

fn ln_page(p: Page) -> fulgur_settlement::store::Page {
    fulgur_settlement::store::Page {
        start_ms: p.start_ms,
        end_ms: p.end_ms,
        offset: p.offset,
        limit: p.limit,
    }
}

fn ln_deposit_json(i: &fulgur_settlement::store::Invoice) -> Value {
    json!({
        "id": format!("ln-{}", i.id),
        "amount": btc_string(i.received_msat / 1000),
        "coin": "BTC",
        "network": "LIGHTNING",
        "status": 1,
        "address": i.bolt11,
        "addressTag": "",
        "txId": i.payment_hash,
        "insertTime": i.created_ms,
        "transferType": 0,
        "confirmTimes": "1/1",
        "unlockConfirm": 1,
        "walletType": 0,
    })
}

fn ln_withdrawal_json(w: &fulgur_settlement::store::Withdrawal) -> Value {
    withdrawal_row(WithdrawalRow {
        id: format!("ln-{}", w.id),
        network: "LIGHTNING",
        state: &w.state,
        amount_sat: w.amount_sat,
        fee_sat: w.fee_sat,
        address: &w.address,
        txid: w.payment_id.as_deref().unwrap_or_default(),
        apply_ms: w.apply_ms,
        complete_ms: w.complete_ms,
        client_id: w.client_id.as_deref(),
        info: &w.info,
    })
}

/// Newest first, by the field Binance sorts on.
fn newest_first(rows: &mut [Value], key: &str) {
    rows.sort_by(|a, b| {
        let t = |v: &Value| match &v[key] {
            Value::String(s) => s.clone(),
            n => format!("{:020}", n.as_u64().unwrap_or(0)),
        };
        t(b).cmp(&t(a))
    });
}

fn page(p: &Params) -> Result<Page, ApiError> {
    let now = fulgur_ws_api::now_ms();
    let end = p.u64("endTime")?.unwrap_or(now);
    let start = p
        .u64("startTime")?
        .unwrap_or(end.saturating_sub(90 * 86_400_000));
    if start > end {
        return Err(ApiError::new(
            400,
            -1102,
            "startTime must be before endTime.",
        ));
    }
    Ok(Page {
        start_ms: start,
        end_ms: end,
        offset: p.bounded("offset", 0, 0, 1_000_000)? as u32,
        limit: p.bounded("limit", 1000, 1, 1000)? as u32,
    })
}

fn check_coin(p: &Params, required: bool) -> Result<bool, ApiError> {
    match p.get("coin") {
        None if required => Err(ApiError::mandatory("coin")),
        None => Ok(true),
        Some("BTC") => Ok(true),
        Some(_) if required => Err(ApiError::new(400, -4018, "We don't have this asset.")),
        Some(_) => Ok(false),
    }
}

/// `2019-10-12 11:12:02`, UTC, as Binance prints `applyTime`.
pub fn utc_datetime(ms: u64) -> String {
    let s = ms / 1000;
    let (days, rem) = (s / 86_400, s % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn deposit_json(d: &store::Deposit, needed: u32) -> Value {
    let status = match d.state.as_str() {
        store::deposit::CREDITED | store::deposit::SETTLED => 1,
        _ => 0,
    };
    json!({
        "id": d.id.to_string(),
        "amount": btc_string(d.amount_sat),
        "coin": "BTC",
        "network": "BTC",
        "status": status,
        "address": d.address,
        "addressTag": "",
        "txId": d.txid,
        "insertTime": d.insert_ms,
        "transferType": 0,
        "confirmTimes": format!("{}/{}", d.confirmations.min(needed), needed),
        "unlockConfirm": needed,
        "walletType": 0,
    })
}

/// A row of Binance's withdraw history, from either store (their states have the same
/// names).
struct WithdrawalRow<'a> {
    id: String,
    network: &'static str,
    state: &'a str,
    amount_sat: u64,
    fee_sat: u64,
    address: &'a str,
    txid: &'a str,
    apply_ms: u64,
    complete_ms: Option<u64>,
    client_id: Option<&'a str>,
    info: &'a str,
}

fn withdrawal_row(w: WithdrawalRow) -> Value {
    use store::withdrawal::*;
    let status = match w.state {
        CONFIRMED => 6,
        FAILED => 5,
        REJECTED => 3,
        _ => 4,
    };
    let mut v = json!({
        "id": w.id,
        "amount": btc_string(w.amount_sat),
        "transactionFee": btc_string(w.fee_sat),
        "coin": "BTC",
        "status": status,
        "address": w.address,
        "txId": w.txid,
        "applyTime": utc_datetime(w.apply_ms),
        "network": w.network,
        "transferType": 0,
        "info": w.info,
        "confirmNo": if status == 6 { 1 } else { 0 },
        "walletType": 0,
        "txKey": "",
    });
    if let Some(c) = w.client_id {
        v["withdrawOrderId"] = json!(c);
    }
    if let Some(t) = w.complete_ms {
        v["completeTime"] = json!(utc_datetime(t));
    }
    v
}

fn withdrawal_json(w: &store::Withdrawal) -> Value {
    withdrawal_row(WithdrawalRow {
        id: w.id.to_string(),
        network: "BTC",
        state: &w.state,
        amount_sat: w.amount_sat,
        fee_sat: w.fee_sat,
        address: &w.address,
        txid: w.txid.as_deref().unwrap_or_default(),
        apply_ms: w.apply_ms,
        complete_ms: w.complete_ms,
        client_id: w.client_id.as_deref(),
        info: &w.info,
    })
}

impl Capital for CustodyApi {
    fn enabled(&self) -> bool {
        self.custody.is_some() || self.settlement.is_some()
    }

    fn deposit_address(&self, account: AccountId, p: &Params) -> Result<Value, ApiError> {
        check_coin(p, true)?;
        if lightning(p) {
            let amount = amount_sat(p, true)?.unwrap_or(0);
            return self
                .settlement()?
                .deposit_invoice(account, amount)
                .map_err(settle_err);
        }
        let c = self.custody()?;
        if let Some(n) = p.get("network") {
            if n != "BTC" {
                return Err(ApiError::new(
                    400,
                    -4019,
                    format!("Network {n} is not open for deposits of BTC; use network BTC or LIGHTNING."),
                ));
            }
        }
        let address = c.deposit_address(account).map_err(api_err)?;
        Ok(json!({"address": address, "coin": "BTC", "tag": "", "url": ""}))
    }

    fn deposit_history(&self, account: AccountId, p: &Params) -> Result<Value, ApiError> {
        if !self.enabled() {
            return Err(not_enabled());
        }
        if !check_coin(p, false)? {
            return Ok(json!([]));
        }
        let status = p.u64("status")?;
        let txid = p.get("txId").map(str::to_string);
        let page = page(p)?;
        let mut rows = Vec::new();
        if let Some(c) = &self.custody {
            let needed = c.cfg.confirmations;
            let chain = c.deposit_history(account, page).map_err(api_err)?;
            rows.extend(chain.iter().map(|d| deposit_json(d, needed)));
        }
        if let Some(s) = &self.settlement {
            let ln = s
                .deposit_history(account, ln_page(page))
                .map_err(settle_err)?;
            rows.extend(ln.iter().map(ln_deposit_json));
        }
        newest_first(&mut rows, "insertTime");
        rows.truncate(page.limit as usize);
        Ok(Value::Array(
            rows.into_iter()
                .filter(|v| status.is_none_or(|s| v["status"] == json!(s)))
                .filter(|v| txid.as_ref().is_none_or(|t| v["txId"] == json!(t)))
                .collect(),
        ))
    }

    fn withdraw(&self, account: AccountId, p: &Params) -> Result<Value, ApiError> {
        if lightning(p) {
            check_coin(p, true)?;
            let s = self.settlement()?;
            let req = LnWithdrawRequest {
                address: p.req("address")?.to_string(),
                amount_sat: amount_sat(p, false)?,
                client_id: p.get("withdrawOrderId").map(str::to_string),
            };
            let id = s.withdraw(account, &req).map_err(settle_err)?;
            return Ok(json!({"id": format!("ln-{id}")}));
        }
        let c = self.custody()?;
        if p.get("addressTag").is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::new(
                400,
                -4008,
                "Address tag validation is not passed: BTC takes no tag.",
            ));
        }
        let req = WithdrawRequest {
            coin: p.req("coin")?.to_string(),
            network: p.get("network").map(str::to_string),
            address: p.req("address")?.to_string(),
            amount: p.req("amount")?.to_string(),
            client_id: p.get("withdrawOrderId").map(str::to_string),
            fee_from_amount: p.bool("transactionFeeFlag")?.unwrap_or(false),
        };
        let id = c.withdraw(account, &req).map_err(api_err)?;
        Ok(json!({"id": id.to_string()}))
    }

    fn withdraw_history(&self, account: AccountId, p: &Params) -> Result<Value, ApiError> {
        if !self.enabled() {
            return Err(not_enabled());
        }
        if !check_coin(p, false)? {
            return Ok(json!([]));
        }
        let status = p.u64("status")?;
        let page = page(p)?;
        let client_id = p.get("withdrawOrderId");
        let mut rows = Vec::new();
        if let Some(c) = &self.custody {
            let chain = c
                .withdraw_history(account, client_id, page)
                .map_err(api_err)?;
            rows.extend(chain.iter().map(withdrawal_json));
        }
        if let Some(s) = &self.settlement {
            let ln = s
                .withdraw_history(account, client_id, ln_page(page))
                .map_err(settle_err)?;
            rows.extend(ln.iter().map(ln_withdrawal_json));
        }
        newest_first(&mut rows, "applyTime");
        rows.truncate(page.limit as usize);
        Ok(Value::Array(
            rows.into_iter()
                .filter(|v| status.is_none_or(|s| v["status"] == json!(s)))
                .collect(),
        ))
    }

    fn coins(&self, account: AccountId) -> Result<Value, ApiError> {
        let v = self.feed.view();
        let acc = v.accounts.get(&account);
        let coins: Vec<Value> = v
            .assets
            .iter()
            .map(|a| {
                let (free, locked) = acc
                    .and_then(|x| x.balances.get(&a.id).copied())
                    .unwrap_or((0, 0));
                let amt = |m: u64| fulgur_ws_api::view::quote_decimal(m as u128, a.decimals);
                let chain = a.symbol == "BTC" && self.enabled();
                let mut networks = Vec::new();
                if let (true, Some(c)) = (chain, &self.custody) {
                    networks.push(json!({
                        "network": "BTC", "coin": "BTC", "name": "Bitcoin", "isDefault": true,
                        "depositEnable": true, "withdrawEnable": true,
                        "depositDesc": "", "withdrawDesc": "", "specialTips": "",
                        "resetAddressStatus": false,
                        "addressRegex": "^(bc1|tb1|bcrt1|[123mn])[a-zA-HJ-NP-Z0-9]{25,90}$",
                        "memoRegex": "", "sameAddress": false,
                        "withdrawIntegerMultiple": "0.00000001",
                        "withdrawFee": btc_string(c.cfg.withdraw_fee_sat),
                        "withdrawMin": btc_string(c.cfg.withdraw_min_sat),
                        "withdrawMax": btc_string(c.cfg.withdraw_max_sat),
                        "minConfirm": c.cfg.confirmations,
                        "unLockConfirm": c.cfg.confirmations,
                        "estimatedArrivalTime": 10, "busy": false,
                    }));
                }
                if let (true, Some(s)) = (a.symbol == "BTC", &self.settlement) {
                    networks.push(json!({
                        "network": "LIGHTNING", "coin": "BTC", "name": "Lightning",
                        "isDefault": self.custody.is_none(),
                        "depositEnable": true, "withdrawEnable": true,
                        "depositDesc": "", "withdrawDesc": "",
                        "specialTips": "Deposit: ask for an invoice with amount; withdraw: give a BOLT11 invoice or a BOLT12 offer as address.",
                        "resetAddressStatus": false,
                        "addressRegex": "^(lnbc|lntb|lntbs|lnbcrt|lno)[0-9a-z]+$",
                        "memoRegex": "", "sameAddress": false,
                        "withdrawIntegerMultiple": "0.00000001",
                        "withdrawFee": btc_string(s.cfg.withdraw_fee_sat),
                        "withdrawMin": btc_string(s.cfg.withdraw_min_sat),
                        "withdrawMax": btc_string(s.cfg.withdraw_max_sat),
                        "minConfirm": 0, "unLockConfirm": 0,
                        "estimatedArrivalTime": 1, "busy": false,
                    }));
                }
                json!({
                    "coin": a.symbol, "name": a.symbol,
                    "depositAllEnable": chain, "withdrawAllEnable": chain,
                    "free": amt(free), "locked": amt(locked),
                    "freeze": "0", "withdrawing": "0", "ipoing": "0", "ipoable": "0",
                    "storage": "0", "isLegalMoney": false, "trading": true,
                    "networkList": networks,
                })
            })
            .collect();
        Ok(Value::Array(coins))
    }

    fn settlement(
        &self,
        account: AccountId,
        method: &str,
        action: &str,
        p: &Params,
    ) -> Result<Value, ApiError> {
        let s = self.settlement()?;
        let internal = |e: String| ApiError::internal(e);
        match (method, action) {
            ("POST", "destination") => {
                let dest = match (p.get("nodeId"), p.get("offer")) {
                    (Some(n), None) => Destination::Node(n.to_ascii_lowercase()),
                    (None, Some(o)) => Destination::Offer(o.to_string()),
                    _ => {
                        return Err(ApiError::new(
                            400,
                            -1102,
                            "Give exactly one of 'nodeId' (spontaneous payments to a node) and 'offer' (a BOLT12 offer).",
                        ))
                    }
                };
                let fallback = match p.get("fallbackAddress") {
                    None => None,
                    Some(a) => {
                        let c = self.custody.as_deref().ok_or_else(|| {
                            ApiError::new(400, -4019, "fallbackAddress needs on-chain withdrawals, and custody is not enabled.")
                        })?;
                        Some(c.check_address(a).map_err(api_err)?)
                    }
                };
                let r = s.register(account, dest, fallback).map_err(settle_err)?;
                Ok(registration_json(&r))
            }
            ("GET", "destination") => match s.registration(account).map_err(settle_err)? {
                Some(r) => Ok(registration_json(&r)),
                None => Err(ApiError::new(
                    404,
                    -1130,
                    "This account is not registered for self-custody settlement.",
                )),
            },
            ("DELETE", "destination") => {
                let removed = s.unregister(account).map_err(settle_err)?;
                Ok(json!({"removed": removed}))
            }
            ("GET", "epochs") => {
                let limit = p.bounded("limit", 10, 1, 100)? as u32;
                let before = p.u64("beforeEpoch")?;
                match p.u64("epoch")? {
                    Some(n) => match s.epoch(n).map_err(internal)? {
                        Some(e) => s.epoch_report(&e, Some(account)).map_err(internal),
                        None => Err(ApiError::new(404, -1130, format!("No epoch {n}."))),
                    },
                    None => s.report(before, limit, Some(account)).map_err(internal),
                }
            }
            _ => Err(ApiError::new(404, -1000, "No such settlement endpoint.")),
        }
    }

    fn liabilities_proof(&self, account: AccountId) -> Result<Value, ApiError> {
        let c = self.custody()?;
        let path = c.key_dir().join("proofs").join("liabilities-tree.json");
        let text = std::fs::read_to_string(&path).map_err(|_| {
            ApiError::new(
                404,
                -4029,
                "No proof of liabilities has been made yet (fulgur custody proof).",
            )
        })?;
        let tree: fulgur_custody::liabilities::Tree =
            serde_json::from_str(&text).map_err(|e| ApiError::internal(e.to_string()))?;
        match tree.inclusion(account) {
            Some(p) => Ok(json!({"root": tree.root, "inclusion": p})),
            None => Err(ApiError::new(
                404,
                -4029,
                "This account had no BTC in the latest proof of liabilities.",
            )),
        }
    }
}

fn registration_json(r: &fulgur_settlement::store::Registration) -> Value {
    let (kind, dest) = match &r.destination {
        Destination::Node(n) => ("node", n),
        Destination::Offer(o) => ("offer", o),
    };
    json!({
        "type": kind,
        "destination": dest,
        "fallbackAddress": r.fallback_address,
        "registerTime": r.registered_ms,
        "owedSat": r.carry_sat,
        "failures": r.failures,
    })
}

/// Starts custody when `[bitcoin]` is configured.
pub fn start(
    section: Option<&BitcoinSection>,
    data_dir: &std::path::Path,
    exchange: &Arc<Exchange>,
) -> Result<Option<Arc<Custody>>, String> {
    let Some(b) = section else { return Ok(None) };
    let cfg = b.custody_config()?;
    let ledger = Arc::new(ExchangeLedger {
        exchange: exchange.clone(),
    });
    let c = Custody::open(cfg, data_dir, ledger)?;
    c.start();
    tracing::info!(network = %c.cfg.network, "custody started");
    Ok(Some(c))
}

/// `fulgur custody proof`: both proofs, written under `<data dir>/custody/proofs/`, and
/// checked; the summary.
pub fn make_proofs(
    c: &Custody,
    message: &str,
    cold_keys: &[fulgur_custody::bitcoin::bip32::Xpriv],
) -> Result<Value, String> {
    let reserves = c.prove_reserves(message, cold_keys)?;
    let proven = c.verify_reserves(&reserves)?;
    let tree = c.prove_liabilities()?;
    for a in &tree.leaves {
        let p = tree.inclusion(a.0).ok_or("a leaf without a proof")?;
        fulgur_custody::liabilities::verify(&p, &tree.root)
            .map_err(|e| format!("liabilities: {e:?}"))?;
    }
    let dir = c.key_dir().join("proofs");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let proofs = fulgur_custody::proof::Proofs {
        surplus_sat: proven as i128 - tree.root.total as i128,
        liabilities: tree.root.clone(),
        reserves,
    };
    write_json(&dir.join("proofs.json"), &proofs)?;
    write_json(&dir.join("liabilities-tree.json"), &tree)?;
    Ok(json!({
        "reserves_sat": proven,
        "liabilities_sat": tree.root.total,
        "surplus_sat": proofs.surplus_sat.to_string(),
        "accounts": tree.root.accounts,
        "unproven": proofs.reserves.unproven,
        "dir": dir.display().to_string(),
    }))
}

fn write_json(path: &std::path::Path, v: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
