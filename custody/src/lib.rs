//! # fulgur-custody
//!
//! The custody service: it holds the exchange's on-chain bitcoin and turns chain events
//! into ledger commands (`Deposit`, `WithdrawHold`, `WithdrawFinalize`,
//! `WithdrawRelease`). It talks to the engine only through commands and events.
//!
//! Being built (issue "custody"): so far only the test harness exists, a real Bitcoin Core
//! node in regtest (`tests/regtest.rs`, with `bitcoind` built by `scripts/bitcoind.sh`).
//! To come: BDK wallets synced block by block from bitcoind, deposit addresses per account,
//! confirmations and reorgs, batched withdrawals, hot/cold wallets, proofs of reserves.
