//! Text to animation (`POST /v1/characters/{c}/say`, contract §3): an ordered
//! list of regex rules turns a line of text into a `talk` command followed by
//! timed gesture commands. Sans-IO like the rest of the crate: no clock, no
//! randomness, no I/O; the same text and rules always give the same commands.
//!
//! # Rules file (JSON)
//!
//! ```json
//! {
//!   "talk": {"topic": "mouth", "ms_per_char": 60, "min_ms": 300},
//!   "rules": [
//!     {
//!       "name": "greeting",
//!       "pattern": "(?i)\\b(?:hi|hello|hey)\\b",
//!       "scope": "text",
//!       "priority": 30,
//!       "commands": [
//!         {"name": "wave", "topic": "body", "params": {"style": "hello"},
//!          "duration_ms": 1200, "max_per_text": 2}
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! Top level (unknown fields are errors everywhere):
//!
//! * `rules` (required): 1 to [`MAX_RULES`] rules, in order; rule names are unique.
//! * `talk` (optional): how the leading `talk` command is built.
//!   * `topic`: its topic when the request names none (default `mouth`).
//!   * `ms_per_char`: estimated speech time per character, 1..=10000 (default 60,
//!     about 170 words a minute).
//!   * `min_ms`: the shortest talk, 0..=600000 (default 300). The longest is
//!     always 600000 (`MAX_DURATION_MS`).
//!
//! A rule:
//!
//! * `name` (required): 1 to 64 characters, no control characters; unique.
//! * `pattern` (required): Rust `regex` syntax, at most [`MAX_PATTERN_BYTES`]
//!   bytes, compiled with a [`REGEX_SIZE_LIMIT`] size cap. Matching is linear
//!   in the text (no backtracking). Case-sensitive unless it says `(?i)`;
//!   `\b`, `\w` and case folding are Unicode-aware, but Unicode property
//!   classes such as `\p{Greek}` are not compiled in (an error at load).
//! * `scope` (optional): `"text"` (default) runs the pattern once over the whole
//!   text; `"sentence"` runs it over each sentence separately, so `^` and `$`
//!   anchor at sentence edges. A sentence ends at a newline, or after a run of
//!   `.` `!` `?` `…` that is followed by whitespace or the end of the text
//!   (so `3.14` and `example.com` do not split); the run stays in the
//!   sentence, surrounding whitespace does not.
//! * `priority` (optional): integer, default 0; higher wins (see below).
//! * `commands` (required): 1 to [`MAX_COMMANDS_PER_RULE`] commands, each yielded
//!   once per match:
//!   * `name` (required): a command name (contract §1).
//!   * `topic` (optional): a topic (contract §1). Absent: the request's topic,
//!     else `main`.
//!   * `params` (optional): a JSON object, default `{}`; the key `start_ms` is
//!     reserved (the animator sets it).
//!   * `duration_ms` (optional): integer 0..=600000, or absent/null.
//!   * `max_per_text` (optional): integer >= 1; only the first N matches of the
//!     rule (in text order) yield this command.
//!
//! # What `animate` returns
//!
//! 1. `talk` with params `{"text": <trimmed text>, "start_ms": 0}` on the request
//!    topic if given, else the file's talk topic (`mouth`); `duration_ms` =
//!    characters × `ms_per_char`, clamped to `min_ms..=600000`.
//! 2. Gestures: every match of every rule yields its commands (at most
//!    [`MAX_MATCHES_PER_RULE`] matches per rule, the earliest). Each gets
//!    `params.start_ms` = `floor(char_offset_of_match × talk_ms / text_chars)`
//!    (characters, not bytes, so emoji count once) merged over the rule's params.
//! 3. Dedup: candidates are visited by priority (high first), then `start_ms`,
//!    then rule order, then command order within the rule. A candidate is
//!    dropped if an already kept gesture has the same topic and name and an
//!    overlapping interval `[start_ms, start_ms + max(duration_ms, 1))`
//!    (absent duration counts as 0). At most `MAX_BATCH - 1` = 99 gestures
//!    are kept, the first ones in that visiting order (so the highest
//!    priorities).
//! 4. Output order: `talk` first, then the gestures by `start_ms`, then
//!    priority (high first), then rule order, then command order.
//!
//! No match gives just the `talk` command (no `idle`: a client already idles
//! when nothing plays).
//!
//! # Default English rules (`rules/default-en.json`)
//!
//! Topic scheme: speech on `mouth`, facial expressions on `face`, head
//! gestures on `head`, whole-body gestures on `body`. Rules, highest priority
//! first (all case-insensitive with word boundaries unless noted):
//!
//! | rule | priority | matches | commands |
//! |---|---|---|---|
//! | `laughter` | 50 | haha, hehe, lol, lmao, rofl, 😂 🤣 😆 😹 | `laugh` face 1500 ms (max 3) |
//! | `emoji_smile` | 40 | `:)` `:-)` `:D` `=)` `^_^` 😊 🙂 😀 😃 😄 😁 ☺ | `smile` face 1500 |
//! | `emoji_frown` | 40 | `:(` `:-(` `:'(` 😢 😞 😟 🙁 ☹ 😭 | `frown` face 1500 |
//! | `emoji_wink` | 40 | `;)` `;-)` 😉 😜 | `wink` face 400 |
//! | `emoji_heart` | 40 | `<3` ❤ 💕 💖 💗 💘 💙 💚 💛 💜 🧡 😍 🥰 | `heart` face 1500 |
//! | `thanks` | 35 | thanks, thank you/u, thx, tysm, 🙏 | `smile` face 1200 + `nod` head 600 |
//! | `apology` | 35 | sorry, apologies, I apologise/ize, my bad, excuse me, pardon | `bow_head` head 1000 |
//! | `greeting` | 30 | hi, hello, hey, hiya, howdy, greetings, good morning/afternoon/evening, 👋 | `wave` body 1200 (max 2) |
//! | `farewell` | 30 | sentence scope: bye, goodbye, bye-bye, see ya, farewell, good night, see you soon/later/…, and `see you`/`take care` ending a sentence | `wave` body 1200 (max 2) |
//! | `surprise` | 30 | wow, whoa, omg, oh my god, 😮 😲 😱 | `surprise` face 1000 |
//! | `agreement` | 25 | yes, yeah, yep, yup, sure, absolutely, agreed, of course, definitely, exactly, right, indeed, ok(ay), 👍 | `nod` head 600 |
//! | `negation` | 25 | no, nope, nah, never, not really, 👎 | `shake_head` head 800 |
//! | `question` | 20 | sentence scope: a sentence ending in `?` | `head_tilt` head 800 |
//! | `exclamation` | 15 | sentence scope: a sentence ending in `!` | `bounce` body 600 |
//! | `positive` | 10 | great, love, awesome, happy, wonderful, amazing, … | `smile` face 1200 |
//! | `negative` | 10 | sad, hate, terrible, awful, angry, horrible, … | `frown` face 1200 |

use crate::protocol::{ApiError, Command, MAX_BATCH, MAX_COMMAND_BYTES, MAX_DURATION_MS};
use crate::topic::{CommandName, Topic};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The default English rules that ship with the Worker.
pub const DEFAULT_RULES_EN: &str = include_str!("../../rules/default-en.json");
/// Longest `say` text, in bytes after trimming.
pub const MAX_SAY_BYTES: usize = 16 * 1024;
/// Most rules in one file.
pub const MAX_RULES: usize = 256;
/// Most commands one rule yields per match.
pub const MAX_COMMANDS_PER_RULE: usize = 8;
/// Longest rule pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Cap on one compiled pattern (`RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Cap on one pattern's lazy-DFA cache (`RegexBuilder::dfa_size_limit`).
pub const REGEX_DFA_LIMIT: usize = 1 << 20;
/// Matches of one rule considered per text (the earliest).
pub const MAX_MATCHES_PER_RULE: usize = 256;
/// Name of the leading speech command.
pub const TALK_COMMAND: &str = "talk";
/// Topic of `talk` when neither the request nor the file names one.
pub const DEFAULT_TALK_TOPIC: &str = "mouth";
/// Default speech rate: ms per character.
pub const DEFAULT_MS_PER_CHAR: u32 = 60;
/// Default shortest `talk`.
pub const DEFAULT_MIN_TALK_MS: u32 = 300;

const MAX_RULE_NAME_CHARS: usize = 64;
const MAX_MS_PER_CHAR: u32 = 10_000;
/// Longest valid topic (4 segments of 32 plus 3 dots), used to size-check
/// rule commands whose topic comes from the request.
const LONGEST_TOPIC_BYTES: usize = 4 * 32 + 3;

/// Turns the text of a `say` request into the commands to publish.
///
/// [`RuleAnimator`] is the built-in implementation. A model-backed animator
/// (say, one that asks an LLM for gestures) cannot live in this crate, which
/// does no I/O: it belongs in the Worker shell, which awaits the model and
/// then produces the same `Vec<Command>` shape (a leading `talk`, gestures
/// with `params.start_ms`, at most 100 commands, each valid and under 16 KiB,
/// so it can reuse [`RuleAnimator`]'s checks or fall back to it on error).
/// The shell picks the implementation by configuration; the publish path
/// after it is the same.
pub trait Animator {
    /// Commands for `text`, `topic` being the request's optional topic.
    /// Errors: `bad_request` for an empty or whitespace-only text,
    /// `payload_too_large` for a text over [`MAX_SAY_BYTES`] or whose `talk`
    /// command would serialize over `MAX_COMMAND_BYTES`.
    fn animate(&self, text: &str, topic: Option<&Topic>) -> Result<Vec<Command>, ApiError>;
}

/// A rules file that could not be loaded: which rule (index and name, when
/// known) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesError {
    /// Position of the offending rule in `rules`, if the problem is in one.
    pub index: Option<usize>,
    /// Its name, if it has a readable one.
    pub name: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl RulesError {
    fn file(message: impl Into<String>) -> Self {
        RulesError {
            index: None,
            name: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid say rules: ")?;
        match (self.index, &self.name) {
            (Some(i), Some(n)) => write!(f, "rules[{i}] ({n:?}): ")?,
            (Some(i), None) => write!(f, "rules[{i}]: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for RulesError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rules: Vec<Value>,
    #[serde(default)]
    talk: Option<RawTalk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTalk {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    ms_per_char: Option<u32>,
    #[serde(default)]
    min_ms: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    pattern: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    priority: i32,
    commands: Vec<RawCommand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    duration_ms: Option<Value>,
    #[serde(default)]
    max_per_text: Option<u32>,
}

/// Where a rule's pattern runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Once over the whole text.
    Text,
    /// Over each sentence separately.
    Sentence,
}

#[derive(Debug)]
struct RuleCommand {
    name: CommandName,
    topic: Option<Topic>,
    params: Map<String, Value>,
    duration_ms: Option<u32>,
    max_per_text: Option<u32>,
}

#[derive(Debug)]
struct Rule {
    name: String,
    regex: Regex,
    scope: Scope,
    priority: i32,
    commands: Vec<RuleCommand>,
}

#[derive(Debug)]
struct TalkConfig {
    topic: Topic,
    ms_per_char: u32,
    min_ms: u32,
}

/// The compiled rules; build once (per isolate) and share.
#[derive(Debug)]
pub struct RuleAnimator {
    rules: Vec<Rule>,
    talk: TalkConfig,
}

/// The default English rules, compiled.
pub fn default_animator() -> Result<RuleAnimator, RulesError> {
    RuleAnimator::from_json(DEFAULT_RULES_EN)
}

impl RuleAnimator {
    /// Parses and compiles a rules file (schema in the module docs).
    pub fn from_json(json: &str) -> Result<RuleAnimator, RulesError> {
        let raw: RawFile = serde_json::from_str(json)
            .map_err(|e| RulesError::file(format!("malformed rules file: {e}")))?;
        if raw.rules.is_empty() {
            return Err(RulesError::file("`rules` must not be empty"));
        }
        if raw.rules.len() > MAX_RULES {
            return Err(RulesError::file(format!(
                "`rules` may hold at most {MAX_RULES} rules, got {}",
                raw.rules.len()
            )));
        }
        let talk = compile_talk(raw.talk)?;
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
        for (i, v) in raw.rules.iter().enumerate() {
            let rule = compile_rule(i, v)?;
            if let Some(j) = rules.iter().position(|r| r.name == rule.name) {
                return Err(RulesError {
                    index: Some(i),
                    name: Some(rule.name),
                    message: format!("duplicate rule name (also rules[{j}])"),
                });
            }
            rules.push(rule);
        }
        Ok(RuleAnimator { rules, talk })
    }

    /// Rule names, in file order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Always false: a loaded file has at least one rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Estimated speech time of `chars` characters: `chars × ms_per_char`,
    /// clamped to `min_ms..=600000`.
    pub fn talk_duration_ms(&self, chars: usize) -> u32 {
        let ms = (chars as u64).saturating_mul(u64::from(self.talk.ms_per_char));
        let ms = ms.clamp(u64::from(self.talk.min_ms), MAX_DURATION_MS);
        u32::try_from(ms).unwrap_or(u32::MAX)
    }
}

fn compile_talk(raw: Option<RawTalk>) -> Result<TalkConfig, RulesError> {
    let raw = raw.unwrap_or(RawTalk {
        topic: None,
        ms_per_char: None,
        min_ms: None,
    });
    let topic = match raw.topic {
        Some(t) => Topic::parse(&t).map_err(|e| RulesError::file(format!("talk.topic: {e}")))?,
        None => Topic::parse(DEFAULT_TALK_TOPIC).map_err(|e| RulesError::file(e.0))?,
    };
    let ms_per_char = raw.ms_per_char.unwrap_or(DEFAULT_MS_PER_CHAR);
    if !(1..=MAX_MS_PER_CHAR).contains(&ms_per_char) {
        return Err(RulesError::file(format!(
            "talk.ms_per_char must be from 1 to {MAX_MS_PER_CHAR}, got {ms_per_char}"
        )));
    }
    let min_ms = raw.min_ms.unwrap_or(DEFAULT_MIN_TALK_MS);
    if u64::from(min_ms) > MAX_DURATION_MS {
        return Err(RulesError::file(format!(
            "talk.min_ms must be from 0 to {MAX_DURATION_MS}, got {min_ms}"
        )));
    }
    Ok(TalkConfig {
        topic,
        ms_per_char,
        min_ms,
    })
}

fn compile_rule(index: usize, v: &Value) -> Result<Rule, RulesError> {
    let shown_name = v
        .get("name")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(MAX_RULE_NAME_CHARS).collect::<String>());
    let err = |message: String| RulesError {
        index: Some(index),
        name: shown_name.clone(),
        message,
    };
    if !v.is_object() {
        return Err(err("a rule must be a JSON object".to_owned()));
    }
    let raw = RawRule::deserialize(v).map_err(|e| err(e.to_string()))?;
    let n = raw.name.chars().count();
    if n == 0 || n > MAX_RULE_NAME_CHARS || raw.name.chars().any(char::is_control) {
        return Err(err(format!(
            "`name` must be 1 to {MAX_RULE_NAME_CHARS} characters without control characters"
        )));
    }
    if raw.pattern.len() > MAX_PATTERN_BYTES {
        return Err(err(format!(
            "`pattern` may be at most {MAX_PATTERN_BYTES} bytes, got {}",
            raw.pattern.len()
        )));
    }
    if uses_unicode_property(&raw.pattern) {
        return Err(err(
            "bad regex in `pattern`: Unicode property classes (\\p{..}, \\P{..}) are not \
             supported; list the characters instead"
                .to_owned(),
        ));
    }
    let regex = RegexBuilder::new(&raw.pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
        .map_err(|e| err(format!("bad regex in `pattern`: {e}")))?;
    let scope = match raw.scope.as_deref() {
        None | Some("text") => Scope::Text,
        Some("sentence") => Scope::Sentence,
        Some(other) => {
            return Err(err(format!(
                "unknown scope {other:?}: expected \"text\" or \"sentence\""
            )))
        }
    };
    if raw.commands.is_empty() {
        return Err(err("`commands` must not be empty".to_owned()));
    }
    if raw.commands.len() > MAX_COMMANDS_PER_RULE {
        return Err(err(format!(
            "`commands` may hold at most {MAX_COMMANDS_PER_RULE} commands, got {}",
            raw.commands.len()
        )));
    }
    let mut commands = Vec::with_capacity(raw.commands.len());
    for (ci, c) in raw.commands.into_iter().enumerate() {
        let cerr = |m: String| err(format!("commands[{ci}]: {m}"));
        let name = CommandName::parse(&c.name).map_err(|e| cerr(e.0))?;
        let topic = match c.topic {
            Some(t) => Some(Topic::parse(&t).map_err(|e| cerr(e.0))?),
            None => None,
        };
        let params = match c.params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(cerr("`params` must be a JSON object".to_owned())),
        };
        if params.contains_key("start_ms") {
            return Err(cerr(
                "`params.start_ms` is reserved: the animator sets it".to_owned(),
            ));
        }
        let duration_ms = match c.duration_ms {
            None | Some(Value::Null) => None,
            Some(d) => match d.as_u64().filter(|n| *n <= MAX_DURATION_MS) {
                Some(n) => u32::try_from(n).ok(),
                None => {
                    return Err(cerr(format!(
                        "`duration_ms` must be an integer from 0 to {MAX_DURATION_MS}, got {d}"
                    )))
                }
            },
        };
        if c.max_per_text == Some(0) {
            return Err(cerr("`max_per_text` must be at least 1".to_owned()));
        }
        let mut cmd = RuleCommand {
            name,
            topic,
            params,
            duration_ms,
            max_per_text: c.max_per_text,
        };
        // Size check of the largest form this command can take, so animate
        // never emits an oversized gesture.
        cmd.params
            .insert("start_ms".to_owned(), Value::from(MAX_DURATION_MS));
        let longest_topic = "x".repeat(LONGEST_TOPIC_BYTES);
        let topic_str = cmd
            .topic
            .as_ref()
            .map_or(longest_topic.as_str(), |t| t.as_str());
        let size = command_json_len(topic_str, cmd.name.as_str(), &cmd.params, cmd.duration_ms);
        cmd.params.remove("start_ms");
        if size > MAX_COMMAND_BYTES {
            return Err(cerr(format!(
                "would serialize to {size} bytes, over the {MAX_COMMAND_BYTES}-byte command limit"
            )));
        }
        commands.push(cmd);
    }
    Ok(Rule {
        name: raw.name,
        regex,
        scope,
        priority: raw.priority,
        commands,
    })
}

/// True if the pattern has a `\p`/`\P` escape. Those need Unicode tables
/// that the Worker build leaves out; refusing them here keeps loading the
/// same on every build, whatever features other crates switch on.
fn uses_unicode_property(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.next(), Some('p' | 'P')) {
            return true;
        }
    }
    false
}

/// Size of the command as a publish body object, the measure that
/// `protocol::parse_command` applies (with `"id":null`, so an upper bound).
fn command_json_len(
    topic: &str,
    name: &str,
    params: &Map<String, Value>,
    duration_ms: Option<u32>,
) -> usize {
    #[derive(Serialize)]
    struct Body<'a> {
        topic: &'a str,
        name: &'a str,
        params: &'a Map<String, Value>,
        duration_ms: Option<u32>,
        id: Option<&'a str>,
    }
    crate::protocol::json_len(&Body {
        topic,
        name,
        params,
        duration_ms,
        id: None,
    })
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

fn push_sentence<'a>(out: &mut Vec<(usize, &'a str)>, text: &'a str, from: usize, to: usize) {
    let Some(s) = text.get(from..to) else {
        return;
    };
    let t = s.trim_start();
    let offset = from + (s.len() - t.len());
    let t = t.trim_end();
    if !t.is_empty() {
        out.push((offset, t));
    }
}

/// Splits `text` into sentences, each with its byte offset in `text`
/// (rules in the module docs).
pub fn split_sentences(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let end = if c == '\n' || c == '\r' {
            Some((i, i + c.len_utf8()))
        } else if is_terminator(c) {
            let mut e = i + c.len_utf8();
            while let Some(&(j, d)) = it.peek() {
                if !is_terminator(d) {
                    break;
                }
                e = j + d.len_utf8();
                it.next();
            }
            match it.peek() {
                None => Some((e, e)),
                Some(&(_, d)) if d.is_whitespace() => Some((e, e)),
                _ => None,
            }
        } else {
            None
        };
        if let Some((stop, next)) = end {
            push_sentence(&mut out, text, start, stop);
            start = next;
        }
    }
    push_sentence(&mut out, text, start, text.len());
    out
}

/// A gesture's topic: the rule's, else the request's, else `main`.
fn topic_of<'a>(cmd: &'a RuleCommand, default_topic: &'a Topic) -> &'a Topic {
    cmd.topic.as_ref().unwrap_or(default_topic)
}

#[derive(Clone, Copy)]
struct Candidate {
    start_ms: u32,
    priority: i32,
    rule: usize,
    cmd: usize,
}

impl Animator for RuleAnimator {
    fn animate(&self, text: &str, topic: Option<&Topic>) -> Result<Vec<Command>, ApiError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ApiError::bad_request(
                "field `text` must not be empty or only whitespace",
            ));
        }
        if text.len() > MAX_SAY_BYTES {
            return Err(ApiError::payload_too_large(format!(
                "field `text` may be at most {MAX_SAY_BYTES} bytes, got {}",
                text.len()
            )));
        }
        let char_starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let total_chars = char_starts.len().max(1) as u64;
        let talk_ms = self.talk_duration_ms(char_starts.len());

        let mut talk_params = Map::new();
        talk_params.insert("text".to_owned(), Value::String(text.to_owned()));
        talk_params.insert("start_ms".to_owned(), Value::from(0u32));
        let talk_topic = topic.unwrap_or(&self.talk.topic);
        let size = command_json_len(
            talk_topic.as_str(),
            TALK_COMMAND,
            &talk_params,
            Some(talk_ms),
        );
        if size > MAX_COMMAND_BYTES {
            return Err(ApiError::payload_too_large(format!(
                "field `text` is too long: its `{TALK_COMMAND}` command would serialize to \
                 {size} bytes, over the {MAX_COMMAND_BYTES}-byte command limit"
            )));
        }
        let talk_name = CommandName::parse(TALK_COMMAND)?;

        let start_ms_at = |byte: usize| -> u32 {
            let ch = char_starts.partition_point(|&b| b < byte) as u64;
            u32::try_from(ch * u64::from(talk_ms) / total_chars).unwrap_or(u32::MAX)
        };

        // 1. Candidates.
        let mut sentences: Option<Vec<(usize, &str)>> = None;
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut counts: Vec<u32> = Vec::with_capacity(MAX_COMMANDS_PER_RULE);
        let whole = [(0usize, text)];
        for (ri, rule) in self.rules.iter().enumerate() {
            let regions: &[(usize, &str)] = match rule.scope {
                Scope::Text => &whole,
                Scope::Sentence => sentences.get_or_insert_with(|| split_sentences(text)),
            };
            counts.clear();
            counts.resize(rule.commands.len(), 0);
            let mut matches = 0usize;
            'regions: for &(offset, region) in regions {
                for m in rule.regex.find_iter(region) {
                    if matches == MAX_MATCHES_PER_RULE {
                        break 'regions;
                    }
                    matches += 1;
                    let start_ms = start_ms_at(offset + m.start());
                    let mut any_left = false;
                    for (ci, cmd) in rule.commands.iter().enumerate() {
                        let limit = cmd.max_per_text.unwrap_or(u32::MAX);
                        if counts[ci] < limit {
                            counts[ci] += 1;
                            candidates.push(Candidate {
                                start_ms,
                                priority: rule.priority,
                                rule: ri,
                                cmd: ci,
                            });
                            any_left |= counts[ci] < limit;
                        }
                    }
                    if !any_left {
                        break 'regions;
                    }
                }
            }
        }

        // 2. Dedup by priority, keeping at most MAX_BATCH - 1 gestures.
        candidates.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.start_ms.cmp(&b.start_ms))
                .then(a.rule.cmp(&b.rule))
                .then(a.cmd.cmp(&b.cmd))
        });
        let main = Topic::main();
        let default_topic = topic.unwrap_or(&main);
        let mut kept_intervals: BTreeMap<(&str, &str), BTreeMap<u32, u64>> = BTreeMap::new();
        let mut kept: Vec<Candidate> = Vec::new();
        for cand in candidates {
            if kept.len() == MAX_BATCH - 1 {
                break;
            }
            let Some(cmd) = self
                .rules
                .get(cand.rule)
                .and_then(|r| r.commands.get(cand.cmd))
            else {
                continue;
            };
            let start = u64::from(cand.start_ms);
            let end = start + u64::from(cmd.duration_ms.unwrap_or(0).max(1));
            let key = (topic_of(cmd, default_topic).as_str(), cmd.name.as_str());
            let intervals = kept_intervals.entry(key).or_default();
            // Kept intervals of one key are disjoint, so the one starting
            // last before `end` is the only one that can overlap.
            let overlaps = intervals
                .range(..u32::try_from(end).unwrap_or(u32::MAX))
                .next_back()
                .is_some_and(|(_, &e)| e > start);
            if !overlaps {
                intervals.insert(cand.start_ms, end);
                kept.push(cand);
            }
        }

        // 3. Output order.
        kept.sort_by(|a, b| {
            a.start_ms
                .cmp(&b.start_ms)
                .then(b.priority.cmp(&a.priority))
                .then(a.rule.cmp(&b.rule))
                .then(a.cmd.cmp(&b.cmd))
        });
        let mut out = Vec::with_capacity(kept.len() + 1);
        out.push(Command {
            topic: talk_topic.clone(),
            name: talk_name,
            params: talk_params,
            duration_ms: Some(talk_ms),
            id: None,
            at: None,
            retain: false,
        });
        for cand in kept {
            let Some(cmd) = self
                .rules
                .get(cand.rule)
                .and_then(|r| r.commands.get(cand.cmd))
            else {
                continue;
            };
            let mut params = cmd.params.clone();
            params.insert("start_ms".to_owned(), Value::from(cand.start_ms));
            out.push(Command {
                topic: topic_of(cmd, default_topic).clone(),
                name: cmd.name.clone(),
                params,
                duration_ms: cmd.duration_ms,
                id: None,
                at: None,
                retain: false,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "animator_tests.rs"]
mod tests;
