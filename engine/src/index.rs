//! Allocation-free open-addressing indexes from a key hash to an order slot.
//!
//! The table stores only `slot + 1` (0 = empty); the caller's closure compares the key
//! against the order stored in that slot, so an entry costs 4 bytes. Linear probing with
//! backward-shift deletion: no tombstones, so a table sized at twice its maximum population
//! never degrades and never reallocates.

pub(crate) struct SlotTable {
    buckets: Vec<u32>,
    mask: usize,
    len: usize,
    max_len: usize,
}

impl SlotTable {
    /// A table that holds up to `max_len` entries at a load factor of at most 1/2.
    pub(crate) fn new(max_len: usize) -> Self {
        let n = (max_len.max(8) * 2).next_power_of_two();
        SlotTable {
            // Zeroed memory: pages are committed only as they are touched.
            buckets: vec![0; n],
            mask: n - 1,
            len: 0,
            max_len,
        }
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash as usize) & self.mask
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = self.home(hash);
        loop {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if eq(b - 1) {
                return Some(b - 1);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts a slot whose key is not present.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        assert!(self.len < self.max_len, "index over its capacity");
        let mut i = self.home(hash);
        while self.buckets[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = slot + 1;
        self.len += 1;
    }

    /// Removes `slot` (stored under `hash`); `hash_of` gives the hash of any other slot.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32, hash_of: impl Fn(u32) -> u64) {
        let mut i = self.home(hash);
        while self.buckets[i] != slot + 1 {
            assert!(self.buckets[i] != 0, "removing a slot that is not indexed");
            i = (i + 1) & self.mask;
        }
        self.len -= 1;
        // Backward shift: pull later entries of the probe run into the hole when their
        // home position does not lie cyclically in (hole, j].
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let b = self.buckets[j];
            if b == 0 {
                break;
            }
            let home = self.home(hash_of(b - 1));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = 0;
    }

    /// Writes every bucket, so its pages are committed before the hot path needs them.
    pub(crate) fn prefault(&mut self) {
        if self.len == 0 {
            // black_box: the compiler must not drop a store of what calloc already gave.
            std::hint::black_box(&mut self.buckets).fill(0);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.len() * 4
    }
}

/// A strong 64-bit mix (splitmix64's finalizer): sequential ids spread over the table.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn behaves_like_a_map_under_churn() {
        // keys[slot] is the key stored at that slot; hash deliberately weak to force collisions.
        let hash = |k: u64| k % 7;
        let mut keys = vec![0u64; 64];
        let mut t = SlotTable::new(64);
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut free: Vec<u32> = (0..64).rev().collect();
        let mut x = 1u64;
        for step in 0..20_000u64 {
            x = mix64(x + step);
            let k = x % 100;
            match model.get(&k).copied() {
                Some(slot) => {
                    let ks = keys.clone();
                    t.remove(hash(k), slot, |s| hash(ks[s as usize]));
                    model.remove(&k);
                    free.push(slot);
                }
                None if !free.is_empty() => {
                    let slot = free.pop().unwrap();
                    keys[slot as usize] = k;
                    t.insert(hash(k), slot);
                    model.insert(k, slot);
                }
                None => {}
            }
            assert_eq!(t.len(), model.len());
            for probe in 0..100u64 {
                let got = t.find(hash(probe), |s| keys[s as usize] == probe);
                assert_eq!(
                    got,
                    model.get(&probe).copied(),
                    "key {probe} at step {step}"
                );
            }
        }
    }
}
