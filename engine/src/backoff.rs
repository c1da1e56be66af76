//! Retry delays: exponential backoff with full jitter, drawn from a caller-seeded RNG
//! so that the simulator reproduces every retry exactly.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base_ms: 100,
            max_ms: 30_000,
        }
    }
}

/// Full-jitter exponential backoff: attempt `n` (1-based) waits a uniform delay in
/// `[0, min(max, base * 2^(n-1))]`, at least 1 ms so a retry is never immediate.
pub struct Backoff {
    cfg: BackoffConfig,
    rng: ChaCha8Rng,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig, seed: u64) -> Self {
        Backoff {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn ceiling(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(40);
        self.cfg
            .base_ms
            .saturating_mul(1u64 << shift)
            .min(self.cfg.max_ms)
            .max(1)
    }

    pub fn delay(&mut self, attempt: u32) -> u64 {
        let cap = self.ceiling(attempt);
        (self.rng.next_u64() % (cap + 1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_and_seeded() {
        let cfg = BackoffConfig {
            base_ms: 100,
            max_ms: 5_000,
        };
        let mut a = Backoff::new(cfg, 7);
        let mut b = Backoff::new(cfg, 7);
        for attempt in 1..30 {
            let d = a.delay(attempt);
            assert_eq!(d, b.delay(attempt));
            assert!(d >= 1 && d <= a.ceiling(attempt));
        }
        assert_eq!(a.ceiling(1), 100);
        assert_eq!(a.ceiling(3), 400);
        assert_eq!(a.ceiling(30), 5_000);
    }
}
