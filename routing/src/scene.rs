//! Scenes: one socket on several characters (`GET /v1/subscribe?characters=`,
//! docs/protocol.md "Scenes"). This file holds the query of a scene
//! subscribe, validated into typed values, and the name of the object that
//! holds a scene's sockets. The scene's state machine is `scene_hub`.
//!
//! Bounds: 1..=[`MAX_SCENE_CHARACTERS`] distinct characters; `since` and
//! `epoch` hold at most one pair per character of the list; `presence` is
//! `true` or `false`.

use std::collections::BTreeMap;

use crate::protocol::ApiError;
use crate::query::{once, topics_param, MAX_EPOCH_LEN};
use crate::topic::{CharacterId, TopicFilter};

/// Most characters one scene socket follows.
pub const MAX_SCENE_CHARACTERS: usize = 16;

/// Starts every scene object's name; `~` is no character-name byte, so no
/// character's object (nor a relay, `<character>~r<n>`) has such a name.
pub const SCENE_MARK: &str = "~s";

/// What a scene subscriber asked for on the upgrade URL.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneQuery {
    /// Distinct, sorted: the scene's identity does not depend on the order
    /// the client named them in.
    pub characters: Vec<CharacterId>,
    pub topics: Vec<TopicFilter>,
    pub since: BTreeMap<CharacterId, u64>,
    pub epoch: BTreeMap<CharacterId, String>,
    /// Presence frames of every character of the scene (with `character`).
    pub presence: bool,
    pub token: Option<String>,
}

/// Parses the query of `GET /v1/subscribe`; any bad part is the contract's
/// 400 with a message naming the parameter.
pub fn parse_scene_query(pairs: &[(String, String)]) -> Result<SceneQuery, ApiError> {
    let list = once(pairs, "characters")?
        .ok_or_else(|| ApiError::bad_request("query parameter `characters` is required"))?;
    let mut characters: Vec<CharacterId> = Vec::new();
    for name in list.split(',') {
        if characters.len() >= MAX_SCENE_CHARACTERS {
            return Err(ApiError::bad_request(format!(
                "`characters` names at most {MAX_SCENE_CHARACTERS} characters"
            )));
        }
        let c = CharacterId::parse(name)
            .map_err(|e| ApiError::bad_request(format!("`characters`: {e}")))?;
        if characters.contains(&c) {
            return Err(ApiError::bad_request(format!(
                "`characters` names {c} more than once"
            )));
        }
        characters.push(c);
    }
    characters.sort();
    let topics = topics_param(pairs)?;
    let since = pairs_param(pairs, "since", &characters, |v| {
        v.parse::<u64>().ok().filter(|n| *n <= (1u64 << 53))
    })?;
    let epoch = pairs_param(pairs, "epoch", &characters, |v| {
        (!v.is_empty() && v.chars().count() <= MAX_EPOCH_LEN).then(|| v.to_string())
    })?;
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
    Ok(SceneQuery {
        characters,
        topics,
        presence,
        since,
        epoch,
        token,
    })
}

/// `key=a:1,b:2`: at most one pair per character of the scene.
fn pairs_param<T>(
    pairs: &[(String, String)],
    key: &str,
    characters: &[CharacterId],
    value: impl Fn(&str) -> Option<T>,
) -> Result<BTreeMap<CharacterId, T>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(list) = once(pairs, key)? else {
        return Ok(out);
    };
    let malformed = |item: &str| {
        ApiError::bad_request(format!(
            "`{key}` must be comma-separated character:value pairs, got {:?}",
            item.chars().take(64).collect::<String>()
        ))
    };
    for item in list.split(',') {
        let (name, v) = item.split_once(':').ok_or_else(|| malformed(item))?;
        let c = CharacterId::parse(name).map_err(|_| malformed(item))?;
        if !characters.contains(&c) {
            return Err(ApiError::bad_request(format!(
                "`{key}` names {c}, which is not in `characters`"
            )));
        }
        let v = value(v).ok_or_else(|| malformed(item))?;
        if out.insert(c.clone(), v).is_some() {
            return Err(ApiError::bad_request(format!(
                "`{key}` names {c} more than once"
            )));
        }
    }
    Ok(out)
}

/// The object that holds the sockets of the scene on `characters` (sorted,
/// distinct): `~s` and the 64-bit FNV-1a hash of the names joined by
/// commas, in hex. The object keeps its list and refuses any other, so a
/// collision is a refused subscribe, never a mixed stream.
pub fn scene_name(characters: &[CharacterId]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, c) in characters.iter().enumerate() {
        if i > 0 {
            hash = fnv_byte(hash, b',');
        }
        for b in c.as_str().bytes() {
            hash = fnv_byte(hash, b);
        }
    }
    format!("{SCENE_MARK}{hash:016x}")
}

fn fnv_byte(hash: u64, b: u8) -> u64 {
    (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Whether an object name is a scene's: shard 0 (`~s<hash>`) or a further
/// shard (`~s<hash>~<n>`, see [`next_shard`]).
pub fn is_scene_name(name: &str) -> bool {
    shard_of(name).is_some()
}

/// A scene object's shard number (0 for `~s<hash>`); `None` for any name
/// that is not a scene object's.
fn shard_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(SCENE_MARK)?;
    let (hash, shard) = match rest.split_once('~') {
        Some((hash, n)) => {
            let n: u32 = n.parse().ok()?;
            (n.to_string() == rest[hash.len() + 1..] && n > 0).then_some((hash, n))?
        }
        None => (rest, 0),
    };
    let hex = hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && shard < MAX_SCENE_SHARDS).then_some(shard)
}

/// Most objects one scene's sockets are spread over (shards 0 to 99).
pub const MAX_SCENE_SHARDS: u32 = crate::catalogue::MAX_RELAYS;

/// The shard that takes a subscribe when scene object `name` holds
/// `FANOUT_LIMIT` sockets: shard n forwards to shard n + 1, so shards fill
/// in order and placement depends on nothing but the names. `None` past
/// the last shard (or for a name that is not a scene object's).
pub fn next_shard(name: &str) -> Option<String> {
    let n = shard_of(name)?;
    let base = name.get(..SCENE_MARK.len() + 16)?;
    (n + 1 < MAX_SCENE_SHARDS).then(|| format!("{base}~{}", n + 1))
}

/// The name under which scene object `scene` reports its sockets of
/// `character` to the registry (`<character>~s<hash>`), so that the
/// registry counts them under that character.
pub fn registry_entry(character: &CharacterId, scene: &str) -> String {
    format!("{}{scene}", character.as_str())
}

/// The character a scene's registry entry counts for; `None` for any other
/// name.
pub fn parse_registry_entry(name: &str) -> Option<CharacterId> {
    let at = name.find(SCENE_MARK)?;
    if !is_scene_name(&name[at..]) {
        return None;
    }
    CharacterId::parse(&name[..at]).ok()
}

/// The characters list as stored by a scene object (sorted, comma-joined).
pub fn characters_key(characters: &[CharacterId]) -> String {
    characters
        .iter()
        .map(CharacterId::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<SceneQuery, ApiError> {
        let pairs: Vec<(String, String)> = s
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        parse_scene_query(&pairs)
    }
    fn c(s: &str) -> CharacterId {
        CharacterId::parse(s).unwrap()
    }

    #[test]
    fn good_queries_parse_sorted_with_their_pairs() {
        let got = q("characters=bob,alice&since=alice:12,bob:40&epoch=bob:e1&topics=face").unwrap();
        assert_eq!(got.characters, vec![c("alice"), c("bob")]);
        assert_eq!(got.since.get(&c("alice")), Some(&12));
        assert_eq!(got.since.get(&c("bob")), Some(&40));
        assert_eq!(got.epoch.get(&c("bob")).map(String::as_str), Some("e1"));
        assert_eq!(got.epoch.get(&c("alice")), None);
        assert_eq!(got.topics.len(), 1);
        let sixteen: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
        let got = q(&format!("characters={}", sixteen.join(","))).unwrap();
        assert_eq!(got.characters.len(), 16);
        assert!(!q("characters=a&presence=false").unwrap().presence);
        assert!(q("characters=a&presence=true").unwrap().presence);
    }

    /// Every bad shape is a 400 naming what is wrong.
    #[test]
    fn bad_queries_are_400() {
        let seventeen: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
        let seventeen = format!("characters={}", seventeen.join(","));
        let cases: Vec<(&str, &str)> = vec![
            ("", "required"),
            ("characters=", "characters"),
            ("characters=a,a", "more than once"),
            ("characters=a,b%20", "characters"),
            ("characters=a,,b", "characters"),
            (seventeen.as_str(), "at most 16"),
            ("characters=a&characters=b", "more than once"),
            ("characters=a,b&since=a", "character:value"),
            ("characters=a,b&since=a:x", "character:value"),
            ("characters=a,b&since=a:-1", "character:value"),
            ("characters=a,b&since=a:1,a:2", "more than once"),
            ("characters=a,b&since=z:1", "not in `characters`"),
            ("characters=a,b&since=", "character:value"),
            ("characters=a,b&epoch=a:", "character:value"),
            ("characters=a,b&epoch=q:e", "not in `characters`"),
            ("characters=a&presence=yes", "presence"),
            ("characters=a&topics=a..b", "filter"),
        ];
        for (query, needle) in cases {
            let e = q(query).expect_err(query);
            assert_eq!(e.status(), 400, "{query}");
            assert!(e.message.contains(needle), "{query}: {}", e.message);
        }
    }

    #[test]
    fn scene_names_are_deterministic_and_never_a_character_or_relay() {
        let a = scene_name(&[c("alice"), c("bob")]);
        assert_eq!(a, scene_name(&[c("alice"), c("bob")]));
        assert_ne!(a, scene_name(&[c("alice"), c("bobb")]));
        assert_ne!(
            scene_name(&[c("ab"), c("c")]),
            scene_name(&[c("a"), c("bc")])
        );
        assert!(is_scene_name(&a));
        assert!(CharacterId::parse(&a).is_err());
        assert_eq!(crate::relays::parse_relay_name(&a), None);
        assert!(!is_scene_name("alice"));
        assert!(!is_scene_name("alice~r1"));
        assert_eq!(characters_key(&[c("a"), c("b")]), "a,b");
    }

    #[test]
    fn shards_follow_one_another_up_to_the_bound() {
        let base = scene_name(&[c("alice"), c("bob")]);
        let one = next_shard(&base).unwrap();
        assert_eq!(one, format!("{base}~1"));
        assert_eq!(next_shard(&one), Some(format!("{base}~2")));
        assert!(is_scene_name(&one));
        let last = format!("{base}~{}", MAX_SCENE_SHARDS - 1);
        assert!(is_scene_name(&last));
        assert_eq!(next_shard(&last), None);
        for bad in [
            format!("{base}~0"),
            format!("{base}~01"),
            format!("{base}~{MAX_SCENE_SHARDS}"),
            format!("{base}~"),
            format!("{base}~x"),
            format!("{base}~1~2"),
        ] {
            assert!(!is_scene_name(&bad), "{bad}");
            assert_eq!(next_shard(&bad), None, "{bad}");
        }
        assert_eq!(
            parse_registry_entry(&format!("alice{one}")),
            Some(c("alice"))
        );
        assert_eq!(crate::relays::parse_relay_name(&one), None);
    }

    #[test]
    fn registry_entries_name_their_character() {
        let scene = scene_name(&[c("alice"), c("bob")]);
        let entry = registry_entry(&c("alice"), &scene);
        assert_eq!(parse_registry_entry(&entry), Some(c("alice")));
        for other in [
            "alice",
            "alice~r1",
            scene.as_str(),
            "al ice~s0123456789abcdef",
            "a~s12",
        ] {
            assert_eq!(parse_registry_entry(other), None, "{other}");
        }
    }
}
