//! The one catalogue of numbers the gateway promises: WebSocket close codes
//! (with their reason and whether a client should reconnect) and the limits
//! and windows of the contract. The Worker, the hub and the tests read them
//! from here; a host test checks that `docs/protocol.md` and `public/client.mjs`
//! name the same close codes, so the three cannot drift apart.

/// Close codes the gateway sends (contract §5), numbered like centrifuge's
/// disconnect catalogue: 4xxx are ours, 1xxx the protocol's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseCode {
    /// The socket's token expired while it was connected.
    TokenExpired,
    /// The caller's rights were withdrawn while it was connected.
    RightsWithdrawn,
    /// An admin disconnected the socket.
    ByAdmin,
    /// Too many consecutive refused frames.
    BadFrames,
    /// A fault of ours (storing a client publish failed, lost state on wake).
    Internal,
}

impl CloseCode {
    /// Every code, for documentation checks and tests.
    pub const ALL: [CloseCode; 5] = [
        CloseCode::TokenExpired,
        CloseCode::RightsWithdrawn,
        CloseCode::ByAdmin,
        CloseCode::BadFrames,
        CloseCode::Internal,
    ];

    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::TokenExpired => 4001,
            CloseCode::RightsWithdrawn => 4003,
            CloseCode::ByAdmin => 4010,
            CloseCode::BadFrames => 4400,
            CloseCode::Internal => 1011,
        }
    }

    /// The close frame's reason text (also the log's reason).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::TokenExpired => "token expired",
            CloseCode::RightsWithdrawn => "rights withdrawn",
            CloseCode::ByAdmin => "disconnected by admin",
            CloseCode::BadFrames => "too many bad frames",
            CloseCode::Internal => "internal error",
        }
    }

    /// Whether a client should reconnect after it: not after the ones that
    /// would only be refused or closed again.
    pub fn reconnect(self) -> bool {
        matches!(self, CloseCode::BadFrames | CloseCode::Internal)
    }

    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// The code to answer a client's close frame with, completing the closing
/// handshake: the client's own code where it may be sent on the wire, else
/// 1000 (1005 and 1006 only report that no code or no frame was seen).
pub fn echo_close_code(code: u16) -> u16 {
    if matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        code
    } else {
        1000
    }
}

/// An `id` published again within this window is not delivered again (§2).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Consecutive refused frames after which a socket is closed with 4400.
pub const MAX_BAD_FRAMES: u32 = 10;
/// Largest HTTP request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest single command, measured as its compact JSON serialization.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Most commands in one publish, or characters in one broadcast.
pub const MAX_BATCH: usize = 100;
/// Largest incoming WebSocket text frame.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Largest `duration_ms`.
pub const MAX_DURATION_MS: u64 = 600_000;
/// Longest idempotency `id`, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Most filters one subscription holds.
pub const MAX_FILTERS: usize = 32;
/// Longest batching window a deployment may configure.
pub const MAX_BATCH_WINDOW_MS: u64 = 10_000;
/// Most idempotency ids one character's hub holds. Past it the oldest id is
/// forgotten before its window ends, so publishing it again within its 5
/// minutes may be stored and delivered again.
pub const MAX_IDEMPOTENCY_IDS: usize = 10_000;
/// Presence `join`/`leave` frames are sent only while the character has at
/// most this many sockets (counting the one joining, before a leave): each is
/// one frame to every presence socket, so a crowd would make every connect
/// and disconnect cost a fan-out.
pub const MAX_PRESENCE_SOCKETS: usize = 256;
/// Largest `batch` frame: a window's frames for one socket are split over
/// several `batch` frames below it (Cloudflare's WebSocket messages are at
/// most 1 MiB).
pub const MAX_BATCH_FRAME_BYTES: usize = 512 * 1024;
/// Default most sockets per character (`MAX_SUBSCRIBERS`); a subscribe past
/// it is refused with 503 `character_full` before the upgrade.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;
/// Default most sockets one object holds (`FANOUT_LIMIT`); past it a
/// character's new subscribers go to relay objects. Measured: a delivery
/// costs 26 to 39 µs of one object's CPU (BENCHMARKS.md), so one command to
/// 1,000 sockets is a 26 to 39 ms turn, and the 1,000-socket fan-out check
/// (README) gave p99 70 to 82 ms; with the default `MAX_SUBSCRIBERS` a
/// character then needs at most 10 objects.
pub const DEFAULT_FANOUT_LIMIT: usize = 1000;
/// Smallest `FANOUT_LIMIT` (smaller values are raised to it): it bounds how
/// many relays one character can need.
pub const MIN_FANOUT_LIMIT: usize = 10;
/// Largest `FANOUT_LIMIT`: the runtime's own bound on WebSockets per object.
pub const MAX_FANOUT_LIMIT: usize = 32_768;
/// Most relay objects one character uses; with every relay full, a
/// subscribe gets 503 `character_full` even below `MAX_SUBSCRIBERS`. Each
/// publish is one request per relay, so this bounds that too.
pub const MAX_RELAYS: u32 = 100;
/// Most topics one character holds a retained command for (contract §8,
/// "Retained commands"); a publish that would retain one more topic is
/// refused with 413 `payload_too_large`, nothing stored. Each is at most
/// 16 KiB, so a character's retained set stays within 1 MiB.
pub const MAX_RETAINED_TOPICS: usize = 64;
/// Most rows the character's object sends a relay in one request; more go
/// in the next one (each row is at most 16 KiB serialized).
pub const MAX_FEED_ROWS: u64 = 100;
/// Rows a relay keeps in memory for resumes of its sockets; an older
/// `since` is read from the character's object.
pub const RELAY_RING_ROWS: usize = 1000;
/// Most commands one resume replays when the `RESUME_LIMIT` var is unset
/// (contract §8); past it the `recovered` frame says `truncated: true`.
pub const DEFAULT_RESUME_LIMIT: u64 = 1000;
/// Largest `RESUME_LIMIT` a deployment may configure (larger values are
/// clamped): one resume stays a few megabytes at most.
pub const MAX_RESUME_LIMIT: u64 = 10_000;
/// Most KV archive pages one resume reads: one round of concurrent reads
/// ([`crate::reader::PAGES_PER_STEP`]). Enough for the default limit with
/// the largest pages; a filter that matches little is cut here instead of
/// reading the whole archive, and the client pages on from `next_since`.
pub const RESUME_MAX_PAGES: u64 = 20;
const _: () = assert!(RESUME_MAX_PAGES <= crate::reader::PAGES_PER_STEP);
/// Most KV archive pages one `GET .../history` reads, whether or not its
/// filter matches: one round of concurrent reads, enough for the largest
/// `limit` (1000) with the largest pages. A read cut here answers
/// `next_since`, so a client pages on even when nothing matched.
pub const HISTORY_MAX_PAGES: u64 = 20;
const _: () = assert!(HISTORY_MAX_PAGES <= crate::reader::PAGES_PER_STEP);
const _: () = assert!(DEFAULT_RESUME_LIMIT <= MAX_RESUME_LIMIT);

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> String {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        std::fs::read_to_string(format!("{root}/{path}")).unwrap()
    }

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(1000), None);
    }

    #[test]
    fn echo_never_sends_a_reserved_code() {
        assert_eq!(echo_close_code(1005), 1000);
        assert_eq!(echo_close_code(1006), 1000);
        assert_eq!(echo_close_code(1015), 1000);
        assert_eq!(echo_close_code(4321), 4321);
        assert_eq!(echo_close_code(1001), 1001);
        assert_eq!(echo_close_code(0), 1000);
    }

    /// docs/protocol.md names every 4xxx code with its reason.
    #[test]
    fn the_protocol_doc_lists_every_code() {
        let doc = read("docs/protocol.md");
        for c in CloseCode::ALL.into_iter().filter(|c| c.code() >= 4000) {
            let entry = format!("| {} | {}", c.code(), c.reason());
            assert!(doc.contains(&entry), "docs/protocol.md lacks `{entry}`");
        }
    }

    /// With every command matching, the default resume is cut by its limit,
    /// not by the page bound: pages hold at most 100 seqs and a resume that
    /// starts mid-page needs one page more.
    #[test]
    fn the_page_bound_covers_the_default_resume() {
        let largest_page = crate::archive::page_size(u64::MAX);
        let needed = DEFAULT_RESUME_LIMIT.div_ceil(largest_page) + 1;
        assert!(needed <= RESUME_MAX_PAGES, "{needed} pages needed");
        // Likewise the largest history page.
        let needed = crate::query::HISTORY_MAX_LIMIT.div_ceil(largest_page) + 1;
        assert!(needed <= HISTORY_MAX_PAGES, "{needed} pages needed");
    }

    /// docs/protocol.md states the resume bounds this catalogue sets.
    #[test]
    fn the_protocol_doc_states_the_resume_bounds() {
        let doc = read("docs/protocol.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for entry in [
            format!("reads at most {RESUME_MAX_PAGES} KV archive pages"),
            format!("at most {HISTORY_MAX_PAGES} KV archive pages per request"),
            "default 1,000, at most 10,000".to_string(),
        ] {
            assert!(doc.contains(&entry), "docs/protocol.md lacks `{entry}`");
        }
        assert_eq!((DEFAULT_RESUME_LIMIT, MAX_RESUME_LIMIT), (1000, 10_000));
    }

    /// The JS client stops after exactly the codes that say not to reconnect.
    #[test]
    fn the_client_stops_on_exactly_the_final_codes() {
        let client = read("public/client.mjs");
        let line = client
            .lines()
            .find(|l| l.starts_with("const DEFAULT_FATAL = ["))
            .unwrap();
        let mut listed: Vec<u16> = line
            .trim_start_matches("const DEFAULT_FATAL = [")
            .trim_end_matches("];")
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect();
        listed.sort_unstable();
        let final_codes: Vec<u16> = CloseCode::ALL
            .into_iter()
            .filter(|c| !c.reconnect())
            .map(CloseCode::code)
            .collect();
        assert_eq!(listed, final_codes);
    }
}
