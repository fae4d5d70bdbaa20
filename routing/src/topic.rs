//! Names of the wire contract (§1): characters, topics, topic filters and
//! command names, each a validated newtype so that an unchecked string can
//! never reach routing. Validation is hand-written (no regex engine in the
//! Worker), and filter matching lives here so every caller agrees on it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A name that broke its rule; the message says which thing and which rule,
/// because it goes verbatim into a 400 body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

impl NameError {
    /// Builds `invalid <kind> "<value>": <reason>`, quoting at most 64
    /// characters of the value so a huge input cannot bloat the error.
    fn invalid(kind: &str, value: &str, reason: &str) -> Self {
        let mut shown: String = value.chars().take(64).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        NameError(format!("invalid {kind} {shown:?}: {reason}"))
    }
}

/// A subscription holds at most this many filters (contract §5).
pub use crate::catalogue::MAX_FILTERS;
/// Topics and filters have at most this many dot-separated segments.
pub const MAX_SEGMENTS: usize = 4;

const CHARACTER_RULE: &str = "must be 1 to 64 characters from A-Z a-z 0-9 _ -";
const TOPIC_RULE: &str =
    "must be 1 to 4 dot-separated segments, each 1 to 32 characters from a-z 0-9 _ -";
const FILTER_RULE: &str = "must be 1 to 4 dot-separated segments, each 1 to 32 characters from \
     a-z 0-9 _ -, or exactly `*`; only the last segment may be `>`";
const COMMAND_RULE: &str = "must be 1 to 64 characters from A-Z a-z 0-9 _ . : -";

fn is_character_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

fn is_command_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn valid_segment(seg: &str) -> bool {
    (1..=32).contains(&seg.len()) && seg.bytes().all(is_segment_byte)
}

fn valid_topic(s: &str) -> bool {
    let n = s.split('.').count();
    n <= MAX_SEGMENTS && s.split('.').all(valid_segment)
}

fn valid_filter(s: &str) -> bool {
    let n = s.split('.').count();
    n <= MAX_SEGMENTS
        && s.split('.')
            .enumerate()
            .all(|(i, seg)| seg == "*" || (seg == ">" && i + 1 == n) || valid_segment(seg))
}

/// Declares a string newtype that serializes as a plain string and validates
/// when deserialized, so persisted state cannot smuggle in a bad name.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` against the contract rule for this kind of name.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(NameError::invalid($kind, s, $rule))
                }
            }

            /// The validated name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A character: one Durable Object each; case-sensitive.
    CharacterId,
    "character",
    CHARACTER_RULE,
    |s| (1..=64).contains(&s.len()) && s.bytes().all(is_character_byte)
);
name_type!(
    /// A concrete topic a command is published to, e.g. `body.arms`.
    Topic,
    "topic",
    TOPIC_RULE,
    valid_topic
);
name_type!(
    /// A subscription pattern: `*` matches one segment, a final `>` one or more.
    TopicFilter,
    "topic filter",
    FILTER_RULE,
    valid_filter
);
name_type!(
    /// The name of an animation command, e.g. `smile`.
    CommandName,
    "command name",
    COMMAND_RULE,
    |s| (1..=64).contains(&s.len()) && s.bytes().all(is_command_byte)
);

impl Topic {
    /// The topic of a command published without one.
    pub fn main() -> Self {
        Topic("main".to_owned())
    }

    /// The dot-separated segments (1 to 4).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl TopicFilter {
    /// `>`: everything for the character; what a subscriber naming no topics gets.
    pub fn all() -> Self {
        TopicFilter(">".to_owned())
    }

    /// The dot-separated segments (1 to 4), wildcards included.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// True if `topic` is delivered to a subscriber holding this filter.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut ts = topic.segments();
        for fseg in self.segments() {
            if fseg == ">" {
                return ts.next().is_some();
            }
            match ts.next() {
                Some(t) if fseg == "*" || fseg == t => {}
                _ => return false,
            }
        }
        ts.next().is_none()
    }
}

/// Validates and dedupes a list of filters, keeping first-seen order. An empty
/// list means "no topics named", which the contract turns into `>`.
pub fn parse_filter_list(items: &[&str]) -> Result<Vec<TopicFilter>, NameError> {
    if items.is_empty() {
        return Ok(vec![TopicFilter::all()]);
    }
    let mut out: Vec<TopicFilter> = Vec::new();
    for item in items {
        let f = TopicFilter::parse(item)?;
        if !out.contains(&f) {
            if out.len() == MAX_FILTERS {
                return Err(NameError(format!(
                    "too many topic filters: a subscription holds at most {MAX_FILTERS}"
                )));
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// Parses the `topics=a,b` query value. Empty means `>`; an empty item such
/// as in `a,,b` is an error rather than silently skipped. Items are not
/// trimmed: spaces are invalid in filters.
pub fn parse_filter_csv(csv: &str) -> Result<Vec<TopicFilter>, NameError> {
    if csv.is_empty() {
        return Ok(vec![TopicFilter::all()]);
    }
    let items: Vec<&str> = csv.split(',').collect();
    if items.iter().any(|s| s.is_empty()) {
        return Err(NameError(format!(
            "invalid topics list {:?}: empty item (use comma-separated filters)",
            csv.chars().take(64).collect::<String>()
        )));
    }
    parse_filter_list(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    macro_rules! cases {
        ($f:expr; $( $a:expr => $b:expr ),* $(,)?) => {
            for (a, b) in [$(($a, $b)),*] {
                assert_eq!($f(a), b, "case {:?}", a);
            }
        };
    }

    #[test]
    fn filter_matching_table() {
        let m = |(f, t): (&str, &str)| {
            TopicFilter::parse(f)
                .unwrap()
                .matches(&Topic::parse(t).unwrap())
        };
        cases!(m;
            ("face", "face") => true,
            ("face", "body") => false,
            ("face", "face.eyes") => false,
            ("face.eyes", "face") => false,
            (">", "face") => true,
            (">", "a.b.c.d") => true,
            ("*", "face") => true,
            ("*", "face.eyes") => false,
            ("body.*", "body.arms") => true,
            ("body.*", "body") => false,
            ("body.*", "body.arms.left") => false,
            ("body.>", "body") => false,
            ("body.>", "body.arms") => true,
            ("body.>", "body.arms.left") => true,
            ("*.arms", "body.arms") => true,
            ("*.arms", "body.legs") => false,
            ("*.*.>", "a.b") => false,
            ("*.*.>", "a.b.c") => true,
            ("a.*.c.d", "a.x.c.d") => true,
            ("a.*.c.d", "a.x.c.e") => false,
            ("main", "main") => true,
        );
    }

    #[test]
    fn character_rule_table() {
        let ok = |s: &str| CharacterId::parse(s).is_ok();
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        cases!(ok;
            "alice" => true, "npc-7" => true, "A_b-9" => true, long.as_str() => true,
            "" => false, too_long.as_str() => false, "a.b" => false, "a b" => false,
            "é" => false, "a/b" => false,
        );
    }

    #[test]
    fn topic_rule_table() {
        let ok = |s: &str| Topic::parse(s).is_ok();
        let seg32 = "a".repeat(32);
        let seg33 = "a".repeat(33);
        cases!(ok;
            "face" => true, "body.arms" => true, "a.b.c.d" => true, "a-1_b" => true,
            seg32.as_str() => true,
            "" => false, "a.b.c.d.e" => false, "Face" => false, "a..b" => false,
            ".a" => false, "a." => false, "*" => false, ">" => false,
            seg33.as_str() => false, "a:b" => false,
        );
    }

    #[test]
    fn filter_rule_table() {
        let ok = |s: &str| TopicFilter::parse(s).is_ok();
        cases!(ok;
            ">" => true, "*" => true, "body.*" => true, "*.arms" => true, "a.*.>" => true,
            "a.b.c.>" => true, "face" => true,
            "" => false, ">.a" => false, "a.>.b" => false, "a*" => false, "**" => false,
            "a.b.c.d.>" => false, "a..b" => false, ">>" => false, "A" => false,
        );
    }

    #[test]
    fn command_rule_table() {
        let ok = |s: &str| CommandName::parse(s).is_ok();
        let long = "x".repeat(64);
        let too_long = "x".repeat(65);
        cases!(ok;
            "smile" => true, "Wave" => true, "a.b:c-d_e" => true, long.as_str() => true,
            "" => false, too_long.as_str() => false, "a b" => false, "a/b" => false,
        );
    }

    #[test]
    fn error_messages_name_the_kind() {
        let e = TopicFilter::parse("a..b").unwrap_err().to_string();
        assert!(e.starts_with("invalid topic filter \"a..b\": "), "{e}");
        let e = CharacterId::parse("a b").unwrap_err().to_string();
        assert!(e.starts_with("invalid character \"a b\": "), "{e}");
        let e = Topic::parse(&"x".repeat(200)).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn filter_lists() {
        assert_eq!(parse_filter_list(&[]).unwrap(), vec![TopicFilter::all()]);
        let l = parse_filter_list(&["b", "a", "b"]).unwrap();
        assert_eq!(l.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(parse_filter_list(&refs[..32]).is_ok());
        assert!(parse_filter_list(&refs).is_err());
        let mut dup = refs[..32].to_vec();
        dup.push("t0");
        assert_eq!(parse_filter_list(&dup).unwrap().len(), 32);
        assert!(parse_filter_list(&["a", "B"]).is_err());
    }

    #[test]
    fn filter_csv() {
        assert_eq!(parse_filter_csv("").unwrap(), vec![TopicFilter::all()]);
        assert_eq!(parse_filter_csv("face,body.*").unwrap().len(), 2);
        assert!(parse_filter_csv("a,,b").is_err());
        assert!(parse_filter_csv("a,").is_err());
        assert!(parse_filter_csv("a, b").is_err());
    }

    #[test]
    fn serde_is_plain_string_and_validates() {
        let f = TopicFilter::parse("body.*").unwrap();
        assert_eq!(serde_json::to_string(&f).unwrap(), "\"body.*\"");
        let back: TopicFilter = serde_json::from_str("\"body.*\"").unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_str::<TopicFilter>("\"a..b\"").is_err());
        assert_eq!(Topic::main().as_str(), "main");
    }

    fn naive(f: &[&str], t: &[&str]) -> bool {
        match (f, t) {
            ([], []) => true,
            ([">"], rest) => !rest.is_empty(),
            ([fh, fr @ ..], [th, tr @ ..]) => (*fh == "*" || fh == th) && naive(fr, tr),
            _ => false,
        }
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*"]), 0..4).prop_flat_map(
            |segs| {
                let segs2 = segs.clone();
                prop::sample::select(vec!["a", "b", "*", ">"]).prop_map(move |last| {
                    let mut v = segs2.clone();
                    v.push(last);
                    v.join(".")
                })
            },
        )
    }

    proptest! {
        #[test]
        fn matches_agrees_with_naive(
            f in filter_strategy(),
            t in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=4),
        ) {
            let filter = TopicFilter::parse(&f).unwrap();
            let topic = Topic::parse(&t.join(".")).unwrap();
            let fs: Vec<&str> = f.split('.').collect();
            prop_assert_eq!(filter.matches(&topic), naive(&fs, &t));
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = TopicFilter::parse(&s);
            let _ = Topic::parse(&s);
            let _ = CharacterId::parse(&s);
            let _ = CommandName::parse(&s);
            let _ = parse_filter_csv(&s);
        }
    }
}
