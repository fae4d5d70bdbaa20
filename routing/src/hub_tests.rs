//! Tests of the hub, through a fixture that applies effects to in-memory
//! per-socket inboxes the way the Worker shell would.

use super::*;
use crate::catalogue::CloseCode;
use crate::events::{DisconnectReason, Event, EventKind};
use crate::topic::Topic;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Drives a hub through `handle` the way the Worker shell does (stores
/// every `Store` at once and feeds `Stored` back), keeps every input it fed
/// (for replay) and applies the effects to per-socket inboxes.
#[derive(Default)]
struct Fx {
    hub: Option<Hub>,
    next_key: ClientKey,
    /// Every (now, input) fed, in order, and the effects it gave.
    record: Vec<(u64, Input, Vec<Effect>)>,
    inbox: BTreeMap<ClientKey, Vec<Value>>,
    closed: BTreeMap<ClientKey, u16>,
    saved: Vec<ClientKey>,
    logs: Vec<Event>,
    replies: Vec<Reply>,
    changes: usize,
    /// Presence frames for the scene objects.
    to_scenes: Vec<Value>,
}

impl Fx {
    fn new(window: u64) -> Fx {
        Fx::with_hub(Hub::new(
            CharacterId::parse("alice").unwrap(),
            "ep1".into(),
            0,
            window,
        ))
    }
    fn with_hub(hub: Hub) -> Fx {
        Fx {
            hub: Some(hub),
            next_key: 1,
            ..Fx::default()
        }
    }
    fn hub(&mut self) -> &mut Hub {
        self.hub.as_mut().unwrap()
    }
    /// Feeds one input and applies what it leads to, storing publishes.
    fn feed(&mut self, now: u64, input: Input) {
        let effects = self.hub().handle(now, input.clone());
        self.record.push((now, input, effects.clone()));
        for e in effects {
            match e {
                Effect::Send { to, text } => {
                    assert!(!to.is_empty());
                    for k in to {
                        assert!(!self.closed.contains_key(&k), "send to closed socket");
                        self.inbox
                            .entry(k)
                            .or_default()
                            .push(serde_json::from_str(&text).unwrap());
                    }
                }
                Effect::Close { client, code, .. } => {
                    assert!(self.closed.insert(client, code).is_none(), "closed twice");
                }
                Effect::SaveClient { client } => self.saved.push(client),
                Effect::Store(pending) => self.feed(now, Input::Stored(pending)),
                Effect::Reply(r) => self.replies.push(r),
                Effect::Log(ev) => self.logs.push(ev),
                Effect::SubscribersChanged => self.changes += 1,
                Effect::ScenePresence(text) => {
                    self.to_scenes.push(serde_json::from_str(&text).unwrap())
                }
            }
        }
    }
    fn info(id: &str, topics: &[&str], presence: bool, can_publish: bool) -> ClientInfo {
        ClientInfo {
            client_id: id.into(),
            user: Some(format!("u-{id}")),
            topics: topics
                .iter()
                .map(|t| TopicFilter::parse(t).unwrap())
                .collect(),
            presence,
            connected_at: 1,
            can_publish,
        }
    }
    fn connect_with(
        &mut self,
        now: u64,
        info: ClientInfo,
        expires_at: Option<u64>,
        resume: Option<Resume>,
    ) -> ClientKey {
        let client = self.next_key;
        self.next_key += 1;
        self.feed(
            now,
            Input::Connect {
                client,
                info,
                expires_at,
                resume,
            },
        );
        client
    }
    fn connect(
        &mut self,
        id: &str,
        topics: &[&str],
        presence: bool,
        can_publish: bool,
    ) -> ClientKey {
        let info = Fx::info(id, topics, presence, can_publish);
        self.connect_with(0, info, None, None)
    }
    /// An HTTP publish: its seqs and `delivered`.
    fn publish(&mut self, cmds: Vec<Value>, now: u64) -> (Vec<u64>, usize) {
        let commands: Vec<Command> = cmds
            .iter()
            .map(|c| crate::protocol::parse_command(c).unwrap())
            .collect();
        self.feed(now, Input::Publish { commands });
        match self.replies.pop() {
            Some(Reply::Published { seqs, delivered }) => (seqs, delivered),
            other => panic!("publish answered {other:?}"),
        }
    }
    fn frame(&mut self, k: ClientKey, text: &str, now: u64) {
        self.feed(
            now,
            Input::Text {
                client: k,
                text: text.into(),
            },
        );
    }
    fn gone(&mut self, k: ClientKey, now: u64) {
        self.feed(
            now,
            Input::Gone {
                client: k,
                how: Gone::Closed(1000),
            },
        );
    }
    fn take(&mut self, k: ClientKey) -> Vec<Value> {
        self.inbox.remove(&k).unwrap_or_default()
    }
    /// Seqs of command frames received, batches unpacked.
    fn seqs(&self, k: ClientKey) -> Vec<u64> {
        let mut out = Vec::new();
        for f in self.inbox.get(&k).into_iter().flatten() {
            match f["type"].as_str() {
                Some("command") => out.push(f["seq"].as_u64().unwrap()),
                Some("batch") => out.extend(
                    f["commands"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["seq"].as_u64().unwrap()),
                ),
                _ => {}
            }
        }
        out
    }
    /// Disconnect events logged for `client_id`.
    fn disconnects(&self, client_id: &str) -> Vec<DisconnectReason> {
        self.logs
            .iter()
            .filter(|e| e.client_id.as_deref() == Some(client_id))
            .filter_map(|e| match e.kind {
                EventKind::Disconnect { reason } => Some(reason),
                _ => None,
            })
            .collect()
    }
}

fn c(topic: &str, name: &str) -> Value {
    json!({"topic": topic, "name": name})
}

#[test]
fn scene_sockets_count_in_presence_and_their_joins_and_leaves_are_announced() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], true, false);
    fx.take(a);
    // Two scene sockets (one asked for presence): counted; frames to scenes.
    fx.hub().set_scenes(2, true);
    let join = Input::ScenePresence {
        event: PresenceEvent::Join,
        client_id: "s1".into(),
        user: Some("u-s1".into()),
    };
    fx.feed(5, join);
    let frame =
        json!({"type": "presence", "event": "join", "client_id": "s1", "user": "u-s1", "count": 3});
    assert_eq!(fx.take(a), vec![frame.clone()]);
    assert_eq!(fx.to_scenes, vec![frame]);
    // A socket of this object: the scenes hear of it too.
    let b = fx.connect("b", &[">"], false, false);
    assert_eq!(fx.to_scenes[1]["client_id"], "b");
    assert_eq!(fx.to_scenes[1]["count"], 4);
    fx.gone(b, 0);
    fx.hub().set_scenes(1, false);
    let leave = Input::ScenePresence {
        event: PresenceEvent::Leave,
        client_id: "s1".into(),
        user: None,
    };
    fx.feed(6, leave);
    let frames = fx.take(a);
    assert_eq!(
        frames.last(),
        Some(
            &json!({"type": "presence", "event": "leave", "client_id": "s1", "user": null, "count": 2})
        )
    );
    // No scene wants presence any more: nothing more for them.
    assert_eq!(fx.to_scenes.len(), 3);
    // Nothing in the event log or the subscriber summary: the scene logs.
    assert!(fx.logs.iter().all(|e| e.client_id.as_deref() != Some("s1")));
}

#[test]
fn connect_sends_welcome_then_presence_to_others() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], true, false);
    let b = fx.connect("b", &["face"], false, false);
    let welcome = fx.take(b);
    assert_eq!(
        welcome,
        vec![
            json!({"type": "welcome", "client_id": "b", "character": "alice", "epoch": "ep1", "seq": 0, "topics": ["face"]})
        ]
    );
    let a_frames = fx.take(a);
    assert_eq!(a_frames[0]["type"], "welcome");
    assert_eq!(
        a_frames[1],
        json!({"type": "presence", "event": "join", "client_id": "b", "user": "u-b", "count": 2})
    );
    assert_eq!(fx.hub().subscriber_count(), 2);
    assert_eq!(fx.hub().key_of("b"), Some(b));
    assert_eq!(fx.hub().filter_counts().get("face"), Some(&1));
    fx.gone(b, 0);
    assert_eq!(
        fx.closed.get(&b),
        Some(&1000),
        "the closing handshake is completed"
    );
    assert_eq!(
        fx.take(a),
        vec![
            json!({"type": "presence", "event": "leave", "client_id": "b", "user": "u-b", "count": 1})
        ]
    );
    let again = Input::Gone {
        client: b,
        how: Gone::Error,
    };
    assert!(
        fx.hub().handle(0, again).is_empty(),
        "an ended socket ends once"
    );
    assert_eq!(
        fx.disconnects("b"),
        vec![DisconnectReason::ClientClosed(1000)]
    );
    assert_eq!(fx.hub().key_of("b"), None);
}

#[test]
fn publish_routes_by_filter_and_counts_delivered() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &["face"], false, false);
    let b = fx.connect("b", &["body.*", "face"], false, false);
    let d = fx.connect("d", &["x"], false, false);
    let (seqs, delivered) = fx.publish(
        vec![c("face", "smile"), c("body.arms", "wave"), c("y", "z")],
        5,
    );
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(delivered, 3);
    assert_eq!(fx.seqs(a), vec![1]);
    assert_eq!(fx.seqs(b), vec![1, 2]);
    assert_eq!(fx.seqs(d), Vec::<u64>::new());
    assert_eq!(fx.hub().seq(), 3);
    let cmd = fx.inbox[&a].last().unwrap().clone();
    assert_eq!(cmd["ts"], 5);
    assert_eq!(cmd["epoch"], "ep1");
}

#[test]
fn plan_without_commit_changes_nothing() {
    let mut fx = Fx::new(0);
    fx.connect("a", &[">"], false, false);
    let cmd = crate::protocol::parse_command(&json!({"name": "x", "id": "k"})).unwrap();
    let plan = |fx: &mut Fx| {
        let commands = vec![cmd.clone()];
        match fx.hub().handle(0, Input::Publish { commands }).as_slice() {
            [Effect::Store(p)] => p.seqs.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(plan(&mut fx), vec![1]);
    assert_eq!(fx.hub().seq(), 0);
    assert_eq!(plan(&mut fx), vec![1], "nothing was committed");
}

#[test]
fn idempotency_within_five_minutes() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let k = json!({"name": "x", "id": "k"});
    assert_eq!(
        fx.publish(vec![k.clone(), k.clone(), c("main", "y")], 1_000),
        (vec![1, 1, 2], 2)
    );
    assert_eq!(
        fx.publish(vec![k.clone()], 1_000 + IDEMPOTENCY_WINDOW_MS - 1),
        (vec![1], 0)
    );
    assert_eq!(fx.seqs(a), vec![1, 2]);
    assert_eq!(
        fx.publish(vec![k.clone()], 1_000 + IDEMPOTENCY_WINDOW_MS),
        (vec![3], 1)
    );
    assert_eq!(
        fx.publish(vec![k], 1_000 + IDEMPOTENCY_WINDOW_MS + 10),
        (vec![3], 0)
    );
    // Pruning keeps the map bounded.
    fx.publish(vec![c("main", "z")], 10 * IDEMPOTENCY_WINDOW_MS);
    assert!(fx.hub().idempotency.is_empty());
    assert!(fx.hub().idempotency_order.is_empty());
}

#[test]
fn restored_idempotency_answers_original_seq() {
    let mut fx = Fx::new(0);
    fx.hub().restore_idempotency("k".into(), 7, 100);
    let (seqs, _) = fx.publish(vec![json!({"name": "x", "id": "k"})], 200);
    assert_eq!(seqs, vec![7]);
}

#[test]
fn resume_replays_matching_rows_then_recovered() {
    let hub = Hub::new(CharacterId::parse("alice").unwrap(), "ep1".into(), 5, 0);
    let mut fx = Fx::with_hub(hub);
    let w = fx.connect("w", &[">"], true, false);
    fx.take(w);
    let row = |seq: u64, topic: &str| StoredCommand {
        seq,
        ts: seq * 10,
        command: crate::protocol::parse_command(&c(topic, "n")).unwrap(),
    };
    let resume = |since, complete| Resume {
        since,
        rows: vec![row(3, "face"), row(4, "body"), row(5, "face")],
        complete,
        next_since: None,
    };
    let info = Fx::info("a", &["face"], false, false);
    let a = fx.connect_with(7, info.clone(), None, Some(resume(2, true)));
    let frames = fx.take(a);
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(fx.seqs(a), Vec::<u64>::new());
    let replayed: Vec<u64> = frames[1..3]
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, vec![3, 5], "only matching rows, in order");
    assert_eq!(
        frames[3],
        json!({"type": "recovered", "since": 2, "seq": 5, "complete": true, "truncated": false})
    );
    assert_eq!(frames.len(), 4);
    // Presence comes after the replay, to the others.
    assert_eq!(fx.take(w)[0]["event"], "join");
    // The reader's verdict is passed on, and a client from the future is
    // never complete.
    let b = fx.connect_with(
        7,
        Fx::info("b", &["face"], false, false),
        None,
        Some(resume(2, false)),
    );
    assert_eq!(fx.take(b).last().unwrap()["complete"], false);
    let d = fx.connect_with(
        7,
        Fx::info("d", &["face"], false, false),
        None,
        Some(Resume {
            since: 9,
            rows: vec![],
            complete: true,
            next_since: None,
        }),
    );
    assert_eq!(fx.take(d).last().unwrap()["complete"], false);
    // Connect is logged once per socket, with its filters.
    let connects = fx
        .logs
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Connect { .. }))
        .count();
    assert_eq!(connects, 4);
}

/// A replay the reader cut short says so, and where history continues; the
/// `seq` is still the character's, so the client knows what to fill.
#[test]
fn truncated_resume_says_where_history_continues() {
    let hub = Hub::new(CharacterId::parse("alice").unwrap(), "ep1".into(), 9000, 0);
    let mut fx = Fx::with_hub(hub);
    let row = |seq: u64| StoredCommand {
        seq,
        ts: seq,
        command: crate::protocol::parse_command(&c("face", "n")).unwrap(),
    };
    let a = fx.connect_with(
        7,
        Fx::info("a", &[">"], false, false),
        None,
        Some(Resume {
            since: 0,
            rows: (1..=3).map(row).collect(),
            complete: true,
            next_since: Some(3),
        }),
    );
    let frames = fx.take(a);
    assert_eq!(frames.len(), 5);
    let replayed: Vec<u64> = frames[1..4]
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, vec![1, 2, 3]);
    assert_eq!(
        frames[4],
        json!({"type": "recovered", "since": 0, "seq": 9000, "complete": true, "truncated": true, "next_since": 3})
    );
}

#[test]
fn subscribe_and_unsubscribe_frames() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &["face"], false, false);
    fx.take(a);
    fx.frame(a, r#"{"type":"subscribe","topics":["body.*","face"]}"#, 0);
    assert_eq!(
        fx.take(a),
        vec![json!({"type": "subscribed", "topics": ["face", "body.*"]})]
    );
    assert_eq!(fx.saved, vec![a]);
    assert_eq!(fx.hub().client(a).unwrap().topics.len(), 2);
    fx.frame(a, r#"{"type":"unsubscribe","topics":["face","nope"]}"#, 0);
    assert_eq!(
        fx.take(a),
        vec![json!({"type": "subscribed", "topics": ["body.*"]})]
    );
    assert_eq!(fx.saved, vec![a, a]);
    fx.frame(a, r#"{"type":"unsubscribe","topics":["nope"]}"#, 0);
    assert_eq!(fx.saved, vec![a, a], "no change, no save");
    fx.take(a);
    fx.publish(vec![c("body.legs", "kick"), c("face", "smile")], 0);
    assert_eq!(fx.seqs(a), vec![1]);
}

#[test]
fn subscribe_beyond_limit_is_refused_unchanged() {
    let mut fx = Fx::new(0);
    let topics: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let a = fx.connect("a", &refs, false, false);
    fx.take(a);
    fx.frame(
        a,
        r#"{"type":"subscribe","topics":["x","y","t0"],"ref":"r"}"#,
        0,
    );
    assert_eq!(fx.hub().client(a).unwrap().topics.len(), 32);
    fx.take(a);
    fx.frame(a, r#"{"type":"subscribe","topics":["z"],"ref":"r"}"#, 0);
    let f = fx.take(a);
    assert_eq!(f[0]["type"], "error");
    assert_eq!(
        (f[0]["code"].as_str(), f[0]["ref"].as_str()),
        (Some("bad_request"), Some("r"))
    );
    assert_eq!(fx.hub().client(a).unwrap().topics.len(), 32);
}

#[test]
fn client_publish_needs_right_and_answers_published() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let p = fx.connect("p", &["face"], false, true);
    fx.take(a);
    fx.take(p);
    fx.frame(
        a,
        r#"{"type":"publish","ref":"r1","name":"smile","topic":"face"}"#,
        0,
    );
    assert_eq!(
        fx.take(a),
        vec![
            json!({"type": "error", "code": "forbidden", "message": "this connection may not publish", "ref": "r1"})
        ]
    );
    assert!(fx.take(p).is_empty());
    fx.frame(
        p,
        r#"{"type":"publish","ref":"r2","name":"smile","topic":"face"}"#,
        0,
    );
    assert_eq!(fx.seqs(a), vec![1]);
    let pf = fx.take(p);
    assert_eq!(pf[0]["type"], "command");
    assert_eq!(pf[1], json!({"type": "published", "seq": 1, "ref": "r2"}));
}

/// A client publish carries `at` through to every frame; one more than an
/// hour from the hub's clock is refused with `bad_request` (and its `ref`),
/// publishing nothing.
#[test]
fn client_publish_at_is_passed_through_and_bounded() {
    let now = 1_700_000_000_000u64;
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let p = fx.connect("p", &["face"], false, true);
    fx.take(a);
    fx.take(p);
    let at = now + 500;
    let ok = format!(r#"{{"type":"publish","ref":"r1","name":"smile","topic":"face","at":{at}}}"#);
    fx.frame(p, &ok, now);
    let got = fx.take(a);
    assert_eq!(got[0]["at"], json!(at));
    assert_eq!(got[0]["ts"], json!(now));
    let far = now + crate::schedule::MAX_AT_DISTANCE_MS + 1;
    let bad =
        format!(r#"{{"type":"publish","ref":"r2","name":"smile","topic":"face","at":{far}}}"#);
    fx.frame(p, &bad, now);
    let pf = fx.take(p);
    let err = pf.last().unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "bad_request");
    assert_eq!(err["ref"], "r2");
    assert!(fx.take(a).is_empty());
    // Without `at` the frame says null.
    fx.publish(vec![c("face", "blink")], now);
    assert_eq!(fx.take(a)[0]["at"], Value::Null);
    assert_eq!(fx.seqs(a), Vec::<u64>::new());
}

#[test]
fn bad_frames_get_errors_then_close() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let w = fx.connect("w", &[">"], true, false);
    fx.take(a);
    fx.take(w);
    fx.frame(a, "nope", 0);
    assert_eq!(fx.take(a)[0]["code"], "bad_message");
    fx.feed(0, Input::Binary { client: a });
    assert_eq!(fx.take(a)[0]["message"], "binary frames are not supported");
    // A good frame resets the consecutive count.
    fx.frame(a, r#"{"type":"subscribe","topics":["x"]}"#, 0);
    for _ in 0..9 {
        fx.frame(a, r#"{"type":"what","ref":"q"}"#, 0);
    }
    assert!(!fx.closed.contains_key(&a));
    fx.frame(a, r#"{"type":"what","ref":"q"}"#, 0);
    assert_eq!(fx.closed.get(&a), Some(&4400));
    assert!(fx.hub().client(a).is_none());
    assert_eq!(fx.take(w)[0]["event"], "leave");
    // Regression: a socket closed for bad frames was never logged.
    assert_eq!(
        fx.disconnects("a"),
        vec![DisconnectReason::Closed(CloseCode::BadFrames)]
    );
}

#[test]
fn kick_closes_with_4010() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let kick = Input::Kick {
        client_id: "a".into(),
    };
    fx.feed(5, kick.clone());
    assert_eq!(fx.closed.get(&a), Some(&4010));
    assert_eq!(fx.replies, vec![Reply::Kicked]);
    fx.feed(6, kick);
    assert_eq!(fx.replies, vec![Reply::Kicked, Reply::NoSuchClient]);
    assert_eq!(
        fx.disconnects("a"),
        vec![DisconnectReason::Closed(CloseCode::ByAdmin)]
    );
}

#[test]
fn batching_groups_per_client_and_flushes_on_the_timer() {
    let mut fx = Fx::new(50);
    let a = fx.connect("a", &[">"], false, false);
    let b = fx.connect("b", &[">"], false, false);
    let d = fx.connect("d", &["face"], false, false);
    let gone = fx.connect("g", &[">"], false, false);
    for k in [a, b, d, gone] {
        fx.take(k);
    }
    assert_eq!(fx.hub().poll_timeout(), None);
    assert_eq!(fx.publish(vec![c("face", "smile")], 100).1, 4);
    assert_eq!(fx.publish(vec![c("body", "wave")], 120).1, 3);
    assert_eq!(
        fx.hub().poll_timeout(),
        Some(150),
        "the first command's window"
    );
    assert!(fx.inbox.is_empty(), "nothing sent before the flush");
    fx.gone(gone, 130);
    fx.feed(149, Input::Timeout);
    assert!(fx.inbox.is_empty(), "an early alarm flushes nothing");
    fx.feed(150, Input::Timeout);
    let sends: Vec<&Effect> = fx.record.last().unwrap().2.iter().collect();
    assert_eq!(sends.len(), 2, "a and b share one send; d has its own");
    assert!(matches!(sends[0], Effect::Send { to, .. } if to == &vec![a, b]));
    assert_eq!(fx.inbox[&a].len(), 1);
    assert_eq!(fx.inbox[&a][0]["type"], "batch");
    assert_eq!(fx.seqs(a), vec![1, 2]);
    assert_eq!(fx.seqs(d), vec![1]);
    assert!(fx.seqs(gone).is_empty());
    assert_eq!(fx.hub().poll_timeout(), None);
    fx.feed(200, Input::Timeout);
    assert!(fx.record.last().unwrap().2.is_empty());
    fx.publish(vec![c("face", "x")], 300);
    assert_eq!(fx.hub().poll_timeout(), Some(350));
}

#[test]
fn tokens_expire_on_the_timer_with_4001() {
    let mut fx = Fx::new(0);
    let w = fx.connect("w", &[">"], true, false);
    let a = fx.connect_with(0, Fx::info("a", &[">"], false, false), Some(1_000), None);
    let b = fx.connect_with(0, Fx::info("b", &[">"], false, false), Some(2_000), None);
    assert_eq!(fx.hub().poll_timeout(), Some(1_000));
    fx.feed(999, Input::Timeout);
    assert!(fx.closed.is_empty());
    fx.feed(1_500, Input::Timeout);
    assert_eq!(fx.closed.get(&a), Some(&4001));
    assert_eq!(fx.hub().poll_timeout(), Some(2_000));
    // A socket that leaves first takes its timer with it.
    fx.gone(b, 1_600);
    assert_eq!(fx.hub().poll_timeout(), None);
    fx.feed(5_000, Input::Timeout);
    assert_eq!(fx.closed.get(&b), Some(&1000));
    assert_eq!(
        fx.disconnects("a"),
        vec![DisconnectReason::Closed(CloseCode::TokenExpired)]
    );
    assert_eq!(
        fx.disconnects("b"),
        vec![DisconnectReason::ClientClosed(1000)]
    );
    assert!(fx.take(w).iter().any(|f| f["event"] == "leave"));
}

#[test]
fn the_summary_is_reported_again_while_clients_are_connected() {
    let hub =
        Hub::new(CharacterId::parse("alice").unwrap(), "ep1".into(), 0, 0).with_refresh(1_000);
    let mut fx = Fx::with_hub(hub);
    assert_eq!(fx.hub().poll_timeout(), None, "no clients, no refresh");
    let a = fx.connect_with(100, Fx::info("a", &[">"], false, false), None, None);
    assert_eq!(fx.hub().poll_timeout(), Some(1_100));
    let changes = fx.changes;
    fx.feed(1_100, Input::Timeout);
    assert_eq!(fx.changes, changes + 1, "a refresh report");
    assert_eq!(fx.hub().poll_timeout(), Some(2_100));
    fx.gone(a, 1_500);
    assert_eq!(
        fx.hub().poll_timeout(),
        None,
        "the last client took the timer with it"
    );
    let changes = fx.changes;
    fx.feed(2_100, Input::Timeout);
    assert_eq!(fx.changes, changes);
    // A socket found again on wake arms it too.
    let restore = Input::Restore {
        client: 9,
        info: Fx::info("r", &[">"], false, false),
        expires_at: None,
    };
    fx.feed(3_000, restore);
    assert_eq!(fx.hub().poll_timeout(), Some(4_000));
    // A wake whose sockets the registry still lists resumes the refresh
    // from the stored report time (`routing::lease`).
    fx.hub().resume_refresh(3_400);
    assert_eq!(fx.hub().poll_timeout(), Some(3_400));
    let changes = fx.changes;
    fx.feed(3_400, Input::Timeout);
    assert_eq!(fx.changes, changes + 1, "the resumed refresh reports");
}

#[test]
fn a_resumed_refresh_needs_clients() {
    let hub =
        Hub::new(CharacterId::parse("alice").unwrap(), "ep1".into(), 0, 0).with_refresh(1_000);
    let mut fx = Fx::with_hub(hub);
    fx.hub().resume_refresh(500);
    assert_eq!(fx.hub().poll_timeout(), None);
}

#[test]
fn revoking_a_user_closes_exactly_its_sockets_with_4003() {
    let mut fx = Fx::new(0);
    let a1 = fx.connect("a1", &[">"], false, false); // user u-a1
    let mut info = Fx::info("a2", &[">"], false, false);
    info.user = Some("u-a1".into());
    let a2 = fx.connect_with(0, info, None, None);
    let b = fx.connect("b", &[">"], true, false);
    fx.feed(
        5,
        Input::Revoke {
            user: "u-a1".into(),
        },
    );
    assert_eq!(fx.replies.pop(), Some(Reply::Revoked { closed: 2 }));
    assert_eq!(
        (fx.closed.get(&a1), fx.closed.get(&a2)),
        (Some(&4003), Some(&4003))
    );
    assert!(!fx.closed.contains_key(&b));
    assert_eq!(
        fx.disconnects("a1"),
        vec![DisconnectReason::Closed(CloseCode::RightsWithdrawn)]
    );
    fx.feed(
        6,
        Input::Revoke {
            user: "u-a1".into(),
        },
    );
    assert_eq!(fx.replies.pop(), Some(Reply::Revoked { closed: 0 }));
}

#[test]
fn a_failed_store_commits_nothing_and_closes_a_publishing_socket() {
    let mut fx = Fx::new(0);
    let p = fx.connect("p", &[">"], false, true);
    fx.take(p);
    let cmd = crate::protocol::parse_command(&c("face", "smile")).unwrap();
    let pending = Pending {
        seqs: vec![1],
        rows: vec![StoredCommand {
            seq: 1,
            ts: 0,
            command: cmd,
        }],
        origin: Origin::Client {
            client: p,
            r#ref: None,
        },
    };
    fx.feed(0, Input::StoreFailed(pending));
    assert_eq!(fx.hub().seq(), 0);
    assert_eq!(fx.closed.get(&p), Some(&1011));
    assert_eq!(
        fx.disconnects("p"),
        vec![DisconnectReason::Closed(CloseCode::Internal)]
    );
}

/// A publish the shell refuses for the history backlog commits nothing: the
/// HTTP caller gets `Backlogged`, a publishing socket an `error` frame with
/// `history_backlog` and its ref, and stays connected (not a refused frame).
#[test]
fn a_backlogged_publish_commits_nothing_and_keeps_the_socket() {
    let mut fx = Fx::new(0);
    let p = fx.connect("p", &[">"], false, true);
    let w = fx.connect("w", &[">"], false, false);
    fx.take(p);
    fx.take(w);
    let cmd = crate::protocol::parse_command(&c("face", "smile")).unwrap();
    let row = StoredCommand {
        seq: 1,
        ts: 0,
        command: cmd,
    };
    let pending = |origin| Pending {
        seqs: vec![1],
        rows: vec![row.clone()],
        origin,
    };
    fx.feed(0, Input::Backlogged(pending(Origin::Http)));
    assert_eq!(fx.replies.pop(), Some(Reply::Backlogged));
    let origin = Origin::Client {
        client: p,
        r#ref: Some("r1".into()),
    };
    for _ in 0..MAX_BAD_FRAMES + 1 {
        fx.feed(0, Input::Backlogged(pending(origin.clone())));
    }
    assert_eq!(fx.hub().seq(), 0);
    let frames = fx.take(p);
    assert_eq!(frames.len() as u32, MAX_BAD_FRAMES + 1);
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "history_backlog");
    assert_eq!(frames[0]["ref"], "r1");
    assert!(fx.closed.is_empty(), "not counted as bad frames");
    assert!(fx.take(w).is_empty(), "nothing delivered");
    assert!(!fx
        .logs
        .iter()
        .any(|e| matches!(e.kind, EventKind::Publish { .. })));
}

#[test]
fn a_failed_batch_store_leaves_seq_and_ids_so_later_publishes_are_consecutive() {
    let mut fx = Fx::new(0);
    let s = fx.connect("s", &[">"], false, false);
    fx.take(s);
    let commands: Vec<Command> = [
        json!({"name": "a", "id": "k1"}),
        json!({"name": "b"}),
        json!({"name": "c", "id": "k3"}),
    ]
    .iter()
    .map(|v| crate::protocol::parse_command(v).unwrap())
    .collect();
    let effects = fx.hub().handle(0, Input::Publish { commands });
    let pending = effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Store(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert_eq!(pending.seqs, vec![1, 2, 3]);
    let after = fx.hub().handle(0, Input::StoreFailed(pending));
    assert!(
        after
            .iter()
            .all(|e| !matches!(e, Effect::Send { .. } | Effect::Reply(_))),
        "a failed store delivers and answers nothing: {after:?}"
    );
    assert_eq!(fx.hub().seq(), 0);
    // The same ids publish again (none was remembered), from seq 1.
    let (seqs, delivered) = fx.publish(
        vec![
            json!({"name": "a", "id": "k1"}),
            json!({"name": "c", "id": "k3"}),
        ],
        1,
    );
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(delivered, 2);
    let (seqs, _) = fx.publish(vec![c("face", "smile")], 2);
    assert_eq!(seqs, vec![3]);
    assert_eq!(fx.seqs(s), vec![1, 2, 3]);
}

#[test]
fn client_info_round_trips_as_attachment() {
    let info = ClientInfo {
        client_id: "c".into(),
        user: None,
        topics: vec![TopicFilter::all()],
        presence: true,
        connected_at: 9,
        can_publish: false,
    };
    let s = serde_json::to_string(&info).unwrap();
    assert_eq!(serde_json::from_str::<ClientInfo>(&s).unwrap(), info);
    let mut hub = Hub::new(CharacterId::parse("x").unwrap(), "e".into(), 3, 0);
    let restore = Input::Restore {
        client: 4,
        info: info.clone(),
        expires_at: Some(77),
    };
    assert!(hub.handle(0, restore).is_empty(), "a wake-up says nothing");
    assert_eq!(hub.client(4), Some(&info));
    assert_eq!(
        hub.poll_timeout(),
        Some(77),
        "its token timer is armed again"
    );
    assert_eq!(hub.clients().count(), 1);
    assert_eq!(
        (hub.seq(), hub.epoch(), hub.character().as_str()),
        (3, "e", "x")
    );
}

#[derive(Clone, Debug)]
enum Op {
    /// Filters, and a token lifetime (ms) if any.
    Connect(Vec<usize>, Option<u64>),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(Vec<(usize, Option<u8>)>),
    Gone(usize),
    Kick(usize),
    BadFrames(usize, u8),
    Timeout,
    Wait(u64),
}

const FILTERS: &[&str] = &[">", "a", "a.*", "*.b", "a.>", "b", "*"];
const TOPICS: &[&str] = &["a", "b", "a.b", "b.b", "a.a.c", "main"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            prop::collection::vec(0..FILTERS.len(), 0..3),
            prop::option::of(1u64..5_000)
        )
            .prop_map(|(f, t)| Op::Connect(f, t)),
        (0usize..8, 0..FILTERS.len()).prop_map(|(c, f)| Op::Subscribe(c, f)),
        (0usize..8, 0..FILTERS.len()).prop_map(|(c, f)| Op::Unsubscribe(c, f)),
        prop::collection::vec((0..TOPICS.len(), prop::option::of(0u8..4)), 1..4)
            .prop_map(Op::Publish),
        (0usize..8).prop_map(Op::Gone),
        (0usize..8).prop_map(Op::Kick),
        (0usize..8, 1u8..12).prop_map(|(c, n)| Op::BadFrames(c, n)),
        Just(Op::Timeout),
        (0u64..3_000).prop_map(Op::Wait),
    ]
}

/// The model a random run is checked against: the live clients with their
/// filters and token expiry, what each must have received, the seq and the
/// idempotency ids, all computed by brute force.
#[derive(Default)]
struct Model {
    live: Vec<ClientKey>,
    ids_of: BTreeMap<ClientKey, String>,
    filters: BTreeMap<ClientKey, BTreeSet<&'static str>>,
    expiry: BTreeMap<ClientKey, u64>,
    expected: BTreeMap<ClientKey, Vec<u64>>,
    queued: BTreeMap<ClientKey, Vec<u64>>,
    ids: HashMap<u8, (u64, u64)>,
    seq: u64,
    ended: Vec<String>,
}

impl Model {
    fn end(&mut self, k: ClientKey) {
        self.live.retain(|x| *x != k);
        self.filters.remove(&k);
        self.expiry.remove(&k);
        self.queued.remove(&k);
        self.ended.extend(self.ids_of.get(&k).cloned());
    }
    fn flush(&mut self) {
        for (k, s) in std::mem::take(&mut self.queued) {
            self.expected.entry(k).or_default().extend(s);
        }
    }
}

fn run_model(window: u64, ops: Vec<Op>) -> Result<Fx, TestCaseError> {
    let mut fx = Fx::new(window);
    let mut m = Model::default();
    let mut now = 0u64;
    let mut flush_due: Option<u64> = None;
    for (n, o) in ops.into_iter().enumerate() {
        match o {
            Op::Connect(fs, lifetime) => {
                let names: Vec<&'static str> = fs.iter().map(|i| FILTERS[*i]).collect();
                let id = format!("c{n}");
                let info = Fx::info(&id, &names, n % 3 == 0, false);
                let expires = lifetime.map(|l| now + l);
                let k = fx.connect_with(now, info, expires, None);
                m.live.push(k);
                m.ids_of.insert(k, id);
                m.filters.insert(k, names.into_iter().collect());
                if let Some(at) = expires {
                    m.expiry.insert(k, at);
                }
            }
            Op::Subscribe(i, f) | Op::Unsubscribe(i, f) if !m.live.is_empty() => {
                let k = m.live[i % m.live.len()];
                let sub = matches!(o, Op::Subscribe(..));
                let t = if sub { "subscribe" } else { "unsubscribe" };
                fx.frame(
                    k,
                    &json!({"type": t, "topics": [FILTERS[f]]}).to_string(),
                    now,
                );
                let set = m.filters.entry(k).or_default();
                if sub {
                    set.insert(FILTERS[f]);
                } else {
                    set.remove(FILTERS[f]);
                }
            }
            Op::Publish(cmds) => {
                let mut want_seqs = Vec::new();
                let mut values = Vec::new();
                for (t, id) in cmds {
                    let mut v = c(TOPICS[t], "n");
                    if let Some(id) = id {
                        v["id"] = json!(format!("id{id}"));
                        if let Some((s, ts)) = m.ids.get(&id) {
                            if now - ts < IDEMPOTENCY_WINDOW_MS {
                                want_seqs.push(*s);
                                values.push(v);
                                continue;
                            }
                        }
                    }
                    m.seq += 1;
                    if let Some(id) = id {
                        m.ids.insert(id, (m.seq, now));
                    }
                    want_seqs.push(m.seq);
                    let topic = Topic::parse(TOPICS[t]).unwrap();
                    let seq = m.seq;
                    for (k, fs) in &m.filters {
                        if fs
                            .iter()
                            .any(|f| TopicFilter::parse(f).unwrap().matches(&topic))
                        {
                            if window > 0 {
                                m.queued.entry(*k).or_default().push(seq);
                                flush_due.get_or_insert(now + window);
                            } else {
                                m.expected.entry(*k).or_default().push(seq);
                            }
                        }
                    }
                    values.push(v);
                }
                let (seqs, _) = fx.publish(values, now);
                prop_assert_eq!(seqs, want_seqs);
            }
            Op::Gone(i) if !m.live.is_empty() => {
                let k = m.live[i % m.live.len()];
                fx.gone(k, now);
                m.end(k);
            }
            Op::Kick(i) if !m.live.is_empty() => {
                let k = m.live[i % m.live.len()];
                let client_id = m.ids_of[&k].clone();
                fx.feed(now, Input::Kick { client_id });
                prop_assert_eq!(fx.replies.pop(), Some(Reply::Kicked));
                m.end(k);
            }
            Op::BadFrames(i, count) if !m.live.is_empty() => {
                let k = m.live[i % m.live.len()];
                // A good frame first resets the consecutive count.
                fx.frame(k, r#"{"type":"unsubscribe","topics":["zz"]}"#, now);
                for _ in 0..count {
                    fx.frame(k, "not json", now);
                }
                if u32::from(count) >= MAX_BAD_FRAMES {
                    m.end(k);
                }
            }
            Op::Timeout => {
                fx.feed(now, Input::Timeout);
                if flush_due.is_some_and(|at| at <= now) {
                    m.flush();
                    flush_due = None;
                }
                let expired: Vec<ClientKey> = m
                    .expiry
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| *k)
                    .collect();
                for k in expired {
                    m.end(k);
                }
            }
            Op::Wait(ms) => now += ms,
            _ => {}
        }
        if m.queued.is_empty() {
            flush_due = None;
        }
        // No timer is lost: the hub asks for the model's earliest deadline.
        let want = m.expiry.values().copied().chain(flush_due).min();
        prop_assert_eq!(fx.hub().poll_timeout(), want);
    }
    // A last alarm after the window: everything queued goes out.
    now += window;
    fx.feed(now, Input::Timeout);
    m.flush();
    let expired: Vec<ClientKey> = m
        .expiry
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(k, _)| *k)
        .collect();
    for k in expired {
        m.end(k);
    }
    let keys: BTreeSet<ClientKey> = fx.inbox.keys().chain(m.expected.keys()).copied().collect();
    for k in keys {
        let got = fx.seqs(k);
        prop_assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "not strictly increasing: {:?}",
            got
        );
        let want = m.expected.get(&k).cloned().unwrap_or_default();
        prop_assert_eq!(got, want, "client {}", k);
    }
    // Every socket that ended is logged once, and no live one is.
    for (k, id) in &m.ids_of {
        let n = fx.disconnects(id).len();
        let ended = m.ended.iter().filter(|e| *e == id).count();
        prop_assert_eq!(n, ended, "client {} ({})", k, id);
        prop_assert!(n <= 1);
        prop_assert_eq!(fx.closed.contains_key(k), n == 1);
    }
    Ok(fx)
}

/// Replays `record` into a fresh hub built like the one that produced it
/// and checks that every input gives the same effects again.
fn replays(window: u64, record: &[(u64, Input, Vec<Effect>)]) -> Result<(), TestCaseError> {
    let mut hub = Hub::new(
        CharacterId::parse("alice").unwrap(),
        "ep1".into(),
        0,
        window,
    );
    for (i, (now, input, effects)) in record.iter().enumerate() {
        let again = hub.handle(*now, input.clone());
        prop_assert_eq!(&again, effects, "input {} ({:?})", i, input);
    }
    Ok(())
}

proptest! {
    #[test]
    fn delivery_matches_brute_force(ops in prop::collection::vec(op(), 0..40)) {
        let fx = run_model(0, ops)?;
        replays(0, &fx.record)?;
    }

    #[test]
    fn batched_delivery_matches_brute_force(ops in prop::collection::vec(op(), 0..40)) {
        let fx = run_model(25, ops)?;
        replays(25, &fx.record)?;
    }
}

/// A recorded session of one character: every kind of input, in time
/// order. Its effects are kept in `tests/fixtures/hub-replay.txt`; a change
/// of behaviour shows there as a diff (run with `BLESS=1` to accept one).
fn recorded_session() -> Vec<(u64, Input)> {
    let info = |id: &str, topics: &[&str], presence| Fx::info(id, topics, presence, true);
    let cmd = |v: Value| crate::protocol::parse_command(&v).unwrap();
    let text = |client, t: &str| Input::Text {
        client,
        text: t.into(),
    };
    vec![
        (
            1_000,
            Input::Connect {
                client: 1,
                info: info("a", &["face"], true),
                expires_at: Some(9_000),
                resume: None,
            },
        ),
        (
            1_010,
            Input::Connect {
                client: 2,
                info: info("b", &["body.*"], false),
                expires_at: None,
                resume: None,
            },
        ),
        (
            1_020,
            Input::Publish {
                commands: vec![
                    cmd(c("face", "smile")),
                    cmd(json!({"topic": "body.arms", "name": "wave", "id": "k1"})),
                ],
            },
        ),
        (
            1_030,
            Input::Publish {
                commands: vec![cmd(
                    json!({"topic": "body.arms", "name": "wave", "id": "k1"}),
                )],
            },
        ),
        (
            1_040,
            text(2, r#"{"type":"subscribe","topics":["face"],"ref":"s"}"#),
        ),
        (
            1_050,
            text(
                2,
                r#"{"type":"publish","ref":"p","topic":"face","name":"blink"}"#,
            ),
        ),
        (1_060, text(1, "not json")),
        (1_070, Input::Binary { client: 1 }),
        (
            1_080,
            Input::Kick {
                client_id: "nobody".into(),
            },
        ),
        (1_090, Input::Timeout),
        (9_000, Input::Timeout),
        (
            9_010,
            Input::Gone {
                client: 2,
                how: Gone::Closed(1001),
            },
        ),
        (
            9_020,
            Input::Gone {
                client: 2,
                how: Gone::Error,
            },
        ),
    ]
}

fn render(record: &[(u64, Input)]) -> String {
    let mut hub = Hub::new(CharacterId::parse("alice").unwrap(), "ep1".into(), 0, 0);
    let mut out = String::new();
    let mut inputs: VecDeque<(u64, Input)> = record.iter().cloned().collect();
    while let Some((now, input)) = inputs.pop_front() {
        out.push_str(&format!("@{now} {input:?}\n"));
        for e in hub.handle(now, input) {
            out.push_str(&format!("  {e:?}\n"));
            // The shell stores every publish at once and reports it stored.
            if let Effect::Store(p) = e {
                inputs.push_front((now, Input::Stored(p)));
            }
        }
    }
    out
}

#[test]
fn a_recorded_session_replays_to_the_recorded_effects() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hub-replay.txt");
    let got = render(&recorded_session());
    assert_eq!(got, render(&recorded_session()), "not deterministic");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap();
    assert!(
        got == want,
        "effects differ from {path}; diff it, then BLESS=1 if intended:\n{got}"
    );
}

/// Idempotency ids are bounded: past the cap the oldest is forgotten (so it
/// may be delivered again within its window), the newest still dedup, and
/// ids restored on wake obey the same cap.
#[test]
fn idempotency_ids_are_capped_oldest_first() {
    use crate::catalogue::MAX_IDEMPOTENCY_IDS;
    let mut fx = Fx::new(0);
    let total = MAX_IDEMPOTENCY_IDS + 150;
    let mut published = 0;
    while published < total {
        let batch: Vec<Value> = (published..(published + 100).min(total))
            .map(|i| json!({"topic": "face", "name": "smile", "id": format!("id-{i}")}))
            .collect();
        published += batch.len();
        fx.publish(batch, 1_000);
    }
    assert_eq!(fx.hub().seq(), total as u64);
    assert_eq!(fx.hub().idempotency_len(), MAX_IDEMPOTENCY_IDS);
    let newest = json!({"topic": "face", "name": "smile", "id": format!("id-{}", total - 1)});
    assert_eq!(
        fx.publish(vec![newest], 2_000).0,
        vec![total as u64],
        "still known"
    );
    let oldest = json!({"topic": "face", "name": "smile", "id": "id-0"});
    assert_eq!(
        fx.publish(vec![oldest], 2_000).0,
        vec![total as u64 + 1],
        "evicted within its window: published again"
    );
    assert_eq!(fx.hub().idempotency_len(), MAX_IDEMPOTENCY_IDS);

    let mut hub = Hub::new(CharacterId::parse("x").unwrap(), "e".into(), 0, 0);
    for i in 0..MAX_IDEMPOTENCY_IDS + 10 {
        hub.restore_idempotency(format!("r{i}"), i as u64 + 1, 5);
    }
    assert_eq!(hub.idempotency_len(), MAX_IDEMPOTENCY_IDS);
}

/// An id that expired and was published again leaves a stale entry in the
/// eviction order; evicting that entry must not forget the live id.
#[test]
fn evicting_a_stale_entry_keeps_the_id_published_again() {
    use crate::catalogue::MAX_IDEMPOTENCY_IDS;
    let mut fx = Fx::new(0);
    let id = |i: usize| json!({"topic": "face", "name": "smile", "id": format!("id-{i}")});
    fx.publish(vec![id(0)], 0);
    let later = IDEMPOTENCY_WINDOW_MS + 1;
    assert_eq!(
        fx.publish(vec![id(0)], later).0,
        vec![2],
        "expired: new seq"
    );
    let mut n = 1;
    while n < MAX_IDEMPOTENCY_IDS {
        let batch: Vec<Value> = (n..(n + 100).min(MAX_IDEMPOTENCY_IDS)).map(id).collect();
        n += batch.len();
        fx.publish(batch, later);
    }
    assert_eq!(fx.hub().idempotency_len(), MAX_IDEMPOTENCY_IDS);
    assert_eq!(fx.publish(vec![id(0)], later).0, vec![2], "still deduped");
}

/// Presence frames go out only while the character has at most
/// MAX_PRESENCE_SOCKETS sockets, joins and leaves alike.
#[test]
fn presence_frames_stop_past_the_socket_bound() {
    use crate::catalogue::MAX_PRESENCE_SOCKETS;
    let mut fx = Fx::new(0);
    let watcher = fx.connect("w", &[">"], true, false);
    for i in 1..MAX_PRESENCE_SOCKETS {
        fx.connect(&format!("c{i}"), &[">"], false, false);
    }
    let joins = |fx: &mut Fx| {
        fx.take(watcher)
            .iter()
            .filter(|f| f["type"] == "presence")
            .map(|f| {
                (
                    f["event"].as_str().unwrap().to_string(),
                    f["count"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let seen = joins(&mut fx);
    assert_eq!(seen.len(), MAX_PRESENCE_SOCKETS - 1);
    assert_eq!(seen.last().unwrap().1, MAX_PRESENCE_SOCKETS as u64);
    let over = fx.connect("over", &[">"], false, false);
    assert!(joins(&mut fx).is_empty(), "no join past the bound");
    fx.gone(over, 0);
    assert!(joins(&mut fx).is_empty(), "no leave from past the bound");
    let last = fx
        .hub()
        .key_of(&format!("c{}", MAX_PRESENCE_SOCKETS - 1))
        .unwrap();
    fx.gone(last, 0);
    assert_eq!(
        joins(&mut fx),
        vec![("leave".to_string(), MAX_PRESENCE_SOCKETS as u64 - 1)]
    );
}

/// A window's frames for a socket too large for one message are split over
/// several `batch` frames, each within MAX_BATCH_FRAME_BYTES, in seq order,
/// still shared by sockets with the same list.
#[test]
fn large_batches_are_split_below_the_message_limit() {
    use crate::catalogue::MAX_BATCH_FRAME_BYTES;
    let mut fx = Fx::new(50);
    let a = fx.connect("a", &[">"], false, false);
    let b = fx.connect("b", &[">"], false, false);
    fx.take(a);
    fx.take(b);
    let text = "x".repeat(15_000);
    for i in 0..25 {
        let batch: Vec<Value> = (0..4)
            .map(|_| json!({"topic": "face", "name": "talk", "params": {"text": text}}))
            .collect();
        fx.publish(batch, 10 + i);
    }
    fx.feed(100, Input::Timeout);
    let sends: Vec<(Vec<ClientKey>, usize)> = fx
        .record
        .last()
        .unwrap()
        .2
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, text } => Some((to.clone(), text.len())),
            _ => None,
        })
        .collect();
    assert!(
        sends.len() >= 3,
        "1.5 MB of frames in {} sends",
        sends.len()
    );
    for (to, len) in &sends {
        assert_eq!(to, &vec![a, b]);
        assert!(*len <= MAX_BATCH_FRAME_BYTES, "{len} bytes");
    }
    assert!(fx.inbox[&a].iter().all(|f| f["type"] == "batch"));
    assert_eq!(fx.seqs(a), (1..=100).collect::<Vec<u64>>());
    assert_eq!(fx.seqs(b), fx.seqs(a));
    // A small window still goes out as one frame.
    fx.publish(vec![c("face", "smile")], 200);
    fx.feed(250, Input::Timeout);
    assert_eq!(fx.record.last().unwrap().2.len(), 1);
}

/// A send the runtime refused is fed back as `Gone { how: Error }`: the
/// socket is closed with 1011, logged once as a socket error, gets nothing
/// more, and its later close event changes nothing.
#[test]
fn a_failed_send_ends_the_socket_once() {
    let mut fx = Fx::new(0);
    let bad = fx.connect("bad", &[">"], false, false);
    let ok = fx.connect("ok", &[">"], true, false);
    fx.take(ok);
    fx.publish(vec![c("face", "smile")], 1);
    fx.feed(
        1,
        Input::Gone {
            client: bad,
            how: Gone::Error,
        },
    );
    assert_eq!(fx.closed.get(&bad), Some(&1011));
    assert_eq!(fx.publish(vec![c("face", "smile")], 2).1, 1, "only `ok`");
    fx.gone(bad, 3);
    assert_eq!(
        fx.disconnects("bad"),
        vec![DisconnectReason::SocketError],
        "logged once"
    );
    assert!(fx.take(ok).iter().any(|f| f["event"] == "leave"));
}

/// The subscriber bound counts connected sockets; a socket that leaves
/// frees its place.
#[test]
fn the_character_is_full_at_its_maximum_of_sockets() {
    let mut fx = Fx::new(0);
    assert!(fx.hub().is_full(0));
    let a = fx.connect("a", &[">"], false, false);
    fx.connect("b", &[">"], false, false);
    assert!(!fx.hub().is_full(3));
    assert!(fx.hub().is_full(2));
    fx.gone(a, 0);
    assert!(!fx.hub().is_full(2));
}

fn stored(seq: u64, topic: &str) -> StoredCommand {
    StoredCommand {
        seq,
        ts: seq * 10,
        command: crate::protocol::parse_command(&c(topic, "step")).unwrap(),
    }
}

/// Relay role: already-stored rows are delivered through the same filters
/// and frames as a commit, once each, without a store, a reply or a publish
/// log; rows at or below the hub's seq are skipped.
#[test]
fn relayed_rows_are_delivered_once_by_filter_without_storing() {
    let mut fx = Fx::with_hub(Hub::new(
        CharacterId::parse("alice").unwrap(),
        "ep1".into(),
        4,
        0,
    ));
    let a = fx.connect("a", &["face"], false, false);
    let b = fx.connect("b", &[">"], false, false);
    fx.take(a);
    fx.take(b);
    let logs_before = fx.logs.len();
    let rows = vec![stored(3, "face"), stored(5, "face"), stored(6, "body")];
    fx.feed(7, Input::Relayed { rows });
    assert_eq!(fx.seqs(a), vec![5]);
    assert_eq!(fx.seqs(b), vec![5, 6]);
    assert_eq!(fx.hub().seq(), 6);
    assert!(fx.replies.is_empty());
    assert_eq!(fx.logs.len(), logs_before, "no publish event on a relay");
    // The same rows again (a re-sent feed) deliver nothing.
    fx.feed(
        8,
        Input::Relayed {
            rows: vec![stored(6, "body")],
        },
    );
    assert_eq!(fx.seqs(b), vec![5, 6]);
    let frame = fx.inbox[&a][0].clone();
    assert_eq!(frame["epoch"], "ep1");
    assert_eq!(frame["character"], "alice");
    assert_eq!(frame["ts"], 50);
}

/// With batching on, relayed rows are batched like committed ones.
#[test]
fn relayed_rows_are_batched_when_batching_is_on() {
    let mut fx = Fx::new(100);
    let a = fx.connect("a", &[">"], false, false);
    fx.take(a);
    fx.feed(
        10,
        Input::Relayed {
            rows: vec![stored(1, "x"), stored(2, "y")],
        },
    );
    assert!(fx.take(a).is_empty());
    assert_eq!(fx.hub().poll_timeout(), Some(110));
    fx.feed(110, Input::Timeout);
    let got = fx.take(a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "batch");
}

/// A resync closes every socket with 1011 (clients resume) and moves the
/// hub to the new epoch and seq.
#[test]
fn resync_closes_every_socket_and_moves_epoch_and_seq() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let b = fx.connect("b", &[">"], false, false);
    fx.feed(
        5,
        Input::Resync {
            epoch: "ep2".into(),
            seq: 40,
        },
    );
    assert_eq!(fx.closed.get(&a), Some(&1011));
    assert_eq!(fx.closed.get(&b), Some(&1011));
    assert_eq!(fx.hub().subscriber_count(), 0);
    assert_eq!(fx.hub().epoch(), "ep2");
    assert_eq!(fx.hub().seq(), 40);
    // Without sockets it only moves.
    fx.feed(
        6,
        Input::Resync {
            epoch: "ep2".into(),
            seq: 41,
        },
    );
    assert_eq!(fx.hub().seq(), 41);
}

fn retained(topic: &str, name: &str) -> Value {
    json!({"topic": topic, "name": name, "retain": true})
}

/// Frames a socket got, as (type, seq, retained) for command frames and
/// the type alone for the rest.
fn shape(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f["type"].as_str() {
            Some("command") => format!("command {} {}", f["seq"], f["retained"]),
            other => other.unwrap_or("?").to_string(),
        })
        .collect()
}

/// A late joiner without `since` gets, right after `welcome`, the retained
/// commands its filters match (the newest per topic, original seq, in seq
/// order, `retained: true`), before presence and any live frame; live
/// frames say `retained: false`.
#[test]
fn a_late_joiner_gets_the_retained_commands_it_matches_after_welcome() {
    let mut fx = Fx::new(0);
    let watcher = fx.connect("w", &[">"], true, false);
    fx.publish(vec![retained("face", "smile"), c("face", "blink")], 1); // 1, 2
    fx.publish(vec![retained("body.arms", "wave")], 2); // 3
    fx.publish(vec![retained("pose", "sit"), retained("face", "frown")], 3); // 4, 5
    fx.publish(vec![c("legs", "kick")], 4); // 6
    let got = fx.take(watcher);
    assert!(got
        .iter()
        .filter(|f| f["type"] == "command")
        .all(|f| f["retained"] == false));
    let late = fx.connect("late", &["face", "body.*"], false, false);
    assert_eq!(
        shape(&fx.take(late)),
        vec!["welcome", "command 3 true", "command 5 true"]
    );
    let all = fx.connect("all", &[">"], false, false);
    let frames = fx.take(all);
    assert_eq!(
        shape(&frames),
        vec![
            "welcome",
            "command 3 true",
            "command 4 true",
            "command 5 true"
        ]
    );
    assert_eq!(frames[3]["name"], "frown");
    assert_eq!(frames[3]["ts"], 3);
    // Presence of the joiner reached the watcher, after its own frames.
    assert_eq!(shape(&fx.take(watcher)), vec!["presence", "presence"]);
    let none = fx.connect("none", &["legs"], false, false);
    assert_eq!(shape(&fx.take(none)), vec!["welcome"]);
    // Live frames after that are plain.
    fx.publish(vec![retained("face", "smile")], 5);
    assert_eq!(shape(&fx.take(late)), vec!["command 7 false"]);
}

/// With `since` the socket gets its replay and `recovered`, not the
/// retained commands; batching never holds retained frames back.
#[test]
fn a_resume_gets_no_retained_frames_and_batching_does_not_delay_them() {
    let mut fx = Fx::new(100);
    fx.publish(vec![retained("face", "smile")], 1);
    let resume = Resume {
        since: 1,
        rows: vec![],
        complete: true,
        next_since: None,
    };
    let info = Fx::info("r", &[">"], false, false);
    let r = fx.connect_with(2, info, None, Some(resume));
    assert_eq!(shape(&fx.take(r)), vec!["welcome", "recovered"]);
    let late = fx.connect("late", &[">"], false, false);
    assert_eq!(shape(&fx.take(late)), vec!["welcome", "command 1 true"]);
}

/// Clearing a topic removes its retained command and moves the revision;
/// a relay's copy is updated by the rows it delivers and forgotten when its
/// stream restarts.
#[test]
fn clears_relayed_rows_and_resyncs_change_the_retained_set() {
    let mut fx = Fx::new(0);
    fx.hub()
        .set_retained(crate::retained::RetainedSet::of_record(vec![], 3));
    fx.publish(vec![retained("face", "smile"), retained("pose", "sit")], 1);
    let face = Topic::parse("face").unwrap();
    fx.feed(
        2,
        Input::ClearRetained {
            topic: face.clone(),
            rev: 4,
        },
    );
    assert_eq!(fx.replies.pop(), Some(Reply::Cleared { cleared: true }));
    fx.feed(
        3,
        Input::ClearRetained {
            topic: face,
            rev: 5,
        },
    );
    assert_eq!(fx.replies.pop(), Some(Reply::Cleared { cleared: false }));
    assert_eq!(fx.hub().retained().rev(), Some(4));
    let late = fx.connect("late", &[">"], false, false);
    assert_eq!(shape(&fx.take(late)), vec!["welcome", "command 2 true"]);
    // Relay role.
    let mut relay = Fx::new(0);
    let mut row = stored(9, "face");
    row.command.retain = true;
    relay.feed(1, Input::Relayed { rows: vec![row] });
    assert_eq!(relay.hub().retained().len(), 1);
    assert_eq!(relay.hub().retained().rev(), None, "not adopted yet");
    relay.feed(
        2,
        Input::Resync {
            epoch: "ep2".into(),
            seq: 20,
        },
    );
    assert!(relay.hub().retained().is_empty());
}

/// Past the bound of retained topics a publish is refused whole (nothing
/// stored, no seq used), over HTTP and in a client frame.
#[test]
fn retaining_more_topics_than_the_bound_is_refused_whole() {
    use crate::catalogue::MAX_RETAINED_TOPICS;
    let mut fx = Fx::new(0);
    let full: Vec<Value> = (0..MAX_RETAINED_TOPICS)
        .map(|i| retained(&format!("t{i}"), "n"))
        .collect();
    fx.publish(full, 1);
    let seq = fx.hub().seq();
    let commands = vec![
        crate::protocol::parse_command(&c("x", "plain")).unwrap(),
        crate::protocol::parse_command(&retained("one-more", "n")).unwrap(),
    ];
    fx.feed(2, Input::Publish { commands });
    match fx.replies.pop() {
        Some(Reply::Refused(e)) => assert_eq!(e.status(), 413),
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.hub().seq(), seq, "nothing stored");
    // Replacing a held topic is fine.
    fx.publish(vec![retained("t0", "again")], 3);
    let p = fx.connect("p", &[">"], false, true);
    fx.take(p);
    fx.frame(
        p,
        r#"{"type":"publish","ref":"r","name":"n","topic":"new","retain":true}"#,
        4,
    );
    let got = fx.take(p);
    assert_eq!(got[0]["type"], "error");
    assert_eq!(got[0]["code"], "payload_too_large");
    assert_eq!(got[0]["ref"], "r");
}

/// Regression: a repeat of a recent `id` stores nothing, so the retained
/// bound does not apply to it. Its topic was cleared and the bound reached
/// again since; the repeat still gets its first answer, not a 413.
#[test]
fn a_repeated_id_is_answered_as_before_even_at_the_retained_bound() {
    use crate::catalogue::MAX_RETAINED_TOPICS;
    let mut fx = Fx::new(0);
    let mut first = retained("x", "n");
    first["id"] = json!("k");
    let (seqs, _) = fx.publish(vec![first.clone()], 1);
    fx.feed(
        2,
        Input::ClearRetained {
            topic: Topic::parse("x").unwrap(),
            rev: 1,
        },
    );
    fx.replies.clear();
    let full: Vec<Value> = (0..MAX_RETAINED_TOPICS)
        .map(|i| retained(&format!("t{i}"), "n"))
        .collect();
    fx.publish(full, 3);
    let seq = fx.hub().seq();
    assert_eq!(fx.publish(vec![first], 4).0, seqs, "the first answer");
    assert_eq!(fx.hub().seq(), seq, "nothing stored");
}
