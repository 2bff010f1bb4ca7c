//! Deterministic test data: one xorshift generator, so a test can make the
//! same bytes again to check what came back, and the FNV-1a hash that
//! checks bulk transfers without keeping them.

/// The tests' pseudo-random generator: xorshift64 (13, 7, 17). Not for
/// anything but test data.
#[derive(Clone, Copy, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next state, which is also the output.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `len` deterministic pseudo-random bytes for `seed` (one byte per step).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut g = XorShift(seed | 1);
    (0..len).map(|_| (g.next_u64() >> 24) as u8).collect()
}

/// Fills `buf` with the next bytes of the stream whose state is `state`
/// (eight bytes per step), and advances `state`.
pub fn fill_pseudo(buf: &mut [u8], state: &mut u64) {
    let mut g = XorShift(*state);
    for chunk in buf.chunks_mut(8) {
        chunk.copy_from_slice(&g.next_u64().to_le_bytes()[..chunk.len()]);
    }
    *state = g.0;
}

/// 64-bit FNV-1a, for checking that bulk transfers arrive intact.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}
