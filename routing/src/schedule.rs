//! Server time on the wire (contract v1.1, "Time"): the `GET /v1/time`
//! answer, a command's `at` (when it should start playing, ms since the Unix
//! epoch on the server's clock) and its bound, and `say`'s scheduling of the
//! commands it derives. Pure: the caller passes `now` in.

use serde_json::Value;

use crate::protocol::{optional_uint, ApiError, Command};

/// How far from now (either way) an `at` may be: one hour (contract).
pub const MAX_AT_DISTANCE_MS: u64 = 60 * 60 * 1000;
/// The largest `lead_ms` a `say` request may ask for: one minute.
pub const MAX_SAY_LEAD_MS: u64 = 60_000;
/// The largest integer JSON (and a JavaScript client) carries exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// `{"now": <ms>}`, the answer of `GET /v1/time`.
pub fn time_body(now: u64) -> String {
    format!(r#"{{"now":{now}}}"#)
}

/// The `at` field of a command: absent or `null` is none; otherwise a
/// non-negative integer (ms since the Unix epoch). Its distance from now is
/// checked where the clock is known ([`check_at`]).
pub fn parse_at(v: Option<&Value>) -> Result<Option<u64>, ApiError> {
    optional_uint(v, MAX_SAFE_INTEGER, || {
        "field `at` must be an integer: ms since the Unix epoch (server time)".into()
    })
}

/// An `at` further than [`MAX_AT_DISTANCE_MS`] from `now` is refused.
pub fn check_at(at: u64, now: u64) -> Result<(), ApiError> {
    if at.abs_diff(now) > MAX_AT_DISTANCE_MS {
        return Err(ApiError::bad_request(format!(
            "field `at` must be within one hour of the server's time ({now}); see GET /v1/time"
        )));
    }
    Ok(())
}

/// [`check_at`] for every command of a publish; in a batch the message names
/// the refused command, like the other checks of a batch.
pub fn check_commands(commands: &[Command], now: u64) -> Result<(), ApiError> {
    for (i, c) in commands.iter().enumerate() {
        if let Some(at) = c.at {
            check_at(at, now).map_err(|e| match commands.len() {
                1 => e,
                _ => ApiError::bad_request(format!("commands[{i}]: {}", e.message)),
            })?;
        }
    }
    Ok(())
}

/// The `lead_ms` of a `say` request: absent or `null` is none (the commands
/// are not scheduled); otherwise an integer from 0 to [`MAX_SAY_LEAD_MS`].
pub fn parse_lead(v: Option<&Value>) -> Result<Option<u64>, ApiError> {
    optional_uint(v, MAX_SAY_LEAD_MS, || {
        format!("field `lead_ms` must be an integer from 0 to {MAX_SAY_LEAD_MS}")
    })
}

/// Schedules derived commands on server time: each gets
/// `at = now + lead + start`, its `start` being `params.start_ms` (0 for a
/// command without one, such as `talk`, which starts the utterance).
pub fn schedule(commands: &mut [Command], now: u64, lead: u64) {
    let base = now.saturating_add(lead);
    for c in commands {
        let start = c
            .params
            .get("start_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        c.at = Some(base.saturating_add(start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_command;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn time_body_is_the_contract_shape() {
        assert_eq!(time_body(NOW), r#"{"now":1700000000000}"#);
        let v: Value = serde_json::from_str(&time_body(0)).unwrap();
        assert_eq!(v, json!({"now": 0}));
    }

    #[test]
    fn at_parses_integers_and_refuses_the_rest() {
        let cases: &[(Value, Option<Option<u64>>)] = &[
            (Value::Null, Some(None)),
            (json!(0), Some(Some(0))),
            (json!(NOW), Some(Some(NOW))),
            (json!(MAX_SAFE_INTEGER), Some(Some(MAX_SAFE_INTEGER))),
            (json!(MAX_SAFE_INTEGER + 1), None),
            (json!(-1), None),
            (json!(1.5), None),
            (json!(1_700_000_000_000.0), None),
            (json!("1700000000000"), None),
            (json!(true), None),
            (json!([NOW]), None),
            (json!({"at": NOW}), None),
        ];
        for (v, want) in cases {
            let got = parse_at(Some(v));
            match want {
                Some(w) => assert_eq!(got.as_ref().ok(), Some(w), "{v}"),
                None => {
                    let e = got.expect_err(&v.to_string());
                    assert_eq!(e.status(), 400, "{v}");
                    assert!(e.message.contains("`at`"), "{}", e.message);
                }
            }
        }
        assert_eq!(parse_at(None).unwrap(), None);
    }

    #[test]
    fn at_is_bounded_to_one_hour_either_way() {
        let hour = MAX_AT_DISTANCE_MS;
        for (at, ok) in [
            (NOW, true),
            (NOW + 500, true),
            (NOW - 500, true),
            (NOW + hour, true),
            (NOW - hour, true),
            (NOW + hour + 1, false),
            (NOW - hour - 1, false),
            (0, false),
            (MAX_SAFE_INTEGER, false),
        ] {
            let r = check_at(at, NOW);
            assert_eq!(r.is_ok(), ok, "at {at}");
            if let Err(e) = r {
                assert_eq!(e.status(), 400);
                assert_eq!(e.code.as_str(), "bad_request");
            }
        }
        // A clock near zero never underflows.
        assert!(check_at(0, 10).is_ok());
    }

    #[test]
    fn commands_carry_at_and_a_batch_names_the_refused_one() {
        let ok = parse_command(&json!({"name": "wave", "at": NOW + 500})).unwrap();
        assert_eq!(ok.at, Some(NOW + 500));
        let none = parse_command(&json!({"name": "wave", "at": null})).unwrap();
        assert_eq!(none.at, None);
        let e = parse_command(&json!({"name": "wave", "at": "soon"})).unwrap_err();
        assert_eq!(e.status(), 400);
        let far = parse_command(&json!({"name": "wave", "at": NOW + 2 * MAX_AT_DISTANCE_MS}));
        let far = far.unwrap();
        assert!(check_commands(&[ok.clone(), none.clone()], NOW).is_ok());
        let e = check_commands(std::slice::from_ref(&far), NOW).unwrap_err();
        assert!(e.message.starts_with("field `at`"), "{}", e.message);
        let e = check_commands(&[ok, none, far], NOW).unwrap_err();
        assert!(e.message.starts_with("commands[2]: "), "{}", e.message);
    }

    #[test]
    fn lead_is_optional_and_bounded() {
        assert_eq!(parse_lead(None).unwrap(), None);
        assert_eq!(parse_lead(Some(&Value::Null)).unwrap(), None);
        assert_eq!(parse_lead(Some(&json!(0))).unwrap(), Some(0));
        assert_eq!(
            parse_lead(Some(&json!(MAX_SAY_LEAD_MS))).unwrap(),
            Some(MAX_SAY_LEAD_MS)
        );
        for bad in [
            json!(MAX_SAY_LEAD_MS + 1),
            json!(-1),
            json!(1.5),
            json!("1"),
        ] {
            let e = parse_lead(Some(&bad)).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
            assert!(e.message.contains("`lead_ms`"));
        }
    }

    #[test]
    fn schedule_adds_the_lead_and_each_start() {
        let mut cmds = vec![
            parse_command(&json!({"name": "talk"})).unwrap(),
            parse_command(&json!({"name": "wave", "params": {"start_ms": 250}})).unwrap(),
            parse_command(&json!({"name": "nod", "params": {"start_ms": "x"}})).unwrap(),
        ];
        schedule(&mut cmds, NOW, 300);
        let ats: Vec<Option<u64>> = cmds.iter().map(|c| c.at).collect();
        assert_eq!(ats, [Some(NOW + 300), Some(NOW + 550), Some(NOW + 300)]);
    }
}
