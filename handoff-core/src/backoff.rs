//! How long to wait before retrying a failed attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backoff {
    /// Retry at once.
    None,
    /// Always wait the same time.
    Fixed(Duration),
    /// Wait `base × 2^(retry − 1)`, capped at `max`; with `jitter`, a uniformly random
    /// wait between half of that and all of it (so retries of many functions spread out).
    Exponential {
        /// The first wait.
        base: Duration,
        /// The longest wait.
        max: Duration,
        /// Randomise each wait within `[wait / 2, wait]`.
        jitter: bool,
    },
}

impl Default for Backoff {
    /// A short exponential backoff: 5 ms, 10 ms, 20 ms … capped at 1 s, with jitter.
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry). `random` is a
    /// uniformly random number, used only with jitter.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed(wait) => wait,
            Backoff::Exponential { base, max, jitter } => {
                let shift = retry.saturating_sub(1).min(32);
                let wait = base.saturating_mul(1_u32 << shift.min(31)).min(max);
                if jitter && !wait.is_zero() {
                    let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
                    let half = nanos / 2;
                    Duration::from_nanos(half + random % (nanos - half + 1))
                } else {
                    wait
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let b = Backoff::Exponential {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            jitter: false,
        };
        let waits: Vec<u128> = (1..=5).map(|r| b.delay(r, 0).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(b.delay(1000, 0), Duration::from_millis(50));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let b = Backoff::Exponential {
            base: Duration::from_millis(8),
            max: Duration::from_secs(1),
            jitter: true,
        };
        for random in [0, 1, 12345, u64::MAX] {
            let d = b.delay(2, random);
            assert!(
                d >= Duration::from_millis(8) && d <= Duration::from_millis(16),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_default_is_a_short_exponential_backoff_with_jitter() {
        let b = Backoff::default();
        assert_eq!(
            b,
            Backoff::Exponential {
                base: Duration::from_millis(5),
                max: Duration::from_secs(1),
                jitter: true,
            }
        );
        for (retry, top) in [(1, 5), (2, 10), (3, 20), (20, 1000)] {
            for random in [0, 7, u64::MAX] {
                let d = b.delay(retry, random);
                let top = Duration::from_millis(top);
                assert!(d >= top / 2 && d <= top, "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn none_and_fixed() {
        assert_eq!(Backoff::None.delay(3, 7), Duration::ZERO);
        assert_eq!(
            Backoff::Fixed(Duration::from_millis(3)).delay(9, 7),
            Duration::from_millis(3)
        );
    }
}
