//! An object's one alarm, kept at its next deadline with as few storage
//! writes as `routing::alarm` allows. Shared by the character and scene
//! objects.

use routing::alarm::{write_needed, Armed};
use worker::{console_error, Storage};

/// Brings the runtime's alarm in line with `wanted` (ms since the Unix
/// epoch; None: nothing due) and returns what the runtime holds afterwards.
/// An alarm not known since the wake is read first; a failed write leaves
/// it unknown, so the next call writes again.
pub async fn sync(storage: &Storage, armed: Armed, wanted: Option<u64>, now: u64) -> Armed {
    let armed = match armed {
        Armed::Unknown => match storage.get_alarm().await {
            Ok(at) => Armed::read(at),
            Err(e) => {
                console_error!("reading the alarm: {e}");
                Armed::Unknown
            }
        },
        known => known,
    };
    let Some(to) = write_needed(armed, wanted) else {
        return armed;
    };
    let written = match to {
        Some(at) => {
            let delay = std::time::Duration::from_millis(at.saturating_sub(now));
            storage.set_alarm(delay).await
        }
        None => storage.delete_alarm().await,
    };
    match written {
        Ok(()) => Armed::set(to),
        Err(e) => {
            console_error!("setting the alarm: {e}");
            Armed::Unknown
        }
    }
}
