//! An object's one alarm: when the runtime's alarm must be written. Every
//! write is a storage commit of its own (a journal sync on the host), so the
//! shells write only when the alarm held would come too late or is missing:
//! an earlier alarm serves as well, because its handler finds nothing due
//! and arms the next deadline then. After a wake the held alarm is read
//! once instead of being written again.

/// What the shell knows of the alarm the runtime holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Armed {
    /// Not read since the object (re)started, or a write failed.
    #[default]
    Unknown,
    /// No alarm.
    Unset,
    /// An alarm at this time (ms since the Unix epoch).
    At(u64),
}

impl Armed {
    /// From the runtime's `getAlarm()` answer (negative times never come;
    /// they would mean "due", as 0 does).
    pub fn read(at: Option<i64>) -> Armed {
        match at {
            None => Armed::Unset,
            Some(ms) => Armed::At(u64::try_from(ms).unwrap_or(0)),
        }
    }

    /// What the runtime holds after arming `at` (None: deleting the alarm).
    pub fn set(at: Option<u64>) -> Armed {
        at.map_or(Armed::Unset, Armed::At)
    }
}

/// The write `armed` needs for the next deadline `wanted`: `None` when the
/// held alarm serves (the same time, an earlier one, or one with nothing
/// left to do, which fires once and then stays unset), `Some(Some(at))` to
/// arm `at`, `Some(None)` to delete an alarm whose state is unknown.
pub fn write_needed(armed: Armed, wanted: Option<u64>) -> Option<Option<u64>> {
    match (armed, wanted) {
        (Armed::At(held), Some(want)) if held <= want => None,
        (Armed::At(_), None) | (Armed::Unset, None) => None,
        (_, want) => Some(want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_or_an_earlier_alarm_is_kept() {
        assert_eq!(write_needed(Armed::At(500), Some(500)), None);
        assert_eq!(write_needed(Armed::At(400), Some(500)), None);
    }

    #[test]
    fn a_later_or_missing_alarm_is_written() {
        assert_eq!(write_needed(Armed::At(600), Some(500)), Some(Some(500)));
        assert_eq!(write_needed(Armed::Unset, Some(500)), Some(Some(500)));
    }

    #[test]
    fn an_unknown_alarm_is_written_when_one_is_wanted() {
        assert_eq!(write_needed(Armed::Unknown, Some(500)), Some(Some(500)));
        // Nothing wanted: an unknown alarm may fire once, harmlessly, but
        // it is cleared so that the state is known again.
        assert_eq!(write_needed(Armed::Unknown, None), Some(None));
    }

    #[test]
    fn an_alarm_with_nothing_due_is_left_to_fire() {
        assert_eq!(write_needed(Armed::At(500), None), None);
        assert_eq!(write_needed(Armed::Unset, None), None);
    }

    #[test]
    fn reading_and_setting() {
        assert_eq!(Armed::read(None), Armed::Unset);
        assert_eq!(Armed::read(Some(1_700)), Armed::At(1_700));
        assert_eq!(Armed::read(Some(-5)), Armed::At(0));
        assert_eq!(Armed::set(Some(9)), Armed::At(9));
        assert_eq!(Armed::set(None), Armed::Unset);
    }
}
