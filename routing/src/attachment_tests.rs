//! Tests of the socket attachment: fixed cases and round-trip properties.

use super::*;
use proptest::prelude::*;
use std::cell::Cell;

fn info(user: Option<&str>, topics: &[&str]) -> ClientInfo {
    ClientInfo {
        client_id: "0123456789abcdef0123456789abcdef".into(),
        user: user.map(str::to_string),
        topics: topics
            .iter()
            .map(|t| TopicFilter::parse(t).unwrap())
            .collect(),
        presence: true,
        connected_at: 1_700_000_000_000,
        can_publish: false,
    }
}

fn no_spill(_: &str) -> Option<String> {
    panic!("nothing was spilled")
}

fn long_filters(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:a>32}.{:b>32}.{:c>32}.>", i, i, i))
        .collect()
}

#[test]
fn a_small_client_keeps_its_topics_inline() {
    let i = info(Some("ann"), &["face", "body.*"]);
    let e = encode(&i, Some(42)).unwrap();
    assert_eq!(e.spilled_topics, None);
    assert_eq!(
        e.attachment,
        r#"{"c":"0123456789abcdef0123456789abcdef","u":"ann","t":["face","body.*"],"p":true,"a":1700000000000,"w":false,"x":42}"#
    );
    assert_eq!(decode(&e.attachment, no_spill), Some((i, Some(42))));
}

#[test]
fn absent_user_and_expiry_are_left_out() {
    let i = info(None, &[]);
    let e = encode(&i, None).unwrap();
    assert!(!e.attachment.contains("\"u\"") && !e.attachment.contains("\"x\""));
    assert!(e.attachment.contains("\"t\":[]"));
    assert_eq!(decode(&e.attachment, no_spill), Some((i, None)));
}

#[test]
fn spill_of_says_whether_a_row_exists() {
    let small = encode(&info(Some("ann"), &["face"]), None).unwrap();
    let (id, spilled) = spill_of(&small.attachment).unwrap();
    assert!(!spilled && small.spilled_topics.is_none() && !id.is_empty());
    assert_eq!(
        spill_of(r#"{"c":"ab","t":null}"#),
        Some(("ab".to_string(), true))
    );
    assert_eq!(
        spill_of(r#"{"c":"ab","t":[]}"#),
        Some(("ab".to_string(), false))
    );
    assert_eq!(spill_of("not json"), None);
}

#[test]
fn a_long_topic_list_spills_and_comes_back() {
    let names = long_filters(32);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let i = info(Some("ann"), &refs);
    let e = encode(&i, None).unwrap();
    assert!(e.attachment.len() <= ATTACHMENT_BUDGET);
    assert!(!e.attachment.contains("\"t\""));
    let spilled = e.spilled_topics.clone().unwrap();
    assert!(spilled.starts_with("[\"") && spilled.len() > ATTACHMENT_BUDGET);
    assert_eq!(spill_of(&e.attachment), Some((i.client_id.clone(), true)));
    let asked = Cell::new(false);
    let got = decode(&e.attachment, |id| {
        asked.set(true);
        assert_eq!(id, i.client_id);
        Some(spilled.clone())
    });
    assert!(asked.get());
    assert_eq!(got, Some((i, None)));
    // The spilled row is gone: the state is lost.
    assert_eq!(decode(&e.attachment, |_| None), None);
    assert_eq!(decode(&e.attachment, |_| Some("[\"A\"]".into())), None);
}

#[test]
fn non_ascii_users_are_escaped() {
    let i = info(Some("Zoë 🦀\u{1}\"\\"), &["face"]);
    let e = encode(&i, None).unwrap();
    assert!(e.attachment.is_ascii());
    assert!(
        e.attachment
            .contains(r#""u":"Zo\u00eb \ud83e\udd80\u0001\"\\""#),
        "{}",
        e.attachment
    );
    assert_eq!(decode(&e.attachment, no_spill), Some((i, None)));
}

#[test]
fn a_user_beyond_the_budget_is_too_large() {
    let user = "é".repeat(400); // 800 bytes, 2,400 once escaped
    assert!(check_user(Some(&user)).is_err());
    let err = encode(&info(Some(&user), &[]), None).unwrap_err();
    assert!(err.len > ATTACHMENT_BUDGET);
    assert!(err.to_string().contains("budget"));
    // An ASCII user of the same byte length fits.
    let ascii = "e".repeat(800);
    assert!(check_user(Some(&ascii)).is_ok());
    assert!(encode(&info(Some(&ascii), &[]), None).is_ok());
}

#[test]
fn max_user_bytes_fits_in_the_worst_case() {
    let worst = "\u{1}".repeat(MAX_USER_BYTES); // 6 bytes each once escaped
    assert!(check_user(Some(&worst)).is_ok());
    assert!(check_user(None).is_ok());
    let names = long_filters(32);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut i = info(Some(&worst), &refs);
    i.client_id = "f".repeat(MAX_CLIENT_ID_LEN);
    i.connected_at = u64::MAX;
    let e = encode(&i, Some(u64::MAX)).unwrap();
    assert!(e.attachment.len() <= ATTACHMENT_BUDGET);
    // One byte more than the exact limit is refused by check_user.
    let mut n = MAX_USER_BYTES;
    while check_user(Some(&"\u{1}".repeat(n + 1))).is_ok() {
        n += 1;
    }
    assert!(n >= MAX_USER_BYTES);
}

#[test]
fn reads_the_earlier_object_shape() {
    let old = r#"{"c":"abc","u":null,"t":null,"p":true,"a":5,"w":true}"#;
    let got = decode(old, |id| {
        assert_eq!(id, "abc");
        Some(r#"["face","body.>"]"#.into())
    })
    .unwrap();
    assert_eq!(got.0.user, None);
    assert_eq!(got.0.topics.len(), 2);
    assert_eq!(got.1, None);
    let old = r#"{"c":"abc","u":"bo","t":["x"],"p":false,"a":5,"w":false,"x":9}"#;
    assert_eq!(decode(old, no_spill).unwrap().1, Some(9));
}

#[test]
fn an_invalid_filter_loses_the_state() {
    let bad = r#"{"c":"abc","t":["a..b"],"p":true,"a":5,"w":true}"#;
    assert_eq!(decode(bad, no_spill), None);
}

#[test]
fn the_client_id_is_read_without_the_spill() {
    let names = long_filters(32);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let i = info(None, &refs);
    let e = encode(&i, None).unwrap();
    assert_eq!(client_id(&e.attachment), Some(i.client_id));
    assert_eq!(client_id("nope"), None);
}

#[test]
fn garbage_is_none() {
    for g in [
        "",
        "null",
        "[]",
        "{}",
        "\"x\"",
        r#"{"c":1,"p":true,"a":5,"w":true}"#,
        r#"{"c":"a","p":"yes","a":5,"w":true}"#,
        r#"{"c":"a","p":true,"a":-5,"w":true}"#,
        r#"{"c":"a","p":true,"a":5,"w":true,"t":"face"}"#,
        r#"{"c":"a","p":true,"a":5,"w":true"#,
    ] {
        assert_eq!(decode(g, |_| Some("[]".into())), None, "{g}");
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9_-]{1,32}", 1 => Just("*".to_string())]
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    (
        prop::collection::vec(segment(), 0..=3),
        prop_oneof![3 => segment(), 1 => Just(">".to_string())],
    )
        .prop_map(|(mut segs, last)| {
            segs.push(last);
            TopicFilter::parse(&segs.join(".")).unwrap()
        })
}

fn user() -> impl Strategy<Value = Option<String>> {
    let chars = |n| prop::collection::vec(any::<char>(), 0..n).prop_map(String::from_iter);
    prop::option::of(prop_oneof![
        chars(40),
        chars(700),
        "[a-z0-9@.|-]{0,2000}",
        prop::collection::vec(prop::char::range('\0', '\u{1f}'), 0..400)
            .prop_map(String::from_iter),
    ])
}

fn client() -> impl Strategy<Value = (ClientInfo, Option<u64>)> {
    (
        "[0-9a-f]{32}",
        user(),
        prop::collection::vec(filter(), 0..=crate::topic::MAX_FILTERS),
        any::<(bool, u64, bool, Option<u64>)>(),
    )
        .prop_map(
            |(client_id, user, topics, (presence, connected_at, can_publish, x))| {
                (
                    ClientInfo {
                        client_id,
                        user,
                        topics,
                        presence,
                        connected_at,
                        can_publish,
                    },
                    x,
                )
            },
        )
}

proptest! {
    #[test]
    fn encode_fits_and_round_trips_or_is_too_large((i, x) in client()) {
        match encode(&i, x) {
            Ok(e) => {
                prop_assert!(e.attachment.len() <= ATTACHMENT_BUDGET);
                prop_assert!(e.attachment.is_ascii());
                let spilled = e.spilled_topics.clone();
                prop_assert_eq!(spilled.is_some(), !e.attachment.contains("\"t\":"));
                let back = decode(&e.attachment, |id| {
                    assert_eq!(id, i.client_id);
                    spilled
                });
                prop_assert_eq!(back, Some((i.clone(), x)));
                prop_assert_eq!(client_id(&e.attachment), Some(i.client_id.clone()));
            }
            Err(err) => {
                prop_assert!(err.len > ATTACHMENT_BUDGET);
                let u = i.user.as_deref();
                prop_assert!(u.is_some_and(|u| u.len() > MAX_USER_BYTES));
                prop_assert!(check_user(u).is_err());
            }
        }
        if check_user(i.user.as_deref()).is_ok() {
            prop_assert!(encode(&i, x).is_ok());
        }
    }

    #[test]
    fn decoding_garbage_never_panics(s in ".{0,300}") {
        let _ = decode(&s, |_| Some(s.clone()));
        let _ = client_id(&s);
    }

    #[test]
    fn decoding_a_damaged_attachment_never_panics(
        (i, x) in client(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        if let Ok(e) = encode(&i, x) {
            let a = e.attachment;
            // Every strict prefix of a JSON object is invalid.
            let prefix = &a[..cut.index(a.len())];
            prop_assert_eq!(decode(prefix, |_| e.spilled_topics.clone()), None);
            let mut bytes = a.clone().into_bytes();
            let at = flip.0.index(bytes.len());
            bytes[at] = flip.1 & 0x7f;
            let damaged = String::from_utf8(bytes).unwrap();
            let _ = decode(&damaged, |_| e.spilled_topics.clone());
        }
    }
}
