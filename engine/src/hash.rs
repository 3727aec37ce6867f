//! A fixed, portable 64-bit hasher for `Exchange::state_hash`: the same words in give the
//! same hash on every machine and Rust version (unlike `std`'s `DefaultHasher`).

pub(crate) struct StableHasher(u64);

impl StableHasher {
    pub(crate) fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }

    #[inline]
    pub(crate) fn u64(&mut self, x: u64) {
        self.0 = crate::index::mix64(self.0 ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        for chunk in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.u64(u64::from_le_bytes(w));
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
