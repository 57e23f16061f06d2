//! One exponential backoff with jitter, for every retry loop of the workspace.
//!
//! The worker's resubscribe, the RabbitMQ reconnect, the MongoDB retries and the manager's
//! republish after a refused publish all wait the same way: a first wait, each next one
//! `factor` times the last up to a longest one, each scaled by a random factor from a jitter
//! range (so a fleet that failed at the same moment does not come back in lockstep), and back
//! to the first wait after a success.
//!
//! ```
//! use std::time::Duration;
//! use nebula_core::backoff::Backoff;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).factor(4);
//! assert_eq!(backoff.next(), Duration::from_millis(50));
//! assert_eq!(backoff.next(), Duration::from_millis(200));
//! assert_eq!(backoff.next(), Duration::from_millis(800));
//! assert_eq!(backoff.next(), Duration::from_secs(1));
//! backoff.reset();
//! assert_eq!(backoff.next(), Duration::from_millis(50));
//! ```

use std::ops::RangeInclusive;
use std::time::Duration;

/// An exponential backoff: `first`, then `factor` times the last wait, at most `max`, each
/// wait scaled by a random factor from the jitter range (none by default).
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    factor: u32,
    jitter: RangeInclusive<f64>,
    /// The step (before jitter) the next call of [`Backoff::next`] waits.
    step: Duration,
}

impl Backoff {
    /// Waits `first`, doubling up to `max`, without jitter.
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            factor: 2,
            jitter: 1.0..=1.0,
            step: first,
        }
    }

    /// Each wait is `factor` times the last (2 by default; 1 keeps the first wait).
    #[must_use]
    pub fn factor(mut self, factor: u32) -> Self {
        self.factor = factor.max(1);
        self
    }

    /// Each wait is scaled by a random factor in `range`, e.g. `0.5..=1.0`. A range whose
    /// bounds are out of order or negative is clamped to an empty jitter at its start.
    #[must_use]
    pub fn jitter(mut self, range: RangeInclusive<f64>) -> Self {
        let low = range.start().max(0.0);
        let high = range.end().max(low);
        self.jitter = low..=high;
        self
    }

    /// The wait before the next attempt; the step after it grows by the factor.
    #[allow(clippy::should_implement_trait)] // never ends: an iterator's `None` has no use
    pub fn next(&mut self) -> Duration {
        let wait = self.jittered(self.step);
        self.step = self.step.saturating_mul(self.factor).min(self.max);
        wait
    }

    /// The wait of the step the backoff is at (jittered), without moving on: the first wait
    /// after a [`Backoff::reset`].
    #[must_use]
    pub fn current(&self) -> Duration {
        self.jittered(self.step)
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    fn jittered(&self, wait: Duration) -> Duration {
        let (low, high) = (*self.jitter.start(), *self.jitter.end());
        if (low - 1.0).abs() < f64::EPSILON && (high - 1.0).abs() < f64::EPSILON {
            return wait;
        }
        let scale = if high > low {
            rand::random_range(low..=high)
        } else {
            low
        };
        wait.mul_f64(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_longest_wait_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(200 * MS, 1000 * MS);
        let waits: Vec<_> = (0..5).map(|_| b.next()).collect();
        assert_eq!(waits, [200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]);
        b.reset();
        assert_eq!(b.current(), 200 * MS);
        assert_eq!(b.next(), 200 * MS);
    }

    #[test]
    fn current_does_not_move_on() {
        let mut b = Backoff::new(250 * MS, 5000 * MS);
        assert_eq!(b.current(), 250 * MS);
        assert_eq!(b.current(), 250 * MS);
        assert_eq!(b.next(), 250 * MS);
        assert_eq!(b.current(), 500 * MS);
    }

    #[test]
    fn a_factor_of_four_gives_the_mongo_retries() {
        let mut b = Backoff::new(50 * MS, 800 * MS).factor(4);
        let waits: Vec<_> = (0..4).map(|_| b.next()).collect();
        assert_eq!(waits, [50 * MS, 200 * MS, 800 * MS, 800 * MS]);
    }

    #[test]
    fn jitter_stays_within_its_range_of_each_step() {
        let mut b = Backoff::new(500 * MS, 2000 * MS).jitter(0.5..=1.0);
        for step in [500, 1000, 2000, 2000] {
            let wait = b.next();
            assert!(
                wait >= step * MS / 2 && wait <= step * MS,
                "{wait:?} outside 0.5..1 of {step} ms"
            );
        }
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let waits: std::collections::BTreeSet<_> = (0..50)
            .map(|_| {
                Backoff::new(Duration::from_secs(5), Duration::from_secs(5))
                    .jitter(0.5..=1.0)
                    .next()
            })
            .collect();
        assert!(waits.len() > 25, "{} distinct waits of 50", waits.len());
    }

    #[test]
    fn odd_arguments_are_clamped() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1))
            .factor(0)
            .jitter(1.0..=-3.0);
        assert_eq!(b.next(), Duration::from_secs(2), "max below first: first");
        assert_eq!(b.next(), Duration::from_secs(2), "factor 0 acts as 1");
        let mut huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        huge.next();
        assert!(huge.next() >= Duration::MAX / 2, "no overflow");
    }
}
