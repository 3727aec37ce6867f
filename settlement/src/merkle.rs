//! The fills' Merkle root: one SHA-256 commitment to every fill of an epoch, published with
//! the epoch, so that anyone holding a fill and its inclusion proof can check it was counted.
//!
//! - Leaf: `SHA-256(0x00 || seq || trade_id || market || price || qty || maker_account ||
//!   taker_account || taker_side || maker_fee || taker_fee)`, every integer big-endian at
//!   its type's width (`u64`/`i64`: 8 bytes, `u32`: 4), `taker_side` one byte (Buy 0,
//!   Sell 1): `LEAF_BYTES` bytes after the prefix. `seq` is the sequence number of the
//!   command whose events hold the trade.
//! - Inner node: `SHA-256(0x01 || left || right)`. The distinct prefixes keep a leaf from
//!   passing for an inner node and the other way round.
//! - A level with an odd number of nodes carries its last node up unchanged.
//! - No leaves: 32 zero bytes.

use fulgur_engine::{Event, Side};
use sha2::{Digest, Sha256};

use crate::Hash32;

/// Bytes of a leaf's content, after the `0x00` prefix.
pub const LEAF_BYTES: usize = 61;

/// The root of an epoch without fills.
pub const EMPTY_ROOT: Hash32 = [0; 32];

/// The canonical bytes of a fill (without the leaf prefix), or `None` for an event that is
/// not a `Trade`.
pub fn leaf_bytes(seq: u64, trade: &Event) -> Option<[u8; LEAF_BYTES]> {
    let Event::Trade {
        trade_id,
        market,
        price,
        qty,
        maker_account,
        taker_account,
        taker_side,
        maker_fee,
        taker_fee,
        ..
    } = *trade
    else {
        return None;
    };
    let mut b = [0u8; LEAF_BYTES];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        b[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&seq.to_be_bytes());
    put(&trade_id.to_be_bytes());
    put(&market.to_be_bytes());
    put(&price.to_be_bytes());
    put(&qty.to_be_bytes());
    put(&maker_account.to_be_bytes());
    put(&taker_account.to_be_bytes());
    put(&[match taker_side {
        Side::Buy => 0,
        Side::Sell => 1,
    }]);
    put(&maker_fee.to_be_bytes());
    put(&taker_fee.to_be_bytes());
    debug_assert_eq!(at, LEAF_BYTES);
    Some(b)
}

/// A fill's leaf hash, or `None` for an event that is not a `Trade`.
pub fn leaf(seq: u64, trade: &Event) -> Option<Hash32> {
    leaf_bytes(seq, trade).map(|b| leaf_of_bytes(&b))
}

/// The leaf hash of canonical fill bytes (see `leaf_bytes`).
pub fn leaf_of_bytes(bytes: &[u8; LEAF_BYTES]) -> Hash32 {
    // One buffer, one digest call: cheaper than feeding the prefix separately.
    let mut buf = [0u8; 1 + LEAF_BYTES];
    buf[1..].copy_from_slice(bytes);
    Sha256::digest(buf).into()
}

/// An inner node over two children.
pub fn node(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The root over `leaves`, level by level: the reference the streaming builder must match.
pub fn root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return EMPTY_ROOT;
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node(l, r),
            [odd] => *odd,
            _ => unreachable!("chunks of 2"),
        })
        .collect()
}

/// The inclusion proof of `leaves[index]`, from the leaf's level up: each step is
/// `(sibling_is_left, sibling)`. A level where the node is the odd one carried up has no
/// step. Panics if `index` is out of range.
pub fn inclusion(leaves: &[Hash32], index: usize) -> Vec<(bool, Hash32)> {
    assert!(index < leaves.len(), "leaf {index} of {}", leaves.len());
    let mut proof = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            proof.push((i & 1 == 1, level[sibling]));
        }
        level = next_level(&level);
        i /= 2;
    }
    proof
}

/// Whether `leaf` with `proof` (from `inclusion`) leads to `root`.
pub fn verify(leaf: &Hash32, proof: &[(bool, Hash32)], root: &Hash32) -> bool {
    let top = proof.iter().fold(*leaf, |acc, (sibling_is_left, sibling)| {
        if *sibling_is_left {
            node(sibling, &acc)
        } else {
            node(&acc, sibling)
        }
    });
    top == *root
}

/// The root built as leaves come, in constant memory and without allocating: it keeps the
/// root of each complete power-of-two subtree not yet paired (at most one per height, like
/// the bits of a counter). Folding them from the lowest up gives the same root as `root`,
/// since the carried-up odd node is always the right child of the smaller subtree's parent.
#[derive(Clone, Debug)]
pub struct MerkleBuilder {
    /// `peaks[h]` holds a subtree of `2^h` leaves when bit `h` of `count` is set.
    peaks: [Hash32; 64],
    count: u64,
}

impl Default for MerkleBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleBuilder {
    pub fn new() -> Self {
        MerkleBuilder {
            peaks: [[0; 32]; 64],
            count: 0,
        }
    }

    /// Leaves pushed since the last reset.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push_leaf(&mut self, leaf: Hash32) {
        let mut carry = leaf;
        let mut h = 0;
        // Pair with every complete subtree of the same height, as a binary increment carries.
        while self.count & (1 << h) != 0 {
            carry = node(&self.peaks[h], &carry);
            h += 1;
        }
        self.peaks[h] = carry;
        self.count += 1;
    }

    /// The root over the leaves pushed so far (`EMPTY_ROOT` if none).
    pub fn root(&self) -> Hash32 {
        let mut bits = self.count;
        if bits == 0 {
            return EMPTY_ROOT;
        }
        let mut h = bits.trailing_zeros() as usize;
        let mut acc = self.peaks[h];
        bits &= bits - 1;
        while bits != 0 {
            h = bits.trailing_zeros() as usize;
            acc = node(&self.peaks[h], &acc);
            bits &= bits - 1;
        }
        acc
    }

    pub fn reset(&mut self) {
        // Stale peaks are never read: `count` says which are live.
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| {
                let mut b = [0u8; LEAF_BYTES];
                b[..8].copy_from_slice(&(i as u64).to_be_bytes());
                leaf_of_bytes(&b)
            })
            .collect()
    }

    fn trade() -> Event {
        Event::Trade {
            trade_id: 0x0102_0304_0506_0708,
            market: 0x0A0B_0C0D,
            price: 3,
            qty: 4,
            maker_order: 99,
            maker_account: 5,
            taker_account: 6,
            taker_order: 98,
            taker_side: Side::Sell,
            maker_fee: -2,
            taker_fee: 7,
            maker_remaining: 11,
        }
    }

    #[test]
    fn leaf_bytes_are_the_documented_layout() {
        let b = leaf_bytes(0x1122_3344_5566_7788, &trade()).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        want.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        want.extend_from_slice(&[0x0A, 0x0B, 0x0C, 0x0D]);
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&4u64.to_be_bytes());
        want.extend_from_slice(&5u32.to_be_bytes());
        want.extend_from_slice(&6u32.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&(-2i64).to_be_bytes());
        want.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(b.to_vec(), want);
        let mut prefixed = vec![0u8];
        prefixed.extend_from_slice(&want);
        let digest: Hash32 = Sha256::digest(&prefixed).into();
        assert_eq!(leaf(0x1122_3344_5566_7788, &trade()), Some(digest));
        // Order ids and the maker's remaining quantity are not part of a fill's record.
        let mut other = trade();
        if let Event::Trade {
            maker_order,
            maker_remaining,
            ..
        } = &mut other
        {
            *maker_order = 1;
            *maker_remaining = 0;
        }
        assert_eq!(
            leaf(0x1122_3344_5566_7788, &other),
            leaf(0x1122_3344_5566_7788, &trade())
        );
        assert_eq!(leaf(1, &Event::AssetAdded { asset: 0 }), None);
    }

    #[test]
    fn small_trees_by_hand() {
        let l = leaves(5);
        assert_eq!(root(&[]), EMPTY_ROOT);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), node(&l[0], &l[1]));
        assert_eq!(root(&l[..3]), node(&node(&l[0], &l[1]), &l[2]));
        let abcd = node(&node(&l[0], &l[1]), &node(&l[2], &l[3]));
        assert_eq!(root(&l[..4]), abcd);
        assert_eq!(root(&l), node(&abcd, &l[4]));
        // Inner nodes hash with prefix 0x01.
        let mut buf = vec![1u8];
        buf.extend_from_slice(&l[0]);
        buf.extend_from_slice(&l[1]);
        let want: Hash32 = Sha256::digest(&buf).into();
        assert_eq!(node(&l[0], &l[1]), want);
    }

    #[test]
    fn streaming_matches_batch_for_0_to_40_leaves() {
        let all = leaves(40);
        let mut b = MerkleBuilder::new();
        assert_eq!(b.root(), EMPTY_ROOT);
        for n in 1..=40 {
            b.push_leaf(all[n - 1]);
            assert_eq!(b.len(), n as u64);
            assert_eq!(b.root(), root(&all[..n]), "{n} leaves");
        }
        // A reset builder starts over, whatever stale peaks it kept.
        b.reset();
        assert!(b.is_empty());
        assert_eq!(b.root(), EMPTY_ROOT);
        for n in 0..=40 {
            let mut b2 = MerkleBuilder::new();
            b.reset();
            for l in &all[..n] {
                b.push_leaf(*l);
                b2.push_leaf(*l);
            }
            assert_eq!(b.root(), root(&all[..n]), "{n} leaves after reset");
            assert_eq!(b2.root(), root(&all[..n]), "{n} leaves");
        }
    }

    #[test]
    fn every_leaf_proves_and_nothing_else_does() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let l = &all[..n];
            let r = root(l);
            for i in 0..n {
                let proof = inclusion(l, i);
                assert!(verify(&l[i], &proof, &r), "leaf {i} of {n}");
                // Another leaf, a wrong root, or a changed step fail.
                assert!(!verify(&all[(i + 1) % 40], &proof, &r));
                assert!(!verify(&l[i], &proof, &node(&r, &r)));
                if let Some((side, h)) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = (!side, *h);
                    assert!(!verify(&l[i], &bad, &r));
                }
            }
        }
    }
}
