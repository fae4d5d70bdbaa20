//! Tests of JWT verification, API keys and the authorization table.

use super::*;
use crate::protocol::ErrorCode;
use jsonwebtoken::{encode, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;

const SECRET: &[u8] = b"test-secret-0123456789";
const NOW: u64 = 1_700_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn tok_alg(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn tok(claims: &Value) -> String {
    tok_alg(Algorithm::HS256, claims, SECRET)
}

fn sign_hs256(msg: &str, secret: &[u8]) -> String {
    jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap()
}

/// A token with an arbitrary header, signed HS256 with `secret` over the
/// header and payload as given (so only the header's `alg` is a lie).
fn hand_made(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{msg}.{}", sign_hs256(&msg, secret))
}

fn base() -> Value {
    json!({"sub": "user-1", "exp": NOW + 3600})
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v.as_object_mut().unwrap().insert(k.to_owned(), x);
    v
}

fn without(mut v: Value, k: &str) -> Value {
    v.as_object_mut().unwrap().remove(k);
    v
}

fn ch(s: &str) -> CharacterId {
    CharacterId::parse(s).unwrap()
}

fn exact(s: &str) -> CharPattern {
    CharPattern::Exact(s.to_owned())
}

fn prefix(s: &str) -> CharPattern {
    CharPattern::Prefix(s.to_owned())
}

/// Expected outcome of `verify_jwt`: the claims, or a 401 whose message
/// contains the given text.
enum Want {
    Ok(Claims),
    Err(&'static str),
}

fn claims(role: Role, chars: Option<Vec<CharPattern>>) -> Claims {
    Claims {
        sub: "user-1".into(),
        role,
        chars,
        exp: NOW + 3600,
        nbf: None,
    }
}

#[test]
fn verify_jwt_table() {
    let none_header = json!({"alg": "none", "typ": "JWT"});
    let none_tok = format!(
        "{}.{}.",
        b64(none_header.to_string().as_bytes()),
        b64(base().to_string().as_bytes())
    );
    let hs256_sig = tok(&base());
    let sig = hs256_sig.rsplit('.').next().unwrap().to_owned();
    let rows: Vec<(&str, String, &[u8], Want)> = vec![
        (
            "valid",
            tok(&base()),
            SECRET,
            Want::Ok(claims(Role::Subscriber, None)),
        ),
        (
            "wrong secret",
            tok_alg(Algorithm::HS256, &base(), b"other-secret"),
            SECRET,
            Want::Err("bad signature"),
        ),
        (
            "HS384",
            tok_alg(Algorithm::HS384, &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "HS512",
            tok_alg(Algorithm::HS512, &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg none, empty sig",
            none_tok.clone(),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg none, real sig",
            format!("{none_tok}{sig}"),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg None",
            hand_made(&json!({"alg": "None"}), &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg hs256 lowercase",
            hand_made(&json!({"alg": "hs256"}), &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg RS256",
            hand_made(&json!({"alg": "RS256", "typ": "JWT"}), &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg ES256",
            hand_made(&json!({"alg": "ES256"}), &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "alg EdDSA",
            hand_made(&json!({"alg": "EdDSA"}), &base(), SECRET),
            SECRET,
            Want::Err("algorithm not allowed"),
        ),
        (
            "no alg",
            hand_made(&json!({"typ": "JWT"}), &base(), SECRET),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "alg not a string",
            hand_made(&json!({"alg": 256}), &base(), SECRET),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "hand-made HS256 ok",
            hand_made(&json!({"alg": "HS256"}), &base(), SECRET),
            SECRET,
            Want::Ok(claims(Role::Subscriber, None)),
        ),
        (
            "empty secret",
            tok_alg(Algorithm::HS256, &base(), b""),
            b"",
            Want::Err("not configured"),
        ),
        (
            "empty string",
            String::new(),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "garbage",
            "not a token".into(),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "garbage 3 parts",
            "a.b.c".into(),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "two segments",
            hs256_sig.rsplit_once('.').unwrap().0.to_owned(),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "four segments",
            format!("{hs256_sig}.x"),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "header not json",
            format!(
                "{}.{}.{sig}",
                b64(b"{nope"),
                b64(base().to_string().as_bytes())
            ),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "payload not json",
            hand_made_raw_payload(b"[1,2"),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "payload not object",
            hand_made_raw_payload(b"[1,2]"),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "bad sig encoding",
            format!("{}.!!!", hs256_sig.rsplit_once('.').unwrap().0),
            SECRET,
            Want::Err("malformed"),
        ),
        (
            "too long",
            format!("{}.{}.x", "a".repeat(MAX_TOKEN_BYTES), "b"),
            SECRET,
            Want::Err("too long"),
        ),
        (
            "expired",
            tok(&with(base(), "exp", json!(NOW - 1))),
            SECRET,
            Want::Err("expired"),
        ),
        (
            "exp == now",
            tok(&with(base(), "exp", json!(NOW))),
            SECRET,
            Want::Err("expired"),
        ),
        (
            "exp == now + 1",
            tok(&with(base(), "exp", json!(NOW + 1))),
            SECRET,
            Want::Ok(Claims {
                exp: NOW + 1,
                ..claims(Role::Subscriber, None)
            }),
        ),
        (
            "exp 0",
            tok(&with(base(), "exp", json!(0))),
            SECRET,
            Want::Err("expired"),
        ),
        (
            "exp fraction floors",
            tok(&with(base(), "exp", json!(NOW as f64 + 0.5))),
            SECRET,
            Want::Err("expired"),
        ),
        (
            "exp as string",
            tok(&with(base(), "exp", json!((NOW + 3600).to_string()))),
            SECRET,
            Want::Err("exp must be"),
        ),
        (
            "exp negative",
            tok(&with(base(), "exp", json!(-1))),
            SECRET,
            Want::Err("exp must be"),
        ),
        (
            "exp null",
            tok(&with(base(), "exp", Value::Null)),
            SECRET,
            Want::Err("missing exp"),
        ),
        (
            "missing exp",
            tok(&without(base(), "exp")),
            SECRET,
            Want::Err("missing exp"),
        ),
        (
            "missing sub",
            tok(&without(base(), "sub")),
            SECRET,
            Want::Err("missing sub"),
        ),
        (
            "sub empty",
            tok(&with(base(), "sub", json!(""))),
            SECRET,
            Want::Err("sub must be"),
        ),
        (
            "sub number",
            tok(&with(base(), "sub", json!(7))),
            SECRET,
            Want::Err("sub must be"),
        ),
        (
            "nbf future",
            tok(&with(base(), "nbf", json!(NOW + 1))),
            SECRET,
            Want::Err("not yet valid"),
        ),
        (
            "nbf == now",
            tok(&with(base(), "nbf", json!(NOW))),
            SECRET,
            Want::Ok(Claims {
                nbf: Some(NOW),
                ..claims(Role::Subscriber, None)
            }),
        ),
        (
            "nbf past",
            tok(&with(base(), "nbf", json!(NOW - 10))),
            SECRET,
            Want::Ok(Claims {
                nbf: Some(NOW - 10),
                ..claims(Role::Subscriber, None)
            }),
        ),
        (
            "nbf fraction ceils",
            tok(&with(base(), "nbf", json!(NOW as f64 - 0.5))),
            SECRET,
            Want::Ok(Claims {
                nbf: Some(NOW),
                ..claims(Role::Subscriber, None)
            }),
        ),
        (
            "nbf string",
            tok(&with(base(), "nbf", json!("soon"))),
            SECRET,
            Want::Err("nbf must be"),
        ),
        (
            "role publisher",
            tok(&with(base(), "role", json!("publisher"))),
            SECRET,
            Want::Ok(claims(Role::Publisher, None)),
        ),
        (
            "role admin",
            tok(&with(base(), "role", json!("admin"))),
            SECRET,
            Want::Ok(claims(Role::Admin, None)),
        ),
        (
            "role subscriber",
            tok(&with(base(), "role", json!("subscriber"))),
            SECRET,
            Want::Ok(claims(Role::Subscriber, None)),
        ),
        (
            "role null",
            tok(&with(base(), "role", Value::Null)),
            SECRET,
            Want::Ok(claims(Role::Subscriber, None)),
        ),
        (
            "role root",
            tok(&with(base(), "role", json!("root"))),
            SECRET,
            Want::Err("role must be"),
        ),
        (
            "role Admin (case)",
            tok(&with(base(), "role", json!("Admin"))),
            SECRET,
            Want::Err("role must be"),
        ),
        (
            "role number",
            tok(&with(base(), "role", json!(3))),
            SECRET,
            Want::Err("role must be"),
        ),
        (
            "chars exact+prefix",
            tok(&with(base(), "chars", json!(["alice", "npc-*", "*"]))),
            SECRET,
            Want::Ok(claims(
                Role::Subscriber,
                Some(vec![exact("alice"), prefix("npc-"), prefix("")]),
            )),
        ),
        (
            "chars empty list",
            tok(&with(base(), "chars", json!([]))),
            SECRET,
            Want::Ok(claims(Role::Subscriber, Some(vec![]))),
        ),
        (
            "chars null",
            tok(&with(base(), "chars", Value::Null)),
            SECRET,
            Want::Ok(claims(Role::Subscriber, None)),
        ),
        (
            "chars a*b",
            tok(&with(base(), "chars", json!(["alice", "a*b"]))),
            SECRET,
            Want::Err("invalid chars pattern"),
        ),
        (
            "chars **",
            tok(&with(base(), "chars", json!(["**"]))),
            SECRET,
            Want::Err("invalid chars pattern"),
        ),
        (
            "chars *x",
            tok(&with(base(), "chars", json!(["*x"]))),
            SECRET,
            Want::Err("invalid chars pattern"),
        ),
        (
            "chars empty string",
            tok(&with(base(), "chars", json!([""]))),
            SECRET,
            Want::Err("invalid chars pattern"),
        ),
        (
            "chars bad name",
            tok(&with(base(), "chars", json!(["a b"]))),
            SECRET,
            Want::Err("invalid chars pattern"),
        ),
        (
            "chars number item",
            tok(&with(base(), "chars", json!([1]))),
            SECRET,
            Want::Err("invalid chars pattern"),
        ),
        (
            "chars string",
            tok(&with(base(), "chars", json!("alice"))),
            SECRET,
            Want::Err("chars must be"),
        ),
        (
            "extra claims ignored",
            tok(&with(
                with(base(), "aud", json!("elsewhere")),
                "iat",
                json!(1),
            )),
            SECRET,
            Want::Ok(claims(Role::Subscriber, None)),
        ),
    ];
    for (name, token, secret, want) in rows {
        let got = verify_jwt(&token, secret, NOW);
        match (want, got) {
            (Want::Ok(w), Ok(g)) => assert_eq!(w, g, "{name}"),
            (Want::Err(w), Err(e)) => {
                assert_eq!(e.code, ErrorCode::Unauthorized, "{name}");
                assert_eq!(e.status(), 401, "{name}");
                assert!(e.message.contains(w), "{name}: {:?} lacks {w:?}", e.message);
                let secret_str = String::from_utf8_lossy(SECRET);
                assert!(!e.message.contains(&*secret_str), "{name}: echoes secret");
            }
            (Want::Ok(_), Err(e)) => panic!("{name}: want Ok, got {e:?}"),
            (Want::Err(w), Ok(g)) => panic!("{name}: want error {w:?}, got {g:?}"),
        }
    }
}

fn hand_made_raw_payload(payload: &[u8]) -> String {
    let msg = format!(
        "{}.{}",
        b64(json!({"alg": "HS256"}).to_string().as_bytes()),
        b64(payload)
    );
    format!("{msg}.{}", sign_hs256(&msg, SECRET))
}

#[test]
fn char_pattern_parse_and_match() {
    let rows: &[(&str, Option<CharPattern>)] = &[
        ("alice", Some(exact("alice"))),
        ("npc-*", Some(prefix("npc-"))),
        ("*", Some(prefix(""))),
        ("a*b", None),
        ("*a", None),
        ("**", None),
        ("a**", None),
        ("", None),
        ("a.b", None),
    ];
    for (s, want) in rows {
        assert_eq!(&CharPattern::parse(s), want, "{s}");
    }
    assert!(exact("alice").matches(&ch("alice")));
    assert!(!exact("alice").matches(&ch("alice2")));
    assert!(!exact("alice").matches(&ch("Alice")));
    assert!(prefix("npc-").matches(&ch("npc-1")));
    assert!(!prefix("npc-").matches(&ch("npc")));
    assert!(!prefix("npc-").matches(&ch("NPC-1")));
    assert!(prefix("").matches(&ch("anyone")));
    assert!(prefix("").is_wildcard() && !prefix("a").is_wildcard());
}

#[test]
fn role_serde_and_order() {
    assert!(Role::Subscriber < Role::Publisher && Role::Publisher < Role::Admin);
    for r in [Role::Subscriber, Role::Publisher, Role::Admin] {
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, format!("\"{}\"", r.as_str()));
        assert_eq!(serde_json::from_str::<Role>(&s).unwrap(), r);
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert!(serde_json::from_str::<Role>("\"root\"").is_err());
}

#[derive(Clone, Copy, Debug)]
enum Res {
    Ok,
    E401,
    E403,
}

/// Character column of the authorize table.
#[derive(Clone, Copy, Debug)]
enum Chars {
    /// `chars` absent.
    Absent,
    /// `chars: ["alice", "npc-*"]`; the character is inside.
    In,
    /// Same grant; the character is outside.
    Out,
    /// Same grant; no character (`None`).
    NoneRestricted,
    /// `chars` absent; no character.
    NoneAbsent,
    /// `chars: ["*"]`; no character.
    NoneWildcard,
}

fn check(name: &str, got: Result<(), ApiError>, want: Res) {
    match (want, got) {
        (Res::Ok, Ok(())) => {}
        (Res::E401, Err(e)) if e.status() == 401 && e.code == ErrorCode::Unauthorized => {}
        (Res::E403, Err(e)) if e.status() == 403 && e.code == ErrorCode::Forbidden => {}
        (w, g) => panic!("{name}: want {w:?}, got {g:?}"),
    }
}

#[test]
fn authorize_table() {
    use Action::*;
    use Chars::*;
    use Role::{Admin as Adm, Publisher as Pub, Subscriber as Sub};
    let restricted = Some(vec![exact("alice"), prefix("npc-")]);
    let principal = |role: Role, c: Chars| {
        let chars = match c {
            Absent | NoneAbsent => None,
            In | Out | NoneRestricted => restricted.clone(),
            NoneWildcard => Some(vec![prefix("")]),
        };
        Principal::Token(claims(role, chars))
    };
    let character = |c: Chars, i: usize| match c {
        Absent | In => Some(if i.is_multiple_of(2) {
            ch("alice")
        } else {
            ch("npc-7")
        }),
        Out => Some(if i.is_multiple_of(2) {
            ch("bob")
        } else {
            ch("npc")
        }),
        NoneRestricted | NoneAbsent | NoneWildcard => None,
    };
    let o = Res::Ok;
    let f = Res::E403;
    // (role, action, chars, expected)
    let rows = [
        (Sub, Subscribe, Absent, o),
        (Sub, Subscribe, In, o),
        (Sub, Subscribe, Out, f),
        (Sub, Subscribe, NoneAbsent, o),
        (Sub, Subscribe, NoneRestricted, o),
        (Sub, History, Absent, o),
        (Sub, History, In, o),
        (Sub, History, Out, f),
        (Sub, History, NoneAbsent, o),
        (Sub, Publish, Absent, f),
        (Sub, Publish, In, f),
        (Sub, Publish, Out, f),
        (Sub, Publish, NoneAbsent, f),
        (Sub, Admin, Absent, f),
        (Sub, Admin, In, f),
        (Sub, Admin, Out, f),
        (Sub, Admin, NoneAbsent, f),
        (Sub, Admin, NoneWildcard, f),
        (Pub, Subscribe, Absent, o),
        (Pub, Subscribe, In, o),
        (Pub, Subscribe, Out, f),
        (Pub, History, Absent, o),
        (Pub, History, In, o),
        (Pub, History, Out, f),
        (Pub, Publish, Absent, o),
        (Pub, Publish, In, o),
        (Pub, Publish, Out, f),
        (Pub, Publish, NoneAbsent, o),
        (Pub, Publish, NoneRestricted, o),
        (Pub, Admin, Absent, f),
        (Pub, Admin, In, f),
        (Pub, Admin, Out, f),
        (Pub, Admin, NoneAbsent, f),
        (Pub, Admin, NoneWildcard, f),
        (Adm, Subscribe, Absent, o),
        (Adm, Subscribe, In, o),
        (Adm, Subscribe, Out, f),
        (Adm, History, Absent, o),
        (Adm, History, In, o),
        (Adm, History, Out, f),
        (Adm, Publish, Absent, o),
        (Adm, Publish, In, o),
        (Adm, Publish, Out, f),
        (Adm, Admin, Absent, o),
        (Adm, Admin, In, o),
        (Adm, Admin, Out, f),
        (Adm, Admin, NoneAbsent, o),
        (Adm, Admin, NoneWildcard, o),
        (Adm, Admin, NoneRestricted, f),
    ];
    for (i, (role, action, chars, want)) in rows.into_iter().enumerate() {
        // Each row runs with both sample characters of its column.
        for j in 0..2 {
            let p = principal(role, chars);
            let c = character(chars, i + j);
            let name = format!("{role:?} {action:?} {chars:?} {c:?}");
            check(&name, authorize(&p, action, c.as_ref()), want);
            if action == Publish {
                if let Some(c) = &c {
                    assert_eq!(can_publish(&p, c), matches!(want, Res::Ok), "{name}");
                }
            }
        }
    }
    // Auth disabled and API keys may do everything, anywhere.
    for p in [Principal::Anonymous, Principal::ApiKey] {
        for action in [Subscribe, Publish, History, Admin] {
            for c in [None, Some(ch("alice")), Some(ch("bob"))] {
                check(
                    &format!("{p:?} {action:?}"),
                    authorize(&p, action, c.as_ref()),
                    o,
                );
            }
        }
        assert!(can_publish(&p, &ch("bob")));
    }
}

#[test]
fn forbidden_names_the_character() {
    let p = Principal::Token(claims(Role::Publisher, Some(vec![exact("alice")])));
    let e = authorize(&p, Action::Publish, Some(&ch("bob"))).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("`bob`"), "{}", e.message);
    let e = authorize(&p, Action::Admin, None).unwrap_err();
    assert!(e.message.contains("publisher"), "{}", e.message);
}

#[test]
fn token_expiry_by_principal() {
    assert_eq!(token_expiry(&Principal::Anonymous), None);
    assert_eq!(token_expiry(&Principal::ApiKey), None);
    assert_eq!(
        token_expiry(&Principal::Token(claims(Role::Admin, None))),
        Some(NOW + 3600)
    );
}

#[test]
fn api_key_table() {
    let keys = "k-one, k-two ,,  k-three\t,";
    let rows: &[(&str, &str, bool)] = &[
        ("k-one", keys, true),
        ("k-two", keys, true),
        ("k-three", keys, true),
        (" k-two", keys, false),
        ("k-two ", keys, false),
        ("k-", keys, false),
        ("k-on", keys, false),
        ("k-one1", keys, false),
        ("k-onek-two", keys, false),
        ("K-ONE", keys, false),
        ("", keys, false),
        ("", "", false),
        ("", " , ,", false),
        ("k-one", "", false),
        ("k-one", " , , ", false),
        ("k-one", "k-one", true),
        ("k-one, k-two", keys, false),
        (",", keys, false),
    ];
    for (presented, csv, want) in rows {
        assert_eq!(
            api_key_matches(presented, csv),
            *want,
            "{presented:?} in {csv:?}"
        );
    }
}

#[test]
fn bearer_table() {
    let rows: &[(&str, Option<&str>)] = &[
        ("Bearer abc.def.ghi", Some("abc.def.ghi")),
        ("bearer abc", Some("abc")),
        ("BEARER abc", Some("abc")),
        ("  Bearer   abc  ", Some("abc")),
        ("Bearer\tabc", Some("abc")),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("Basic abc", None),
        ("Bearerabc", None),
        ("abc", None),
        ("", None),
    ];
    for (h, want) in rows {
        assert_eq!(bearer_token(h), *want, "{h:?}");
    }
}

#[test]
fn authenticate_table() {
    let on = AuthConfig {
        enabled: true,
        jwt_secret: SECRET,
        api_keys: "key-a,key-b",
    };
    let off = AuthConfig {
        enabled: false,
        ..on
    };
    let good = tok(&with(base(), "role", json!("publisher")));
    let bearer = format!("Bearer {good}");
    let expired = tok(&with(base(), "exp", json!(NOW)));
    let expired_bearer = format!("Bearer {expired}");
    let none = Credentials::default();
    let c =
        |a: Option<&'static str>, q: Option<&'static str>, k: Option<&'static str>| Credentials {
            authorization: a,
            query_token: q,
            api_key: k,
        };
    let leak = |s: &String| -> &'static str { Box::leak(s.clone().into_boxed_str()) };
    let (bearer, good, expired_bearer, expired) = (
        leak(&bearer),
        leak(&good),
        leak(&expired_bearer),
        leak(&expired),
    );
    let publisher = Principal::Token(claims(Role::Publisher, None));
    let rows: Vec<(&str, AuthConfig, Credentials, Result<Principal, Res>)> = vec![
        ("off, nothing", off, none, Ok(Principal::Anonymous)),
        (
            "off, bad key",
            off,
            c(None, None, Some("nope")),
            Ok(Principal::Anonymous),
        ),
        ("on, nothing", on, none, Err(Res::E401)),
        (
            "api key",
            on,
            c(None, None, Some("key-b")),
            Ok(Principal::ApiKey),
        ),
        (
            "bad api key",
            on,
            c(Some(bearer), None, Some("nope")),
            Err(Res::E401),
        ),
        (
            "bearer",
            on,
            c(Some(bearer), None, None),
            Ok(publisher.clone()),
        ),
        (
            "query token",
            on,
            c(None, Some(good), None),
            Ok(publisher.clone()),
        ),
        (
            "basic scheme",
            on,
            c(Some("Basic abc"), Some(good), None),
            Err(Res::E401),
        ),
        (
            "expired bearer",
            on,
            c(Some(expired_bearer), None, None),
            Err(Res::E401),
        ),
        (
            "expired query",
            on,
            c(None, Some(expired), None),
            Err(Res::E401),
        ),
        (
            "no secret",
            AuthConfig {
                jwt_secret: b"",
                ..on
            },
            c(Some(bearer), None, None),
            Err(Res::E401),
        ),
        (
            "no keys",
            AuthConfig { api_keys: "", ..on },
            c(None, None, Some("key-a")),
            Err(Res::E401),
        ),
    ];
    for (name, cfg, creds, want) in rows {
        let got = authenticate(&cfg, &creds, NOW);
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g, "{name}"),
            (Err(w), g) => check(name, g.map(|_| ()), w),
            (Ok(w), Err(e)) => panic!("{name}: want {w:?}, got {e:?}"),
        }
    }
}

proptest! {
    #[test]
    fn verify_jwt_never_panics(s in ".{0,300}", now in any::<u64>()) {
        let r = verify_jwt(&s, SECRET, now);
        prop_assert!(r.is_err());
    }

    #[test]
    fn verify_jwt_never_panics_on_dotted(
        a in "[A-Za-z0-9_=+/-]{0,80}",
        b in "[A-Za-z0-9_=+/-]{0,80}",
        c in "[A-Za-z0-9_=+/-]{0,80}",
        now in any::<u64>(),
    ) {
        let _ = verify_jwt(&format!("{a}.{b}.{c}"), SECRET, now);
    }

    #[test]
    fn verify_jwt_never_panics_on_signed_claims(
        exp in any::<u64>(),
        nbf in proptest::option::of(any::<u64>()),
        now in any::<u64>(),
    ) {
        let mut v = with(base(), "exp", json!(exp));
        if let Some(n) = nbf {
            v = with(v, "nbf", json!(n));
        }
        let r = verify_jwt(&tok(&v), SECRET, now);
        let valid = now < exp && nbf.is_none_or(|n| now >= n);
        prop_assert_eq!(r.is_ok(), valid);
    }

    #[test]
    fn api_key_never_matches_other_strings(k in "[a-z0-9]{1,20}", p in "[a-z0-9]{0,20}") {
        prop_assert_eq!(api_key_matches(&p, &k), p == k);
    }
}
