//! (being written: stub with the agreed API)
#![allow(unused_variables, dead_code)]
use crate::error::ApiError;
use std::net::IpAddr;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RateLimitConfig {
    pub request_weight_per_minute: u32,
    pub orders_per_10s: u32,
    pub orders_per_day: u32,
    pub ip_slots: usize,
    pub max_accounts: u32,
    pub first_ban_s: u64,
    pub max_ban_s: u64,
}
impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            request_weight_per_minute: 6000,
            orders_per_10s: 100,
            orders_per_day: 200_000,
            ip_slots: 4096,
            max_accounts: 1 << 16,
            first_ban_s: 120,
            max_ban_s: 259_200,
        }
    }
}
pub struct RateLimiter;
impl RateLimiter {
    pub fn new(cfg: RateLimitConfig) -> RateLimiter {
        RateLimiter
    }
    pub fn request(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<u32, ApiError> {
        Ok(weight)
    }
    pub fn used_weight(&self, ip: IpAddr, now_ms: u64) -> u32 {
        0
    }
    pub fn order(&self, account: u32, now_ms: u64) -> Result<(u32, u32), ApiError> {
        Ok((1, 1))
    }
    pub fn order_counts(&self, account: u32, now_ms: u64) -> (u32, u32) {
        (0, 0)
    }
    pub fn exchange_info_limits(&self) -> serde_json::Value {
        serde_json::json!([])
    }
    pub fn ws_rate_limits(&self, used_weight: u32, orders: Option<(u32, u32)>) -> serde_json::Value {
        serde_json::json!([])
    }
}
