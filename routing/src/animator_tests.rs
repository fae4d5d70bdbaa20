//! Tests of the `say` animator: the default English rules by category, the
//! timing and dedup rules, rules-file validation and adversarial inputs.

use super::*;
use crate::protocol::ErrorCode;
use proptest::prelude::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// The default rules, compiled once for the whole test binary.
fn default() -> &'static RuleAnimator {
    static A: std::sync::OnceLock<RuleAnimator> = std::sync::OnceLock::new();
    A.get_or_init(|| default_animator().unwrap())
}

fn start_ms(c: &Command) -> u64 {
    c.params.get("start_ms").and_then(Value::as_u64).unwrap()
}

/// (name, topic) of each command, after checking the invariants every
/// output must hold.
fn names(a: &RuleAnimator, text: &str, topic: Option<&str>) -> Vec<(String, String)> {
    let topic = topic.map(|t| Topic::parse(t).unwrap());
    let out = a.animate(text, topic.as_ref()).unwrap();
    check_output(&out, text);
    out.iter()
        .map(|c| (c.name.as_str().to_owned(), c.topic.as_str().to_owned()))
        .collect()
}

fn check_output(out: &[Command], text: &str) {
    assert!(!out.is_empty() && out.len() <= MAX_BATCH, "{}", out.len());
    assert_eq!(out[0].name.as_str(), TALK_COMMAND);
    assert_eq!(out[0].params["text"], json!(text.trim()));
    assert_eq!(start_ms(&out[0]), 0);
    let mut prev = 0;
    for c in out {
        let s = start_ms(c);
        assert!(s >= prev, "start_ms not monotone: {out:?}");
        prev = s;
        assert!(u64::from(c.duration_ms.unwrap_or(0)) <= MAX_DURATION_MS);
        assert!(CommandName::parse(c.name.as_str()).is_ok());
        assert!(Topic::parse(c.topic.as_str()).is_ok());
        let size = command_json_len(c.topic.as_str(), c.name.as_str(), &c.params, c.duration_ms);
        assert!(size <= MAX_COMMAND_BYTES);
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect()
}

const TALK: (&str, &str) = ("talk", "mouth");

#[test]
fn default_rules_load() {
    let a = default();
    let names: Vec<&str> = a.rule_names().collect();
    for n in [
        "laughter",
        "emoji_smile",
        "emoji_frown",
        "emoji_wink",
        "emoji_heart",
        "thanks",
        "apology",
        "greeting",
        "farewell",
        "surprise",
        "agreement",
        "negation",
        "question",
        "exclamation",
        "positive",
        "negative",
    ] {
        assert!(names.contains(&n), "missing rule {n}");
    }
    assert_eq!(a.len(), 16);
    assert!(!a.is_empty());
}

#[test]
fn default_rules_table() {
    let a = default();
    let table: &[(&str, &[(&str, &str)])] = &[
        // greetings
        ("Hello there", &[TALK, ("wave", "body")]),
        ("hi", &[TALK, ("wave", "body")]),
        ("Hey you", &[TALK, ("wave", "body")]),
        ("good morning", &[TALK, ("wave", "body")]),
        ("Good   Evening", &[TALK, ("wave", "body")]),
        ("👋", &[TALK, ("wave", "body")]),
        // farewells
        ("bye", &[TALK, ("wave", "body")]),
        ("Goodbye for now", &[TALK, ("wave", "body")]),
        ("see you soon", &[TALK, ("wave", "body")]),
        ("take care", &[TALK, ("wave", "body")]),
        ("See you!", &[TALK, ("wave", "body"), ("bounce", "body")]),
        ("see ya", &[TALK, ("wave", "body")]),
        ("nice to see you again", &[TALK, ("smile", "face")]),
        ("take care of it", &[TALK]),
        // laughter
        ("haha", &[TALK, ("laugh", "face")]),
        ("lol", &[TALK, ("laugh", "face")]),
        ("LMAO", &[TALK, ("laugh", "face")]),
        ("😂", &[TALK, ("laugh", "face")]),
        ("🤣", &[TALK, ("laugh", "face")]),
        // questions and exclamations (sentence scope)
        ("How are you?", &[TALK, ("head_tilt", "head")]),
        (
            "Really?!",
            &[TALK, ("head_tilt", "head"), ("bounce", "body")],
        ),
        ("What a day!", &[TALK, ("bounce", "body")]),
        ("Whoa!!!", &[TALK, ("surprise", "face"), ("bounce", "body")]),
        // agreement / negation
        ("yes", &[TALK, ("nod", "head")]),
        ("Yeah", &[TALK, ("nod", "head")]),
        ("sure", &[TALK, ("nod", "head")]),
        ("absolutely", &[TALK, ("nod", "head")]),
        ("agreed", &[TALK, ("nod", "head")]),
        ("right", &[TALK, ("nod", "head")]),
        ("no", &[TALK, ("shake_head", "head")]),
        ("nope", &[TALK, ("shake_head", "head")]),
        ("never", &[TALK, ("shake_head", "head")]),
        ("not really", &[TALK, ("shake_head", "head")]),
        // thanks: smile + nod
        ("thanks", &[TALK, ("smile", "face"), ("nod", "head")]),
        ("Thank you", &[TALK, ("smile", "face"), ("nod", "head")]),
        ("thx", &[TALK, ("smile", "face"), ("nod", "head")]),
        // apologies
        ("sorry", &[TALK, ("bow_head", "head")]),
        ("apologies", &[TALK, ("bow_head", "head")]),
        ("my bad", &[TALK, ("bow_head", "head")]),
        // emoticons and emoji
        (":)", &[TALK, ("smile", "face")]),
        (":-)", &[TALK, ("smile", "face")]),
        ("😊", &[TALK, ("smile", "face")]),
        ("🙂", &[TALK, ("smile", "face")]),
        (":(", &[TALK, ("frown", "face")]),
        ("😢", &[TALK, ("frown", "face")]),
        (";)", &[TALK, ("wink", "face")]),
        ("😉", &[TALK, ("wink", "face")]),
        ("<3", &[TALK, ("heart", "face")]),
        ("❤️", &[TALK, ("heart", "face")]),
        // positive / negative words
        ("great", &[TALK, ("smile", "face")]),
        ("I love it", &[TALK, ("smile", "face")]),
        ("awesome", &[TALK, ("smile", "face")]),
        ("so happy", &[TALK, ("smile", "face")]),
        ("wonderful", &[TALK, ("smile", "face")]),
        ("sad", &[TALK, ("frown", "face")]),
        ("I hate rain", &[TALK, ("frown", "face")]),
        ("terrible", &[TALK, ("frown", "face")]),
        ("awful", &[TALK, ("frown", "face")]),
        ("angry", &[TALK, ("frown", "face")]),
        // nothing
        ("The weather report", &[TALK]),
    ];
    for (text, want) in table {
        assert_eq!(names(a, text, None), pairs(want), "text {text:?}");
    }
}

#[test]
fn case_insensitive() {
    let a = default();
    for t in ["HELLO", "hElLo", "THANK YOU", "NOPE", "HaHa", "GREAT"] {
        assert!(names(a, t, None).len() >= 2, "{t:?}");
    }
}

#[test]
fn word_boundaries() {
    let a = default();
    for t in [
        "this",
        "know",
        "nobody",
        "think",
        "whistle",
        "notice",
        "shine",
        "yesterday",
        "byte",
        "sadness",
        "greater",
        "knowledge",
        "hello_world",
        "cool_down",
        "ship",
        "ohio",
    ] {
        assert_eq!(names(a, t, None), pairs(&[TALK]), "{t:?}");
    }
    // Boundaries at punctuation still count.
    assert_eq!(names(a, "(hi)", None), pairs(&[TALK, ("wave", "body")]));
    assert_eq!(
        names(a, "no,", None),
        pairs(&[TALK, ("shake_head", "head")])
    );
    // 3.14 and example.com are not sentence ends.
    assert_eq!(names(a, "pi is 3.14", None), pairs(&[TALK]));
}

#[test]
fn multiple_sentences_in_order() {
    let a = default();
    let got = names(a, "Hi! How are you? I am great.\nBye", None);
    assert_eq!(
        got,
        pairs(&[
            TALK,
            ("wave", "body"),
            ("bounce", "body"),
            ("head_tilt", "head"),
            ("smile", "face"),
            ("wave", "body"),
        ])
    );
}

#[test]
fn timing() {
    let a = default();
    // 300 ms floor.
    let out = a.animate("hi", None).unwrap();
    assert_eq!(out[0].duration_ms, Some(300));
    assert_eq!(start_ms(&out[1]), 0);
    // 60 ms a character, start proportional to the character offset.
    let text = format!("{}hello", "x ".repeat(45)); // 95 chars, hello at 90
    let out = a.animate(&text, None).unwrap();
    assert_eq!(out[0].duration_ms, Some(95 * 60));
    assert_eq!(start_ms(&out[1]), 90 * 60);
    // Emoji count as one character each.
    let out = a.animate("😊😊😊😊 hi", None).unwrap();
    assert_eq!(out[0].duration_ms, Some(7 * 60));
    let wave = out.iter().find(|c| c.name.as_str() == "wave").unwrap();
    assert_eq!(start_ms(wave), 5 * 60);
    // Clamped to 600000 for long text; starts stay inside the talk.
    let long = format!("{} bye", "a ".repeat(5500));
    let out = a.animate(&long, None).unwrap();
    assert_eq!(out[0].duration_ms, Some(600_000));
    assert!(start_ms(&out[1]) < 600_000);
    // Rule params are kept and start_ms added.
    let out = a.animate("hello", None).unwrap();
    assert_eq!(
        out[1].params,
        *json!({"style": "hello", "start_ms": 0})
            .as_object()
            .unwrap()
    );
    assert_eq!(out[1].duration_ms, Some(1200));
    assert_eq!(out[1].id, None);
}

#[test]
fn trimmed_text_in_talk() {
    let a = default();
    let out = a.animate("  \n hello \t", None).unwrap();
    assert_eq!(out[0].params["text"], json!("hello"));
    assert_eq!(out[0].topic.as_str(), "mouth");
}

#[test]
fn topic_scheme() {
    let a = default();
    // The request topic takes talk; pinned gestures keep their topics.
    assert_eq!(
        names(a, "hello", Some("npc.voice")),
        pairs(&[("talk", "npc.voice"), ("wave", "body")])
    );
    // A rule command without topic goes to the request topic, else main.
    let custom = RuleAnimator::from_json(
        r#"{"rules":[{"name":"r","pattern":"x","commands":[{"name":"blink"}]}]}"#,
    )
    .unwrap();
    assert_eq!(names(&custom, "x", None), pairs(&[TALK, ("blink", "main")]));
    assert_eq!(
        names(&custom, "x", Some("eyes")),
        pairs(&[("talk", "eyes"), ("blink", "eyes")])
    );
    // The talk topic is configurable.
    let custom = RuleAnimator::from_json(
        r#"{"talk":{"topic":"voice","ms_per_char":10,"min_ms":0},
            "rules":[{"name":"r","pattern":"x","commands":[{"name":"blink"}]}]}"#,
    )
    .unwrap();
    let out = custom.animate("ab", None).unwrap();
    assert_eq!(out[0].topic.as_str(), "voice");
    assert_eq!(out[0].duration_ms, Some(20));
}

#[test]
fn dedup_by_priority_and_overlap() {
    let rules = r#"{"rules":[
        {"name":"low","pattern":"a","priority":1,
         "commands":[{"name":"smile","topic":"face","duration_ms":1000,"params":{"from":"low"}}]},
        {"name":"high","pattern":"b","priority":5,
         "commands":[{"name":"smile","topic":"face","duration_ms":1000,"params":{"from":"high"}}]},
        {"name":"other_topic","pattern":"a","commands":[{"name":"smile","topic":"head"}]}
    ]}"#;
    let a = RuleAnimator::from_json(rules).unwrap();
    // "ab": a at 0 ms, b at 150 ms: overlapping, high wins; other topic kept.
    let out = a.animate("ab", None).unwrap();
    let from: Vec<_> = out
        .iter()
        .filter(|c| c.topic.as_str() == "face")
        .map(|c| c.params["from"].clone())
        .collect();
    assert_eq!(from, vec![json!("high")]);
    assert!(out.iter().any(|c| c.topic.as_str() == "head"));
    // Far apart: both kept (60 ms a char, 40 chars between).
    let text = format!("a{}b", " ".repeat(40));
    let out = a.animate(&text, None).unwrap();
    assert_eq!(out.iter().filter(|c| c.topic.as_str() == "face").count(), 2);
    // Same rule, repeated words close together: the overlapping repeats go.
    let out = default().animate("hi hi hi hi", None).unwrap();
    assert_eq!(out.iter().filter(|c| c.name.as_str() == "wave").count(), 1);
}

#[test]
fn max_per_text_and_batch_cap() {
    let a = RuleAnimator::from_json(
        r#"{"rules":[{"name":"w","pattern":"\\w+","commands":[
            {"name":"a","duration_ms":0,"max_per_text":3},{"name":"b","duration_ms":0}]}]}"#,
    )
    .unwrap();
    let out = a.animate("one two three four five", None).unwrap();
    assert_eq!(out.iter().filter(|c| c.name.as_str() == "a").count(), 3);
    assert_eq!(out.iter().filter(|c| c.name.as_str() == "b").count(), 5);
    // 500 words: capped at 100 commands, talk first, highest priority kept.
    let cap = RuleAnimator::from_json(
        r#"{"rules":[
            {"name":"words","pattern":"\\w+","priority":1,"commands":[{"name":"w","duration_ms":0}]},
            {"name":"zed","pattern":"zed","priority":9,"commands":[{"name":"z","duration_ms":0}]}]}"#,
    )
    .unwrap();
    let text = format!("{} zed", "word ".repeat(500));
    let out = cap.animate(&text, None).unwrap();
    check_output(&out, &text);
    assert_eq!(out.len(), MAX_BATCH);
    assert_eq!(out.last().unwrap().name.as_str(), "z");
}

#[test]
fn empty_and_too_long() {
    let a = default();
    for t in ["", "   ", "\n\t \r\n"] {
        let e = a.animate(t, None).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{t:?}");
        assert!(e.message.contains("empty"), "{}", e.message);
    }
    let e = a.animate(&"a".repeat(MAX_SAY_BYTES + 1), None).unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    assert!(e.message.contains("16384"), "{}", e.message);
    // Exactly 16 KiB fits the text limit but not the 16 KiB command limit.
    let e = a.animate(&"a".repeat(MAX_SAY_BYTES), None).unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    assert!(e.message.contains("talk"), "{}", e.message);
    // Escaping counts: 4000 quotes is 8000+ bytes of JSON, still fine...
    assert!(a.animate(&"\"".repeat(4000), None).is_ok());
    // ...but 8000 of them is over.
    let e = a.animate(&"\"".repeat(8200), None).unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    // Surrounding whitespace is trimmed before the size check.
    let padded = format!("  {}  ", "a".repeat(16_000));
    assert!(a.animate(&padded, None).is_ok());
}

#[test]
fn deterministic() {
    let a = default();
    let t = "Hi!! haha, thanks :) sorry... no? yes! bye 😂❤️";
    let first = a.animate(t, None).unwrap();
    for _ in 0..5 {
        assert_eq!(a.animate(t, None).unwrap(), first);
    }
    assert_eq!(default_animator().unwrap().animate(t, None).unwrap(), first);
}

#[test]
fn sentence_split() {
    let s = split_sentences("Hi!  How are you?\nFine... pi is 3.14 ok.  ");
    assert_eq!(
        s,
        vec![
            (0, "Hi!"),
            (5, "How are you?"),
            (18, "Fine..."),
            (26, "pi is 3.14 ok.")
        ]
    );
    assert_eq!(split_sentences("  \n\n "), vec![]);
    assert_eq!(split_sentences("why?!😊 yes"), vec![(0, "why?!😊 yes")]);
    assert_eq!(split_sentences("a\r\nb"), vec![(0, "a"), (3, "b")]);
}

fn rules_err(json: &str) -> RulesError {
    RuleAnimator::from_json(json).unwrap_err()
}

fn one_rule(rule: &str) -> String {
    format!(r#"{{"rules":[{{"name":"ok","pattern":"x","commands":[{{"name":"a"}}]}},{rule}]}}"#)
}

#[test]
fn invalid_rule_files() {
    let cases: &[(String, &str)] = &[
        ("not json".to_owned(), "malformed"),
        ("[]".to_owned(), "malformed"),
        (r#"{"rules":[]}"#.to_owned(), "must not be empty"),
        (
            r#"{"rules":[], "extra": 1}"#.to_owned(),
            "unknown field `extra`",
        ),
        (
            r#"{"talk":{"speed":1},"rules":[]}"#.to_owned(),
            "unknown field `speed`",
        ),
        (
            one_rule(r#"{"name":"bad","pattern":"(unclosed","commands":[{"name":"a"}]}"#),
            "bad regex",
        ),
        (
            one_rule(r#"{"name":"big","pattern":"\\w{1000}{1000}","commands":[{"name":"a"}]}"#),
            "bad regex",
        ),
        (
            one_rule(r#"{"name":"prop","pattern":"\\p{Greek}","commands":[{"name":"a"}]}"#),
            "bad regex",
        ),
        (
            one_rule(r#"{"name":"s","pattern":"x","scope":"word","commands":[{"name":"a"}]}"#),
            "unknown scope \"word\"",
        ),
        (
            one_rule(
                r#"{"name":"d","pattern":"x","commands":[{"name":"a","duration_ms":600001}]}"#,
            ),
            "duration_ms",
        ),
        (
            one_rule(r#"{"name":"d","pattern":"x","commands":[{"name":"a","duration_ms":-1}]}"#),
            "duration_ms",
        ),
        (
            one_rule(r#"{"name":"d","pattern":"x","commands":[{"name":"a","duration_ms":1.5}]}"#),
            "duration_ms",
        ),
        (
            one_rule(r#"{"name":"n","pattern":"x","commands":[{"name":"bad name"}]}"#),
            "invalid command name",
        ),
        (
            one_rule(r#"{"name":"t","pattern":"x","commands":[{"name":"a","topic":"Face"}]}"#),
            "invalid topic",
        ),
        (
            one_rule(r#"{"name":"p","pattern":"x","commands":[{"name":"a","params":[1]}]}"#),
            "`params` must be a JSON object",
        ),
        (
            one_rule(
                r#"{"name":"p","pattern":"x","commands":[{"name":"a","params":{"start_ms":1}}]}"#,
            ),
            "reserved",
        ),
        (
            one_rule(r#"{"name":"u","pattern":"x","regex":"y","commands":[{"name":"a"}]}"#),
            "unknown field `regex`",
        ),
        (
            one_rule(r#"{"name":"u","pattern":"x","commands":[{"name":"a","dur":1}]}"#),
            "unknown field `dur`",
        ),
        (
            one_rule(r#"{"name":"ok","pattern":"y","commands":[{"name":"a"}]}"#),
            "duplicate rule name",
        ),
        (
            one_rule(r#"{"name":"e","pattern":"x","commands":[]}"#),
            "`commands` must not be empty",
        ),
        (
            one_rule(r#"{"name":"","pattern":"x","commands":[{"name":"a"}]}"#),
            "`name`",
        ),
        (
            one_rule(r#"{"pattern":"x","commands":[{"name":"a"}]}"#),
            "missing field `name`",
        ),
        (
            one_rule(r#"{"name":"m","pattern":"x","commands":[{"name":"a","max_per_text":0}]}"#),
            "max_per_text",
        ),
        (one_rule(r#""just a string""#), "JSON object"),
    ];
    for (json, want) in cases {
        let e = rules_err(json);
        let msg = e.to_string();
        assert!(msg.contains(want), "{json}: {msg}");
        assert!(msg.starts_with("invalid say rules: "), "{msg}");
        if json.contains("\"ok\",\"pattern\":\"x\"") && !json.contains("\"ok\",\"pattern\":\"y\"") {
            // The second rule is the bad one: the error says which.
            assert_eq!(e.index, Some(1), "{msg}");
            assert!(msg.contains("rules[1]"), "{msg}");
        }
    }
    // Duplicate names point at the second occurrence and the first.
    let e = rules_err(&one_rule(
        r#"{"name":"ok","pattern":"y","commands":[{"name":"a"}]}"#,
    ));
    assert_eq!((e.index, e.name.as_deref()), (Some(1), Some("ok")));
    assert!(e.to_string().contains("rules[0]"));
    // An escaped backslash before `p` is a literal, not a property class.
    assert!(RuleAnimator::from_json(&one_rule(
        r#"{"name":"lit","pattern":"\\\\p","commands":[{"name":"a"}]}"#
    ))
    .is_ok());
    // A bad talk section.
    assert!(rules_err(
        r#"{"talk":{"topic":"A"},"rules":[{"name":"r","pattern":"x","commands":[{"name":"a"}]}]}"#
    )
    .to_string()
    .contains("talk.topic"));
    assert!(rules_err(r#"{"talk":{"ms_per_char":0},"rules":[{"name":"r","pattern":"x","commands":[{"name":"a"}]}]}"#)
        .to_string()
        .contains("ms_per_char"));
    // Oversized params are refused at load, so animate never emits them.
    let big = "x".repeat(MAX_COMMAND_BYTES);
    let e = rules_err(&format!(
        r#"{{"rules":[{{"name":"b","pattern":"x","commands":[{{"name":"a","params":{{"k":"{big}"}}}}]}}]}}"#
    ));
    assert!(e.to_string().contains("command limit"), "{e}");
    // Too many rules.
    let many: Vec<String> = (0..=MAX_RULES)
        .map(|i| format!(r#"{{"name":"r{i}","pattern":"x","commands":[{{"name":"a"}}]}}"#))
        .collect();
    let e = rules_err(&format!(r#"{{"rules":[{}]}}"#, many.join(",")));
    assert!(e.to_string().contains("at most"), "{e}");
}

fn assert_fast(a: &RuleAnimator, text: &str) {
    let t0 = Instant::now();
    let r = a.animate(text, None);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    if let Ok(out) = r {
        check_output(&out, text);
    }
}

#[test]
fn adversarial_inputs_finish_quickly() {
    let a = default();
    let just_under = |unit: &str| {
        let mut s = unit.repeat(MAX_SAY_BYTES / unit.len());
        s.truncate(MAX_SAY_BYTES - 200);
        s
    };
    for text in [
        "a".repeat(MAX_SAY_BYTES),
        just_under("a"),
        just_under("hi "),
        just_under("hi! "),
        just_under("?"),
        just_under("😂"),
        just_under("ha"),
        just_under(":) "),
        just_under("no, "),
    ] {
        assert_fast(a, &text);
    }
    // Catastrophic-backtracking shapes in a custom file: linear in Rust regex.
    let evil = RuleAnimator::from_json(
        r#"{"rules":[
            {"name":"n1","pattern":"(a+)+$","commands":[{"name":"x"}]},
            {"name":"n2","pattern":"(a|aa)*b","commands":[{"name":"x"}]},
            {"name":"n3","pattern":"(a*)*c","scope":"sentence","commands":[{"name":"x"}]},
            {"name":"n4","pattern":"(?i)(\\w+\\s?)*$","commands":[{"name":"x"}]},
            {"name":"n5","pattern":"(.*a){12}","commands":[{"name":"x"}]},
            {"name":"e","pattern":"","commands":[{"name":"y"},{"name":"z"}]}
        ]}"#,
    )
    .unwrap();
    for text in [
        just_under("a"),
        format!("{}!", just_under("a")),
        just_under("aaaa "),
        just_under("a. "),
    ] {
        assert_fast(&evil, &text);
    }
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "hi", "hello", "bye", "haha", "lol", "yes", "no", "nope", "thanks", "sorry", "great",
            "sad", ":)", ":(", ";)", "<3", "😂", "😊", "❤️", "?", "!", ".", "\n", "this", "know",
            "3.14", "…", "\"", "wow",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z]{1,8}",
        ".{0,4}",
    ]
}

proptest! {
    #[test]
    fn animate_never_panics(words in prop::collection::vec(word(), 0..60), sep in prop::sample::select(vec![" ", "", "  ", "\n"])) {
        let a = default();
        let text = words.join(sep);
        match a.animate(&text, None) {
            Ok(out) => check_output(&out, &text),
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::PayloadTooLarge)),
        }
        let topic = Topic::parse("npc.say").unwrap();
        if let Ok(out) = a.animate(&text, Some(&topic)) {
            check_output(&out, &text);
            prop_assert_eq!(out[0].topic.as_str(), "npc.say");
        }
    }

    #[test]
    fn animate_arbitrary_text(text in "\\PC{0,300}") {
        let a = default();
        if let Ok(out) = a.animate(&text, None) {
            check_output(&out, &text);
        }
    }
}
