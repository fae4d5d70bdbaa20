//! The history archive's layout. Commands older than the newest
//! `HISTORY_LIMIT` move from the character's SQLite storage into KV pages of
//! a fixed number of seqs: page `n` holds seqs `n*size+1 ..= (n+1)*size`
//! under `hist:<character>:<epoch>:<n>`. The epoch in the key means pages of
//! a lost history are never mixed with a new one.

use serde::{Deserialize, Serialize};

use crate::hub::StoredCommand;
use crate::protocol::Command;
use crate::topic::{CharacterId, CommandName, Topic};

/// Seqs per KV page for a given history limit: small limits get small pages
/// so the archive is exercised, large ones are capped to keep pages small.
pub fn page_size(history_limit: u64) -> u64 {
    (history_limit / 4).clamp(1, 100)
}

/// The page holding `seq` (seq starts at 1).
pub fn page_of(seq: u64, size: u64) -> u64 {
    seq.saturating_sub(1) / size.max(1)
}

/// The first and last seq of page `page`.
pub fn page_bounds(page: u64, size: u64) -> (u64, u64) {
    let size = size.max(1);
    (page * size + 1, (page + 1) * size)
}

pub fn page_key(character: &CharacterId, epoch: &str, page: u64) -> String {
    format!("hist:{}:{epoch}:{page:012}", character.as_str())
}

/// Whether the next page (after `archived_through`) may move out of SQLite:
/// only when the newest `history_limit` commands stay behind.
pub fn next_page_ready(
    archived_through: u64,
    latest_seq: u64,
    history_limit: u64,
    size: u64,
) -> Option<(u64, u64)> {
    let (from, to) = page_bounds(page_of(archived_through + 1, size), size);
    (latest_seq >= to.saturating_add(history_limit)).then_some((from, to))
}

/// The rows a character's SQLite holds beyond the archive (the newest
/// `HISTORY_LIMIT` included, which stay there by design).
pub fn unarchived(archived_through: u64, latest_seq: u64) -> u64 {
    latest_seq.saturating_sub(archived_through)
}

/// The high-water mark of unarchived rows: `configured` (the var
/// `HISTORY_BACKLOG_LIMIT`), by default ten times `history_limit`, and never
/// below `history_limit` plus two pages, so a working archive never trips it.
pub fn backlog_limit(configured: Option<u64>, history_limit: u64, page_size: u64) -> u64 {
    let floor = history_limit.saturating_add(page_size.saturating_mul(2));
    configured
        .unwrap_or(history_limit.saturating_mul(10))
        .max(floor)
}

/// Whether a publish must be refused: the unarchived rows reached the mark.
/// Nothing is deleted unarchived, so this is what bounds SQLite when the
/// archive cannot keep up.
pub fn backlog_full(archived_through: u64, latest_seq: u64, limit: u64) -> bool {
    unarchived(archived_through, latest_seq) >= limit
}

#[derive(Serialize, Deserialize)]
struct Row {
    seq: u64,
    ts: u64,
    topic: String,
    name: String,
    params: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    duration_ms: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    /// Absent in pages written before commands had `at`, and when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    /// Sent only when true, so pages and feeds without retained commands
    /// keep their shape.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    retain: bool,
}

fn page_rows<'a>(rows: impl IntoIterator<Item = &'a StoredCommand>) -> Vec<Row> {
    rows.into_iter()
        .map(|r| Row {
            seq: r.seq,
            ts: r.ts,
            topic: r.command.topic.as_str().to_string(),
            name: r.command.name.as_str().to_string(),
            params: r.command.params.clone(),
            duration_ms: r.command.duration_ms,
            id: r.command.id.clone(),
            at: r.command.at,
            retain: r.command.retain,
        })
        .collect()
}

pub fn encode_page(rows: &[StoredCommand]) -> String {
    serde_json::to_string(&page_rows(rows)).unwrap_or_else(|_| "[]".to_string())
}

/// [`encode_page`]'s rows as a JSON value (a relay feed or replay).
pub fn rows_value<'a>(rows: impl IntoIterator<Item = &'a StoredCommand>) -> serde_json::Value {
    serde_json::to_value(page_rows(rows)).unwrap_or_else(|_| serde_json::json!([]))
}

/// Decodes rows sent as a JSON value, like [`decode_page`].
pub fn decode_rows(value: serde_json::Value) -> Option<Vec<StoredCommand>> {
    let rows: Vec<Row> = serde_json::from_value(value).ok()?;
    Some(rows.into_iter().filter_map(row_command).collect())
}

fn row_command(r: Row) -> Option<StoredCommand> {
    Some(StoredCommand {
        seq: r.seq,
        ts: r.ts,
        command: Command {
            topic: Topic::parse(&r.topic).ok()?,
            name: CommandName::parse(&r.name).ok()?,
            params: r.params,
            duration_ms: r.duration_ms,
            id: r.id,
            at: r.at,
            retain: r.retain,
        },
    })
}

/// Decodes a page; rows that fail validation are dropped (a gap, which the
/// reader reports as incomplete) rather than failing the whole page.
pub fn decode_page(json: &str) -> Option<Vec<StoredCommand>> {
    let rows: Vec<Row> = serde_json::from_str(json).ok()?;
    Some(rows.into_iter().filter_map(row_command).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64) -> StoredCommand {
        StoredCommand {
            seq,
            ts: seq * 10,
            command: Command {
                topic: Topic::parse("face").unwrap(),
                name: CommandName::parse("smile").unwrap(),
                params: serde_json::Map::new(),
                duration_ms: Some(5),
                id: Some(format!("id{seq}")),
                at: seq.is_multiple_of(2).then_some(seq * 100),
                retain: seq.is_multiple_of(2),
            },
        }
    }

    #[test]
    fn pages_partition_the_seqs() {
        let size = page_size(10);
        assert_eq!(size, 2);
        assert_eq!(page_size(1000), 100);
        assert_eq!(page_size(1), 1);
        for seq in 1..50 {
            let (from, to) = page_bounds(page_of(seq, size), size);
            assert!(from <= seq && seq <= to);
            assert_eq!(to - from + 1, size);
        }
        assert_eq!(page_bounds(0, 100), (1, 100));
    }

    #[test]
    fn a_page_moves_only_when_the_newest_limit_stays_behind() {
        // limit 10, pages of 2: seqs 1-2 may move once seq 12 exists.
        assert_eq!(next_page_ready(0, 11, 10, 2), None);
        assert_eq!(next_page_ready(0, 12, 10, 2), Some((1, 2)));
        assert_eq!(next_page_ready(2, 13, 10, 2), None);
        assert_eq!(next_page_ready(2, 14, 10, 2), Some((3, 4)));
    }

    #[test]
    fn pages_round_trip() {
        let rows: Vec<StoredCommand> = (1..=3).map(row).collect();
        assert_eq!(decode_page(&encode_page(&rows)).unwrap(), rows);
        assert!(decode_page("not json").is_none());
        assert_eq!(decode_rows(rows_value(&rows)).unwrap(), rows);
    }

    #[test]
    fn at_is_kept_and_pages_without_it_still_decode() {
        let rows: Vec<StoredCommand> = (1..=2).map(row).collect();
        let page = encode_page(&rows);
        // Only the row that has one carries `at`.
        assert_eq!(page.matches("\"at\"").count(), 1, "{page}");
        let old = r#"[{"seq":1,"ts":5,"topic":"face","name":"smile","params":{}}]"#;
        let decoded = decode_page(old).unwrap();
        assert_eq!(decoded[0].command.at, None);
        assert_eq!(decoded[0].ts, 5);
    }

    #[test]
    fn the_backlog_mark_defaults_to_ten_limits_and_never_trips_a_working_archive() {
        assert_eq!(backlog_limit(None, 1000, 100), 10_000);
        assert_eq!(backlog_limit(Some(50), 10, 2), 50);
        assert_eq!(
            backlog_limit(Some(3), 10, 2),
            14,
            "floored at limit + 2 pages"
        );
        assert_eq!(backlog_limit(None, 1, 1), 10);
        // A working archive holds at most limit + one page - 1 rows after each
        // publish settles: under the floor for every limit.
        for limit in [1, 4, 10, 99, 1000, 5000] {
            let size = page_size(limit);
            let mark = backlog_limit(Some(0), limit, size);
            let mut archived = 0;
            for seq in 1..=3 * limit + 7 {
                while let Some((_, to)) = next_page_ready(archived, seq, limit, size) {
                    archived = to;
                }
                assert!(
                    !backlog_full(archived, seq, mark),
                    "limit {limit} seq {seq}"
                );
            }
        }
        assert!(backlog_full(0, 10, 10));
        assert!(!backlog_full(0, 9, 10));
        assert_eq!(unarchived(5, 3), 0);
    }

    #[test]
    fn keys_carry_character_and_epoch() {
        let c = CharacterId::parse("npc-7").unwrap();
        assert_eq!(page_key(&c, "e1", 3), "hist:npc-7:e1:000000000003");
    }
}
