//! Proofs: of reserves (BIP-127-style, `bdk-reserves`: per wallet, a transaction that
//! spends every UTXO plus a challenge input made from the message, so it can never be
//! mined, signed by the keys that could spend them) and of liabilities (the Merkle-sum
//! tree of [`crate::liabilities`] over the ledger's BTC balances).

use bdk_reserves::reserves::ProofOfReserves;
use bdk_wallet::bitcoin::base64::Engine;
use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::Psbt;
use bdk_wallet::SignOptions;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::liabilities::{self, Tree};
use crate::service::Custody;
use crate::wallets;

fn b64() -> bdk_wallet::bitcoin::base64::engine::GeneralPurpose {
    bdk_wallet::bitcoin::base64::engine::general_purpose::STANDARD
}

/// One wallet's proof.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalletProof {
    pub wallet: String,
    /// The signed proof transaction, base64 PSBT.
    pub psbt: String,
    pub amount_sat: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReservesProof {
    pub message: String,
    /// Chain height the proof was made at.
    pub height: u32,
    pub wallets: Vec<WalletProof>,
    pub total_sat: u64,
    /// Wallets with funds that are not in the proof (cold, when fewer than two of its
    /// keys were given), and their balance.
    pub unproven: Vec<(String, u64)>,
}

/// Both proofs, as `fulgur custody proof` writes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proofs {
    pub reserves: ReservesProof,
    pub liabilities: liabilities::Root,
    /// Reserves proven minus liabilities (negative: under-reserved).
    pub surplus_sat: i128,
}

impl Custody {
    /// A proof of reserves over every wallet with funds; the cold wallet is included when
    /// at least two of its keys are given (as an offline ceremony would).
    pub fn prove_reserves(
        &self,
        message: &str,
        cold_keys: &[Xpriv],
    ) -> Result<ReservesProof, String> {
        let dir = self.key_dir().to_path_buf();
        let mut g = self.lock();
        let inner = &mut *g;
        let height = inner.hot.tip_height();
        let mut out = ReservesProof {
            message: message.to_string(),
            height,
            wallets: Vec::new(),
            total_sat: 0,
            unproven: Vec::new(),
        };
        for w in [&mut inner.deposit, &mut inner.hot, &mut inner.cold] {
            let balance = w.wallet.balance().total().to_sat();
            if balance == 0 {
                continue;
            }
            let signers: Vec<Xpriv> = match w.name {
                "deposit" => vec![keys::read_key(&keys::key_path(&dir, keys::DEPOSIT))?],
                "hot" => vec![keys::read_key(&keys::key_path(&dir, keys::HOT))?],
                _ if cold_keys.len() >= 2 => cold_keys.to_vec(),
                _ => {
                    out.unproven.push((w.name.to_string(), balance));
                    continue;
                }
            };
            let mut psbt = w
                .wallet
                .create_proof(message)
                .map_err(|e| format!("{} proof: {e:?}", w.name))?;
            for k in &signers {
                wallets::sign(&mut psbt, k);
            }
            w.wallet
                .finalize_psbt(&mut psbt, SignOptions::default())
                .map_err(|e| format!("{} proof: {e}", w.name))?;
            let amount = w
                .wallet
                .verify_proof(&psbt, message, None)
                .map_err(|e| format!("{} proof does not verify: {e:?}", w.name))?
                .to_sat();
            out.total_sat += amount;
            out.wallets.push(WalletProof {
                wallet: w.name.to_string(),
                psbt: b64().encode(psbt.serialize()),
                amount_sat: amount,
            });
        }
        Ok(out)
    }

    /// Verifies a proof of reserves against the wallets' current UTXOs; the amount proven.
    pub fn verify_reserves(&self, p: &ReservesProof) -> Result<u64, String> {
        let g = self.lock();
        let mut total = 0;
        for wp in &p.wallets {
            let w = [&g.deposit, &g.hot, &g.cold]
                .into_iter()
                .find(|w| w.name == wp.wallet)
                .ok_or_else(|| format!("no wallet {}", wp.wallet))?;
            let bytes = b64()
                .decode(&wp.psbt)
                .map_err(|e| format!("{}: not base64: {e}", wp.wallet))?;
            let psbt =
                Psbt::deserialize(&bytes).map_err(|e| format!("{}: not a PSBT: {e}", wp.wallet))?;
            let amount = w
                .wallet
                .verify_proof(&psbt, &p.message, None)
                .map_err(|e| format!("{}: the proof does not verify: {e:?}", wp.wallet))?
                .to_sat();
            if amount != wp.amount_sat {
                return Err(format!(
                    "{}: the proof is for {amount} sat, it claims {}",
                    wp.wallet, wp.amount_sat
                ));
            }
            total += amount;
        }
        if total != p.total_sat {
            return Err(format!(
                "the proofs add up to {total} sat, the total claims {}",
                p.total_sat
            ));
        }
        Ok(total)
    }

    /// The liabilities tree over the ledger's BTC balances, with a fresh secret salt seed.
    pub fn prove_liabilities(&self) -> Result<Tree, String> {
        let balances = self.ledger().balances(self.btc());
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
        Tree::build(&balances, &seed)
    }
}
