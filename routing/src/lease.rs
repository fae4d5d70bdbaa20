//! An object's registry lease, seen from the object. The registry counts an
//! object's sockets until one lease after its last report, and the object
//! refreshes every half lease while it holds sockets. The object keeps the
//! time of a report that listed sockets in its storage (`listed`), so that
//! a wake from hibernation, which finds the same sockets, need not report
//! again: it resumes the refresh from that time. The time is stored again
//! only once it is a quarter lease old, which bounds the writes to one per
//! quarter lease; an older stored time only makes the refresh come earlier.

/// Whether a report that lists sockets at `now` stores its time, given the
/// stored one.
pub fn store_report_time(stored: Option<u64>, now: u64, lease_ms: u64) -> bool {
    match stored {
        None => true,
        Some(at) => now.saturating_sub(at) >= lease_ms / 4,
    }
}

/// What a waking object does about its registry entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnWake {
    /// Report now: the entry names sockets that are gone (the runtime
    /// restarted and took them), or names none of the restored ones, or
    /// its lease is due for a refresh.
    Report,
    /// The entry is right and leased: the next refresh is at this time.
    RefreshAt(u64),
    /// Nothing listed, nothing held.
    Nothing,
}

/// `restored`: sockets came back from hibernation; `listed_at`: the stored
/// report time.
pub fn on_wake(restored: bool, listed_at: Option<u64>, now: u64, lease_ms: u64) -> OnWake {
    match (restored, listed_at) {
        (false, None) => OnWake::Nothing,
        (true, Some(at)) if at.saturating_add(lease_ms / 2) > now => {
            OnWake::RefreshAt(at.saturating_add(lease_ms / 2))
        }
        _ => OnWake::Report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: u64 = 600_000;

    #[test]
    fn a_report_time_is_stored_once_per_quarter_lease() {
        assert!(store_report_time(None, 1_000, LEASE));
        assert!(!store_report_time(
            Some(1_000),
            1_000 + LEASE / 4 - 1,
            LEASE
        ));
        assert!(store_report_time(Some(1_000), 1_000 + LEASE / 4, LEASE));
    }

    #[test]
    fn a_wake_with_its_sockets_and_a_live_lease_does_not_report() {
        let at = 50_000;
        assert_eq!(
            on_wake(true, Some(at), at + 10_000, LEASE),
            OnWake::RefreshAt(at + LEASE / 2)
        );
    }

    #[test]
    fn a_wake_reports_when_the_refresh_is_due() {
        assert_eq!(on_wake(true, Some(0), LEASE / 2, LEASE), OnWake::Report);
        // The format before times were stored: "1".
        assert_eq!(on_wake(true, Some(1), 5 * LEASE, LEASE), OnWake::Report);
    }

    #[test]
    fn a_wake_reports_sockets_the_registry_does_not_list() {
        assert_eq!(on_wake(true, None, 1_000, LEASE), OnWake::Report);
    }

    #[test]
    fn a_wake_without_sockets_clears_a_listed_entry() {
        assert_eq!(on_wake(false, Some(900), 1_000, LEASE), OnWake::Report);
        assert_eq!(on_wake(false, None, 1_000, LEASE), OnWake::Nothing);
    }

    #[test]
    fn the_refresh_always_comes_within_the_lease_of_the_last_report() {
        // Whatever time was stored (at most a quarter lease before the
        // last report), the resumed refresh precedes that report's expiry.
        for last_report in [0u64, 1_000, LEASE] {
            for age in [0, LEASE / 8, LEASE / 4 - 1] {
                let stored = last_report.saturating_sub(age);
                match on_wake(true, Some(stored), last_report + 1, LEASE) {
                    OnWake::RefreshAt(at) => assert!(at < last_report + LEASE),
                    other => panic!("a live lease answered {other:?}"),
                }
            }
        }
    }
}
