//! Binance's rate limits, lock-free: request weight per IP per wall-clock minute (429, then
//! 418 bans for IPs that keep sending), and new orders per account per 10 s and per UTC day
//! (429 -1015).
//!
//! Every counter is one `AtomicU64` holding a window index (high 32 bits) and a count (low 32
//! bits), so a window roll-over and the count are one CAS. All tables are allocated once, in
//! [`RateLimiter::new`]; a request neither locks nor allocates unless it is refused.
//!
//! Per-IP state lives in a fixed table of `ip_slots` slots, open addressing with a probe of
//! 8 slots from a seeded hash of the address (seeded so that no one can pick addresses that
//! crowd another's probe). A slot whose minute is over and whose ban has ended holds nothing
//! worth keeping, so a new IP may take it over. When every slot of the probe is in use this
//! minute, the IP shares the probe's last slot: it is counted together with that slot's IP,
//! so it may be refused early (safe) but never gets past the limit (unsafe). A sharer is
//! limited by weight only: it neither sees nor earns bans, which belong to the slot's owner.
//!
//! Ban rule: an IP refused more than 10 times in one minute (`REFUSALS_BEFORE_BAN`) is
//! banned (418) for `first_ban_s`. A ban that starts less than `max_ban_s` after the previous
//! one ended lasts twice as long as that one, up to `max_ban_s`. A slot taken over forgets
//! its bans.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use serde_json::json;

use crate::error::ApiError;

/// Slots an IP may use, from its hash on; past them it shares the last one.
const PROBE: usize = 8;
/// Requests refused (429) in one minute before the next one bans the IP (418): a client with
/// a few requests in flight when it reaches the limit is not banned for them.
const REFUSALS_BEFORE_BAN: u32 = 10;

const MINUTE_MS: u64 = 60_000;
const TEN_S_MS: u64 = 10_000;
const DAY_MS: u64 = 86_400_000;
/// A slot's `ban` holds the ban level above the end of the ban (ms epoch, 48 bits: year 10889).
const BAN_UNTIL_BITS: u32 = 48;
const BAN_UNTIL_MASK: u64 = (1 << BAN_UNTIL_BITS) - 1;
/// Past this many doublings every ban is `max_ban_s` anyway.
const MAX_BAN_LEVEL: u64 = 64;
/// Seed of the slot hash when the OS has no randomness to give.
const FALLBACK_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RateLimitConfig {
    /// Request weight an IP may use per wall-clock minute (Binance: 6000).
    pub request_weight_per_minute: u32,
    /// New orders an account may place per 10 s window (Binance: 100).
    pub orders_per_10s: u32,
    /// New orders an account may place per UTC day (Binance: 200 000).
    pub orders_per_day: u32,
    /// Per-IP slots, allocated once (64 bytes each). IPs active in the same minute beyond
    /// what the table holds share slots, and are limited together.
    pub ip_slots: usize,
    /// Accounts are `0..max_accounts` (16 bytes of counters each).
    pub max_accounts: u32,
    /// Length of a first ban (Binance: 2 minutes).
    pub first_ban_s: u64,
    /// Longest ban, and how long a ban is remembered for doubling the next (Binance: 3 days).
    pub max_ban_s: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            request_weight_per_minute: 6000,
            orders_per_10s: 100,
            orders_per_day: 200_000,
            ip_slots: 4096,
            // As the engine's default `EngineConfig::max_accounts`.
            max_accounts: 1 << 16,
            first_ban_s: 120,
            max_ban_s: 3 * 86_400,
        }
    }
}

/// One IP's state. A cache line each, so that two busy IPs do not contend on one.
#[derive(Default)]
#[repr(align(64))]
struct IpSlot {
    /// [`ip_key`] of the owner; 0 while the slot has never been used.
    key: AtomicU64,
    /// Minute index and weight used in it.
    weight: AtomicU64,
    /// Minute index and requests refused in it (for the ban rule).
    refused: AtomicU64,
    /// Ban level (bans so far in a row) and end of the last ban, ms epoch.
    ban: AtomicU64,
}

#[derive(Default)]
struct AccountOrders {
    /// 10 s window index and new orders in it.
    orders_10s: AtomicU64,
    /// UTC day index and new orders in it.
    orders_1d: AtomicU64,
}

/// Binance's request-weight and order-count limits. `Send + Sync`; every method takes `&self`.
pub struct RateLimiter {
    cfg: RateLimitConfig,
    ips: Box<[IpSlot]>,
    accounts: Box<[AccountOrders]>,
    seed: u64,
    /// Refusal messages, formatted once.
    weight_msg: String,
    orders_10s_msg: String,
    orders_1d_msg: String,
}

impl RateLimiter {
    /// Allocates every table. Panics if `ip_slots` is 0: a configuration error, found at
    /// start.
    pub fn new(cfg: RateLimitConfig) -> RateLimiter {
        RateLimiter::with_seed(cfg, getrandom::u64().unwrap_or(FALLBACK_SEED))
    }

    fn with_seed(cfg: RateLimitConfig, seed: u64) -> RateLimiter {
        assert!(cfg.ip_slots > 0, "rate limits: ip_slots must be at least 1");
        let ips = (0..cfg.ip_slots).map(|_| IpSlot::default()).collect();
        let accounts = (0..cfg.max_accounts)
            .map(|_| AccountOrders::default())
            .collect();
        RateLimiter {
            weight_msg: format!(
                "Too much request weight used; current limit is {} request weight per 1 MINUTE. \
                 Please use WebSocket Streams for live updates to avoid polling the API.",
                cfg.request_weight_per_minute
            ),
            orders_10s_msg: format!(
                "Too many new orders; current limit is {} orders per 10 SECOND.",
                cfg.orders_per_10s
            ),
            orders_1d_msg: format!(
                "Too many new orders; current limit is {} orders per DAY.",
                cfg.orders_per_day
            ),
            cfg,
            ips,
            accounts,
            seed,
        }
    }

    /// Charges `weight` to the IP's current minute (windows aligned to the wall-clock
    /// minute, as Binance's). Ok(weight used this minute, this request included). Past the
    /// limit the request is not charged: 429 -1003 with `Retry-After` to the next minute;
    /// past `REFUSALS_BEFORE_BAN` (10) refusals in the minute, 418 -1003 and a ban (see the
    /// module's ban rule). A banned IP gets 418 with the seconds left of its ban.
    pub fn request(&self, ip: IpAddr, weight: u32, now_ms: u64) -> Result<u32, ApiError> {
        let minute = now_ms / MINUTE_MS;
        let (s, own) = self.claim(ip_key(ip), now_ms);
        if own {
            let until = ban_until(s.ban.load(Acquire));
            if until > now_ms {
                return Err(self.banned(until, now_ms));
            }
        }
        if let Ok((_, used)) = add(
            &s.weight,
            minute,
            weight,
            self.cfg.request_weight_per_minute,
        ) {
            return Ok(used);
        }
        if own {
            let refused = add(&s.refused, minute, 1, u32::MAX).map_or_else(|n| n, |(_, n)| n);
            if refused > REFUSALS_BEFORE_BAN {
                let until = self.ban(s, now_ms);
                return Err(self.banned(until, now_ms));
            }
        }
        Err(ApiError {
            status: 429,
            code: -1003,
            msg: self.weight_msg.clone(),
            retry_after_s: Some(ceil_s((minute + 1) * MINUTE_MS - now_ms)),
            data: None,
        })
    }

    /// Weight used by the IP in the current minute (for `X-MBX-USED-WEIGHT-1M` and the WS
    /// API's `rateLimits`). An IP sharing a slot sees the shared count.
    pub fn used_weight(&self, ip: IpAddr, now_ms: u64) -> u32 {
        match self.peek(ip_key(ip), now_ms) {
            Some(s) => count_in(&s.weight, now_ms / MINUTE_MS),
            None => 0,
        }
    }

    /// Counts a new order of `account` (10 s windows aligned to multiples of 10 s, and the
    /// UTC day). Ok((count_10s, count_1d)), this order included. Past either limit: 429
    /// -1015 without `Retry-After` (as Binance), and the order is not counted.
    pub fn order(&self, account: u32, now_ms: u64) -> Result<(u32, u32), ApiError> {
        let Some(a) = self.accounts.get(account as usize) else {
            return Err(ApiError::internal(format!(
                "account {account} is past the rate limiter's {} accounts",
                self.cfg.max_accounts
            )));
        };
        // The 10 s limit first: it is the one hit in practice, and then costs one CAS.
        let Ok((win_10s, c10s)) = add(&a.orders_10s, now_ms / TEN_S_MS, 1, self.cfg.orders_per_10s)
        else {
            return Err(ApiError::new(429, -1015, self.orders_10s_msg.clone()));
        };
        match add(&a.orders_1d, now_ms / DAY_MS, 1, self.cfg.orders_per_day) {
            Ok((_, c1d)) => Ok((c10s, c1d)),
            Err(_) => {
                // Until this undo, the 10 s count is one high: over-limiting for a moment
                // is safe.
                undo(&a.orders_10s, win_10s);
                Err(ApiError::new(429, -1015, self.orders_1d_msg.clone()))
            }
        }
    }

    /// Current (count_10s, count_1d) of `account` without counting; (0, 0) for an account
    /// past `max_accounts`.
    pub fn order_counts(&self, account: u32, now_ms: u64) -> (u32, u32) {
        match self.accounts.get(account as usize) {
            Some(a) => (
                count_in(&a.orders_10s, now_ms / TEN_S_MS),
                count_in(&a.orders_1d, now_ms / DAY_MS),
            ),
            None => (0, 0),
        }
    }

    /// The `rateLimits` array of `exchangeInfo`, as Binance shows it. RAW_REQUESTS is shown
    /// as Binance's and not enforced: every request weighs at least 1, so the weight limit
    /// (5 × 6000 per 5 minutes) binds first.
    pub fn exchange_info_limits(&self) -> serde_json::Value {
        json!([
            limit_json(
                "REQUEST_WEIGHT",
                "MINUTE",
                1,
                self.cfg.request_weight_per_minute
            ),
            limit_json("ORDERS", "SECOND", 10, self.cfg.orders_per_10s),
            limit_json("ORDERS", "DAY", 1, self.cfg.orders_per_day),
            limit_json("RAW_REQUESTS", "MINUTE", 5, 61_000),
        ])
    }

    /// The WS API `rateLimits` array of a response, with counts; the ORDERS entries only
    /// when `orders` is Some((count_10s, count_1d)).
    pub fn ws_rate_limits(
        &self,
        used_weight: u32,
        orders: Option<(u32, u32)>,
    ) -> serde_json::Value {
        let mut w = limit_json(
            "REQUEST_WEIGHT",
            "MINUTE",
            1,
            self.cfg.request_weight_per_minute,
        );
        w["count"] = json!(used_weight);
        let Some((c10s, c1d)) = orders else {
            return json!([w]);
        };
        let mut o10s = limit_json("ORDERS", "SECOND", 10, self.cfg.orders_per_10s);
        o10s["count"] = json!(c10s);
        let mut o1d = limit_json("ORDERS", "DAY", 1, self.cfg.orders_per_day);
        o1d["count"] = json!(c1d);
        json!([w, o10s, o1d])
    }

    /// Where `key`'s probe starts: its seeded hash scaled to the table (no division).
    fn home(&self, key: u64) -> usize {
        ((u128::from(mix64(key ^ self.seed)) * self.ips.len() as u128) >> 64) as usize
    }

    /// Slot `i` of the probe starting at `home`.
    fn at(&self, home: usize, i: usize) -> &IpSlot {
        &self.ips[(home + i) % self.ips.len()]
    }

    fn probe_len(&self) -> usize {
        PROBE.min(self.ips.len())
    }

    /// The key's own slot, if it has one.
    fn find(&self, key: u64, home: usize) -> Option<&IpSlot> {
        for i in 0..self.probe_len() {
            let s = self.at(home, i);
            match s.key.load(Acquire) {
                k if k == key => return Some(s),
                // Keys are never removed and an IP takes the first free slot of its probe,
                // so past a never-used slot the key is not to be found.
                0 => return None,
                _ => {}
            }
        }
        None
    }

    /// The slot `key` is counted in, and whether it is its own: its own slot, else the
    /// first empty or stale one of its probe, taken over, else the probe's last, shared.
    fn claim(&self, key: u64, now_ms: u64) -> (&IpSlot, bool) {
        let home = self.home(key);
        if let Some(s) = self.find(key, home) {
            return (s, true);
        }
        let probe = self.probe_len();
        for i in 0..probe {
            let s = self.at(home, i);
            let k = s.key.load(Acquire);
            if k == key {
                return (s, true);
            }
            if k != 0 && !self.stale(s, now_ms) {
                continue;
            }
            match s.key.compare_exchange(k, key, AcqRel, Acquire) {
                Ok(_) => {
                    if k != 0 {
                        // The old IP's ban has ended; its level must not lengthen ours. A
                        // ban it sets in between (its request raced the takeover) stands:
                        // over-limiting.
                        let b = s.ban.load(Acquire);
                        if ban_until(b) <= now_ms {
                            let _ = s.ban.compare_exchange(b, 0, AcqRel, Relaxed);
                        }
                    }
                    return (s, true);
                }
                // Another request of the same IP claimed it first.
                Err(k) if k == key => return (s, true),
                Err(_) => {}
            }
        }
        (self.at(home, probe - 1), false)
    }

    /// The slot [`Self::claim`] would count `key` in, without claiming: None where it would
    /// take a slot over (the IP has used nothing this minute).
    fn peek(&self, key: u64, now_ms: u64) -> Option<&IpSlot> {
        let home = self.home(key);
        if let Some(s) = self.find(key, home) {
            return Some(s);
        }
        let probe = self.probe_len();
        let free = (0..probe).any(|i| {
            let s = self.at(home, i);
            s.key.load(Acquire) == 0 || self.stale(s, now_ms)
        });
        (!free).then(|| self.at(home, probe - 1))
    }

    /// Nothing of this slot matters any more: its counts are of past minutes and its ban is
    /// over.
    fn stale(&self, s: &IpSlot, now_ms: u64) -> bool {
        let minute = now_ms / MINUTE_MS;
        window(s.weight.load(Relaxed)) < minute
            && window(s.refused.load(Relaxed)) < minute
            && ban_until(s.ban.load(Acquire)) <= now_ms
    }

    /// Bans the slot's IP from `now_ms`, one level longer than its last ban if that ended
    /// less than `max_ban_s` ago. Returns the end of the ban (of another thread's ban if one
    /// came first).
    fn ban(&self, s: &IpSlot, now_ms: u64) -> u64 {
        let memory_ms = self.cfg.max_ban_s.saturating_mul(1000);
        let mut cur = s.ban.load(Acquire);
        loop {
            let (level, until) = (cur >> BAN_UNTIL_BITS, ban_until(cur));
            if until > now_ms {
                return until;
            }
            let repeat = level > 0 && now_ms - until < memory_ms;
            let level = if repeat {
                (level + 1).min(MAX_BAN_LEVEL)
            } else {
                1
            };
            let ban_s = self
                .cfg
                .first_ban_s
                .saturating_mul(1u64 << (level - 1).min(63))
                .min(self.cfg.max_ban_s);
            let until = now_ms
                .saturating_add(ban_s.saturating_mul(1000))
                .min(BAN_UNTIL_MASK);
            match s.ban.compare_exchange_weak(
                cur,
                (level << BAN_UNTIL_BITS) | until,
                AcqRel,
                Acquire,
            ) {
                Ok(_) => return until,
                Err(actual) => cur = actual,
            }
        }
    }

    fn banned(&self, until_ms: u64, now_ms: u64) -> ApiError {
        ApiError {
            status: 418,
            code: -1003,
            msg: format!(
                "Way too much request weight used; IP banned until {until_ms}. \
                 Please use WebSocket Streams for live updates to avoid bans."
            ),
            retry_after_s: Some(ceil_s(until_ms.saturating_sub(now_ms))),
            data: None,
        }
    }
}

fn limit_json(kind: &str, interval: &str, interval_num: u32, limit: u32) -> serde_json::Value {
    json!({
        "rateLimitType": kind,
        "interval": interval,
        "intervalNum": interval_num,
        "limit": limit,
    })
}

/// Whole seconds covering `ms`, at least 1 (a `Retry-After: 0` would invite a retry that
/// is still refused).
fn ceil_s(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// An IP as a table key, never 0: IPv4 (IPv4-mapped IPv6 included) as its bits under a tag
/// bit, IPv6 as a 63-bit hash of its bits with the top bit set. Two IPv6 addresses with one
/// hash would share their limits: over-limiting, and 2^-63 unlikely.
fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(a) => (1 << 32) | u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            mix64(mix64((b >> 64) as u64) ^ b as u64) | (1 << 63)
        }
    }
}

/// The splitmix64 finalizer: every input bit reaches every output bit.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A counter: window index (low 32 bits of it; they wrap in year 10 000 at the shortest
/// window, 10 s) over a count.
fn pack(window: u64, count: u32) -> u64 {
    ((window & 0xffff_ffff) << 32) | u64::from(count)
}

fn window(v: u64) -> u64 {
    v >> 32
}

fn ban_until(v: u64) -> u64 {
    v & BAN_UNTIL_MASK
}

/// Adds `n` to the counter in window `win` unless the count would pass `limit`. A counter
/// of an earlier window starts again from 0; one of a later window (a request with a later
/// clock came first) is the current one and is added to, so windows never go back.
/// Ok((window counted in, count after)), or Err(count now).
fn add(cell: &AtomicU64, win: u64, n: u32, limit: u32) -> Result<(u64, u32), u32> {
    let win = win & 0xffff_ffff;
    // Relaxed: each counter stands alone; nothing else is published through it.
    let mut cur = cell.load(Relaxed);
    loop {
        let (w, count) = if window(cur) >= win {
            (window(cur), cur as u32)
        } else {
            (win, 0)
        };
        let next = u64::from(count) + u64::from(n);
        if next > u64::from(limit) {
            return Err(count);
        }
        match cell.compare_exchange_weak(cur, pack(w, next as u32), Relaxed, Relaxed) {
            Ok(_) => return Ok((w, next as u32)),
            Err(actual) => cur = actual,
        }
    }
}

/// Takes back one count from window `win`, unless that window is over.
fn undo(cell: &AtomicU64, win: u64) {
    let win = win & 0xffff_ffff;
    let mut cur = cell.load(Relaxed);
    while window(cur) == win && cur as u32 > 0 {
        match cell.compare_exchange_weak(cur, cur - 1, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// The count of window `win` (or of a later one a request with a later clock started).
fn count_in(cell: &AtomicU64, win: u64) -> u32 {
    let v = cell.load(Relaxed);
    if window(v) >= win & 0xffff_ffff {
        v as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A UTC midnight, so also a minute and a 10 s boundary.
    const T0: u64 = 19_700 * DAY_MS;

    const WEIGHT_MSG: &str = "Too much request weight used; current limit is 6000 request weight \
                              per 1 MINUTE. Please use WebSocket Streams for live updates to \
                              avoid polling the API.";

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn cfg() -> RateLimitConfig {
        RateLimitConfig {
            max_accounts: 16,
            ..RateLimitConfig::default()
        }
    }

    /// A fixed seed: the slot layout of the tests does not change from run to run.
    fn limiter(cfg: RateLimitConfig) -> RateLimiter {
        RateLimiter::with_seed(cfg, 42)
    }

    /// Exhausts the IP's weight at `now_ms` and keeps sending until banned; the ban's end.
    fn get_banned(rl: &RateLimiter, a: IpAddr, now_ms: u64) -> u64 {
        assert_eq!(rl.request(a, 6000, now_ms), Ok(6000));
        for _ in 0..REFUSALS_BEFORE_BAN {
            assert_eq!(rl.request(a, 1, now_ms).unwrap_err().status, 429);
        }
        let e = rl.request(a, 1, now_ms).unwrap_err();
        assert_eq!((e.status, e.code), (418, -1003));
        let until = now_ms + e.retry_after_s.unwrap() * 1000;
        assert_eq!(
            e.msg,
            format!(
                "Way too much request weight used; IP banned until {until}. Please use \
                 WebSocket Streams for live updates to avoid bans."
            )
        );
        until
    }

    #[test]
    fn limiter_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RateLimiter>();
    }

    #[test]
    fn weight_is_counted_up_to_the_limit_exactly() {
        let rl = limiter(cfg());
        let a = ip(1);
        assert_eq!(rl.used_weight(a, T0), 0);
        assert_eq!(rl.request(a, 5999, T0), Ok(5999));
        assert_eq!(rl.request(a, 1, T0 + 1), Ok(6000));
        let e = rl.request(a, 1, T0 + 2).unwrap_err();
        assert_eq!((e.status, e.code, e.msg.as_str()), (429, -1003, WEIGHT_MSG));
        // Refused requests are not charged.
        assert_eq!(rl.used_weight(a, T0 + 3), 6000);
        // Other IPs are not affected.
        assert_eq!(rl.used_weight(ip(2), T0), 0);
        assert_eq!(rl.request(ip(2), 5990, T0), Ok(5990));
        // A request heavier than what is left is refused whole; a lighter one still fits.
        assert_eq!(rl.request(ip(2), 20, T0).unwrap_err().status, 429);
        assert_eq!(rl.request(ip(2), 10, T0), Ok(6000));
        // As is one heavier than the limit itself.
        assert_eq!(rl.request(ip(3), 6001, T0).unwrap_err().status, 429);
        assert_eq!(rl.request(ip(3), 0, T0), Ok(0));
    }

    #[test]
    fn weight_window_is_the_wall_clock_minute() {
        let rl = limiter(cfg());
        let a = ip(1);
        // Used half a minute in: the window still ends at the minute, not 60 s later.
        assert_eq!(rl.request(a, 6000, T0 + 30_000), Ok(6000));
        assert_eq!(rl.request(a, 1, T0 + 59_999).unwrap_err().status, 429);
        assert_eq!(rl.used_weight(a, T0 + 59_999), 6000);
        assert_eq!(rl.used_weight(a, T0 + 60_000), 0);
        assert_eq!(rl.request(a, 1, T0 + 60_000), Ok(1));
        assert_eq!(rl.used_weight(a, T0 + 60_000), 1);
        // A request stamped a little earlier (another thread's clock) counts in the newer
        // window instead of starting the old one again.
        assert_eq!(rl.request(a, 1, T0 + 59_998), Ok(2));
        assert_eq!(rl.used_weight(a, T0 + 60_001), 2);
    }

    #[test]
    fn retry_after_is_the_seconds_to_the_next_minute() {
        let rl = limiter(cfg());
        let a = ip(1);
        assert_eq!(rl.request(a, 6000, T0), Ok(6000));
        let retry = |now_ms| rl.request(a, 1, now_ms).unwrap_err().retry_after_s;
        assert_eq!(retry(T0), Some(60));
        assert_eq!(retry(T0 + 30_001), Some(30));
        assert_eq!(retry(T0 + 59_500), Some(1));
        assert_eq!(retry(T0 + 59_999), Some(1));
    }

    #[test]
    fn ip_that_keeps_sending_after_429_is_banned() {
        let rl = limiter(cfg());
        let a = ip(1);
        let t = T0 + 10_000;
        let until = get_banned(&rl, a, t);
        assert_eq!(until, t + 120_000);
        // The ban outlives the minute and refuses even the lightest request, uncharged.
        let e = rl.request(a, 1, T0 + 60_000).unwrap_err();
        assert_eq!((e.status, e.retry_after_s), (418, Some(70)));
        assert_eq!(
            rl.request(a, 0, until - 1).unwrap_err().retry_after_s,
            Some(1)
        );
        assert_eq!(rl.used_weight(a, until - 1), 0);
        assert_eq!(rl.request(a, 1, until), Ok(1));
        // Other IPs go on.
        assert_eq!(rl.request(ip(2), 1, t), Ok(1));
    }

    #[test]
    fn refusals_of_another_minute_do_not_count_toward_a_ban() {
        let rl = limiter(cfg());
        let a = ip(1);
        for minute in 0..3 {
            let t = T0 + minute * MINUTE_MS;
            assert_eq!(rl.request(a, 6000, t), Ok(6000));
            for _ in 0..REFUSALS_BEFORE_BAN {
                assert_eq!(rl.request(a, 1, t).unwrap_err().status, 429);
            }
        }
    }

    #[test]
    fn bans_double_up_to_the_cap_and_are_forgotten_after_it() {
        let rl = limiter(RateLimitConfig {
            max_ban_s: 600,
            ..cfg()
        });
        let a = ip(1);
        let mut t = T0;
        for ban_s in [120, 240, 480, 600, 600] {
            let until = get_banned(&rl, a, t);
            assert_eq!(until - t, ban_s * 1000);
            t = until;
        }
        // A ban that starts max_ban_s after the last one ended is a first ban again.
        t += 600_000;
        assert_eq!(get_banned(&rl, a, t) - t, 120_000);

        // Binance's scale: 2 minutes doubling to 3 days.
        let rl = limiter(cfg());
        let mut t = T0;
        for level in 0..16 {
            let until = get_banned(&rl, a, t);
            assert_eq!(until - t, (120_000u64 << level).min(3 * DAY_MS));
            t = until;
        }
    }

    #[test]
    fn orders_are_limited_per_10_seconds() {
        let rl = limiter(cfg());
        for i in 1..=100 {
            assert_eq!(rl.order(0, T0 + u64::from(i)), Ok((i, i)));
        }
        let e = rl.order(0, T0 + 9_999).unwrap_err();
        assert_eq!(
            e,
            ApiError::new(
                429,
                -1015,
                "Too many new orders; current limit is 100 orders per 10 SECOND."
            )
        );
        // Refused orders are not counted.
        assert_eq!(rl.order_counts(0, T0 + 9_999), (100, 100));
        // Other accounts go on.
        assert_eq!(rl.order(1, T0 + 9_999), Ok((1, 1)));
        // The window is aligned to a multiple of 10 s.
        assert_eq!(rl.order_counts(0, T0 + 10_000), (0, 100));
        assert_eq!(rl.order(0, T0 + 10_000), Ok((1, 101)));
    }

    #[test]
    fn orders_are_limited_per_utc_day() {
        let rl = limiter(RateLimitConfig {
            orders_per_day: 250,
            ..cfg()
        });
        for (window, n) in [(0, 100), (1, 100), (2, 50)] {
            for _ in 0..n {
                rl.order(3, T0 + window * TEN_S_MS).unwrap();
            }
        }
        assert_eq!(rl.order_counts(3, T0 + 20_000), (50, 250));
        let e = rl.order(3, T0 + 20_000).unwrap_err();
        assert_eq!(
            e,
            ApiError::new(
                429,
                -1015,
                "Too many new orders; current limit is 250 orders per DAY."
            )
        );
        // Not counted in either window.
        assert_eq!(rl.order_counts(3, T0 + 20_000), (50, 250));
        assert_eq!(rl.order(3, T0 + DAY_MS - 1).unwrap_err().code, -1015);
        assert_eq!(rl.order_counts(3, T0 + DAY_MS - 1), (0, 250));
        assert_eq!(rl.order(3, T0 + DAY_MS), Ok((1, 1)));
    }

    #[test]
    fn accounts_past_the_table_are_an_internal_error() {
        let rl = limiter(cfg());
        let e = rl.order(16, T0).unwrap_err();
        assert_eq!((e.status, e.code), (500, -1000));
        assert_eq!(rl.order_counts(16, T0), (0, 0));
        assert_eq!(rl.order(15, T0), Ok((1, 1)));
    }

    #[test]
    fn ipv6_addresses_are_limited_apart_and_mapped_ipv4_as_ipv4() {
        let rl = limiter(cfg());
        let v6 = |n: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
        assert_eq!(rl.request(v6(1), 6000, T0), Ok(6000));
        assert_eq!(rl.request(v6(1), 1, T0).unwrap_err().status, 429);
        assert_eq!(rl.request(v6(2), 1, T0), Ok(1));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        assert_eq!(rl.request(ip(7), 5, T0), Ok(5));
        assert_eq!(rl.request(mapped, 5, T0), Ok(10));
    }

    #[test]
    fn more_ips_than_slots_are_never_under_limited() {
        let rl = limiter(RateLimitConfig {
            ip_slots: 64,
            ..cfg()
        });
        // A minute of 1000 IPs fills the table and overflows into shared slots.
        for n in 0..1000 {
            assert!(rl.request(ip(n), 1, T0).is_ok());
        }
        // In the next minute those slots are stale: recent IPs take them over, each limited
        // on its own.
        let t = T0 + MINUTE_MS;
        for n in 2000..2016 {
            assert_eq!(rl.request(ip(n), 6000, t), Ok(6000), "ip {n}");
            assert_eq!(rl.request(ip(n), 1, t).unwrap_err().status, 429);
            assert_eq!(rl.used_weight(ip(n), t), 6000);
        }
        // 500 IPs active in one minute: a slot grants the limit once, shared or not.
        let t = T0 + 2 * MINUTE_MS;
        let mut granted = 0;
        for n in 3000..3500 {
            if rl.request(ip(n), 6000, t).is_ok() {
                granted += 1;
            }
            let e = rl.request(ip(n), 1, t).unwrap_err();
            // Sharers are refused, never banned for their neighbours.
            assert_eq!(e.status, 429);
        }
        assert!((16..=64).contains(&granted), "granted {granted}");
    }

    #[test]
    fn concurrent_requests_are_all_counted() {
        let rl = limiter(RateLimitConfig {
            request_weight_per_minute: 1_000_000,
            ..cfg()
        });
        let used: Vec<Vec<u32>> = std::thread::scope(|s| {
            let rl = &rl;
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(move || {
                        (0..10_000)
                            .map(|_| rl.request(ip(1), 1, T0).unwrap())
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        // Every request saw a count of its own: none lost, none doubled.
        let mut all: Vec<u32> = used.into_iter().flatten().collect();
        all.sort_unstable();
        assert!(all.iter().copied().eq(1..=40_000));
        assert_eq!(rl.used_weight(ip(1), T0), 40_000);

        // Racing at the limit: exactly the limit is granted.
        let rl = limiter(RateLimitConfig {
            request_weight_per_minute: 30_000,
            ..cfg()
        });
        let granted: usize = std::thread::scope(|s| {
            let rl = &rl;
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(move || {
                        (0..10_000)
                            .filter(|_| rl.request(ip(1), 1, T0).is_ok())
                            .count()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(granted, 30_000);

        // Four threads claiming slots for the same new IPs at once: one slot each.
        let rl = limiter(cfg());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        for n in 0..256 {
                            rl.request(ip(n), 1, T0).unwrap();
                        }
                    }
                });
            }
        });
        for n in 0..256 {
            assert_eq!(rl.used_weight(ip(n), T0), 100, "ip {n}");
        }
    }

    #[test]
    fn concurrent_orders_are_counted_exactly() {
        let rl = limiter(cfg());
        let ok = |rl: &RateLimiter| -> Vec<(u32, u32)> {
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            (0..100)
                                .filter_map(|_| rl.order(0, T0).ok())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .flat_map(|t| t.join().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let mut counts: Vec<u32> = ok(&rl).into_iter().map(|(c10s, _)| c10s).collect();
        counts.sort_unstable();
        assert!(counts.iter().copied().eq(1..=100));
        assert_eq!(rl.order_counts(0, T0), (100, 100));

        // At the day limit, the 10 s counts taken back leave both counts exact.
        let rl = limiter(RateLimitConfig {
            orders_per_10s: 1000,
            orders_per_day: 150,
            ..cfg()
        });
        assert_eq!(ok(&rl).len(), 150);
        assert_eq!(rl.order_counts(0, T0), (150, 150));
    }

    #[test]
    fn exchange_info_limits_are_binances() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        assert_eq!(
            rl.exchange_info_limits(),
            json!([
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "SECOND",
                    "intervalNum": 10,
                    "limit": 100,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "DAY",
                    "intervalNum": 1,
                    "limit": 200000,
                },
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ])
        );
    }

    #[test]
    fn ws_rate_limits_carry_the_counts() {
        let rl = limiter(cfg());
        assert_eq!(
            rl.ws_rate_limits(12, None),
            json!([{
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
                "count": 12,
            }])
        );
        assert_eq!(
            rl.ws_rate_limits(1, Some((3, 40))),
            json!([
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                    "count": 1,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "SECOND",
                    "intervalNum": 10,
                    "limit": 100,
                    "count": 3,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "DAY",
                    "intervalNum": 1,
                    "limit": 200000,
                    "count": 40,
                },
            ])
        );
    }
}
