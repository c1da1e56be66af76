//! Seeded randomness: one ChaCha8 stream per concern (swarm parameters, workload,
//! faults, latency, crash points, sampling), all derived from the run's seed. Separate
//! streams keep a change in one concern (say, one more fault draw) from shifting every
//! other decision of the run. Integer arithmetic only: no floats reach a decision, so
//! debug and release builds draw identically.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// One independent random stream.
pub struct Stream(ChaCha8Rng);

/// Which concern a stream serves (its ChaCha stream id).
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    Params = 1,
    Workload = 2,
    Faults = 3,
    Latency = 4,
    Crash = 5,
    Sample = 6,
    Content = 7,
}

impl Stream {
    pub fn new(seed: u64, purpose: Purpose) -> Stream {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(purpose as u64);
        Stream(r)
    }

    /// A stream for a sub-decision (e.g. the contents of one workload operation).
    pub fn derived(seed: u64, salt: u64) -> Stream {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ salt.rotate_left(17));
        r.set_stream(salt);
        Stream(r)
    }

    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `ppm` parts per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }

    /// True with probability one half.
    pub fn coin(&mut self) -> bool {
        self.u64() & 1 == 1
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Index drawn with the given integer weights (all zero: index 0).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return 0;
        }
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }

    /// Exponentially distributed delay with the given mean (integer approximation:
    /// geometric in 1/16ths of the mean), capped at 8x the mean.
    pub fn exp_ms(&mut self, mean: u64) -> u64 {
        if mean == 0 {
            return 0;
        }
        // Sum of a geometric count of mean/16 steps: mean ~= mean.
        let step = (mean / 16).max(1);
        let mut t = 0;
        while t < mean * 8 && !self.chance(1_000_000 / 16) {
            t += step;
        }
        t
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}

/// The named streams of one run.
pub struct Streams {
    pub workload: Stream,
    pub faults: Stream,
    pub latency: Stream,
    pub crash: Stream,
    pub sample: Stream,
    pub content: Stream,
}

impl Streams {
    pub fn new(seed: u64) -> Streams {
        Streams {
            workload: Stream::new(seed, Purpose::Workload),
            faults: Stream::new(seed, Purpose::Faults),
            latency: Stream::new(seed, Purpose::Latency),
            crash: Stream::new(seed, Purpose::Crash),
            sample: Stream::new(seed, Purpose::Sample),
            content: Stream::new(seed, Purpose::Content),
        }
    }
}

/// SplitMix64: a tiny deterministic generator for bulk row contents.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Bytes that compress somewhat (runs and noise), like real rows.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let x = self.next_u64();
            if x & 3 == 0 {
                let run = ((x >> 8) & 63) as usize + 1;
                let b = (x >> 16) as u8;
                out.extend(std::iter::repeat_n(b, run.min(len - out.len())));
            } else if len - out.len() >= 8 {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                let n = len - out.len();
                out.extend_from_slice(&x.to_le_bytes()[..n]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_reproducible() {
        let mut a = Stream::new(7, Purpose::Faults);
        let mut b = Stream::new(7, Purpose::Faults);
        let mut c = Stream::new(7, Purpose::Workload);
        let xa: Vec<u64> = (0..8).map(|_| a.u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        for _ in 0..1000 {
            assert!(a.below(10) < 10);
            let r = a.range(5, 9);
            assert!((5..=9).contains(&r));
        }
        assert!(!a.chance(0));
        assert!(a.chance(1_000_000));
    }
}
