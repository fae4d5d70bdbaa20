//! Retries of a write that keeps failing: the archive's KV page writes and
//! the event log's KV flushes both wait 1 s, 2 s, 4 s, … up to a minute
//! between attempts, counted from the last failure, until one succeeds.

/// The first wait after a failed write; each further failure in a row
/// doubles it, up to [`RETRY_MAX_MS`].
pub const RETRY_MIN_MS: u64 = 1_000;
/// The longest wait between attempts while writes keep failing.
pub const RETRY_MAX_MS: u64 = 60_000;

/// Consecutive failed attempts and when the next one is due. A character
/// keeps one for its archive (the shell arms the alarm at `retry_at` and
/// starts the archive when it fires; while a retry is waiting, publishes do
/// not start the archive early) and one in its [`crate::logbuf::LogBuffer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Failed attempts since the last successful one.
    pub failures: u32,
    /// When the next attempt is due (ms since the Unix epoch), while waiting.
    pub retry_at: Option<u64>,
}

impl Backoff {
    /// An attempt failed at `now`: the next one waits 1 s, 2 s, 4 s, … up to
    /// a minute. Returns when it is due.
    pub fn failed(&mut self, now: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(16);
        let wait = RETRY_MIN_MS
            .saturating_mul(1 << doublings)
            .min(RETRY_MAX_MS);
        let at = now.saturating_add(wait);
        self.retry_at = Some(at);
        at
    }

    /// An attempt succeeded (for the archive: every ready page is out); true
    /// when it ends a run of failures (worth a log line).
    pub fn succeeded(&mut self) -> bool {
        let recovered = self.failures > 0;
        *self = Backoff::default();
        recovered
    }

    /// Whether an attempt may start at `now` (no retry waiting in the future).
    pub fn may_run(&self, now: u64) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }

    /// At the alarm: true when the waiting retry is due, which it then
    /// leaves (so the alarm is not armed again for it).
    pub fn take_due(&mut self, now: u64) -> bool {
        match self.retry_at {
            Some(at) if at <= now => {
                self.retry_at = None;
                true
            }
            _ => false,
        }
    }

    /// Seconds a refused publisher should wait (`Retry-After`): until the
    /// next attempt, at least one.
    pub fn retry_after_secs(&self, now: u64) -> u64 {
        self.retry_at
            .map_or(1, |at| at.saturating_sub(now).div_ceil(1000))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_back_off_exponentially_up_to_a_minute() {
        let mut lag = Backoff::default();
        assert!(lag.may_run(0));
        let waits: Vec<u64> = (0..9).map(|_| lag.failed(1_000) - 1_000).collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(lag.failures, 9);
        for _ in 0..100 {
            lag.failed(0);
        }
        assert_eq!(lag.retry_at, Some(RETRY_MAX_MS), "no overflow");
    }

    #[test]
    fn a_waiting_retry_holds_runs_until_due_then_is_taken_once() {
        let mut lag = Backoff::default();
        let at = lag.failed(10_000);
        assert_eq!(at, 11_000);
        assert!(!lag.may_run(10_999));
        assert!(!lag.take_due(10_999));
        assert_eq!(lag.retry_after_secs(10_001), 1);
        assert_eq!(lag.retry_after_secs(9_000), 2);
        assert!(lag.may_run(11_000));
        assert!(lag.take_due(11_000));
        assert!(!lag.take_due(11_000), "taken once");
        assert_eq!(lag.retry_at, None);
        assert_eq!(lag.failures, 1, "the count stays until a success");
        assert_eq!(lag.failed(20_000), 22_000, "the next wait doubles");
        assert!(lag.succeeded(), "a recovery");
        assert_eq!(lag, Backoff::default());
        assert!(!lag.succeeded(), "nothing to recover from");
        assert_eq!(lag.retry_after_secs(0), 1);
    }
}
