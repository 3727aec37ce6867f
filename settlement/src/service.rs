//! The settlement service: epochs closed from the event stream, payouts of positive nets
//! over the payout rail, Lightning deposits (invoices credited once paid) and Lightning
//! withdrawals (an invoice or offer paid after `WithdrawHold`).
//!
//! Two threads: the epoch thread reads the event stream (every command, in sequence, none
//! missed: the feed fills gaps from the journal) and closes an epoch every `epoch_ms`; the
//! worker thread handles the node's events and moves payouts and withdrawals along. Every
//! step is recorded in the store before it is taken outside, and each outside step is
//! idempotent (deterministic withdrawal ids, deposit ids and payment hashes), so a restart
//! anywhere resumes without paying or crediting twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fulgur_engine::{AccountId, AssetId, Command, Event, MarketId, RejectReason};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::net::{MarketLegs, Netter};
use crate::node::{InvoiceError, LightningNode, NodeEvent, PayError};
use crate::store::{self, part, payout, Page, Payout, Registration, Store};
use crate::{Destination, Hash32, PartRequest, PartStatus, PayoutRail};

/// Withdrawal ids of payout parts and Lightning withdrawals, and deposit ids of Lightning
/// deposits, live above custody's (store row ids from 1): the top bits say whose.
pub const PART_ID_BASE: u64 = 0x6000_0000_0000_0000;
pub const LN_WITHDRAWAL_ID_BASE: u64 = 0x4000_0000_0000_0000;
pub const LN_DEPOSIT_ID_BASE: u64 = 0x4000_0000_0000_0000;

/// What settlement needs of the exchange.
pub trait Ledger: Send + Sync {
    /// Submits a command and waits until it is durable; its events.
    fn submit(&self, command: Command) -> Result<Vec<Event>, String>;
    /// The BTC asset and its decimals.
    fn btc(&self) -> Option<(AssetId, u8)>;
    /// Free balance of an account in an asset.
    fn free(&self, account: AccountId, asset: AssetId) -> u64;
    fn markets(&self) -> Vec<(MarketId, MarketLegs)>;
    fn fee_account(&self) -> AccountId;
    /// The last command seq applied.
    fn last_seq(&self) -> u64;
}

/// The exchange's events in sequence order, none missing.
pub trait EventFeed: Send {
    /// Calls `f(seq, event)` for every event of every command with seq in
    /// `(after, returned]`, waiting up to `timeout` for new commands.
    fn poll(
        &mut self,
        after: u64,
        timeout: Duration,
        f: &mut dyn FnMut(u64, &Event),
    ) -> Result<u64, String>;
}

/// The on-chain fallback: a payout that failed `max_payout_failures` times in a row goes
/// out as an on-chain withdrawal (custody), idempotent on `client_id`.
pub trait OnChain: Send + Sync {
    fn withdraw(
        &self,
        account: AccountId,
        address: &str,
        amount_sat: u64,
        client_id: &str,
    ) -> Result<String, SettleError>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementConfig {
    pub epoch_ms: u64,
    /// Failed payouts in a row before the on-chain fallback (if the account gave an address).
    pub max_payout_failures: u32,
    /// How long a payout waits for outbound capacity (the previous HTLC to resolve, the
    /// peer to come back) before it rolls into the next epoch.
    pub capacity_wait_ms: u64,
    pub invoice_expiry_secs: u32,
    pub deposit_min_sat: u64,
    pub deposit_max_sat: u64,
    pub max_open_invoices: u64,
    pub withdraw_fee_sat: u64,
    pub withdraw_min_sat: u64,
    pub withdraw_max_sat: u64,
    pub max_queued_withdrawals: u64,
    pub max_registrations: u64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            epoch_ms: 1000,
            max_payout_failures: 3,
            capacity_wait_ms: 3000,
            invoice_expiry_secs: 3600,
            deposit_min_sat: 1,
            deposit_max_sat: 10_000_000,
            max_open_invoices: 10_000,
            withdraw_fee_sat: 0,
            withdraw_min_sat: 1,
            withdraw_max_sat: 10_000_000,
            max_queued_withdrawals: 1000,
            max_registrations: 100_000,
        }
    }
}

/// An answer for the API: HTTP status, Binance code, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleError {
    pub status: u16,
    pub code: i32,
    pub msg: String,
}

impl SettleError {
    pub fn new(status: u16, code: i32, msg: impl Into<String>) -> Self {
        SettleError {
            status,
            code,
            msg: msg.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        SettleError::new(500, -1000, format!("settlement: {e}"))
    }

    fn bad(code: i32, msg: impl Into<String>) -> Self {
        SettleError::new(400, code, msg)
    }
}

/// A Lightning withdrawal request, parsed.
#[derive(Clone, Debug)]
pub struct LnWithdrawRequest {
    /// A BOLT11 invoice or a BOLT12 offer.
    pub address: String,
    pub amount_sat: Option<u64>,
    pub client_id: Option<String>,
}

/// A test of crash safety kills the process at a named point (`FULGUR_FAULT`).
fn fault(point: &str) {
    if std::env::var("FULGUR_FAULT").is_ok_and(|f| f == point) {
        tracing::warn!(point, "FULGUR_FAULT: killing the process");
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(60));
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rejected(events: &[Event]) -> Option<RejectReason> {
    events.iter().find_map(|e| match e {
        Event::CommandRejected { reason } => Some(*reason),
        _ => None,
    })
}

fn sql(e: rusqlite::Error) -> String {
    format!("settlement store: {e}")
}

/// `12345678` sat → `"0.12345678"`.
pub fn btc_string(sat: u64) -> String {
    format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000)
}

pub struct Settlement {
    pub cfg: SettlementConfig,
    pub node: Option<Arc<LightningNode>>,
    rail: Arc<dyn PayoutRail>,
    ledger: Arc<dyn Ledger>,
    onchain: OnceLock<Arc<dyn OnChain>>,
    store: Mutex<Store>,
    /// Payout preimages are SHA-256(secret ‖ tag): nobody can guess them, and a part's
    /// payment hash is the same after a restart.
    secret: Hash32,
    btc: AssetId,
    dir: PathBuf,
    stop: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub last_error: Mutex<Option<String>>,
}

impl Settlement {
    /// Opens (or creates) `<data dir>/settlement/`.
    pub fn open(
        cfg: SettlementConfig,
        data_dir: &Path,
        node: Option<Arc<LightningNode>>,
        rail: Arc<dyn PayoutRail>,
        ledger: Arc<dyn Ledger>,
    ) -> Result<Arc<Settlement>, String> {
        let dir = data_dir.join("settlement");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let store = Store::open(&dir.join("settlement.sqlite"))?;
        let secret = load_secret(&dir.join("payout.secret"))?;
        let (btc, decimals) = ledger
            .btc()
            .ok_or("settlement: the exchange has no BTC asset")?;
        if decimals != 8 {
            return Err(format!(
                "settlement: BTC has {decimals} decimals here; settlement counts in satoshis (8)"
            ));
        }
        if store.cursor().map_err(sql)?.0.is_none() {
            // A new store starts from now: history before it is nobody's payout.
            store.set_cursor(ledger.last_seq()).map_err(sql)?;
        }
        Ok(Arc::new(Settlement {
            cfg,
            node,
            rail,
            ledger,
            onchain: OnceLock::new(),
            store: Mutex::new(store),
            secret,
            btc,
            dir,
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn set_onchain(&self, onchain: Arc<dyn OnChain>) {
        let _ = self.onchain.set(onchain);
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_error(&self, e: String) {
        tracing::warn!("settlement: {e}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// Starts the epoch thread (on `feed`) and the worker thread.
    pub fn start(self: &Arc<Self>, feed: Box<dyn EventFeed>) -> Result<(), String> {
        self.resume()?;
        let a = self.clone();
        let epochs = std::thread::Builder::new()
            .name("fulgur-epochs".into())
            .spawn(move || a.epoch_loop(feed))
            .map_err(|e| e.to_string())?;
        let b = self.clone();
        let worker = std::thread::Builder::new()
            .name("fulgur-payouts".into())
            .spawn(move || b.worker_loop())
            .map_err(|e| e.to_string())?;
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([epochs, worker]);
        Ok(())
    }

    /// Stops both threads (the node is stopped by its owner).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }

    // ----- epochs -----

    fn load_markets(&self, netter: &mut Netter, known: &mut Vec<bool>) {
        for (id, legs) in self.ledger.markets() {
            let i = id as usize;
            if known.len() <= i {
                known.resize(i + 1, false);
            }
            known[i] = true;
            netter.set_market(id, legs);
        }
    }

    fn epoch_loop(self: Arc<Self>, mut feed: Box<dyn EventFeed>) {
        let mut netter = Netter::new(self.btc, self.ledger.fee_account());
        let mut known = Vec::new();
        self.load_markets(&mut netter, &mut known);
        let (cursor, mut epoch) = match self.store().cursor() {
            Ok(c) => c,
            Err(e) => return self.set_error(sql(e)),
        };
        let mut covered = cursor.unwrap_or(0);
        let mut first = covered + 1;
        let mut last_close = Instant::now();
        let mut cursor_written = Instant::now();
        let period = Duration::from_millis(self.cfg.epoch_ms.max(1));
        while !self.stop.load(Ordering::Acquire) {
            let wait = period
                .saturating_sub(last_close.elapsed())
                .min(Duration::from_millis(50));
            let r = feed.poll(covered, wait, &mut |seq, ev| {
                if let Event::Trade { market, .. } = ev {
                    let m = *market as usize;
                    // A market added a moment ago may not be in the read model yet.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while !known.get(m).copied().unwrap_or(false) && Instant::now() < deadline {
                        self.load_markets(&mut netter, &mut known);
                        if !known.get(m).copied().unwrap_or(false) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    netter.on_trade(seq, ev);
                }
            });
            match r {
                Ok(seq) => covered = seq,
                Err(e) => {
                    self.set_error(format!("event stream: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            if last_close.elapsed() >= period {
                last_close = Instant::now();
                match self.close_epoch(&mut netter, epoch + 1, first, covered) {
                    Ok(true) => {
                        epoch += 1;
                        first = covered + 1;
                        cursor_written = Instant::now();
                    }
                    Ok(false) => {
                        // Nothing to record; an idle exchange still moves the cursor now and
                        // then, so a restart does not replay a long quiet stretch.
                        if cursor_written.elapsed() > Duration::from_secs(10) && first > covered {
                            let _ = self.store().set_cursor(covered);
                            cursor_written = Instant::now();
                        }
                        first = first.min(covered + 1);
                    }
                    Err(e) => self.set_error(format!("epoch {}: {e}", epoch + 1)),
                }
            }
        }
    }

    /// Closes the epoch of commands `first..=last`: nets, the record, the payout intents.
    /// `Ok(false)`: nothing happened that needs a record (no fill, nothing owed).
    fn close_epoch(
        &self,
        netter: &mut Netter,
        epoch: u64,
        first: u64,
        last: u64,
    ) -> Result<bool, String> {
        let owed = self.store().anyone_owed().map_err(sql)?;
        let (nets, imbalance) = match netter.close() {
            Ok(n) => (n, None),
            Err(e) => (Default::default(), Some(format!("{e:?}"))),
        };
        if nets.fills == 0 && !owed && imbalance.is_none() {
            return Ok(false);
        }
        if owed {
            // Bound first: the guard of a temporary would be held through `fallbacks`.
            let regs = self.store().registrations().map_err(sql)?;
            self.fallbacks(&regs);
        }
        let regs = self.store().registrations().map_err(sql)?;
        let busy: std::collections::HashSet<u32> = self
            .store()
            .open_payouts()
            .map_err(sql)?
            .iter()
            .map(|p| p.account)
            .collect();
        let net_of: HashMap<u32, i64> = nets.btc.iter().copied().collect();
        let mut payouts = Vec::new();
        for r in &regs {
            let net = net_of.get(&r.account).copied().unwrap_or(0);
            let owed = r.carry_sat as i128 + net as i128;
            let (amount, carry) = if owed <= 0 {
                (0, 0)
            } else if imbalance.is_some() || busy.contains(&r.account) {
                // Nothing is paid from an epoch that does not add up; an account whose
                // earlier payout is still going waits for it.
                (0, owed as u64)
            } else {
                let free = self.ledger.free(r.account, self.btc);
                let pay = (owed as u64).min(free);
                (pay, owed as u64 - pay)
            };
            if net != 0 || r.carry_sat != carry || amount > 0 {
                payouts.push((
                    r.account,
                    net,
                    r.carry_sat,
                    amount,
                    carry,
                    r.destination.clone(),
                ));
            }
        }
        let record = store::Epoch {
            epoch,
            first_seq: first,
            last_seq: last,
            closed_ms: now_ms(),
            fills: nets.fills,
            fills_root: hex::encode(nets.fills_root),
            fees_sat: nets.fees_btc,
            nets: nets.btc.clone(),
        };
        self.store()
            .record_epoch(&store::EpochRecord {
                epoch: &record,
                payouts,
            })
            .map_err(sql)?;
        if let Some(e) = imbalance {
            self.set_error(format!(
                "epoch {epoch} does not sum to zero ({e}): recorded, nothing paid"
            ));
        }
        fault("settlement-after-record");
        Ok(true)
    }

    /// Accounts whose payouts failed `max_payout_failures` times in a row and who gave an
    /// on-chain address: what they are owed goes out on chain.
    fn fallbacks(&self, regs: &[Registration]) {
        let Some(onchain) = self.onchain.get() else {
            return;
        };
        for r in regs {
            let (Some(address), true) = (
                &r.fallback_address,
                r.failures >= self.cfg.max_payout_failures && r.carry_sat > 0,
            ) else {
                continue;
            };
            let amount = r.carry_sat.min(self.ledger.free(r.account, self.btc));
            let last = self
                .store()
                .payouts_of_account(r.account, 1)
                .ok()
                .and_then(|p| p.first().map(|p| p.id))
                .unwrap_or(0);
            // One id per run of failures: a retry after a crash is refused by custody as a
            // duplicate instead of paying twice.
            let client_id = format!("settlement-{}-{last}", r.account);
            match onchain.withdraw(r.account, address, amount, &client_id) {
                Ok(_) => {}
                Err(e) if e.code == -4001 => {} // done before a crash
                Err(e) => {
                    self.set_error(format!(
                        "on-chain fallback of account {}: {}",
                        r.account, e.msg
                    ));
                    continue;
                }
            }
            tracing::info!(
                account = r.account,
                amount,
                "payouts failed {} times: paid on chain",
                r.failures
            );
            if let Err(e) = self.store().clear_carry(r.account) {
                self.set_error(sql(e));
            }
        }
    }

    // ----- the worker: node events, payouts, withdrawals -----

    fn worker_loop(self: Arc<Self>) {
        let mut waiting: HashMap<u64, Instant> = HashMap::new();
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.node_events() {
                self.set_error(e);
            }
            // Bound first: a temporary guard in a `match` would hold the store through it.
            let open = self.store().open_payouts();
            match open {
                Ok(open) => {
                    waiting.retain(|id, _| open.iter().any(|p| p.id == *id));
                    for p in open {
                        if let Err(e) = self.advance(&p, &mut waiting) {
                            self.set_error(format!("payout {}: {e}", p.id));
                        }
                    }
                }
                Err(e) => self.set_error(sql(e)),
            }
            if let Err(e) = self.sent_withdrawals() {
                self.set_error(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn part_request(&self, p: &Payout, idx: u32, amount_sat: u64) -> PartRequest {
        let tag = format!("fulgur:{}:{}:{idx}", p.epoch, p.account);
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(tag.as_bytes());
        PartRequest {
            tag,
            preimage: h.finalize().into(),
            amount_msat: amount_sat * 1000,
            destination: p.destination.clone(),
        }
    }

    /// Moves a payout along until it waits (a part in flight, no capacity yet) or ends.
    fn advance(&self, p: &Payout, waiting: &mut HashMap<u64, Instant>) -> Result<(), String> {
        loop {
            let parts = self.store().parts(p.id).map_err(sql)?;
            let paid: u64 = parts
                .iter()
                .filter(|x| x.state == part::PAID)
                .map(|x| x.amount_sat)
                .sum();
            let Some(last) = parts.last().filter(|x| x.state != part::PAID) else {
                if paid >= p.amount_sat {
                    self.store().payout_paid(p.id, p.account).map_err(sql)?;
                    tracing::info!(payout = p.id, account = p.account, paid, "payout paid");
                    return Ok(());
                }
                let limit_sat = self.rail.sendable_msat(&p.destination) / 1000;
                if limit_sat == 0 {
                    let since = *waiting.entry(p.id).or_insert_with(Instant::now);
                    if since.elapsed() < Duration::from_millis(self.cfg.capacity_wait_ms) {
                        return Ok(());
                    }
                    return self.roll_over(
                        p,
                        paid,
                        "no outbound capacity to the destination (peer offline, no channel, or no route)",
                    );
                }
                waiting.remove(&p.id);
                let amount = (p.amount_sat - paid).min(limit_sat);
                let idx = parts.len() as u32;
                self.store().insert_part(p.id, idx, amount).map_err(sql)?;
                continue;
            };
            let req = self.part_request(p, last.idx, last.amount_sat);
            let wid = PART_ID_BASE | last.id;
            match last.state.as_str() {
                part::NEW => {
                    let ev = self.ledger.submit(Command::WithdrawHold {
                        account: p.account,
                        asset: self.btc,
                        amount: last.amount_sat,
                        withdrawal: wid,
                    })?;
                    let (state, err) = match rejected(&ev) {
                        None | Some(RejectReason::DuplicateWithdrawal) => (part::HELD, None),
                        Some(r) => (
                            part::REFUSED,
                            Some(format!("the ledger refused the hold: {r:?}")),
                        ),
                    };
                    self.store()
                        .set_part(last.id, state, 0, err.as_deref())
                        .map_err(sql)?;
                }
                part::HELD => match self.rail.send(&req) {
                    Ok(()) => {
                        if std::env::var("FULGUR_FAULT").is_ok_and(|f| f == "settlement-after-send")
                        {
                            // The crash comes once ldk-node has persisted its channel state
                            // (it does so in the background, within milliseconds): a crash
                            // before that leaves a stale channel manager, which LDK answers
                            // by closing the channel, and the payment resolves on chain.
                            std::thread::sleep(Duration::from_millis(1000));
                        }
                        fault("settlement-after-send");
                        self.store()
                            .set_part(last.id, part::SENT, 0, None)
                            .map_err(sql)?;
                    }
                    Err(e) => self.release(last.id, wid, &e)?,
                },
                part::SENT => match self.rail.status(&req) {
                    PartStatus::Pending => return Ok(()),
                    PartStatus::Succeeded { fee_msat } => {
                        self.ledger
                            .submit(Command::WithdrawFinalize { withdrawal: wid })?;
                        self.store()
                            .set_part(last.id, part::PAID, fee_msat, None)
                            .map_err(sql)?;
                        fault("settlement-after-paid");
                    }
                    PartStatus::Failed(e) => self.release(last.id, wid, &e)?,
                    // Never reached the node (a crash before it recorded the send): the same
                    // preimage makes sending again safe.
                    PartStatus::Unknown => {
                        if let Err(e) = self.rail.send(&req) {
                            self.release(last.id, wid, &e)?;
                        }
                    }
                },
                part::FAILED | part::REFUSED => {
                    let why = last.error.clone().unwrap_or_default();
                    return self.roll_over(p, paid, &why);
                }
                other => return Err(format!("part {} in unknown state {other}", last.id)),
            }
        }
    }

    fn release(&self, part_id: u64, wid: u64, why: &str) -> Result<(), String> {
        self.ledger
            .submit(Command::WithdrawRelease { withdrawal: wid })?;
        self.store()
            .set_part(part_id, part::FAILED, 0, Some(why))
            .map_err(sql)
    }

    fn roll_over(&self, p: &Payout, paid: u64, why: &str) -> Result<(), String> {
        let unpaid = p.amount_sat - paid;
        tracing::warn!(
            payout = p.id,
            account = p.account,
            unpaid,
            "payout rolls into the next epoch: {why}"
        );
        self.store()
            .roll_over(p.id, p.account, unpaid, why)
            .map_err(sql)
    }

    // ----- Lightning deposits -----

    /// A BOLT11 invoice for a deposit of `amount_sat` to `account`.
    pub fn deposit_invoice(
        &self,
        account: AccountId,
        amount_sat: u64,
    ) -> Result<Value, SettleError> {
        let node = self.node()?;
        if amount_sat < self.cfg.deposit_min_sat || amount_sat > self.cfg.deposit_max_sat {
            return Err(SettleError::bad(
                -4022,
                format!(
                    "A Lightning deposit is between {} and {} BTC.",
                    btc_string(self.cfg.deposit_min_sat),
                    btc_string(self.cfg.deposit_max_sat)
                ),
            ));
        }
        let now = now_ms();
        let open = self
            .store()
            .count_open_invoices(now)
            .map_err(SettleError::internal)?;
        if open >= self.cfg.max_open_invoices {
            return Err(SettleError::new(
                429,
                -1003,
                "Too many open Lightning invoices; try again later.",
            ));
        }
        let inv = node
            .invoice(
                amount_sat * 1000,
                &format!("Fulgur deposit, account {account}"),
                self.cfg.invoice_expiry_secs,
            )
            .map_err(SettleError::internal)?;
        self.store()
            .insert_invoice(&store::Invoice {
                id: 0,
                payment_hash: hex::encode(inv.payment_hash),
                account,
                amount_msat: amount_sat * 1000,
                bolt11: inv.bolt11.clone(),
                created_ms: now,
                expires_ms: inv.expires_at_ms,
                state: store::invoice::OPEN.into(),
                received_msat: 0,
            })
            .map_err(SettleError::internal)?;
        Ok(json!({
            "address": inv.bolt11,
            "coin": "BTC",
            "tag": "",
            "url": "",
            "network": "LIGHTNING",
            "amount": btc_string(amount_sat),
            "paymentHash": hex::encode(inv.payment_hash),
            "expireTime": inv.expires_at_ms,
        }))
    }

    fn node(&self) -> Result<&LightningNode, SettleError> {
        self.node.as_deref().ok_or_else(|| {
            SettleError::bad(-4019, "Lightning is not enabled on this exchange (no [lightning] section in its configuration).")
        })
    }

    fn node_events(&self) -> Result<(), String> {
        let Some(node) = self.node.as_deref() else {
            return Ok(());
        };
        while let Some(ev) = node.next_event() {
            match ev {
                NodeEvent::PaymentReceived {
                    payment_hash,
                    amount_msat,
                } => {
                    // Not handled until credited: the node hands the event again after a
                    // restart or a refusal.
                    self.credit(&hex::encode(payment_hash), amount_msat)?;
                }
                NodeEvent::ChannelReady {
                    channel_id,
                    counterparty,
                } => tracing::info!(%channel_id, %counterparty, "channel ready"),
                NodeEvent::ChannelClosed {
                    channel_id, reason, ..
                } => tracing::warn!(%channel_id, %reason, "channel closed"),
                NodeEvent::PaymentFailed { reason, .. } => {
                    tracing::info!(%reason, "payment failed")
                }
                _ => {}
            }
            node.event_handled()?;
        }
        Ok(())
    }

    /// Credits a paid invoice, once: `DepositCredit` (refused as a duplicate if it was
    /// applied before a crash), then `DepositSettle` (a Lightning payment is final).
    fn credit(&self, hash: &str, received_msat: u64) -> Result<(), String> {
        let Some(inv) = self.store().invoice_by_hash(hash).map_err(sql)? else {
            tracing::warn!(hash, received_msat, "a payment to no deposit invoice");
            return Ok(());
        };
        let deposit = LN_DEPOSIT_ID_BASE | inv.id;
        if inv.state == store::invoice::OPEN {
            // The rounding rule: the ledger counts whole satoshis; msat beyond them (an
            // overpayment) stay with the exchange.
            let amount = received_msat / 1000;
            let ev = self.ledger.submit(Command::DepositCredit {
                deposit,
                account: inv.account,
                asset: self.btc,
                amount,
            })?;
            match rejected(&ev) {
                None | Some(RejectReason::DuplicateDeposit) => {}
                Some(r) => return Err(format!("deposit {hash} refused by the ledger: {r:?}")),
            }
            self.store()
                .set_invoice(inv.id, store::invoice::CREDITED, received_msat)
                .map_err(sql)?;
            tracing::info!(account = inv.account, amount, "Lightning deposit credited");
        }
        if inv.state != store::invoice::SETTLED {
            self.settle(inv.id, deposit, received_msat.max(inv.received_msat))?;
        }
        Ok(())
    }

    fn settle(&self, id: u64, deposit: u64, received_msat: u64) -> Result<(), String> {
        let ev = self.ledger.submit(Command::DepositSettle { deposit })?;
        match rejected(&ev) {
            None | Some(RejectReason::UnknownDeposit) => {}
            Some(r) => return Err(format!("deposit settle refused: {r:?}")),
        }
        self.store()
            .set_invoice(id, store::invoice::SETTLED, received_msat)
            .map_err(sql)
    }

    // ----- Lightning withdrawals -----

    /// Validates, stores, holds and sends a Lightning withdrawal; its id. Nothing is stored
    /// or held when the answer is an error.
    pub fn withdraw(&self, account: AccountId, r: &LnWithdrawRequest) -> Result<u64, SettleError> {
        let node = self.node()?;
        let illegal = |m: String| SettleError::bad(-4033, format!("Illegal address: {m}"));
        let address = r
            .address
            .trim()
            .trim_start_matches("lightning:")
            .to_string();
        let (amount_msat, target) = if address.to_ascii_lowercase().starts_with("lno") {
            let offer = node
                .decode_offer(&address)
                .map_err(|e| illegal(invoice_error(e)))?;
            let amount =
                match (offer.amount_msat, r.amount_sat) {
                    (_, None) => return Err(SettleError::bad(
                        -1102,
                        "Mandatory parameter 'amount' was not sent, was empty/null, or malformed.",
                    )),
                    (Some(o), Some(a)) if o != a * 1000 => {
                        return Err(SettleError::bad(
                            -1102,
                            format!(
                                "amount {} does not match the offer's amount {} BTC.",
                                btc_string(a),
                                msat_string(o)
                            ),
                        ))
                    }
                    (_, Some(a)) => a * 1000,
                };
            (amount, None)
        } else {
            let inv = node
                .decode_invoice(&address)
                .map_err(|e| illegal(invoice_error(e)))?;
            let amount = match (inv.amount_msat, r.amount_sat) {
                (Some(i), Some(a)) if i != a * 1000 => {
                    return Err(SettleError::bad(-1102, format!("amount {} does not match the invoice's amount {} BTC.", btc_string(a), msat_string(i))))
                }
                (Some(i), _) => i,
                (None, Some(a)) => a * 1000,
                (None, None) => return Err(SettleError::bad(-1102, "Mandatory parameter 'amount' was not sent, was empty/null, or malformed: the invoice names no amount.")),
            };
            match node.payment(&inv.payment_hash) {
                PartStatus::Pending | PartStatus::Succeeded { .. } => {
                    return Err(illegal("this invoice is already paid.".into()))
                }
                _ => {}
            }
            (amount, Some((inv.payment_hash, inv.amount_msat.is_some())))
        };
        // The ledger counts whole satoshis: a msat amount is held rounded up.
        let amount_sat = amount_msat.div_ceil(1000);
        if amount_sat < self.cfg.withdraw_min_sat {
            return Err(SettleError::bad(
                -4022,
                format!(
                    "Not less than the minimum pick-up quantity {}.",
                    btc_string(self.cfg.withdraw_min_sat)
                ),
            ));
        }
        if amount_sat > self.cfg.withdraw_max_sat {
            return Err(SettleError::bad(
                -4023,
                format!(
                    "The withdrawal exceeds the maximum amount {}.",
                    btc_string(self.cfg.withdraw_max_sat)
                ),
            ));
        }
        if let Some(c) = &r.client_id {
            if c.is_empty() || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SettleError::bad(-1100, "Illegal characters found in parameter 'withdrawOrderId'; legal range is '^[\\x21-\\x7e]{1,64}$'."));
            }
        }
        let fee = self.cfg.withdraw_fee_sat;
        let id = {
            let s = self.store();
            let queued = s
                .count_withdrawals_in(&[
                    store::withdrawal::REQUESTED,
                    store::withdrawal::HELD,
                    store::withdrawal::SENT,
                ])
                .map_err(SettleError::internal)?;
            if queued >= self.cfg.max_queued_withdrawals {
                return Err(SettleError::new(
                    429,
                    -1003,
                    "Too many Lightning withdrawals in flight; try again later.",
                ));
            }
            if let Some(c) = &r.client_id {
                if s.withdrawal_by_client_id(account, c)
                    .map_err(SettleError::internal)?
                    .is_some()
                {
                    return Err(SettleError::bad(
                        -4001,
                        format!("Invalid operation: withdrawOrderId {c} is already used."),
                    ));
                }
            }
            s.insert_withdrawal(&store::Withdrawal {
                id: 0,
                account,
                client_id: r.client_id.clone(),
                address: address.clone(),
                amount_sat,
                fee_sat: fee,
                payment_id: None,
                state: store::withdrawal::REQUESTED.into(),
                apply_ms: now_ms(),
                complete_ms: None,
                info: String::new(),
            })
            .map_err(SettleError::internal)?
        };
        let wid = LN_WITHDRAWAL_ID_BASE | id;
        let hold = amount_sat + fee;
        let ev = self
            .ledger
            .submit(Command::WithdrawHold {
                account,
                asset: self.btc,
                amount: hold,
                withdrawal: wid,
            })
            .map_err(|_| {
                SettleError::new(503, -1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown.")
            })?;
        let refuse = |e: SettleError| {
            let _ = self.store().delete_withdrawal(id);
            Err(e)
        };
        match rejected(&ev) {
            None | Some(RejectReason::DuplicateWithdrawal) => {}
            Some(RejectReason::InsufficientBalance) => {
                return refuse(SettleError::bad(-4026, "You have insufficient balance."))
            }
            Some(RejectReason::AccountFrozen) => {
                return refuse(SettleError::bad(
                    -4015,
                    "Withdraw is limited: the account is frozen until its deficit is covered.",
                ))
            }
            Some(r) => {
                return refuse(SettleError::bad(
                    -4000,
                    format!("Withdrawal refused by the ledger: {r:?}."),
                ))
            }
        }
        self.store()
            .set_withdrawal(id, store::withdrawal::HELD, None, None, "")
            .map_err(SettleError::internal)?;
        let sent = match target {
            // An invoice with its own amount is paid as it is.
            Some((_, true)) => node.pay_invoice(&address, None),
            Some((_, false)) => node.pay_invoice(&address, Some(amount_msat)),
            None => node.pay_offer(&address, amount_msat, &format!("fulgur:w:{id}")),
        };
        let failed = |why: &str, e: SettleError| {
            self.fail_withdrawal(id, why)
                .map_err(SettleError::internal)?;
            Err(e)
        };
        match sent {
            Ok(pid) => {
                self.store()
                    .set_withdrawal(
                        id,
                        store::withdrawal::SENT,
                        Some(&hex::encode(pid)),
                        None,
                        "",
                    )
                    .map_err(SettleError::internal)?;
                Ok(id)
            }
            Err(PayError::Duplicate) => failed(
                "this invoice is already paid",
                illegal("this invoice is already paid.".into()),
            ),
            Err(PayError::Invalid(e)) => failed(&e.to_string(), illegal(invoice_error(e.clone()))),
            Err(PayError::Amount(e)) => failed(&e, SettleError::bad(-1102, e.clone())),
            // Accepted, and failed at once (no route...): the history says why.
            Err(PayError::Failed(e)) => {
                self.fail_withdrawal(id, &e)
                    .map_err(SettleError::internal)?;
                Ok(id)
            }
        }
    }

    fn fail_withdrawal(&self, id: u64, why: &str) -> Result<(), String> {
        self.ledger.submit(Command::WithdrawRelease {
            withdrawal: LN_WITHDRAWAL_ID_BASE | id,
        })?;
        self.store()
            .set_withdrawal(id, store::withdrawal::FAILED, None, Some(now_ms()), why)
            .map_err(sql)
    }

    fn withdrawal_status(&self, w: &store::Withdrawal) -> PartStatus {
        let Some(node) = self.node.as_deref() else {
            return PartStatus::Unknown;
        };
        match &w.payment_id {
            Some(pid) => match hex::decode(pid).ok().and_then(|v| Hash32::try_from(v).ok()) {
                Some(h) => node.payment(&h),
                None => PartStatus::Unknown,
            },
            None if w.address.to_ascii_lowercase().starts_with("lno") => node
                .find_offer_payment(&format!("fulgur:w:{}", w.id))
                .map_or(PartStatus::Unknown, |(_, s)| s),
            None => node
                .decode_invoice(&w.address)
                .map_or(PartStatus::Unknown, |i| node.payment(&i.payment_hash)),
        }
    }

    /// Sent withdrawals: finalized once paid, released if the payment failed.
    fn sent_withdrawals(&self) -> Result<(), String> {
        let sent = self
            .store()
            .withdrawals_in(&[store::withdrawal::SENT])
            .map_err(sql)?;
        for w in sent {
            match self.withdrawal_status(&w) {
                PartStatus::Succeeded { .. } => {
                    self.ledger.submit(Command::WithdrawFinalize {
                        withdrawal: LN_WITHDRAWAL_ID_BASE | w.id,
                    })?;
                    self.store()
                        .set_withdrawal(
                            w.id,
                            store::withdrawal::CONFIRMED,
                            None,
                            Some(now_ms()),
                            "",
                        )
                        .map_err(sql)?;
                }
                PartStatus::Failed(e) => self.fail_withdrawal(w.id, &e)?,
                PartStatus::Pending | PartStatus::Unknown => {}
            }
        }
        Ok(())
    }

    /// After a restart: withdrawals a crash left before their send, and deposits credited
    /// but not settled.
    fn resume(&self) -> Result<(), String> {
        let open = self
            .store()
            .withdrawals_in(&[store::withdrawal::REQUESTED, store::withdrawal::HELD])
            .map_err(sql)?;
        for w in open {
            let wid = LN_WITHDRAWAL_ID_BASE | w.id;
            if w.state == store::withdrawal::REQUESTED {
                let ev = self.ledger.submit(Command::WithdrawHold {
                    account: w.account,
                    asset: self.btc,
                    amount: w.amount_sat + w.fee_sat,
                    withdrawal: wid,
                })?;
                if let Some(r) = rejected(&ev).filter(|r| *r != RejectReason::DuplicateWithdrawal) {
                    self.store()
                        .set_withdrawal(
                            w.id,
                            store::withdrawal::REJECTED,
                            None,
                            Some(now_ms()),
                            &format!("{r:?}"),
                        )
                        .map_err(sql)?;
                    continue;
                }
            }
            // Held: sent unless the node knows the payment already.
            match self.withdrawal_status(&w) {
                PartStatus::Unknown => {
                    let node = self.node.as_deref().ok_or("Lightning is off")?;
                    let sent = if w.address.to_ascii_lowercase().starts_with("lno") {
                        node.pay_offer(
                            &w.address,
                            w.amount_sat * 1000,
                            &format!("fulgur:w:{}", w.id),
                        )
                    } else {
                        node.pay_invoice(
                            &w.address,
                            Some(w.amount_sat * 1000).filter(|_| {
                                node.decode_invoice(&w.address)
                                    .map(|i| i.amount_msat.is_none())
                                    .unwrap_or(false)
                            }),
                        )
                    };
                    match sent {
                        Ok(pid) => self
                            .store()
                            .set_withdrawal(
                                w.id,
                                store::withdrawal::SENT,
                                Some(&hex::encode(pid)),
                                None,
                                "",
                            )
                            .map_err(sql)?,
                        Err(e) => self.fail_withdrawal(w.id, &format!("{e:?}"))?,
                    }
                }
                _ => self
                    .store()
                    .set_withdrawal(w.id, store::withdrawal::SENT, None, None, "")
                    .map_err(sql)?,
            }
        }
        let credited = self
            .store()
            .invoices_in(store::invoice::CREDITED)
            .map_err(sql)?;
        for inv in credited {
            self.settle(inv.id, LN_DEPOSIT_ID_BASE | inv.id, inv.received_msat)?;
        }
        Ok(())
    }

    pub fn deposit_history(
        &self,
        account: AccountId,
        page: Page,
    ) -> Result<Vec<store::Invoice>, SettleError> {
        self.store()
            .deposits_of(account, page)
            .map_err(SettleError::internal)
    }

    pub fn withdraw_history(
        &self,
        account: AccountId,
        client_id: Option<&str>,
        page: Page,
    ) -> Result<Vec<store::Withdrawal>, SettleError> {
        self.store()
            .withdrawals_of(account, client_id, page)
            .map_err(SettleError::internal)
    }

    // ----- self-custody registration -----

    /// Registers (or changes) an account's payout destination: from the next epoch on, its
    /// positive BTC nets are paid there.
    pub fn register(
        &self,
        account: AccountId,
        destination: Destination,
        fallback_address: Option<String>,
    ) -> Result<Registration, SettleError> {
        let bad = |m: String| SettleError::bad(-1130, m);
        match &destination {
            Destination::Node(id) => {
                let ok = id.len() == 66
                    && hex::decode(id).ok().is_some_and(|b| {
                        ldk_node::bitcoin::secp256k1::PublicKey::from_slice(&b).is_ok()
                    });
                if !ok {
                    return Err(bad(format!("Data sent for parameter 'destination' is not valid: not a node id (33 bytes, hex): {id}")));
                }
            }
            Destination::Offer(o) => {
                self.node()?.decode_offer(o).map_err(|e| {
                    bad(format!(
                        "Data sent for parameter 'destination' is not valid: {}",
                        invoice_error(e)
                    ))
                })?;
            }
        }
        let s = self.store();
        if s.registration(account)
            .map_err(SettleError::internal)?
            .is_none()
            && s.count_registrations().map_err(SettleError::internal)? >= self.cfg.max_registrations
        {
            return Err(SettleError::new(
                429,
                -1003,
                "Too many self-custody accounts on this exchange.",
            ));
        }
        s.register(&Registration {
            account,
            destination,
            fallback_address,
            registered_ms: now_ms(),
            carry_sat: 0,
            failures: 0,
        })
        .map_err(SettleError::internal)?;
        s.registration(account)
            .map_err(SettleError::internal)?
            .ok_or_else(|| SettleError::internal("registration vanished"))
    }

    pub fn registration(&self, account: AccountId) -> Result<Option<Registration>, SettleError> {
        self.store()
            .registration(account)
            .map_err(SettleError::internal)
    }

    /// Opts out; refused while a payout of the account is under way.
    pub fn unregister(&self, account: AccountId) -> Result<bool, SettleError> {
        let s = self.store();
        if s.open_payouts()
            .map_err(SettleError::internal)?
            .iter()
            .any(|p| p.account == account)
        {
            return Err(SettleError::bad(
                -1130,
                "A payout of this account is under way; try again after it completes.",
            ));
        }
        s.unregister(account).map_err(SettleError::internal)
    }

    // ----- reports -----

    fn payout_json(&self, p: &Payout) -> Result<Value, String> {
        let parts = self.store().parts(p.id).map_err(sql)?;
        Ok(json!({
            "account": p.account,
            "netSat": p.net_sat,
            "carryInSat": p.carry_in_sat,
            "amountSat": p.amount_sat,
            "paidSat": p.paid_sat,
            "feeMsat": p.fee_msat,
            "destination": p.destination,
            "state": p.state,
            "error": p.error,
            "parts": parts.iter().map(|x| json!({
                "index": x.idx, "amountSat": x.amount_sat, "state": x.state,
                "feeMsat": x.fee_msat, "error": x.error,
            })).collect::<Vec<_>>(),
        }))
    }

    /// An epoch's report: the record and its payouts. `account`: only that account's net
    /// and payout (what an account sees of it); `None`: everything (the operator's view).
    pub fn epoch_report(
        &self,
        e: &store::Epoch,
        account: Option<AccountId>,
    ) -> Result<Value, String> {
        let payouts = self.store().payouts_of_epoch(e.epoch).map_err(sql)?;
        let payouts: Vec<&Payout> = payouts
            .iter()
            .filter(|p| account.is_none_or(|a| a == p.account))
            .collect();
        let mut v = json!({
            "epoch": e.epoch,
            "firstSeq": e.first_seq,
            "lastSeq": e.last_seq,
            "closeTime": e.closed_ms,
            "fills": e.fills,
            "fillsRoot": e.fills_root,
            "feesSat": e.fees_sat,
            "payouts": payouts.iter().map(|p| self.payout_json(p)).collect::<Result<Vec<_>, _>>()?,
            "paidSat": payouts.iter().map(|p| p.paid_sat).sum::<u64>(),
            "feeMsat": payouts.iter().map(|p| p.fee_msat).sum::<u64>(),
            "failures": payouts.iter().filter(|p| p.state == payout::ROLLED).count(),
        });
        match account {
            None => {
                v["nets"] = json!(e
                    .nets
                    .iter()
                    .map(|(a, n)| json!({"account": a, "netSat": n}))
                    .collect::<Vec<_>>())
            }
            Some(a) => {
                v["netSat"] = json!(e.nets.iter().find(|(x, _)| *x == a).map_or(0, |(_, n)| *n))
            }
        }
        Ok(v)
    }

    /// Epochs newest first (`before`: epoch numbers below it), at most `limit`.
    pub fn report(
        &self,
        before: Option<u64>,
        limit: u32,
        account: Option<AccountId>,
    ) -> Result<Value, String> {
        let epochs = self.store().epochs(before, limit).map_err(sql)?;
        let list = epochs
            .iter()
            .map(|e| self.epoch_report(e, account))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::Array(list))
    }

    pub fn epoch(&self, n: u64) -> Result<Option<store::Epoch>, String> {
        self.store().epoch(n).map_err(sql)
    }

    /// The operator's view: the node, its channels, the cursor, what is in flight.
    pub fn status(&self) -> Value {
        let s = self.store();
        let (cursor, epoch) = s.cursor().unwrap_or((None, 0));
        let open = s.open_payouts().map(|p| p.len()).unwrap_or(0);
        let registrations = s.count_registrations().unwrap_or(0);
        drop(s);
        let mut v = json!({
            "epoch": epoch,
            "cursorSeq": cursor,
            "openPayouts": open,
            "selfCustodyAccounts": registrations,
            "lastError": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        });
        if let Some(n) = self.node.as_deref() {
            let (total, spendable) = n.onchain_balance_sat();
            v["node"] = json!({
                "nodeId": n.node_id(),
                "listen": n.listen_addresses(),
                "network": n.network().to_string(),
                "onchainSat": total,
                "onchainSpendableSat": spendable,
                "lightningMsat": n.lightning_balance_msat(),
                "channels": n.channels(),
            });
        }
        v
    }
}

fn msat_string(msat: u64) -> String {
    if msat.is_multiple_of(1000) {
        btc_string(msat / 1000)
    } else {
        format!("{} (+{} msat)", btc_string(msat / 1000), msat % 1000)
    }
}

fn invoice_error(e: InvoiceError) -> String {
    match e {
        InvoiceError::Malformed(m) => format!("not a BOLT11 invoice or BOLT12 offer ({m})."),
        InvoiceError::WrongNetwork { invoice, node } => {
            format!("an invoice of network {invoice}; this exchange's Lightning node is on {node}.")
        }
        InvoiceError::Expired => "the invoice has expired.".into(),
        InvoiceError::UnsupportedCurrency => {
            "the offer is priced in a currency other than bitcoin.".into()
        }
    }
}

/// The payout secret: 32 random bytes, made once (mode 0600).
fn load_secret(path: &Path) -> Result<Hash32, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return hex::decode(text.trim())
            .ok()
            .and_then(|v| Hash32::try_from(v).ok())
            .ok_or_else(|| format!("{}: not 32 bytes of hex", path.display()));
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(hex::encode(b).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    Ok(b)
}
