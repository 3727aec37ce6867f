//! Settlement: what makes Fulgur a CEX/DEX hybrid. Trades match on the ledger at engine
//! speed; every epoch this crate nets each self-custody account's BTC change from the
//! event stream (fills and fees), records the epoch (fills' Merkle root, nets, payout
//! intents) and pays every positive net over a payout rail, Lightning by default, so the
//! exchange holds such a user's money for at most one epoch.
//!
//! It owns: the in-process Lightning node (`node`, over ldk-node), netting (`net`), the
//! fills' Merkle root (`merkle`), the settlement store (`store`, SQLite) and the service
//! that runs epochs, payouts, Lightning deposits and Lightning withdrawals (`service`).
//! It talks to the engine only through commands and events.

pub mod merkle;
pub mod net;
pub mod node;
pub mod service;
pub mod store;

use serde::{Deserialize, Serialize};

/// 32 bytes: a payment hash, preimage or id.
pub type Hash32 = [u8; 32];

/// Where an account's payouts go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// A node id (33-byte compressed key, hex): spontaneous (keysend) payments.
    Node(String),
    /// A BOLT12 offer (`lno1...`) without a fixed amount.
    Offer(String),
}

/// One payment of a payout: a payout larger than the channel allows is sent as several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRequest {
    /// Names the part uniquely: `fulgur:<epoch>:<account>:<part>`.
    pub tag: String,
    /// Derived from a secret and the tag: the same part always has the same payment hash,
    /// so a resend after a crash is refused by the node as a duplicate instead of paying twice.
    pub preimage: Hash32,
    pub amount_msat: u64,
    pub destination: Destination,
}

/// What the rail knows of a part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartStatus {
    /// Never sent (or forgotten after a failure before it reached the node).
    Unknown,
    Pending,
    Succeeded {
        fee_msat: u64,
    },
    Failed(String),
}

/// A way to pay a payout: Lightning here; a Taproot Assets or RGB rail for stablecoin and
/// RWA legs would implement the same trait.
pub trait PayoutRail: Send + Sync {
    /// Largest single payment `dest` can be sent now, in msat (0: none; peer offline, no
    /// channel, or the in-flight limit is used up by earlier parts).
    fn sendable_msat(&self, dest: &Destination) -> u64;
    /// Starts paying `part`. Must not pay a part twice: a part that is pending or paid is
    /// refused (or answered Ok without a second payment).
    fn send(&self, part: &PartRequest) -> Result<(), String>;
    fn status(&self, part: &PartRequest) -> PartStatus;
}
