//! Proof of liabilities: a Merkle-sum tree over account balances. Each leaf commits to an
//! account, its balance and a salt only that account is told (so a sibling hash reveals
//! nothing); each node commits to its children's hashes and sums, so the root commits to
//! the total. An account checks its inclusion proof against the published root: its
//! balance is counted, and no sum on its path was made smaller than its parts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

fn leaf_hash(account: u32, balance: u64, salt: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(account.to_be_bytes());
    h.update(balance.to_be_bytes());
    h.update(salt);
    h.finalize().into()
}

fn node_hash(l: &(Hash, u64), r: &(Hash, u64)) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l.0);
    h.update(l.1.to_be_bytes());
    h.update(r.0);
    h.update(r.1.to_be_bytes());
    h.finalize().into()
}

/// The filler of an odd level: commits to nothing, sums to zero.
fn empty() -> (Hash, u64) {
    (Sha256::digest(b"fulgur empty leaf").into(), 0)
}

/// The published commitment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Root {
    #[serde(with = "hex_hash")]
    pub hash: Hash,
    /// Sum of all balances (satoshis).
    pub total: u64,
    pub accounts: u32,
}

/// One step up: the sibling's hash and sum, and whether it is on the left.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    #[serde(with = "hex_hash")]
    pub hash: Hash,
    pub sum: u64,
    pub left: bool,
}

/// An account's inclusion proof.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inclusion {
    pub account: u32,
    pub balance: u64,
    #[serde(with = "hex_hash")]
    pub salt: Hash,
    pub path: Vec<Step>,
}

/// The whole tree, kept by the exchange (salts are private to each account).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tree {
    pub leaves: Vec<(u32, u64, String)>,
    pub root: Root,
}

/// Why a proof does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProofError {
    /// The recomputed root differs from the published one.
    RootMismatch,
    /// A sum on the path overflows.
    Overflow,
}

impl Tree {
    /// Builds the tree; `salt_seed` (secret, random per proof) derives each account's salt.
    pub fn build(balances: &[(u32, u64)], salt_seed: &Hash) -> Result<Tree, String> {
        let leaves: Vec<(u32, u64, String)> = balances
            .iter()
            .map(|&(a, b)| (a, b, hex::encode(salt(salt_seed, a))))
            .collect();
        let mut total = 0u64;
        for &(_, b) in balances {
            total = total.checked_add(b).ok_or("liabilities overflow u64")?;
        }
        let levels = levels(&leaves);
        let top = levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_else(empty);
        debug_assert_eq!(top.1, total);
        Ok(Tree {
            root: Root {
                hash: top.0,
                total,
                accounts: leaves.len() as u32,
            },
            leaves,
        })
    }

    /// The inclusion proof of an account, if it has a leaf.
    pub fn inclusion(&self, account: u32) -> Option<Inclusion> {
        let i = self.leaves.iter().position(|l| l.0 == account)?;
        let levels = levels(&self.leaves);
        let mut path = Vec::new();
        let mut idx = i;
        for level in &levels[..levels.len() - 1] {
            let sib = idx ^ 1;
            let s = level.get(sib).copied().unwrap_or_else(empty);
            path.push(Step {
                hash: s.0,
                sum: s.1,
                left: sib < idx,
            });
            idx /= 2;
        }
        let (_, balance, salt_hex) = &self.leaves[i];
        let mut salt = [0u8; 32];
        hex::decode_to_slice(salt_hex, &mut salt).ok()?;
        Some(Inclusion {
            account,
            balance: *balance,
            salt,
            path,
        })
    }
}

fn salt(seed: &Hash, account: u32) -> Hash {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(account.to_be_bytes());
    h.finalize().into()
}

fn levels(leaves: &[(u32, u64, String)]) -> Vec<Vec<(Hash, u64)>> {
    let mut level: Vec<(Hash, u64)> = leaves
        .iter()
        .map(|(a, b, s)| {
            let mut salt = [0u8; 32];
            hex::decode_to_slice(s, &mut salt).expect("salts are written as 32-byte hex");
            (leaf_hash(*a, *b, &salt), *b)
        })
        .collect();
    if level.is_empty() {
        level.push(empty());
    }
    let mut out = vec![level.clone()];
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| {
                let r = c.get(1).copied().unwrap_or_else(empty);
                (node_hash(&c[0], &r), c[0].1 + r.1)
            })
            .collect();
        out.push(level.clone());
    }
    out
}

/// Checks an inclusion proof against a published root.
pub fn verify(p: &Inclusion, root: &Root) -> Result<(), ProofError> {
    let mut cur = (leaf_hash(p.account, p.balance, &p.salt), p.balance);
    for s in &p.path {
        let sum = cur.1.checked_add(s.sum).ok_or(ProofError::Overflow)?;
        let sib = (s.hash, s.sum);
        let h = if s.left {
            node_hash(&sib, &cur)
        } else {
            node_hash(&cur, &sib)
        };
        cur = (h, sum);
    }
    if cur.0 == root.hash && cur.1 == root.total {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_verifies_and_tampering_fails() {
        for n in [1u32, 2, 3, 5, 8, 13] {
            let balances: Vec<(u32, u64)> =
                (0..n).map(|a| (a * 3 + 1, 1000 + a as u64 * 7)).collect();
            let tree = Tree::build(&balances, &[7; 32]).unwrap();
            assert_eq!(tree.root.total, balances.iter().map(|b| b.1).sum::<u64>());
            for &(a, b) in &balances {
                let p = tree.inclusion(a).unwrap();
                assert_eq!(p.balance, b);
                verify(&p, &tree.root).unwrap();
                // A smaller balance, a changed sibling sum, another account's salt: all fail.
                let mut t = p.clone();
                t.balance -= 1;
                assert_eq!(verify(&t, &tree.root), Err(ProofError::RootMismatch));
                if let Some(s) = p.path.first() {
                    // Any other sum (the filler of an odd level sums to 0: raise that one).
                    let mut t = p.clone();
                    t.path[0].sum = if s.sum > 0 { s.sum - 1 } else { 1 };
                    assert!(verify(&t, &tree.root).is_err());
                }
                let mut t = p.clone();
                t.salt[0] ^= 1;
                assert!(verify(&t, &tree.root).is_err());
                // A root that claims less than the leaves add up to.
                let mut r = tree.root.clone();
                r.total -= 1;
                assert!(verify(&p, &r).is_err());
            }
            assert!(tree.inclusion(0).is_none());
        }
    }
}
