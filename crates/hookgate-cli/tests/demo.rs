//! `hookgate demo`: the story with numbers holds its exactly-once promise
//! on every store, repeats its fault plan with a seed, and its check fails
//! when the receiver deduplicates nothing; `--walkthrough` holds its
//! promises for every scheme.

use std::process::{Command, Output};

#[path = "cli_support/mod.rs"]
mod cli_support;

fn demo(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("demo")
        .args(args)
        .env_remove("HOOKGATE_STORE")
        .output()
        .expect("run hookgate demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// The value of a summary row (`  name   value`).
fn row<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no {name:?} row in:\n{stdout}"))
}

#[test]
fn default_story_delivers_every_event_exactly_once_through_the_faults() {
    let (out, stdout) = demo(&["--seed", "42"]);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("exactly once: all 500 events took effect exactly once"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    // The faults happened and were survived, not skipped.
    assert!(row(&stdout, "delivered").starts_with("500 "), "{stdout}");
    let dead: u32 = row(&stdout, "dead-lettered")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        dead > 0,
        "the seed puts some events in an outage:\n{stdout}"
    );
    assert_eq!(
        row(&stdout, "replayed from DLQ"),
        dead.to_string(),
        "{stdout}"
    );
    let forged = row(&stdout, "forgeries rejected");
    let (rejected, sent) = forged.split_once(" / ").unwrap();
    assert!(
        sent.parse::<u32>().unwrap() > 0 && rejected == sent,
        "{stdout}"
    );
    let suppressed: u32 = row(&stdout, "duplicates suppressed")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        suppressed > 0,
        "lost responses and double sends reach the store:\n{stdout}"
    );
}

#[test]
fn without_dedup_the_exactly_once_check_fails() {
    let (out, stdout) = demo(&["--seed", "42", "--events", "200", "--no-dedup"]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED exactly once:") && stdout.contains("more than once"),
        "{stdout}"
    );
}

#[test]
fn a_seed_repeats_the_fault_plan() {
    let runs: Vec<String> = (0..2)
        .map(|_| {
            let (out, stdout) = demo(&["--seed", "9", "--events", "120"]);
            assert!(out.status.success(), "{stdout}");
            stdout
        })
        .collect();
    let faults = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("faults:"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(faults(&runs[0]), faults(&runs[1]));
    for name in [
        "events sent",
        "throttled (429)",
        "slow answers",
        "dead-lettered",
    ] {
        assert_eq!(row(&runs[0], name), row(&runs[1], name), "{name}");
    }
    let (_, other) = demo(&["--seed", "10", "--events", "120"]);
    assert_ne!(
        faults(&runs[0]),
        faults(&other),
        "another seed, another plan"
    );
}

#[test]
fn the_same_story_runs_on_redis_and_postgres() {
    for store in cli_support::stores() {
        let (out, stdout) = demo(&["--seed", "5", "--events", "150", "--store", &store]);
        assert!(
            out.status.success(),
            "demo --store {store} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("exactly once: all 150 events took effect exactly once"),
            "{stdout}"
        );
        assert!(stdout.contains("removed the demo's namespace"), "{stdout}");
    }
}

#[test]
fn walkthrough_holds_its_promises_for_every_scheme() {
    for scheme in ["standard", "stripe", "github", "slack", "shopify"] {
        let (out, stdout) = demo(&["--walkthrough", "--scheme", scheme]);
        assert!(
            out.status.success(),
            "demo --walkthrough --scheme {scheme} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("all promises held."), "{stdout}");
        for landmark in [
            "Idempotent-Replayed: true",
            "dead-lettered: exhausted",
            "replayed msg_order_shipped",
            "401 Unauthorized",
        ] {
            assert!(
                stdout.contains(landmark),
                "missing {landmark:?} in:\n{stdout}"
            );
        }
        assert!(!stdout.contains("FAILED"), "{stdout}");
    }
}

#[test]
fn every_scheme_runs_the_story() {
    for scheme in ["stripe", "github", "slack", "shopify"] {
        let (out, stdout) = demo(&["--scheme", scheme, "--seed", "3", "--events", "80"]);
        assert!(out.status.success(), "--scheme {scheme}:\n{stdout}");
        assert!(
            stdout.contains("exactly once: all 80 events took effect exactly once"),
            "{stdout}"
        );
    }
}
