//! The exchange's BDK wallets, each in its own SQLite file, each synced from bitcoind by a
//! `bdk_bitcoind_rpc` emitter (block by block; a block that no longer connects makes the
//! emitter walk back to the fork point, so a reorg reaches the wallet as a changed chain,
//! not as an error), plus what signing a transaction needs: PSBT signing with master keys,
//! finalisation, and the consensus check of every input.

use std::path::Path;
use std::sync::Arc;

use bdk_bitcoind_rpc::bitcoincore_rpc::{Auth, Client, RpcApi};
use bdk_bitcoind_rpc::Emitter;
use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::secp256k1::Secp256k1;
use bdk_wallet::bitcoin::{Network, Psbt, Transaction, TxOut};
use bdk_wallet::chain::{ChainPosition, ConfirmationBlockTime};
use bdk_wallet::miniscript::psbt::PsbtExt;
use bdk_wallet::{KeychainKind, PersistedWallet, Wallet};
use rusqlite::Connection;

use crate::RpcAuth;

/// A bitcoind RPC client.
pub fn rpc_client(url: &str, auth: &RpcAuth) -> Result<Arc<Client>, String> {
    let auth = match auth {
        RpcAuth::CookieFile(p) => Auth::CookieFile(p.clone()),
        RpcAuth::UserPass(u, p) => Auth::UserPass(u.clone(), p.clone()),
    };
    Client::new(url, auth)
        .map(Arc::new)
        .map_err(|e| format!("bitcoind RPC {url}: {e}"))
}

/// One wallet, its store, and its chain source.
pub struct SyncedWallet {
    pub name: &'static str,
    pub wallet: PersistedWallet<Connection>,
    db: Connection,
    emitter: Emitter<Arc<Client>>,
}

impl SyncedWallet {
    /// Opens (or creates) `<dir>/<name>.sqlite` with these public descriptors; a new
    /// wallet starts syncing at `birth_height` (nothing of it can be older).
    pub fn open(
        dir: &Path,
        name: &'static str,
        descriptors: &(String, String),
        network: Network,
        rpc: Arc<Client>,
        birth_height: u32,
    ) -> Result<SyncedWallet, String> {
        let path = dir.join(format!("{name}.sqlite"));
        let mut db = Connection::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (ext, int) = (descriptors.0.clone(), descriptors.1.clone());
        let loaded = Wallet::load()
            .descriptor(KeychainKind::External, Some(ext.clone()))
            .descriptor(KeychainKind::Internal, Some(int.clone()))
            .check_network(network)
            .load_wallet(&mut db)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let wallet = match loaded {
            Some(w) => w,
            None => Wallet::create(ext, int)
                .network(network)
                .create_wallet(&mut db)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        };
        let start = wallet.latest_checkpoint();
        let unconfirmed: Vec<Arc<Transaction>> = wallet
            .transactions()
            .filter(|t| !t.chain_position.is_confirmed())
            .map(|t| t.tx_node.tx.clone())
            .collect();
        let emitter = Emitter::new(rpc, start, birth_height, unconfirmed);
        Ok(SyncedWallet {
            name,
            wallet,
            db,
            emitter,
        })
    }

    /// Applies every new block (and the mempool) from bitcoind; persists.
    pub fn sync(&mut self) -> Result<(), String> {
        while let Some(ev) = self
            .emitter
            .next_block()
            .map_err(|e| format!("{} sync: {e}", self.name))?
        {
            let height = ev.block_height();
            self.wallet
                .apply_block_connected_to(&ev.block, height, ev.connected_to())
                .map_err(|e| format!("{} sync at {height}: {e}", self.name))?;
        }
        let mempool = self
            .emitter
            .mempool()
            .map_err(|e| format!("{} mempool: {e}", self.name))?;
        self.wallet.apply_evicted_txs(mempool.evicted);
        self.wallet.apply_unconfirmed_txs(mempool.update);
        self.persist()
    }

    pub fn persist(&mut self) -> Result<(), String> {
        self.wallet
            .persist(&mut self.db)
            .map(|_| ())
            .map_err(|e| format!("{} persist: {e}", self.name))
    }

    pub fn tip_height(&self) -> u32 {
        self.wallet.latest_checkpoint().height()
    }

    /// Confirmations of something at this chain position (0: unconfirmed).
    pub fn confirmations(&self, pos: &ChainPosition<ConfirmationBlockTime>) -> u32 {
        match pos {
            ChainPosition::Confirmed { anchor, .. } => {
                (self.tip_height() + 1).saturating_sub(anchor.block_id.height)
            }
            ChainPosition::Unconfirmed { .. } => 0,
        }
    }

    /// Records a transaction of ours (just signed) as unconfirmed, so its inputs count as
    /// spent before bitcoind has it.
    pub fn insert_unconfirmed(&mut self, tx: &Transaction) -> Result<(), String> {
        self.wallet
            .apply_unconfirmed_txs([(tx.clone(), crate::now_ms() / 1000)]);
        self.persist()
    }
}

/// Signs every input of `psbt` that this master key can sign (by the PSBT's BIP32 and
/// taproot key origins); how many it signed.
pub fn sign(psbt: &mut Psbt, key: &Xpriv) -> usize {
    let secp = Secp256k1::new();
    match psbt.sign(key, &secp) {
        Ok(used) => used.len(),
        // Inputs of other keys are errors here (no key for them); count what was signed.
        Err((used, _)) => used.len(),
    }
}

/// Finalises a fully signed PSBT and extracts its transaction, checking every input with
/// libbitcoinconsensus (taproot included) against the outputs it spends.
pub fn finalize(mut psbt: Psbt) -> Result<Transaction, String> {
    let secp = Secp256k1::new();
    psbt.finalize_mut(&secp)
        .map_err(|errs| format!("cannot finalise: {errs:?}"))?;
    let prevouts: Vec<TxOut> = psbt
        .inputs
        .iter()
        .map(|i| {
            i.witness_utxo
                .clone()
                .ok_or("an input without its witness UTXO")
        })
        .collect::<Result<_, _>>()?;
    let tx = psbt
        .extract_tx()
        .map_err(|e| format!("cannot extract: {e}"))?;
    verify_inputs(&tx, &prevouts)?;
    Ok(tx)
}

/// Checks every input of `tx` with Bitcoin Core's script interpreter
/// (libbitcoinconsensus), with the flags of a current block (taproot on).
pub fn verify_inputs(tx: &Transaction, prevouts: &[TxOut]) -> Result<(), String> {
    if prevouts.len() != tx.input.len() {
        return Err("one spent output per input needed".into());
    }
    let raw = bdk_wallet::bitcoin::consensus::serialize(tx);
    // The library reads these through raw pointers during each call; `prevouts` outlives
    // them all.
    let utxos: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    let flags = bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT;
    for (i, o) in prevouts.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            o.script_pubkey.as_bytes(),
            o.value.to_sat(),
            &raw,
            Some(&utxos),
            i,
            flags,
        )
        .map_err(|e| format!("input {i} fails the consensus check: {e:?}"))?;
    }
    Ok(())
}

/// The node's height now (a new wallet's birth height).
pub fn node_height(rpc: &Client) -> Result<u32, String> {
    rpc.get_block_count()
        .map(|h| h as u32)
        .map_err(|e| format!("bitcoind getblockcount: {e}"))
}
