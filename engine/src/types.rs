//! Identifiers and small value types shared by commands, events and the book.

use std::fmt;

/// An account. Dense: `0..EngineConfig::max_accounts`.
pub type AccountId = u32;
/// An asset, assigned in the order `AddAsset` commands are applied (0, 1, 2, ...).
pub type AssetId = u32;
/// A market, assigned in the order `AddMarket` commands are applied (0, 1, 2, ...).
pub type MarketId = u32;
/// An order, assigned by the engine from one exchange-wide counter starting at 1.
pub type OrderId = u64;
/// A trade, assigned by the engine from one exchange-wide counter starting at 1.
pub type TradeId = u64;
/// A pending withdrawal, chosen by the caller (custody or settlement); unique while pending.
pub type WithdrawalId = u64;
/// An on-chain deposit credited before it is final, chosen by the caller (custody); unique
/// while pending, so a replayed credit is refused instead of paid twice.
pub type DepositId = u64;
/// A permission bit (0..64) an account may carry; RWA markets may require one.
pub type PermissionId = u8;

/// Number of distinct permission bits an account can carry.
pub const MAX_PERMISSIONS: u8 = 64;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum OrderType {
    Limit,
    Market,
    /// Post-only: rejected if it would take liquidity on arrival.
    LimitMaker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
    /// Good till the given time (ns, sequencer clock); expired by `Command::Tick`.
    Gtd {
        expire_ns: u64,
    },
}

/// Self-trade prevention, Binance semantics: the taker's mode decides what happens when the
/// taker would match a resting order of the same account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StpMode {
    /// Self-trades are allowed.
    None,
    /// The taker's remaining quantity expires; the maker stays.
    ExpireTaker,
    /// The maker expires; the taker goes on matching.
    ExpireMaker,
    /// Both expire.
    ExpireBoth,
}

/// How much an order is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Quantity {
    /// Base quantity in lots.
    Base(u64),
    /// Quote amount in quote minor units (Binance `quoteOrderQty`); market orders only.
    Quote(u64),
}

/// Max length of a client order id (Binance: 36).
pub const CLIENT_ORDER_ID_MAX_LEN: usize = 36;

/// A client order id stored inline (no allocation): 1-36 chars of `[A-Za-z0-9._:/-]`, or
/// empty for "none given". Construction checks the charset; the engine checks again,
/// since a command may come from a journal or a binary file.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientOrderId {
    len: u8,
    bytes: [u8; CLIENT_ORDER_ID_MAX_LEN],
}

/// Why a client order id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidClientOrderId;

impl ClientOrderId {
    pub const NONE: ClientOrderId = ClientOrderId {
        len: 0,
        bytes: [0; CLIENT_ORDER_ID_MAX_LEN],
    };

    pub fn new(s: &str) -> Result<Self, InvalidClientOrderId> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > CLIENT_ORDER_ID_MAX_LEN || !b.iter().all(|&c| Self::allowed(c))
        {
            return Err(InvalidClientOrderId);
        }
        let mut bytes = [0; CLIENT_ORDER_ID_MAX_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(ClientOrderId {
            len: b.len() as u8,
            bytes,
        })
    }

    /// Builds from raw parts without checking; `is_valid` tells whether the engine accepts it.
    pub fn from_raw(len: u8, bytes: [u8; CLIENT_ORDER_ID_MAX_LEN]) -> Self {
        ClientOrderId { len, bytes }
    }

    pub fn raw(&self) -> (u8, [u8; CLIENT_ORDER_ID_MAX_LEN]) {
        (self.len, self.bytes)
    }

    fn allowed(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'/' | b'-')
    }

    pub fn is_none(&self) -> bool {
        self.len == 0
    }

    /// True for "none" and for a well-formed id; false for anything a raw source smuggled in.
    #[inline]
    pub fn is_valid(&self) -> bool {
        let n = self.len as usize;
        if n == 0 {
            // The common case on the order path: three word loads, not 36 byte checks.
            let b = &self.bytes;
            let lo = u128::from_ne_bytes(b[..16].try_into().expect("16 bytes"));
            let hi = u128::from_ne_bytes(b[16..32].try_into().expect("16 bytes"));
            let tail = u32::from_ne_bytes(b[32..].try_into().expect("4 bytes"));
            return lo | hi | tail as u128 == 0;
        }
        n <= CLIENT_ORDER_ID_MAX_LEN
            && self.bytes[..n].iter().all(|&c| Self::allowed(c))
            && self.bytes[n..].iter().all(|&c| c == 0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(CLIENT_ORDER_ID_MAX_LEN)]
    }

    pub fn as_str(&self) -> &str {
        // Valid ids are ASCII; an invalid raw id shows as empty rather than panicking.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Default for ClientOrderId {
    fn default() -> Self {
        Self::NONE
    }
}

impl fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// As a JSON string: `""` for none; anything else must be a valid id.
impl serde::Serialize for ClientOrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ClientOrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Ok(ClientOrderId::NONE);
        }
        ClientOrderId::new(&s).map_err(|_| {
            serde::de::Error::custom("client order id: 1-36 characters of [A-Za-z0-9._:/-]")
        })
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_id_charset_and_length() {
        assert!(ClientOrderId::new("abc-DEF_09.:/").is_ok());
        assert!(ClientOrderId::new(&"x".repeat(36)).is_ok());
        assert_eq!(
            ClientOrderId::new(&"x".repeat(37)),
            Err(InvalidClientOrderId)
        );
        assert_eq!(ClientOrderId::new(""), Err(InvalidClientOrderId));
        assert_eq!(ClientOrderId::new("a b"), Err(InvalidClientOrderId));
        assert_eq!(ClientOrderId::new("é"), Err(InvalidClientOrderId));
        let id = ClientOrderId::new("my-order.1").unwrap();
        assert_eq!(id.as_str(), "my-order.1");
        assert!(id.is_valid());
        assert!(ClientOrderId::NONE.is_valid() && ClientOrderId::NONE.is_none());
        let mut raw = [0u8; 36];
        raw[0] = b' ';
        assert!(!ClientOrderId::from_raw(1, raw).is_valid());
        assert!(!ClientOrderId::from_raw(40, [b'a'; 36]).is_valid());
    }

    #[test]
    fn client_order_id_json_is_a_checked_string() {
        let id = ClientOrderId::new("a.b-1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"a.b-1\"");
        assert_eq!(
            serde_json::from_str::<ClientOrderId>("\"a.b-1\"").unwrap(),
            id
        );
        assert_eq!(
            serde_json::from_str::<ClientOrderId>("\"\"").unwrap(),
            ClientOrderId::NONE
        );
        assert!(serde_json::from_str::<ClientOrderId>("\"a b\"").is_err());
    }
}
