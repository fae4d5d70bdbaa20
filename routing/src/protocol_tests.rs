//! Tests of the wire protocol: body and frame parsing, error mapping, and
//! the shape of every server frame.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn cmd(v: Value) -> Result<Command, ApiError> {
    parse_command(&v)
}

fn code_of<T>(r: Result<T, ApiError>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code,
    }
}

#[test]
fn error_codes_and_statuses() {
    let table = [
        (ErrorCode::BadRequest, "bad_request", 400),
        (ErrorCode::Unauthorized, "unauthorized", 401),
        (ErrorCode::Forbidden, "forbidden", 403),
        (ErrorCode::NotFound, "not_found", 404),
        (ErrorCode::MethodNotAllowed, "method_not_allowed", 405),
        (ErrorCode::PayloadTooLarge, "payload_too_large", 413),
        (ErrorCode::UpgradeRequired, "upgrade_required", 426),
        (ErrorCode::RateLimited, "rate_limited", 429),
        (ErrorCode::Internal, "internal", 500),
        (ErrorCode::HistoryBacklog, "history_backlog", 503),
        (ErrorCode::CharacterFull, "character_full", 503),
        (ErrorCode::BadMessage, "bad_message", 400),
    ];
    for (c, s, st) in table {
        assert_eq!((c.as_str(), c.status()), (s, st));
    }
    let e = ApiError::not_found("no \"such\" client");
    assert_eq!(e.status(), 404);
    assert_eq!(
        e.body(),
        r#"{"error":{"code":"not_found","message":"no \"such\" client"}}"#
    );
    let e: ApiError = crate::topic::Topic::parse("A").unwrap_err().into();
    assert_eq!(e.code, ErrorCode::BadRequest);
}

#[test]
fn command_defaults_and_fields() {
    let c = cmd(json!({"name": "smile"})).unwrap();
    assert_eq!(c.topic.as_str(), "main");
    assert!(c.params.is_empty());
    assert_eq!((c.duration_ms, c.id), (None, None));
    let c = cmd(
        json!({"topic": "face", "name": "smile", "params": {"intensity": 0.8},
        "duration_ms": 500, "id": "k1", "extra": [1]}),
    )
    .unwrap();
    assert_eq!(c.topic.as_str(), "face");
    assert_eq!(c.params.get("intensity"), Some(&json!(0.8)));
    assert_eq!(c.duration_ms, Some(500));
    assert_eq!(c.id.as_deref(), Some("k1"));
    let c =
        cmd(json!({"name": "x", "params": null, "duration_ms": null, "id": null, "topic": null}))
            .unwrap();
    assert_eq!(c.topic.as_str(), "main");
    assert!(cmd(json!({"name": "x", "duration_ms": 600000})).is_ok());
    assert!(cmd(json!({"name": "x", "duration_ms": 0})).is_ok());
    assert!(cmd(json!({"name": "x", "id": "é".repeat(64)})).is_ok());
}

#[test]
fn retain_is_an_optional_boolean() {
    assert!(!cmd(json!({"name": "a"})).unwrap().retain);
    assert!(!cmd(json!({"name": "a", "retain": null})).unwrap().retain);
    assert!(!cmd(json!({"name": "a", "retain": false})).unwrap().retain);
    assert!(cmd(json!({"name": "a", "retain": true})).unwrap().retain);
    for bad in [json!(1), json!("true"), json!([]), json!({})] {
        let e = cmd(json!({"name": "a", "retain": bad})).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("retain"), "{}", e.message);
    }
    // Batches and client frames take it too.
    let batch = parse_publish_body(br#"{"commands":[{"name":"a","retain":true},{"name":"b"}]}"#);
    let retain: Vec<bool> = batch.unwrap().iter().map(|c| c.retain).collect();
    assert_eq!(retain, vec![true, false]);
    match parse_client_frame(r#"{"type":"publish","name":"a","retain":true}"#) {
        Ok(ClientFrame::Publish { command, .. }) => assert!(command.retain),
        other => panic!("{other:?}"),
    }
}

#[test]
fn command_wrong_types_name_the_field() {
    let table = [
        (json!([]), "object"),
        (json!({}), "name"),
        (json!({"name": 3}), "name"),
        (json!({"name": "a b"}), "command name"),
        (json!({"name": "x", "topic": 1}), "topic"),
        (json!({"name": "x", "topic": "A"}), "topic"),
        (json!({"name": "x", "params": []}), "params"),
        (json!({"name": "x", "duration_ms": -1}), "duration_ms"),
        (json!({"name": "x", "duration_ms": 1.5}), "duration_ms"),
        (json!({"name": "x", "duration_ms": "5"}), "duration_ms"),
        (json!({"name": "x", "duration_ms": 600001}), "duration_ms"),
        (json!({"name": "x", "id": ""}), "id"),
        (json!({"name": "x", "id": 5}), "id"),
        (json!({"name": "x", "id": "a".repeat(65)}), "id"),
    ];
    for (v, field) in table {
        let e = cmd(v.clone()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{v}");
        assert!(e.message.contains(field), "{v}: {}", e.message);
    }
    let big = json!({"name": "x", "params": {"s": "a".repeat(MAX_COMMAND_BYTES)}});
    assert_eq!(code_of(cmd(big)), ErrorCode::PayloadTooLarge);
}

#[test]
fn publish_bodies() {
    assert_eq!(parse_publish_body(br#"{"name":"smile"}"#).unwrap().len(), 1);
    let two =
        parse_publish_body(br#"{"commands":[{"name":"a"},{"name":"b","topic":"face"}]}"#).unwrap();
    assert_eq!(two[1].topic.as_str(), "face");
    let e = parse_publish_body(b"{nope").unwrap_err();
    assert!(e.message.starts_with("malformed JSON: "), "{}", e.message);
    assert_eq!(code_of(parse_publish_body(b"[1]")), ErrorCode::BadRequest);
    assert_eq!(
        code_of(parse_publish_body(br#"{"commands":[]}"#)),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(parse_publish_body(br#"{"commands":{}}"#)),
        ErrorCode::BadRequest
    );
    let many = json!({"commands": vec![json!({"name": "a"}); 101]}).to_string();
    assert_eq!(
        code_of(parse_publish_body(many.as_bytes())),
        ErrorCode::PayloadTooLarge
    );
    let hundred = json!({"commands": vec![json!({"name": "a"}); 100]}).to_string();
    assert_eq!(parse_publish_body(hundred.as_bytes()).unwrap().len(), 100);
    let e = parse_publish_body(br#"{"commands":[{"name":"a"},{"name":1}]}"#).unwrap_err();
    assert!(e.message.starts_with("commands[1]: "), "{}", e.message);
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(
        code_of(parse_publish_body(&huge)),
        ErrorCode::PayloadTooLarge
    );
}

#[test]
fn broadcast_bodies() {
    let (chars, c) =
        parse_broadcast_body(br#"{"characters":["a","b","a"],"name":"wave"}"#).unwrap();
    assert_eq!(
        chars.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(c.name.as_str(), "wave");
    assert_eq!(
        code_of(parse_broadcast_body(br#"{"name":"wave"}"#)),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(parse_broadcast_body(br#"{"characters":[],"name":"w"}"#)),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(parse_broadcast_body(br#"{"characters":[1],"name":"w"}"#)),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(parse_broadcast_body(
            br#"{"characters":["a b"],"name":"w"}"#
        )),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(parse_broadcast_body(br#"{"characters":["a"]}"#)),
        ErrorCode::BadRequest
    );
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let body = json!({"characters": many, "name": "w"}).to_string();
    assert_eq!(
        code_of(parse_broadcast_body(body.as_bytes())),
        ErrorCode::PayloadTooLarge
    );
}

fn ferr(text: &str) -> FrameError {
    parse_client_frame(text).unwrap_err()
}

#[test]
fn client_frames() {
    let f =
        parse_client_frame(r#"{"type":"subscribe","topics":["face","body.*","face"],"ref":"r"}"#)
            .unwrap();
    let ClientFrame::Subscribe { topics, r#ref } = f else {
        panic!()
    };
    assert_eq!(topics.len(), 2);
    assert_eq!(r#ref.as_deref(), Some("r"));
    assert!(matches!(
        parse_client_frame(r#"{"type":"unsubscribe","topics":["face"]}"#).unwrap(),
        ClientFrame::Unsubscribe { r#ref: None, .. }
    ));
    let f = parse_client_frame(r#"{"type":"publish","ref":"r1","name":"smile","topic":"face"}"#)
        .unwrap();
    let ClientFrame::Publish { command, r#ref } = f else {
        panic!()
    };
    assert_eq!(
        (command.name.as_str(), r#ref.as_deref()),
        ("smile", Some("r1"))
    );
}

#[test]
fn client_frame_errors() {
    let table: [(&str, ErrorCode, Option<&str>); 13] = [
        ("ping", ErrorCode::BadMessage, None),
        ("[]", ErrorCode::BadMessage, None),
        (r#"{"topics":["a"]}"#, ErrorCode::BadMessage, None),
        (
            r#"{"type":"dance","ref":"x"}"#,
            ErrorCode::BadMessage,
            Some("x"),
        ),
        (r#"{"type":5,"ref":"x"}"#, ErrorCode::BadMessage, Some("x")),
        (
            r#"{"type":"subscribe","ref":7,"topics":["a"]}"#,
            ErrorCode::BadMessage,
            None,
        ),
        (
            r#"{"type":"subscribe","ref":"x","topics":["a..b"]}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
        (
            r#"{"type":"subscribe","ref":"x","topics":[]}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
        (
            r#"{"type":"subscribe","ref":"x"}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
        (
            r#"{"type":"subscribe","ref":"x","topics":[1]}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
        (
            r#"{"type":"unsubscribe","ref":"x","topics":"a"}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
        (
            r#"{"type":"publish","ref":"x"}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
        (
            r#"{"type":"publish","ref":"x","name":"a","duration_ms":-5}"#,
            ErrorCode::BadRequest,
            Some("x"),
        ),
    ];
    for (text, code, r) in table {
        let e = ferr(text);
        assert_eq!((e.code, e.r#ref.as_deref()), (code, r), "{text}");
    }
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let text = json!({"type": "subscribe", "topics": many}).to_string();
    assert_eq!(ferr(&text).code, ErrorCode::BadRequest);
    let text =
        json!({"type": "publish", "name": "a", "params": {"s": "a".repeat(MAX_FRAME_BYTES)}})
            .to_string();
    assert_eq!(ferr(&text).code, ErrorCode::PayloadTooLarge);
    // A frame within 16 KiB always holds a command within 16 KiB (the
    // command is the frame minus `type`/`ref`), so only the frame limit bites.
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn server_frames_have_contract_fields() {
    let ch = CharacterId::parse("alice").unwrap();
    let c = cmd(
        json!({"topic": "face", "name": "smile", "params": {"i": 1}, "duration_ms": 5, "id": "k"}),
    )
    .unwrap();
    let f = command_frame_json(&ch, "ep", 7, 99, &c);
    assert!(f.starts_with(r#"{"type":"command","#), "{f}");
    assert_eq!(
        parse(&f),
        json!({"type": "command", "character": "alice", "topic": "face", "seq": 7, "epoch": "ep",
            "ts": 99, "at": null, "name": "smile", "params": {"i": 1}, "duration_ms": 5, "id": "k",
            "retained": false})
    );
    // A retained command's frame differs only in `retained`.
    let mut r = parse(&f);
    r["retained"] = json!(true);
    assert_eq!(parse(&retained_frame_json(&ch, "ep", 7, 99, &c)), r);
    let c2 = cmd(json!({"name": "wave", "at": 1_700_000_000_500u64})).unwrap();
    let f2 = command_frame_json(&ch, "ep", 8, 100, &c2);
    assert_eq!(parse(&f2)["duration_ms"], Value::Null);
    assert_eq!(parse(&f2)["id"], Value::Null);
    // `at` sits beside `ts`.
    assert!(f2.contains(r#""ts":100,"at":1700000000500,"#), "{f2}");
    let b = batch_frame_json(&ch, &[&f, &f2]);
    assert_eq!(
        parse(&b),
        json!({"type": "batch", "character": "alice", "commands": [parse(&f), parse(&f2)]})
    );
    let topics = vec![TopicFilter::all()];
    assert_eq!(
        parse(&welcome_frame_json("c1", &ch, "ep", 3, &topics)),
        json!({"type": "welcome", "client_id": "c1", "character": "alice", "epoch": "ep", "seq": 3, "topics": [">"]})
    );
    assert_eq!(
        parse(&recovered_frame_json(2, 9, false, None)),
        json!({"type": "recovered", "since": 2, "seq": 9, "complete": false, "truncated": false})
    );
    assert_eq!(
        parse(&recovered_frame_json(0, 9000, true, Some(1000))),
        json!({"type": "recovered", "since": 0, "seq": 9000, "complete": true, "truncated": true, "next_since": 1000})
    );
    assert_eq!(
        parse(&subscribed_frame_json(&topics)),
        json!({"type": "subscribed", "topics": [">"]})
    );
    assert_eq!(
        parse(&published_frame_json(4, None)),
        json!({"type": "published", "seq": 4, "ref": null})
    );
    assert_eq!(
        parse(&presence_frame_json(
            PresenceEvent::Leave,
            "c1",
            Some("u"),
            2
        )),
        json!({"type": "presence", "event": "leave", "client_id": "c1", "user": "u", "count": 2})
    );
    assert_eq!(
        parse(&error_frame_json(ErrorCode::Forbidden, "no", Some("r"))),
        json!({"type": "error", "code": "forbidden", "message": "no", "ref": "r"})
    );
}

proptest! {
    #[test]
    fn client_frame_parser_never_panics(s in ".{0,200}") {
        let _ = parse_client_frame(&s);
    }

    #[test]
    fn client_frame_json_shapes_never_panic(
        ty in prop::sample::select(vec!["subscribe", "unsubscribe", "publish", "x"]),
        r in prop::option::of(".{0,10}"),
        name in ".{0,10}",
        topics in prop::collection::vec("[a-z*>.]{0,6}", 0..4),
        dur in any::<i64>(),
    ) {
        let v = json!({"type": ty, "ref": r, "name": name, "topics": topics, "duration_ms": dur});
        if let Err(e) = parse_client_frame(&v.to_string()) {
            if ty != "x" { prop_assert_eq!(e.r#ref, r); }
        }
    }

    #[test]
    fn frames_round_trip(
        cid in "[ -~]{0,20}", msg in "\\PC{0,30}", r in prop::option::of("\\PC{0,10}"),
        seq in any::<u64>(), ts in any::<u64>(), count in any::<usize>(), key in "[a-z]{1,5}", val in any::<i64>(),
    ) {
        let ch = CharacterId::parse("npc-7").unwrap();
        let mut params = Map::new();
        params.insert(key.clone(), json!(val));
        let c = Command { topic: Topic::main(), name: CommandName::parse("n").unwrap(), params,
            duration_ms: Some(1), id: r.clone(), at: Some(ts / 2), retain: false };
        let f = parse(&command_frame_json(&ch, &cid, seq, ts, &c));
        prop_assert_eq!(&f["epoch"], &json!(cid));
        prop_assert_eq!(&f["seq"], &json!(seq));
        prop_assert_eq!(&f["ts"], &json!(ts));
        prop_assert_eq!(&f["at"], &json!(ts / 2));
        prop_assert_eq!(&f["params"][&key], &json!(val));
        prop_assert_eq!(&f["id"], &json!(r));
        let e = parse(&error_frame_json(ErrorCode::BadMessage, &msg, r.as_deref()));
        prop_assert_eq!(e, json!({"type": "error", "code": "bad_message", "message": msg, "ref": r}));
        let p = parse(&presence_frame_json(PresenceEvent::Join, &cid, r.as_deref(), count));
        prop_assert_eq!(p, json!({"type": "presence", "event": "join", "client_id": cid, "user": r, "count": count}));
        let p = parse(&published_frame_json(seq, r.as_deref()));
        prop_assert_eq!(p, json!({"type": "published", "seq": seq, "ref": r}));
    }
}
