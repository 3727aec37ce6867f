//! API keys and request signatures, as Binance has them: HMAC-SHA256 keys (the server keeps
//! the secret) and Ed25519 keys (the server keeps the client's public key), signed payloads,
//! the `timestamp`/`recvWindow` check, and the operator's admin token.
//!
//! Keys live in `<data dir>/api-keys.json` (`{"version":1,"keys":[...]}`, mode 0600), written
//! by `fulgur keys create` and read by the server, which picks new keys up without a restart.
//! Nothing here logs a secret, and `Debug` redacts them.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A key's lookup misses stat the file at most this often: misses are cheap for a client to
/// cause (any unknown key), so they must not turn into disk reads per request.
const RELOAD_EVERY: Duration = Duration::from_millis(500);
const FILE_VERSION: u32 = 1;
const KEY_CHARS: usize = 64;
const DEFAULT_RECV_WINDOW_US: u128 = 5_000_000;
const MAX_RECV_WINDOW_US: u128 = 60_000_000;
const RECV_WINDOW_LEGAL: &str = "^([0-9]{1,20})(\\.[0-9]{1,3})?$";

/// An API key and the account it trades for.
#[derive(Clone)]
pub struct ApiKey {
    pub api_key: String,
    pub account: u32,
    pub kind: KeyKind,
}

/// How a key's requests are signed.
#[derive(Clone)]
pub enum KeyKind {
    /// HMAC-SHA256 with a secret both sides hold.
    Hmac { secret: String },
    /// Ed25519: the client signs with its private key; this is its public key.
    Ed25519 { key: VerifyingKey },
}

impl fmt::Debug for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Hmac { .. } => f
                .debug_struct("Hmac")
                .field("secret", &"<redacted>")
                .finish(),
            KeyKind::Ed25519 { key } => f
                .debug_struct("Ed25519")
                .field("key", &hex::encode(key.as_bytes()))
                .finish(),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("api_key", &self.api_key)
            .field("account", &self.account)
            .field("kind", &self.kind)
            .finish()
    }
}

/// What `create_key` made: the secret is `None` for Ed25519 keys (the client holds its own).
pub struct CreatedKey {
    pub api_key: String,
    pub secret_key: Option<String>,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("api_key", &self.api_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

// ---- the keys file ----

#[derive(Serialize, Deserialize)]
struct KeysFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRecord {
    api_key: String,
    account: u32,
    #[serde(flatten)]
    kind: RecordKind,
    /// When it was made, ms since the Unix epoch (for the operator; not used).
    created_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum RecordKind {
    #[serde(rename = "HMAC")]
    Hmac {
        #[serde(rename = "secretKey")]
        secret_key: String,
    },
    /// `publicKey`: base64 of the 32 raw bytes.
    #[serde(rename = "ED25519")]
    Ed25519 {
        #[serde(rename = "publicKey")]
        public_key: String,
    },
}

fn read_keys_file(path: &Path) -> Result<Option<KeysFile>, String> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    // Only the position: serde's messages can quote a value, and values here are secrets.
    let file: KeysFile = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: not a valid keys file ({:?} error at line {} column {})",
            path.display(),
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    if file.version != FILE_VERSION {
        return Err(format!(
            "{}: keys file version {} is not supported (this build reads version {FILE_VERSION})",
            path.display(),
            file.version
        ));
    }
    Ok(Some(file))
}

fn load_keys(path: &Path) -> Result<HashMap<String, ApiKey>, String> {
    let Some(file) = read_keys_file(path)? else {
        return Ok(HashMap::new());
    };
    let mut keys = HashMap::with_capacity(file.keys.len());
    for (i, r) in file.keys.into_iter().enumerate() {
        let kind = match r.kind {
            RecordKind::Hmac { secret_key } => KeyKind::Hmac { secret: secret_key },
            RecordKind::Ed25519 { public_key } => KeyKind::Ed25519 {
                key: raw_public_key(&public_key)
                    .map_err(|e| format!("{}: key #{}: {e}", path.display(), i + 1))?,
            },
        };
        keys.insert(
            r.api_key.clone(),
            ApiKey {
                api_key: r.api_key,
                account: r.account,
                kind,
            },
        );
    }
    Ok(keys)
}

fn raw_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| "publicKey is not base64".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "publicKey is not 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "publicKey is not an Ed25519 key".to_string())
}

/// What identifies a version of the file on disk. The inode changes on every atomic
/// replace, so a rewrite within one mtime tick that keeps the length is still seen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = m.ino();
    #[cfg(not(unix))]
    let ino = 0;
    Some(Stamp {
        mtime: m.modified().ok(),
        len: m.len(),
        ino,
    })
}

struct ReloadState {
    next_check: Instant,
    stamp: Option<Stamp>,
}

/// The server's API keys, read from the keys file and re-read when it changes.
pub struct KeyStore {
    path: PathBuf,
    keys: RwLock<HashMap<String, ApiKey>>,
    reload: Mutex<ReloadState>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.keys.read().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("keys", &n)
            .finish()
    }
}

impl KeyStore {
    /// Keys file: <data dir>/api-keys.json. A missing file = no keys yet.
    pub fn open(path: &Path) -> Result<KeyStore, String> {
        let before = stamp(path);
        let keys = load_keys(path)?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            keys: RwLock::new(keys),
            reload: Mutex::new(ReloadState {
                // The first miss may check at once: a key made just after start works.
                next_check: Instant::now(),
                stamp: before,
            }),
        })
    }

    /// Looks a key up; on a miss, reloads the file if it changed on disk (mtime/len), at most
    /// once per 500 ms, so keys created by `fulgur keys create` on a running server work at once.
    pub fn lookup(&self, api_key: &str) -> Option<ApiKey> {
        if let Some(k) = self.read_keys().get(api_key) {
            return Some(k.clone());
        }
        if self.reload_if_changed() {
            return self.read_keys().get(api_key).cloned();
        }
        None
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ApiKey>> {
        // The map is only ever replaced whole, so a panic elsewhere cannot leave it half made.
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True if the keys were reloaded.
    fn reload_if_changed(&self) -> bool {
        let mut r = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now < r.next_check {
            return false;
        }
        r.next_check = now + RELOAD_EVERY;
        let current = stamp(&self.path);
        if current == r.stamp {
            return false;
        }
        // Stamped before reading: a change racing the read is seen again at the next check.
        r.stamp = current;
        match load_keys(&self.path) {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                true
            }
            Err(e) => {
                // Keep serving the keys we have; the message names a position, never a value.
                tracing::warn!("API keys not reloaded: {e}");
                false
            }
        }
    }
}

// ---- creating keys ----

/// `n` characters from A-Z, a-z, 0-9, uniformly (bytes >= 248 are dropped: 248 = 4 * 62).
fn random_alnum(n: usize) -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 96];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| format!("no randomness from the OS: {e}"))?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

/// A client's Ed25519 public key: PEM SPKI (what Binance takes), or base64/hex of the raw 32
/// bytes (base64 of the SPKI DER also works). Error messages never echo the input, in case a
/// private key was pasted by mistake.
fn parse_ed25519_public_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err("that is a private key: give the public key (`openssl pkey -pubout`); the private key never leaves the client".into());
    }
    let key = if text.starts_with("-----BEGIN") {
        VerifyingKey::from_public_key_pem(text)
            .map_err(|_| "not an Ed25519 PEM public key (-----BEGIN PUBLIC KEY-----)")?
    } else if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(text, &mut raw).map_err(|_| "bad hex")?;
        VerifyingKey::from_bytes(&raw).map_err(|_| "not an Ed25519 public key")?
    } else {
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .map_err(|_| {
                "not an Ed25519 public key: give a PEM public key, or base64 or hex of its 32 bytes"
            })?;
        match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(raw) => VerifyingKey::from_bytes(&raw).map_err(|_| "not an Ed25519 public key")?,
            Err(_) => VerifyingKey::from_public_key_der(&bytes)
                .map_err(|_| "not an Ed25519 public key (expected 32 bytes or SPKI DER)")?,
        }
    };
    // A small-order key accepts forged signatures.
    if key.is_weak() {
        return Err("a weak (small-order) Ed25519 key; generate a real one".into());
    }
    Ok(key)
}

/// Creates a key for `account`, appends it to the file atomically (write temp, fsync, rename; file mode 0600).
/// `ed25519_public_key`: a PEM "-----BEGIN PUBLIC KEY-----" SPKI key (as Binance takes), or base64/hex of the 32 raw bytes. HMAC keys get a fresh 64-char alphanumeric secret; API keys are 64 alphanumeric chars (like Binance's). Randomness from getrandom.
pub fn create_key(
    path: &Path,
    account: u32,
    ed25519_public_key: Option<&str>,
) -> Result<CreatedKey, String> {
    let (kind, secret_key) = match ed25519_public_key {
        Some(text) => {
            let key = parse_ed25519_public_key(text)?;
            let public_key = STANDARD.encode(key.as_bytes());
            (RecordKind::Ed25519 { public_key }, None)
        }
        None => {
            let secret = random_alnum(KEY_CHARS)?;
            (
                RecordKind::Hmac {
                    secret_key: secret.clone(),
                },
                Some(secret),
            )
        }
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    // Two `keys create` at once must not both read the old file and drop each other's key.
    let lock_path = path.with_file_name(format!("{name}.lock"));
    let lock =
        private_file(&lock_path, false).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;

    let mut file = read_keys_file(path)?.unwrap_or(KeysFile {
        version: FILE_VERSION,
        keys: Vec::new(),
    });
    let api_key = loop {
        let k = random_alnum(KEY_CHARS)?;
        if !file.keys.iter().any(|r| r.api_key == k) {
            break k;
        }
    };
    let created_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    file.keys.push(KeyRecord {
        api_key: api_key.clone(),
        account,
        kind,
        created_ms,
    });
    let mut json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    json.push(b'\n');
    let tmp = path.with_file_name(format!("{name}.tmp"));
    write_replace(&tmp, path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    drop(lock);
    Ok(CreatedKey {
        api_key,
        secret_key,
    })
}

/// Opens (creating, mode 0600) a file only its owner may read; `truncate` empties it.
fn private_file(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => File::open(p)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Write temp, fsync, rename, fsync the directory: a crash leaves the old file or the new.
fn write_replace(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = private_file(tmp, true)?;
    // An old temp file keeps its mode through `open`: make sure it is private.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    sync_dir(path)
}

// ---- signatures ----

/// HMAC-SHA256: signature is hex (either case). Ed25519: signature is base64 of the 64-byte signature. Constant-time comparison for HMAC.
pub fn verify_signature(key: &ApiKey, payload: &[u8], signature: &str) -> bool {
    match &key.kind {
        KeyKind::Hmac { secret } => {
            let Ok(sig) = hex::decode(signature) else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                return false;
            };
            mac.update(payload);
            // verify_slice compares in constant time.
            mac.verify_slice(&sig).is_ok()
        }
        KeyKind::Ed25519 { key } => {
            let Ok(bytes) = STANDARD.decode(signature) else {
                return false;
            };
            let Ok(sig) = Signature::from_slice(&bytes) else {
                return false;
            };
            // Strict: no malleable signatures, no small-order keys.
            key.verify_strict(payload, &sig).is_ok()
        }
    }
}

/// Splits the `signature` parameters out of a form string; the other parameters are kept
/// byte for byte, in order.
fn take_signature(form: &str) -> (String, Vec<&str>) {
    if form.is_empty() {
        return (String::new(), Vec::new());
    }
    let mut kept = Vec::new();
    let mut sigs = Vec::new();
    for part in form.split('&') {
        let name = part.split_once('=').map_or(part, |(k, _)| k);
        if name == "signature" {
            sigs.push(part.get(name.len() + 1..).unwrap_or(""));
        } else {
            kept.push(part);
        }
    }
    (kept.join("&"), sigs)
}

/// `%XX` decoding. `+` stays `+`: base64 signatures contain it, and a client that forgot to
/// percent-encode one should not have it turned into a space.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Binance's signed payload: the raw query string concatenated with the raw body (exactly as sent, no separator), with the `signature=...` parameter removed from wherever it is (query or body). Returns (payload, signature as sent, percent-decoded). Missing signature -> ApiError::mandatory("signature"); signature in both or twice -> ApiError::duplicate_param().
pub fn signed_payload(raw_query: &str, raw_body: &str) -> Result<(String, String), ApiError> {
    let (query, in_query) = take_signature(raw_query);
    let (body, in_body) = take_signature(raw_body);
    let mut sigs = in_query.into_iter().chain(in_body);
    let sig = sigs
        .next()
        .ok_or_else(|| ApiError::mandatory("signature"))?;
    if sigs.next().is_some() {
        return Err(ApiError::duplicate_param());
    }
    let sig = percent_decode(sig)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::mandatory("signature"))?;
    Ok((query + &body, sig))
}

// ---- timing ----

/// recvWindow in µs: digits, optionally `.` and up to 3 more (Binance's microsecond form).
fn recv_window_us(s: &str) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 20 || !digits(int) || !digits(frac) || frac.len() > 3 {
        return None;
    }
    if s.contains('.') && frac.is_empty() {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let frac_us: u128 = format!("{frac:0<3}").parse().ok()?;
    Some(int * 1000 + frac_us)
}

/// timestamp/recvWindow as Binance checks them: recvWindow default 5000, must be <= 60000 (else ApiError::bad_recv_window()); timestamp more than 1000 ms ahead of now -> timestamp_ahead(); now - timestamp > recvWindow -> invalid_timestamp_window(). recvWindow may carry up to 3 decimals (microseconds), as Binance now allows: take it as a string.
///
/// "Ahead" is Binance's documented test, `timestamp < serverTime + 1000` to pass: a timestamp
/// exactly 1000 ms ahead is refused. A malformed recvWindow is -1100 (illegal characters).
pub fn check_timestamp(
    now_ms: u64,
    timestamp_ms: u64,
    recv_window: Option<&str>,
) -> Result<(), ApiError> {
    let window_us = match recv_window {
        None => DEFAULT_RECV_WINDOW_US,
        Some(s) => recv_window_us(s)
            .ok_or_else(|| ApiError::illegal_chars("recvWindow", RECV_WINDOW_LEGAL))?,
    };
    if window_us > MAX_RECV_WINDOW_US {
        return Err(ApiError::bad_recv_window());
    }
    if timestamp_ms >= now_ms.saturating_add(1000) {
        return Err(ApiError::timestamp_ahead());
    }
    let behind_us = u128::from(now_ms.saturating_sub(timestamp_ms)) * 1000;
    if behind_us > window_us {
        return Err(ApiError::invalid_timestamp_window());
    }
    Ok(())
}

// ---- the admin token ----

/// Reads a token file: one line, at least 32 visible characters (an operator may put their
/// own there). Never echoes the content.
fn read_token(path: &Path) -> io::Result<Result<String, String>> {
    let text = fs::read_to_string(path)?;
    let t = text.trim();
    Ok(
        if t.len() >= 32 && t.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(t.to_string())
        } else {
            Err(format!(
            "{}: not a token (one line of at least 32 visible ASCII characters); delete it to have a new one made",
            path.display()
        ))
        },
    )
}

/// The operator token: <data dir>/admin-token, created (32 random bytes, hex, mode 0600) if missing.
pub fn admin_token(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("admin-token");
    let shown = |e: io::Error| format!("{}: {e}", path.display());
    match read_token(&path) {
        Ok(t) => return t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(shown(e)),
    }
    if !data_dir.is_dir() {
        return Err(format!("{}: no such data directory", data_dir.display()));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let token = hex::encode(raw);
    // Written whole under a temp name, then linked in: a hard link never replaces an existing
    // file, so when the server and the CLI race, both end up with the one token on disk, and
    // nobody ever reads a half-written one.
    let tmp = data_dir.join(format!("admin-token.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = private_file(&tmp, true)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{}: {e}", tmp.display()));
    }
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&path).map_err(shown)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(shown(e)),
    }
    read_token(&path).map_err(shown)?
}

/// Constant-time comparison of a presented admin token.
pub fn admin_token_matches(expected: &str, given: &str) -> bool {
    // Comparing digests keeps the time independent of the contents and of the length.
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    !expected.is_empty() && std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::{Signer, SigningKey};

    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

    fn hmac_key(secret: &str) -> ApiKey {
        ApiKey {
            api_key: "k".into(),
            account: 1,
            kind: KeyKind::Hmac {
                secret: secret.into(),
            },
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fulgur-auth-{name}-{}-{}",
            std::process::id(),
            random_alnum(8).unwrap()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn signing_key() -> SigningKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        SigningKey::from_bytes(&seed)
    }

    #[test]
    fn binance_hmac_examples() {
        let k = hmac_key(SECRET);
        // rest-api.md, examples 1 and 2 (body or query).
        let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let sig = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
        assert!(verify_signature(&k, payload.as_bytes(), sig));
        assert!(verify_signature(
            &k,
            payload.as_bytes(),
            &sig.to_ascii_uppercase()
        ));
        assert!(!verify_signature(&k, b"symbol=LTCBTC", sig));
        assert!(!verify_signature(
            &hmac_key("other"),
            payload.as_bytes(),
            sig
        ));
        assert!(!verify_signature(&k, payload.as_bytes(), &sig[..62]));
        assert!(!verify_signature(&k, payload.as_bytes(), "zz"));
        // Example 3: query and body, no separator between them.
        let (p, s) = signed_payload(
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
            "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature=0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77",
        )
        .unwrap();
        assert!(p.contains("GTCquantity=1"));
        assert!(verify_signature(&k, p.as_bytes(), &s));
    }

    #[test]
    fn ed25519_round_trip_with_a_pem_key() {
        let sk = signing_key();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let dir = temp_dir("ed");
        let path = dir.join("api-keys.json");
        let created = create_key(&path, 7, Some(&pem)).unwrap();
        assert!(created.secret_key.is_none());
        let key = KeyStore::open(&path)
            .unwrap()
            .lookup(&created.api_key)
            .unwrap();
        assert_eq!(key.account, 7);

        let params = "symbol=BTCUSDT&side=SELL&type=LIMIT&timestamp=1668481559918";
        let sig = STANDARD.encode(sk.sign(params.as_bytes()).to_bytes());
        // As sent: percent-encoded in the query.
        let encoded = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let (p, s) = signed_payload(&format!("{params}&signature={encoded}"), "").unwrap();
        assert_eq!((p.as_str(), s.as_str()), (params, sig.as_str()));
        assert!(verify_signature(&key, p.as_bytes(), &s));
        assert!(!verify_signature(&key, b"symbol=ETHUSDT", &s));
        assert!(!verify_signature(&key, p.as_bytes(), "AAAA"));
        let other = signing_key().sign(params.as_bytes()).to_bytes();
        assert!(!verify_signature(
            &key,
            p.as_bytes(),
            &STANDARD.encode(other)
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ed25519_public_keys_in_every_accepted_form() {
        let vk = signing_key().verifying_key();
        let raw = vk.as_bytes();
        let der = vk.to_public_key_der().unwrap();
        for text in [
            vk.to_public_key_pem(LineEnding::CRLF).unwrap(),
            hex::encode(raw),
            hex::encode_upper(raw),
            STANDARD.encode(raw),
            STANDARD_NO_PAD.encode(raw),
            STANDARD.encode(der.as_bytes()),
            format!("  {}\n", STANDARD.encode(raw)),
        ] {
            assert_eq!(parse_ed25519_public_key(&text).unwrap(), vk, "{text}");
        }
        let e = parse_ed25519_public_key("-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n").unwrap_err();
        assert!(e.contains("private key"), "{e}");
        assert!(parse_ed25519_public_key("hello").is_err());
        assert!(parse_ed25519_public_key(&STANDARD.encode([1u8; 31])).is_err());
        // The identity point: small order.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(parse_ed25519_public_key(&hex::encode(weak))
            .unwrap_err()
            .contains("weak"));
    }

    #[test]
    fn signed_payload_cases() {
        let ok = |q: &str, b: &str| signed_payload(q, b).unwrap();
        assert_eq!(
            ok("a=1&b=2&signature=ab", ""),
            ("a=1&b=2".into(), "ab".into())
        );
        assert_eq!(
            ok("", "a=1&b=2&signature=ab"),
            ("a=1&b=2".into(), "ab".into())
        );
        assert_eq!(
            ok("a=1&b=2", "c=3&signature=AB"),
            ("a=1&b=2c=3".into(), "AB".into())
        );
        assert_eq!(
            ok("a=1&signature=ab", "c=3"),
            ("a=1c=3".into(), "ab".into())
        );
        // In the middle; the rest is kept exactly, encodings included.
        assert_eq!(
            ok("a=1&signature=ab&b=x%20y&c=", ""),
            ("a=1&b=x%20y&c=".into(), "ab".into())
        );
        assert_eq!(ok("signature=ab", ""), ("".into(), "ab".into()));
        // Percent-decoded; a raw `+` is kept.
        assert_eq!(ok("a=1&signature=a%2Bb%3D", "").1, "a+b=");
        assert_eq!(ok("a=1&signature=a+b", "").1, "a+b");
        // Names that only contain "signature" are other parameters.
        assert_eq!(
            ok("xsignature=1&signatures=2&signature=ab", ""),
            ("xsignature=1&signatures=2".into(), "ab".into())
        );

        let mandatory = ApiError::mandatory("signature");
        assert_eq!(signed_payload("a=1", "b=2").unwrap_err(), mandatory);
        assert_eq!(signed_payload("", "").unwrap_err(), mandatory);
        assert_eq!(signed_payload("a=1&signature=", "").unwrap_err(), mandatory);
        assert_eq!(signed_payload("a=1&signature", "").unwrap_err(), mandatory);
        assert_eq!(signed_payload("signature=%G1", "").unwrap_err(), mandatory);
        let dup = ApiError::duplicate_param();
        assert_eq!(
            signed_payload("signature=ab&signature=ab", "").unwrap_err(),
            dup
        );
        assert_eq!(
            signed_payload("a=1&signature=ab", "signature=ab").unwrap_err(),
            dup
        );
    }

    #[test]
    fn timestamp_boundaries() {
        let now = 1_700_000_000_000u64;
        let check = |ts: u64, w: Option<&str>| check_timestamp(now, ts, w);
        // Default window 5000 ms, inclusive.
        assert_eq!(check(now, None), Ok(()));
        assert_eq!(check(now - 5000, None), Ok(()));
        assert_eq!(
            check(now - 5001, None),
            Err(ApiError::invalid_timestamp_window())
        );
        // Ahead: up to 999 ms passes, 1000 ms is refused (timestamp < now + 1000).
        assert_eq!(check(now + 999, None), Ok(()));
        assert_eq!(check(now + 1000, None), Err(ApiError::timestamp_ahead()));
        // recvWindow up to 60000.
        assert_eq!(check(now - 60_000, Some("60000")), Ok(()));
        assert_eq!(
            check(now - 60_001, Some("60000")),
            Err(ApiError::invalid_timestamp_window())
        );
        assert_eq!(check(now, Some("60000.000")), Ok(()));
        assert_eq!(
            check(now, Some("60000.001")),
            Err(ApiError::bad_recv_window())
        );
        assert_eq!(check(now, Some("60001")), Err(ApiError::bad_recv_window()));
        assert_eq!(
            check(now, Some("99999999999999999999")),
            Err(ApiError::bad_recv_window())
        );
        // Microseconds: 1 ms behind is outside 0.999 ms, inside 1.001.
        assert_eq!(
            check(now - 1, Some("0.999")),
            Err(ApiError::invalid_timestamp_window())
        );
        assert_eq!(check(now - 1, Some("1.001")), Ok(()));
        assert_eq!(check(now - 1, Some("1.5")), Ok(()));
        assert_eq!(check(now, Some("0")), Ok(()));
        for bad in ["", "-1", "1.", ".5", "1.0001", "abc", "1e3", " 5000"] {
            assert_eq!(
                check(now, Some(bad)).unwrap_err().code,
                -1100,
                "recvWindow {bad:?}"
            );
        }
        // A timestamp far in the past must not underflow.
        assert_eq!(check(0, None), Err(ApiError::invalid_timestamp_window()));
    }

    /// Looks a key up for up to 2 s.
    fn eventually(store: &KeyStore, api_key: &str) -> Option<ApiKey> {
        (0..40).find_map(|_| {
            store.lookup(api_key).or_else(|| {
                std::thread::sleep(Duration::from_millis(50));
                None
            })
        })
    }

    #[test]
    fn the_first_miss_after_opening_checks_the_file_at_once() {
        let dir = temp_dir("first");
        let path = dir.join("api-keys.json");
        let store = KeyStore::open(&path).unwrap();
        let a = create_key(&path, 9, None).unwrap();
        assert_eq!(store.lookup(&a.api_key).unwrap().account, 9);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn created_keys_are_found_also_by_a_store_opened_before() {
        let dir = temp_dir("keys");
        let path = dir.join("api-keys.json");
        let early = KeyStore::open(&path).unwrap();
        assert!(early.lookup("nothing").is_none());

        let a = create_key(&path, 3, None).unwrap();
        assert_eq!(a.api_key.len(), 64);
        let secret = a.secret_key.clone().unwrap();
        assert_eq!(secret.len(), 64);
        assert!(a
            .api_key
            .chars()
            .chain(secret.chars())
            .all(|c| c.is_ascii_alphanumeric()));
        // Misses check the file at most every 500 ms: the key shows up within that.
        let started = Instant::now();
        let key = eventually(&early, &a.api_key).expect("picked up without reopening");
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert_eq!(key.account, 3);
        assert!(verify_signature(
            &key,
            b"x=1",
            &hex::encode(
                Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .unwrap()
                    .chain_update(b"x=1")
                    .finalize()
                    .into_bytes()
            )
        ));

        let b = create_key(&path, 4, None).unwrap();
        assert_ne!(a.api_key, b.api_key);
        assert_eq!(eventually(&early, &b.api_key).unwrap().account, 4);
        assert!(early.lookup(&a.api_key).is_some());
        // Both are in the file, and a fresh store sees both.
        let fresh = KeyStore::open(&path).unwrap();
        assert!(fresh.lookup(&a.api_key).is_some() && fresh.lookup(&b.api_key).is_some());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_keys_file_is_an_error_that_does_not_quote_it() {
        let dir = temp_dir("bad");
        let path = dir.join("api-keys.json");
        fs::write(
            &path,
            r#"{"version":1,"keys":[{"apiKey":"k","account":"SECRETVALUE","type":"HMAC","secretKey":"s","createdMs":0}]}"#,
        )
        .unwrap();
        let e = KeyStore::open(&path).unwrap_err();
        assert!(!e.contains("SECRETVALUE"), "{e}");
        fs::write(&path, r#"{"version":2,"keys":[]}"#).unwrap();
        assert!(KeyStore::open(&path).unwrap_err().contains("version 2"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn key_and_token_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        let path = dir.join("api-keys.json");
        create_key(&path, 1, None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        create_key(&path, 2, None).unwrap();
        assert_eq!(mode(&path), 0o600);
        let token = admin_token(&dir).unwrap();
        assert_eq!(mode(&dir.join("admin-token")), 0o600);
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        // Read back, not made again; no temp files left.
        assert_eq!(admin_token(&dir).unwrap(), token);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["admin-token", "api-keys.json", "api-keys.json.lock"]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn admin_token_checks() {
        let dir = temp_dir("token");
        assert!(admin_token(&dir.join("missing")).is_err());
        fs::write(dir.join("admin-token"), "short\n").unwrap();
        let e = admin_token(&dir).unwrap_err();
        assert!(!e.contains("short"), "{e}");
        fs::remove_file(dir.join("admin-token")).unwrap();
        let t = admin_token(&dir).unwrap();
        assert!(admin_token_matches(&t, &t));
        let mut flipped = t.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert!(!admin_token_matches(
            &t,
            std::str::from_utf8(&flipped).unwrap()
        ));
        assert!(!admin_token_matches(&t, &t[..63]));
        assert!(!admin_token_matches(&t, ""));
        assert!(!admin_token_matches("", ""));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let k = hmac_key(SECRET);
        let shown = format!("{k:?} {:?}", k.kind);
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let c = CreatedKey {
            api_key: "k".into(),
            secret_key: Some(SECRET.into()),
        };
        assert!(!format!("{c:?}").contains(SECRET));
        fn send_sync<T: Send + Sync>() {}
        send_sync::<KeyStore>();
        send_sync::<ApiKey>();
    }
}
