//! Turns the JSON lines of one `scripts/bench.sh` run into BENCHMARKS.md: the
//! hand-written header, the machine and versions, the exact command, the
//! targets with their measured ratios, one table per scenario (the median of
//! each server over the rounds, and each ratio as the median and range of the
//! per-round ratios), the open-loop sweep, idle memory, and the footer.

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;
use std::fmt::Write as _;

#[derive(Parser)]
struct Args {
    /// JSON lines written by loadgen --out.
    #[arg(long)]
    results: String,
    /// Markdown put before the tables (method, caveats).
    #[arg(long)]
    header: String,
    /// Markdown put after the tables (analysis), optional.
    #[arg(long)]
    footer: Option<String>,
    /// Text file with the machine, versions and command (copied verbatim).
    #[arg(long)]
    meta: String,
}

const SERVERS: [&str; 4] = ["ours", "partyserver", "durable", "native"];
/// The peers each ratio is taken against.
const PEERS: [&str; 2] = ["partyserver", "durable"];

#[derive(Clone, Copy)]
struct Row<'a> {
    name: &'a str,
    key: &'a str,
    /// Higher is better.
    higher: bool,
}

const fn row<'a>(name: &'a str, key: &'a str, higher: bool) -> Row<'a> {
    Row { name, key, higher }
}

struct Data {
    rows: Vec<Value>,
}

impl Data {
    /// The rows of one scenario, server and phase kind ("max", "rate"), by round.
    fn of(&self, scenario: &str, label: &str, phase: &str) -> Vec<&Value> {
        self.rows
            .iter()
            .filter(|r| {
                r["scenario"] == scenario
                    && r["label"] == label
                    && r["phase"].as_str().is_some_and(|p| p.starts_with(phase))
            })
            .collect()
    }

    /// (round, value) of a metric.
    fn values(&self, scenario: &str, label: &str, phase: &str, key: &str) -> Vec<(u64, f64)> {
        self.of(scenario, label, phase)
            .into_iter()
            .filter_map(|r| Some((r["round"].as_u64().unwrap_or(0), r[key].as_f64()?)))
            .collect()
    }

    fn median(&self, scenario: &str, label: &str, phase: &str, key: &str) -> Option<f64> {
        median(
            self.values(scenario, label, phase, key)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        )
    }

    /// The per-round ratios a/b of a metric (rounds both have).
    fn ratios(&self, a: (&str, &str), b: (&str, &str), phase: &str, key: &str) -> Vec<f64> {
        let bv = self.values(b.0, b.1, phase, key);
        self.values(a.0, a.1, phase, key)
            .into_iter()
            .filter_map(|(round, x)| {
                let y = bv.iter().find(|(r, _)| *r == round)?.1;
                (y != 0.0).then_some(x / y)
            })
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "–".to_string())
}

/// "1.02x [0.95–1.10]" from per-round ratios.
fn ratio_cell(r: &[f64]) -> String {
    match median(r.to_vec()) {
        None => "–".to_string(),
        Some(m) if r.len() == 1 => format!("{m:.2}x"),
        Some(m) => {
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{m:.2}x [{lo:.2}–{hi:.2}]")
        }
    }
}

fn table(out: &mut String, d: &Data, scenario: &str, phase: &str, metrics: &[Row]) {
    let _ = writeln!(
        out,
        "| metric (median over rounds) | ours | partyserver | durable | native | ours/partyserver | ours/durable |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for m in metrics {
        let vals: Vec<Option<f64>> = SERVERS
            .iter()
            .map(|s| d.median(scenario, s, phase, m.key))
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let hint = if m.higher { "↑" } else { "↓" };
        let ratios: Vec<String> = PEERS
            .iter()
            .map(|p| ratio_cell(&d.ratios((scenario, "ours"), (scenario, p), phase, m.key)))
            .collect();
        let _ = writeln!(
            out,
            "| {} {hint} | {} | {} | {} | {} | {} | {} |",
            m.name,
            cell(vals[0]),
            cell(vals[1]),
            cell(vals[2]),
            cell(vals[3]),
            ratios[0],
            ratios[1],
        );
    }
    // Client-limited phases and failed checks, by server.
    let flags: Vec<String> = SERVERS
        .iter()
        .map(|s| {
            let rows = d.of(scenario, s, phase);
            let limited = rows.iter().filter(|r| r["client_limited"] == true).count();
            let failed = rows.iter().filter(|r| r["ok"] == false).count();
            if rows.is_empty() {
                "–".to_string()
            } else {
                format!("{limited}/{} limited, {failed} failed", rows.len())
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "| client-limited rounds, failed checks | {} | {} | {} | {} | | |",
        flags[0], flags[1], flags[2], flags[3]
    );
}

fn describe(d: &Data, scenario: &str, phase: &str) -> String {
    let r = SERVERS
        .iter()
        .chain(["ours_batch"].iter())
        .find_map(|s| d.of(scenario, s, phase).into_iter().next());
    match r {
        Some(r) => format!(
            "{} character(s) x {} subscriber(s), {} topic(s), {} B commands; phase `{}`, {} publisher connection(s); {} round(s)",
            r["characters"],
            r["subs_per_character"],
            r["topics"],
            r["payload_bytes"],
            r["phase"].as_str().unwrap_or(""),
            r["publishers"],
            d.of(scenario, r["label"].as_str().unwrap_or(""), phase).len()
        ),
        None => "not run".to_string(),
    }
}

/// Per-process rows: where the CPU and memory of each server went.
const SPLIT: [Row; 9] = [
    row(
        "server CPU s: runtime workerd / native",
        "cpu_runtime_s",
        false,
    ),
    row("server CPU s: proxy workerd", "cpu_proxy_s", false),
    row(
        "server CPU s: launcher (node, esbuild)",
        "cpu_launcher_s",
        false,
    ),
    row("load generator CPU s", "loadgen_cpu_s", false),
    row("load generator % of its core", "loadgen_cpu_util", false),
    row(
        "RSS peak MiB: runtime workerd / native",
        "rss_runtime_peak_mib",
        false,
    ),
    row("RSS peak MiB: proxy workerd", "rss_proxy_peak_mib", false),
    row(
        "RSS growth MiB: runtime workerd",
        "rss_runtime_growth_mib",
        false,
    ),
    row(
        "RSS growth MiB: proxy workerd",
        "rss_proxy_growth_mib",
        false,
    ),
];

/// One target: a ratio of ours (or ours_batch) to a peer, and its bound.
struct Target<'a> {
    what: &'a str,
    a: (&'a str, &'a str),
    b: (&'a str, &'a str),
    phase: &'a str,
    key: &'a str,
    /// Met when the median ratio is at most (false) or at least (true) `bound`.
    at_least: bool,
    bound: f64,
}

fn targets(out: &mut String, d: &Data) {
    let _ = writeln!(out, "\n## Targets (issue #16)\n");
    let _ = writeln!(
        out,
        "Each ratio is ours divided by the peer within the same round; the cell is the median over the rounds and [min–max]. \"better\" against the durable peer means above 1.0x for rates and below 1.0x for CPU and latency.\n"
    );
    let _ = writeln!(out, "| target | ratio | bound | met |");
    let _ = writeln!(out, "|---|---:|---:|:---:|");
    let t = |what, a, b, phase, key, at_least, bound| Target {
        what,
        a,
        b,
        phase,
        key,
        at_least,
        bound,
    };
    let mut list = vec![
        t(
            "(c) server CPU per command, ours/partyserver",
            ("c", "ours"),
            ("c", "partyserver"),
            "max",
            "server_cpu_ms_per_command",
            false,
            1.2,
        ),
        t(
            "(d) server CPU per delivery, ours/partyserver",
            ("d", "ours"),
            ("d", "partyserver"),
            "max",
            "server_cpu_us_per_delivery",
            false,
            1.0,
        ),
        t(
            "(c) runtime workerd CPU per command (without the proxy), ours/partyserver",
            ("c", "ours"),
            ("c", "partyserver"),
            "max",
            "runtime_cpu_ms_per_command",
            false,
            1.2,
        ),
        t(
            "(d) runtime workerd CPU per delivery (without the proxy), ours/partyserver",
            ("d", "ours"),
            ("d", "partyserver"),
            "max",
            "runtime_cpu_us_per_delivery",
            false,
            1.0,
        ),
        t(
            "(a) deliveries/s, ours/partyserver",
            ("a", "ours"),
            ("a", "partyserver"),
            "max",
            "deliveries_per_s",
            true,
            1.0,
        ),
        t(
            "(b) commands/s, ours/partyserver",
            ("b", "ours"),
            ("b", "partyserver"),
            "max",
            "commands_per_s",
            true,
            1.0,
        ),
        t(
            "(a') deliveries/s with a 20 ms window, ours / partyserver's (a)",
            ("a_batch", "ours_batch"),
            ("a", "partyserver"),
            "max",
            "deliveries_per_s",
            true,
            3.0,
        ),
    ];
    let vs_durable: [(&str, &str, &str, &str, bool); 14] = [
        ("a", "max", "deliveries_per_s", "(a) deliveries/s", true),
        (
            "a",
            "max",
            "server_cpu_us_per_delivery",
            "(a) CPU per delivery",
            false,
        ),
        ("b", "max", "commands_per_s", "(b) commands/s", true),
        (
            "b",
            "max",
            "server_cpu_ms_per_command",
            "(b) CPU per command",
            false,
        ),
        ("c", "max", "commands_per_s", "(c) commands/s", true),
        (
            "c",
            "max",
            "server_cpu_ms_per_command",
            "(c) CPU per command",
            false,
        ),
        ("d", "max", "deliveries_per_s", "(d) deliveries/s", true),
        (
            "d",
            "max",
            "server_cpu_us_per_delivery",
            "(d) CPU per delivery",
            false,
        ),
        (
            "p100",
            "max",
            "deliveries_per_s",
            "100 B deliveries/s",
            true,
        ),
        ("p1k", "max", "deliveries_per_s", "1 KiB deliveries/s", true),
        (
            "p16k",
            "max",
            "deliveries_per_s",
            "16,000 B deliveries/s",
            true,
        ),
        (
            "b64",
            "max",
            "commands_per_s",
            "(b64) 64 publishers commands/s",
            true,
        ),
        (
            "slow",
            "max",
            "deliveries_per_s",
            "(g) slow subscriber: others' deliveries/s",
            true,
        ),
        (
            "r",
            "reconnect",
            "connects_per_s",
            "(h) reconnects with `since` per s",
            true,
        ),
    ];
    let names: Vec<String> = vs_durable
        .iter()
        .map(|(_, _, _, name, _)| format!("{name}, ours/durable"))
        .collect();
    for ((scenario, phase, key, _, higher), name) in vs_durable.iter().zip(&names) {
        list.push(t(
            name,
            (scenario, "ours"),
            (scenario, "durable"),
            phase,
            key,
            *higher,
            1.0,
        ));
    }
    let mut skipped = 0;
    for x in list {
        if d.of(x.a.0, x.a.1, x.phase).is_empty() && d.of(x.b.0, x.b.1, x.phase).is_empty() {
            skipped += 1;
            continue;
        }
        let r = d.ratios(x.a, x.b, x.phase, x.key);
        let met = match median(r.clone()) {
            None => "–",
            Some(m) if (x.at_least && m >= x.bound) || (!x.at_least && m <= x.bound) => "yes",
            Some(_) => "**no**",
        };
        let bound = format!("{} {:.1}x", if x.at_least { "≥" } else { "≤" }, x.bound);
        let _ = writeln!(out, "| {} | {} | {bound} | {met} |", x.what, ratio_cell(&r));
    }
    if skipped > 0 {
        let _ = writeln!(
            out,
            "\n{skipped} target(s) left out: their scenarios did not run (`BENCH_ONLY`)."
        );
    }
}

fn sweep(out: &mut String, d: &Data, scenario: &str, title: &str) {
    let servers = ["ours", "partyserver", "durable"];
    if servers.iter().all(|s| d.of(scenario, s, "rate").is_empty()) {
        return;
    }
    let _ = writeln!(out, "\n### {title}\n");
    let _ = writeln!(
        out,
        "| server | step | commands/s scheduled | commands/s sent | deliveries/s | p50 ms | p99 ms | max ms | lost | client-limited |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
    for s in servers {
        let mut rows = d.of(scenario, s, "rate");
        rows.sort_by(|a, b| {
            a["rate"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["rate"].as_f64().unwrap_or(0.0))
        });
        // The capacity the script derived the steps from.
        let base = scenario.trim_start_matches("sweep_");
        let capacity = d
            .median(base, s, "max", "commands_per_s")
            .unwrap_or(0.0)
            .max(1e-9);
        for r in rows {
            let n = |k: &str| r[k].as_f64();
            let pct = n("rate").unwrap_or(0.0) * 100.0 / capacity;
            let _ = writeln!(
                out,
                "| {s} | {pct:.0} % | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(n("rate")),
                cell(n("commands_per_s")),
                cell(n("deliveries_per_s")),
                cell(n("p50_ms")),
                cell(n("p99_ms")),
                cell(n("max_ms")),
                cell(n("lost")),
                if r["client_limited"] == true {
                    "yes"
                } else {
                    ""
                }
            );
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.results).with_context(|| args.results.clone())?;
    let mut rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // Derived: memory growth over a phase.
    for r in &mut rows {
        for role in ["runtime", "proxy"] {
            if let (Some(a), Some(b)) = (
                r[format!("rss_{role}_peak_mib")].as_f64(),
                r[format!("rss_{role}_start_mib")].as_f64(),
            ) {
                r[format!("rss_{role}_growth_mib")] = Value::from(a - b);
            }
        }
        // The Worker's own runtime only (without wrangler's proxy and the launcher).
        if let Some(cpu) = r["cpu_runtime_s"].as_f64() {
            let commands = r["commands"].as_f64().unwrap_or(0.0).max(1.0);
            let delivered = r["delivered"].as_f64().unwrap_or(0.0).max(1.0);
            r["runtime_cpu_ms_per_command"] = Value::from(cpu * 1000.0 / commands);
            r["runtime_cpu_us_per_delivery"] = Value::from(cpu * 1e6 / delivered);
        }
        // How busy the server's core was: below ~90 % in a `max` phase, with
        // the load generator not limiting either, something else on the
        // machine took the server's core.
        if let (Some(cpu), Some(secs)) = (r["server_cpu_s"].as_f64(), r["duration_s"].as_f64()) {
            r["server_cpu_util"] = Value::from(cpu * 100.0 / secs.max(1e-9));
        }
        if let Some(u) = r["loadgen_cpu_util"].as_f64() {
            r["loadgen_cpu_util"] = Value::from(u * 100.0);
        }
    }
    let d = Data { rows };
    let mut out = std::fs::read_to_string(&args.header).with_context(|| args.header.clone())?;
    let meta = std::fs::read_to_string(&args.meta).with_context(|| args.meta.clone())?;
    out.push_str("\n## This run\n\n```\n");
    out.push_str(meta.trim_end());
    out.push_str("\n```\n");

    targets(&mut out, &d);

    let shared = [
        row("latency p50 ms", "p50_ms", false),
        row("latency p95 ms", "p95_ms", false),
        row("latency p99 ms", "p99_ms", false),
        row("latency max ms", "max_ms", false),
        row("publish answer p50 ms", "publish_p50_ms", false),
        row("lost", "lost", false),
        row("duplicated", "duplicated", false),
        row("out of order", "out_of_order", false),
        row("misrouted", "misrouted", false),
    ];
    let throughput: Vec<Row> = [
        row("deliveries/s", "deliveries_per_s", true),
        row("commands/s accepted", "commands_per_s", true),
    ]
    .into_iter()
    .chain(shared.iter().copied())
    .chain([
        row("publish errors", "publish_errors", false),
        row("time to open all sockets ms", "connect_ms", false),
        row(
            "server CPU ms per command",
            "server_cpu_ms_per_command",
            false,
        ),
        row(
            "server CPU µs per delivery",
            "server_cpu_us_per_delivery",
            false,
        ),
        row(
            "runtime workerd CPU ms per command (no proxy)",
            "runtime_cpu_ms_per_command",
            false,
        ),
        row(
            "runtime workerd CPU µs per delivery (no proxy)",
            "runtime_cpu_us_per_delivery",
            false,
        ),
        row(
            "server CPU % of one core over the phase",
            "server_cpu_util",
            true,
        ),
        row("publisher cycle ms", "cycle_mean_ms", false),
        row("publish answer mean ms", "answer_mean_ms", false),
    ])
    .chain(SPLIT.iter().copied())
    .collect();
    let latency: Vec<Row> = [
        row("commands/s sent", "commands_per_s", true),
        row("deliveries/s", "deliveries_per_s", true),
    ]
    .into_iter()
    .chain(shared.iter().copied())
    .chain(SPLIT.iter().copied())
    .collect();
    let scenarios = [
        ("a", "(a) one character, many subscribers"),
        ("b", "(b) 100 characters x 10 subscribers"),
        ("c", "(c) many characters x 1 subscriber (routing overhead)"),
        (
            "d",
            "(d) one character, 10 topics, each command matches 10% of the subscribers",
        ),
        (
            "p100",
            "Payload 100 B (1 character x the extra subscribers)",
        ),
        ("p1k", "Payload 1 KiB"),
        ("p16k", "Payload 16,000 B"),
        ("b64", "(b64) 64 concurrent publishers on (b)'s shape"),
        (
            "slow",
            "(g) one slow subscriber (stops reading) beside the readers, 16,000 B commands",
        ),
    ];
    for (key, title) in scenarios {
        let _ = writeln!(out, "\n## {title}\n");
        if !ran(&d, key) {
            let _ = writeln!(out, "Not run in this run (`BENCH_ONLY`).");
            continue;
        }
        let _ = writeln!(out, "Throughput: {}.\n", describe(&d, key, "max"));
        table(&mut out, &d, key, "max", &throughput);
        if key == "a" {
            batching(&mut out, &d);
        }
        if key == "slow" {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| slow subscriber (per round) | {} |",
                SERVERS.join(" | ")
            );
            let _ = writeln!(out, "|---|---|---|---|---|");
            let cells: Vec<String> = SERVERS
                .iter()
                .map(|s| {
                    d.of("slow", s, "max")
                        .iter()
                        .map(|r| {
                            format!(
                                "{} frames owed, {} read after the phase, {}",
                                r["slow_owed"],
                                r["slow_frames_read_after"],
                                if r["slow_closed_by_server"] == true {
                                    "closed"
                                } else {
                                    "open"
                                }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .collect();
            let _ = writeln!(out, "| the slow socket | {} |", cells.join(" | "));
        }
        if !d.of(key, "ours", "rate").is_empty() || !d.of(key, "native", "rate").is_empty() {
            let _ = writeln!(
                out,
                "\nLatency at a fixed rate (from the scheduled send time): {}.\n",
                describe(&d, key, "rate")
            );
            table(&mut out, &d, key, "rate", &latency);
        }
    }

    fanout(&mut out, &d);

    let _ = writeln!(out, "\n## (h) reconnect and resume\n");
    let _ = writeln!(
        out,
        "Clients reconnecting in a loop to one character: {}. Ours and the durable peer are asked for `since` = the latest seq - 10 and replay those 10 commands, then `recovered`; partyserver and native have no resume and send only the welcome, so their rate is an upper bound for a subscribe without replay.\n",
        describe(&d, "r", "reconnect")
    );
    table(
        &mut out,
        &d,
        "r",
        "reconnect",
        &[
            row("connections/s", "connects_per_s", true),
            row("connect to recovered (or welcome) p50 ms", "p50_ms", false),
            row("connect to recovered (or welcome) p99 ms", "p99_ms", false),
            row("connect errors", "connect_errors", false),
            row("resume errors", "resume_errors", false),
            row(
                "server CPU ms per connection",
                "server_cpu_ms_per_connect",
                false,
            ),
            SPLIT[0],
            SPLIT[1],
            SPLIT[2],
            SPLIT[4],
        ],
    );

    let _ = writeln!(out, "\n## Open-loop latency sweep\n");
    let _ = writeln!(
        out,
        "Fixed rates at a share of each server's capacity (its median commands/s in the `max` phase of the scenario over the rounds), one step after the other on the same sockets; latency is measured from each command's scheduled send time, so a server that falls behind is charged for the queue. The same publisher connections as in the rounds (one request in flight each). Native is not swept (its capacity is the load generator's).\n"
    );
    sweep(
        &mut out,
        &d,
        "sweep_a",
        "(a) 1 character x many subscribers",
    );
    sweep(
        &mut out,
        &d,
        "sweep_c",
        "(c) many characters x 1 subscriber",
    );

    let _ = writeln!(out, "\n## (e) idle memory\n");
    if !ran(&d, "a") {
        let _ = writeln!(
            out,
            "Not run in this run (`BENCH_ONLY`: it is measured in (a))."
        );
    } else {
        let _ = writeln!(
        out,
        "Resident memory of the server's processes (workerd processes under the launcher's pid; the native-server process) before and after opening the sockets of scenario (a), measured 2 s after the last welcome, before anything is published.\n"
    );
        table(
            &mut out,
            &d,
            "a",
            "max",
            &[
                row("RSS before MiB", "rss_before_mib", false),
                row("RSS with sockets open MiB", "rss_after_mib", false),
                row("MiB per 1,000 idle subscribers", "rss_per_1000_mib", false),
            ],
        );
    }

    if let Some(footer) = &args.footer {
        out.push('\n');
        out.push_str(&std::fs::read_to_string(footer).with_context(|| footer.clone())?);
    }
    print!("{out}");
    Ok(())
}

/// Whether any server has a row of `scenario`.
fn ran(d: &Data, scenario: &str) -> bool {
    d.rows.iter().any(|r| r["scenario"] == scenario)
}

/// (f): one character x many subscribers, ours with every socket on the
/// character's own object against ours with relays.
fn fanout(out: &mut String, d: &Data) {
    let (a, b) = ("ours_owner", "ours_relays");
    let _ = writeln!(
        out,
        "\n## (f) one character x many subscribers: the character's own object alone, and relays\n"
    );
    let first = d.of("f", b, "max").into_iter().next();
    let Some(first) = first.or_else(|| d.of("f", a, "max").into_iter().next()) else {
        let _ = writeln!(out, "Not run in this run (`BENCH_ONLY`).");
        return;
    };
    let _ = writeln!(
        out,
        "{} character x {} subscribers, phase `{}`, {} publisher connection(s), {} round(s). **owner only**: ours with `FANOUT_LIMIT` at least the subscribers, every socket on the character's own object; **relays**: ours with `FANOUT_LIMIT` = `BENCH_FANOUT_LIMIT` (500 unless \"This run\" says otherwise), the character's own object holding that many and relays the rest. Both in one workerd process on one core: the relays' work is not spread over machines here, so this shows what the relay tier costs in CPU and latency, not what it gains (see docs/scaling.md). Objects: from the admin listing after the sockets opened.\n",
        first["characters"],
        first["subs_per_character"],
        first["phase"].as_str().unwrap_or(""),
        first["publishers"],
        d.of("f", b, "max").len().max(d.of("f", a, "max").len()),
    );
    let _ = writeln!(
        out,
        "| metric (median over rounds) | owner only | relays | relays/owner only |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for m in [
        row("deliveries/s", "deliveries_per_s", true),
        row("commands/s accepted", "commands_per_s", true),
        row("latency p50 ms", "p50_ms", false),
        row("latency p95 ms", "p95_ms", false),
        row("latency p99 ms", "p99_ms", false),
        row("latency max ms", "max_ms", false),
        row("publish answer p50 ms", "publish_p50_ms", false),
        row(
            "server CPU µs per delivery",
            "server_cpu_us_per_delivery",
            false,
        ),
        row(
            "server CPU ms per command",
            "server_cpu_ms_per_command",
            false,
        ),
        row(
            "server CPU % of one core over the phase",
            "server_cpu_util",
            true,
        ),
        row(
            "RSS peak MiB: runtime workerd",
            "rss_runtime_peak_mib",
            false,
        ),
        row("time to open all sockets ms", "connect_ms", false),
        row("objects holding the sockets", "objects", false),
        row("relays fed", "relays_fed", false),
        row(
            "sockets on the character's own object",
            "owner_sockets",
            false,
        ),
        row(
            "most sockets on one object",
            "most_sockets_per_object",
            false,
        ),
        row("lost", "lost", false),
        row("duplicated", "duplicated", false),
        row("out of order", "out_of_order", false),
        row("misrouted", "misrouted", false),
        row("publish errors", "publish_errors", false),
    ] {
        // Where the sockets were is a fact of the setup, not better or worse.
        let setup = matches!(
            m.key,
            "objects" | "relays_fed" | "owner_sockets" | "most_sockets_per_object"
        );
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} |",
            m.name,
            match (setup, m.higher) {
                (true, _) => "",
                (false, true) => " ↑",
                (false, false) => " ↓",
            },
            cell(d.median("f", a, "max", m.key)),
            cell(d.median("f", b, "max", m.key)),
            ratio_cell(&d.ratios(("f", b), ("f", a), "max", m.key)),
        );
    }
    let flags = |s: &str| {
        let rows = d.of("f", s, "max");
        let limited = rows.iter().filter(|r| r["client_limited"] == true).count();
        let failed = rows.iter().filter(|r| r["ok"] == false).count();
        format!("{limited}/{} limited, {failed} failed", rows.len())
    };
    let _ = writeln!(
        out,
        "| client-limited rounds, failed checks | {} | {} | |",
        flags(a),
        flags(b)
    );
}

/// (a'): ours with a 20 ms batching window against every server's (a).
fn batching(out: &mut String, d: &Data) {
    if d.of("a_batch", "ours_batch", "max").is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### (a') batching: ours with `BATCH_WINDOW_MS=20`\n\n{}. Commands delivered per second counts each command inside a `batch` frame once per socket.\n",
        describe(d, "a_batch", "max")
    );
    let _ = writeln!(
        out,
        "| metric (median over rounds) | ours batched | ours | partyserver | durable | batched/partyserver | batched/ours |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for m in [
        row("commands delivered/s", "deliveries_per_s", true),
        row("commands/s accepted", "commands_per_s", true),
        row("latency p50 ms", "p50_ms", false),
        row("latency p99 ms", "p99_ms", false),
        row("batch frames received", "batch_frames", true),
        row(
            "server CPU µs per delivery",
            "server_cpu_us_per_delivery",
            false,
        ),
        row("lost", "lost", false),
    ] {
        let b = d.median("a_batch", "ours_batch", "max", m.key);
        let o = d.median("a", "ours", "max", m.key);
        let p = d.median("a", "partyserver", "max", m.key);
        let du = d.median("a", "durable", "max", m.key);
        let _ = writeln!(
            out,
            "| {} {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            if m.higher { "↑" } else { "↓" },
            cell(b),
            cell(o),
            cell(p),
            cell(du),
            ratio_cell(&d.ratios(
                ("a_batch", "ours_batch"),
                ("a", "partyserver"),
                "max",
                m.key
            )),
            ratio_cell(&d.ratios(("a_batch", "ours_batch"), ("a", "ours"), "max", m.key)),
        );
    }
}
