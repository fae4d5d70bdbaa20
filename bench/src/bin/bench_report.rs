//! Turns the JSON lines of one `scripts/bench.sh` run into BENCHMARKS.md: the
//! hand-written header, the machine and versions, the exact command, one table per
//! scenario (ours, partyserver, native, ours/partyserver, ours/native) and a cost
//! breakdown derived from the same run.

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

const SERVERS: [&str; 3] = ["ours", "partyserver", "native"];

#[derive(Clone, Copy)]
struct Row<'a> {
    name: &'a str,
    key: &'a str,
    /// Higher is better (for the reading hint only).
    higher: bool,
}

const fn row<'a>(name: &'a str, key: &'a str, higher: bool) -> Row<'a> {
    Row { name, key, higher }
}

fn find<'a>(
    rows: &'a [Value],
    scenario: &str,
    label: &str,
    phase_prefix: &str,
) -> Option<&'a Value> {
    rows.iter().find(|r| {
        r["scenario"] == scenario
            && r["label"] == label
            && r["phase"]
                .as_str()
                .is_some_and(|p| p.starts_with(phase_prefix))
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

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
        _ => "–".to_string(),
    }
}

fn table(out: &mut String, rows: &[Value], scenario: &str, phase: &str, metrics: &[Row]) {
    let _ = writeln!(
        out,
        "| metric | ours | partyserver | native | ours/partyserver | ours/native |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for m in metrics {
        let vals: Vec<Option<f64>> = SERVERS
            .iter()
            .map(|s| find(rows, scenario, s, phase).and_then(|r| r[m.key].as_f64()))
            .collect();
        let cell = |v: &Option<f64>| v.map(fmt_num).unwrap_or_else(|| "–".to_string());
        let hint = if m.higher { "↑" } else { "↓" };
        let _ = writeln!(
            out,
            "| {} {hint} | {} | {} | {} | {} | {} |",
            m.name,
            cell(&vals[0]),
            cell(&vals[1]),
            cell(&vals[2]),
            ratio(vals[0], vals[1]),
            ratio(vals[0], vals[2]),
        );
    }
}

fn describe(rows: &[Value], scenario: &str, phase: &str) -> String {
    match find(rows, scenario, "ours", phase).or_else(|| find(rows, scenario, "native", phase)) {
        Some(r) => format!(
            "{} character(s) x {} subscriber(s), {} topic(s); phase `{}`, {} publisher connection(s)",
            r["characters"], r["subs_per_character"], r["topics"], r["phase"].as_str().unwrap_or(""),
            r["publishers"]
        ),
        None => "not run".to_string(),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.results).with_context(|| args.results.clone())?;
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut out = std::fs::read_to_string(&args.header).with_context(|| args.header.clone())?;
    let meta = std::fs::read_to_string(&args.meta).with_context(|| args.meta.clone())?;
    out.push_str("\n## This run\n\n```\n");
    out.push_str(meta.trim_end());
    out.push_str("\n```\n");

    // Rows both tables share: latency, then the correctness counts.
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
        // CPU time of the server's whole process tree over the phase: unlike
        // the rates, it does not depend on how busy the rest of the machine is.
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
    ])
    .collect();
    let latency: Vec<Row> = [
        row("commands/s sent", "commands_per_s", true),
        row("deliveries/s", "deliveries_per_s", true),
    ]
    .into_iter()
    .chain(shared.iter().copied())
    .collect();
    let scenarios = [
        ("a", "(a) one character, many subscribers"),
        ("b", "(b) 100 characters x 10 subscribers"),
        ("c", "(c) many characters x 1 subscriber (routing overhead)"),
        (
            "d",
            "(d) one character, 10 topics, each command matches 10% of the subscribers",
        ),
    ];
    for (key, title) in scenarios {
        let _ = writeln!(out, "\n## {title}\n");
        let _ = writeln!(out, "Throughput: {}.\n", describe(&rows, key, "max"));
        table(&mut out, &rows, key, "max", &throughput);
        if find(&rows, key, "ours", "rate").is_some()
            || find(&rows, key, "native", "rate").is_some()
        {
            let _ = writeln!(
                out,
                "\nLatency at a fixed rate: {}.\n",
                describe(&rows, key, "rate")
            );
            table(&mut out, &rows, key, "rate", &latency);
        }
    }

    let _ = writeln!(out, "\n## (e) idle memory\n");
    let _ = writeln!(
        out,
        "Resident memory of the server's processes (workerd processes under the launcher's pid; the native-server process) before and after opening the sockets of scenario (a), measured 2 s after the last welcome, before anything is published.\n"
    );
    let mem = [
        Row {
            name: "RSS before MiB",
            key: "rss_before_mib",
            higher: false,
        },
        Row {
            name: "RSS with sockets open MiB",
            key: "rss_after_mib",
            higher: false,
        },
        Row {
            name: "MiB per 1,000 idle subscribers",
            key: "rss_per_1000_mib",
            higher: false,
        },
    ];
    table(&mut out, &rows, "a", "max", &mem);

    // Cost breakdown from this run: the time per command in (c) is the fixed cost
    // of one command (request, routing to the object, storage, one send); (a) adds
    // N-1 sends, so the difference over N-1 is the marginal cost of one delivery.
    let _ = writeln!(
        out,
        "\n## Cost per command and per delivery (derived from the tables above)\n"
    );
    let _ = writeln!(
        out,
        "Wall time per accepted command at saturation (1 / commands per second, all publisher connections together) in (c) is the fixed cost of a command with one delivery; in (a) it is that plus N-1 more deliveries, so ((a) - (c)) / (N-1) is the marginal cost of one delivery. Both are wall-clock on a shared machine, not CPU time.\n"
    );
    let _ = writeln!(
        out,
        "| | ours | partyserver | native | ours/partyserver | ours/native |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let per_cmd = |scenario: &str, label: &str| {
        find(&rows, scenario, label, "max")
            .and_then(|r| r["commands_per_s"].as_f64())
            .filter(|v| *v > 0.0)
            .map(|v| 1e6 / v)
    };
    let fixed: Vec<Option<f64>> = SERVERS.iter().map(|s| per_cmd("c", s)).collect();
    let marginal: Vec<Option<f64>> = SERVERS
        .iter()
        .map(|s| {
            let n = find(&rows, "a", s, "max").and_then(|r| r["subs_per_character"].as_f64())?;
            let a = per_cmd("a", s)?;
            let c = per_cmd("c", s)?;
            Some((a - c) / (n - 1.0).max(1.0))
        })
        .collect();
    for (name, vals) in [
        ("µs per command, one delivery ((c))", &fixed),
        ("µs per extra delivery (((a) - (c)) / (N-1))", &marginal),
    ] {
        let cell = |v: &Option<f64>| v.map(fmt_num).unwrap_or_else(|| "–".to_string());
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            cell(&vals[0]),
            cell(&vals[1]),
            cell(&vals[2]),
            ratio(vals[0], vals[1]),
            ratio(vals[0], vals[2])
        );
    }

    if let Some(footer) = &args.footer {
        out.push('\n');
        out.push_str(&std::fs::read_to_string(footer).with_context(|| footer.clone())?);
    }
    print!("{out}");
    Ok(())
}
