//! Fuzz targets for every parser that sees untrusted input: client frames
//! (through the hub, as a socket would send them), topic filters, names,
//! publish and broadcast bodies, query strings and JWTs. Each target checks
//! that nothing panics and that what is accepted is within the contract's
//! limits. `make test` runs a few thousand inputs per target; set
//! `FUZZ_CASES` for long runs (docs/reliability.md records one of a million).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use routing::auth::verify_jwt;
use routing::hub::{ClientInfo, Effect, Hub, Input};
use routing::protocol::{
    parse_broadcast_body, parse_client_frame, parse_publish_body, MAX_BATCH, MAX_COMMAND_BYTES,
};
use routing::query::{parse_history_query, parse_subscribe_query};
use routing::topic::{CharacterId, CommandName, Topic, TopicFilter};
use serde_json::{json, Map, Value};

fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Strings biased towards the alphabets the parsers care about.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_.*>-]{0,40}",
        "[A-Za-z0-9_.:* -]{0,80}",
        "(\\.|\\*|>|[a-z]{1,3}){0,12}",
    ]
}

/// Arbitrary JSON, with the field names of the protocol showing up often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        (0u64..700_000).prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            Just("type".to_string()),
            Just("topics".to_string()),
            Just("topic".to_string()),
            Just("name".to_string()),
            Just("params".to_string()),
            Just("duration_ms".to_string()),
            Just("id".to_string()),
            Just("ref".to_string()),
            Just("commands".to_string()),
            Just("characters".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Client frames: mostly well-typed shapes with random contents.
fn frame() -> impl Strategy<Value = String> {
    let typed = (
        prop_oneof![
            Just("subscribe"),
            Just("unsubscribe"),
            Just("publish"),
            Just("other")
        ],
        json_value(),
    )
        .prop_map(|(t, v)| {
            let mut obj = match v {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("topics".into(), other);
                    m
                }
            };
            obj.insert("type".into(), json!(t));
            Value::Object(obj).to_string()
        });
    prop_oneof![
        3 => typed,
        1 => json_value().prop_map(|v| v.to_string()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_frames_through_the_hub(frames in prop::collection::vec(frame(), 1..12)) {
        let mut hub = Hub::new(CharacterId::parse("fuzz").unwrap(), "e".into(), 0, 0);
        let info = ClientInfo {
            client_id: "c1".into(),
            user: None,
            topics: vec![TopicFilter::all()],
            presence: true,
            connected_at: 0,
            can_publish: true,
        };
        let key = 1;
        let connect = Input::Connect { client: key, info, expires_at: None, resume: None };
        let _ = hub.handle(0, connect);
        for (i, f) in frames.iter().enumerate() {
            let _ = parse_client_frame(f);
            let text = Input::Text { client: key, text: f.clone() };
            for effect in hub.handle(i as u64, text) {
                if let Effect::Store(pending) = effect {
                    prop_assert!(pending.seqs.len() == 1);
                    let _ = hub.handle(i as u64, Input::Stored(pending));
                }
            }
            if let Some(c) = hub.client(key) {
                prop_assert!(c.topics.len() <= 32);
            }
        }
    }

    #[test]
    fn topic_filters_and_names(s in text(), t in text()) {
        let filter = TopicFilter::parse(&s);
        let topic = Topic::parse(&t);
        if let (Ok(f), Ok(t)) = (&filter, &topic) {
            let _ = f.matches(t);
            prop_assert!(f.as_str().split('.').count() <= 4);
        }
        if let Ok(t) = &topic {
            prop_assert!(TopicFilter::parse(t.as_str()).unwrap().matches(t));
        }
        if let Ok(c) = CharacterId::parse(&s) {
            prop_assert!((1..=64).contains(&c.as_str().len()));
        }
        if let Ok(n) = CommandName::parse(&s) {
            prop_assert!((1..=64).contains(&n.as_str().len()));
        }
    }

    #[test]
    fn publish_and_broadcast_bodies(v in json_value(), raw in any::<Vec<u8>>()) {
        let body = v.to_string();
        for bytes in [body.as_bytes(), raw.as_slice()] {
            if let Ok(cmds) = parse_publish_body(bytes) {
                prop_assert!((1..=MAX_BATCH).contains(&cmds.len()));
                for c in &cmds {
                    let size = json!({"topic": c.topic.as_str(), "name": c.name.as_str(), "params": c.params}).to_string().len();
                    prop_assert!(size <= MAX_COMMAND_BYTES + 64);
                }
            }
            if let Ok((chars, _cmd)) = parse_broadcast_body(bytes) {
                prop_assert!((1..=MAX_BATCH).contains(&chars.len()));
            }
        }
    }

    #[test]
    fn query_strings(pairs in prop::collection::vec(
        (prop_oneof![Just("topics"), Just("since"), Just("epoch"), Just("presence"), Just("token"), Just("limit"), Just("x")], text()),
        0..6,
    )) {
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if let Ok(q) = parse_subscribe_query(&pairs) {
            prop_assert!(!q.topics.is_empty() && q.topics.len() <= 32);
        }
        if let Ok(h) = parse_history_query(&pairs) {
            prop_assert!((1..=1000).contains(&h.limit));
        }
    }

    #[test]
    fn jwts(s in any::<String>(), parts in prop::collection::vec("[A-Za-z0-9_-]{0,60}", 0..5)) {
        let dotted = parts.join(".");
        for token in [s.as_str(), dotted.as_str()] {
            // Random input never verifies against a real secret.
            prop_assert!(verify_jwt(token, b"fuzz-secret", 1_700_000_000).is_err());
        }
    }

    #[test]
    fn mutated_valid_jwts(pos in any::<prop::sample::Index>(), ch in "[A-Za-z0-9_.=+/-]", secret_flip in any::<bool>()) {
        let secret = b"fuzz-secret";
        let claims = json!({"sub": "u1", "exp": 2_000_000_000u64, "role": "admin"});
        let good = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        ).unwrap();
        prop_assert!(verify_jwt(&good, secret, 1_700_000_000).is_ok());
        let mut bytes = good.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = ch.as_bytes()[0];
        let mutated = String::from_utf8(bytes).unwrap();
        let key: &[u8] = if secret_flip { b"other-secret" } else { secret };
        match verify_jwt(&mutated, key, 1_700_000_000) {
            // Only a change that decodes to the same bytes (base64's unused
            // trailing bits) may still verify, and then to the same claims.
            Ok(c) => prop_assert!(!secret_flip && c.sub == "u1"),
            Err(e) => prop_assert_eq!(e.status(), 401),
        }
    }
}
