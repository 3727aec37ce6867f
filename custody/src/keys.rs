//! Key material. Each key is a BIP32 master key in its own file (`<name>.xprv`, mode
//! 0600), made once on the first start. The watcher works from [`Descriptors`], public
//! descriptors derived once and kept in `descriptors.json`; private keys are read only
//! where something is signed: the hot signer (`hot`, `deposit`) when a batch goes out,
//! and the cold signers (`cold-1..3`), which belong offline (`fulgur custody psbt sign`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use bdk_wallet::bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
use bdk_wallet::bitcoin::secp256k1::Secp256k1;
use bdk_wallet::bitcoin::{Network, NetworkKind};
use serde::{Deserialize, Serialize};

/// The public descriptors of the exchange's wallets (external, internal).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptors {
    pub network: Network,
    pub deposit: (String, String),
    pub hot: (String, String),
    pub cold: (String, String),
}

/// The names of the key files.
pub const DEPOSIT: &str = "deposit";
pub const HOT: &str = "hot";
pub const COLD: [&str; 3] = ["cold-1", "cold-2", "cold-3"];

pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.xprv"))
}

/// Reads a key file (an `xprv`/`tprv` string).
pub fn read_key(path: &Path) -> Result<Xpriv, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Xpriv::from_str(s.trim())
        .map_err(|e| format!("{}: not an extended private key: {e}", path.display()))
}

fn write_new_key(path: &Path, network: Network) -> Result<Xpriv, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let key = Xpriv::new_master(NetworkKind::from(network), &seed).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        writeln!(f, "{key}").map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    Ok(key)
}

fn coin_type(network: Network) -> u32 {
    if network == Network::Bitcoin {
        0
    } else {
        1
    }
}

/// `[fingerprint/purpose'/coin'/0']xpub` of a master key.
fn account_key(key: &Xpriv, purpose: u32, network: Network) -> String {
    let secp = Secp256k1::new();
    let path = DerivationPath::from_str(&format!("m/{purpose}h/{}h/0h", coin_type(network)))
        .expect("a literal path");
    let xpub = Xpub::from_priv(
        &secp,
        &key.derive_priv(&secp, &path).expect("hardened path"),
    );
    format!(
        "[{}/{purpose}h/{}h/0h]{xpub}",
        key.fingerprint(&secp),
        coin_type(network)
    )
}

/// The public descriptors of the three master keys of a wallet set.
pub fn descriptors(
    deposit: &Xpriv,
    hot: &Xpriv,
    cold: [&Xpub; 3],
    network: Network,
) -> Descriptors {
    let d = account_key(deposit, 86, network);
    let h = account_key(hot, 84, network);
    let c: Vec<String> = cold
        .iter()
        .map(|x| format!("[{}]{x}", x.fingerprint()))
        .collect();
    let multi = |chain: u32| {
        format!(
            "wsh(sortedmulti(2,{}/{chain}/*,{}/{chain}/*,{}/{chain}/*))",
            c[0], c[1], c[2]
        )
    };
    Descriptors {
        network,
        deposit: (format!("tr({d}/0/*)"), format!("tr({d}/1/*)")),
        hot: (format!("wpkh({h}/0/*)"), format!("wpkh({h}/1/*)")),
        cold: (multi(0), multi(1)),
    }
}

/// The cold wallet's keys are the cold masters' own xpubs (no hardened step: an offline
/// signer holds just its master key and signs what the PSBT's derivation paths name).
pub fn cold_xpub(key: &Xpriv) -> Xpub {
    Xpub::from_priv(&Secp256k1::new(), key)
}

/// Makes the keys and `descriptors.json` on the first start; afterwards reads the public
/// descriptors (and checks them against the network).
pub fn init(dir: &Path, network: Network) -> Result<Descriptors, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join("descriptors.json");
    if file.exists() {
        let d: Descriptors = serde_json::from_slice(
            &std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?,
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        if d.network != network {
            return Err(format!(
                "{}: the wallets are for {}, the configuration says {network}",
                file.display(),
                d.network
            ));
        }
        return Ok(d);
    }
    let get = |name: &str| -> Result<Xpriv, String> {
        let p = key_path(dir, name);
        if p.exists() {
            read_key(&p)
        } else {
            write_new_key(&p, network)
        }
    };
    let deposit = get(DEPOSIT)?;
    let hot = get(HOT)?;
    let cold = [get(COLD[0])?, get(COLD[1])?, get(COLD[2])?];
    let xpubs = [
        cold_xpub(&cold[0]),
        cold_xpub(&cold[1]),
        cold_xpub(&cold[2]),
    ];
    let d = descriptors(&deposit, &hot, [&xpubs[0], &xpubs[1], &xpubs[2]], network);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&d).expect("serializable"))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &file).map_err(|e| e.to_string())?;
    tracing::warn!(
        dir = %dir.display(),
        "custody keys made; the cold-*.xprv files belong on offline signers: move them away"
    );
    Ok(d)
}
