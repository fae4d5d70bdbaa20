//! Tests of the hub, through a fixture that applies effects to in-memory
//! per-socket inboxes the way the Worker shell would.

use super::*;
use crate::topic::Topic;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Default)]
struct Fx {
    hub: Option<Hub>,
    inbox: BTreeMap<ClientKey, Vec<Value>>,
    closed: BTreeMap<ClientKey, u16>,
    saved: Vec<ClientKey>,
    flush_at: Vec<u64>,
}

impl Fx {
    fn new(window: u64) -> Fx {
        let hub = Hub::new(
            CharacterId::parse("alice").unwrap(),
            "ep1".into(),
            0,
            window,
        );
        Fx {
            hub: Some(hub),
            ..Fx::default()
        }
    }
    fn hub(&mut self) -> &mut Hub {
        self.hub.as_mut().unwrap()
    }
    fn apply(&mut self, effects: Vec<Effect>) {
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
                    self.closed.insert(client, code);
                }
                Effect::SaveClient { client } => self.saved.push(client),
                Effect::ScheduleFlush { at_ms } => self.flush_at.push(at_ms),
            }
        }
    }
    fn connect(
        &mut self,
        id: &str,
        topics: &[&str],
        presence: bool,
        can_publish: bool,
    ) -> ClientKey {
        let info = ClientInfo {
            client_id: id.into(),
            user: Some(format!("u-{id}")),
            topics: topics
                .iter()
                .map(|t| TopicFilter::parse(t).unwrap())
                .collect(),
            presence,
            connected_at: 1,
            can_publish,
        };
        let (k, effects) = self.hub().connect(info, 0);
        self.apply(effects);
        k
    }
    fn publish(&mut self, cmds: Vec<Value>, now: u64) -> (Vec<u64>, usize) {
        let cmds: Vec<Command> = cmds
            .iter()
            .map(|c| crate::protocol::parse_command(c).unwrap())
            .collect();
        let plan = self.hub().plan_publish(cmds, now);
        let (delivered, effects) = self.hub().commit_publish(&plan, now);
        self.apply(effects);
        (plan.seqs, delivered)
    }
    fn frame(&mut self, k: ClientKey, text: &str, now: u64) {
        match self.hub().handle_frame(k, text, now) {
            FrameOutcome::Effects(e) => self.apply(e),
            FrameOutcome::Publish { plan, r#ref } => {
                let e = self
                    .hub()
                    .commit_client_publish(k, &plan, r#ref.as_deref(), now);
                self.apply(e);
            }
        }
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
}

fn c(topic: &str, name: &str) -> Value {
    json!({"topic": topic, "name": name})
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
    let e = fx.hub().disconnect(b);
    fx.apply(e);
    assert_eq!(
        fx.take(a),
        vec![
            json!({"type": "presence", "event": "leave", "client_id": "b", "user": "u-b", "count": 1})
        ]
    );
    assert!(fx.hub().disconnect(b).is_empty());
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
    let plan = fx.hub().plan_publish(vec![cmd.clone()], 0);
    assert_eq!(plan.seqs, vec![1]);
    drop(plan);
    assert_eq!(fx.hub().seq(), 0);
    assert_eq!(fx.hub().plan_publish(vec![cmd], 0).seqs, vec![1]);
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
fn replay_filters_and_reports_completeness() {
    let mut fx = Fx::new(0);
    let hub = Hub::new(CharacterId::parse("alice").unwrap(), "ep1".into(), 5, 0);
    fx.hub = Some(hub);
    let a = fx.connect("a", &["face"], false, false);
    fx.take(a);
    let row = |seq: u64, topic: &str| StoredCommand {
        seq,
        ts: seq * 10,
        command: crate::protocol::parse_command(&c(topic, "n")).unwrap(),
    };
    let rows = vec![row(3, "face"), row(4, "body"), row(5, "face")];
    let e = fx.hub().replay(a, 2, Some("ep1"), &rows, Some(1));
    fx.apply(e);
    assert_eq!(fx.seqs(a), vec![3, 5]);
    assert_eq!(
        fx.take(a).last().unwrap(),
        &json!({"type": "recovered", "since": 2, "seq": 5, "complete": true})
    );
    let complete = |fx: &mut Fx, since, epoch, oldest| {
        let e = fx.hub().replay(a, since, epoch, &[], oldest);
        fx.apply(e);
        fx.take(a).last().unwrap()["complete"].as_bool().unwrap()
    };
    assert!(!complete(&mut fx, 2, Some("ep1"), Some(4)));
    assert!(complete(&mut fx, 3, Some("ep1"), Some(4)));
    assert!(complete(&mut fx, 5, Some("ep1"), None));
    assert!(!complete(&mut fx, 6, Some("ep1"), None));
    assert!(complete(&mut fx, 2, None, Some(1)));
    assert!(!complete(&mut fx, 5, Some("old"), Some(1)));
    // Epoch changed: every stored row is replayed, since notwithstanding.
    let e = fx.hub().replay(a, 9, Some("old"), &rows, Some(3));
    fx.apply(e);
    assert_eq!(fx.seqs(a), vec![3, 5]);
    assert!(fx.hub().replay(99, 0, None, &rows, None).is_empty());
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

#[test]
fn bad_frames_get_errors_then_close() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let w = fx.connect("w", &[">"], true, false);
    fx.take(a);
    fx.take(w);
    fx.frame(a, "nope", 0);
    assert_eq!(fx.take(a)[0]["code"], "bad_message");
    let e = fx.hub().handle_binary(a);
    fx.apply(e);
    assert_eq!(fx.take(a)[0]["message"], "binary frames are not supported");
    // A good frame resets the consecutive count.
    fx.frame(a, r#"{"type":"subscribe","topics":["x"]}"#, 0);
    for _ in 0..9 {
        fx.frame(a, r#"{"type":"what","ref":"q"}"#, 0);
    }
    assert!(!fx.closed.contains_key(&a));
    fx.frame(a, r#"{"type":"what","ref":"q"}"#, 0);
    assert_eq!(fx.closed.get(&a), Some(&CLOSE_BAD_FRAMES));
    assert!(fx.hub().client(a).is_none());
    assert_eq!(fx.take(w)[0]["event"], "leave");
}

#[test]
fn kick_closes_with_4010() {
    let mut fx = Fx::new(0);
    let a = fx.connect("a", &[">"], false, false);
    let e = fx.hub().kick("a").unwrap();
    fx.apply(e);
    assert_eq!(fx.closed.get(&a), Some(&CLOSE_BY_ADMIN));
    assert!(fx.hub().kick("a").is_none());
}

#[test]
fn batching_groups_per_client_and_schedules_once() {
    let mut fx = Fx::new(50);
    let a = fx.connect("a", &[">"], false, false);
    let b = fx.connect("b", &[">"], false, false);
    let d = fx.connect("d", &["face"], false, false);
    let gone = fx.connect("g", &[">"], false, false);
    for k in [a, b, d, gone] {
        fx.take(k);
    }
    assert_eq!(fx.publish(vec![c("face", "smile")], 100).1, 4);
    assert_eq!(fx.publish(vec![c("body", "wave")], 120).1, 3);
    assert_eq!(fx.flush_at, vec![150]);
    assert!(fx.inbox.is_empty(), "nothing sent before the flush");
    let e = fx.hub().disconnect(gone);
    fx.apply(e);
    let effects = fx.hub().flush(150);
    assert_eq!(effects.len(), 2, "a and b share one send; d has its own");
    assert!(matches!(&effects[0], Effect::Send { to, .. } if to == &vec![a, b]));
    fx.apply(effects);
    assert_eq!(fx.inbox[&a].len(), 1);
    assert_eq!(fx.inbox[&a][0]["type"], "batch");
    assert_eq!(fx.seqs(a), vec![1, 2]);
    assert_eq!(fx.seqs(d), vec![1]);
    assert!(fx.seqs(gone).is_empty());
    assert!(fx.hub().flush(200).is_empty());
    fx.publish(vec![c("face", "x")], 300);
    assert_eq!(fx.flush_at, vec![150, 350]);
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
    let k = hub.restore_client(info.clone());
    assert_eq!(hub.client(k), Some(&info));
    assert_eq!(hub.clients().count(), 1);
    assert_eq!(
        (hub.seq(), hub.epoch(), hub.character().as_str()),
        (3, "e", "x")
    );
}

#[derive(Clone, Debug)]
enum Op {
    Connect(Vec<usize>),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(Vec<(usize, Option<u8>)>),
    Disconnect(usize),
    Flush,
    Wait(u64),
}

const FILTERS: &[&str] = &[">", "a", "a.*", "*.b", "a.>", "b", "*"];
const TOPICS: &[&str] = &["a", "b", "a.b", "b.b", "a.a.c", "main"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec(0..FILTERS.len(), 0..3).prop_map(Op::Connect),
        (0usize..8, 0..FILTERS.len()).prop_map(|(c, f)| Op::Subscribe(c, f)),
        (0usize..8, 0..FILTERS.len()).prop_map(|(c, f)| Op::Unsubscribe(c, f)),
        prop::collection::vec((0..TOPICS.len(), prop::option::of(0u8..4)), 1..4)
            .prop_map(Op::Publish),
        (0usize..8).prop_map(Op::Disconnect),
        Just(Op::Flush),
        (0u64..200_000).prop_map(Op::Wait),
    ]
}

fn run_model(window: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut fx = Fx::new(window);
    let mut now = 0u64;
    let mut live: Vec<ClientKey> = Vec::new();
    let mut filters: BTreeMap<ClientKey, BTreeSet<&str>> = BTreeMap::new();
    let mut expected: BTreeMap<ClientKey, Vec<u64>> = BTreeMap::new();
    let mut queued: BTreeMap<ClientKey, Vec<u64>> = BTreeMap::new();
    let mut ids: HashMap<u8, (u64, u64)> = HashMap::new();
    let mut seq = 0u64;
    for (n, o) in ops.into_iter().enumerate() {
        match o {
            Op::Connect(fs) => {
                let names: Vec<&str> = fs.iter().map(|i| FILTERS[*i]).collect();
                let k = fx.connect(&format!("c{n}"), &names, false, false);
                live.push(k);
                filters.insert(k, names.into_iter().collect());
            }
            Op::Subscribe(i, f) | Op::Unsubscribe(i, f) if !live.is_empty() => {
                let k = live[i % live.len()];
                let sub = matches!(o, Op::Subscribe(..));
                let t = if sub { "subscribe" } else { "unsubscribe" };
                fx.frame(
                    k,
                    &json!({"type": t, "topics": [FILTERS[f]]}).to_string(),
                    now,
                );
                let set = filters.entry(k).or_default();
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
                        if let Some((s, ts)) = ids.get(&id) {
                            if now - ts < IDEMPOTENCY_WINDOW_MS {
                                want_seqs.push(*s);
                                values.push(v);
                                continue;
                            }
                        }
                    }
                    seq += 1;
                    if let Some(id) = id {
                        ids.insert(id, (seq, now));
                    }
                    want_seqs.push(seq);
                    let topic = Topic::parse(TOPICS[t]).unwrap();
                    for (k, fs) in &filters {
                        if fs
                            .iter()
                            .any(|f| TopicFilter::parse(f).unwrap().matches(&topic))
                        {
                            let target = if window > 0 {
                                &mut queued
                            } else {
                                &mut expected
                            };
                            target.entry(*k).or_default().push(seq);
                        }
                    }
                    values.push(v);
                }
                let (seqs, _) = fx.publish(values, now);
                prop_assert_eq!(seqs, want_seqs);
            }
            Op::Disconnect(i) if !live.is_empty() => {
                let k = live.remove(i % live.len());
                let e = fx.hub().disconnect(k);
                fx.apply(e);
                filters.remove(&k);
                queued.remove(&k);
            }
            Op::Flush => {
                let e = fx.hub().flush(now);
                fx.apply(e);
                for (k, s) in std::mem::take(&mut queued) {
                    expected.entry(k).or_default().extend(s);
                }
            }
            Op::Wait(ms) => now += ms,
            _ => {}
        }
    }
    let e = fx.hub().flush(now);
    fx.apply(e);
    for (k, s) in std::mem::take(&mut queued) {
        expected.entry(k).or_default().extend(s);
    }
    let keys: BTreeSet<ClientKey> = fx.inbox.keys().chain(expected.keys()).copied().collect();
    for k in keys {
        let got = fx.seqs(k);
        prop_assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "not strictly increasing: {:?}",
            got
        );
        let want = expected.get(&k).cloned().unwrap_or_default();
        prop_assert_eq!(got, want, "client {}", k);
    }
    Ok(())
}

proptest! {
    #[test]
    fn delivery_matches_brute_force(ops in prop::collection::vec(op(), 0..40)) {
        run_model(0, ops)?;
    }

    #[test]
    fn batched_delivery_matches_brute_force(ops in prop::collection::vec(op(), 0..40)) {
        run_model(25, ops)?;
    }
}
