//! How long a channel stays down between an adapter's failure and the next try at
//! building a fresh one.

use std::time::Duration;

/// The delays of a channel's circuit breaker: [`Backoff::FIRST`] after a failure,
/// doubling with each failure in a row up to [`Backoff::CAP`].
///
/// The streak ends, and the delay is back to [`Backoff::FIRST`], when an adapter
/// has stayed up for [`Backoff::STABLE`] (twice the cap) before it fails. A build
/// that fails is a failure with no time up, so it never ends the streak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Backoff {
    /// Failures in a row so far.
    streak: u32,
}

impl Backoff {
    /// The delay after the first failure of a streak.
    pub(super) const FIRST: Duration = Duration::from_secs(1);
    /// The longest delay.
    pub(super) const CAP: Duration = Duration::from_secs(60);
    /// How long an adapter must stay up for its failure to start a new streak.
    pub(super) const STABLE: Duration = Duration::from_secs(2 * Self::CAP.as_secs());

    /// Counts a failure and returns how long to wait before the next build.
    /// `up_for`: how long the failed adapter had been up (`None`: the build failed).
    pub(super) fn failed(&mut self, up_for: Option<Duration>) -> Duration {
        if up_for.is_some_and(|up| up >= Self::STABLE) {
            self.streak = 0;
        }
        // 2^6 s is past the cap already: no need to count further.
        let delay = Self::FIRST
            .saturating_mul(1 << self.streak.min(6))
            .min(Self::CAP);
        self.streak = self.streak.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_delay_doubles_with_each_failure_in_a_row_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..9)
            .map(|_| backoff.failed(Some(secs(5))).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn failed_builds_keep_the_streak_going() {
        let mut backoff = Backoff::default();
        backoff.failed(Some(secs(1)));
        assert_eq!(backoff.failed(None), secs(2));
        assert_eq!(backoff.failed(None), secs(4));
    }

    #[test]
    fn an_adapter_that_stayed_up_long_enough_starts_a_new_streak() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.failed(None);
        }
        assert_eq!(
            backoff.failed(Some(Backoff::STABLE - secs(1))),
            Backoff::CAP
        );
        assert_eq!(backoff.failed(Some(Backoff::STABLE)), Backoff::FIRST);
        assert_eq!(backoff.failed(Some(secs(1))), secs(2));
    }
}
