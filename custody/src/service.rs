//! The custody service: a thread that polls bitcoind, credits and reverses deposits,
//! and sends withdrawal batches; and the calls the API makes (addresses, withdrawals,
//! history).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bdk_bitcoind_rpc::bitcoincore_rpc::{Client, RpcApi};
use bdk_wallet::bitcoin::{Address, Amount, FeeRate, Psbt, Transaction, Txid};
use bdk_wallet::KeychainKind;
use fulgur_engine::{AccountId, AssetId, Command, Event, RejectReason};

use crate::keys::{self, Descriptors};
use crate::store::{self, deposit, withdrawal, Page, Store};
use crate::wallets::{self, SyncedWallet};
use crate::{btc_string, now_ms, parse_btc, CustodyConfig, CustodyError, Ledger};

/// A withdrawal request, as the API received it.
#[derive(Clone, Debug, Default)]
pub struct WithdrawRequest {
    pub coin: String,
    pub network: Option<String>,
    pub address: String,
    pub amount: String,
    /// Binance `withdrawOrderId`: unique per account.
    pub client_id: Option<String>,
    /// Binance `transactionFeeFlag`: the fee comes out of `amount` instead of on top.
    pub fee_from_amount: bool,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) rpc: Arc<Client>,
    pub(crate) deposit: SyncedWallet,
    pub(crate) hot: SyncedWallet,
    pub(crate) cold: SyncedWallet,
    last_batch_ms: u64,
}

/// The custody service of one data directory.
pub struct Custody {
    pub cfg: CustodyConfig,
    ledger: Arc<dyn Ledger>,
    btc: AssetId,
    dir: PathBuf,
    pub descriptors: Descriptors,
    inner: Mutex<Inner>,
    stopping: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last error of the chain loop (bitcoind unreachable...), for the operator.
    pub last_error: Mutex<Option<String>>,
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

fn sql(e: rusqlite::Error) -> String {
    format!("custody store: {e}")
}

fn rejected(events: &[Event]) -> Option<RejectReason> {
    events.iter().find_map(|e| match e {
        Event::CommandRejected { reason } => Some(*reason),
        _ => None,
    })
}

impl Custody {
    /// Opens the custody state under `<data_dir>/custody` (making keys and wallets on the
    /// first start) and reconnects every unfinished batch to the wallets.
    pub fn open(
        cfg: CustodyConfig,
        data_dir: &Path,
        ledger: Arc<dyn Ledger>,
    ) -> Result<Arc<Custody>, String> {
        let (btc, decimals) = ledger
            .asset("BTC")
            .ok_or("custody: the ledger has no BTC asset")?;
        if decimals != 8 {
            return Err(format!(
                "custody: the ledger's BTC has {decimals} decimals; custody counts satoshis (8)"
            ));
        }
        let dir = data_dir.join("custody");
        let descriptors = keys::init(&dir, cfg.network)?;
        let store = Store::open(&dir.join("custody.sqlite"))?;
        let rpc = wallets::rpc_client(&cfg.rpc_url, &cfg.rpc_auth)?;
        let birth = match store.meta("birth_height").map_err(sql)? {
            Some(h) => h.parse().map_err(|_| "custody store: bad birth_height")?,
            None => {
                let h = wallets::node_height(&rpc)?;
                store
                    .set_meta("birth_height", &h.to_string())
                    .map_err(sql)?;
                h
            }
        };
        let open = |name, d| SyncedWallet::open(&dir, name, d, cfg.network, rpc.clone(), birth);
        let mut deposit = open("deposit", &descriptors.deposit)?;
        let mut hot = open("hot", &descriptors.hot)?;
        let mut cold = open("cold", &descriptors.cold)?;
        // An address handed out before a crash that the wallet had not persisted.
        if let Some(max) = store.max_address_index().map_err(sql)? {
            let _ = deposit
                .wallet
                .reveal_addresses_to(KeychainKind::External, max)
                .count();
            deposit.persist()?;
        }
        // Batches signed before a restart spend what they spend, broadcast or not yet.
        for b in store.open_batches().map_err(sql)? {
            let tx: Transaction =
                bdk_wallet::bitcoin::consensus::encode::deserialize_hex(&b.raw_hex)
                    .map_err(|e| format!("custody store: batch {}: {e}", b.id))?;
            for w in [&mut deposit, &mut hot, &mut cold] {
                w.insert_unconfirmed(&tx)?;
            }
        }
        Ok(Arc::new(Custody {
            cfg,
            ledger,
            btc,
            dir,
            descriptors,
            inner: Mutex::new(Inner {
                store,
                rpc,
                deposit,
                hot,
                cold,
                last_batch_ms: now_ms(),
            }),
            stopping: AtomicBool::new(false),
            thread: Mutex::new(None),
            last_error: Mutex::new(None),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn key_dir(&self) -> &Path {
        &self.dir
    }

    pub fn btc(&self) -> AssetId {
        self.btc
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Starts the chain loop.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        let h = std::thread::Builder::new()
            .name("fulgur-custody".into())
            .spawn(move || {
                while !me.stopping.load(Ordering::Acquire) {
                    let r = me.tick();
                    let mut last = me.last_error.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok(()) => *last = None,
                        Err(e) => {
                            if last.as_deref() != Some(&e) {
                                tracing::warn!("custody: {e}");
                            }
                            *last = Some(e);
                        }
                    }
                    drop(last);
                    let mut slept = 0;
                    while slept < me.cfg.poll_interval_ms && !me.stopping.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(10));
                        slept += 10;
                    }
                }
            })
            .expect("spawn the custody thread");
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// Stops the chain loop (the step under way completes).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    /// One round: sync, deposits, withdrawals, and a batch when its window is over.
    pub fn tick(&self) -> Result<(), String> {
        let mut g = self.lock();
        let inner = &mut *g;
        for w in [&mut inner.deposit, &mut inner.hot, &mut inner.cold] {
            w.sync()?;
        }
        self.deposits(inner)?;
        self.requested(inner)?;
        self.batches(inner)?;
        if now_ms().saturating_sub(inner.last_batch_ms) >= self.cfg.batch_window_ms {
            inner.last_batch_ms = now_ms();
            self.make_batch(inner)?;
        }
        Ok(())
    }

    // ----- deposits -----

    fn deposits(&self, inner: &mut Inner) -> Result<(), String> {
        let mut seen = HashSet::new();
        let outputs: Vec<_> = inner
            .deposit
            .wallet
            .list_output()
            .filter(|o| o.keychain == KeychainKind::External)
            .collect();
        for o in outputs {
            let Some(account) = inner
                .store
                .account_of_index(o.derivation_index)
                .map_err(sql)?
            else {
                continue; // an address never handed out (the lookahead window)
            };
            let txid = o.outpoint.txid.to_string();
            let address = Address::from_script(&o.txout.script_pubkey, self.cfg.network)
                .map(|a| a.to_string())
                .unwrap_or_default();
            inner
                .store
                .insert_deposit(
                    &txid,
                    o.outpoint.vout,
                    account,
                    o.txout.value.to_sat(),
                    &address,
                    now_ms(),
                )
                .map_err(sql)?;
            seen.insert((txid.clone(), o.outpoint.vout));
            let confs = inner.deposit.confirmations(&o.chain_position);
            if let Some(d) = inner
                .store
                .deposit_by_outpoint(&txid, o.outpoint.vout)
                .map_err(sql)?
            {
                self.deposit_step(inner, &d, Some(confs))?;
            }
        }
        // Deposits the wallet no longer sees at all: replaced by a double spend.
        for d in inner.store.open_deposits().map_err(sql)? {
            if !seen.contains(&(d.txid.clone(), d.vout)) {
                self.deposit_step(inner, &d, None)?;
            }
        }
        Ok(())
    }

    /// Moves one deposit along; `confs` None = not in the chain nor in the mempool.
    fn deposit_step(
        &self,
        inner: &Inner,
        d: &store::Deposit,
        confs: Option<u32>,
    ) -> Result<(), String> {
        let c = confs.unwrap_or(0);
        match d.state.as_str() {
            deposit::PENDING | deposit::DROPPED => {
                if c >= self.cfg.confirmations {
                    let ev = self.ledger.submit(Command::DepositCredit {
                        deposit: d.id,
                        account: d.account,
                        asset: self.btc,
                        amount: d.amount_sat,
                    })?;
                    match rejected(&ev) {
                        None | Some(RejectReason::DuplicateDeposit) => {
                            inner
                                .store
                                .set_deposit(d.id, deposit::CREDITED, c)
                                .map_err(sql)?;
                            tracing::info!(
                                id = d.id,
                                account = d.account,
                                sat = d.amount_sat,
                                "deposit credited"
                            );
                        }
                        Some(r) => return Err(format!("deposit {} not credited: {r:?}", d.id)),
                    }
                } else {
                    let state = if confs.is_none() {
                        deposit::DROPPED
                    } else {
                        deposit::PENDING
                    };
                    if state != d.state || c != d.confirmations {
                        inner.store.set_deposit(d.id, state, c).map_err(sql)?;
                    }
                }
            }
            deposit::CREDITED => {
                if c == 0 {
                    // A reorg took it out of the chain: the ledger gives it back.
                    let ev = self
                        .ledger
                        .submit(Command::DepositReverse { deposit: d.id })?;
                    match rejected(&ev) {
                        None | Some(RejectReason::UnknownDeposit) => {
                            let state = if confs.is_none() {
                                deposit::DROPPED
                            } else {
                                deposit::PENDING
                            };
                            inner.store.set_deposit(d.id, state, 0).map_err(sql)?;
                            inner.store.count_reversal(d.id).map_err(sql)?;
                            tracing::warn!(
                                id = d.id,
                                account = d.account,
                                "credited deposit left the chain: reversed"
                            );
                        }
                        Some(r) => return Err(format!("deposit {} not reversed: {r:?}", d.id)),
                    }
                } else if c >= self.cfg.final_confirmations {
                    let ev = self
                        .ledger
                        .submit(Command::DepositSettle { deposit: d.id })?;
                    match rejected(&ev) {
                        None | Some(RejectReason::UnknownDeposit) => inner
                            .store
                            .set_deposit(d.id, deposit::SETTLED, c)
                            .map_err(sql)?,
                        Some(r) => return Err(format!("deposit {} not settled: {r:?}", d.id)),
                    }
                } else if c != d.confirmations {
                    inner
                        .store
                        .set_deposit(d.id, deposit::CREDITED, c)
                        .map_err(sql)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The account's deposit address (made on first request).
    pub fn deposit_address(&self, account: AccountId) -> Result<String, CustodyError> {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some((_, a)) = inner
            .store
            .address_of(account)
            .map_err(CustodyError::internal)?
        {
            return Ok(a);
        }
        let info = inner
            .deposit
            .wallet
            .reveal_next_address(KeychainKind::External);
        // The row first: an index revealed but not stored is just skipped after a crash.
        inner
            .store
            .insert_address(account, info.index, &info.address.to_string())
            .map_err(CustodyError::internal)?;
        inner.deposit.persist().map_err(CustodyError::internal)?;
        Ok(info.address.to_string())
    }

    pub fn deposit_history(
        &self,
        account: AccountId,
        page: Page,
    ) -> Result<Vec<store::Deposit>, CustodyError> {
        self.lock()
            .store
            .deposits_of(account, page)
            .map_err(CustodyError::internal)
    }

    // ----- withdrawals -----

    fn parse_address(&self, text: &str) -> Result<Address, CustodyError> {
        let bad = |msg: String| CustodyError::new(400, -4033, msg);
        Address::from_str(text)
            .map_err(|_| bad("Illegal address.".into()))?
            .require_network(self.cfg.network)
            .map_err(|_| {
                bad(format!(
                    "Illegal address: not an address of this exchange's network ({}).",
                    self.cfg.network
                ))
            })
    }

    /// An address of this exchange's network, normalized; -4033 otherwise.
    pub fn check_address(&self, text: &str) -> Result<String, CustodyError> {
        self.parse_address(text).map(|a| a.to_string())
    }

    /// Validates, stores and holds a withdrawal; its id. Nothing is stored or held when
    /// the answer is an error, except -1007 (the ledger's answer was not seen: the request
    /// is kept and completed by the chain loop).
    pub fn withdraw(&self, account: AccountId, r: &WithdrawRequest) -> Result<u64, CustodyError> {
        let bad = |code, msg: String| CustodyError::new(400, code, msg);
        if r.coin != "BTC" {
            return Err(bad(-4018, "We don't have this asset.".into()));
        }
        if let Some(n) = &r.network {
            if n != "BTC" {
                return Err(bad(
                    -4019,
                    format!(
                        "Current asset is not open for withdrawal on network {n}; use network BTC."
                    ),
                ));
            }
        }
        let amount = parse_btc(&r.amount).ok_or_else(|| {
            bad(
                -4021,
                "Asset withdrawal must be an 0.00000001 multiple of 0.00000001.".into(),
            )
        })?;
        let address = self.parse_address(&r.address)?;
        if let Some(c) = &r.client_id {
            if c.is_empty() || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(-1100, "Illegal characters found in parameter 'withdrawOrderId'; legal range is '^[\\x21-\\x7e]{1,64}$'.".into()));
            }
        }
        let fee = self.cfg.withdraw_fee_sat;
        let (send, hold) = if r.fee_from_amount {
            if amount <= fee {
                return Err(bad(
                    -4028,
                    "The amount of withdrawal must be greater than the Commission.".into(),
                ));
            }
            (amount - fee, amount)
        } else {
            (
                amount,
                amount
                    .checked_add(fee)
                    .ok_or_else(|| bad(-4023, "Amount too large.".into()))?,
            )
        };
        let dust = address.script_pubkey().minimal_non_dust().to_sat();
        let min = self.cfg.withdraw_min_sat.max(dust);
        if send < min {
            return Err(bad(
                -4022,
                format!(
                    "Not less than the minimum pick-up quantity {}.",
                    btc_string(min)
                ),
            ));
        }
        if send > self.cfg.withdraw_max_sat {
            return Err(bad(
                -4023,
                format!(
                    "The withdrawal exceeds the maximum amount {}.",
                    btc_string(self.cfg.withdraw_max_sat)
                ),
            ));
        }
        let g = self.lock();
        let queued = g
            .store
            .count_withdrawals_in(withdrawal::HELD)
            .map_err(CustodyError::internal)?;
        if queued >= self.cfg.max_queued_withdrawals as u64 {
            return Err(CustodyError::new(
                429,
                -1003,
                "Too many withdrawals waiting for the next batch; try again later.",
            ));
        }
        let id = g
            .store
            .insert_withdrawal(
                account,
                r.client_id.as_deref(),
                &address.to_string(),
                send,
                fee,
                hold,
                now_ms(),
            )
            .map_err(CustodyError::internal)?
            .ok_or_else(|| {
                bad(
                    -4001,
                    format!(
                        "Invalid operation: withdrawOrderId {} is already used.",
                        r.client_id.as_deref().unwrap_or("")
                    ),
                )
            })?;
        self.hold(&g, id, account, hold, true).map(|()| id)
    }

    /// Sends `WithdrawHold` for a stored request and records the answer. A refusal while
    /// the client waits (`from_api`) removes the request: the client has its error.
    fn hold(
        &self,
        inner: &Inner,
        id: u64,
        account: AccountId,
        hold: u64,
        from_api: bool,
    ) -> Result<(), CustodyError> {
        let ev = self
            .ledger
            .submit(Command::WithdrawHold {
                account,
                asset: self.btc,
                amount: hold,
                withdrawal: id,
            })
            .map_err(|_| {
                CustodyError::new(
                    503,
                    -1007,
                    "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
                )
            })?;
        let set = |state, info: &str| {
            if from_api && state == withdrawal::REJECTED {
                return inner
                    .store
                    .delete_withdrawal(id)
                    .map_err(CustodyError::internal);
            }
            inner
                .store
                .set_withdrawal(id, state, None, info)
                .map_err(CustodyError::internal)
        };
        match rejected(&ev) {
            None | Some(RejectReason::DuplicateWithdrawal) => set(withdrawal::HELD, ""),
            Some(RejectReason::InsufficientBalance) => {
                set(withdrawal::REJECTED, "insufficient balance")?;
                Err(CustodyError::new(
                    400,
                    -4026,
                    "You have insufficient balance.",
                ))
            }
            Some(RejectReason::AccountFrozen) => {
                set(withdrawal::REJECTED, "account frozen")?;
                Err(CustodyError::new(
                    400,
                    -4015,
                    "Withdraw is limited: the account is frozen until its deficit is covered.",
                ))
            }
            Some(r) => {
                set(withdrawal::REJECTED, &format!("{r:?}"))?;
                Err(CustodyError::new(
                    400,
                    -4000,
                    format!("Withdrawal refused by the ledger: {r:?}."),
                ))
            }
        }
    }

    /// Requests whose hold was never answered (a crash, a timeout): hold them now.
    fn requested(&self, inner: &mut Inner) -> Result<(), String> {
        for w in inner
            .store
            .withdrawals_in(withdrawal::REQUESTED)
            .map_err(sql)?
        {
            match self.hold(inner, w.id, w.account, w.hold_sat, false) {
                Ok(()) => {}
                Err(e) if e.code == -1007 => {
                    return Err("ledger busy: withdrawal holds wait".into())
                }
                Err(_) => {} // recorded as rejected
            }
        }
        Ok(())
    }

    pub fn withdraw_history(
        &self,
        account: AccountId,
        client_id: Option<&str>,
        page: Page,
    ) -> Result<Vec<store::Withdrawal>, CustodyError> {
        self.lock()
            .store
            .withdrawals_of(account, client_id, page)
            .map_err(CustodyError::internal)
    }

    fn fee_rate(&self, rpc: &Client) -> FeeRate {
        let est = rpc
            .estimate_smart_fee(6, None)
            .ok()
            .and_then(|r| r.fee_rate)
            // BTC per kvB → sat per kwu.
            .map(|per_kvb| FeeRate::from_sat_per_kwu(per_kvb.to_sat() / 4));
        est.filter(|r| *r >= FeeRate::BROADCAST_MIN)
            .unwrap_or_else(|| {
                FeeRate::from_sat_per_vb(self.cfg.fallback_fee_sat_per_vb)
                    .unwrap_or(FeeRate::BROADCAST_MIN)
            })
    }

    /// One transaction paying every held withdrawal (up to the per-batch limit), sweeping
    /// confirmed deposits into the hot wallet and the excess over the ceiling to cold.
    fn make_batch(&self, inner: &mut Inner) -> Result<(), String> {
        let mut held = inner.store.withdrawals_in(withdrawal::HELD).map_err(sql)?;
        // A reorg took back a deposit such an account had already spent: what it asked to
        // withdraw stays held (not paid out of the exchange's coins) until it is covered.
        held.retain(|w| !self.ledger.is_frozen(w.account));
        held.truncate(self.cfg.max_outputs_per_batch as usize);
        let n = self.cfg.confirmations;
        let sweep: Vec<_> = inner
            .deposit
            .wallet
            .list_unspent()
            .filter(|u| inner.deposit.confirmations(&u.chain_position) >= n)
            .collect();
        let hot_sat = inner.hot.wallet.balance().total().to_sat();
        let sweep_sat: u64 = sweep.iter().map(|u| u.txout.value.to_sat()).sum();
        let out_sat: u64 = held.iter().map(|w| w.amount_sat).sum();
        let after = (hot_sat + sweep_sat).saturating_sub(out_sat);
        let ceiling = self.cfg.hot_wallet_ceiling_sat;
        let to_cold = if after > ceiling {
            after - ceiling / 2
        } else {
            0
        };
        if held.is_empty() && to_cold == 0 {
            return Ok(());
        }
        let rate = self.fee_rate(&inner.rpc);
        let cold_spk = (to_cold > 0).then(|| {
            let a = inner
                .cold
                .wallet
                .reveal_next_address(KeychainKind::External);
            a.address.script_pubkey()
        });
        if cold_spk.is_some() {
            inner.cold.persist()?;
        }
        let mut inputs = Vec::new();
        for u in &sweep {
            let input = inner
                .deposit
                .wallet
                .get_psbt_input(u.clone(), None, true)
                .map_err(|e| format!("deposit input: {e}"))?;
            let weight = inner
                .deposit
                .wallet
                .public_descriptor(u.keychain)
                .max_weight_to_satisfy()
                .map_err(|e| e.to_string())?;
            inputs.push((u.outpoint, input, weight));
        }
        let psbt = {
            let mut b = inner.hot.wallet.build_tx();
            for w in &held {
                let a = Address::from_str(&w.address)
                    .map_err(|e| e.to_string())?
                    .assume_checked();
                b.add_recipient(a.script_pubkey(), Amount::from_sat(w.amount_sat));
            }
            if let Some(spk) = cold_spk {
                b.add_recipient(spk, Amount::from_sat(to_cold));
            }
            for (op, input, weight) in inputs {
                b.add_foreign_utxo(op, input, weight)
                    .map_err(|e| format!("deposit input: {e}"))?;
            }
            b.fee_rate(rate).only_witness_utxo();
            match b.finish() {
                Ok(p) => p,
                Err(e) => {
                    return Err(format!(
                        "batch of {} withdrawals waits: {e} (hot {hot_sat} sat + deposits {sweep_sat} sat; refill the hot wallet from cold)",
                        held.len()
                    ))
                }
            }
        };
        inner.hot.persist()?;
        let tx = self.sign_hot(psbt)?;
        let fee = {
            let ins: u64 = inner_prevouts_value(inner, &tx);
            let outs: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
            ins.saturating_sub(outs)
        };
        let txid = tx.compute_txid();
        let ids: Vec<u64> = held.iter().map(|w| w.id).collect();
        // Stored before anything else knows of it: from here these withdrawals are paid by
        // this transaction or by none.
        inner
            .store
            .insert_batch(
                &txid.to_string(),
                &bdk_wallet::bitcoin::consensus::encode::serialize_hex(&tx),
                fee,
                &ids,
                now_ms(),
            )
            .map_err(sql)?;
        for w in [&mut inner.deposit, &mut inner.hot, &mut inner.cold] {
            w.insert_unconfirmed(&tx)?;
        }
        tracing::info!(%txid, withdrawals = ids.len(), swept = sweep.len(), to_cold, fee, "batch signed");
        fault("custody-after-sign");
        self.batches(inner)
    }

    /// Signs with the hot signer's keys (hot and deposit), finalises, checks every input.
    fn sign_hot(&self, mut psbt: Psbt) -> Result<Transaction, String> {
        for name in [keys::HOT, keys::DEPOSIT] {
            let key = keys::read_key(&keys::key_path(&self.dir, name))?;
            wallets::sign(&mut psbt, &key);
        }
        wallets::finalize(psbt)
    }

    /// Broadcasts signed batches, and finalizes (or fails) broadcast ones.
    fn batches(&self, inner: &mut Inner) -> Result<(), String> {
        for b in inner.store.open_batches().map_err(sql)? {
            let txid = Txid::from_str(&b.txid).map_err(|e| e.to_string())?;
            let confs = [&inner.deposit, &inner.hot, &inner.cold]
                .iter()
                .filter_map(|w| {
                    w.wallet
                        .get_tx(txid)
                        .map(|t| w.confirmations(&t.chain_position))
                })
                .max();
            if confs.unwrap_or(0) >= self.cfg.confirmations {
                for w in inner.store.withdrawals_of_batch(b.id).map_err(sql)? {
                    if w.state == withdrawal::CONFIRMED {
                        continue;
                    }
                    let ev = self
                        .ledger
                        .submit(Command::WithdrawFinalize { withdrawal: w.id })?;
                    match rejected(&ev) {
                        None | Some(RejectReason::UnknownWithdrawal) => inner
                            .store
                            .set_withdrawal(w.id, withdrawal::CONFIRMED, Some(now_ms()), "")
                            .map_err(sql)?,
                        Some(r) => return Err(format!("withdrawal {} not finalized: {r:?}", w.id)),
                    }
                }
                inner.store.set_batch(b.id, "confirmed").map_err(sql)?;
                tracing::info!(txid = %b.txid, "batch confirmed");
                continue;
            }
            if confs.unwrap_or(0) > 0 {
                continue; // in the chain, not deep enough yet
            }
            // Not in a block: (re)broadcast. bitcoind answers "already known" with an error
            // code we take as success.
            let tx: Transaction =
                bdk_wallet::bitcoin::consensus::encode::deserialize_hex(&b.raw_hex)
                    .map_err(|e| e.to_string())?;
            match inner.rpc.send_raw_transaction(&tx) {
                Ok(_) => {}
                Err(e) => {
                    let s = e.to_string();
                    if s.contains("already") || s.contains("txn-already-known") {
                        // fine: in the mempool (or a block we have not synced yet)
                    } else if s.contains("missingorspent")
                        || s.contains("missing-inputs")
                        || s.contains("conflict")
                    {
                        self.fail_batch(inner, &b, &s)?;
                        continue;
                    } else {
                        return Err(format!("broadcast {}: {s}", b.txid));
                    }
                }
            }
            if b.state == "signed" {
                inner.store.set_batch(b.id, "broadcast").map_err(sql)?;
                tracing::info!(txid = %b.txid, "batch broadcast");
                fault("custody-after-broadcast");
            }
        }
        Ok(())
    }

    /// A batch that can never confirm (its inputs are spent elsewhere): its withdrawals go
    /// back to their accounts.
    fn fail_batch(&self, inner: &mut Inner, b: &store::Batch, why: &str) -> Result<(), String> {
        tracing::error!(txid = %b.txid, why, "batch failed: releasing its withdrawals");
        for w in inner.store.withdrawals_of_batch(b.id).map_err(sql)? {
            let ev = self
                .ledger
                .submit(Command::WithdrawRelease { withdrawal: w.id })?;
            match rejected(&ev) {
                None | Some(RejectReason::UnknownWithdrawal) => inner
                    .store
                    .set_withdrawal(w.id, withdrawal::FAILED, Some(now_ms()), why)
                    .map_err(sql)?,
                Some(r) => return Err(format!("withdrawal {} not released: {r:?}", w.id)),
            }
        }
        inner.store.set_batch(b.id, "failed").map_err(sql)
    }

    /// Starts the next batch window now (tests, and an operator's "send now").
    pub fn batch_now(&self) -> Result<(), String> {
        self.lock().last_batch_ms = 0;
        self.tick()
    }

    /// Satoshis of each wallet (confirmed + unconfirmed).
    pub fn balances(&self) -> WalletBalances {
        let g = self.lock();
        WalletBalances {
            deposit_sat: g.deposit.wallet.balance().total().to_sat(),
            hot_sat: g.hot.wallet.balance().total().to_sat(),
            cold_sat: g.cold.wallet.balance().total().to_sat(),
            tip_height: g.hot.tip_height(),
        }
    }

    /// A batch's transaction, by withdrawal id.
    pub fn batch_of(&self, withdrawal_id: u64) -> Option<store::Batch> {
        let g = self.lock();
        let w = g.store.withdrawal(withdrawal_id).ok()??;
        g.store.batch(w.batch?).ok()?
    }
}

fn inner_prevouts_value(inner: &Inner, tx: &Transaction) -> u64 {
    tx.input
        .iter()
        .filter_map(|i| {
            [&inner.deposit, &inner.hot, &inner.cold]
                .iter()
                .find_map(|w| w.wallet.tx_graph().get_txout(i.previous_output).cloned())
        })
        .map(|o| o.value.to_sat())
        .sum()
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct WalletBalances {
    pub deposit_sat: u64,
    pub hot_sat: u64,
    pub cold_sat: u64,
    pub tip_height: u32,
}

impl Custody {
    /// A PSBT spending from the cold wallet (2-of-3): for the offline signers
    /// (`fulgur custody psbt sign`), then [`Custody::broadcast_psbt`].
    pub fn cold_psbt(&self, address: &str, amount_sat: u64) -> Result<String, CustodyError> {
        use bdk_wallet::bitcoin::base64::Engine;
        let bad = |m: String| CustodyError::new(400, -4033, m);
        let a = Address::from_str(address)
            .map_err(|_| bad("Illegal address.".into()))?
            .require_network(self.cfg.network)
            .map_err(|_| {
                bad(format!(
                    "Illegal address: not a {} address.",
                    self.cfg.network
                ))
            })?;
        let mut g = self.lock();
        let inner = &mut *g;
        let rate = self.fee_rate(&inner.rpc);
        let psbt = {
            let mut b = inner.cold.wallet.build_tx();
            b.add_recipient(a.script_pubkey(), Amount::from_sat(amount_sat))
                .fee_rate(rate);
            b.finish().map_err(|e| {
                CustodyError::new(400, -4026, format!("The cold wallet cannot pay this: {e}"))
            })?
        };
        inner.cold.persist().map_err(CustodyError::internal)?;
        Ok(bdk_wallet::bitcoin::base64::engine::general_purpose::STANDARD.encode(psbt.serialize()))
    }

    /// Finalises a signed PSBT (every input checked with libbitcoinconsensus) and
    /// broadcasts it; its txid.
    pub fn broadcast_psbt(&self, psbt_b64: &str) -> Result<String, CustodyError> {
        let psbt = decode_psbt(psbt_b64).map_err(|e| CustodyError::new(400, -1100, e))?;
        let tx = wallets::finalize(psbt).map_err(|e| CustodyError::new(400, -4032, e))?;
        let mut g = self.lock();
        let inner = &mut *g;
        for w in [&mut inner.deposit, &mut inner.hot, &mut inner.cold] {
            w.insert_unconfirmed(&tx).map_err(CustodyError::internal)?;
        }
        inner
            .rpc
            .send_raw_transaction(&tx)
            .map_err(|e| CustodyError::new(400, -4032, format!("bitcoind refused it: {e}")))?;
        Ok(tx.compute_txid().to_string())
    }
}

/// A base64 PSBT.
pub fn decode_psbt(b64: &str) -> Result<Psbt, String> {
    use bdk_wallet::bitcoin::base64::Engine;
    let bytes = bdk_wallet::bitcoin::base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    Psbt::deserialize(&bytes).map_err(|e| format!("not a PSBT: {e}"))
}

/// `fulgur custody psbt sign --key FILE`: adds this key's signatures; the PSBT and how
/// many inputs it signed.
pub fn sign_psbt_with_file(psbt_b64: &str, key_file: &Path) -> Result<(String, usize), String> {
    use bdk_wallet::bitcoin::base64::Engine;
    let mut psbt = decode_psbt(psbt_b64)?;
    let key = keys::read_key(key_file)?;
    let n = wallets::sign(&mut psbt, &key);
    Ok((
        bdk_wallet::bitcoin::base64::engine::general_purpose::STANDARD.encode(psbt.serialize()),
        n,
    ))
}
