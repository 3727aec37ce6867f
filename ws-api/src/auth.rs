//! (being written: stub with the agreed API)
#![allow(unused_variables, dead_code)]
use crate::error::ApiError;
use std::path::Path;

pub struct KeyStore;
impl KeyStore {
    pub fn open(path: &Path) -> Result<KeyStore, String> {
        Ok(KeyStore)
    }
    pub fn lookup(&self, api_key: &str) -> Option<ApiKey> {
        None
    }
}
#[derive(Clone)]
pub struct ApiKey {
    pub api_key: String,
    pub account: u32,
    pub kind: KeyKind,
}
#[derive(Clone)]
pub enum KeyKind {
    Hmac { secret: String },
    Ed25519 { key: ed25519_dalek::VerifyingKey },
}
pub fn verify_signature(key: &ApiKey, payload: &[u8], signature: &str) -> bool {
    false
}
pub fn signed_payload(raw_query: &str, raw_body: &str) -> Result<(String, String), ApiError> {
    Err(ApiError::bad_signature())
}
pub fn check_timestamp(
    now_ms: u64,
    timestamp_ms: u64,
    recv_window: Option<&str>,
) -> Result<(), ApiError> {
    Ok(())
}
pub fn admin_token(data_dir: &Path) -> Result<String, String> {
    Ok("stub-token".into())
}
pub fn admin_token_matches(expected: &str, given: &str) -> bool {
    false
}
