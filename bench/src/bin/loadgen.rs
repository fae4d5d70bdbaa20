//! Load generator for the gateway and its peers (see BENCHMARKS.md).
//!
//! Opens `characters x subs` WebSocket subscribers (subscriber `i` of a character
//! filters on topic `i % topics`), publishes over keep-alive HTTP/1.1 connections at a
//! fixed rate or as fast as the server answers, and checks every delivery against the
//! publish answers: lost, duplicated, out-of-order and misrouted commands must be 0.
//! Latency is publish-to-receive: the publisher puts its monotonic send time into
//! `params.t`, the subscriber subtracts it from its receive time.
//!
//! In `rate` phases the latency is measured from each command's scheduled send
//! time (so a server that falls behind its schedule is charged for the wait).
//!
//! `--idle` opens the sockets, measures the resident memory of a process tree
//! before and after, and publishes nothing. `--slow N` adds N subscribers that
//! stop reading after their welcome; `--reconnect SECS` measures how many
//! subscribe-with-`since` connections per second the server completes.
//!
//! Exit status: 1 when any phase lost, duplicated, reordered or misrouted a
//! command, or when the server's `delivered` total differs from the deliveries
//! received (with `--delivered-owner-only`: exceeds them; ours with relays
//! counts its own object's sockets only), or a resume replayed the wrong
//! commands; the JSON line is written
//! first, with `"ok": false` and the reasons in `failures`.

use anyhow::{anyhow, bail, Context, Result};
use bench::{self_cpu_seconds, tree_roles, tree_rss, ReadBuf, RoleSample, ROLES};
use clap::Parser;
use dashmap::DashMap;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Clone)]
#[command(about = "Gateway load generator", args_override_self = true)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8901
    #[arg(long)]
    url: String,
    /// Server label in the results (ours, partyserver, native).
    #[arg(long, default_value = "ours")]
    label: String,
    /// Scenario label in the results.
    #[arg(long, default_value = "adhoc")]
    scenario: String,
    /// Number of characters.
    #[arg(long, default_value_t = 1)]
    characters: usize,
    /// Subscribers per character.
    #[arg(long, default_value_t = 1)]
    subs: usize,
    /// Number of topics: subscriber i filters on `t{i % topics}`, command k goes to
    /// character `k % characters` with topic `t{(k / characters) % topics}`.
    /// With 1 the single topic is `main`.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Publish phases run one after the other on the same sockets, each reported on
    /// its own line: `max:SECS` (as fast as the server answers) or `rate:CMDS_PER_S:SECS`.
    #[arg(long, default_value = "max:5", value_delimiter = ',')]
    phases: Vec<String>,
    /// Publisher connections (each has one request in flight).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Stop after this many commands even if the duration has not passed (0 = no cap).
    #[arg(long, default_value_t = 0)]
    max_commands: u64,
    /// Sockets opened concurrently while connecting.
    #[arg(long, default_value_t = 32)]
    connect_parallel: usize,
    /// Longest wait after the last publish for outstanding deliveries, seconds.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Size of each published command (its JSON body) in bytes: `params.pad` is
    /// filled up to it.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Extra subscribers on the first character's first topic that stop reading
    /// after their welcome (receive buffer 4 KiB); not part of the accounting.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Reconnect mode: for this many seconds, `--reconnect-parallel` clients
    /// each subscribe to the first character with `since` (10 commands back),
    /// read the welcome and (with `--resume`) the replay up to `recovered`,
    /// close, and start again. Publishes 20 commands first.
    #[arg(long)]
    reconnect: Option<f64>,
    /// Concurrent clients of the reconnect mode.
    #[arg(long, default_value_t = 16)]
    reconnect_parallel: usize,
    /// Reconnect mode: the server replays `since` and ends with `recovered`
    /// (ours, the durable peer); without it only the welcome is awaited.
    #[arg(long)]
    resume: bool,
    /// Round number in the results (scripts/bench.sh runs several).
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Character name prefix (unique per run so every scenario starts fresh).
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Idle mode: open the sockets, measure RSS, publish nothing.
    #[arg(long)]
    idle: bool,
    /// Idle mode: root pid of the server process tree to measure.
    #[arg(long)]
    rss_pid: Option<u32>,
    /// Idle mode: only count processes whose name contains this (e.g. workerd).
    #[arg(long, default_value = "")]
    rss_match: String,
    /// Root pid of the server's process tree: each phase then reports the CPU
    /// time the whole tree used from its first publish to its last delivery,
    /// and the CPU and resident memory of each part (runtime workerd, proxy
    /// workerd, launcher).
    #[arg(long)]
    cpu_pid: Option<u32>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    out: Option<String>,
    /// Give every command an idempotency key (`id`), as retry-safe publishers do.
    #[arg(long)]
    ids: bool,
    /// The server's `delivered` counts only the sockets of the character's own
    /// object (ours with relays: relays deliver after the answer), so the check
    /// is that it is at most the deliveries received, not equal to them.
    #[arg(long)]
    delivered_owner_only: bool,
    /// After the sockets open, read ours' admin listing of the first character
    /// (`GET /v1/admin/characters/{c}/subscriptions`, auth off) and record how
    /// many objects hold its sockets: `objects` (the character's own and the
    /// relays holding sockets), `relays_fed`, `listed_subscribers`,
    /// `owner_sockets` and `most_sockets_per_object`.
    #[arg(long)]
    listing: bool,
}

/// What one subscriber saw, keyed by subscriber index in a shared DashMap.
struct ConnStats {
    character: usize,
    topic: usize,
    received: HashSet<u64>,
    max_seq: u64,
    duplicated: u64,
    out_of_order: u64,
    misrouted: u64,
    frames: u64,
    latency: Histogram<u64>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    character: Option<&'a str>,
    #[serde(default)]
    topic: Option<&'a str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    params: Option<Params>,
    /// The command frames of a `batch` frame.
    #[serde(default, borrow)]
    commands: Option<Vec<Frame<'a>>>,
}

#[derive(Deserialize)]
struct Params {
    /// The load generator's send time; absent in commands it did not time.
    #[serde(default)]
    t: Option<u64>,
}

struct Shared {
    start: Instant,
    stats: DashMap<usize, ConnStats>,
    received: AtomicU64,
    last_recv_ns: AtomicU64,
    first_pub_ns: AtomicU64,
    expected: AtomicU64,
    next_k: AtomicU64,
    stop: AtomicBool,
    publish_errors: AtomicU64,
    /// Sum of `delivered` in the publish answers.
    server_delivered: AtomicU64,
    /// Subscriber sockets that ended before the run did (server close or
    /// error), and the last close code seen: a loss with these above 0 was a
    /// dropped socket, not a missing send.
    ended_early: AtomicU64,
    last_close_code: AtomicU64,
    /// Text frames that were not valid frames.
    unparsed: AtomicU64,
    /// (character, topic, seq) of every accepted command.
    published: Mutex<Vec<(usize, usize, u64)>>,
    pub_latency: Mutex<Histogram<u64>>,
    /// Sum of the publish answer times (request written to answer read), ns.
    answer_ns: AtomicU64,
    /// Batch frames received (batching servers).
    batch_frames: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

fn topic_name(args: &Args, t: usize) -> String {
    if args.topics <= 1 {
        "main".to_string()
    } else {
        format!("t{t}")
    }
}

/// One GET over a fresh connection; the answer's JSON body (status 200 only).
async fn get_json(host: &str, at: &str) -> Result<serde_json::Value> {
    let mut stream = TcpStream::connect(host).await?;
    let req = format!("GET {at} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut rb = ReadBuf::new();
    let head = rb
        .read_head(&mut stream)
        .await?
        .ok_or_else(|| anyhow!("closed before answering GET {at}"))?;
    let body = rb.read_body(&mut stream, &head).await?;
    let status = head.first.get(1).cloned().unwrap_or_default();
    if status != "200" {
        bail!(
            "GET {at} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

fn char_name(args: &Args, c: usize) -> String {
    format!("{}-{c}", args.prefix)
}

fn hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

fn host_port(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url must start with http://"))?;
    Ok(rest.trim_end_matches('/').to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let host = host_port(&args.url)?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        stats: DashMap::new(),
        received: AtomicU64::new(0),
        last_recv_ns: AtomicU64::new(0),
        first_pub_ns: AtomicU64::new(u64::MAX),
        expected: AtomicU64::new(0),
        next_k: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        publish_errors: AtomicU64::new(0),
        server_delivered: AtomicU64::new(0),
        ended_early: AtomicU64::new(0),
        last_close_code: AtomicU64::new(0),
        unparsed: AtomicU64::new(0),
        published: Mutex::new(Vec::new()),
        pub_latency: Mutex::new(hist()?),
        answer_ns: AtomicU64::new(0),
        batch_frames: AtomicU64::new(0),
    });
    let port: u16 = host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(80);
    if let Some(secs) = args.reconnect {
        return reconnect_mode(&args, &host, port, secs).await;
    }

    let rss_before = match args.rss_pid {
        Some(pid) => Some(tree_rss(pid, &args.rss_match)?),
        None => None,
    };

    // Open every subscriber and wait for its welcome.
    let total_subs = args.characters * args.subs;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let connect_start = Instant::now();
    let mut ready = Vec::with_capacity(total_subs);
    let mut tasks = Vec::with_capacity(total_subs);
    for i in 0..total_subs {
        let character = i % args.characters;
        let topic = (i / args.characters) % args.topics.max(1);
        shared.stats.insert(
            i,
            ConnStats {
                character,
                topic,
                received: HashSet::new(),
                max_seq: 0,
                duplicated: 0,
                out_of_order: 0,
                misrouted: 0,
                frames: 0,
                latency: hist()?,
            },
        );
        let url = format!(
            "ws://{host}/v1/characters/{}/subscribe?topics={}",
            char_name(&args, character),
            topic_name(&args, topic)
        );
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        ready.push(ready_rx);
        let shared = shared.clone();
        let gate = gate.clone();
        let shutdown = shutdown_rx.clone();
        let args2 = args.clone();
        tasks.push(tokio::spawn(async move {
            subscriber(i, url, args2, shared, gate, shutdown, ready_tx).await
        }));
    }
    let mut connect_failures = 0u64;
    for r in ready {
        match r.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                connect_failures += 1;
                if connect_failures <= 3 {
                    eprintln!("subscriber failed: {e:#}");
                }
            }
            Err(_) => connect_failures += 1,
        }
    }
    let connect_ms = connect_start.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "[{} {}] {} subscribers open in {:.0} ms ({} failed)",
        args.label, args.scenario, total_subs, connect_ms, connect_failures
    );

    let mut result = json!({
        "label": args.label,
        "scenario": args.scenario,
        "characters": args.characters,
        "subs_per_character": args.subs,
        "subscribers": total_subs,
        "topics": args.topics,
        "connect_ms": connect_ms,
        "connect_failures": connect_failures,
    });

    if args.listing {
        let at = format!("/v1/admin/characters/{}/subscriptions", char_name(&args, 0));
        let l = get_json(&host, &at).await.context("the admin listing")?;
        let mut per: HashMap<String, u64> = HashMap::new();
        let entries = l["subscribers"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            let holder = e["relay"].as_str().unwrap_or("owner").to_string();
            *per.entry(holder).or_default() += 1;
        }
        result["objects"] = json!(per.len());
        result["relays"] = l["relays"].clone();
        result["relays_fed"] = l["relays_fed"].clone();
        result["listed_subscribers"] = json!(entries.len());
        result["owner_sockets"] = json!(per.get("owner").copied().unwrap_or(0));
        result["most_sockets_per_object"] = json!(per.values().copied().max().unwrap_or(0));
        eprintln!(
            "[{} {}] listing: {} sockets over {} objects ({} on the character's own, at most {} on one; relays fed {})",
            args.label,
            args.scenario,
            entries.len(),
            per.len(),
            per.get("owner").copied().unwrap_or(0),
            per.values().copied().max().unwrap_or(0),
            l["relays_fed"]
        );
    }

    if let (Some(pid), Some(before)) = (args.rss_pid, rss_before) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        {
            let after = tree_rss(pid, &args.rss_match)?;
            let per_1000 = (after as f64 - before as f64) * 1000.0 / total_subs.max(1) as f64;
            result["rss_before_mib"] = json!(before as f64 / 1048576.0);
            result["rss_after_mib"] = json!(after as f64 / 1048576.0);
            result["rss_per_1000_mib"] = json!(per_1000 / 1048576.0);
            eprintln!(
                "[{} idle] RSS {:.1} MiB -> {:.1} MiB: {:.2} MiB per 1,000 sockets",
                args.label,
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                per_1000 / 1048576.0
            );
        }
    }

    // Slow subscribers: open after the others, then never read again.
    let mut slow = Vec::new();
    for _ in 0..args.slow {
        let url = format!(
            "ws://{host}/v1/characters/{}/subscribe?topics={}",
            char_name(&args, 0),
            topic_name(&args, 0)
        );
        slow.push(open_slow(&host, &url).await?);
    }
    result["slow_subscribers"] = json!(args.slow);
    result["payload_bytes"] = json!(args.payload);
    result["round"] = json!(args.round);

    let mut lines = Vec::new();
    let mut failed = false;
    if args.idle {
        result["phase"] = json!("idle");
        lines.push(result.to_string());
    } else {
        for spec in &args.phases {
            let (rate, duration) = parse_phase(spec)?;
            let mut r = result.clone();
            r["phase"] = json!(spec);
            let roles_before = args.cpu_pid.map(|pid| tree_roles(pid, port)).transpose()?;
            let self_before = self_cpu_seconds()?;
            // Peak resident memory of each part while the phase runs.
            let sampling = Arc::new(AtomicBool::new(true));
            let sampler = args.cpu_pid.map(|pid| {
                let sampling = sampling.clone();
                tokio::spawn(async move {
                    let mut peak = [0u64; 3];
                    while sampling.load(Ordering::Relaxed) {
                        if let Ok(now) = tree_roles(pid, port) {
                            for (p, s) in peak.iter_mut().zip(now) {
                                *p = (*p).max(s.rss);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    peak
                })
            });
            let wall = Instant::now();
            run_publish(&args, rate, duration, &host, &shared, &mut r).await?;
            let wall_s = wall.elapsed().as_secs_f64();
            sampling.store(false, Ordering::Relaxed);
            let peak = match sampler {
                Some(h) => h.await.unwrap_or_default(),
                None => [0; 3],
            };
            let self_used = self_cpu_seconds()? - self_before;
            r["loadgen_cpu_s"] = json!(self_used);
            r["loadgen_cpu_util"] = json!(self_used / wall_s.max(1e-9));
            client_limited(&mut r);
            if let (Some(pid), Some(before)) = (args.cpu_pid, roles_before) {
                let after = tree_roles(pid, port)?;
                record_roles(&mut r, &before, &after, &peak);
                let used: f64 = after.iter().map(|s| s.cpu_s).sum::<f64>()
                    - before.iter().map(|s| s.cpu_s).sum::<f64>();
                let commands = r["commands"].as_f64().unwrap_or(0.0).max(1.0);
                let delivered = r["delivered"].as_f64().unwrap_or(0.0).max(1.0);
                r["server_cpu_s"] = json!(used);
                r["server_cpu_ms_per_command"] = json!(used * 1000.0 / commands);
                r["server_cpu_us_per_delivery"] = json!(used * 1e6 / delivered);
                eprintln!(
                    "[{} {} {spec}] server CPU {used:.2} s: {:.3} ms per command, {:.1} us per delivery; load generator CPU {self_used:.2} s ({:.0} % of its core){}",
                    args.label,
                    args.scenario,
                    used * 1000.0 / commands,
                    used * 1e6 / delivered,
                    self_used * 100.0 / wall_s.max(1e-9),
                    if r["client_limited"] == true { "; CLIENT-LIMITED" } else { "" }
                );
            }
            if r["phase"] == json!(args.phases.last()) && !slow.is_empty() {
                // Whether the server still holds the slow sockets: read what
                // they were sent, for at most 3 s.
                let (frames, closed) = drain_slow(&mut slow).await;
                r["slow_frames_read_after"] = json!(frames);
                r["slow_closed_by_server"] = json!(closed);
            }
            let failures = failures_of(&r, args.delivered_owner_only);
            r["ok"] = json!(failures.is_empty());
            if !failures.is_empty() {
                eprintln!(
                    "[{} {} {spec}] FAILED: {}",
                    args.label,
                    args.scenario,
                    failures.join("; ")
                );
                failed = true;
            }
            r["failures"] = json!(failures);
            lines.push(r.to_string());
            reset(&shared)?;
        }
    }

    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    drop(slow);

    write_lines(&args, &lines)?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn write_lines(args: &Args, lines: &[String]) -> Result<()> {
    for line in lines {
        println!("{line}");
        if let Some(path) = &args.out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {path}"))?;
            writeln!(f, "{line}")?;
        }
    }
    Ok(())
}

/// A publisher's cycle much longer than the server's answer time means the
/// load generator, not the server, set the pace (or its core was full).
fn client_limited(r: &mut serde_json::Value) {
    let answer = r["answer_mean_ms"].as_f64().unwrap_or(0.0);
    let cycle = r["cycle_mean_ms"].as_f64().unwrap_or(0.0);
    let util = r["loadgen_cpu_util"].as_f64().unwrap_or(0.0);
    let mut why = Vec::new();
    if r["mode"] == "max" && answer > 0.0 && cycle > CLIENT_LIMITED_CYCLE * answer {
        why.push(format!(
            "publisher cycle {cycle:.2} ms > {CLIENT_LIMITED_CYCLE} x answer {answer:.2} ms"
        ));
    }
    if util >= CLIENT_LIMITED_CPU {
        why.push(format!(
            "load generator at {:.0} % of its core",
            util * 100.0
        ));
    }
    r["client_limited"] = json!(!why.is_empty());
    r["client_limited_why"] = json!(why.join("; "));
}

/// A publish not answered within this counts as a publish error (a wedged
/// server then ends the phase instead of hanging it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// See `client_limited`.
const CLIENT_LIMITED_CYCLE: f64 = 1.5;
const CLIENT_LIMITED_CPU: f64 = 0.95;

fn record_roles(
    r: &mut serde_json::Value,
    before: &[RoleSample; 3],
    after: &[RoleSample; 3],
    peak: &[u64; 3],
) {
    for (i, role) in ROLES.iter().enumerate() {
        let mib = |b: u64| b as f64 / 1048576.0;
        r[format!("cpu_{role}_s")] = json!(after[i].cpu_s - before[i].cpu_s);
        r[format!("rss_{role}_start_mib")] = json!(mib(before[i].rss));
        r[format!("rss_{role}_end_mib")] = json!(mib(after[i].rss));
        r[format!("rss_{role}_peak_mib")] = json!(mib(peak[i].max(after[i].rss)));
    }
}

/// The correctness failures of one phase's result.
fn failures_of(r: &serde_json::Value, owner_only: bool) -> Vec<String> {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    for k in [
        "lost",
        "duplicated",
        "out_of_order",
        "misrouted",
        "resume_errors",
    ] {
        if n(k) > 0 {
            out.push(format!("{k} {}", n(k)));
        }
    }
    if r.get("server_delivered").is_some() {
        // The slow subscribers' deliveries are counted by the server but not
        // checked here: the server may count up to `slow_owed` more.
        let (got, said, slack) = (n("delivered"), n("server_delivered"), n("slow_owed"));
        if owner_only && said > got + slack {
            out.push(format!(
                "the server says its own object delivered {said}, more than the {got} the subscribers received"
            ));
        } else if !owner_only && (said < got || said > got + slack) {
            out.push(format!(
                "the server says it delivered {said}, the subscribers received {got}{}",
                if slack > 0 {
                    format!(" (+ up to {slack} to the slow subscribers)")
                } else {
                    String::new()
                }
            ));
        }
    }
    out
}

/// `max:SECS` is (0, SECS); `rate:R:SECS` is (R, SECS).
fn parse_phase(spec: &str) -> Result<(f64, f64)> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        ["max", secs] => Ok((0.0, secs.parse()?)),
        ["rate", r, secs] => Ok((r.parse()?, secs.parse()?)),
        _ => bail!("bad phase {spec:?}: use max:SECS or rate:CMDS_PER_S:SECS"),
    }
}

/// Clears the accounting between phases (after a drain, so nothing is in flight).
fn reset(shared: &Shared) -> Result<()> {
    for mut s in shared.stats.iter_mut() {
        s.received.clear();
        s.max_seq = 0;
        s.duplicated = 0;
        s.out_of_order = 0;
        s.misrouted = 0;
        s.frames = 0;
        s.latency.reset();
    }
    shared.received.store(0, Ordering::Relaxed);
    shared.last_recv_ns.store(0, Ordering::Relaxed);
    shared.first_pub_ns.store(u64::MAX, Ordering::Relaxed);
    shared.expected.store(0, Ordering::Relaxed);
    shared.next_k.store(0, Ordering::Relaxed);
    shared.stop.store(false, Ordering::Relaxed);
    shared.publish_errors.store(0, Ordering::Relaxed);
    shared.server_delivered.store(0, Ordering::Relaxed);
    shared.answer_ns.store(0, Ordering::Relaxed);
    shared.batch_frames.store(0, Ordering::Relaxed);
    shared
        .published
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clear();
    shared
        .pub_latency
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .reset();
    Ok(())
}

async fn run_publish(
    args: &Args,
    rate: f64,
    duration: f64,
    host: &str,
    shared: &Arc<Shared>,
    result: &mut serde_json::Value,
) -> Result<()> {
    // Subscribers per (character, topic), to know how many deliveries a command owes.
    let mut fanout: HashMap<(usize, usize), u64> = HashMap::new();
    for s in shared.stats.iter() {
        *fanout.entry((s.character, s.topic)).or_default() += 1;
    }
    let fanout = Arc::new(fanout);

    let pub_start = Instant::now();
    let deadline = pub_start + Duration::from_secs_f64(duration);
    let mut pubs = Vec::new();
    for _ in 0..args.publishers.max(1) {
        let args = args.clone();
        let host = host.to_string();
        let shared = shared.clone();
        let fanout = fanout.clone();
        pubs.push(tokio::spawn(async move {
            publisher(args, rate, host, shared, fanout, pub_start, deadline).await
        }));
    }
    for p in pubs {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("publisher failed: {e:#}"),
            Err(e) => eprintln!("publisher panicked: {e}"),
        }
    }
    let pub_end_ns = shared.now_ns();

    // Drain: wait until every owed delivery arrived, or the drain time passed.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while shared.received.load(Ordering::Relaxed) < shared.expected.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A short grace period so late duplicates or strays are counted too.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Check every subscriber against the accepted commands.
    let published = shared
        .published
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    let mut by_key: HashMap<(usize, usize), HashSet<u64>> = HashMap::new();
    for (c, t, seq) in &published {
        by_key.entry((*c, *t)).or_default().insert(*seq);
    }
    let empty = HashSet::new();
    let mut lossy_chars: HashSet<usize> = HashSet::new();
    let (mut lost, mut dup, mut ooo, mut misrouted, mut frames) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut latency = hist()?;
    for s in shared.stats.iter() {
        let expected = by_key.get(&(s.character, s.topic)).unwrap_or(&empty);
        let got = s.received.intersection(expected).count() as u64;
        lost += expected.len() as u64 - got;
        if got < expected.len() as u64 {
            lossy_chars.insert(s.character);
        }
        // Seqs received that were never published to this socket's character/topic.
        misrouted += s.misrouted + s.received.difference(expected).count() as u64;
        dup += s.duplicated;
        ooo += s.out_of_order;
        frames += s.frames;
        latency
            .add(&s.latency)
            .map_err(|e| anyhow!("histogram: {e}"))?;
    }
    let first_pub = shared.first_pub_ns.load(Ordering::Relaxed);
    let last_recv = shared.last_recv_ns.load(Ordering::Relaxed);
    let window_s = if last_recv > first_pub && first_pub != u64::MAX {
        (last_recv - first_pub) as f64 / 1e9
    } else {
        0.0
    };
    let pub_window_s = if first_pub != u64::MAX && pub_end_ns > first_pub {
        (pub_end_ns - first_pub) as f64 / 1e9
    } else {
        0.0
    };
    let commands = published.len() as u64;
    let us = |q: f64| latency.value_at_quantile(q) as f64;
    let publat = shared
        .pub_latency
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    result["mode"] = json!(if rate > 0.0 { "rate" } else { "max" });
    result["rate"] = json!(rate);
    result["publishers"] = json!(args.publishers);
    result["ids"] = json!(args.ids);
    result["duration_s"] = json!(duration);
    result["commands"] = json!(commands);
    result["publish_errors"] = json!(shared.publish_errors.load(Ordering::Relaxed));
    result["expected"] = json!(shared.expected.load(Ordering::Relaxed));
    result["delivered"] = json!(frames);
    result["deliveries_per_s"] = json!(if window_s > 0.0 {
        frames as f64 / window_s
    } else {
        0.0
    });
    result["commands_per_s"] = json!(if pub_window_s > 0.0 {
        commands as f64 / pub_window_s
    } else {
        0.0
    });
    result["p50_ms"] = json!(us(0.50) / 1000.0);
    result["p95_ms"] = json!(us(0.95) / 1000.0);
    result["p99_ms"] = json!(us(0.99) / 1000.0);
    result["max_ms"] = json!(latency.max() as f64 / 1000.0);
    result["publish_p50_ms"] = json!(publat.value_at_quantile(0.5) as f64 / 1000.0);
    result["publish_p99_ms"] = json!(publat.value_at_quantile(0.99) as f64 / 1000.0);
    let answered = publat.len();
    let attempts = answered + shared.publish_errors.load(Ordering::Relaxed);
    result["answer_mean_ms"] = json!(if answered > 0 {
        shared.answer_ns.load(Ordering::Relaxed) as f64 / answered as f64 / 1e6
    } else {
        0.0
    });
    // A publisher's time per request: its share of the publish window.
    result["cycle_mean_ms"] = json!(if attempts > 0 {
        pub_window_s * 1000.0 * args.publishers.max(1) as f64 / attempts as f64
    } else {
        0.0
    });
    result["batch_frames"] = json!(shared.batch_frames.load(Ordering::Relaxed));
    let slow_owed = published
        .iter()
        .filter(|(c, t, _)| *c == 0 && *t == 0)
        .count()
        * args.slow;
    result["slow_owed"] = json!(slow_owed);
    result["lost"] = json!(lost);
    result["server_delivered"] = json!(shared.server_delivered.load(Ordering::Relaxed));
    result["characters_with_loss"] = json!(lossy_chars.len());
    result["sockets_ended_early"] = json!(shared.ended_early.load(Ordering::Relaxed));
    result["last_close_code"] = json!(shared.last_close_code.load(Ordering::Relaxed));
    result["unparsed_frames"] = json!(shared.unparsed.load(Ordering::Relaxed));
    result["duplicated"] = json!(dup);
    result["out_of_order"] = json!(ooo);
    result["misrouted"] = json!(misrouted);
    eprintln!(
        "[{} {} {}] {} cmds ({:.0}/s), {} deliveries ({:.0}/s), p50 {:.2} p95 {:.2} p99 {:.2} max {:.2} ms; lost {} (on {} characters; server says delivered {}; sockets ended early {}, unparsed frames {}) dup {} ooo {} misrouted {} errors {}",
        args.label,
        args.scenario,
        result["phase"].as_str().unwrap_or(""),
        commands,
        result["commands_per_s"].as_f64().unwrap_or(0.0),
        frames,
        result["deliveries_per_s"].as_f64().unwrap_or(0.0),
        us(0.5) / 1000.0,
        us(0.95) / 1000.0,
        us(0.99) / 1000.0,
        latency.max() as f64 / 1000.0,
        lost,
        lossy_chars.len(),
        shared.server_delivered.load(Ordering::Relaxed),
        shared.ended_early.load(Ordering::Relaxed),
        shared.unparsed.load(Ordering::Relaxed),
        dup,
        ooo,
        misrouted,
        shared.publish_errors.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn subscriber(
    i: usize,
    url: String,
    args: Args,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) {
    let permit = gate.acquire_owned().await;
    let connected = async {
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(20),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| anyhow!("no upgrade within 20 s"))?
        .with_context(|| format!("connecting {url}"))?;
        // The first frame must be the welcome.
        let first = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .map_err(|_| anyhow!("no welcome within 20 s"))?
            .ok_or_else(|| anyhow!("closed before welcome"))??;
        let text = first.into_text()?;
        let frame: Frame = serde_json::from_str(text.as_str())?;
        if frame.kind != "welcome" {
            bail!("first frame is {:?}, not welcome", frame.kind);
        }
        Ok::<_, anyhow::Error>(ws)
    }
    .await;
    drop(permit);
    let mut ws = match connected {
        Ok(ws) => {
            let _ = ready.send(Ok(()));
            ws
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (my_char, my_topic) = match shared.stats.get(&i) {
        Some(s) => (char_name(&args, s.character), topic_name(&args, s.topic)),
        None => return,
    };
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    shared.ended_early.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                if let Message::Close(close) = &msg {
                    let code = close.as_ref().map(|c| u16::from(c.code)).unwrap_or(1005);
                    shared.last_close_code.store(u64::from(code), Ordering::Relaxed);
                }
                let Message::Text(text) = msg else { continue };
                let now = shared.now_ns();
                let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                    shared.unparsed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let kind = frame.kind;
                let commands = match kind {
                    "command" => vec![frame],
                    "batch" => {
                        shared.batch_frames.fetch_add(1, Ordering::Relaxed);
                        frame.commands.unwrap_or_default()
                    }
                    _ => continue,
                };
                let Some(mut s) = shared.stats.get_mut(&i) else { break };
                for frame in commands {
                    s.frames += 1;
                    let seq = frame.seq.unwrap_or(0);
                    if frame.kind != "command"
                        || frame.character != Some(my_char.as_str())
                        || frame.topic != Some(my_topic.as_str())
                    {
                        s.misrouted += 1;
                        continue;
                    }
                    if !s.received.insert(seq) {
                        s.duplicated += 1;
                    } else {
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        if seq < s.max_seq {
                            s.out_of_order += 1;
                        }
                    }
                    s.max_seq = s.max_seq.max(seq);
                    if let Some(t) = frame.params.and_then(|p| p.t) {
                        let lat = now.saturating_sub(t).max(1);
                        let _ = s.latency.record((lat / 1000).clamp(1, 120_000_000));
                    }
                }
                shared.last_recv_ns.fetch_max(now, Ordering::Relaxed);
            }
            _ = shutdown.changed() => {
                let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
                break;
            }
        }
    }
}

async fn publisher(
    args: Args,
    rate: f64,
    host: String,
    shared: Arc<Shared>,
    fanout: Arc<HashMap<(usize, usize), u64>>,
    pub_start: Instant,
    deadline: Instant,
) -> Result<()> {
    let mut stream = TcpStream::connect(&host).await?;
    stream.set_nodelay(true)?;
    let mut rb = ReadBuf::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Ok(());
        }
        let k = shared.next_k.fetch_add(1, Ordering::Relaxed);
        if args.max_commands > 0 && k >= args.max_commands {
            shared.stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        // At a fixed rate, latency counts from the scheduled send time.
        let mut scheduled = None;
        if rate > 0.0 {
            let due = pub_start + Duration::from_secs_f64(k as f64 / rate);
            if due >= deadline {
                return Ok(());
            }
            tokio::time::sleep_until(due.into()).await;
            scheduled = Some(due.saturating_duration_since(shared.start).as_nanos() as u64);
        }
        let c = (k as usize) % args.characters;
        let t = (k as usize / args.characters) % args.topics.max(1);
        let sent = shared.now_ns();
        let t_param = scheduled.unwrap_or(sent).min(sent);
        shared.first_pub_ns.fetch_min(sent, Ordering::Relaxed);
        let mut body = json!({
            "topic": topic_name(&args, t),
            "name": "smile",
            "params": {"t": t_param, "k": k, "intensity": 0.8},
        });
        if args.ids {
            // Unique across phases too (each phase counts k from 0).
            body["id"] = json!(format!("{}-{k}-{sent}", args.prefix));
        }
        // Filled up to --payload bytes (`,"pad":""` is 9 bytes).
        let bare = body.to_string().len() + 9;
        if args.payload > bare {
            body["params"]["pad"] = json!("x".repeat(args.payload - bare));
        }
        let body = body.to_string();
        let req = format!(
            "POST /v1/characters/{}/commands HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            char_name(&args, c),
            body.len()
        );
        let answer = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            stream.write_all(req.as_bytes()).await?;
            let head = rb
                .read_head(&mut stream)
                .await?
                .ok_or_else(|| anyhow!("server closed the publish connection"))?;
            let body = rb.read_body(&mut stream, &head).await?;
            let status = head.first.get(1).cloned().unwrap_or_default();
            if status != "200" {
                bail!(
                    "publish answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let seq = v["seqs"][0]
                .as_u64()
                .ok_or_else(|| anyhow!("publish answer without seqs: {v}"))?;
            Ok::<_, anyhow::Error>((seq, v["delivered"].as_u64().unwrap_or(0)))
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("no publish answer within {PUBLISH_TIMEOUT:?}")));
        match answer {
            Ok((seq, delivered)) => {
                shared
                    .server_delivered
                    .fetch_add(delivered, Ordering::Relaxed);
                let took = shared.now_ns().saturating_sub(sent).max(1);
                shared.answer_ns.fetch_add(took, Ordering::Relaxed);
                if let Ok(mut h) = shared.pub_latency.lock() {
                    let _ = h.record((took / 1000).clamp(1, 120_000_000));
                }
                if let Ok(mut p) = shared.published.lock() {
                    p.push((c, t, seq));
                }
                shared
                    .expected
                    .fetch_add(fanout.get(&(c, t)).copied().unwrap_or(0), Ordering::Relaxed);
            }
            Err(e) => {
                let n = shared.publish_errors.fetch_add(1, Ordering::Relaxed);
                if n < 3 {
                    eprintln!("publish failed: {e:#}");
                }
                // Start over on a fresh connection.
                stream = TcpStream::connect(&host).await?;
                stream.set_nodelay(true)?;
                rb = ReadBuf::new();
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A subscriber that reads its welcome and then nothing more, with a 4 KiB
/// receive buffer so the server's side fills up soon.
async fn open_slow(host: &str, url: &str) -> Result<Ws> {
    let addr = tokio::net::lookup_host(host)
        .await?
        .next()
        .ok_or_else(|| anyhow!("no address for {host}"))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .with_context(|| format!("connecting slow subscriber {url}"))?;
    let first = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .map_err(|_| anyhow!("slow subscriber: no welcome within 20 s"))?
        .ok_or_else(|| anyhow!("slow subscriber closed before welcome"))??;
    let text = first.into_text()?;
    let frame: Frame = serde_json::from_str(text.as_str())?;
    if frame.kind != "welcome" {
        bail!(
            "slow subscriber: first frame is {:?}, not welcome",
            frame.kind
        );
    }
    Ok(ws)
}

/// Reads what the slow subscribers were sent, for at most 3 s: the frames
/// read, and whether the server had closed any of them.
async fn drain_slow(slow: &mut [Ws]) -> (u64, bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    let (mut frames, mut closed) = (0u64, false);
    for ws in slow.iter_mut() {
        loop {
            match tokio::time::timeout_at(end, ws.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                    closed = true;
                    break;
                }
                Ok(Some(Ok(_))) => frames += 1,
                Err(_) => break,
            }
        }
    }
    (frames, closed)
}

/// One publish over a keep-alive connection: (seq of the first command, delivered).
async fn publish_one(
    stream: &mut TcpStream,
    rb: &mut ReadBuf,
    host: &str,
    character: &str,
    body: &str,
) -> Result<(u64, u64)> {
    let req = format!(
        "POST /v1/characters/{character}/commands HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let head = rb
        .read_head(stream)
        .await?
        .ok_or_else(|| anyhow!("server closed the publish connection"))?;
    let answer = rb.read_body(stream, &head).await?;
    let status = head.first.get(1).cloned().unwrap_or_default();
    if status != "200" {
        bail!(
            "publish answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&answer)?;
    let seq = v["seqs"][0]
        .as_u64()
        .ok_or_else(|| anyhow!("publish answer without seqs: {v}"))?;
    Ok((seq, v["delivered"].as_u64().unwrap_or(0)))
}

/// Commands published before the reconnect mode, and how many of them each
/// resume asks for again.
const RESUME_PUBLISHED: u64 = 20;
const RESUME_BACK: u64 = 10;

/// `--reconnect SECS`: subscribe-with-`since` connections per second.
async fn reconnect_mode(args: &Args, host: &str, port: u16, secs: f64) -> Result<()> {
    let character = char_name(args, 0);
    let mut stream = TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let mut rb = ReadBuf::new();
    let mut last = 0;
    for k in 0..RESUME_PUBLISHED {
        let body = json!({"topic": "main", "name": "smile", "params": {"k": k}}).to_string();
        last = publish_one(&mut stream, &mut rb, host, &character, &body)
            .await?
            .0;
    }
    drop(stream);
    let since = last.saturating_sub(RESUME_BACK);
    let url = format!("ws://{host}/v1/characters/{character}/subscribe?topics=main&since={since}");
    let roles_before = args.cpu_pid.map(|pid| tree_roles(pid, port)).transpose()?;
    let self_before = self_cpu_seconds()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let connects = Arc::new(AtomicU64::new(0));
    let connect_errors = Arc::new(AtomicU64::new(0));
    let resume_errors = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(hist()?));
    let mut clients = Vec::new();
    for _ in 0..args.reconnect_parallel.max(1) {
        let (url, resume) = (url.clone(), args.resume);
        let (connects, connect_errors, resume_errors, latency) = (
            connects.clone(),
            connect_errors.clone(),
            resume_errors.clone(),
            latency.clone(),
        );
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let once = async {
                    let (mut ws, _) = tokio::time::timeout(
                        Duration::from_secs(20),
                        tokio_tungstenite::connect_async(url.as_str()),
                    )
                    .await
                    .map_err(|_| anyhow!("no upgrade within 20 s"))??;
                    let mut seqs = Vec::new();
                    let mut welcomed = false;
                    loop {
                        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
                            .await
                            .map_err(|_| anyhow!("no frame within 20 s"))?
                            .ok_or_else(|| anyhow!("closed during the resume"))??;
                        let Message::Text(text) = msg else { continue };
                        let frame: Frame = serde_json::from_str(text.as_str())?;
                        match frame.kind {
                            "welcome" => {
                                welcomed = true;
                                if !resume {
                                    break;
                                }
                            }
                            "command" if welcomed => seqs.push(frame.seq.unwrap_or(0)),
                            "recovered" if welcomed => break,
                            other => bail!("unexpected {other:?} frame"),
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
                    Ok::<_, anyhow::Error>(seqs)
                }
                .await;
                match once {
                    Ok(seqs) => {
                        let want: Vec<u64> = (since + 1..=last).collect();
                        if resume && seqs != want {
                            resume_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        connects.fetch_add(1, Ordering::Relaxed);
                        let us = t0.elapsed().as_micros() as u64;
                        if let Ok(mut h) = latency.lock() {
                            let _ = h.record(us.clamp(1, 120_000_000));
                        }
                    }
                    Err(e) => {
                        if connect_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("reconnect failed: {e:#}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
    let wall_s = start.elapsed().as_secs_f64();
    let n = connects.load(Ordering::Relaxed);
    let h = latency.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let self_used = self_cpu_seconds()? - self_before;
    let mut r = json!({
        "label": args.label,
        "scenario": args.scenario,
        "round": args.round,
        "phase": format!("reconnect:{secs}"),
        "mode": "reconnect",
        "characters": 1,
        "subs_per_character": args.reconnect_parallel,
        "subscribers": args.reconnect_parallel,
        "topics": 1,
        "publishers": 0,
        "payload_bytes": 0,
        "resume": args.resume,
        "replayed_per_connect": if args.resume { RESUME_BACK } else { 0 },
        "connects": n,
        "connects_per_s": n as f64 / wall_s.max(1e-9),
        "connect_errors": connect_errors.load(Ordering::Relaxed),
        "resume_errors": resume_errors.load(Ordering::Relaxed),
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
        "loadgen_cpu_s": self_used,
        "loadgen_cpu_util": self_used / wall_s.max(1e-9),
    });
    client_limited(&mut r);
    if let (Some(pid), Some(before)) = (args.cpu_pid, roles_before) {
        let after = tree_roles(pid, port)?;
        record_roles(&mut r, &before, &after, &[0; 3]);
        let used: f64 = after.iter().map(|s| s.cpu_s).sum::<f64>()
            - before.iter().map(|s| s.cpu_s).sum::<f64>();
        r["server_cpu_s"] = json!(used);
        r["server_cpu_ms_per_connect"] = json!(used * 1000.0 / (n.max(1) as f64));
    }
    let mut failures = failures_of(&r, false);
    if n == 0 {
        failures.push("no connection completed".to_string());
    }
    eprintln!(
        "[{} {}] {n} connects ({:.0}/s), p50 {:.2} p99 {:.2} ms, connect errors {}, resume errors {}",
        args.label,
        args.scenario,
        r["connects_per_s"].as_f64().unwrap_or(0.0),
        r["p50_ms"].as_f64().unwrap_or(0.0),
        r["p99_ms"].as_f64().unwrap_or(0.0),
        r["connect_errors"],
        r["resume_errors"]
    );
    r["ok"] = json!(failures.is_empty());
    r["failures"] = json!(failures.clone());
    write_lines(args, &[r.to_string()])?;
    if !failures.is_empty() {
        eprintln!(
            "[{} {}] FAILED: {}",
            args.label,
            args.scenario,
            failures.join("; ")
        );
        std::process::exit(1);
    }
    Ok(())
}
