use super::*;
use crate::protocol::parse_command;

fn c(s: &str) -> CharacterId {
    CharacterId::parse(s).unwrap()
}
fn row(seq: u64, topic: &str) -> StoredCommand {
    StoredCommand {
        seq,
        ts: seq,
        command: parse_command(&serde_json::json!({"topic": topic, "name": "n"})).unwrap(),
    }
}
fn info(id: &str, topics: &[&str]) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        user: Some("ann".into()),
        topics: topics
            .iter()
            .map(|t| TopicFilter::parse(t).unwrap())
            .collect(),
        presence: false,
        connected_at: 0,
        can_publish: true,
    }
}
fn scene() -> SceneHub {
    SceneHub::new(vec![
        (c("a"), Follower::new("ea".into(), 10)),
        (c("b"), Follower::new("eb".into(), 20)),
    ])
}
/// (to, parsed frame) of every Send.
fn frames(effects: &[SceneEffect]) -> Vec<(Vec<ClientKey>, Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            SceneEffect::Send { to, text } => {
                Some((to.clone(), serde_json::from_str(text).unwrap()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn welcome_names_every_character_and_resumes_end_with_their_own_recovered() {
    let mut s = scene();
    let resume = Resume {
        since: 8,
        rows: vec![row(9, "face"), row(10, "body")],
        complete: true,
        next_since: None,
    };
    let out = s.connect(1, info("x", &["face"]), None, vec![(c("a"), resume)]);
    let f = frames(&out);
    assert_eq!(f[0].1["type"], "welcome");
    assert_eq!(f[0].1["characters"]["a"]["epoch"], "ea");
    assert_eq!(f[0].1["characters"]["a"]["seq"], 10);
    assert_eq!(f[0].1["characters"]["b"]["seq"], 20);
    assert!(f[0].1.get("character").is_none());
    // Only the `face` row passes the filter.
    assert_eq!(f.len(), 3);
    assert_eq!(f[1].1["type"], "command");
    assert_eq!(
        (f[1].1["character"].as_str(), f[1].1["seq"].as_u64()),
        (Some("a"), Some(9))
    );
    assert_eq!(f[2].1["type"], "recovered");
    assert_eq!(f[2].1["character"], "a");
    assert_eq!(f[2].1["seq"], 10);
    assert_eq!(f[2].1["complete"], true);
}

#[test]
fn feeds_reach_matching_sockets_in_order_once_per_character() {
    let mut s = scene();
    s.connect(1, info("x", &["face"]), None, vec![]);
    s.connect(2, info("y", &[">"]), None, vec![]);
    let (out, last) = s.feed(
        &c("a"),
        "ea",
        10,
        false,
        vec![row(11, "face"), row(12, "body")],
        true,
    );
    assert_eq!(last, Some(12));
    let f = frames(&out);
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[0].0.clone(), f[0].1["seq"].as_u64()),
        (vec![1, 2], Some(11))
    );
    assert_eq!(
        (f[1].0.clone(), f[1].1["seq"].as_u64()),
        (vec![2], Some(12))
    );
    assert_eq!(f[1].1["character"], "a");
    // A re-sent feed is not delivered twice; another character has its own seq.
    let (out, _) = s.feed(
        &c("a"),
        "ea",
        10,
        false,
        vec![row(11, "face"), row(12, "body")],
        true,
    );
    assert!(out.is_empty());
    let (out, last) = s.feed(&c("b"), "eb", 20, false, vec![row(21, "face")], true);
    assert_eq!(last, Some(21));
    assert_eq!(frames(&out)[0].1["character"], "b");
    // Not the scene's character: nothing, no place.
    assert_eq!(
        s.feed(&c("z"), "e", 0, false, vec![row(1, "face")], true).1,
        None
    );
}

#[test]
fn a_restarted_stream_closes_every_socket_for_a_resume() {
    let mut s = scene();
    s.connect(1, info("x", &[">"]), None, vec![]);
    let (out, _) = s.feed(&c("b"), "other", 0, false, vec![row(1, "face")], true);
    assert!(matches!(
        out[0],
        SceneEffect::Close {
            client: 1,
            code: 1011,
            ..
        }
    ));
    assert_eq!(s.subscriber_count(), 0);
    // Joining at another epoch with sockets held does the same.
    s.connect(2, info("y", &[">"]), None, vec![]);
    let (out, moved) = s.join(&c("a"), "new", 3, true);
    assert!(moved);
    assert!(matches!(
        out[0],
        SceneEffect::Close {
            client: 2,
            code: 1011,
            ..
        }
    ));
}

#[test]
fn client_frames_change_filters_for_all_and_publishes_name_a_character() {
    let mut s = scene();
    s.connect(1, info("x", &["face"]), None, vec![]);
    let out = s.text(1, r#"{"type":"subscribe","topics":["body"]}"#);
    assert!(matches!(out[0], SceneEffect::SaveClient { client: 1 }));
    assert_eq!(frames(&out)[0].1["type"], "subscribed");
    for who in ["a", "b"] {
        let (out, _) = s.feed(
            &c(who),
            if who == "a" { "ea" } else { "eb" },
            if who == "a" { 10 } else { 20 },
            false,
            vec![row(if who == "a" { 11 } else { 21 }, "body")],
            true,
        );
        assert_eq!(frames(&out).len(), 1, "{who}");
    }
    let out = s.text(
        1,
        r#"{"type":"publish","character":"b","topic":"face","name":"n","ref":"r1"}"#,
    );
    match &out[0] {
        SceneEffect::Publish {
            character, r#ref, ..
        } => {
            assert_eq!((character.as_str(), r#ref.as_deref()), ("b", Some("r1")));
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        r#"{"type":"publish","topic":"face","name":"n","ref":"r2"}"#,
        r#"{"type":"publish","character":"z","topic":"face","name":"n","ref":"r2"}"#,
        r#"{"type":"publish","character":7,"topic":"face","name":"n","ref":"r2"}"#,
    ] {
        let f = frames(&s.text(1, bad));
        assert_eq!(f[0].1["type"], "error", "{bad}");
        assert_eq!(f[0].1["ref"], "r2", "{bad}");
    }
    // Ten refused frames in a row close the socket with 4400.
    let mut closed = false;
    for _ in 0..10 {
        closed |= s
            .text(1, "nope")
            .iter()
            .any(|e| matches!(e, SceneEffect::Close { code: 4400, .. }));
    }
    assert!(closed);
}

#[test]
fn kicks_revocations_expiry_and_gone_forget_the_socket_once() {
    let mut s = scene();
    s.connect(1, info("x", &[">"]), Some(50), vec![]);
    s.connect(2, info("y", &[">"]), None, vec![]);
    s.connect(3, info("z", &[">"]), None, vec![]);
    assert_eq!(s.poll_timeout(), Some(50));
    assert!(s.timeout(49).is_empty());
    assert!(matches!(
        s.timeout(50)[0],
        SceneEffect::Close {
            client: 1,
            code: 4001,
            ..
        }
    ));
    let (out, found) = s.kick("y");
    assert!(
        found
            && matches!(
                out[0],
                SceneEffect::Close {
                    client: 2,
                    code: 4010,
                    ..
                }
            )
    );
    assert!(!s.kick("y").1);
    let (out, n) = s.revoke("ann");
    let closes = out
        .iter()
        .filter(|e| matches!(e, SceneEffect::Close { code: 4003, .. }))
        .count();
    assert_eq!((n, closes), (1, 1));
    assert!(
        s.gone(3, Gone::Closed(1000)).is_empty(),
        "already forgotten"
    );
    assert_eq!(s.subscriber_count(), 0);
}

fn kept(seq: u64, topic: &str) -> StoredCommand {
    let mut r = row(seq, topic);
    r.command.retain = true;
    r
}

/// A scene socket gets, right after `welcome`, the retained commands of
/// every character it does not resume (character by character, each in seq
/// order, `retained: true`), as adopted at the join and updated by feeds;
/// a character whose stream restarts forgets its copy.
#[test]
fn new_sockets_get_each_characters_retained_commands_after_welcome() {
    let mut s = scene();
    // `a` answered its join at seq 10 with face@4 and pose@7.
    assert!(s.adopt_retained(&c("a"), vec![kept(4, "face"), kept(7, "pose")], 10, 1));
    // `b` answered at 25 (ahead of the scene's 20): its rows past 20 come by feed.
    assert!(s.adopt_retained(&c("b"), vec![kept(15, "pose"), kept(22, "face")], 25, 3));
    let held: Vec<u64> = s
        .retained(&c("b"))
        .unwrap()
        .rows()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(held, vec![15], "face@22 is not delivered yet");
    let (_, _) = s.feed(
        &c("b"),
        "eb",
        20,
        false,
        vec![row(21, "x"), kept(22, "face")],
        true,
    );
    let (_, _) = s.feed(&c("a"), "ea", 10, false, vec![kept(11, "face")], true);
    let out = s.connect(1, info("x", &["face"]), None, vec![]);
    let got: Vec<(String, u64, bool)> = frames(&out)
        .into_iter()
        .skip(1)
        .map(|(_, f)| {
            (
                f["character"].as_str().unwrap().to_string(),
                f["seq"].as_u64().unwrap(),
                f["retained"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("a".into(), 11, true), ("b".into(), 22, true)],
        "face only, the newest per character"
    );
    // Resuming `a`: only `b`'s retained (pose, face), then `a`'s recovered.
    let resume = Resume {
        since: 11,
        rows: vec![],
        complete: true,
        next_since: None,
    };
    let out = s.connect(2, info("y", &[">"]), None, vec![(c("a"), resume)]);
    let types: Vec<String> = frames(&out)
        .into_iter()
        .map(|(_, f)| format!("{} {}", f["type"].as_str().unwrap(), f["character"]))
        .collect();
    assert_eq!(
        types,
        vec![
            "welcome null",
            "command \"b\"",
            "command \"b\"",
            "recovered \"a\""
        ]
    );
    // A restarted stream (new epoch) drops `a`'s copy.
    s.feed(&c("a"), "ea2", 0, false, vec![row(1, "x")], true);
    assert!(s.retained(&c("a")).is_none());
    assert!(
        !s.adopt_retained(&c("zz"), vec![], 0, 0),
        "not a character of the scene"
    );
}

#[test]
fn connects_and_ends_are_logged_once_and_reported() {
    let mut s = scene().with_refresh(100);
    let out = s.connect(1, info("x", &["face"]), None, vec![]);
    assert!(out.iter().any(|e| matches!(
        e,
        SceneEffect::Log { kind: EventKind::Connect { topics }, client_id, .. }
            if client_id == "x" && topics.len() == 1
    )));
    assert!(out.contains(&SceneEffect::SubscribersChanged));
    assert_eq!(s.filter_counts().get("face"), Some(&1));
    // The lease refresh: due one interval after the report, while held.
    assert_eq!(s.poll_timeout(), None);
    s.reported(1_000);
    assert_eq!(s.poll_timeout(), Some(1_100));
    assert_eq!(s.timeout(1_100), vec![SceneEffect::SubscribersChanged]);
    s.reported(1_100);
    // A kick: closed, logged as closed by us (4010), reported; once only.
    let (out, _) = s.kick("x");
    let logs: Vec<&SceneEffect> = out
        .iter()
        .filter(|e| matches!(e, SceneEffect::Log { .. }))
        .collect();
    assert_eq!(
        logs,
        vec![&SceneEffect::Log {
            kind: EventKind::Disconnect {
                reason: DisconnectReason::Closed(CloseCode::ByAdmin)
            },
            client_id: "x".into(),
            user: Some("ann".into()),
        }]
    );
    assert!(out.contains(&SceneEffect::SubscribersChanged));
    assert!(s.gone(1, Gone::Closed(1000)).is_empty());
    // Nobody held: no refresh due.
    assert_eq!(s.poll_timeout(), None);
    // The client's own close is logged with its code.
    s.connect(2, info("y", &[">"]), None, vec![]);
    let out = s.gone(2, Gone::Closed(1001));
    assert!(out.iter().any(|e| matches!(
        e,
        SceneEffect::Log {
            kind: EventKind::Disconnect {
                reason: DisconnectReason::ClientClosed(1001)
            },
            ..
        }
    )));
}

#[test]
fn presence_frames_go_to_presence_sockets_but_the_one_they_are_about() {
    let mut s = scene();
    let mut watcher = info("w", &[">"]);
    watcher.presence = true;
    s.connect(1, watcher, None, vec![]);
    s.connect(2, info("x", &[">"]), None, vec![]);
    let mut other = info("p", &[">"]);
    other.presence = true;
    s.connect(3, other, None, vec![]);
    assert!(s.presence_held());
    let join = |id: &str| {
        format!(r#"{{"type":"presence","event":"join","client_id":"{id}","user":null,"count":3}}"#)
    };
    let out = frames(&s.presence_frames(&c("a"), &[join("p"), join("zz"), "junk".into()]));
    assert_eq!(out.len(), 2);
    // About socket 3: only socket 1 gets it; about another client: both.
    assert_eq!(out[0].0, vec![1]);
    assert_eq!(out[1].0, vec![1, 3]);
    assert_eq!(out[0].1["character"], "a");
    assert_eq!(out[0].1["count"], 3);
    // Not the scene's character: nothing.
    assert!(s.presence_frames(&c("z"), &[join("q")]).is_empty());
}
