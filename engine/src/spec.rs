//! Reference data: assets, markets, and the engine's capacities.
//!
//! Everything inside is an integer. An asset's amounts are in minor units
//! (`10^-decimals` of one whole unit). A market's prices are in ticks and its quantities in
//! lots; `MarketSpec::quote_per_tick_lot` turns one tick times one lot into quote minor units,
//! so a notional is `price_ticks * qty_lots * quote_per_tick_lot`, exact, in `u128`.

use rust_decimal::Decimal;

use crate::types::{AssetId, PermissionId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AssetClass {
    Stablecoin,
    Crypto,
    /// Tokenized real-world asset (T-bills, equities, ...).
    Rwa,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AssetSpec {
    /// `BTC`, `USDT`, ...: 1-16 chars of `[A-Z0-9]`.
    pub symbol: String,
    /// Minor units per whole unit = `10^decimals`; at most 18.
    pub decimals: u8,
    pub class: AssetClass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MarketStatus {
    /// Orders are placed, matched, amended and cancelled.
    Trading,
    /// Frozen: no place, amend or cancel by users; GTD expiry (`Tick`) still runs.
    Halted,
    /// Cancels and quantity-down amends only.
    CancelOnly,
}

/// A market's fee schedule, in basis points of the amount each side receives.
/// A negative maker fee is a rebate; `-maker_fee_bps <= taker_fee_bps` always holds, so a
/// rebate is always paid out of the taker fee of the same trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FeeSchedule {
    pub maker_fee_bps: i32,
    pub taker_fee_bps: i32,
}

/// Max fee: 10% of what a side receives.
pub const MAX_FEE_BPS: i32 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MarketSpec {
    /// Binance-style symbol: `BTCUSDT`; 1-20 chars of `[A-Z0-9]`.
    pub symbol: String,
    pub base: AssetId,
    pub quote: AssetId,
    /// Price tick, in quote minor units per one whole base unit.
    pub tick_size: u64,
    /// Quantity step, in base minor units.
    pub lot_size: u64,
    /// PRICE_FILTER bounds, in ticks (inclusive; at least 1).
    pub min_price_ticks: u64,
    pub max_price_ticks: u64,
    /// LOT_SIZE bounds, in lots (inclusive; at least 1).
    pub min_qty_lots: u64,
    pub max_qty_lots: u64,
    /// NOTIONAL bounds, in quote minor units (inclusive).
    pub min_notional: u64,
    pub max_notional: u64,
    /// PERCENT_PRICE: max distance of a limit price from the reference price (the admin's
    /// reference price if set, else the last trade price), in basis points; 0 = no band.
    /// Market orders never trade beyond the band either.
    pub price_band_bps: u32,
    /// MAX_NUM_ORDERS: open (resting) orders per account in this market, 1 to 65,535.
    pub max_open_orders: u32,
    pub status: MarketStatus,
    pub fees: FeeSchedule,
    /// Only accounts carrying this permission may place orders (RWA eligibility).
    pub required_permission: Option<PermissionId>,
}

/// Why a spec was refused by `AddAsset` / `AddMarket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SpecError {
    BadSymbol,
    DuplicateSymbol,
    BadDecimals,
    UnknownAsset,
    SameBaseAndQuote,
    /// tick × lot is not a whole number of quote minor units, or is zero.
    TickLotNotWhole,
    BadPriceBounds,
    BadQtyBounds,
    BadNotionalBounds,
    BadFees,
    BadPermission,
    BadMaxOpenOrders,
}

impl AssetSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_symbol(&self.symbol, 16) {
            return Err(SpecError::BadSymbol);
        }
        if self.decimals > 18 {
            return Err(SpecError::BadDecimals);
        }
        Ok(())
    }
}

fn valid_symbol(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl MarketSpec {
    /// Quote minor units of one tick times one lot, given the base asset's decimals; `None`
    /// if that is not a whole, non-zero number (then prices and quantities could not be
    /// exact, and the market is refused).
    pub fn quote_per_tick_lot(&self, base_decimals: u8) -> Option<u64> {
        let product = (self.tick_size as u128).checked_mul(self.lot_size as u128)?;
        let unit = 10u128.pow(base_decimals as u32);
        if product == 0 || product % unit != 0 {
            return None;
        }
        u64::try_from(product / unit).ok()
    }

    /// Checks the spec against the assets it names (`decimals_of(asset)` is `None` for an
    /// unknown asset). Returns `quote_per_tick_lot`.
    pub fn validate(&self, decimals_of: impl Fn(AssetId) -> Option<u8>) -> Result<u64, SpecError> {
        if !valid_symbol(&self.symbol, 20) {
            return Err(SpecError::BadSymbol);
        }
        let base_decimals = decimals_of(self.base).ok_or(SpecError::UnknownAsset)?;
        decimals_of(self.quote).ok_or(SpecError::UnknownAsset)?;
        if self.base == self.quote {
            return Err(SpecError::SameBaseAndQuote);
        }
        let per = self
            .quote_per_tick_lot(base_decimals)
            .ok_or(SpecError::TickLotNotWhole)?;
        if self.min_price_ticks == 0 || self.min_price_ticks > self.max_price_ticks {
            return Err(SpecError::BadPriceBounds);
        }
        if self.min_qty_lots == 0 || self.min_qty_lots > self.max_qty_lots {
            return Err(SpecError::BadQtyBounds);
        }
        if self.min_notional > self.max_notional {
            return Err(SpecError::BadNotionalBounds);
        }
        let f = self.fees;
        if f.taker_fee_bps < 0
            || f.taker_fee_bps > MAX_FEE_BPS
            || f.maker_fee_bps > MAX_FEE_BPS
            || f.maker_fee_bps < -f.taker_fee_bps
        {
            return Err(SpecError::BadFees);
        }
        if matches!(self.required_permission, Some(p) if p >= crate::types::MAX_PERMISSIONS) {
            return Err(SpecError::BadPermission);
        }
        // Open orders are counted per (account, market) in 16 bits.
        if self.max_open_orders == 0 || self.max_open_orders > u16::MAX as u32 {
            return Err(SpecError::BadMaxOpenOrders);
        }
        Ok(per)
    }
}

/// Capacities of one `Exchange`, all preallocated at construction. Past any of them a
/// command is rejected, never grown into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// Accounts are `0..max_accounts`.
    pub max_accounts: u32,
    pub max_assets: u32,
    pub max_markets: u32,
    /// Resting orders across all markets. A slot costs 80 bytes plus 16 for the order-id
    /// and client-id indexes at a power of two (up to 32 elsewhere: the indexes round up).
    pub max_orders: u32,
    /// Resting orders in one market.
    pub max_orders_per_market: u32,
    /// Distinct price levels on one side of one market.
    pub max_levels_per_side: u32,
    /// GTD orders resting at once.
    pub max_gtd_orders: u32,
    /// Withdrawals held at once.
    pub max_pending_withdrawals: u32,
    /// Deposits credited and not yet settled or reversed, at once.
    pub max_pending_deposits: u32,
    /// Receives every fee; an ordinary account otherwise.
    pub fee_account: crate::types::AccountId,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_accounts: 1 << 16,
            max_assets: 64,
            max_markets: 256,
            max_orders: 1 << 20,
            max_orders_per_market: 1 << 20,
            max_levels_per_side: 1 << 16,
            max_gtd_orders: 1 << 16,
            max_pending_withdrawals: 1 << 16,
            max_pending_deposits: 1 << 16,
            fee_account: 0,
        }
    }
}

/// Why a decimal from outside could not become an engine integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UnitError {
    /// Negative, or too large for the engine's integers.
    OutOfRange,
    /// Not an exact multiple of the step (tick, lot, or minor unit).
    NotAMultiple,
}

/// Exact conversion of a decimal `value` into a count of `step`s, where `step` is given as
/// `step_minor / 10^decimals`. Never rounds: a remainder is `NotAMultiple`.
pub fn decimal_to_steps(value: Decimal, step_minor: u64, decimals: u8) -> Result<u64, UnitError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(UnitError::OutOfRange);
    }
    let scale = Decimal::from(
        10u64
            .checked_pow(decimals as u32)
            .ok_or(UnitError::OutOfRange)?,
    );
    let minor = value.checked_mul(scale).ok_or(UnitError::OutOfRange)?;
    if !minor.fract().is_zero() {
        return Err(UnitError::NotAMultiple);
    }
    let minor: u128 = minor
        .trunc()
        .try_into()
        .map_err(|_| UnitError::OutOfRange)?;
    let step = step_minor as u128;
    if step == 0 {
        return Err(UnitError::OutOfRange);
    }
    if !minor.is_multiple_of(step) {
        return Err(UnitError::NotAMultiple);
    }
    u64::try_from(minor / step).map_err(|_| UnitError::OutOfRange)
}

/// The decimal value of `steps` steps of `step_minor / 10^decimals`.
pub fn steps_to_decimal(steps: u64, step_minor: u64, decimals: u8) -> Decimal {
    let minor = steps as u128 * step_minor as u128;
    // 10^18 * u64::MAX fits Decimal's 96-bit mantissa only for small values; saturate the
    // scale path through i128 which Decimal accepts up to 96 bits.
    Decimal::from_i128_with_scale(minor as i128, decimals as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn decimals_convert_exactly_or_not_at_all() {
        // tick 0.01 USDT with 8 decimals = 1_000_000 minor units
        assert_eq!(decimal_to_steps(d("65000.01"), 1_000_000, 8), Ok(6_500_001));
        assert_eq!(
            decimal_to_steps(d("65000.015"), 1_000_000, 8),
            Err(UnitError::NotAMultiple)
        );
        assert_eq!(
            decimal_to_steps(d("0.000000001"), 1, 8),
            Err(UnitError::NotAMultiple)
        );
        assert_eq!(decimal_to_steps(d("-1"), 1, 8), Err(UnitError::OutOfRange));
        assert_eq!(decimal_to_steps(d("0"), 1, 8), Ok(0));
        assert_eq!(steps_to_decimal(6_500_001, 1_000_000, 8), d("65000.01"));
        assert_eq!(
            decimal_to_steps(d("1e20"), 1, 8),
            Err(UnitError::OutOfRange)
        );
    }

    fn btcusdt() -> MarketSpec {
        MarketSpec {
            symbol: "BTCUSDT".into(),
            base: 0,
            quote: 1,
            tick_size: 1_000_000,
            lot_size: 1_000,
            min_price_ticks: 1,
            max_price_ticks: 100_000_000,
            min_qty_lots: 1,
            max_qty_lots: 1_000_000_000,
            min_notional: 0,
            max_notional: u64::MAX,
            price_band_bps: 0,
            max_open_orders: 200,
            status: MarketStatus::Trading,
            fees: FeeSchedule {
                maker_fee_bps: -1,
                taker_fee_bps: 5,
            },
            required_permission: None,
        }
    }

    #[test]
    fn market_spec_validation() {
        let dec = |a: AssetId| (a < 2).then_some(8u8);
        assert_eq!(btcusdt().validate(dec), Ok(10));
        let mut m = btcusdt();
        m.lot_size = 1; // 0.01 × 1e-8 BTC is a tenth of a minor unit
        assert_eq!(m.validate(dec), Err(SpecError::TickLotNotWhole));
        let mut m = btcusdt();
        m.fees = FeeSchedule {
            maker_fee_bps: -6,
            taker_fee_bps: 5,
        };
        assert_eq!(m.validate(dec), Err(SpecError::BadFees));
        let mut m = btcusdt();
        m.quote = 7;
        assert_eq!(m.validate(dec), Err(SpecError::UnknownAsset));
        let mut m = btcusdt();
        m.symbol = "btc usdt".into();
        assert_eq!(m.validate(dec), Err(SpecError::BadSymbol));
        let mut m = btcusdt();
        m.min_qty_lots = 0;
        assert_eq!(m.validate(dec), Err(SpecError::BadQtyBounds));
    }
}
