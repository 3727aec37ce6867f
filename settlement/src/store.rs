//! The settlement ledger of record (`<data dir>/settlement/settlement.sqlite`):
//! self-custody registrations, the event cursor, epoch records, payouts and their parts,
//! Lightning invoices (deposits) and Lightning withdrawals. Each state change is one SQLite
//! transaction (WAL, `synchronous=FULL`) written before the step it records is taken
//! outside (a command submitted, a payment sent), so a restart resumes every row from its
//! state.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::Destination;

/// A payout part's states.
pub mod part {
    /// Stored; its `WithdrawHold` not yet acknowledged.
    pub const NEW: &str = "new";
    /// Held in the ledger; not known to be sent.
    pub const HELD: &str = "held";
    /// Handed to the rail.
    pub const SENT: &str = "sent";
    /// Paid, `WithdrawFinalize` acknowledged.
    pub const PAID: &str = "paid";
    /// The payment failed, `WithdrawRelease` acknowledged: the amount rolls over.
    pub const FAILED: &str = "failed";
    /// The ledger refused the hold (the account spent the balance meanwhile).
    pub const REFUSED: &str = "refused";
}

/// A payout's states.
pub mod payout {
    /// Recorded with its epoch; parts being paid.
    pub const OPEN: &str = "open";
    pub const PAID: &str = "paid";
    /// Part of it (or all) was not paid; the rest rolled into the account's carry.
    pub const ROLLED: &str = "rolled";
}

/// A Lightning withdrawal's states (the same words as custody's where they mean the same).
pub mod withdrawal {
    pub const REQUESTED: &str = "requested";
    pub const HELD: &str = "held";
    pub const SENT: &str = "sent";
    pub const CONFIRMED: &str = "confirmed";
    pub const FAILED: &str = "failed";
    pub const REJECTED: &str = "rejected";
}

/// An invoice's states.
pub mod invoice {
    pub const OPEN: &str = "open";
    /// `DepositCredit` acknowledged.
    pub const CREDITED: &str = "credited";
    /// `DepositSettle` acknowledged: final (a Lightning payment cannot be taken back).
    pub const SETTLED: &str = "settled";
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub account: u32,
    pub destination: Destination,
    /// An on-chain address paid after `max_payout_failures` failed payouts in a row.
    pub fallback_address: Option<String>,
    pub registered_ms: u64,
    /// Owed and not yet paid, in sat: failed payouts, and nets the account's free balance
    /// did not cover at the epoch's close.
    pub carry_sat: u64,
    /// Failed payouts in a row.
    pub failures: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Epoch {
    pub epoch: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub closed_ms: u64,
    pub fills: u64,
    /// Hex SHA-256 Merkle root of the epoch's fills.
    pub fills_root: String,
    /// The fee account's BTC net, in sat.
    pub fees_sat: i64,
    /// Nonzero BTC nets of every account (fee account excluded), in sat.
    pub nets: Vec<(u32, i64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payout {
    pub id: u64,
    pub epoch: u64,
    pub account: u32,
    /// The account's net in this epoch, and what it owed before (carry).
    pub net_sat: i64,
    pub carry_in_sat: u64,
    /// What this epoch pays (at most the free balance at the close).
    pub amount_sat: u64,
    pub destination: Destination,
    pub state: String,
    pub paid_sat: u64,
    pub fee_msat: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    pub id: u64,
    pub payout: u64,
    pub idx: u32,
    pub amount_sat: u64,
    pub state: String,
    pub fee_msat: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Invoice {
    pub id: u64,
    pub payment_hash: String,
    pub account: u32,
    pub amount_msat: u64,
    pub bolt11: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub state: String,
    pub received_msat: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: u64,
    pub account: u32,
    pub client_id: Option<String>,
    /// The BOLT11 invoice or BOLT12 offer paid.
    pub address: String,
    pub amount_sat: u64,
    pub fee_sat: u64,
    pub payment_id: Option<String>,
    pub state: String,
    pub apply_ms: u64,
    pub complete_ms: Option<u64>,
    pub info: String,
}

/// A page of history (`startTime`, `endTime`, `offset`, `limit`).
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub start_ms: u64,
    pub end_ms: u64,
    pub offset: u32,
    pub limit: u32,
}

pub struct Store {
    db: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registrations (
    account INTEGER PRIMARY KEY, destination TEXT NOT NULL, fallback_address TEXT,
    registered_ms INTEGER NOT NULL, carry_sat INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    closed_ms INTEGER NOT NULL, fills INTEGER NOT NULL, fills_root TEXT NOT NULL,
    fees_sat INTEGER NOT NULL, nets TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payouts (
    id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, account INTEGER NOT NULL,
    net_sat INTEGER NOT NULL, carry_in_sat INTEGER NOT NULL, amount_sat INTEGER NOT NULL,
    destination TEXT NOT NULL, state TEXT NOT NULL, paid_sat INTEGER NOT NULL DEFAULT 0,
    fee_msat INTEGER NOT NULL DEFAULT 0, error TEXT, UNIQUE (epoch, account));
CREATE INDEX IF NOT EXISTS payouts_state ON payouts (state);
CREATE TABLE IF NOT EXISTS parts (
    id INTEGER PRIMARY KEY, payout INTEGER NOT NULL, idx INTEGER NOT NULL,
    amount_sat INTEGER NOT NULL, state TEXT NOT NULL, fee_msat INTEGER NOT NULL DEFAULT 0,
    error TEXT, UNIQUE (payout, idx));
CREATE TABLE IF NOT EXISTS invoices (
    id INTEGER PRIMARY KEY, payment_hash TEXT NOT NULL UNIQUE, account INTEGER NOT NULL,
    amount_msat INTEGER NOT NULL, bolt11 TEXT NOT NULL, created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, state TEXT NOT NULL, received_msat INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS invoices_account ON invoices (account, created_ms);
CREATE TABLE IF NOT EXISTS withdrawals (
    id INTEGER PRIMARY KEY, account INTEGER NOT NULL, client_id TEXT, address TEXT NOT NULL,
    amount_sat INTEGER NOT NULL, fee_sat INTEGER NOT NULL, payment_id TEXT,
    state TEXT NOT NULL, apply_ms INTEGER NOT NULL, complete_ms INTEGER, info TEXT NOT NULL,
    UNIQUE (account, client_id));
CREATE INDEX IF NOT EXISTS withdrawals_account ON withdrawals (account, apply_ms);
";

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn unjson<T: for<'a> Deserialize<'a>>(s: String) -> rusqlite::Result<T> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn registration(r: &Row) -> rusqlite::Result<Registration> {
    Ok(Registration {
        account: r.get(0)?,
        destination: unjson(r.get(1)?)?,
        fallback_address: r.get(2)?,
        registered_ms: r.get(3)?,
        carry_sat: r.get(4)?,
        failures: r.get(5)?,
    })
}

fn epoch(r: &Row) -> rusqlite::Result<Epoch> {
    Ok(Epoch {
        epoch: r.get(0)?,
        first_seq: r.get(1)?,
        last_seq: r.get(2)?,
        closed_ms: r.get(3)?,
        fills: r.get(4)?,
        fills_root: r.get(5)?,
        fees_sat: r.get(6)?,
        nets: unjson(r.get(7)?)?,
    })
}

fn payout(r: &Row) -> rusqlite::Result<Payout> {
    Ok(Payout {
        id: r.get(0)?,
        epoch: r.get(1)?,
        account: r.get(2)?,
        net_sat: r.get(3)?,
        carry_in_sat: r.get(4)?,
        amount_sat: r.get(5)?,
        destination: unjson(r.get(6)?)?,
        state: r.get(7)?,
        paid_sat: r.get(8)?,
        fee_msat: r.get(9)?,
        error: r.get(10)?,
    })
}

fn part_row(r: &Row) -> rusqlite::Result<Part> {
    Ok(Part {
        id: r.get(0)?,
        payout: r.get(1)?,
        idx: r.get(2)?,
        amount_sat: r.get(3)?,
        state: r.get(4)?,
        fee_msat: r.get(5)?,
        error: r.get(6)?,
    })
}

fn invoice_row(r: &Row) -> rusqlite::Result<Invoice> {
    Ok(Invoice {
        id: r.get(0)?,
        payment_hash: r.get(1)?,
        account: r.get(2)?,
        amount_msat: r.get(3)?,
        bolt11: r.get(4)?,
        created_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        state: r.get(7)?,
        received_msat: r.get(8)?,
    })
}

fn withdrawal_row(r: &Row) -> rusqlite::Result<Withdrawal> {
    Ok(Withdrawal {
        id: r.get(0)?,
        account: r.get(1)?,
        client_id: r.get(2)?,
        address: r.get(3)?,
        amount_sat: r.get(4)?,
        fee_sat: r.get(5)?,
        payment_id: r.get(6)?,
        state: r.get(7)?,
        apply_ms: r.get(8)?,
        complete_ms: r.get(9)?,
        info: r.get(10)?,
    })
}

const PAYOUT_COLS: &str = "id, epoch, account, net_sat, carry_in_sat, amount_sat, destination, \
                           state, paid_sat, fee_msat, error";
const PART_COLS: &str = "id, payout, idx, amount_sat, state, fee_msat, error";
const INVOICE_COLS: &str =
    "id, payment_hash, account, amount_msat, bolt11, created_ms, expires_ms, state, received_msat";
const WITHDRAWAL_COLS: &str = "id, account, client_id, address, amount_sat, fee_sat, payment_id, \
                               state, apply_ms, complete_ms, info";

/// What one epoch's close writes, in one transaction.
pub struct EpochRecord<'a> {
    pub epoch: &'a Epoch,
    /// (account, net, carry before, amount to pay now, carry after, destination).
    pub payouts: Vec<(u32, i64, u64, u64, u64, Destination)>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, String> {
        let db = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        db.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .and_then(|_| db.execute_batch(SCHEMA))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Store { db })
    }

    pub fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // --- registrations ---

    pub fn register(&self, r: &Registration) -> rusqlite::Result<()> {
        // A new destination keeps what the account is owed.
        self.db.execute(
            "INSERT INTO registrations (account, destination, fallback_address, registered_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account) DO UPDATE SET destination = excluded.destination,
               fallback_address = excluded.fallback_address, failures = 0",
            params![
                r.account,
                json(&r.destination),
                r.fallback_address,
                r.registered_ms
            ],
        )?;
        Ok(())
    }

    pub fn unregister(&self, account: u32) -> rusqlite::Result<bool> {
        Ok(self
            .db
            .execute("DELETE FROM registrations WHERE account = ?1", [account])?
            > 0)
    }

    pub fn registration(&self, account: u32) -> rusqlite::Result<Option<Registration>> {
        self.db
            .query_row(
                "SELECT account, destination, fallback_address, registered_ms, carry_sat, failures
                 FROM registrations WHERE account = ?1",
                [account],
                registration,
            )
            .optional()
    }

    pub fn registrations(&self) -> rusqlite::Result<Vec<Registration>> {
        let mut s = self.db.prepare(
            "SELECT account, destination, fallback_address, registered_ms, carry_sat, failures
             FROM registrations ORDER BY account",
        )?;
        let rows = s.query_map([], registration)?;
        rows.collect()
    }

    /// Whether any account is owed a carried amount (an idle epoch checks just this).
    pub fn anyone_owed(&self) -> rusqlite::Result<bool> {
        self.db.query_row(
            "SELECT EXISTS (SELECT 1 FROM registrations WHERE carry_sat > 0)",
            [],
            |r| r.get(0),
        )
    }

    pub fn count_registrations(&self) -> rusqlite::Result<u64> {
        self.db
            .query_row("SELECT COUNT(*) FROM registrations", [], |r| r.get(0))
    }

    /// A payout (or what is left of it) did not go out: it rolls into the carry.
    pub fn roll_over(
        &self,
        payout: u64,
        account: u32,
        unpaid_sat: u64,
        error: &str,
    ) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "UPDATE payouts SET state = ?2, error = ?3 WHERE id = ?1",
            params![payout, payout::ROLLED, error],
        )?;
        tx.execute(
            "UPDATE registrations SET carry_sat = carry_sat + ?2, failures = failures + 1
             WHERE account = ?1",
            params![account, unpaid_sat],
        )?;
        tx.commit()
    }

    pub fn payout_paid(&self, payout: u64, account: u32) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "UPDATE payouts SET state = ?2 WHERE id = ?1",
            params![payout, payout::PAID],
        )?;
        tx.execute(
            "UPDATE registrations SET failures = 0 WHERE account = ?1",
            [account],
        )?;
        tx.commit()
    }

    /// The carry went out another way (the on-chain fallback).
    pub fn clear_carry(&self, account: u32) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE registrations SET carry_sat = 0, failures = 0 WHERE account = ?1",
            [account],
        )?;
        Ok(())
    }

    // --- epochs and payouts ---

    /// The last command seq the epochs cover (0: none yet), and the last epoch number.
    pub fn cursor(&self) -> rusqlite::Result<(Option<u64>, u64)> {
        let seq = self.meta("cursor_seq")?.and_then(|s| s.parse().ok());
        let epoch = self
            .db
            .query_row("SELECT COALESCE(MAX(epoch), 0) FROM epochs", [], |r| {
                r.get(0)
            })?;
        Ok((seq, epoch))
    }

    pub fn set_cursor(&self, seq: u64) -> rusqlite::Result<()> {
        self.set_meta("cursor_seq", &seq.to_string())
    }

    /// The epoch record, its payouts and the new carries, and the cursor: all or nothing.
    pub fn record_epoch(&self, rec: &EpochRecord) -> rusqlite::Result<()> {
        let e = rec.epoch;
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO epochs (epoch, first_seq, last_seq, closed_ms, fills, fills_root,
                                 fees_sat, nets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                e.epoch,
                e.first_seq,
                e.last_seq,
                e.closed_ms,
                e.fills,
                e.fills_root,
                e.fees_sat,
                json(&e.nets)
            ],
        )?;
        for (account, net, carry_in, amount, carry_out, dest) in &rec.payouts {
            if *amount > 0 {
                tx.execute(
                    "INSERT INTO payouts (epoch, account, net_sat, carry_in_sat, amount_sat,
                                          destination, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        e.epoch,
                        account,
                        net,
                        carry_in,
                        amount,
                        json(dest),
                        payout::OPEN
                    ],
                )?;
            }
            tx.execute(
                "UPDATE registrations SET carry_sat = ?2 WHERE account = ?1",
                params![account, carry_out],
            )?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('cursor_seq', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [e.last_seq.to_string()],
        )?;
        tx.commit()
    }

    pub fn epoch(&self, n: u64) -> rusqlite::Result<Option<Epoch>> {
        self.db
            .query_row(
                "SELECT epoch, first_seq, last_seq, closed_ms, fills, fills_root, fees_sat, nets
                 FROM epochs WHERE epoch = ?1",
                [n],
                epoch,
            )
            .optional()
    }

    /// Epochs numbered `from..`, newest first, at most `limit`.
    pub fn epochs(&self, before: Option<u64>, limit: u32) -> rusqlite::Result<Vec<Epoch>> {
        let mut s = self.db.prepare(
            "SELECT epoch, first_seq, last_seq, closed_ms, fills, fills_root, fees_sat, nets
             FROM epochs WHERE epoch < ?1 ORDER BY epoch DESC LIMIT ?2",
        )?;
        let rows = s.query_map(params![before.unwrap_or(i64::MAX as u64), limit], epoch)?;
        rows.collect()
    }

    pub fn payouts_of_epoch(&self, epoch: u64) -> rusqlite::Result<Vec<Payout>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {PAYOUT_COLS} FROM payouts WHERE epoch = ?1 ORDER BY account"
        ))?;
        let rows = s.query_map([epoch], payout)?;
        rows.collect()
    }

    pub fn open_payouts(&self) -> rusqlite::Result<Vec<Payout>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {PAYOUT_COLS} FROM payouts WHERE state = ?1 ORDER BY id"
        ))?;
        let rows = s.query_map([payout::OPEN], payout)?;
        rows.collect()
    }

    pub fn payout(&self, id: u64) -> rusqlite::Result<Option<Payout>> {
        self.db
            .query_row(
                &format!("SELECT {PAYOUT_COLS} FROM payouts WHERE id = ?1"),
                [id],
                payout,
            )
            .optional()
    }

    pub fn payouts_of_account(&self, account: u32, limit: u32) -> rusqlite::Result<Vec<Payout>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {PAYOUT_COLS} FROM payouts WHERE account = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = s.query_map(params![account, limit], payout)?;
        rows.collect()
    }

    pub fn parts(&self, payout: u64) -> rusqlite::Result<Vec<Part>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {PART_COLS} FROM parts WHERE payout = ?1 ORDER BY idx"
        ))?;
        let rows = s.query_map([payout], part_row)?;
        rows.collect()
    }

    pub fn insert_part(&self, payout: u64, idx: u32, amount_sat: u64) -> rusqlite::Result<Part> {
        self.db.execute(
            "INSERT INTO parts (payout, idx, amount_sat, state) VALUES (?1, ?2, ?3, ?4)",
            params![payout, idx, amount_sat, part::NEW],
        )?;
        Ok(Part {
            id: self.db.last_insert_rowid() as u64,
            payout,
            idx,
            amount_sat,
            state: part::NEW.into(),
            fee_msat: 0,
            error: None,
        })
    }

    pub fn set_part(
        &self,
        id: u64,
        state: &str,
        fee_msat: u64,
        error: Option<&str>,
    ) -> rusqlite::Result<()> {
        let tx = self.db.unchecked_transaction()?;
        tx.execute(
            "UPDATE parts SET state = ?2, fee_msat = ?3, error = ?4 WHERE id = ?1",
            params![id, state, fee_msat, error],
        )?;
        if state == part::PAID {
            tx.execute(
                "UPDATE payouts SET paid_sat = paid_sat + (SELECT amount_sat FROM parts WHERE id = ?1),
                                    fee_msat = fee_msat + ?2
                 WHERE id = (SELECT payout FROM parts WHERE id = ?1)",
                params![id, fee_msat],
            )?;
        }
        tx.commit()
    }

    // --- invoices (Lightning deposits) ---

    pub fn insert_invoice(&self, i: &Invoice) -> rusqlite::Result<u64> {
        self.db.execute(
            "INSERT INTO invoices (payment_hash, account, amount_msat, bolt11, created_ms,
                                   expires_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                i.payment_hash,
                i.account,
                i.amount_msat,
                i.bolt11,
                i.created_ms,
                i.expires_ms,
                invoice::OPEN
            ],
        )?;
        Ok(self.db.last_insert_rowid() as u64)
    }

    pub fn invoice_by_hash(&self, hash: &str) -> rusqlite::Result<Option<Invoice>> {
        self.db
            .query_row(
                &format!("SELECT {INVOICE_COLS} FROM invoices WHERE payment_hash = ?1"),
                [hash],
                invoice_row,
            )
            .optional()
    }

    pub fn set_invoice(&self, id: u64, state: &str, received_msat: u64) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE invoices SET state = ?2, received_msat = ?3 WHERE id = ?1",
            params![id, state, received_msat],
        )?;
        Ok(())
    }

    /// Invoices credited but not yet settled (a crash between the two commands).
    pub fn invoices_in(&self, state: &str) -> rusqlite::Result<Vec<Invoice>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {INVOICE_COLS} FROM invoices WHERE state = ?1 ORDER BY id"
        ))?;
        let rows = s.query_map([state], invoice_row)?;
        rows.collect()
    }

    pub fn count_open_invoices(&self, now_ms: u64) -> rusqlite::Result<u64> {
        self.db.query_row(
            "SELECT COUNT(*) FROM invoices WHERE state = ?1 AND expires_ms > ?2",
            params![invoice::OPEN, now_ms],
            |r| r.get(0),
        )
    }

    /// Paid invoices of an account (deposit history).
    pub fn deposits_of(&self, account: u32, page: Page) -> rusqlite::Result<Vec<Invoice>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {INVOICE_COLS} FROM invoices
             WHERE account = ?1 AND state != ?2 AND created_ms BETWEEN ?3 AND ?4
             ORDER BY created_ms DESC, id DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let rows = s.query_map(
            params![
                account,
                invoice::OPEN,
                page.start_ms,
                page.end_ms,
                page.limit,
                page.offset
            ],
            invoice_row,
        )?;
        rows.collect()
    }

    // --- Lightning withdrawals ---

    pub fn insert_withdrawal(&self, w: &Withdrawal) -> rusqlite::Result<u64> {
        self.db.execute(
            "INSERT INTO withdrawals (account, client_id, address, amount_sat, fee_sat, state,
                                      apply_ms, info)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                w.account,
                w.client_id,
                w.address,
                w.amount_sat,
                w.fee_sat,
                withdrawal::REQUESTED,
                w.apply_ms,
                w.info
            ],
        )?;
        Ok(self.db.last_insert_rowid() as u64)
    }

    pub fn withdrawal(&self, id: u64) -> rusqlite::Result<Option<Withdrawal>> {
        self.db
            .query_row(
                &format!("SELECT {WITHDRAWAL_COLS} FROM withdrawals WHERE id = ?1"),
                [id],
                withdrawal_row,
            )
            .optional()
    }

    pub fn withdrawal_by_client_id(
        &self,
        account: u32,
        client_id: &str,
    ) -> rusqlite::Result<Option<Withdrawal>> {
        self.db
            .query_row(
                &format!(
                    "SELECT {WITHDRAWAL_COLS} FROM withdrawals WHERE account = ?1 AND client_id = ?2"
                ),
                params![account, client_id],
                withdrawal_row,
            )
            .optional()
    }

    pub fn withdrawals_in(&self, states: &[&str]) -> rusqlite::Result<Vec<Withdrawal>> {
        let mut out = Vec::new();
        for st in states {
            let mut s = self.db.prepare(&format!(
                "SELECT {WITHDRAWAL_COLS} FROM withdrawals WHERE state = ?1 ORDER BY id"
            ))?;
            let rows = s.query_map([st], withdrawal_row)?;
            out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
        }
        Ok(out)
    }

    pub fn set_withdrawal(
        &self,
        id: u64,
        state: &str,
        payment_id: Option<&str>,
        complete_ms: Option<u64>,
        info: &str,
    ) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE withdrawals SET state = ?2, payment_id = COALESCE(?3, payment_id),
                                    complete_ms = ?4, info = ?5 WHERE id = ?1",
            params![id, state, payment_id, complete_ms, info],
        )?;
        Ok(())
    }

    pub fn delete_withdrawal(&self, id: u64) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM withdrawals WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn withdrawals_of(
        &self,
        account: u32,
        client_id: Option<&str>,
        page: Page,
    ) -> rusqlite::Result<Vec<Withdrawal>> {
        let mut s = self.db.prepare(&format!(
            "SELECT {WITHDRAWAL_COLS} FROM withdrawals
             WHERE account = ?1 AND (?2 IS NULL OR client_id = ?2) AND apply_ms BETWEEN ?3 AND ?4
             ORDER BY apply_ms DESC, id DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let rows = s.query_map(
            params![
                account,
                client_id,
                page.start_ms,
                page.end_ms,
                page.limit,
                page.offset
            ],
            withdrawal_row,
        )?;
        rows.collect()
    }

    pub fn count_withdrawals_in(&self, states: &[&str]) -> rusqlite::Result<u64> {
        let mut n = 0;
        for st in states {
            n += self.db.query_row::<u64, _, _>(
                "SELECT COUNT(*) FROM withdrawals WHERE state = ?1",
                [st],
                |r| r.get(0),
            )?;
        }
        Ok(n)
    }
}
