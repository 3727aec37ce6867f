//! The custody ledger of record (`<data dir>/custody/custody.sqlite`): deposit addresses,
//! deposits and withdrawals with their states, and the signed batch transactions. Every
//! state change is one SQLite transaction (WAL, `synchronous=FULL`), written before the
//! step it records is taken outside (a command submitted, a transaction broadcast), so a
//! restart resumes each row from its state.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub use rusqlite::Error as SqlError;

/// A deposit's states.
pub mod deposit {
    /// Seen, fewer confirmations than needed (or unconfirmed).
    pub const PENDING: &str = "pending";
    /// `DepositCredit` acknowledged.
    pub const CREDITED: &str = "credited";
    /// Deep enough: `DepositSettle` acknowledged, never reversed from now on.
    pub const SETTLED: &str = "settled";
    /// Neither in the chain nor in the mempool any more (double spent); it comes back to
    /// pending if it shows up again.
    pub const DROPPED: &str = "dropped";
}

/// A withdrawal's states.
pub mod withdrawal {
    /// Stored; its `WithdrawHold` not yet acknowledged.
    pub const REQUESTED: &str = "requested";
    /// Held in the ledger, waiting for the next batch.
    pub const HELD: &str = "held";
    /// In a signed, stored batch transaction (not yet known to be broadcast).
    pub const BATCHED: &str = "batched";
    pub const BROADCAST: &str = "broadcast";
    /// Confirmed and `WithdrawFinalize` acknowledged.
    pub const CONFIRMED: &str = "confirmed";
    /// Its transaction could not be broadcast; `WithdrawRelease` acknowledged.
    pub const FAILED: &str = "failed";
    /// The ledger refused the hold (balance, frozen account).
    pub const REJECTED: &str = "rejected";
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Deposit {
    pub id: u64,
    pub txid: String,
    pub vout: u32,
    pub account: u32,
    pub amount_sat: u64,
    pub address: String,
    pub state: String,
    pub confirmations: u32,
    pub insert_ms: u64,
    /// Times a reorg took it back after it was credited.
    pub reversals: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: u64,
    pub account: u32,
    pub client_id: Option<String>,
    pub address: String,
    /// What the recipient gets.
    pub amount_sat: u64,
    /// The account's fee.
    pub fee_sat: u64,
    /// What the ledger holds: amount + fee.
    pub hold_sat: u64,
    pub state: String,
    pub batch: Option<u64>,
    pub txid: Option<String>,
    pub apply_ms: u64,
    pub complete_ms: Option<u64>,
    pub info: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: u64,
    pub txid: String,
    pub raw_hex: String,
    pub fee_sat: u64,
    pub state: String,
}

pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS addresses(
    account INTEGER PRIMARY KEY, idx INTEGER NOT NULL UNIQUE, address TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS deposits(
    id INTEGER PRIMARY KEY, txid TEXT NOT NULL, vout INTEGER NOT NULL,
    account INTEGER NOT NULL, amount_sat INTEGER NOT NULL, address TEXT NOT NULL,
    state TEXT NOT NULL, confirmations INTEGER NOT NULL DEFAULT 0,
    insert_ms INTEGER NOT NULL, reversals INTEGER NOT NULL DEFAULT 0,
    UNIQUE(txid, vout));
CREATE INDEX IF NOT EXISTS deposits_account ON deposits(account, id);
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY, txid TEXT NOT NULL UNIQUE, raw_hex TEXT NOT NULL,
    fee_sat INTEGER NOT NULL, state TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS withdrawals(
    id INTEGER PRIMARY KEY, account INTEGER NOT NULL, client_id TEXT,
    address TEXT NOT NULL, amount_sat INTEGER NOT NULL, fee_sat INTEGER NOT NULL,
    hold_sat INTEGER NOT NULL, state TEXT NOT NULL, batch INTEGER REFERENCES batches(id),
    apply_ms INTEGER NOT NULL, complete_ms INTEGER, info TEXT NOT NULL DEFAULT '',
    UNIQUE(account, client_id));
CREATE INDEX IF NOT EXISTS withdrawals_account ON withdrawals(account, id);
CREATE INDEX IF NOT EXISTS withdrawals_state ON withdrawals(state);
";

fn deposit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Deposit> {
    Ok(Deposit {
        id: r.get::<_, i64>(0)? as u64,
        txid: r.get(1)?,
        vout: r.get(2)?,
        account: r.get(3)?,
        amount_sat: r.get::<_, i64>(4)? as u64,
        address: r.get(5)?,
        state: r.get(6)?,
        confirmations: r.get(7)?,
        insert_ms: r.get::<_, i64>(8)? as u64,
        reversals: r.get(9)?,
    })
}

const DEPOSIT_COLS: &str =
    "id, txid, vout, account, amount_sat, address, state, confirmations, insert_ms, reversals";
const WITHDRAWAL_COLS: &str = "w.id, w.account, w.client_id, w.address, w.amount_sat, w.fee_sat, \
     w.hold_sat, w.state, w.batch, b.txid, w.apply_ms, w.complete_ms, w.info";

fn withdrawal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Withdrawal> {
    Ok(Withdrawal {
        id: r.get::<_, i64>(0)? as u64,
        account: r.get(1)?,
        client_id: r.get(2)?,
        address: r.get(3)?,
        amount_sat: r.get::<_, i64>(4)? as u64,
        fee_sat: r.get::<_, i64>(5)? as u64,
        hold_sat: r.get::<_, i64>(6)? as u64,
        state: r.get(7)?,
        batch: r.get::<_, Option<i64>>(8)?.map(|b| b as u64),
        txid: r.get(9)?,
        apply_ms: r.get::<_, i64>(10)? as u64,
        complete_ms: r.get::<_, Option<i64>>(11)?.map(|t| t as u64),
        info: r.get(12)?,
    })
}

/// A page of history: newest first, as Binance answers.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub start_ms: u64,
    pub end_ms: u64,
    pub offset: u32,
    pub limit: u32,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, String> {
        let conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .and_then(|_| conn.execute_batch(SCHEMA))
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Store { conn })
    }

    pub fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .map(|_| ())
    }

    // ----- addresses -----

    pub fn address_of(&self, account: u32) -> rusqlite::Result<Option<(u32, String)>> {
        self.conn
            .query_row(
                "SELECT idx, address FROM addresses WHERE account = ?1",
                [account],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }

    pub fn account_of_index(&self, idx: u32) -> rusqlite::Result<Option<u32>> {
        self.conn
            .query_row("SELECT account FROM addresses WHERE idx = ?1", [idx], |r| {
                r.get(0)
            })
            .optional()
    }

    pub fn max_address_index(&self) -> rusqlite::Result<Option<u32>> {
        self.conn
            .query_row("SELECT MAX(idx) FROM addresses", [], |r| r.get(0))
    }

    pub fn insert_address(&self, account: u32, idx: u32, address: &str) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "INSERT INTO addresses(account, idx, address) VALUES(?1, ?2, ?3)",
                params![account, idx, address],
            )
            .map(|_| ())
    }

    // ----- deposits -----

    /// Records a deposit seen for the first time; its id (the ledger's deposit id).
    pub fn insert_deposit(
        &self,
        txid: &str,
        vout: u32,
        account: u32,
        amount_sat: u64,
        address: &str,
        now_ms: u64,
    ) -> rusqlite::Result<u64> {
        self.conn.execute(
            "INSERT INTO deposits(txid, vout, account, amount_sat, address, state, insert_ms)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(txid, vout) DO NOTHING",
            params![
                txid,
                vout,
                account,
                amount_sat as i64,
                address,
                deposit::PENDING,
                now_ms as i64
            ],
        )?;
        self.conn.query_row(
            "SELECT id FROM deposits WHERE txid = ?1 AND vout = ?2",
            params![txid, vout],
            |r| r.get::<_, i64>(0).map(|i| i as u64),
        )
    }

    pub fn deposit_by_outpoint(&self, txid: &str, vout: u32) -> rusqlite::Result<Option<Deposit>> {
        self.conn
            .query_row(
                &format!("SELECT {DEPOSIT_COLS} FROM deposits WHERE txid = ?1 AND vout = ?2"),
                params![txid, vout],
                deposit_row,
            )
            .optional()
    }

    /// Deposits not yet settled.
    pub fn open_deposits(&self) -> rusqlite::Result<Vec<Deposit>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {DEPOSIT_COLS} FROM deposits WHERE state != ?1 ORDER BY id"
        ))?;
        let v = s.query_map([deposit::SETTLED], deposit_row)?.collect();
        v
    }

    pub fn set_deposit(&self, id: u64, state: &str, confirmations: u32) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "UPDATE deposits SET state = ?2, confirmations = ?3 WHERE id = ?1",
                params![id as i64, state, confirmations],
            )
            .map(|_| ())
    }

    pub fn count_reversal(&self, id: u64) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "UPDATE deposits SET reversals = reversals + 1 WHERE id = ?1",
                [id as i64],
            )
            .map(|_| ())
    }

    pub fn deposits_of(&self, account: u32, page: Page) -> rusqlite::Result<Vec<Deposit>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {DEPOSIT_COLS} FROM deposits WHERE account = ?1 AND insert_ms BETWEEN ?2 AND ?3
             ORDER BY id DESC LIMIT ?4 OFFSET ?5"
        ))?;
        let v = s
            .query_map(
                params![
                    account,
                    page.start_ms as i64,
                    page.end_ms.min(i64::MAX as u64) as i64,
                    page.limit,
                    page.offset
                ],
                deposit_row,
            )?
            .collect();
        v
    }

    // ----- withdrawals -----

    /// Stores a request; `None` if the account already used this client id.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_withdrawal(
        &self,
        account: u32,
        client_id: Option<&str>,
        address: &str,
        amount_sat: u64,
        fee_sat: u64,
        hold_sat: u64,
        now_ms: u64,
    ) -> rusqlite::Result<Option<u64>> {
        let n = self.conn.execute(
            "INSERT INTO withdrawals(account, client_id, address, amount_sat, fee_sat, hold_sat, state, apply_ms)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(account, client_id) DO NOTHING",
            params![
                account,
                client_id,
                address,
                amount_sat as i64,
                fee_sat as i64,
                hold_sat as i64,
                withdrawal::REQUESTED,
                now_ms as i64
            ],
        )?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid() as u64))
    }

    pub fn withdrawal(&self, id: u64) -> rusqlite::Result<Option<Withdrawal>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {WITHDRAWAL_COLS} FROM withdrawals w LEFT JOIN batches b ON b.id = w.batch WHERE w.id = ?1"
                ),
                [id as i64],
                withdrawal_row,
            )
            .optional()
    }

    pub fn withdrawals_in(&self, state: &str) -> rusqlite::Result<Vec<Withdrawal>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {WITHDRAWAL_COLS} FROM withdrawals w LEFT JOIN batches b ON b.id = w.batch
             WHERE w.state = ?1 ORDER BY w.id"
        ))?;
        let v = s.query_map([state], withdrawal_row)?.collect();
        v
    }

    pub fn count_withdrawals_in(&self, state: &str) -> rusqlite::Result<u64> {
        self.conn.query_row(
            "SELECT COUNT(*) FROM withdrawals WHERE state = ?1",
            [state],
            |r| r.get::<_, i64>(0).map(|n| n as u64),
        )
    }

    pub fn withdrawals_of_batch(&self, batch: u64) -> rusqlite::Result<Vec<Withdrawal>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {WITHDRAWAL_COLS} FROM withdrawals w LEFT JOIN batches b ON b.id = w.batch
             WHERE w.batch = ?1 ORDER BY w.id"
        ))?;
        let v = s.query_map([batch as i64], withdrawal_row)?.collect();
        v
    }

    pub fn set_withdrawal(
        &self,
        id: u64,
        state: &str,
        complete_ms: Option<u64>,
        info: &str,
    ) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "UPDATE withdrawals SET state = ?2, complete_ms = COALESCE(?3, complete_ms), info = ?4 WHERE id = ?1",
                params![id as i64, state, complete_ms.map(|t| t as i64), info],
            )
            .map(|_| ())
    }

    /// Forgets a request the ledger refused while its client waited for the answer: the
    /// client got the error, and nothing is left behind.
    pub fn delete_withdrawal(&self, id: u64) -> rusqlite::Result<()> {
        self.conn
            .execute(
                "DELETE FROM withdrawals WHERE id = ?1 AND state = ?2",
                params![id as i64, withdrawal::REQUESTED],
            )
            .map(|_| ())
    }

    pub fn withdrawals_of(
        &self,
        account: u32,
        client_id: Option<&str>,
        page: Page,
    ) -> rusqlite::Result<Vec<Withdrawal>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {WITHDRAWAL_COLS} FROM withdrawals w LEFT JOIN batches b ON b.id = w.batch
             WHERE w.account = ?1 AND (?2 IS NULL OR w.client_id = ?2)
               AND w.apply_ms BETWEEN ?3 AND ?4
             ORDER BY w.id DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let v = s
            .query_map(
                params![
                    account,
                    client_id,
                    page.start_ms as i64,
                    page.end_ms.min(i64::MAX as u64) as i64,
                    page.limit,
                    page.offset
                ],
                withdrawal_row,
            )?
            .collect();
        v
    }

    // ----- batches -----

    /// Stores a signed transaction and moves its withdrawals to `batched`, atomically:
    /// from here on they are paid by this transaction or by nothing.
    pub fn insert_batch(
        &mut self,
        txid: &str,
        raw_hex: &str,
        fee_sat: u64,
        withdrawals: &[u64],
        now_ms: u64,
    ) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO batches(txid, raw_hex, fee_sat, state, created_ms) VALUES(?1, ?2, ?3, 'signed', ?4)",
            params![txid, raw_hex, fee_sat as i64, now_ms as i64],
        )?;
        let id = tx.last_insert_rowid();
        for w in withdrawals {
            tx.execute(
                "UPDATE withdrawals SET state = ?2, batch = ?3 WHERE id = ?1 AND state = ?4",
                params![*w as i64, withdrawal::BATCHED, id, withdrawal::HELD],
            )?;
        }
        tx.commit()?;
        Ok(id as u64)
    }

    /// Batches whose transaction is not yet final (signed or broadcast).
    pub fn open_batches(&self) -> rusqlite::Result<Vec<Batch>> {
        let mut s = self.conn.prepare(
            "SELECT id, txid, raw_hex, fee_sat, state FROM batches
             WHERE state IN ('signed', 'broadcast') ORDER BY id",
        )?;
        let v = s
            .query_map([], |r| {
                Ok(Batch {
                    id: r.get::<_, i64>(0)? as u64,
                    txid: r.get(1)?,
                    raw_hex: r.get(2)?,
                    fee_sat: r.get::<_, i64>(3)? as u64,
                    state: r.get(4)?,
                })
            })?
            .collect();
        v
    }

    pub fn batch(&self, id: u64) -> rusqlite::Result<Option<Batch>> {
        self.conn
            .query_row(
                "SELECT id, txid, raw_hex, fee_sat, state FROM batches WHERE id = ?1",
                [id as i64],
                |r| {
                    Ok(Batch {
                        id: r.get::<_, i64>(0)? as u64,
                        txid: r.get(1)?,
                        raw_hex: r.get(2)?,
                        fee_sat: r.get::<_, i64>(3)? as u64,
                        state: r.get(4)?,
                    })
                },
            )
            .optional()
    }

    /// A batch's new state, with its withdrawals' (those not yet past it).
    pub fn set_batch(&mut self, id: u64, state: &str) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE batches SET state = ?2 WHERE id = ?1",
            params![id as i64, state],
        )?;
        if state == "broadcast" {
            tx.execute(
                "UPDATE withdrawals SET state = ?2 WHERE batch = ?1 AND state = ?3",
                params![id as i64, withdrawal::BROADCAST, withdrawal::BATCHED],
            )?;
        }
        tx.commit()
    }
}
