//! The shipped configurations cannot open a deployment by accident: both
//! wrangler configs have auth on, neither holds a secret, and only the local
//! `.dev.vars` (made by `make dev` from `.dev.vars.example`, ignored by git)
//! turns auth off.

#![allow(clippy::panic)]

use std::fs;
use std::path::Path;

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(table, key, value)` of each `key = value` line of a TOML file (the
/// shipped configs use one line per value).
fn entries(toml: &str) -> Vec<(String, String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((table.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn deployable_configs_ship_with_auth_on_and_no_secrets() {
    for name in ["wrangler.dev.toml", "wrangler.prod.toml"] {
        let e = entries(&read(name));
        let auth: Vec<_> = e.iter().filter(|(_, k, _)| k == "AUTH_ENABLED").collect();
        assert_eq!(auth.len(), 1, "{name}: one AUTH_ENABLED");
        assert_eq!(
            (auth[0].0.as_str(), auth[0].2.as_str()),
            ("vars", "\"true\""),
            "{name}"
        );
        for (table, key, _) in &e {
            for secret in ["JWT_SECRET", "API_KEYS"] {
                assert!(
                    !key.contains(secret),
                    "{name}: [{table}] {key} is a secret; use `wrangler secret put`"
                );
            }
        }
    }
}

#[test]
fn only_the_local_dev_vars_turn_auth_off() {
    let example = read(".dev.vars.example");
    let lines: Vec<&str> = example.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(lines.contains(&"AUTH_ENABLED=false"), "{example}");
    assert!(lines.iter().any(|l| l.starts_with("JWT_SECRET=")));
    let ignored = read(".gitignore");
    assert!(
        ignored.lines().any(|l| l == ".dev.vars"),
        ".dev.vars must stay out of git"
    );
    let makefile = read("Makefile");
    assert!(
        makefile.contains("[ -f .dev.vars ] || { cp .dev.vars.example .dev.vars"),
        "make dev creates .dev.vars on a fresh clone"
    );
}
