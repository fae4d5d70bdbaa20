use super::*;
use proptest::prelude::*;

fn c(name: &str) -> CharacterId {
    CharacterId::parse(name).unwrap()
}

fn kick(character: &str, id: &str) -> Route {
    Route::AdminKick {
        character: c(character),
        client_id: Ok(ClientId::parse(id).unwrap()),
    }
}

/// A kick whose client segment cannot name a client: 404 after the rights check.
fn kick_nobody(character: &str) -> Route {
    Route::AdminKick {
        character: c(character),
        client_id: Err(RouteError {
            code: ErrorCode::NotFound,
            message: String::new(),
            allow: None,
            admin: true,
        }),
    }
}

/// What a table row expects: the route, or the status, the `Allow` methods
/// and whether credentials come first. Messages are checked separately.
#[derive(Debug, PartialEq)]
enum Want {
    Ok(Route),
    Err(u16, Option<&'static [&'static str]>, bool),
}

fn got(method: &str, path: &str) -> Want {
    match route(method, path) {
        Ok(Route::AdminKick {
            character,
            client_id: Err(e),
        }) => {
            assert_eq!((e.status(), e.allow, e.admin), (404, None, true));
            kick_nobody(character.as_str()).into()
        }
        Ok(r) => Want::Ok(r),
        Err(e) => Want::Err(e.status(), e.allow, e.admin),
    }
}

impl From<Route> for Want {
    fn from(r: Route) -> Self {
        Want::Ok(r)
    }
}

const NF: Want = Want::Err(404, None, false);
const BAD: Want = Want::Err(400, None, false);
const ADMIN_NF: Want = Want::Err(404, None, true);
const ADMIN_BAD: Want = Want::Err(400, None, true);
const READ: &[&str] = &["GET", "HEAD", "OPTIONS"];
const POST: &[&str] = &["POST", "OPTIONS"];
const DELETE: &[&str] = &["DELETE", "OPTIONS"];
const NA_GET: Want = Want::Err(405, Some(READ), false);
const NA_POST: Want = Want::Err(405, Some(POST), false);
const ADMIN_NA_GET: Want = Want::Err(405, Some(READ), true);
const ADMIN_NA_DELETE: Want = Want::Err(405, Some(DELETE), true);
const ADMIN_NA_POST: Want = Want::Err(405, Some(POST), true);

macro_rules! cases {
    ($( $method:literal $path:expr => $want:expr ),* $(,)?) => {
        $( assert_eq!(got($method, &$path), $want.into(), "{} {}", $method, $path); )*
    };
}

#[test]
fn health() {
    cases!(
        "GET" "/healthz" => Route::Health,
        "HEAD" "/healthz" => Route::Health,
        "POST" "/healthz" => NA_GET,
        "DELETE" "/healthz" => NA_GET,
        "QUERY" "/healthz" => NA_GET,
        "get" "/healthz" => NA_GET,
        "" "/healthz" => NA_GET,
        "GET" "//healthz" => Route::Health,
        "GET" "/healthz/" => NF,
        "GET" "/HEALTHZ" => NF,
        "GET" "/healthz/x" => NF,
        "POST" "/healthz/" => NF,
    );
}

#[test]
fn time() {
    cases!(
        "GET" "/v1/time" => Route::Time,
        "HEAD" "/v1/time" => Route::Time,
        "POST" "/v1/time" => NA_GET,
        "DELETE" "/v1/time" => NA_GET,
        "GET" "/v1/time/" => NF,
        "GET" "/v1/TIME" => NF,
        "GET" "/v1/time/x" => NF,
    );
    assert_eq!(route("GET", "/v1/time").unwrap().character(), None);
    assert!(!route("GET", "/v1/time").unwrap().is_admin());
}

#[test]
fn unknown_paths_are_404_whatever_the_method() {
    cases!(
        "GET" "/" => NF,
        "GET" "" => NF,
        "GET" "/nope" => NF,
        "GET" "/v1" => NF,
        "GET" "/v1/" => NF,
        "GET" "/v1/characters" => NF,
        "GET" "/v1/characters/alice" => NF,
        "GET" "/v1/characters/alice/" => NF,
        "POST" "/v1/characters/alice/commands/" => NF,
        "POST" "/v1/characters/alice/commands/x" => NF,
        "POST" "/v1//characters/alice/commands" => NF,
        "POST" "/v2/characters/alice/commands" => NF,
        "POST" "/v1/characters/alice/publish" => NF,
        "QUERY" "/nope" => NF,
        "GET" "/v1/broadcast/" => NF,
        "GET" "/v1/adminx/subscriptions" => NF,
        // Fixed segments are matched as they arrive, not decoded.
        "POST" "/v1/characters/alice/%63ommands" => NF,
        "GET" "/%68ealthz" => NF,
    );
}

#[test]
fn character_endpoints() {
    cases!(
        "GET" "/v1/characters/alice/subscribe" => Route::Subscribe(c("alice")),
        "POST" "/v1/characters/alice/commands" => Route::Publish(c("alice")),
        "GET" "/v1/characters/alice/history" => Route::History(c("alice")),
        "POST" "/v1/characters/npc-7/say" => Route::Say(c("npc-7")),
        "POST" "/v1/characters/alice/subscribe" => NA_GET,
        "HEAD" "/v1/characters/alice/subscribe" => Route::Subscribe(c("alice")),
        "HEAD" "/v1/characters/alice/history" => Route::History(c("alice")),
        "HEAD" "/v1/characters/alice/commands" => NA_POST,
        "GET" "/v1/characters/alice/commands" => NA_POST,
        "PUT" "/v1/characters/alice/commands" => NA_POST,
        "POST" "/v1/characters/alice/history" => NA_GET,
        "PROPFIND" "/v1/characters/alice/history" => NA_GET,
        "GET" "/v1/characters/alice/say" => NA_POST,
        "POST" "/v1/broadcast" => Route::Broadcast,
        "GET" "/v1/broadcast" => NA_POST,
        // The method is checked before the name.
        "GET" "/v1/characters/bad.name/commands" => NA_POST,
        "POST" "/v1/characters/bad.name/commands" => BAD,
        "POST" "/v1/characters//commands" => BAD,
        "GET" "/v1/characters/bad.name/history" => BAD,
    );
}

#[test]
fn retained_state_endpoints() {
    let clear = |ch: &str, topic: &str| Route::ClearRetained {
        character: c(ch),
        topic: Topic::parse(topic).unwrap(),
    };
    const NA_DELETE: Want = Want::Err(405, Some(DELETE), false);
    cases!(
        "GET" "/v1/characters/alice/state" => Route::State(c("alice")),
        "HEAD" "/v1/characters/alice/state" => Route::State(c("alice")),
        "POST" "/v1/characters/alice/state" => NA_GET,
        "GET" "/v1/characters/bad.name/state" => BAD,
        "DELETE" "/v1/characters/alice/retained/face" => clear("alice", "face"),
        "DELETE" "/v1/characters/alice/retained/body.arms" => clear("alice", "body.arms"),
        "DELETE" "/v1/characters/alice/retained/body%2Earms" => clear("alice", "body.arms"),
        "GET" "/v1/characters/alice/retained/face" => NA_DELETE,
        "POST" "/v1/characters/alice/retained/face" => NA_DELETE,
        // A topic, not a filter; the character is checked first.
        "DELETE" "/v1/characters/alice/retained/body.*" => BAD,
        "DELETE" "/v1/characters/alice/retained/FACE" => BAD,
        "DELETE" "/v1/characters/alice/retained/" => BAD,
        "DELETE" "/v1/characters/bad.name/retained/face" => BAD,
        "DELETE" "/v1/characters/alice/retained" => NF,
        "DELETE" "/v1/characters/alice/retained/face/x" => NF,
        "OPTIONS" "/v1/characters/alice/retained/face" => Route::Preflight(DELETE),
        "OPTIONS" "/v1/characters/alice/state" => Route::Preflight(READ),
    );
    let r = route("DELETE", "/v1/characters/bob/retained/face").unwrap();
    assert!(!r.is_admin());
    assert_eq!(r.character(), Some(&c("bob")));
}

#[test]
fn names_are_percent_decoded() {
    let long = format!("/v1/characters/{}/history", "a".repeat(64));
    let too_long = format!("/v1/characters/{}/history", "a".repeat(65));
    let encoded_long = format!("/v1/characters/{}/history", "%61".repeat(64));
    cases!(
        "POST" "/v1/characters/%61lice/commands" => Route::Publish(c("alice")),
        "POST" "/v1/characters/alic%65/commands" => Route::Publish(c("alice")),
        "GET" "/v1/characters/%41%6c%49CE/history" => Route::History(c("AlICE")),
        "GET" "/v1/characters/npc%2D7/history" => Route::History(c("npc-7")),
        "GET" long => Route::History(c(&"a".repeat(64))),
        "GET" encoded_long => Route::History(c(&"a".repeat(64))),
        "GET" too_long => BAD,
        // Decoded into something no name may hold.
        "GET" "/v1/characters/a%2Fb/history" => BAD,
        "GET" "/v1/characters/a%2fb/history" => BAD,
        "GET" "/v1/characters/sp%20ace/history" => BAD,
        "GET" "/v1/characters/%C3%A9/history" => BAD,
        // Not UTF-8 once decoded.
        "GET" "/v1/characters/%FF/history" => BAD,
        "GET" "/v1/characters/a%C3/history" => BAD,
        // Escapes that are not escapes stay, and `%` is no name character.
        "GET" "/v1/characters/%zz/history" => BAD,
        "GET" "/v1/characters/a%6/history" => BAD,
        "GET" "/v1/characters/a%/history" => BAD,
        "GET" "/v1/characters/%2561/history" => BAD,
    );
}

#[test]
fn admin_endpoints() {
    let id64 = "a1".repeat(32);
    let id65 = format!("{id64}b");
    let kick_path = |id: &str| format!("/v1/admin/characters/alice/subscriptions/{id}");
    cases!(
        "GET" "/v1/admin/subscriptions" => Route::AdminSubscriptions,
        "POST" "/v1/admin/subscriptions" => ADMIN_NA_GET,
        "QUERY" "/v1/admin/subscriptions" => ADMIN_NA_GET,
        "GET" "/v1/admin/logs" => Route::AdminLogs,
        "DELETE" "/v1/admin/logs" => ADMIN_NA_GET,
        "POST" "/v1/admin/revocations" => Route::AdminRevoke,
        "GET" "/v1/admin/revocations" => ADMIN_NA_POST,
        "GET" "/v1/admin/characters/alice/subscriptions" => Route::AdminCharacterSubscriptions(c("alice")),
        "GET" "/v1/admin/characters/%61lice/subscriptions" => Route::AdminCharacterSubscriptions(c("alice")),
        "DELETE" "/v1/admin/characters/alice/subscriptions" => ADMIN_NA_GET,
        "GET" "/v1/admin/characters/bad.name/subscriptions" => ADMIN_BAD,
        "DELETE" "/v1/admin/characters/bad.name/subscriptions" => ADMIN_NA_GET,
        // Every unknown path under /v1/admin waits for credentials first.
        "GET" "/v1/admin" => ADMIN_NF,
        "GET" "/v1/admin/" => ADMIN_NF,
        "GET" "/v1/admin/nothing" => ADMIN_NF,
        "GET" "/v1/admin/subscriptions/" => ADMIN_NF,
        "GET" "/v1/admin//subscriptions" => ADMIN_NF,
        "GET" "/v1/admin/characters/alice" => ADMIN_NF,
        "GET" "//v1/admin/logs" => Route::AdminLogs,
        // Kicks: DELETE only, checked before the names.
        "DELETE" kick_path("abc123") => kick("alice", "abc123"),
        "DELETE" kick_path("nope0000") => kick("alice", "nope0000"),
        "DELETE" kick_path("%61bc") => kick("alice", "abc"),
        "DELETE" kick_path(&id64) => kick("alice", &id64),
        "GET" kick_path("x") => ADMIN_NA_DELETE,
        "POST" kick_path("x") => ADMIN_NA_DELETE,
        "GET" "/v1/admin/characters/bad.name/subscriptions/x" => ADMIN_NA_DELETE,
        "DELETE" "/v1/admin/characters/bad.name/subscriptions/x" => ADMIN_BAD,
        "DELETE" "/v1/admin/characters/bad.name/subscriptions/a-b" => ADMIN_BAD,
        "DELETE" format!("{}/", kick_path("abc")) => ADMIN_NF,
        // Client ids that name no client.
        "DELETE" kick_path("") => kick_nobody("alice"),
        "DELETE" kick_path(&id65) => kick_nobody("alice"),
        "DELETE" kick_path("a-b") => kick_nobody("alice"),
        "DELETE" kick_path("a_b") => kick_nobody("alice"),
        "DELETE" kick_path("a%2Fb") => kick_nobody("alice"),
        "DELETE" kick_path("..") => kick_nobody("alice"),
        "DELETE" kick_path("%C3%A9") => kick_nobody("alice"),
        "DELETE" kick_path("%FF") => kick_nobody("alice"),
        "DELETE" kick_path("a%zz") => kick_nobody("alice"),
    );
}

#[test]
fn messages_say_what_was_wrong() {
    let message = |m: &str, p: &str| match route(m, p) {
        Err(e) => e.message,
        Ok(Route::AdminKick {
            client_id: Err(e), ..
        }) => e.message,
        Ok(r) => panic!("{m} {p}: {r:?}"),
    };
    assert_eq!(message("GET", "/nope"), "no route for /nope");
    assert_eq!(
        message("GET", "/v1/admin/x%20y"),
        "no route for /v1/admin/x%20y"
    );
    assert_eq!(
        message("DELETE", "/healthz"),
        "method not allowed; use GET, HEAD, OPTIONS"
    );
    assert_eq!(
        message("GET", "/v1/characters/a/commands"),
        "method not allowed; use POST, OPTIONS"
    );
    assert_eq!(
        message("GET", "/v1/admin/characters/a/subscriptions/b"),
        "method not allowed; use DELETE, OPTIONS"
    );
    assert_eq!(
        message("GET", "/v1/characters/a%2Fb/history"),
        "invalid character \"a/b\": must be 1 to 64 characters from A-Z a-z 0-9 _ -"
    );
    assert_eq!(
        message("GET", "/v1/characters/%FFx/history"),
        "invalid character \"\u{fffd}x\": must be 1 to 64 characters from A-Z a-z 0-9 _ -"
    );
    assert_eq!(
        message("DELETE", "/v1/admin/characters/a/subscriptions/a%2Fb"),
        "no client \"a/b\" on this character"
    );
}

#[test]
fn routes_know_their_character_and_whether_they_are_admin() {
    let r = route("DELETE", "/v1/admin/characters/bob/subscriptions/x1").unwrap();
    assert!(r.is_admin());
    assert_eq!(r.character(), Some(&c("bob")));
    let r = route("POST", "/v1/characters/bob/commands").unwrap();
    assert!(!r.is_admin());
    assert_eq!(r.character(), Some(&c("bob")));
    assert_eq!(route("GET", "/v1/admin/logs").unwrap().character(), None);
    assert!(route("GET", "/v1/admin/subscriptions").unwrap().is_admin());
    assert!(!route("GET", "/healthz").unwrap().is_admin());
}

proptest! {
    /// Any method and path gets an answer, never a panic: a route with valid
    /// names, or an error whose `Allow` is there exactly for a 405.
    #[test]
    fn every_request_gets_an_answer(
        method in prop_oneof![Just("GET".to_string()), Just("DELETE".to_string()), "[A-Za-z]{0,8}"],
        path in prop_oneof![
            "(/(v1|admin|characters|subscriptions|healthz|broadcast|logs|commands|%[0-9A-Fa-f]{2}|%|[a-z0-9]{1,3}|))*",
            any::<String>(),
        ],
    ) {
        match route(&method, &path) {
            Ok(r) => {
                if let Some(ch) = r.character() {
                    prop_assert!(CharacterId::parse(ch.as_str()).is_ok());
                }
                if let Route::AdminKick { client_id: Ok(id), .. } = &r {
                    prop_assert!(ClientId::parse(id.as_str()).is_some());
                }
            }
            Err(e) => {
                prop_assert_eq!(e.allow.is_some(), e.code == ErrorCode::MethodNotAllowed);
                prop_assert!(matches!(e.status(), 400 | 404 | 405));
            }
        }
    }
}

/// `OPTIONS` on every known path is a preflight with that path's methods,
/// whatever the names in it (the request itself gets their errors); unknown
/// paths stay 404.
#[test]
fn preflight() {
    let pre = |allow: &'static [&'static str]| Want::Ok(Route::Preflight(allow));
    cases!(
        "OPTIONS" "/healthz" => pre(READ),
        "OPTIONS" "/v1/characters/alice/subscribe" => pre(READ),
        "OPTIONS" "/v1/characters/alice/history" => pre(READ),
        "OPTIONS" "/v1/characters/alice/commands" => pre(POST),
        "OPTIONS" "/v1/characters/alice/say" => pre(POST),
        "OPTIONS" "/v1/characters/bad.name/commands" => pre(POST),
        "OPTIONS" "/v1/broadcast" => pre(POST),
        "OPTIONS" "/v1/admin/subscriptions" => pre(READ),
        "OPTIONS" "/v1/admin/characters/alice/subscriptions" => pre(READ),
        "OPTIONS" "/v1/admin/characters/alice/subscriptions/x" => pre(DELETE),
        "OPTIONS" "/v1/admin/logs" => pre(READ),
        "OPTIONS" "/v1/admin/revocations" => pre(POST),
        "OPTIONS" "/nope" => NF,
        "OPTIONS" "/v1/admin/nope" => ADMIN_NF,
        "options" "/healthz" => NA_GET,
    );
    assert!(!Route::Preflight(READ).is_admin());
    assert_eq!(Route::Preflight(POST).character(), None);
}
