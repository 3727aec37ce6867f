//! The native command file, `.fcmd`: a `Flow` as fixed-size little-endian records, so that a
//! benchmark reads it with one `read_exact` per record and no parsing to speak of.
//!
//! # Layout
//!
//! The file is a sequence of 144-byte records: one header record, then `asset_count` asset
//! records, `market_count` market records, `command_count` command records,
//! `skipped_count` skipped records and `expected_maker_count` expected-maker records, in that
//! order, and nothing after them. File size = 144 × (1 + the five counts).
//!
//! All integers are little-endian; `i32` is two's complement. Booleans are one byte, 0 or 1.
//! Reserved bytes are written as 0 and ignored on reading. Text is a length byte and UTF-8
//! bytes, zero-padded to the field's size. Offsets below are from the start of the record.
//!
//! ## Header record
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FCMD` (`46 43 4D 44`) |
//! | 4 | 2 | format version, `u16` = 1 |
//! | 6 | 2 | record size, `u16` = 144 |
//! | 8 | 4 | asset_count `u32` |
//! | 12 | 4 | market_count `u32` |
//! | 16 | 8 | command_count `u64` |
//! | 24 | 4 | skipped_count `u32` |
//! | 28 | 4 | expected_maker_count `u32` |
//! | 32 | 4 | accounts `u32` (`Flow::accounts`) |
//! | 36 | 4 | warmup `u32` (`Flow::warmup`: leading commands not measured; at most command_count) |
//! | 40 | 8 | funding `u64` |
//! | 48 | 1 | name length (0..=95) |
//! | 49 | 95 | name, UTF-8 |
//!
//! ## Every other record
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | record type: 1 asset, 2 market, 3 command, 4 skipped, 5 expected maker |
//! | 1 | 1 | command kind (command records; else 0) |
//! | 2 | 6 | reserved |
//! | 8 | 8 | seq `u64` (command records; else 0) |
//! | 16 | 8 | ts_ns `u64` (command records; else 0) |
//! | 24 | 120 | payload, by record type and command kind |
//!
//! An asset record's payload is an asset spec, a market record's a market spec, laid out as
//! in `AddAsset` and `AddMarket` below. Skipped record: 24 `u64` count, 32 reason length
//! (0..=111), 33..144 reason (UTF-8). Expected-maker record: 24 `u32` index into the
//! commands (0-based) of the taker, 32 `u64` flow order id of the maker.
//!
//! Command kinds (byte 1) and their payloads; fields not listed are reserved:
//!
//! | kind | command | payload |
//! |---|---|---|
//! | 0 | PlaceOrder | 24 account `u32`, 28 market `u32`, 32 side, 33 order type, 34 tif, 35 quantity kind, 36 stp, 37 has price, 38 client id length, 40 quantity `u64`, 48 price `u64` (0 if none), 56 GTD expire_ns `u64` (0 unless GTD), 64..100 client id bytes |
//! | 1 | CancelOrder | 24 account, 28 market, 32 target kind, 38 client id length, 40 target order id `u64` (0 for a client id), 64..100 client id bytes |
//! | 2 | CancelAll | 24 account, 28 market (0 if none), 37 has market |
//! | 3 | AmendOrder | as CancelOrder, plus 37 has new price, 48 new price `u64` (0 if none), 56 new qty `u64` |
//! | 4 | Deposit | 24 account, 28 asset `u32`, 40 amount `u64` |
//! | 5 | WithdrawHold | 24 account, 28 asset, 40 amount `u64`, 48 withdrawal id `u64` |
//! | 6 | WithdrawRelease | 48 withdrawal id `u64` |
//! | 7 | WithdrawFinalize | 48 withdrawal id `u64` |
//! | 8 | AddAsset | 24 decimals `u8`, 25 asset class, 26 symbol length (0..=20), 28..48 symbol |
//! | 9 | AddMarket | 24 base `u32`, 28 quote `u32`, 32 status, 33 has permission, 34 permission `u8`, 35 symbol length (0..=20), 36 price_band_bps `u32`, 40 tick_size, 48 lot_size, 56 min_price_ticks, 64 max_price_ticks, 72 min_qty_lots, 80 max_qty_lots, 88 min_notional, 96 max_notional (all `u64`), 104 max_open_orders `u32`, 108 maker_fee_bps `i32`, 112 taker_fee_bps `i32`, 116..136 symbol |
//! | 10 | SetMarketStatus | 28 market, 32 status, 33 cancel_open |
//! | 11 | SetReferencePrice | 28 market, 37 has price, 48 price `u64` (0 if none) |
//! | 12 | GrantPermission | 24 account, 32 permission `u8` |
//! | 13 | RevokePermission | 24 account, 32 permission `u8` |
//! | 14 | Tick | none |
//! | 15 | DepositCredit | 24 account, 28 asset, 40 amount `u64`, 48 deposit id `u64` |
//! | 16 | DepositSettle | 48 deposit id `u64` |
//! | 17 | DepositReverse | 48 deposit id `u64` |
//!
//! Kinds 15-17 came after the rest, within format version 1: files without them read as
//! before, and a reader older than them refuses them as a bad command kind.
//!
//! Enumerations, one byte each: side 0 Buy, 1 Sell; order type 0 Limit, 1 Market,
//! 2 LimitMaker; tif 0 Gtc, 1 Ioc, 2 Fok, 3 Gtd; quantity kind 0 Base (lots), 1 Quote (quote
//! minor units); stp 0 None, 1 ExpireTaker, 2 ExpireMaker, 3 ExpireBoth; target kind 0
//! order id, 1 client order id; market status 0 Trading, 1 Halted, 2 CancelOnly; asset
//! class 0 Stablecoin, 1 Crypto, 2 Rwa.
//!
//! A client order id is stored raw (length byte and 36 bytes, as `ClientOrderId::raw`), not
//! checked on reading: the engine checks it, and a file may carry invalid ids on purpose.

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};

use super::Flow;
use crate::command::{Command, OrderRef, PlaceOrder, Sequenced};
use crate::spec::{AssetClass, AssetSpec, FeeSchedule, MarketSpec, MarketStatus};
use crate::types::*;

pub const MAGIC: [u8; 4] = *b"FCMD";
pub const VERSION: u16 = 1;
pub const RECORD_SIZE: usize = 144;

/// Longest flow name, reason text and symbol the format holds, in bytes.
pub const MAX_NAME_LEN: usize = 95;
pub const MAX_REASON_LEN: usize = 111;
pub const MAX_SYMBOL_LEN: usize = 20;

const T_ASSET: u8 = 1;
const T_MARKET: u8 = 2;
const T_COMMAND: u8 = 3;
const T_SKIPPED: u8 = 4;
const T_EXPECTED_MAKER: u8 = 5;

type Rec = [u8; RECORD_SIZE];

/// Why a file could not be read as a flow. Record numbers count from 0 (the header).
#[derive(Debug)]
pub enum NativeError {
    Io(io::Error),
    /// The first four bytes are not `FCMD`.
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    BadRecordSize(u16),
    /// The file ends inside or before this record.
    Truncated {
        record: u64,
    },
    /// Bytes after the last record the header announces.
    TrailingData {
        record: u64,
    },
    /// A record of the wrong type for its place in the file.
    BadRecordType {
        record: u64,
        expected: u8,
        found: u8,
    },
    /// A byte that is none of its enumeration's values.
    BadEnum {
        record: u64,
        field: &'static str,
        value: u8,
    },
    /// A text field longer than its room, or not UTF-8.
    BadText {
        record: u64,
        field: &'static str,
    },
    /// A count or index beyond the commands of the file.
    OutOfRange {
        record: u64,
        field: &'static str,
    },
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NativeError::Io(e) => write!(f, "reading .fcmd: {e}"),
            NativeError::BadMagic(m) => {
                write!(f, "not an .fcmd file: magic {m:02x?}, expected \"FCMD\"")
            }
            NativeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    ".fcmd format version {v} is not supported (this reader: {VERSION})"
                )
            }
            NativeError::BadRecordSize(s) => {
                write!(f, ".fcmd record size {s}, expected {RECORD_SIZE}")
            }
            NativeError::Truncated { record } => write!(
                f,
                "truncated .fcmd file: record {record} (bytes {}..{}) is missing or incomplete",
                record * RECORD_SIZE as u64,
                (record + 1) * RECORD_SIZE as u64
            ),
            NativeError::TrailingData { record } => write!(
                f,
                ".fcmd file has data after its last record (from record {record} on)"
            ),
            NativeError::BadRecordType {
                record,
                expected,
                found,
            } => write!(
                f,
                ".fcmd record {record}: record type {found}, expected {expected}"
            ),
            NativeError::BadEnum {
                record,
                field,
                value,
            } => write!(f, ".fcmd record {record}: bad {field} value {value}"),
            NativeError::BadText { record, field } => {
                write!(f, ".fcmd record {record}: {field} is too long or not UTF-8")
            }
            NativeError::OutOfRange { record, field } => {
                write!(
                    f,
                    ".fcmd record {record}: {field} is beyond the file's commands"
                )
            }
        }
    }
}

impl std::error::Error for NativeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NativeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for NativeError {
    fn from(e: io::Error) -> Self {
        NativeError::Io(e)
    }
}

// --- little-endian field access at fixed offsets ---

fn put<const N: usize>(r: &mut Rec, at: usize, bytes: [u8; N]) {
    r[at..at + N].copy_from_slice(&bytes);
}

fn get<const N: usize>(r: &Rec, at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&r[at..at + N]);
    b
}

fn get_u32(r: &Rec, at: usize) -> u32 {
    u32::from_le_bytes(get(r, at))
}

fn get_u64(r: &Rec, at: usize) -> u64 {
    u64::from_le_bytes(get(r, at))
}

fn get_i32(r: &Rec, at: usize) -> i32 {
    i32::from_le_bytes(get(r, at))
}

fn too_long(what: &str, s: &str, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            ".fcmd holds at most {max} bytes of {what}; {s:?} has {}",
            s.len()
        ),
    )
}

fn check_text(what: &str, s: &str, max: usize) -> io::Result<()> {
    if s.len() > max {
        return Err(too_long(what, s, max));
    }
    Ok(())
}

/// Length byte at `len_at`, bytes from `at`; the caller has checked the length.
fn put_text(r: &mut Rec, len_at: usize, at: usize, s: &str) {
    r[len_at] = s.len() as u8;
    r[at..at + s.len()].copy_from_slice(s.as_bytes());
}

struct Decoder {
    record: u64,
}

impl Decoder {
    fn text(
        &self,
        r: &Rec,
        len_at: usize,
        at: usize,
        max: usize,
        field: &'static str,
    ) -> Result<String, NativeError> {
        let n = r[len_at] as usize;
        let bad = NativeError::BadText {
            record: self.record,
            field,
        };
        if n > max {
            return Err(bad);
        }
        match std::str::from_utf8(&r[at..at + n]) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(bad),
        }
    }

    fn enum_byte<T: Copy>(
        &self,
        r: &Rec,
        at: usize,
        field: &'static str,
        values: &[T],
    ) -> Result<T, NativeError> {
        let v = r[at];
        values.get(v as usize).copied().ok_or(NativeError::BadEnum {
            record: self.record,
            field,
            value: v,
        })
    }

    fn flag(&self, r: &Rec, at: usize, field: &'static str) -> Result<bool, NativeError> {
        self.enum_byte(r, at, field, &[false, true])
    }
}

// --- enumerations ---

const SIDES: [Side; 2] = [Side::Buy, Side::Sell];
const ORDER_TYPES: [OrderType; 3] = [OrderType::Limit, OrderType::Market, OrderType::LimitMaker];
const STPS: [StpMode; 4] = [
    StpMode::None,
    StpMode::ExpireTaker,
    StpMode::ExpireMaker,
    StpMode::ExpireBoth,
];
const STATUSES: [MarketStatus; 3] = [
    MarketStatus::Trading,
    MarketStatus::Halted,
    MarketStatus::CancelOnly,
];
const CLASSES: [AssetClass; 3] = [AssetClass::Stablecoin, AssetClass::Crypto, AssetClass::Rwa];

fn index_of<T: PartialEq>(values: &[T], v: &T) -> u8 {
    values.iter().position(|x| x == v).unwrap_or(0) as u8
}

const K_PLACE: u8 = 0;
const K_CANCEL: u8 = 1;
const K_CANCEL_ALL: u8 = 2;
const K_AMEND: u8 = 3;
const K_DEPOSIT: u8 = 4;
const K_WITHDRAW_HOLD: u8 = 5;
const K_WITHDRAW_RELEASE: u8 = 6;
const K_WITHDRAW_FINALIZE: u8 = 7;
const K_ADD_ASSET: u8 = 8;
const K_ADD_MARKET: u8 = 9;
const K_SET_STATUS: u8 = 10;
const K_SET_REFERENCE: u8 = 11;
const K_GRANT: u8 = 12;
const K_REVOKE: u8 = 13;
const K_TICK: u8 = 14;
const K_DEPOSIT_CREDIT: u8 = 15;
const K_DEPOSIT_SETTLE: u8 = 16;
const K_DEPOSIT_REVERSE: u8 = 17;

// --- encoding ---

fn put_client(r: &mut Rec, id: &ClientOrderId) {
    let (len, bytes) = id.raw();
    r[38] = len;
    put(r, 64, bytes);
}

fn put_target(r: &mut Rec, target: &OrderRef) {
    match target {
        OrderRef::Id(id) => {
            r[32] = 0;
            put(r, 40, id.to_le_bytes());
        }
        OrderRef::Client(c) => {
            r[32] = 1;
            put_client(r, c);
        }
    }
}

fn put_asset(r: &mut Rec, a: &AssetSpec) {
    r[24] = a.decimals;
    r[25] = index_of(&CLASSES, &a.class);
    put_text(r, 26, 28, &a.symbol);
}

fn put_market(r: &mut Rec, m: &MarketSpec) {
    put(r, 24, m.base.to_le_bytes());
    put(r, 28, m.quote.to_le_bytes());
    r[32] = index_of(&STATUSES, &m.status);
    r[33] = m.required_permission.is_some() as u8;
    r[34] = m.required_permission.unwrap_or(0);
    put(r, 36, m.price_band_bps.to_le_bytes());
    let wide = [
        m.tick_size,
        m.lot_size,
        m.min_price_ticks,
        m.max_price_ticks,
        m.min_qty_lots,
        m.max_qty_lots,
        m.min_notional,
        m.max_notional,
    ];
    for (i, v) in wide.iter().enumerate() {
        put(r, 40 + 8 * i, v.to_le_bytes());
    }
    put(r, 104, m.max_open_orders.to_le_bytes());
    put(r, 108, m.fees.maker_fee_bps.to_le_bytes());
    put(r, 112, m.fees.taker_fee_bps.to_le_bytes());
    put_text(r, 35, 116, &m.symbol);
}

/// One command as its 144-byte record (the layout above): what the journal stores.
pub fn encode_command(c: &Sequenced) -> [u8; RECORD_SIZE] {
    let mut r = [0u8; RECORD_SIZE];
    r[0] = T_COMMAND;
    put(&mut r, 8, c.seq.to_le_bytes());
    put(&mut r, 16, c.ts_ns.to_le_bytes());
    let kind = match &c.command {
        Command::PlaceOrder(p) => {
            put(&mut r, 24, p.account.to_le_bytes());
            put(&mut r, 28, p.market.to_le_bytes());
            r[32] = index_of(&SIDES, &p.side);
            r[33] = index_of(&ORDER_TYPES, &p.order_type);
            let (tif, expire_ns) = match p.tif {
                TimeInForce::Gtc => (0, 0),
                TimeInForce::Ioc => (1, 0),
                TimeInForce::Fok => (2, 0),
                TimeInForce::Gtd { expire_ns } => (3, expire_ns),
            };
            r[34] = tif;
            let (qkind, qty) = match p.quantity {
                Quantity::Base(q) => (0, q),
                Quantity::Quote(q) => (1, q),
            };
            r[35] = qkind;
            r[36] = index_of(&STPS, &p.stp);
            r[37] = p.price.is_some() as u8;
            put(&mut r, 40, qty.to_le_bytes());
            put(&mut r, 48, p.price.unwrap_or(0).to_le_bytes());
            put(&mut r, 56, expire_ns.to_le_bytes());
            put_client(&mut r, &p.client_order_id);
            K_PLACE
        }
        Command::CancelOrder {
            account,
            market,
            target,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            put(&mut r, 28, market.to_le_bytes());
            put_target(&mut r, target);
            K_CANCEL
        }
        Command::CancelAll { account, market } => {
            put(&mut r, 24, account.to_le_bytes());
            put(&mut r, 28, market.unwrap_or(0).to_le_bytes());
            r[37] = market.is_some() as u8;
            K_CANCEL_ALL
        }
        Command::AmendOrder {
            account,
            market,
            target,
            new_qty,
            new_price,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            put(&mut r, 28, market.to_le_bytes());
            put_target(&mut r, target);
            r[37] = new_price.is_some() as u8;
            put(&mut r, 48, new_price.unwrap_or(0).to_le_bytes());
            put(&mut r, 56, new_qty.to_le_bytes());
            K_AMEND
        }
        Command::Deposit {
            account,
            asset,
            amount,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            put(&mut r, 28, asset.to_le_bytes());
            put(&mut r, 40, amount.to_le_bytes());
            K_DEPOSIT
        }
        Command::WithdrawHold {
            account,
            asset,
            amount,
            withdrawal,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            put(&mut r, 28, asset.to_le_bytes());
            put(&mut r, 40, amount.to_le_bytes());
            put(&mut r, 48, withdrawal.to_le_bytes());
            K_WITHDRAW_HOLD
        }
        Command::WithdrawRelease { withdrawal } => {
            put(&mut r, 48, withdrawal.to_le_bytes());
            K_WITHDRAW_RELEASE
        }
        Command::WithdrawFinalize { withdrawal } => {
            put(&mut r, 48, withdrawal.to_le_bytes());
            K_WITHDRAW_FINALIZE
        }
        Command::AddAsset(a) => {
            put_asset(&mut r, a);
            K_ADD_ASSET
        }
        Command::AddMarket(m) => {
            put_market(&mut r, m);
            K_ADD_MARKET
        }
        Command::SetMarketStatus {
            market,
            status,
            cancel_open,
        } => {
            put(&mut r, 28, market.to_le_bytes());
            r[32] = index_of(&STATUSES, status);
            r[33] = *cancel_open as u8;
            K_SET_STATUS
        }
        Command::SetReferencePrice { market, price } => {
            put(&mut r, 28, market.to_le_bytes());
            r[37] = price.is_some() as u8;
            put(&mut r, 48, price.unwrap_or(0).to_le_bytes());
            K_SET_REFERENCE
        }
        Command::GrantPermission {
            account,
            permission,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            r[32] = *permission;
            K_GRANT
        }
        Command::RevokePermission {
            account,
            permission,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            r[32] = *permission;
            K_REVOKE
        }
        Command::Tick => K_TICK,
        Command::DepositCredit {
            deposit,
            account,
            asset,
            amount,
        } => {
            put(&mut r, 24, account.to_le_bytes());
            put(&mut r, 28, asset.to_le_bytes());
            put(&mut r, 40, amount.to_le_bytes());
            put(&mut r, 48, deposit.to_le_bytes());
            K_DEPOSIT_CREDIT
        }
        Command::DepositSettle { deposit } => {
            put(&mut r, 48, deposit.to_le_bytes());
            K_DEPOSIT_SETTLE
        }
        Command::DepositReverse { deposit } => {
            put(&mut r, 48, deposit.to_le_bytes());
            K_DEPOSIT_REVERSE
        }
    };
    r[1] = kind;
    r
}

fn count_u32(what: &str, n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(".fcmd holds at most {} {what}; the flow has {n}", u32::MAX),
        )
    })
}

/// Checks every text field against its room before anything is written.
fn check_flow(flow: &Flow) -> io::Result<()> {
    check_text("flow name", &flow.name, MAX_NAME_LEN)?;
    let asset = |a: &AssetSpec| check_text("asset symbol", &a.symbol, MAX_SYMBOL_LEN);
    let market = |m: &MarketSpec| check_text("market symbol", &m.symbol, MAX_SYMBOL_LEN);
    flow.assets.iter().try_for_each(asset)?;
    flow.markets.iter().try_for_each(market)?;
    for c in &flow.commands {
        match &c.command {
            Command::AddAsset(a) => asset(a)?,
            Command::AddMarket(m) => market(m)?,
            _ => {}
        }
    }
    for (reason, _) in &flow.skipped {
        check_text("skip reason", reason, MAX_REASON_LEN)?;
    }
    Ok(())
}

/// Writes `flow` as an `.fcmd` file. Fails with `InvalidInput`, before writing anything, if a
/// text field is longer than its room (name 95 bytes, symbols 20, skip reasons 111).
pub fn write(flow: &Flow, w: impl Write) -> io::Result<()> {
    check_flow(flow)?;
    let mut w = BufWriter::with_capacity(1 << 16, w);

    let mut h = [0u8; RECORD_SIZE];
    put(&mut h, 0, MAGIC);
    put(&mut h, 4, VERSION.to_le_bytes());
    put(&mut h, 6, (RECORD_SIZE as u16).to_le_bytes());
    put(
        &mut h,
        8,
        count_u32("assets", flow.assets.len())?.to_le_bytes(),
    );
    put(
        &mut h,
        12,
        count_u32("markets", flow.markets.len())?.to_le_bytes(),
    );
    put(&mut h, 16, (flow.commands.len() as u64).to_le_bytes());
    put(
        &mut h,
        24,
        count_u32("skip reasons", flow.skipped.len())?.to_le_bytes(),
    );
    let makers = count_u32("expected makers", flow.expected_makers.len())?;
    put(&mut h, 28, makers.to_le_bytes());
    put(&mut h, 32, flow.accounts.to_le_bytes());
    put(
        &mut h,
        36,
        count_u32("warmup commands", flow.warmup)?.to_le_bytes(),
    );
    put(&mut h, 40, flow.funding.to_le_bytes());
    put_text(&mut h, 48, 49, &flow.name);
    w.write_all(&h)?;

    for a in &flow.assets {
        let mut r = [0u8; RECORD_SIZE];
        r[0] = T_ASSET;
        put_asset(&mut r, a);
        w.write_all(&r)?;
    }
    for m in &flow.markets {
        let mut r = [0u8; RECORD_SIZE];
        r[0] = T_MARKET;
        put_market(&mut r, m);
        w.write_all(&r)?;
    }
    for c in &flow.commands {
        w.write_all(&encode_command(c))?;
    }
    for (reason, count) in &flow.skipped {
        let mut r = [0u8; RECORD_SIZE];
        r[0] = T_SKIPPED;
        put(&mut r, 24, count.to_le_bytes());
        put_text(&mut r, 32, 33, reason);
        w.write_all(&r)?;
    }
    for (index, maker) in &flow.expected_makers {
        let mut r = [0u8; RECORD_SIZE];
        r[0] = T_EXPECTED_MAKER;
        put(&mut r, 24, index.to_le_bytes());
        put(&mut r, 32, maker.to_le_bytes());
        w.write_all(&r)?;
    }
    w.flush()
}

// --- decoding ---

impl Decoder {
    fn client(&self, r: &Rec) -> ClientOrderId {
        ClientOrderId::from_raw(r[38], get(r, 64))
    }

    fn target(&self, r: &Rec) -> Result<OrderRef, NativeError> {
        Ok(match self.enum_byte(r, 32, "target kind", &[0u8, 1])? {
            0 => OrderRef::Id(get_u64(r, 40)),
            _ => OrderRef::Client(self.client(r)),
        })
    }

    fn optional(
        &self,
        r: &Rec,
        flag_at: usize,
        at: usize,
        field: &'static str,
    ) -> Result<Option<u64>, NativeError> {
        Ok(self.flag(r, flag_at, field)?.then(|| get_u64(r, at)))
    }

    fn asset(&self, r: &Rec) -> Result<AssetSpec, NativeError> {
        Ok(AssetSpec {
            symbol: self.text(r, 26, 28, MAX_SYMBOL_LEN, "asset symbol")?,
            decimals: r[24],
            class: self.enum_byte(r, 25, "asset class", &CLASSES)?,
        })
    }

    fn market(&self, r: &Rec) -> Result<MarketSpec, NativeError> {
        let wide = |i: usize| get_u64(r, 40 + 8 * i);
        Ok(MarketSpec {
            symbol: self.text(r, 35, 116, MAX_SYMBOL_LEN, "market symbol")?,
            base: get_u32(r, 24),
            quote: get_u32(r, 28),
            tick_size: wide(0),
            lot_size: wide(1),
            min_price_ticks: wide(2),
            max_price_ticks: wide(3),
            min_qty_lots: wide(4),
            max_qty_lots: wide(5),
            min_notional: wide(6),
            max_notional: wide(7),
            price_band_bps: get_u32(r, 36),
            max_open_orders: get_u32(r, 104),
            status: self.enum_byte(r, 32, "market status", &STATUSES)?,
            fees: FeeSchedule {
                maker_fee_bps: get_i32(r, 108),
                taker_fee_bps: get_i32(r, 112),
            },
            required_permission: self.flag(r, 33, "has permission")?.then_some(r[34]),
        })
    }

    fn command(&self, r: &Rec) -> Result<Sequenced, NativeError> {
        let account = get_u32(r, 24);
        let market = get_u32(r, 28);
        let command = match r[1] {
            K_PLACE => {
                let tif = match self.enum_byte(r, 34, "time in force", &[0u8, 1, 2, 3])? {
                    0 => TimeInForce::Gtc,
                    1 => TimeInForce::Ioc,
                    2 => TimeInForce::Fok,
                    _ => TimeInForce::Gtd {
                        expire_ns: get_u64(r, 56),
                    },
                };
                let qty = get_u64(r, 40);
                let quantity = match self.enum_byte(r, 35, "quantity kind", &[0u8, 1])? {
                    0 => Quantity::Base(qty),
                    _ => Quantity::Quote(qty),
                };
                Command::PlaceOrder(PlaceOrder {
                    account,
                    market,
                    side: self.enum_byte(r, 32, "side", &SIDES)?,
                    order_type: self.enum_byte(r, 33, "order type", &ORDER_TYPES)?,
                    tif,
                    quantity,
                    price: self.optional(r, 37, 48, "has price")?,
                    client_order_id: self.client(r),
                    stp: self.enum_byte(r, 36, "stp mode", &STPS)?,
                })
            }
            K_CANCEL => Command::CancelOrder {
                account,
                market,
                target: self.target(r)?,
            },
            K_CANCEL_ALL => Command::CancelAll {
                account,
                market: self.flag(r, 37, "has market")?.then_some(market),
            },
            K_AMEND => Command::AmendOrder {
                account,
                market,
                target: self.target(r)?,
                new_qty: get_u64(r, 56),
                new_price: self.optional(r, 37, 48, "has new price")?,
            },
            K_DEPOSIT => Command::Deposit {
                account,
                asset: market,
                amount: get_u64(r, 40),
            },
            K_WITHDRAW_HOLD => Command::WithdrawHold {
                account,
                asset: market,
                amount: get_u64(r, 40),
                withdrawal: get_u64(r, 48),
            },
            K_WITHDRAW_RELEASE => Command::WithdrawRelease {
                withdrawal: get_u64(r, 48),
            },
            K_WITHDRAW_FINALIZE => Command::WithdrawFinalize {
                withdrawal: get_u64(r, 48),
            },
            K_ADD_ASSET => Command::AddAsset(Box::new(self.asset(r)?)),
            K_ADD_MARKET => Command::AddMarket(Box::new(self.market(r)?)),
            K_SET_STATUS => Command::SetMarketStatus {
                market,
                status: self.enum_byte(r, 32, "market status", &STATUSES)?,
                cancel_open: self.flag(r, 33, "cancel_open")?,
            },
            K_SET_REFERENCE => Command::SetReferencePrice {
                market,
                price: self.optional(r, 37, 48, "has price")?,
            },
            K_GRANT => Command::GrantPermission {
                account,
                permission: r[32],
            },
            K_REVOKE => Command::RevokePermission {
                account,
                permission: r[32],
            },
            K_TICK => Command::Tick,
            K_DEPOSIT_CREDIT => Command::DepositCredit {
                deposit: get_u64(r, 48),
                account,
                asset: market,
                amount: get_u64(r, 40),
            },
            K_DEPOSIT_SETTLE => Command::DepositSettle {
                deposit: get_u64(r, 48),
            },
            K_DEPOSIT_REVERSE => Command::DepositReverse {
                deposit: get_u64(r, 48),
            },
            value => {
                return Err(NativeError::BadEnum {
                    record: self.record,
                    field: "command kind",
                    value,
                })
            }
        };
        Ok(Sequenced {
            seq: get_u64(r, 8),
            ts_ns: get_u64(r, 16),
            command,
        })
    }
}

struct Records<R> {
    r: BufReader<R>,
    next: u64,
}

impl<R: Read> Records<R> {
    /// The next record, which must be of type `expected` (`None`: the header).
    fn next(&mut self, expected: Option<u8>) -> Result<(Rec, Decoder), NativeError> {
        let record = self.next;
        let mut rec = [0u8; RECORD_SIZE];
        self.r.read_exact(&mut rec).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => NativeError::Truncated { record },
            _ => NativeError::Io(e),
        })?;
        self.next += 1;
        if let Some(expected) = expected {
            if rec[0] != expected {
                return Err(NativeError::BadRecordType {
                    record,
                    expected,
                    found: rec[0],
                });
            }
        }
        Ok((rec, Decoder { record }))
    }
}

/// A command from its 144-byte record; `record` numbers the record in error messages.
pub fn decode_command(rec: &[u8; RECORD_SIZE], record: u64) -> Result<Sequenced, NativeError> {
    if rec[0] != T_COMMAND {
        return Err(NativeError::BadRecordType {
            record,
            expected: T_COMMAND,
            found: rec[0],
        });
    }
    Decoder { record }.command(rec)
}

/// Room reserved up front for a section: the header's count, but not more than a modest
/// amount, so that a corrupt count cannot ask for gigabytes before the records run out.
fn capacity(count: u64) -> usize {
    count.min(1 << 16) as usize
}

/// Reads an `.fcmd` file. Never panics on bad input: every malformation is a `NativeError`.
pub fn read(r: impl Read) -> Result<Flow, NativeError> {
    let mut records = Records {
        r: BufReader::with_capacity(1 << 16, r),
        next: 0,
    };
    let (h, dec) = records.next(None)?;
    let magic: [u8; 4] = get(&h, 0);
    if magic != MAGIC {
        return Err(NativeError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(get(&h, 4));
    if version != VERSION {
        return Err(NativeError::UnsupportedVersion(version));
    }
    let size = u16::from_le_bytes(get(&h, 6));
    if size as usize != RECORD_SIZE {
        return Err(NativeError::BadRecordSize(size));
    }
    let n_assets = get_u32(&h, 8) as u64;
    let n_markets = get_u32(&h, 12) as u64;
    let n_commands = get_u64(&h, 16);
    let n_skipped = get_u32(&h, 24) as u64;
    let n_makers = get_u32(&h, 28) as u64;
    let mut flow = Flow {
        name: dec.text(&h, 48, 49, MAX_NAME_LEN, "flow name")?,
        accounts: get_u32(&h, 32),
        funding: get_u64(&h, 40),
        warmup: get_u32(&h, 36) as usize,
        ..Default::default()
    };
    if flow.warmup as u64 > n_commands {
        return Err(NativeError::OutOfRange {
            record: 0,
            field: "warmup",
        });
    }

    flow.assets.reserve(capacity(n_assets));
    for _ in 0..n_assets {
        let (r, d) = records.next(Some(T_ASSET))?;
        flow.assets.push(d.asset(&r)?);
    }
    flow.markets.reserve(capacity(n_markets));
    for _ in 0..n_markets {
        let (r, d) = records.next(Some(T_MARKET))?;
        flow.markets.push(d.market(&r)?);
    }
    flow.commands.reserve(capacity(n_commands));
    for _ in 0..n_commands {
        let (r, d) = records.next(Some(T_COMMAND))?;
        flow.commands.push(d.command(&r)?);
    }
    flow.skipped.reserve(capacity(n_skipped));
    for _ in 0..n_skipped {
        let (r, d) = records.next(Some(T_SKIPPED))?;
        let reason = d.text(&r, 32, 33, MAX_REASON_LEN, "skip reason")?;
        flow.skipped.push((reason, get_u64(&r, 24)));
    }
    flow.expected_makers.reserve(capacity(n_makers));
    for _ in 0..n_makers {
        let record = records.next;
        let (r, _) = records.next(Some(T_EXPECTED_MAKER))?;
        let index = get_u32(&r, 24);
        if index as u64 >= n_commands {
            return Err(NativeError::OutOfRange {
                record,
                field: "expected maker command index",
            });
        }
        flow.expected_makers.push((index, get_u64(&r, 32)));
    }

    let mut extra = [0u8; 1];
    loop {
        match records.r.read(&mut extra) {
            Ok(0) => return Ok(flow),
            Ok(_) => {
                return Err(NativeError::TrailingData {
                    record: records.next,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NativeError::Io(e)),
        }
    }
}

#[cfg(test)]
mod command_record_tests {
    use super::*;

    #[test]
    fn deposit_records_are_laid_out_as_documented() {
        let at = |command| {
            encode_command(&Sequenced {
                seq: 1,
                ts_ns: 2,
                command,
            })
        };
        let r = at(Command::DepositCredit {
            deposit: 0x0102_0304_0506_0708,
            account: 5,
            asset: 3,
            amount: 1_000,
        });
        assert_eq!((r[0], r[1]), (T_COMMAND, K_DEPOSIT_CREDIT));
        assert_eq!(get_u32(&r, 24), 5);
        assert_eq!(get_u32(&r, 28), 3);
        assert_eq!(get_u64(&r, 40), 1_000);
        assert_eq!(get_u64(&r, 48), 0x0102_0304_0506_0708);
        for (command, kind) in [
            (Command::DepositSettle { deposit: 9 }, K_DEPOSIT_SETTLE),
            (Command::DepositReverse { deposit: 9 }, K_DEPOSIT_REVERSE),
        ] {
            let r = at(command.clone());
            assert_eq!((r[1], get_u64(&r, 48)), (kind, 9));
            assert!(r[24..48].iter().chain(&r[56..]).all(|&b| b == 0));
            assert_eq!(decode_command(&r, 0).unwrap().command, command);
        }
    }

    #[test]
    fn a_command_record_round_trips_and_a_wrong_type_is_an_error() {
        let c = Sequenced {
            seq: 7,
            ts_ns: 9,
            command: Command::CancelAll {
                account: 3,
                market: Some(1),
            },
        };
        let r = encode_command(&c);
        assert_eq!(decode_command(&r, 0).unwrap(), c);
        let mut bad = r;
        bad[0] = T_ASSET;
        assert!(matches!(
            decode_command(&bad, 5),
            Err(NativeError::BadRecordType { record: 5, .. })
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{liquibook, plain_assets, plain_market};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn arb_client() -> impl Strategy<Value = ClientOrderId> {
        prop_oneof![
            Just(ClientOrderId::NONE),
            "[A-Za-z0-9._:/-]{1,36}".prop_map(|s| ClientOrderId::new(&s).unwrap()),
            (any::<u8>(), vec(any::<u8>(), CLIENT_ORDER_ID_MAX_LEN)).prop_map(|(len, b)| {
                let mut bytes = [0u8; CLIENT_ORDER_ID_MAX_LEN];
                bytes.copy_from_slice(&b);
                ClientOrderId::from_raw(len, bytes)
            }),
        ]
    }

    fn arb_target() -> impl Strategy<Value = OrderRef> {
        prop_oneof![
            any::<u64>().prop_map(OrderRef::Id),
            arb_client().prop_map(OrderRef::Client),
        ]
    }

    fn arb_status() -> impl Strategy<Value = MarketStatus> {
        prop::sample::select(STATUSES.to_vec())
    }

    /// Symbols of any UTF-8 that fits the field, the engine's charset or not.
    fn arb_symbol() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Z0-9]{0,20}", "\\PC{0,5}",]
    }

    fn arb_asset() -> impl Strategy<Value = AssetSpec> {
        (
            arb_symbol(),
            any::<u8>(),
            prop::sample::select(CLASSES.to_vec()),
        )
            .prop_map(|(symbol, decimals, class)| AssetSpec {
                symbol,
                decimals,
                class,
            })
    }

    fn arb_market() -> impl Strategy<Value = MarketSpec> {
        (
            arb_symbol(),
            any::<(u32, u32, u32, u32)>(),
            prop::array::uniform8(any::<u64>()),
            arb_status(),
            any::<(i32, i32)>(),
            any::<Option<u8>>(),
        )
            .prop_map(
                |(symbol, (base, quote, band, max_open), w, status, (mk, tk), perm)| MarketSpec {
                    symbol,
                    base,
                    quote,
                    tick_size: w[0],
                    lot_size: w[1],
                    min_price_ticks: w[2],
                    max_price_ticks: w[3],
                    min_qty_lots: w[4],
                    max_qty_lots: w[5],
                    min_notional: w[6],
                    max_notional: w[7],
                    price_band_bps: band,
                    max_open_orders: max_open,
                    status,
                    fees: FeeSchedule {
                        maker_fee_bps: mk,
                        taker_fee_bps: tk,
                    },
                    required_permission: perm,
                },
            )
    }

    fn arb_place() -> impl Strategy<Value = PlaceOrder> {
        let tif = prop_oneof![
            Just(TimeInForce::Gtc),
            Just(TimeInForce::Ioc),
            Just(TimeInForce::Fok),
            any::<u64>().prop_map(|expire_ns| TimeInForce::Gtd { expire_ns }),
        ];
        let quantity = prop_oneof![
            any::<u64>().prop_map(Quantity::Base),
            any::<u64>().prop_map(Quantity::Quote),
        ];
        (
            any::<(u32, u32)>(),
            prop::sample::select(SIDES.to_vec()),
            prop::sample::select(ORDER_TYPES.to_vec()),
            tif,
            quantity,
            any::<Option<u64>>(),
            arb_client(),
            prop::sample::select(STPS.to_vec()),
        )
            .prop_map(
                |((account, market), side, order_type, tif, quantity, price, client, stp)| {
                    PlaceOrder {
                        account,
                        market,
                        side,
                        order_type,
                        tif,
                        quantity,
                        price,
                        client_order_id: client,
                        stp,
                    }
                },
            )
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            arb_place().prop_map(Command::PlaceOrder),
            (any::<u32>(), any::<u32>(), arb_target()).prop_map(|(account, market, target)| {
                Command::CancelOrder {
                    account,
                    market,
                    target,
                }
            }),
            (any::<u32>(), any::<Option<u32>>())
                .prop_map(|(account, market)| Command::CancelAll { account, market }),
            (any::<(u32, u32, u64)>(), arb_target(), any::<Option<u64>>()).prop_map(
                |((account, market, new_qty), target, new_price)| {
                    Command::AmendOrder {
                        account,
                        market,
                        target,
                        new_qty,
                        new_price,
                    }
                }
            ),
            any::<(u32, u32, u64)>().prop_map(|(account, asset, amount)| Command::Deposit {
                account,
                asset,
                amount
            }),
            any::<(u32, u32, u64, u64)>().prop_map(|(account, asset, amount, withdrawal)| {
                Command::WithdrawHold {
                    account,
                    asset,
                    amount,
                    withdrawal,
                }
            }),
            any::<u64>().prop_map(|withdrawal| Command::WithdrawRelease { withdrawal }),
            any::<u64>().prop_map(|withdrawal| Command::WithdrawFinalize { withdrawal }),
            arb_asset().prop_map(|a| Command::AddAsset(Box::new(a))),
            arb_market().prop_map(|m| Command::AddMarket(Box::new(m))),
            (any::<u32>(), arb_status(), any::<bool>()).prop_map(
                |(market, status, cancel_open)| Command::SetMarketStatus {
                    market,
                    status,
                    cancel_open,
                }
            ),
            (any::<u32>(), any::<Option<u64>>())
                .prop_map(|(market, price)| Command::SetReferencePrice { market, price }),
            any::<(u32, u8)>().prop_map(|(account, permission)| Command::GrantPermission {
                account,
                permission
            }),
            any::<(u32, u8)>().prop_map(|(account, permission)| Command::RevokePermission {
                account,
                permission
            }),
            Just(Command::Tick),
            any::<(u64, u32, u32, u64)>().prop_map(|(deposit, account, asset, amount)| {
                Command::DepositCredit {
                    deposit,
                    account,
                    asset,
                    amount,
                }
            }),
            any::<u64>().prop_map(|deposit| Command::DepositSettle { deposit }),
            any::<u64>().prop_map(|deposit| Command::DepositReverse { deposit }),
        ]
    }

    fn arb_flow() -> impl Strategy<Value = Flow> {
        (
            prop_oneof!["[a-z0-9 _-]{0,95}", "\\PC{0,20}"],
            vec(arb_asset(), 0..4),
            vec(arb_market(), 0..4),
            any::<(u32, u64)>(),
            vec(
                (any::<(u64, u64)>(), arb_command()).prop_map(|((seq, ts_ns), command)| {
                    Sequenced {
                        seq,
                        ts_ns,
                        command,
                    }
                }),
                0..60,
            ),
            vec(("[ -~]{0,111}", any::<u64>()), 0..4),
            vec(any::<(u32, u64)>(), 0..4),
        )
            .prop_map(
                |(name, assets, markets, (accounts, funding), commands, skipped, makers)| {
                    // Indexes and the warmup must lie within the commands, as `read` checks.
                    let n = commands.len();
                    let expected_makers = if n == 0 {
                        Vec::new()
                    } else {
                        makers
                            .into_iter()
                            .map(|(i, id)| (i % n as u32, id))
                            .collect()
                    };
                    Flow {
                        name,
                        assets,
                        markets,
                        accounts,
                        funding,
                        warmup: n / 2,
                        commands,
                        skipped,
                        expected_makers,
                    }
                },
            )
    }

    fn bytes_of(flow: &Flow) -> Vec<u8> {
        let mut buf = Vec::new();
        write(flow, &mut buf).unwrap();
        buf
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_flows_round_trip(flow in arb_flow()) {
            let bytes = bytes_of(&flow);
            let n = 1 + flow.assets.len() + flow.markets.len() + flow.commands.len()
                + flow.skipped.len() + flow.expected_makers.len();
            prop_assert_eq!(bytes.len(), n * RECORD_SIZE);
            let back = read(&bytes[..]).unwrap();
            prop_assert_eq!(back, flow);
        }

        #[test]
        fn corrupt_files_give_errors_not_panics(
            flow in arb_flow(),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = bytes_of(&flow);
            let len = cut.index(bytes.len());
            prop_assert!(read(&bytes[..len]).is_err());
            let mut bytes = bytes;
            for (at, v) in flips {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            // Anything may come back, as long as nothing panics.
            let _ = read(&bytes[..]);
            let _ = read(&bytes[..len]);
        }
    }

    fn sample() -> Flow {
        let mut flow = liquibook(10, 1, 3);
        flow.name = "sample".into();
        flow.skipped = vec![("hidden execution".into(), 7)];
        flow.expected_makers = vec![(3, 2)];
        flow.commands.push(Sequenced {
            seq: 11,
            ts_ns: 5,
            command: Command::AddMarket(Box::new(plain_market("SAMPLE2"))),
        });
        flow.commands.push(Sequenced {
            seq: 12,
            ts_ns: 6,
            command: Command::AddAsset(Box::new(plain_assets()[0].clone())),
        });
        flow
    }

    #[test]
    fn the_layout_is_as_documented() {
        let bytes = bytes_of(&sample());
        assert_eq!(&bytes[..4], b"FCMD");
        assert_eq!(bytes[4..6], [1, 0]);
        assert_eq!(bytes[6..8], [144, 0]);
        assert_eq!(bytes[8..12], [2, 0, 0, 0]); // assets
        assert_eq!(bytes[12..16], [1, 0, 0, 0]); // markets
        assert_eq!(bytes[16..24], [12, 0, 0, 0, 0, 0, 0, 0]); // commands
        assert_eq!(bytes[48], 6);
        assert_eq!(&bytes[49..55], b"sample");
        // The first command (record 4): a liquibook buy, limit GTC, 1 + 0 accounts.
        let c = &bytes[4 * RECORD_SIZE..5 * RECORD_SIZE];
        assert_eq!((c[0], c[1]), (T_COMMAND, K_PLACE));
        assert_eq!(c[8..16], 1u64.to_le_bytes()); // seq
        assert_eq!(c[16..24], 1000u64.to_le_bytes()); // ts_ns
        assert_eq!(c[24..28], 1u32.to_le_bytes()); // account
        assert_eq!(
            (c[32], c[33], c[34], c[35], c[36], c[37]),
            (0, 0, 0, 0, 0, 1)
        );
        // The market record: symbol at 116.
        let m = &bytes[3 * RECORD_SIZE..4 * RECORD_SIZE];
        assert_eq!(m[0], T_MARKET);
        assert_eq!(m[35], 9);
        assert_eq!(&m[116..125], b"LIQUIBOOK");
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let good = bytes_of(&sample());
        assert_eq!(read(&good[..]).unwrap(), sample());

        let err = read(&b"FCM"[..]).unwrap_err();
        assert!(matches!(err, NativeError::Truncated { record: 0 }), "{err}");

        let mut b = good.clone();
        b[0] = b'X';
        let err = read(&b[..]).unwrap_err();
        assert!(matches!(err, NativeError::BadMagic(_)), "{err}");
        assert!(err.to_string().contains("magic"));

        let mut b = good.clone();
        b[4] = 9;
        assert!(matches!(
            read(&b[..]),
            Err(NativeError::UnsupportedVersion(9))
        ));

        let mut b = good.clone();
        b[6] = 128;
        assert!(matches!(read(&b[..]), Err(NativeError::BadRecordSize(128))));

        // Cut inside the sixth record (a command).
        let err = read(&good[..5 * RECORD_SIZE + 17]).unwrap_err();
        assert!(matches!(err, NativeError::Truncated { record: 5 }), "{err}");
        assert!(err.to_string().contains("record 5"), "{err}");

        // A side byte of 2 in the first command.
        let mut b = good.clone();
        b[4 * RECORD_SIZE + 32] = 2;
        let err = read(&b[..]).unwrap_err();
        assert!(
            matches!(
                err,
                NativeError::BadEnum {
                    record: 4,
                    field: "side",
                    value: 2
                }
            ),
            "{err}"
        );
        assert_eq!(err.to_string(), ".fcmd record 4: bad side value 2");

        let mut b = good.clone();
        b[4 * RECORD_SIZE + 1] = 18;
        assert!(matches!(
            read(&b[..]),
            Err(NativeError::BadEnum {
                field: "command kind",
                value: 18,
                ..
            })
        ));

        let mut b = good.clone();
        b[4 * RECORD_SIZE] = T_ASSET;
        assert!(matches!(
            read(&b[..]),
            Err(NativeError::BadRecordType {
                record: 4,
                expected: T_COMMAND,
                found: T_ASSET
            })
        ));

        let mut b = good.clone();
        b[48] = 200;
        assert!(matches!(
            read(&b[..]),
            Err(NativeError::BadText {
                record: 0,
                field: "flow name"
            })
        ));
        let mut b = good.clone();
        b[49] = 0xff;
        assert!(matches!(read(&b[..]), Err(NativeError::BadText { .. })));

        let mut b = good.clone();
        b.push(0);
        assert!(matches!(
            read(&b[..]),
            Err(NativeError::TrailingData { .. })
        ));

        // A huge command count with no commands behind it: an error, not an allocation.
        let mut b = good[..RECORD_SIZE * 4].to_vec();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read(&b[..]),
            Err(NativeError::Truncated { record: 4 })
        ));
    }

    #[test]
    fn over_long_text_is_refused_before_writing() {
        let mut flow = sample();
        flow.markets[0].symbol = "X".repeat(21);
        let mut buf = Vec::new();
        let err = write(&flow, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(buf.is_empty());
        let mut flow = sample();
        flow.skipped[0].0 = "r".repeat(112);
        assert!(write(&flow, &mut buf).is_err());
        let mut flow = sample();
        flow.name = "n".repeat(96);
        assert!(write(&flow, &mut buf).is_err());
    }
}
