//! Query strings of the subscribe and history endpoints, validated into typed
//! values. A bad value is a 400 with a message naming the parameter; a
//! repeated parameter is refused rather than guessed at.

use crate::protocol::ApiError;
use crate::topic::{parse_filter_csv, CharacterId, TopicFilter};

/// What a subscriber asked for on the upgrade URL.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeQuery {
    pub topics: Vec<TopicFilter>,
    pub since: Option<u64>,
    pub epoch: Option<String>,
    pub presence: bool,
    pub token: Option<String>,
}

/// What a history reader asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub since: u64,
    pub limit: u64,
    pub topics: Vec<TopicFilter>,
}

pub const HISTORY_DEFAULT_LIMIT: u64 = 100;
pub const HISTORY_MAX_LIMIT: u64 = 1000;
pub(crate) const MAX_EPOCH_LEN: usize = 128;

pub(crate) fn once<'a>(
    pairs: &'a [(String, String)],
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    let mut found = None;
    for (k, v) in pairs {
        if k == key {
            if found.is_some() {
                return Err(ApiError::bad_request(format!(
                    "query parameter `{key}` is given more than once"
                )));
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

fn seq_param(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, ApiError> {
    match once(pairs, key)? {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= (1u64 << 53))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!("`{key}` must be a non-negative integer, got {v:?}"))
            }),
    }
}

/// `limit`: `default` when absent, else 1..=`max`; outside that is a 400,
/// never clamped.
fn limit_param(pairs: &[(String, String)], default: u64, max: u64) -> Result<u64, ApiError> {
    match once(pairs, "limit")? {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`limit` must be an integer from 1 to {max}, got {v:?}"
                ))
            }),
    }
}

pub(crate) fn topics_param(pairs: &[(String, String)]) -> Result<Vec<TopicFilter>, ApiError> {
    parse_filter_csv(once(pairs, "topics")?.unwrap_or("")).map_err(ApiError::from)
}

pub fn parse_subscribe_query(pairs: &[(String, String)]) -> Result<SubscribeQuery, ApiError> {
    let topics = topics_param(pairs)?;
    let since = seq_param(pairs, "since")?;
    let epoch = match once(pairs, "epoch")? {
        None => None,
        Some(e) if !e.is_empty() && e.chars().count() <= MAX_EPOCH_LEN => Some(e.to_string()),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`epoch` must be 1..={MAX_EPOCH_LEN} characters"
            )))
        }
    };
    let presence = match once(pairs, "presence")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`presence` must be true or false, got {v:?}"
            )))
        }
    };
    let token = once(pairs, "token")?.map(str::to_string);
    Ok(SubscribeQuery {
        topics,
        since,
        epoch,
        presence,
        token,
    })
}

/// What an event-log reader asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsQuery {
    pub character: Option<CharacterId>,
    pub limit: usize,
}

pub const LOGS_DEFAULT_LIMIT: usize = 100;
pub const LOGS_MAX_LIMIT: usize = 1000;

pub fn parse_logs_query(pairs: &[(String, String)]) -> Result<LogsQuery, ApiError> {
    let character = match once(pairs, "character")? {
        None => None,
        Some(c) => Some(CharacterId::parse(c)?),
    };
    let limit = limit_param(pairs, LOGS_DEFAULT_LIMIT as u64, LOGS_MAX_LIMIT as u64)? as usize;
    Ok(LogsQuery { character, limit })
}

pub fn parse_history_query(pairs: &[(String, String)]) -> Result<HistoryQuery, ApiError> {
    let since = seq_param(pairs, "since")?.unwrap_or(0);
    let limit = limit_param(pairs, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT)?;
    Ok(HistoryQuery {
        since,
        limit,
        topics: topics_param(pairs)?,
    })
}

/// Splits a serialized absolute URL (as the runtime hands it over) into its
/// path and query without a full URL parse. A WHATWG-serialized http(s) URL
/// always has a path starting at the first `/` after the authority, and `?`
/// and `#` never occur unescaped inside the path.
pub fn split_url(url: &str) -> (&str, Option<&str>) {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[after_scheme..];
    let rest = match rest.find('/') {
        Some(i) => &rest[i..],
        None => match rest.find(['?', '#']) {
            Some(i) => &rest[i..],
            None => "",
        },
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// `application/x-www-form-urlencoded` pairs of a query string, decoded the
/// way browsers and the `url` crate decode them (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    match query {
        None => Vec::new(),
        Some(q) => form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn subscribe_defaults_to_everything() {
        let s = parse_subscribe_query(&q("")).unwrap();
        assert_eq!(s.topics, vec![TopicFilter::all()]);
        assert_eq!(
            (s.since, s.epoch, s.presence, s.token),
            (None, None, false, None)
        );
    }

    #[test]
    fn subscribe_reads_every_parameter() {
        let s = parse_subscribe_query(&q(
            "topics=face,body.*&since=7&epoch=abc&presence=true&token=t",
        ))
        .unwrap();
        let names: Vec<&str> = s.topics.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["face", "body.*"]);
        assert_eq!(s.since, Some(7));
        assert_eq!(s.epoch.as_deref(), Some("abc"));
        assert!(s.presence);
        assert_eq!(s.token.as_deref(), Some("t"));
    }

    #[test]
    fn bad_subscribe_values_are_400() {
        for bad in [
            "since=-1",
            "since=abc",
            "since=1.5",
            "since=99999999999999999999",
            "presence=yes",
            "topics=Face",
            "topics=a,,b",
            "topics=a.>.b",
            "epoch=",
            "since=1&since=2",
        ] {
            let e = parse_subscribe_query(&q(bad)).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    #[test]
    fn epoch_length_counts_characters() {
        let e = "é".repeat(128);
        assert!(parse_subscribe_query(&[("epoch".into(), e.clone())]).is_ok());
        let long = format!("{e}x");
        assert_eq!(
            parse_subscribe_query(&[("epoch".into(), long)])
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn logs_query_is_checked() {
        let ok = parse_logs_query(&q("character=npc-1&limit=5")).unwrap();
        assert_eq!(ok.character.unwrap().as_str(), "npc-1");
        assert_eq!(ok.limit, 5);
        assert_eq!(parse_logs_query(&q("")).unwrap().limit, 100);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "character=bad.name",
            "limit=1&limit=2",
            "character=a&character=b",
        ] {
            assert_eq!(
                parse_logs_query(&q(bad)).unwrap_err().status(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn history_limit_is_checked_not_clamped() {
        assert_eq!(parse_history_query(&q("")).unwrap().limit, 100);
        assert_eq!(parse_history_query(&q("limit=1000")).unwrap().limit, 1000);
        assert_eq!(parse_history_query(&q("limit=1")).unwrap().limit, 1);
        for bad in ["limit=0", "limit=1001", "limit=x", "limit=-5", "since=x"] {
            assert_eq!(
                parse_history_query(&q(bad)).unwrap_err().status(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_split_into_path_and_query() {
        let cases = [
            ("https://a.example/v1/x?y=1", "/v1/x", Some("y=1")),
            ("http://127.0.0.1:8787/healthz", "/healthz", None),
            ("https://character/publish", "/publish", None),
            ("https://a.example", "/", None),
            ("https://a.example?x=1", "/", Some("x=1")),
            ("https://a.example/p?q=1#frag", "/p", Some("q=1")),
            ("https://a.example/p#frag?no", "/p", None),
            ("https://a.example/p?", "/p", Some("")),
            (
                "https://user:pw@a.example:9/%3F/b?c=%26",
                "/%3F/b",
                Some("c=%26"),
            ),
            ("/relative?x", "/relative", Some("x")),
        ];
        for (url, path, query) in cases {
            assert_eq!(split_url(url), (path, query), "{url}");
        }
    }

    #[test]
    fn query_pairs_decode_like_forms() {
        assert!(query_pairs(None).is_empty());
        assert!(query_pairs(Some("")).is_empty());
        let pairs = query_pairs(Some("topics=face%2Cbody.*&since=5&token=a+b&flag&=v"));
        let want = [
            ("topics", "face,body.*"),
            ("since", "5"),
            ("token", "a b"),
            ("flag", ""),
            ("", "v"),
        ];
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
    }
}
