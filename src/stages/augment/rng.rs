//! Per-record random generators.
//!
//! Every op of every view of every record gets its own generator, seeded from
//! `(pipeline seed, record id, view, column, op index)` by a fixed mix of SplitMix64 steps, so a
//! draw never depends on which worker ran the record, on batch boundaries or on other records.
//! The generator is xoshiro256++ (seeded through SplitMix64, as its authors recommend): fast to
//! seed, which matters because a fresh one is made per op per view, and fully specified here, so
//! its stream never changes with a dependency upgrade.

/// One SplitMix64 step: advances `state` and returns the next output.
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of a string (FNV-1a followed by a SplitMix64 finaliser); used to give each
/// augmented column its own streams. Unlike `std`'s hashers it never changes between builds.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    splitmix64(&mut h)
}

/// Folds `(seed, column hash, record id, view)` into one key; [`OpRng::new`] adds the op index.
#[inline]
pub fn record_key(seed: u64, column: u64, id: u64, view: u32) -> u64 {
    let mut s = seed ^ 0x6A09_E667_F3BC_C908;
    let mut h = splitmix64(&mut s);
    s = h ^ column;
    h = splitmix64(&mut s);
    s = h ^ id;
    h = splitmix64(&mut s);
    s = h ^ view as u64;
    splitmix64(&mut s)
}

/// The generator of one op for one view of one record (xoshiro256++).
#[derive(Debug, Clone)]
pub struct OpRng {
    s: [u64; 4],
}

impl OpRng {
    /// The generator for op number `op` of the record whose [`record_key`] is `key`.
    #[inline]
    pub fn new(key: u64, op: usize) -> OpRng {
        let mut st = key ^ (op as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix64(&mut st);
        }
        OpRng { s }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi] (returns `lo` when `lo == hi`).
    #[inline]
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n` (`n > 0`) by Lemire's multiply-shift; the bias is below
    /// `n / 2^64`, far under anything measurable here.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `true` with probability `p` (always `true` for `p >= 1`, never for `p <= 0`).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal draw (Box–Muller, one of the pair).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        // 1 - unit() is in (0, 1], so the log is finite.
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_vector() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation by S. Vigna).
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn keys_differ_by_every_component() {
        let base = record_key(1, 2, 3, 4);
        assert_ne!(base, record_key(9, 2, 3, 4));
        assert_ne!(base, record_key(1, 9, 3, 4));
        assert_ne!(base, record_key(1, 2, 9, 4));
        assert_ne!(base, record_key(1, 2, 3, 9));
        let a = OpRng::new(base, 0).next_u64();
        assert_ne!(a, OpRng::new(base, 1).next_u64());
        assert_eq!(a, OpRng::new(base, 0).next_u64());
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = OpRng::new(7, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10)] += 1;
        }
        // Expected 10,000 each; 5 standard deviations is about 475.
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = OpRng::new(11, 3);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}
