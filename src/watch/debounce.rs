//! Pure: collects changed paths until the file system has been quiet for a while.
//!
//! Every change restarts the quiet period; a batch is also released once it has waited
//! [`MAX_WAIT_FACTOR`] quiet periods (at least [`MIN_MAX_WAIT`]), so a file written without
//! pause (a log, a build that takes minutes) cannot hold the others back for ever. Time is a
//! parameter: the tests drive it with plain `Instant`s.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A batch waits at most this many quiet periods.
pub const MAX_WAIT_FACTOR: u32 = 20;
/// And at least this long before it is released anyway.
pub const MIN_MAX_WAIT: Duration = Duration::from_secs(2);

/// Paths changed since the last batch, and when.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    max_wait: Duration,
    pending: BTreeSet<PathBuf>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    /// Releases a batch after `quiet` without a change.
    #[must_use]
    pub fn new(quiet: Duration) -> Self {
        Debouncer {
            quiet,
            max_wait: (quiet * MAX_WAIT_FACTOR).max(MIN_MAX_WAIT),
            pending: BTreeSet::new(),
            first: None,
            last: None,
        }
    }

    /// Records a change of `path` at `now`.
    pub fn push(&mut self, path: PathBuf, now: Instant) {
        self.pending.insert(path);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending batch is due, if there is one.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_wait))
    }

    /// The pending batch, if it is due at `now` (and then the debouncer is empty again).
    pub fn take(&mut self, now: Instant) -> Option<BTreeSet<PathBuf>> {
        if self.deadline().is_some_and(|d| now >= d) {
            self.first = None;
            self.last = None;
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_pending_has_no_deadline_and_no_batch() {
        let mut d = Debouncer::new(ms(100));
        assert_eq!(d.deadline(), None);
        assert_eq!(d.take(Instant::now()), None);
    }

    #[test]
    fn a_batch_is_released_after_the_quiet_period_only() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100));
        d.push("a".into(), t0);
        assert_eq!(d.deadline(), Some(t0 + ms(100)));
        assert_eq!(d.take(t0 + ms(99)), None);
        let batch = d.take(t0 + ms(100)).expect("due");
        assert_eq!(batch, BTreeSet::from(["a".into()]));
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn every_change_restarts_the_quiet_period_and_paths_are_merged() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100));
        d.push("a".into(), t0);
        d.push("b".into(), t0 + ms(80));
        d.push("a".into(), t0 + ms(150));
        assert_eq!(d.take(t0 + ms(200)), None);
        assert_eq!(d.deadline(), Some(t0 + ms(250)));
        let batch = d.take(t0 + ms(250)).expect("due");
        assert_eq!(batch, BTreeSet::from(["a".into(), "b".into()]));
    }

    #[test]
    fn a_change_that_never_pauses_is_released_after_the_longest_wait() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100));
        // a write every 50 ms for 5 s: never 100 ms of quiet
        let mut released = None;
        for i in 0..100u64 {
            let now = t0 + ms(50 * i);
            if let Some(b) = d.take(now) {
                released = Some((now, b));
                break;
            }
            d.push("log".into(), now);
        }
        let (at, batch) = released.expect("released before the writes stop");
        assert_eq!(at, t0 + ms(2000));
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn the_longest_wait_grows_with_a_long_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(500));
        d.push("a".into(), t0);
        for i in 1..=30u64 {
            d.push("a".into(), t0 + ms(400 * i));
        }
        // 20 quiet periods of 500 ms: 10 s after the first change
        assert_eq!(d.deadline(), Some(t0 + ms(10_000)));
    }
}
