//! Restart decisions and backoff. Pure.

use std::time::Duration;

use crate::plan::desired::RestartPolicy;

/// First restart delay.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A run at least this long resets the backoff.
pub const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// Whether a container that exited with `code` is restarted under `policy`. A stop asked
/// for by the user never restarts.
#[must_use]
pub fn should_restart(policy: RestartPolicy, code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Never => false,
    }
}

/// Delay before restart number `attempt` (0 for the first): doubles from `initial` up to
/// `max` (a pod's `backoff`; [`INITIAL_BACKOFF`] and [`MAX_BACKOFF`] by default).
#[must_use]
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial.saturating_mul(1u32 << attempt.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_by_exit_code() {
        assert!(should_restart(RestartPolicy::Always, 0));
        assert!(should_restart(RestartPolicy::OnFailure, 137));
        assert!(!should_restart(RestartPolicy::OnFailure, 0));
        assert!(!should_restart(RestartPolicy::Never, 1));
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let b = |n| backoff(n, INITIAL_BACKOFF, MAX_BACKOFF);
        assert_eq!(b(0), Duration::from_millis(100));
        assert_eq!(b(1), Duration::from_millis(200));
        assert_eq!(b(3), Duration::from_millis(800));
        assert_eq!(b(7), MAX_BACKOFF);
        assert_eq!(b(40), MAX_BACKOFF);
        // `backoff: { initial: 0s }` restarts at once, every time
        assert_eq!(backoff(5, Duration::ZERO, MAX_BACKOFF), Duration::ZERO);
        assert_eq!(
            backoff(2, Duration::from_secs(1), Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
